"""eic-guard command line: scan, refresh and the embedded demo (docs/architecture.md §5).

Exit codes: 0 every opted-in instance is compliant (or fixed), 1 some is not, 2 usage/configuration/input error.

Importing this module, `--help` and `--version` build no boto3 session and touch no AWS configuration: the runtime
modules (their tracer reads the AWS profile when imported) are imported only once a command runs, inside the guard
that turns every AWS configuration problem into one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigurationError, EicGuardError

if TYPE_CHECKING:
    import boto3

    from ..aws.clients import AwsClients
    from ..fanout.local import RunOutcome
    from ..fanout.targets import Target
    from ..outputs.report import Report
    from ..ranges.ip_ranges import IpRanges
    from ..ranges.state import FileStateStore
    from ..settings import Settings

EXIT_OK, EXIT_NONCOMPLIANT, EXIT_USAGE = 0, 1, 2
DEFAULT_STATE_FILE = os.path.join(os.path.expanduser("~"), ".eic-guard", "state.json")
# Where the regions come from when --region is not given, in docs/architecture.md §5's order (then the AWS profile's
# region).
REGION_VARIABLES = ("EIC_GUARD_REGIONS", "AWS_REGION", "AWS_DEFAULT_REGION")
ORGANIZATION = "organization"  # EIC_GUARD_ACCOUNTS's value for every ACTIVE account of the organization
ACCOUNT_ID = re.compile(r"^\d{12}$")
ROLE_NAME = re.compile(r"^[A-Za-z0-9_+=,.@-]{1,64}$")  # an IAM role name, as Settings.member_role_name accepts it
DEFAULT_MEMBER_ROLE = "eic-guard-member"
DEFAULT_MAX_WORKERS, MAX_WORKERS = 8, 64

EPILOG = """\
regions: --region, else $EIC_GUARD_REGIONS (comma list), else $AWS_REGION, else $AWS_DEFAULT_REGION, else the
  region of the AWS profile.
settings: the EIC_GUARD_* variables of the functions are read and validated (a bad one is exit 2). EIC_GUARD_MODE
  is only validated: `scan` is report-only unless --remediate, whatever EIC_GUARD_MODE says, and `refresh` always
  updates eic-guard's own ManagedBy=eic-guard groups.
accounts: --organization or --account, else $EIC_GUARD_ACCOUNTS ("organization" or a comma list), else the caller's
  own account. Other accounts are entered with sts:AssumeRole on their --role-name role ($EIC_GUARD_MEMBER_ROLE_NAME,
  default eic-guard-member); one that cannot be entered is a target error and the others go on.
exit codes: 0 compliant (or fixed, or refreshed), 1 some instance is non-compliant, a target (account, region) could
  not be scanned, or a refresh raised an alert; 2 usage, configuration or input error (one line on stderr, nothing
  changed).
"""


def package_version() -> str:
    """The installed distribution's version; the package's own when it runs from a source tree (the layer)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("eic-guard")
    except PackageNotFoundError:
        from .. import __version__

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
    command.add_argument(
        "--account",
        action="append",
        dest="accounts",
        metavar="ID",
        help=f"account(s) to {verb}: repeat the flag or give a comma list of 12-digit ids; the caller's own account "
        "uses its credentials, any other is entered through its member role; default: $EIC_GUARD_ACCOUNTS, else "
        "the caller's own account",
    )
    command.add_argument(
        "--organization",
        action="store_true",
        help=f"{verb} every ACTIVE account of the AWS Organization (run from the management account or a delegated "
        "administrator); not with --account",
    )
    command.add_argument(
        "--role-name",
        metavar="NAME",
        help=f"the member role assumed in every other account (default: $EIC_GUARD_MEMBER_ROLE_NAME, else "
        f"{DEFAULT_MEMBER_ROLE})",
    )
    command.add_argument(
        "--max-workers",
        metavar="N",
        help=f"(account, region) targets worked on at once, 1 to {MAX_WORKERS} (default {DEFAULT_MAX_WORKERS})",
    )


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
    scan.add_argument(
        "--format",
        choices=("table", "json", "csv"),
        default="table",
        help="table (default), the JSON report, or CSV: one row per (instance, check)",
    )
    scan.add_argument("--output", metavar="FILE", help="write the report to FILE instead of standard output")
    scan.add_argument("--html", metavar="FILE", help="also write the self-contained HTML report to FILE")
    scan.add_argument(
        "--state-file",
        metavar="FILE",
        default=None,
        help=f"local state (default: $EIC_GUARD_STATE_FILE or {DEFAULT_STATE_FILE}); the scan keeps what it last "
        "alerted in alerts-state.json beside it and prints on stderr only what is new (weekly: what persists)",
    )
    scan.add_argument(
        "--security-hub",
        action="store_true",
        help=(
            "also import a Security Hub finding per failing check, in each instance's own account"
            " (docs/architecture.md §11)"
        ),
    )
    scan.add_argument(
        "--allowed-images",
        choices=("al2023", "eic-preinstalled"),
        help="images al2023-ami accepts: al2023 (AL2023 standard only) or eic-preinstalled (every image AWS ships "
        "EC2 Instance Connect in: AL2023, Amazon Linux 2 2.0.20190618+, Ubuntu 20.04+ from Canonical); "
        "default: $EIC_GUARD_ALLOWED_IMAGES, else al2023",
    )
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
    cleanup = commands.add_parser(
        "cleanup",
        help="uninstall: detach and delete eic-guard's groups, release its Elastic IPs (run before sam delete)",
        description="Detach the eic-guard-ssh groups tagged ManagedBy=eic-guard from every network interface "
        "(keeping its other groups), delete them, and release the Elastic IPs tagged ManagedBy=eic-guard. Nothing "
        "without that tag is touched. Exit 0 when everything was done (or planned), 1 when something failed or "
        "was kept (an interface whose only group is eic-guard-ssh), 2 on a usage or configuration error.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _cleanup_arguments(cleanup)
    return parser


def _cleanup_arguments(command: argparse.ArgumentParser) -> None:
    """cleanup's flags: the account and region choice of scan (no ip-ranges), --dry-run and --format."""
    command.add_argument(
        "--region",
        action="append",
        dest="regions",
        metavar="R",
        help="region(s) to clean up: repeat the flag or give a comma list; default: $EIC_GUARD_REGIONS, "
        "$AWS_REGION, $AWS_DEFAULT_REGION, then the AWS profile's region",
    )
    command.add_argument(
        "--account",
        action="append",
        dest="accounts",
        metavar="ID",
        help="account(s) to clean up: repeat the flag or give a comma list of 12-digit ids; default: "
        "$EIC_GUARD_ACCOUNTS, else the caller's own account",
    )
    command.add_argument(
        "--organization", action="store_true", help="clean up every ACTIVE account of the organization"
    )
    command.add_argument(
        "--role-name",
        metavar="NAME",
        help=f"the role assumed in every other account (default: $EIC_GUARD_MEMBER_ROLE_NAME, else "
        f"{DEFAULT_MEMBER_ROLE}); it needs ec2:DeleteSecurityGroup, which the member role does not grant",
    )
    command.add_argument("--dry-run", action="store_true", help="list what would be done, change nothing")
    command.add_argument("--format", choices=("table", "json"), default="table")


# ---- configuration -------------------------------------------------------------------------------------------------
def split_regions(values: Iterable[str]) -> tuple[str, ...]:
    """Repeated values and comma lists, in order, without blanks or duplicates (`--region a,b --region a`)."""
    return tuple(dict.fromkeys(part.strip() for value in values for part in value.split(",") if part.strip()))


@dataclass(frozen=True)
class FanOut:
    """What the account flags ask for: the EIC_GUARD_ACCOUNTS and EIC_GUARD_MEMBER_ROLE_NAME values they override
    (None: the variable's, else the default) and the size of the thread pool."""

    accounts: str | None = None
    role_name: str | None = None
    max_workers: int = DEFAULT_MAX_WORKERS


def resolve_fan_out(args: argparse.Namespace) -> FanOut:
    """--account, --organization, --role-name and --max-workers, checked before anything reads AWS."""
    flags = getattr(args, "accounts", None)
    organization = getattr(args, "organization", False)
    if organization and flags is not None:
        raise ConfigurationError("--organization and --account exclude each other: give one of them")
    accounts = None
    if organization:
        accounts = ORGANIZATION
    elif flags is not None:
        ids = split_regions(flags)
        if not ids:
            raise ConfigurationError("--account needs a 12-digit account id")
        bad = [i for i in ids if not ACCOUNT_ID.match(i)]
        if bad:
            raise ConfigurationError(f"--account: not a 12-digit account id: {', '.join(bad)}")
        accounts = ",".join(ids)
    role_name = getattr(args, "role_name", None)
    if role_name is not None and not ROLE_NAME.match(role_name):
        raise ConfigurationError(f"--role-name: not an IAM role name (1-64 letters, digits or +=,.@_-): {role_name!r}")
    raw = getattr(args, "max_workers", None)
    workers = DEFAULT_MAX_WORKERS
    if raw is not None:
        try:
            workers = int(raw, 10)
        except ValueError:
            workers = 0
        if not 1 <= workers <= MAX_WORKERS:
            raise ConfigurationError(f"--max-workers: expected a whole number from 1 to {MAX_WORKERS}, got {raw!r}")
    return FanOut(accounts, role_name, workers)


def resolve_regions(
    flags: Sequence[str] | None, env: Mapping[str, str], profile_region: Callable[[], str | None]
) -> tuple[tuple[str, ...], str]:
    """The regions to work on and where they came from, in docs/architecture.md §5's order (see REGION_VARIABLES).

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


def _settings(regions: tuple[str, ...], mode: str, fan_out: FanOut = FanOut()) -> Settings:
    """Every EIC_GUARD_* variable validated as the functions validate it (EIC_GUARD_MODE included), then the mode
    the command runs in: the CLI's mode comes from its flags, so EIC_GUARD_MODE is checked but not honoured.
    The account flags, when given, take the place of EIC_GUARD_ACCOUNTS and EIC_GUARD_MEMBER_ROLE_NAME."""
    from ..settings import Settings

    configured = Settings.from_env(regions=regions, accounts=fan_out.accounts, member_role_name=fan_out.role_name)
    return configured.model_copy(update={"mode": mode})


def _configure(args: argparse.Namespace, mode: str, fan_out: FanOut = FanOut()) -> tuple[boto3.Session, Settings]:
    """Regions (known to botocore), settings and the session for the clients, before any AWS call."""
    from ..aws.clients import known_regions

    probe = _session()
    regions, source = resolve_regions(args.regions, os.environ, lambda: probe.region_name)
    known = known_regions(probe)
    unknown = [region for region in regions if region not in known]
    if unknown:
        raise ConfigurationError(f"unknown region: {', '.join(unknown)} (from {source})")
    settings = _settings(regions, mode, fan_out)
    # Account-level calls (STS) go to the first region worked on when the profile names none.
    return (probe if probe.region_name else _session(regions[0])), settings


def _connect(session: boto3.Session, settings: Settings) -> AwsClients:
    """The clients of the run, built now, and the caller's account asked for: configuration that botocore only
    reads when a client is built (AWS_ENDPOINT_URL=foo, AWS_MAX_ATTEMPTS=abc raise ValueError) and missing
    credentials or an unreachable endpoint are found before anything is read or changed."""
    from ..aws.clients import AwsClients

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
def account_lines(report: Report) -> list[str]:
    """One summary line per account when the report covers more than one (the table's rows do not name it)."""
    if len(report.accounts) < 2:
        return []
    lines = []
    for account in report.accounts:
        verdicts = Counter(e.verdict for e in report.instances if e.account_id == account)
        targets = Counter(t.status for t in report.targets if t.account_id == account)
        errors = verdicts["error"] + targets["error"]
        own = " (this account)" if account == report.account_id else ""
        lines.append(
            f"account {account}{own}: instances {sum(verdicts.values())}: {verdicts['compliant']} compliant, "
            f"{verdicts['fixed']} fixed, {verdicts['noncompliant']} noncompliant, {verdicts['excluded']} excluded, "
            f"{errors} errors · targets " + ", ".join(f"{n} {status}" for status, n in sorted(targets.items()))
        )
    return lines


def _write(report: Report, fmt: str, output: str | None) -> None:
    from ..outputs.table import render

    stream = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    try:
        if fmt == "json":
            json.dump(report.to_dict(), stream, indent=2)
            stream.write("\n")
        elif fmt == "csv":
            from ..outputs.csv_rows import write_csv

            write_csv(report, stream)
        else:
            render(report, stream, color=False if output else None)
            for line in account_lines(report):
                stream.write(line + "\n")
    finally:
        if output:
            stream.close()


def _target_count(settings: Settings) -> int | None:
    """How many (account, region) targets the run has, when known before it is planned (not for an organization)."""
    if settings.accounts == ORGANIZATION:
        return None
    accounts = len(settings.accounts.split(",")) if settings.accounts else 1
    return accounts * len(settings.regions)


@contextmanager
def _progress(targets: int | None, verb: str = "scanned") -> Iterator[Callable[[Target], None] | None]:
    """A progress bar on stderr counting (account, region) targets, only when a person is watching a terminal and
    there is more than one target (an organization's count is known once it is listed: shown as ?)."""
    if (targets is not None and targets < 2) or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("targets"))
    with Progress(*columns, TimeElapsedColumn(), transient=True, console=Console(stderr=True)) as progress:
        task = progress.add_task("scanning targets" if verb == "scanned" else "refreshing targets", total=targets)
        yield lambda target: progress.update(task, advance=1, description=f"{verb} {target.key}")


def _require_writable(path: str | None) -> None:
    """Refuse a report destination that cannot be written before the scan runs (and, with --remediate, changes)."""
    if path and not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
        raise ConfigurationError(f"cannot write {path}: its directory does not exist or is not writable")


@contextmanager
def _organization_problems(settings: Settings, source: str) -> Iterator[None]:
    """A refused Organizations ListAccounts (not the management account, no organization) is the run's one-line
    configuration error, raised while planning, before any target is touched."""
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as exc:
        if settings.accounts != ORGANIZATION or exc.operation_name != "ListAccounts":
            raise
        raise ConfigurationError(
            f"{source}: cannot list the organization's accounts (run it from the management account or a "
            f"delegated administrator): {exc}"
        ) from None


def _run(
    job: str,
    settings: Settings,
    clients: AwsClients,
    fan_out: FanOut,
    *,
    ranges: IpRanges | None = None,
    store: FileStateStore | None = None,
) -> RunOutcome:
    """The fan-out engine in this process: plan → one worker per (account, region) in a bounded pool → aggregate."""
    from ..fanout.local import run_job

    verb = "scanned" if job == "scan" else "refreshed"
    source = "--organization" if fan_out.accounts == ORGANIZATION else f"EIC_GUARD_ACCOUNTS={ORGANIZATION}"
    with _organization_problems(settings, source), _progress(_target_count(settings), verb) as advance:
        outcome = run_job(
            job, settings, clients, ranges=ranges, store=store, max_workers=fan_out.max_workers, on_target=advance
        )
    return outcome  # an organization without an ACTIVE account is refused by the plan: never a green empty run


def scan(args: argparse.Namespace) -> int:
    from ..outputs.html import render_html
    from ..ranges import ip_ranges
    from ..ranges.refresh import require_eic

    fan_out = resolve_fan_out(args)
    session, settings = _configure(args, "remediate" if args.remediate else "report", fan_out)
    if args.security_hub:
        settings = settings.model_copy(update={"security_hub_findings": "enabled"})
    if args.allowed_images:
        settings = settings.model_copy(update={"allowed_images": args.allowed_images})
    if not args.remediate and (os.environ.get("EIC_GUARD_MODE") or "").strip() == "remediate":
        print("eic-guard: note: EIC_GUARD_MODE=remediate is ignored here: pass --remediate to fix", file=sys.stderr)
    _require_writable(args.output)
    _require_writable(args.html)
    ranges = ip_ranges.load(args.ip_ranges)
    require_eic(ranges)  # with no EIC prefix at all every instance would be reported (or "fixed") wrongly
    clients = _connect(session, settings)
    report = _run("scan", settings, clients, fan_out, ranges=ranges).report
    _write(report, args.format, args.output)
    if args.html:
        Path(args.html).write_text(render_html(report), encoding="utf-8")
    _alert_on_stderr(report, args.state_file, settings.accounts == ORGANIZATION)
    return EXIT_NONCOMPLIANT if report.has_noncompliant else EXIT_OK


def _alert_on_stderr(report: Report, state_file: str | None, organization: bool) -> None:
    """The deployed alert, on stderr (standard output is the report): only what is new since the last scan of the
    same accounts and regions, and once a week what persists, so a nightly cron mails only what changed. What was
    alerted is kept in alerts-state.json beside the state file; a problem with that file never fails the scan."""
    from ..outputs.alerts import ALERT_STATE_FILE, FileAlertState, quiet_alert, scan_scope

    path = Path(state_file or os.environ.get("EIC_GUARD_STATE_FILE") or DEFAULT_STATE_FILE).with_name(ALERT_STATE_FILE)
    alert = quiet_alert(report, FileAlertState(path, scan_scope(report, organization)), now=report.finished_at)
    if alert.subject and alert.message:
        print(f"{alert.subject}\n{alert.message}", file=sys.stderr)
    alert.remember()


# ---- refresh -------------------------------------------------------------------------------------------------------
def refresh(args: argparse.Namespace) -> int:
    from ..ranges import ip_ranges
    from ..ranges.refresh import apply_ranges, require_eic
    from ..ranges.state import FileStateStore, StateConflict

    fan_out = resolve_fan_out(args)
    session, settings = _configure(args, "remediate", fan_out)
    ranges = ip_ranges.load(args.ip_ranges, expected_md5=args.md5)
    require_eic(ranges)
    store = FileStateStore(args.state_file or os.environ.get("EIC_GUARD_STATE_FILE") or DEFAULT_STATE_FILE)
    store.check()  # a corrupt state or an unwritable directory is found now, not after EC2 was changed
    clients = _connect(session, settings)

    def waiting() -> None:
        print(f"eic-guard: waiting for {store.lock_path}: another refresh is running", file=sys.stderr)

    try:
        with store.locked(on_wait=waiting):
            if settings.accounts:
                summary = _refresh_accounts(settings, clients, store, ranges, fan_out)
            else:  # the caller's own account, as always: the state advances only once every region is done
                summary = apply_ranges(clients, settings, store, ranges, replay_same=True).summary()
    except StateConflict as exc:  # another writer that does not take the lock (e.g. an older eic-guard)
        raise ConfigurationError(f"{exc}: another run updated the state meanwhile; run the refresh again") from None
    print(json.dumps(summary, indent=2))
    for alert in summary.get("alerts", ()):
        print(f"eic-guard: alert: {alert}", file=sys.stderr)
    return EXIT_NONCOMPLIANT if summary.get("alerts") else EXIT_OK


def _refresh_accounts(
    settings: Settings, clients: AwsClients, store: FileStateStore, ranges: IpRanges, fan_out: FanOut
) -> dict:
    """The refresh of several accounts (the SNS path's fan-out, docs/architecture.md §9): the state file advances once
    with the verified file, then every (account, region) brings its managed groups to it, adds before revokes. A target
    that fails is an alert; the next refresh or nightly run computes its writes from its groups' actual rules.
    An older synctoken than the state's is a stale no-op; the same one is re-applied (repairs drift by hand)."""
    from datetime import UTC, datetime

    from ..ranges.catch_up import advance_state

    state = store.load()
    previous = state.sync_token
    if previous is not None and not state.is_newer(ranges.sync_token) and int(ranges.sync_token) != int(previous):
        return {"status": "stale", "sync_token": ranges.sync_token, "stored_sync_token": previous, "alerts": []}
    advance_state(state, ranges, settings, datetime.now(UTC))
    store.save(state, previous)
    outcome = _run("refresh", settings, clients, fan_out, store=store)
    return {**(outcome.refresh or {}), "targets": [t.model_dump(mode="json") for t in outcome.report.targets]}


# ---- cleanup -------------------------------------------------------------------------------------------------------
def cleanup(args: argparse.Namespace) -> int:
    from ..cleanup import exit_status, render_table, run_cleanup

    fan_out = resolve_fan_out(args)
    session, settings = _configure(args, "report", fan_out)
    clients = _connect(session, settings)
    source = "--organization" if fan_out.accounts == ORGANIZATION else f"EIC_GUARD_ACCOUNTS={ORGANIZATION}"
    with _organization_problems(settings, source):
        actions = run_cleanup(clients, settings, dry_run=args.dry_run, max_workers=fan_out.max_workers)
    if args.format == "json":
        json.dump([action.to_dict() for action in actions], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render_table(actions, sys.stdout, dry_run=args.dry_run)
    return exit_status(actions)


def demo(_: argparse.Namespace) -> int:
    from ..demo import main as demo_main  # moto is a dev dependency: imported only for the demo

    return demo_main()


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "scan": scan,
    "refresh": refresh,
    "demo": demo,
    "cleanup": cleanup,
}


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
        from ..observability import logger
    except ValueError as exc:
        raise ConfigurationError(f"AWS configuration problem: {exc}") from None

    logger.registered_handler.setStream(_CurrentStderr())
    logger.setLevel(os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --help, --version and usage errors exit here, before any AWS import
    # Standard output is the report: Powertools' metrics (they flush on their own past 100 values) stay out of it.
    metrics_setting = os.environ.get("POWERTOOLS_METRICS_DISABLED")
    os.environ["POWERTOOLS_METRICS_DISABLED"] = metrics_setting or "true"
    try:
        with _aws_problems():
            _quiet_logs()
            return COMMANDS[args.command](args)
    except EicGuardError as exc:
        print(f"eic-guard: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if metrics_setting is None:
            os.environ.pop("POWERTOOLS_METRICS_DISABLED", None)


if __name__ == "__main__":
    sys.exit(main())
