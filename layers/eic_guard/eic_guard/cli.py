"""eic-guard command line: scan, refresh and the embedded demo (DESIGN §5).

Exit codes: 0 every opted-in instance is compliant (or fixed), 1 some is not, 2 usage/configuration/input error.

Importing this module, `--help` and `--version` build no boto3 session and touch no AWS configuration: the runtime
modules (their tracer reads the AWS profile when imported) are imported only once a command runs, inside the guard
that turns every AWS configuration problem into one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigurationError, EicGuardError

if TYPE_CHECKING:
    import boto3

    from .aws.clients import AwsClients
    from .outputs.report import Report
    from .settings import Settings

EXIT_OK, EXIT_NONCOMPLIANT, EXIT_USAGE = 0, 1, 2
DEFAULT_STATE_FILE = os.path.join(os.path.expanduser("~"), ".eic-guard", "state.json")
# Where the regions come from when --region is not given, in DESIGN §5's order (then the AWS profile's region).
REGION_VARIABLES = ("EIC_GUARD_REGIONS", "AWS_REGION", "AWS_DEFAULT_REGION")

EPILOG = """\
regions: --region, else $EIC_GUARD_REGIONS (comma list), else $AWS_REGION, else $AWS_DEFAULT_REGION, else the
  region of the AWS profile.
settings: the EIC_GUARD_* variables of the functions are read and validated (a bad one is exit 2). EIC_GUARD_MODE
  is only validated: `scan` is report-only unless --remediate, whatever EIC_GUARD_MODE says, and `refresh` always
  updates eic-guard's own ManagedBy=eic-guard groups.
exit codes: 0 compliant (or fixed, or refreshed), 1 some instance is non-compliant (or a refresh raised an alert),
  2 usage, configuration or input error (one line on stderr, nothing changed).
"""


def package_version() -> str:
    """The installed distribution's version; the package's own when it runs from a source tree (the layer)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("eic-guard")
    except PackageNotFoundError:
        from . import __version__

        return __version__


def _target_arguments(command: argparse.ArgumentParser, verb: str) -> None:
    """--region and --ip-ranges, shared by scan and refresh."""
    command.add_argument(
        "--region",
        action="append",
        dest="regions",
        metavar="R",
        help=f"region(s) to {verb}: repeat the flag or give a comma list (us-east-1,eu-west-1); "
        "default: $EIC_GUARD_REGIONS, $AWS_REGION, $AWS_DEFAULT_REGION, then the AWS profile's region",
    )
    command.add_argument("--ip-ranges", metavar="PATH|URL", help="ip-ranges.json to use instead of the AWS URL")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eic-guard",
        description="Keep EC2 Instance Connect working.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    scan = commands.add_parser(
        "scan",
        help="check opted-in instances (report-only unless --remediate)",
        description="Check opted-in instances. Report-only unless --remediate: EIC_GUARD_MODE is validated but "
        "never makes the CLI change anything.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _target_arguments(scan, "scan")
    scan.add_argument(
        "--remediate",
        action="store_true",
        help="fix the drift that can be fixed safely (the only way to make the CLI change instances)",
    )
    scan.add_argument("--format", choices=("table", "json"), default="table")
    scan.add_argument("--output", metavar="FILE", help="write the report to FILE instead of standard output")
    scan.add_argument("--html", metavar="FILE", help="also write the self-contained HTML report to FILE")
    refresh = commands.add_parser(
        "refresh",
        help="apply the current EIC ranges to eic-guard's managed groups",
        description="Apply the current EIC ranges to eic-guard's ManagedBy=eic-guard security groups (the SNS "
        "path's rules; the same synctoken is re-applied). Concurrent refreshes on one state file take turns.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _target_arguments(refresh, "refresh")
    refresh.add_argument("--md5", metavar="HEX", help="expected md5 of the file (as in the SNS message)")
    refresh.add_argument(
        "--state-file",
        metavar="FILE",
        default=None,
        help=f"local state (default: $EIC_GUARD_STATE_FILE or {DEFAULT_STATE_FILE}); FILE.lock serializes runs",
    )
    commands.add_parser("demo", help="run the embedded end-to-end demo against a local simulated AWS")
    return parser


# ---- configuration -------------------------------------------------------------------------------------------------
def split_regions(values: Iterable[str]) -> tuple[str, ...]:
    """Repeated values and comma lists, in order, without blanks or duplicates (`--region a,b --region a`)."""
    return tuple(dict.fromkeys(part.strip() for value in values for part in value.split(",") if part.strip()))


def resolve_regions(
    flags: Sequence[str] | None, env: Mapping[str, str], profile_region: Callable[[], str | None]
) -> tuple[tuple[str, ...], str]:
    """The regions to work on and where they came from, in DESIGN §5's order (see REGION_VARIABLES).

    The profile's region is asked for last and only if needed: reading it opens the AWS configuration files.
    """
    if flags is not None:
        regions = split_regions(flags)
        if not regions:
            raise ConfigurationError("--region needs a region name")
        return regions, "--region"
    for name in REGION_VARIABLES:
        value = (env.get(name) or "").strip()
        if value:
            # Only EIC_GUARD_REGIONS is a list; AWS_REGION=a,b is kept whole and refused as an unknown region.
            return (split_regions([value]) if name == "EIC_GUARD_REGIONS" else (value,)), name
    region = profile_region()
    if region:
        return (region,), "the AWS profile"
    raise ConfigurationError(
        "no region: pass --region, set EIC_GUARD_REGIONS, AWS_REGION or AWS_DEFAULT_REGION, "
        "or give the AWS profile a region"
    )


def _session(region: str | None = None) -> boto3.Session:
    """A boto3 session; building it reads AWS_PROFILE's configuration (ProfileNotFound is turned into exit 2)."""
    import boto3

    return boto3.Session(region_name=region)


def _settings(regions: tuple[str, ...], mode: str) -> Settings:
    """Every EIC_GUARD_* variable validated as the functions validate it (EIC_GUARD_MODE included), then the mode
    the command runs in: the CLI's mode comes from its flags, so EIC_GUARD_MODE is checked but not honoured."""
    from .settings import Settings

    configured = Settings.from_env(regions=regions)
    return configured.model_copy(update={"mode": mode})


def _configure(args: argparse.Namespace, mode: str) -> tuple[boto3.Session, Settings]:
    """Regions (known to botocore), settings and the session for the clients, before any AWS call."""
    from .aws.clients import known_regions

    probe = _session()
    regions, source = resolve_regions(args.regions, os.environ, lambda: probe.region_name)
    known = known_regions(probe)
    unknown = [region for region in regions if region not in known]
    if unknown:
        raise ConfigurationError(f"unknown region: {', '.join(unknown)} (from {source})")
    settings = _settings(regions, mode)
    # Account-level calls (STS) go to the first region worked on when the profile names none.
    return (probe if probe.region_name else _session(regions[0])), settings


def _connect(session: boto3.Session, settings: Settings) -> AwsClients:
    """The clients of the run, built now, and the caller's account asked for: configuration that botocore only
    reads when a client is built (AWS_ENDPOINT_URL=foo, AWS_MAX_ATTEMPTS=abc raise ValueError) and missing
    credentials or an unreachable endpoint are found before anything is read or changed."""
    from .aws.clients import AwsClients

    clients = AwsClients(session)
    try:
        for region in settings.regions:
            clients.ec2(region)
    except ValueError as exc:
        raise ConfigurationError(f"AWS configuration problem: {exc}") from None
    clients.account_id()
    return clients


@contextmanager
def _aws_problems() -> Iterator[None]:
    """Turn what botocore raises about the AWS configuration (unknown profile, no credentials, unreachable endpoint,
    a refused request) into a ConfigurationError: one line on stderr and exit 2, never a traceback."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ProfileNotFound

    try:
        yield
    except ProfileNotFound as exc:
        profile = exc.kwargs.get("profile", "")
        raise ConfigurationError(
            f"AWS profile {profile!r} not found in the AWS config or credentials files (check AWS_PROFILE)"
        ) from None
    except NoCredentialsError:
        raise ConfigurationError("no AWS credentials found (set AWS_PROFILE or the AWS_* variables)") from None
    except BotoCoreError as exc:
        raise ConfigurationError(f"AWS configuration problem: {exc}") from None
    except ClientError as exc:
        raise ConfigurationError(f"AWS refused a request: {exc}") from None


# ---- scan ----------------------------------------------------------------------------------------------------------
def _write(report: Report, fmt: str, output: str | None) -> None:
    from .outputs.table import render

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
    from rich.console import Console
    from rich.progress import Progress

    with Progress(transient=True, console=Console(stderr=True)) as progress:
        task = progress.add_task("scanning regions", total=regions)
        yield lambda target: progress.update(task, advance=1, description=f"scanned {target.key}")


def _require_writable(path: str | None) -> None:
    """Refuse a report destination that cannot be written before the scan runs (and, with --remediate, changes)."""
    if path and not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
        raise ConfigurationError(f"cannot write {path}: its directory does not exist or is not writable")


def scan(args: argparse.Namespace) -> int:
    from .fanout.local import run_scan
    from .outputs.html import render_html
    from .ranges import ip_ranges
    from .ranges.refresh import require_eic

    session, settings = _configure(args, mode="remediate" if args.remediate else "report")
    if not args.remediate and (os.environ.get("EIC_GUARD_MODE") or "").strip() == "remediate":
        print("eic-guard: note: EIC_GUARD_MODE=remediate is ignored here: pass --remediate to fix", file=sys.stderr)
    _require_writable(args.output)
    _require_writable(args.html)
    ranges = ip_ranges.load(args.ip_ranges)
    require_eic(ranges)  # with no EIC prefix at all every instance would be reported (or "fixed") wrongly
    clients = _connect(session, settings)
    with _progress(len(settings.regions)) as advance:
        report = run_scan(clients, settings, ranges, on_target=advance)
    _write(report, args.format, args.output)
    if args.html:
        Path(args.html).write_text(render_html(report), encoding="utf-8")
    return EXIT_NONCOMPLIANT if report.has_noncompliant else EXIT_OK


# ---- refresh -------------------------------------------------------------------------------------------------------
def refresh(args: argparse.Namespace) -> int:
    from .ranges import ip_ranges
    from .ranges.refresh import apply_ranges, require_eic
    from .ranges.state import FileStateStore, StateConflict

    session, settings = _configure(args, mode="remediate")
    ranges = ip_ranges.load(args.ip_ranges, expected_md5=args.md5)
    require_eic(ranges)
    store = FileStateStore(args.state_file or os.environ.get("EIC_GUARD_STATE_FILE") or DEFAULT_STATE_FILE)
    store.check()  # a corrupt state or an unwritable directory is found now, not after EC2 was changed
    clients = _connect(session, settings)

    def waiting() -> None:
        print(f"eic-guard: waiting for {store.lock_path}: another refresh is running", file=sys.stderr)

    try:
        with store.locked(on_wait=waiting):
            result = apply_ranges(clients, settings, store, ranges, replay_same=True)
    except StateConflict as exc:  # another writer that does not take the lock (e.g. an older eic-guard)
        raise ConfigurationError(f"{exc}: another run updated the state meanwhile; run the refresh again") from None
    summary = result.summary()
    print(json.dumps(summary, indent=2))
    for alert in result.alerts:
        print(f"eic-guard: alert: {alert}", file=sys.stderr)
    return EXIT_NONCOMPLIANT if result.alerts else EXIT_OK


def demo(_: argparse.Namespace) -> int:
    from .demo import main as demo_main  # moto is a dev dependency: imported only for the demo

    return demo_main()


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"scan": scan, "refresh": refresh, "demo": demo}


# ---- main ----------------------------------------------------------------------------------------------------------
class _CurrentStderr:
    """Whatever sys.stderr is when a line is written (tests and the demo swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _quiet_logs() -> None:
    """The CLI's standard output is the report: structured logs go to stderr, warnings and up unless asked.

    The first import of eic-guard's runtime happens here. Its tracer builds an X-Ray client when imported, so a
    bad AWS setting can fail this import: botocore's errors are handled by _aws_problems, its ValueErrors here.
    """
    try:
        from .observability import logger
    except ValueError as exc:
        raise ConfigurationError(f"AWS configuration problem: {exc}") from None

    logger.registered_handler.setStream(_CurrentStderr())
    logger.setLevel(os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --help, --version and usage errors exit here, before any AWS import
    try:
        with _aws_problems():
            _quiet_logs()
            return COMMANDS[args.command](args)
    except EicGuardError as exc:
        print(f"eic-guard: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
