"""Render a report as a readable terminal table (rich): one row per instance, then what failed and why."""

from __future__ import annotations

from typing import IO

from rich.console import Console
from rich.table import Table

from ..checks import CHECK_IDS
from .report import Report

SYMBOLS = {
    "pass": "[green]pass[/]",
    "fail": "[red bold]FAIL[/]",
    "fixed": "[cyan]fixed[/]",
    "would-fix": "[yellow]would-fix[/]",
    "error": "[magenta bold]ERROR[/]",
    "not-applicable": "[dim]n/a[/]",
}
VERDICT_STYLE = {"compliant": "green", "fixed": "cyan", "noncompliant": "red", "excluded": "dim", "error": "magenta"}


def render(report: Report, stream: IO[str] | None = None, *, width: int = 160, color: bool | None = None) -> None:
    console = Console(file=stream, width=width, force_terminal=color, no_color=color is False, highlight=False)
    console.print(_summary_table(report))
    console.print(_details(report))
    s = report.summary
    console.print(
        f"[bold]{report.mode}[/] run {report.run_id} · account {report.account_id} · "
        f"regions {', '.join(report.regions)}"
        f" · ip-ranges {report.ip_ranges.sync_token} ({report.ip_ranges.create_date})\n"
        f"instances {s.instances}: [green]{s.compliant} compliant[/], [cyan]{s.fixed} fixed[/], "
        f"[red]{s.noncompliant} noncompliant[/], [dim]{s.excluded} excluded[/], [magenta]{s.errors} errors[/]"
    )
    for error in report.target_errors:
        console.print(f"[magenta bold]region {error.region} could not be scanned:[/] {error.error}")


def _summary_table(report: Report) -> Table:
    table = Table(title=f"eic-guard {report.mode}: {report.summary.instances} opted-in instances", show_lines=False)
    table.add_column("instance", no_wrap=True)
    table.add_column("region", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    for check_id in CHECK_IDS:
        table.add_column(check_id, no_wrap=True)
    for entry in sorted(report.instances, key=lambda e: (e.region, e.instance_id)):
        style = VERDICT_STYLE[entry.verdict]
        cells = [SYMBOLS[entry.checks[c].status] if c in entry.checks else "" for c in CHECK_IDS]
        table.add_row(entry.instance_id, entry.region, f"[{style}]{entry.verdict}[/]", *cells)
    return table


def _details(report: Report) -> Table:
    table = Table(title="what is wrong, what was done, what cannot be fixed", show_lines=True, expand=True)
    table.add_column("instance", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("reason / action")
    for entry in sorted(report.instances, key=lambda e: (e.region, e.instance_id)):
        if entry.excluded_reason:
            table.add_row(entry.instance_id, "-", "[dim]excluded[/]", entry.excluded_reason)
            continue
        for check_id, check in entry.checks.items():
            if check.status in ("pass", "not-applicable"):
                continue
            table.add_row(entry.instance_id, check_id, SYMBOLS[check.status], check.reason or "")
        for action in entry.actions:
            table.add_row(
                entry.instance_id, "", f"[dim]{action.status}[/]", f"{action.action} {action.resource}: {action.detail}"
            )
    return table
