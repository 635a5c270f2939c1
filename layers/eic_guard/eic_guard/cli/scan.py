"""`eic-guard scan`: check opted-in instances, report-only unless --remediate."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import exit_codes
from .arguments import (
    DEFAULT_STATE_FILE,
    EPILOG,
    ORGANIZATION,
    add_ip_ranges_argument,
    add_target_arguments,
    resolve_fan_out,
    state_file,
)
from .configuration import configure, connect
from .fan_out import run_fan_out
from .invocation import Invocation
from .output import require_writable, write_report

if TYPE_CHECKING:
    from ..outputs.report import Report

NAME = "scan"


def add_parser(commands: argparse._SubParsersAction) -> None:
    scan = commands.add_parser(
        NAME,
        help="check opted-in instances (report-only unless --remediate)",
        description="Check opted-in instances. Report-only unless --remediate: EIC_GUARD_MODE is validated but "
        "never makes the CLI change anything.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_arguments(scan, "scan")
    add_ip_ranges_argument(scan)
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


def run(args: argparse.Namespace, invocation: Invocation) -> int:
    from ..outputs.html import render_html
    from ..ranges import ip_ranges
    from ..ranges.refresh import require_eic

    fan_out = resolve_fan_out(args)
    session, settings = configure(args, "remediate" if args.remediate else "report", fan_out)
    if args.security_hub:
        settings = settings.model_copy(update={"security_hub_findings": "enabled"})
    if args.allowed_images:
        settings = settings.model_copy(update={"allowed_images": args.allowed_images})
    if not args.remediate and (os.environ.get("EIC_GUARD_MODE") or "").strip() == "remediate":
        print("eic-guard: note: EIC_GUARD_MODE=remediate is ignored here: pass --remediate to fix", file=sys.stderr)
    require_writable(args.output)
    require_writable(args.html)
    ranges = ip_ranges.load(args.ip_ranges)
    require_eic(ranges)  # with no EIC prefix at all every instance would be reported (or "fixed") wrongly
    clients = connect(session, settings)
    report = run_fan_out("scan", settings, clients, fan_out, ranges=ranges).report
    write_report(report, args.format, args.output)
    if args.html:
        Path(args.html).write_text(render_html(report), encoding="utf-8")
    alert_on_stderr(report, state_file(args), settings.accounts == ORGANIZATION)
    return exit_codes.NONCOMPLIANT if report.has_noncompliant else exit_codes.OK


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
