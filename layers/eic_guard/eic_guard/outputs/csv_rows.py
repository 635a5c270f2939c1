"""The report as CSV: one row per (instance, check), for spreadsheets and `grep` (issue 11: `--format csv`)."""

from __future__ import annotations

import csv
from typing import TextIO

from .report import Report

COLUMNS = (
    "account_id",
    "region",
    "instance_id",
    "vpc_id",
    "verdict",
    "check",
    "status",
    "reason",
    "actions",
)


def write_csv(report: Report, stream: TextIO) -> None:
    """One row per (instance, check); an excluded instance is one row with its reason; actions joined by "; "."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(COLUMNS)
    for entry in sorted(report.instances, key=lambda e: (e.account_id, e.region, e.instance_id)):
        actions = "; ".join(f"{a.status}: {a.action} {a.resource}" for a in entry.actions)
        base = (entry.account_id, entry.region, entry.instance_id, entry.vpc_id or "", entry.verdict)
        if not entry.checks:
            writer.writerow((*base, "", "", entry.excluded_reason or "", actions))
            continue
        for check_id, check in entry.checks.items():
            writer.writerow((*base, check_id, check.status, check.reason or "", actions))
