"""eic-guard command line (docs/architecture.md §5): the parser and the dispatch to one module per subcommand.

Each subcommand is a module with NAME, `add_parser(commands)` and `run(args, invocation) -> int`; adding one is a
module and a line in SUBCOMMANDS. The modules use the core (arguments, configuration, output, exit codes, progress)
and the engine, never each other.

Importing this package, `--help` and `--version` build no boto3 session and touch no AWS configuration: the runtime
modules (boto3 reads the AWS profile when a session is built) are imported only once a command runs, inside the guard
that turns every AWS configuration problem into one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..errors import EicGuardError
from . import cleanup, demo, exit_codes, refresh, scan, verify
from .arguments import EPILOG
from .configuration import aws_problems
from .invocation import Invocation
from .verbosity import Verbosity, configure_logs

SUBCOMMANDS = (scan, refresh, demo, cleanup, verify)


def package_version() -> str:
    """The installed distribution's version; the package's own when it runs from a source tree (the layer)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("eic-guard")
    except PackageNotFoundError:
        from .. import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eic-guard",
        description="Keep EC2 Instance Connect working.",
        epilog=EPILOG + "exit codes: each command's --help lists its own (scan: README 'Exit codes').\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    for subcommand in SUBCOMMANDS:
        subcommand.add_parser(commands)
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --help, --version and usage errors exit here, before any AWS import
    subcommand = next(s for s in SUBCOMMANDS if args.command == s.NAME)
    invocation = Invocation(run_cli=main, verbosity=Verbosity.of(args))
    # Standard output is the report: Powertools' metrics (they flush on their own past 100 values) stay out of it.
    metrics_setting = os.environ.get("POWERTOOLS_METRICS_DISABLED")
    os.environ["POWERTOOLS_METRICS_DISABLED"] = metrics_setting or "true"
    try:
        with invocation.interrupts.handled(), aws_problems():
            configure_logs(invocation.verbosity)
            return subcommand.run(args, invocation)
    except EicGuardError as exc:
        if invocation.interrupts.requested:  # what the interruption cut short, e.g. a refused call
            return _interrupted(invocation, f"stopped before it finished ({_one_line(exc)})")
        print(f"eic-guard: error: {_one_line(exc)}", file=sys.stderr)
        return exit_codes.USAGE
    except KeyboardInterrupt:  # Ctrl-C before the handlers were installed, or after they were restored
        return _interrupted(invocation, "interrupted")
    finally:
        if metrics_setting is None:
            os.environ.pop("POWERTOOLS_METRICS_DISABLED", None)


def _interrupted(invocation: Invocation, what: str) -> int:
    print(f"eic-guard: {invocation.interrupts.signal_name or 'SIGINT'}: {what}", file=sys.stderr)
    return exit_codes.INTERRUPTED


__all__ = ["build_parser", "exit_codes", "main"]
