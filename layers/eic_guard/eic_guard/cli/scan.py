"""`eic-guard scan`: check opted-in instances, report-only unless --remediate."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import exit_codes
from .arguments import (
    EPILOG,
    ORGANIZATION,
    add_ip_ranges_argument,
    add_state_file_argument,
    add_target_arguments,
    resolve_fan_out,
    state_file,
    tag_argument,
)
from .configuration import configure, connect
from .exit_codes import FAIL_ON, ScanPolicy
from .fan_out import run_fan_out
from .invocation import Invocation
from .output import FORMATS, check_destination, check_distinct, emit, fallback_path, save
from .reference import HelpWithSettings
from .verbosity import add_verbosity_arguments

if TYPE_CHECKING:
    from ..outputs.report import Report

NAME = "scan"


def add_parser(commands: argparse._SubParsersAction) -> None:
    scan = commands.add_parser(
        NAME,
        help="check opted-in instances (report-only unless --remediate)",
        description="Check opted-in instances. Report-only unless --remediate: EIC_GUARD_MODE is validated but "
        "never makes the CLI change anything.",
        epilog=EPILOG + exit_codes.help_text(exit_codes.SCAN),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )
    scan.add_argument("-h", "--help", action=HelpWithSettings, help="show this help, the settings included, and exit")
    add_target_arguments(scan, "scan")
    add_ip_ranges_argument(scan)
    scan.add_argument(
        "--remediate",
        action="store_true",
        help="fix the drift that can be fixed safely (the only way to make the CLI change instances)",
    )
    scan.add_argument(
        "--tag",
        metavar="KEY=VALUE",
        type=tag_argument,
        help="the opt-in tag (default: $EIC_GUARD_TAG_KEY=$EIC_GUARD_TAG_VALUE, else eic-guard:managed=true)",
    )
    scan.add_argument(
        "--format",
        choices=tuple(FORMATS),
        default="table",
        help="; ".join(f"{name}: {fmt.help}" for name, fmt in FORMATS.items()),
    )
    scan.add_argument(
        "--output",
        metavar="FILE",
        help="write the report to FILE instead of stdout (replaced whole, never half-written)",
    )
    scan.add_argument("--html", metavar="FILE", help="also write the self-contained HTML report to FILE")
    scan.add_argument(
        "--fail-on",
        choices=FAIL_ON,
        default="noncompliant",
        help="what makes the exit code 1 (see exit codes below); warning: also SSH open to 0.0.0.0/0 and the like",
    )
    scan.add_argument(
        "--allow-empty",
        action="store_true",
        help="exit 0, not 3, when no instance carries the opt-in tag in any account and region scanned",
    )
    add_state_file_argument(
        scan,
        "the scan keeps what it last alerted in alerts-state.json beside it and prints on stderr only what is new "
        "(weekly: what persists)",
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
    scan.add_argument(
        "--connect-path",
        choices=("auto", "public", "endpoint"),
        help="how EC2 Instance Connect reaches instances: public (public IPv4), endpoint (an EC2 Instance Connect "
        "Endpoint in the VPC) or auto (public with a public IPv4, else the endpoint path when the VPC has an endpoint "
        "or --create-endpoints); default: $EIC_GUARD_CONNECT_PATH, else auto",
    )
    scan.add_argument(
        "--create-endpoints",
        action="store_true",
        help="with --remediate: create one EC2 Instance Connect Endpoint (tagged ManagedBy=eic-guard) in each VPC "
        "whose endpoint-path instances have none",
    )
    add_verbosity_arguments(scan)


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """The settings the flags set, validated with the EIC_GUARD_* variables they replace."""
    overrides: dict[str, object] = {}
    if args.tag:
        overrides["tag_key"], overrides["tag_value"] = args.tag
    if args.security_hub:
        overrides["security_hub_findings"] = "enabled"
    if args.allowed_images:
        overrides["allowed_images"] = args.allowed_images
    if args.connect_path:
        overrides["connect_path"] = args.connect_path
    if args.create_endpoints:
        overrides["create_endpoints"] = True
    return overrides


def run(args: argparse.Namespace, invocation: Invocation) -> int:
    from ..ranges import ip_ranges
    from ..ranges.refresh import require_eic

    say = invocation.verbosity.say
    fan_out = resolve_fan_out(args)
    check_destination(args.output, "--output")  # before any AWS call: nothing is scanned, nothing is changed
    check_destination(args.html, "--html")
    check_distinct(args.output, args.html)
    alerts_beside = state_file(args)
    session, settings = configure(args, "remediate" if args.remediate else "report", fan_out, _overrides(args))
    if not args.remediate and (os.environ.get("EIC_GUARD_MODE") or "").strip() == "remediate":
        say("eic-guard: note: EIC_GUARD_MODE=remediate is ignored here: pass --remediate to fix")
    ranges = ip_ranges.load(args.ip_ranges)
    require_eic(ranges)  # with no EIC prefix at all every instance would be reported (or "fixed") wrongly
    invocation.interrupts.stop_if_requested()
    clients = connect(session, settings, invocation)
    report = run_fan_out("scan", settings, clients, fan_out, invocation, ranges=ranges).report
    problems = _write(report, args)
    for problem in problems:
        print(f"eic-guard: error: {problem}", file=sys.stderr)
    if report.interrupted:
        return _interrupted(report, invocation, args.output is not None)
    if not invocation.verbosity.quiet:
        alert_on_stderr(report, alerts_beside, settings.accounts == ORGANIZATION)
    if problems:
        return exit_codes.OUTPUT_FAILED
    code = ScanPolicy(args.fail_on, args.allow_empty).exit_code(report)
    if code == exit_codes.NOTHING_MATCHED:
        print(f"eic-guard: error: {_nothing_matched(report, settings.tag_key, settings.tag_value)}", file=sys.stderr)
    return code


def _write(report: Report, args: argparse.Namespace) -> list[str]:
    """The report where it was asked for; one line per file that could not be written (see output.save)."""
    problems = [emit(report, args.format, args.output, warnings_fail=args.fail_on == "warning")]
    if args.html:
        problems += _write_pages(report, Path(args.html))
    return [problem for problem in problems if problem]


def _write_pages(report: Report, path: Path) -> list[str | None]:
    """The HTML page at `path`; beyond outputs.html.PAGE_INSTANCES instances, each account's page beside it, in
    `<stem>.accounts/` (the page links them)."""
    from ..outputs.html import render_pages

    pages = render_pages(report, stem=path.stem)
    problems = [save(pages.pop(f"{path.stem}.html"), str(path), fallback_path(report.run_id, ".html"))]
    for name, page in pages.items():
        target = path.parent / name
        try:
            target.parent.mkdir(exist_ok=True)
        except OSError as exc:
            problems.append(f"cannot write {target} ({exc.strerror or exc})")
            continue
        problems.append(save(page, str(target), fallback_path(f"{report.run_id}-{target.stem}", ".html")))
    return problems


def summary_line(report: Report) -> str:
    s = report.summary
    targets = sum(1 for t in report.targets if t.status == "ok")
    fixes = sum(1 for e in report.instances for a in e.actions if a.status == "done")
    return (
        f"{targets} of {len(report.targets)} targets complete; instances {s.instances}: {s.compliant} compliant, "
        f"{s.fixed} fixed, {s.noncompliant} noncompliant, {s.excluded} excluded, {s.errors} errors; {fixes} "
        "writes made"
    )


def _interrupted(report: Report, invocation: Invocation, report_in_file: bool) -> int:
    """What an interrupted scan did, on stderr (and on stdout when the report went to a file); no alert: the report
    covers part of the fleet, so what it lacks would look resolved."""
    line = (
        f"eic-guard: {invocation.interrupts.signal_name}: interrupted: {summary_line(report)}; the report is marked "
        '"interrupted": true'
    )
    print(line, file=sys.stderr)
    if report_in_file:
        print(line)
    return exit_codes.INTERRUPTED


def _nothing_matched(report: Report, tag_key: str, tag_value: str) -> str:
    where = ", ".join(f"{report.account_label(t.account_id)} {t.region}" for t in report.targets)
    return (
        f"no instance carries the opt-in tag {tag_key}={tag_value} in {where}: check the tag (keys and values are "
        "case-sensitive; the table's notes name near misses) and the regions, or pass --allow-empty"
    )


def alert_on_stderr(report: Report, path: str, organization: bool) -> None:
    """The deployed alert, on stderr (standard output is the report): only what is new since the last scan of the
    same accounts and regions, and once a week what persists, so a nightly cron mails only what changed. What was
    alerted is kept in alerts-state.json beside the state file; a problem with that file never fails the scan."""
    from ..outputs.alerts import ALERT_STATE_FILE, FileAlertState, quiet_alert, scan_scope

    alert_state = Path(path).with_name(ALERT_STATE_FILE)
    alert = quiet_alert(report, FileAlertState(alert_state, scan_scope(report, organization)), now=report.finished_at)
    if alert.subject and alert.message:
        print(f"{alert.subject}\n{alert.message}", file=sys.stderr)
    alert.remember()
