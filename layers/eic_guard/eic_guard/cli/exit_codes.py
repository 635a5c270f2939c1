"""What the CLI's exit code means (docs/architecture.md §5): each subcommand's table, read by its `--help` and by
the README (generated: cli/reference.py), and the scan's policy for CI (`--fail-on`, `--allow-empty`)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..outputs.report import Report

OK = 0
FINDINGS = 1  # what --fail-on names was found (scan), an alert was raised (refresh), something failed (cleanup, verify)
USAGE = 2
NOTHING_MATCHED = 3
OUTPUT_FAILED = 4
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C

FAIL_ON = ("noncompliant", "warning", "error", "none")  # from the strictest that CI usually wants to the loosest

SCAN = (
    (OK, "nothing that --fail-on names was found"),
    (
        FINDINGS,
        "--fail-on noncompliant (default): an instance is non-compliant or errored, or a target (account, region) "
        "could not be scanned; warning: that, or a warning (e.g. SSH open to 0.0.0.0/0); error: only errors; "
        "none: never",
    ),
    (USAGE, "usage, configuration or input error, found before any AWS call (one line on stderr, nothing changed)"),
    (NOTHING_MATCHED, "no opted-in instance anywhere (a mis-typed tag or region?); --allow-empty makes it 0"),
    (
        OUTPUT_FAILED,
        "the run finished but --output or --html could not be written: the report is in the fallback file named "
        "on stderr (fixes made are in it)",
    ),
    (INTERRUPTED, "interrupted (Ctrl-C, SIGTERM): stopped at an instance boundary, the partial report says so"),
)
REFRESH = (
    (OK, "refreshed, or the file was stale (older than the state)"),
    (FINDINGS, "an alert was raised (a target failed, a region vanished from the file)"),
    (USAGE, "usage, configuration or input error (one line on stderr, nothing changed)"),
    (INTERRUPTED, "interrupted (Ctrl-C, SIGTERM)"),
)
CLEANUP = (
    (OK, "everything was done (or planned, with --dry-run)"),
    (FINDINGS, "something failed or was kept (an interface whose only group is eic-guard-ssh)"),
    (USAGE, "usage or configuration error, or the confirmation was declined (nothing changed)"),
    (INTERRUPTED, "interrupted (Ctrl-C, SIGTERM)"),
)
VERIFY = (
    (OK, "all good: every item of the checklist passed (skipped items aside)"),
    (
        FINDINGS,
        "something is failing: the stack, a parameter, a subscription, the schedule, a recent run, a dead-letter "
        "queue, Security Hub, or a permission the verify job found missing (each failing item says what to do)",
    ),
    (USAGE, "usage or configuration error: no stack of that name in the region, an unreadable samconfig.toml"),
    (INTERRUPTED, "interrupted (Ctrl-C, SIGTERM)"),
)


def help_text(table: tuple[tuple[int, str], ...]) -> str:
    """The exit codes as `--help` lists them, each wrapped under its number."""
    lines = ["exit codes:"]
    for code, meaning in table:
        lines += textwrap.wrap(meaning, 116, initial_indent=f"  {code:<4}", subsequent_indent=" " * 6)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ScanPolicy:
    """When a scan fails the build: `fail_on` (one of FAIL_ON) and whether an empty scan is fine."""

    fail_on: str = "noncompliant"
    allow_empty: bool = False

    def findings(self, report: Report) -> bool:
        """Whether the report holds what `fail_on` names."""
        summary = report.summary
        errors = summary.errors > 0
        if self.fail_on == "none":
            return False
        if self.fail_on == "error":
            return errors
        noncompliant = errors or summary.noncompliant > 0
        return noncompliant or (self.fail_on == "warning" and summary.warnings > 0)

    def exit_code(self, report: Report) -> int:
        """FINDINGS before NOTHING_MATCHED: a target that could not be scanned also leaves the scan empty."""
        if self.findings(report):
            return FINDINGS
        if not self.allow_empty and report.summary.instances == 0:
            return NOTHING_MATCHED
        return OK
