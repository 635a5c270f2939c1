"""How the demo runs the real CLI in-process and prints what it did: report tables, exit codes, alerts."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stderr
from pathlib import Path

from ..outputs.report import Report
from ..outputs.table import account_lines, render
from .environment import REGION
from .scenarios import ACCOUNT_ALIAS
from .seeding import DemoFleet

Cli = Callable[[Sequence[str]], int]  # the `eic-guard` command, run in this process


def run_cli_scan(
    cli: Cli, ranges_path: Path, output: Path, remediate: bool, html: Path | None = None, extra: tuple[str, ...] = ()
) -> tuple[int, Report]:
    """`eic-guard scan` through the real CLI, in-process; the JSON report is kept to verify and shown as a table
    (with the CLI's line per account when it covers several), then the alert the scan printed on stderr: only what
    is new since the previous scan (the demo's own state file, beside its reports, never the user's)."""
    state_file = output.parent / "state.json"
    argv = ["scan", "--region", REGION, "--ip-ranges", str(ranges_path), "--format", "json", "--output", str(output)]
    argv += ["--state-file", str(state_file)]
    if html is not None:
        argv += ["--html", str(html)]
    argv += extra
    alert = io.StringIO()
    with redirect_stderr(alert):
        exit_code = cli([*argv, "--remediate"] if remediate else argv)
    if not output.exists():
        raise RuntimeError(f"eic-guard scan exited {exit_code} without writing a report")
    report = Report.model_validate_json(output.read_text(encoding="utf-8"))
    render(report, sys.stdout, width=DEMO_WIDTH)
    for line in account_lines(report):
        print(line)
    print(f"(eic-guard scan exit code {exit_code})")
    print_alert(alert.getvalue())
    return exit_code, report


DEMO_WIDTH = 160  # the demo's tables, whatever the terminal (a transcript reads the same everywhere)
ALERT_LINES_SHOWN = 12


def print_alert(text: str) -> None:
    """The alert as the CLI printed it on stderr (deployed, the same text goes to the SNS topic), cut short."""
    lines = text.strip().splitlines()
    if not lines:
        print("alert: none (nothing new or changed since the previous scan)")
        return
    print("alert (the CLI prints it on stderr; deployed, the same text goes to the alerts topic):")
    for line in lines[:ALERT_LINES_SHOWN]:
        print(f"  | {line}")
    if len(lines) > ALERT_LINES_SHOWN:
        print(f"  | ... ({len(lines) - ALERT_LINES_SHOWN} more lines)")


def print_legend(fleet: DemoFleet) -> None:
    print("\nThe simulated account, in the report's order (instance id, VPC, Name, drift):")
    for instance_id, scenario in sorted(fleet.instances.items()):
        print(f"  {instance_id}  {scenario.vpc:<7} {scenario.name:<22} {scenario.drift}")
    print(
        "Owner and Team tags (the OwnerTags parameter's default) name who to ask, and the account's IAM alias "
        f"({ACCOUNT_ALIAS}) names the account: every output shows them."
    )


def heading(text: str) -> None:
    print(f"\n{'=' * 100}\n{text}\n{'=' * 100}")


@contextmanager
def redirect_stdout_and_capture(buffer: io.StringIO) -> Iterator[None]:
    saved, sys.stdout = sys.stdout, buffer
    try:
        yield
    finally:
        sys.stdout = saved
