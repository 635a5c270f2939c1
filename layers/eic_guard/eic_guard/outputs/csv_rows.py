"""The report as CSV: one row per (instance, check), for spreadsheets and `grep` (issue 11: `--format csv`).

Who the instance is (account alias, name, owner tags as `Owner=alice;Team=payments`) is repeated on each of its rows,
so any one row stands alone. `guidance` is what to do about that check; `warnings` are the instance's warnings about
that check (by their code: `pass` with `ssh-open-to-internet...` on eic-ssh-ingress), and those about no check in
particular on every row; `actions` are the writes made (or planned) for that check, once (ACTION_CHECKS; one about
no check in particular is on the instance's first row), so a spreadsheet's count of actions is the run's. Several
are joined by "; ". `connect_path` (public or endpoint, docs/architecture.md §13) and `connect_command` (the command a
person runs to connect, compliant and fixed instances only) are the instance's, on each of its rows.

Instance tags are written by whoever can tag an instance: a cell that a spreadsheet would read as a formula
(`=HYPERLINK(...)` as a Name) is prefixed with a quote, as OWASP's CSV injection guidance recommends.
"""

from __future__ import annotations

import csv
from typing import TextIO

from .report import ACTION_CHECKS, WARNING_CHECKS, InstanceEntry, Report, split_warning

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

COLUMNS = (
    "account_id",
    "account_alias",
    "region",
    "instance_id",
    "name",
    "tags",
    "vpc_id",
    "verdict",
    "check",
    "status",
    "reason",
    "guidance",
    "warnings",
    "actions",
    "connect_path",
    "connect_command",
)


def _warnings_about(entry: InstanceEntry, check_id: str | None) -> str:
    """The entry's warnings about `check_id`, and those about no check (None: all of them)."""
    return "; ".join(
        w for w in entry.warnings if check_id is None or WARNING_CHECKS.get(split_warning(w)[0], check_id) == check_id
    )


def _actions_for(entry: InstanceEntry, check_id: str | None, first_row: bool) -> str:
    """The entry's actions for `check_id` (None: all of them), and on its first row those about no known check."""
    return "; ".join(
        f"{a.status}: {a.action} {a.resource}"
        for a in entry.actions
        if check_id is None
        or ACTION_CHECKS.get(a.action) == check_id
        or (first_row and ACTION_CHECKS.get(a.action) not in entry.checks)
    )


def inert(cell: str) -> str:
    """The cell as text a spreadsheet will not evaluate."""
    return f"'{cell}" if cell.startswith(FORMULA_STARTS) else cell


class _InertWriter:
    def __init__(self, stream: TextIO):
        self._writer = csv.writer(stream, lineterminator="\n")

    def writerow(self, row) -> None:
        self._writer.writerow([inert(cell) for cell in row])


def write_csv(report: Report, stream: TextIO) -> None:
    """One row per (instance, check); an excluded instance is one row with its reason."""
    writer = _InertWriter(stream)
    writer.writerow(COLUMNS)
    for entry in sorted(report.instances, key=lambda e: (e.account_id, e.region, e.instance_id)):
        who = (
            entry.account_id,
            report.account_aliases.get(entry.account_id, ""),
            entry.region,
            entry.instance_id,
            entry.name or "",
            ";".join(f"{key}={value}" for key, value in entry.tags.items()),
            entry.vpc_id or "",
            entry.verdict,
        )
        connect = (entry.connect_path or "", entry.connect_command or "")
        if not entry.checks:
            actions = _actions_for(entry, None, first_row=True)
            reason = entry.excluded_reason or entry.error or ""
            writer.writerow((*who, "", "", reason, "", _warnings_about(entry, None), actions, *connect))
            continue
        for row, (check_id, check) in enumerate(entry.checks.items()):
            writer.writerow(
                (
                    *who,
                    check_id,
                    check.status,
                    check.reason or "",
                    check.guidance or "",
                    _warnings_about(entry, check_id),
                    _actions_for(entry, check_id, first_row=row == 0),
                    *connect,
                )
            )
