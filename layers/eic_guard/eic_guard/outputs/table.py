"""Render a report as a readable terminal table (rich): one row per instance, then what is wrong, what to do about
it and what was done.

Width: no line is longer than the width `render` is given, by default `output_width(stream)`: $COLUMNS when it is
set (the user's explicit choice, read first as shutil.get_terminal_size does), else the terminal's width when the
stream is a terminal, else DEFAULT_WIDTH (a file or a pipe has no width of its own; 160 is the width this table always
had). The instance table takes the first of LAYOUTS that fits the width without cutting an id, a status or a name of
up to NAME_WIDTH characters: full check ids, a column for the name over the owner tags, and one for the account (runs
over several accounts) and the region (instances in several regions); then short check ids (`ipv4`, `ssh`...); then
two-line statuses (`would` / `fix`); then one stacked instance cell (id, verdict, name, owner tags, region, account),
71 columns with the six checks, so 80 fits. The details table names the checks in full from FULL_IDS_FROM columns
and wraps its reason column.

The connect path (docs/architecture.md §13) is a `path` column (a line of the stacked cell), the summary counts
instances per path, and every compliant or fixed instance has a `connect` row in the details table with the exact
command a person runs (outputs/connect.py).

Warnings are amber (AMBER) everywhere: a passing check with a warning reads `pass!`, the details table has a
`warning` row with its text, the summary line counts the instances with warnings, and target notes are `note:` lines.
Text from AWS (names, tags, reasons) is never read as rich markup.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import IO, Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions
from rich.measure import Measurement
from rich.table import Column, Table
from rich.text import Text

from ..checks import CHECK_IDS, check_ids_for
from .report import SHORT_IDS, STATUS_LABEL, WARNING_CHECKS, InstanceEntry, Report, split_warning

AMBER = "orange1"  # xterm 214 (#ffaf00), the 256-colour closest to amber; 16-colour terminals get yellow
DEFAULT_WIDTH = 160
FULL_IDS_FROM = 120  # narrower than this, the details table names checks by their short ids
STATUS_STYLE = {
    "pass": "green",
    "fail": "red bold",
    "fixed": "cyan",
    "would-fix": "yellow",
    "error": "magenta bold",
    "not-applicable": "dim",
}
VERDICT_STYLE = {"compliant": "green", "fixed": "cyan", "noncompliant": "red", "excluded": "dim", "error": "magenta"}
NAME_WIDTH = 24  # the most a name, owner or account column takes before it wraps
MEASURE_WIDTH = 10_000  # wide enough that rich reports a table's true minimum width


class MeasuredByWidestCells(Table):
    """A rich Table that measures each column on the two cells that decide its width, not on every cell.

    Rich measures a Text cell as (its longest word, its longest line) and a column as the largest of each over its
    cells, padded and clamped alike for every cell (Text.__rich_measure__, Table._measure_column): so the cell with
    the longest word and the one with the longest line give the column the measurement all of them give. Rich measures
    every column of a table at each print and each Measurement.get, which for 5,000 instances was about 10 s of CPU
    (most of `eic-guard scan`'s). The rendering is rich's own, unchanged; tests/unit/test_table.py holds the output to
    the one measured on every cell."""

    def _measure_column(self, console: Console, options: ConsoleOptions, column: Column) -> Measurement:
        cells = column._cells
        if column.width is not None or len(cells) <= 2:
            return super()._measure_column(console, options, column)
        widths = [_text_measure(console, cell) for cell in cells]
        if any(w is None for w in widths):  # a renderable that is not text: measure them all, as rich does
            return super()._measure_column(console, options, column)
        longest_word = max(range(len(cells)), key=lambda i: widths[i][0])
        longest_line = max(range(len(cells)), key=lambda i: widths[i][1])
        deciding = [cells[i] for i in sorted({longest_word, longest_line})]
        return super()._measure_column(console, options, replace(column, _cells=deciding))


def _text_measure(console: Console, cell: Any) -> tuple[int, int] | None:
    """(longest word, longest line) of a text cell, in cells, as Text.__rich_measure__ counts them; None otherwise."""
    if isinstance(cell, str):
        cell = console.render_str(cell)
    if not isinstance(cell, Text):
        return None
    plain = cell.plain
    lines = plain.splitlines()
    longest_line = max(map(cell_len, lines)) if lines else 0
    words = plain.split()
    return (max(map(cell_len, words)) if words else longest_line), longest_line


@dataclass(frozen=True)
class Layout:
    short_ids: bool  # ipv4, ssh... as column headers instead of the check ids
    two_line_status: bool  # would-fix as "would" over "fix"
    stacked: bool  # one instance cell (id, verdict, name, owner tags, region, account) instead of a column each


LAYOUTS = (
    Layout(short_ids=False, two_line_status=False, stacked=False),
    Layout(short_ids=True, two_line_status=False, stacked=False),
    Layout(short_ids=True, two_line_status=True, stacked=False),
    Layout(short_ids=True, two_line_status=True, stacked=True),
)


def output_width(stream: IO[str]) -> int:
    """$COLUMNS, else the terminal's width when `stream` is one, else DEFAULT_WIDTH."""
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    with contextlib.suppress(AttributeError, OSError, ValueError):
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns
    return DEFAULT_WIDTH


def render(
    report: Report, stream: IO[str] | None = None, *, width: int | None = None, color: bool | None = None
) -> None:
    stream = stream if stream is not None else sys.stdout
    width = width or output_width(stream)
    console = Console(file=stream, width=width, force_terminal=color, no_color=color is False, highlight=False)
    entries = sorted(report.instances, key=lambda e: (e.account_id, e.region, e.instance_id))
    console.print(_fitting(console, width, lambda layout: _instance_table(report, entries, layout)))
    console.print(_details(entries, short_ids=width < FULL_IDS_FROM))
    for line in _footer(report):
        console.print(line)


def _fitting(console: Console, width: int, build: Callable[[Layout], Table]) -> Table:
    """The table in the first of LAYOUTS whose narrowest rendering fits `width` (else the last: rich shortens it).

    Rich measures a column at least as wide as its longest word (at most its max_width): a layout fits when no id,
    status or name up to NAME_WIDTH needs cutting or folding."""
    wide = console.options.update_width(MEASURE_WIDTH)
    for layout in LAYOUTS:
        table = build(layout)
        if Measurement.get(console, wide, table).minimum <= width:
            break
    return table


# ---- the instance table -------------------------------------------------------------------------------------------
def warned_checks(entry: InstanceEntry) -> set[str]:
    """The checks one of the instance's warnings is about (by its code)."""
    return {WARNING_CHECKS.get(split_warning(w)[0], "") for w in entry.warnings} - {""}


def _status(status: str, warned: bool, two_lines: bool) -> Text:
    label = STATUS_LABEL[status]
    if two_lines and status == "would-fix":
        label = "would\nfix"
    if warned and status == "pass":
        return Text(f"{label}!", style=f"{AMBER} bold")
    return Text.assemble((label, STATUS_STYLE[status]), ("!" if warned else "", f"{AMBER} bold"))


def _verdict(entry: InstanceEntry) -> Text:
    """The verdict, with an amber `!` when a warning is about no check column (an unknown code)."""
    unplaced = any(split_warning(w)[0] not in WARNING_CHECKS for w in entry.warnings)
    return Text.assemble((entry.verdict, VERDICT_STYLE[entry.verdict]), ("!" if unplaced else "", f"{AMBER} bold"))


def owner_text(tags: dict[str, str], separator: str = " ") -> str:
    return separator.join(f"{key}={value}" for key, value in tags.items())


def _instance_table(report: Report, entries: list[InstanceEntry], layout: Layout) -> Table:
    several_accounts = len(report.accounts) > 1
    several_regions = len({e.region for e in entries}) > 1
    named, owned = any(e.name for e in entries), any(e.tags for e in entries)
    # docs/architecture.md §13: the connect path of each instance, once a report carries it
    pathed = any(e.connect_path for e in entries)
    table = MeasuredByWidestCells(title=f"eic-guard {report.mode}: {report.summary.instances} opted-in instances")
    if layout.stacked:
        table.add_column("instance", overflow="fold")
    else:
        table.add_column("instance", no_wrap=True)
        if named or owned:
            table.add_column("name / owner" if owned else "name", overflow="fold", max_width=NAME_WIDTH)
        if several_accounts:
            table.add_column("account", overflow="fold", max_width=NAME_WIDTH)
        if several_regions:
            table.add_column("region", no_wrap=True)
        table.add_column("verdict", no_wrap=True)
        if pathed:
            table.add_column("path", no_wrap=True)
    # The checks some instance is reported with: the endpoint path's columns only when an instance takes it.
    shown = [c for c in CHECK_IDS if any(c in e.checks for e in entries)] or list(check_ids_for("public"))
    for check_id in shown:
        table.add_column(SHORT_IDS.get(check_id, check_id) if layout.short_ids else check_id, no_wrap=True)
    for entry in entries:
        warned = warned_checks(entry)
        checks = [
            _status(entry.checks[c].status, c in warned, layout.two_line_status) if c in entry.checks else Text("")
            for c in shown
        ]
        account = report.account_label(entry.account_id)
        if layout.stacked:
            lines = [Text(entry.instance_id), _verdict(entry)]
            lines += [Text(f"path {entry.connect_path}", style="dim")] if entry.connect_path else []
            lines += [Text(entry.name)] if entry.name else []
            lines += [Text(owner_text(entry.tags), style="dim")] if entry.tags else []
            lines += [Text(entry.region, style="dim")] if several_regions else []
            lines += [Text(account, style="dim")] if several_accounts else []
            table.add_row(Text("\n").join(lines), *checks)
            continue
        identity = [Text(entry.instance_id)]
        if named or owned:
            who = Text(entry.name or "")
            if entry.tags:
                who.append(("\n" if entry.name else "") + owner_text(entry.tags), style="dim")
            identity.append(who)
        identity += [Text(account)] if several_accounts else []
        identity += [Text(entry.region)] if several_regions else []
        path = [Text(entry.connect_path or "", style="dim")] if pathed else []
        table.add_row(*identity, _verdict(entry), *path, *checks)
    return table


# ---- the details table --------------------------------------------------------------------------------------------
def _details(entries: list[InstanceEntry], *, short_ids: bool) -> Table:
    table = MeasuredByWidestCells(title="what is wrong, what to do, what was done", show_lines=True, expand=True)
    # as wide as the longest id: a name under it folds rather than take the reason's room
    table.add_column("instance", overflow="fold", max_width=max((len(e.instance_id) for e in entries), default=None))
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("reason / what to do / action", overflow="fold", ratio=1)

    def check_name(check_id: str) -> str:
        return SHORT_IDS.get(check_id, check_id) if short_ids else check_id

    for entry in entries:
        who = Text(entry.instance_id)
        if entry.name:
            who.append(f"\n{entry.name}", style="dim")
        if entry.excluded_reason:
            table.add_row(who, "-", Text("excluded", style="dim"), Text(entry.excluded_reason))
            continue
        for check_id, check in entry.checks.items():
            if check.status in ("pass", "not-applicable"):
                continue
            why = Text(check.reason or "")
            if check.guidance:
                why.append("\nwhat to do: ", style="bold")
                why.append(check.guidance)
            table.add_row(who, check_name(check_id), _status(check.status, False, False), why)
        for warning in entry.warnings:
            code, _text = split_warning(warning)
            check_id = WARNING_CHECKS.get(code)
            table.add_row(
                who,
                check_name(check_id) if check_id else "-",
                Text("warning", style=f"{AMBER} bold"),
                Text(warning, style=AMBER),
            )
        for action in entry.actions:
            table.add_row(
                who,
                "",
                Text(action.status, style="dim"),
                Text(f"{action.action} {action.resource}: {action.detail}"),
            )
        if entry.connect_command:
            table.add_row(who, "-", Text("connect", style="green"), Text(entry.connect_command))
    return table


# ---- the lines under the tables -----------------------------------------------------------------------------------
def _footer(report: Report) -> Iterator[Text]:
    s = report.summary
    yield Text.assemble(
        (report.mode, "bold"),
        f" run {report.run_id} · account {report.account_label(report.account_id)} · regions "
        f"{', '.join(report.regions)} · ip-ranges {report.ip_ranges.sync_token} ({report.ip_ranges.create_date})",
    )
    yield Text.assemble(
        f"instances {s.instances}: ",
        (f"{s.compliant} compliant", "green"),
        ", ",
        (f"{s.fixed} fixed", "cyan"),
        ", ",
        (f"{s.noncompliant} noncompliant", "red"),
        ", ",
        (f"{s.excluded} excluded", "dim"),
        ", ",
        (f"{s.errors} errors", "magenta"),
        ", ",
        (f"{s.warnings} with warnings", AMBER if s.warnings else "dim"),
    )
    if s.connect_paths:
        yield Text("connect paths: " + ", ".join(f"{n} {path}" for path, n in s.connect_paths.items()))
    several_accounts = len(report.accounts) > 1
    for target in report.targets:
        for note in target.notes:
            yield Text.assemble(
                ("note: ", f"{AMBER} bold"), f"{report.account_label(target.account_id)} {target.region}: {note}"
            )
    for error in report.target_errors:
        where = f"{report.account_label(error.account_id)} " if several_accounts else ""
        yield Text.assemble((f"{where}region {error.region} could not be scanned:", "magenta bold"), f" {error.error}")


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
