"""eic-guard command line: scan, refresh and the embedded demo (DESIGN §5).

Exit codes: 0 every opted-in instance is compliant (or fixed), 1 some is not, 2 usage/configuration/input error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import boto3
from rich.console import Console
from rich.progress import Progress

from . import ip_ranges
from .clients import AwsClients, known_regions
from .engine import run_scan
from .errors import ConfigurationError, EicGuardError
from .html_report import render_html
from .observability import logger
from .refresh import apply_ranges
from .report import Report
from .report_table import render
from .settings import Settings
from .state import FileStateStore

EXIT_OK, EXIT_NONCOMPLIANT, EXIT_USAGE = 0, 1, 2
DEFAULT_STATE_FILE = os.path.join(os.path.expanduser("~"), ".eic-guard", "state.json")


def _target_arguments(command: argparse.ArgumentParser, verb: str) -> None:
    """--region and --ip-ranges, shared by scan and refresh."""
    command.add_argument(
        "--region",
        action="append",
        dest="regions",
        metavar="R",
        help=f"region to {verb} (repeatable; default: the session's region)",
    )
    command.add_argument("--ip-ranges", metavar="PATH|URL", help="ip-ranges.json to use instead of the AWS URL")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eic-guard", description="Keep EC2 Instance Connect working.")
    commands = parser.add_subparsers(dest="command", required=True)
    scan = commands.add_parser("scan", help="check opted-in instances (report-only unless --remediate)")
    _target_arguments(scan, "scan")
    scan.add_argument("--remediate", action="store_true", help="fix the drift that can be fixed safely")
    scan.add_argument("--format", choices=("table", "json"), default="table")
    scan.add_argument("--output", metavar="FILE", help="write the report to FILE instead of standard output")
    scan.add_argument("--html", metavar="FILE", help="also write the self-contained HTML report to FILE")
    refresh = commands.add_parser("refresh", help="apply the current EIC ranges to eic-guard's managed groups")
    _target_arguments(refresh, "refresh")
    refresh.add_argument("--md5", metavar="HEX", help="expected md5 of the file (as in the SNS message)")
    refresh.add_argument(
        "--state-file",
        metavar="FILE",
        default=None,
        help=f"local state (default: $EIC_GUARD_STATE_FILE or {DEFAULT_STATE_FILE})",
    )
    commands.add_parser("demo", help="run the embedded end-to-end demo against a local simulated AWS")
    return parser


def _settings(args: argparse.Namespace, session: boto3.Session, mode: str | None = None) -> Settings:
    regions = tuple(args.regions or ()) or ((session.region_name,) if session.region_name else ())
    if not regions:
        raise ConfigurationError("no region: pass --region or set AWS_REGION")
    unknown = sorted(set(regions) - known_regions(session))
    if unknown:
        raise ConfigurationError(f"unknown region: {', '.join(unknown)}")
    return Settings.from_env(regions=regions, mode=mode or ("remediate" if args.remediate else "report"))


def _write(report: Report, fmt: str, output: str | None) -> None:
    stream = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    try:
        if fmt == "json":
            json.dump(report.to_dict(), stream, indent=2)
            stream.write("\n")
        else:
            render(report, stream, color=False if output else None)
    finally:
        if output:
            stream.close()


@contextmanager
def _progress(regions: int) -> Iterator[Callable[[str], None] | None]:
    """A progress bar on stderr for multi-region scans, only when a person is watching a terminal."""
    if regions < 2 or not sys.stderr.isatty():
        yield None
        return
    with Progress(transient=True, console=Console(stderr=True)) as progress:
        task = progress.add_task("scanning regions", total=regions)
        yield lambda region: progress.update(task, advance=1, description=f"scanned {region}")


def _require_writable(path: str | None) -> None:
    """Refuse a report destination that cannot be written before the scan runs (and, with --remediate, changes)."""
    if path and not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
        raise ConfigurationError(f"cannot write {path}: its directory does not exist or is not writable")


def scan(args: argparse.Namespace) -> int:
    session = boto3.Session()
    settings = _settings(args, session)
    _require_writable(args.output)
    _require_writable(args.html)
    ranges = ip_ranges.load(args.ip_ranges)
    clients = AwsClients(session)
    with _progress(len(settings.regions)) as advance:
        report = run_scan(clients, settings, ranges, on_target=advance)
    _write(report, args.format, args.output)
    if args.html:
        Path(args.html).write_text(render_html(report), encoding="utf-8")
    return EXIT_NONCOMPLIANT if report.has_noncompliant else EXIT_OK


def refresh(args: argparse.Namespace) -> int:
    session = boto3.Session()
    settings = _settings(args, session, mode="remediate")
    ranges = ip_ranges.load(args.ip_ranges, expected_md5=args.md5)
    store = FileStateStore(args.state_file or os.environ.get("EIC_GUARD_STATE_FILE") or DEFAULT_STATE_FILE)
    clients = AwsClients(session)
    clients.account_id()  # fail on missing credentials before anything else
    result = apply_ranges(clients, settings, store, ranges, replay_same=True)
    summary = result.summary()
    print(json.dumps(summary, indent=2))
    for alert in result.alerts:
        print(f"eic-guard: alert: {alert}", file=sys.stderr)
    return EXIT_NONCOMPLIANT if result.alerts else EXIT_OK


class _CurrentStderr:
    """Whatever sys.stderr is when a line is written (tests and the demo swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _quiet_logs() -> None:
    """The CLI's standard output is the report: structured logs go to stderr, warnings and up unless asked."""
    logger.registered_handler.setStream(_CurrentStderr())
    logger.setLevel(os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_logs()
    try:
        if args.command == "demo":
            from .demo import main as demo_main  # moto is a dev dependency: imported only for the demo

            return demo_main()
        return refresh(args) if args.command == "refresh" else scan(args)
    except EicGuardError as exc:
        print(f"eic-guard: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
