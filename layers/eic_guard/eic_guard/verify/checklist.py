"""The verify checklist (docs/architecture.md §16): each item a thing that must hold in a deployed stack, with what
to do and where to read about it when it does not; rendered as a table (terminal) or JSON (`--format json`)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import IO, Any

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"
SCHEMA = "eic-guard/verify/v1"
_MARKS = {PASS: "ok", FAIL: "FAIL", WARN: "warn", SKIP: "skip"}


@dataclass(frozen=True)
class Item:
    """One line of the checklist. `fix` and `url` say what to do about a failing (or warning) item."""

    check: str  # stack, parameters, ip-space-subscription, alerts-subscription, schedule, executions, ...
    status: str  # PASS, FAIL, WARN, SKIP
    subject: str  # what it is about: the stack, a queue, "account/region ec2:Action"
    detail: str
    fix: str | None = None
    url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Checklist:
    stack: str
    region: str
    items: tuple[Item, ...]

    @property
    def failed(self) -> bool:
        return any(item.status == FAIL for item in self.items)

    def counts(self) -> dict[str, int]:
        return {status: sum(1 for i in self.items if i.status == status) for status in (PASS, FAIL, WARN, SKIP)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "stack": self.stack,
            "region": self.region,
            "ok": not self.failed,
            "summary": self.counts(),
            "items": [item.to_dict() for item in self.items],
        }


def write_json(checklist: Checklist, out: IO[str]) -> None:
    json.dump(checklist.to_dict(), out, indent=2)
    out.write("\n")


def write_table(checklist: Checklist, out: IO[str], width: int = 120) -> None:
    """A plain-text table: status, check, subject, detail; under a failing or warning item, what to do and a URL."""
    items = checklist.items
    check_width = max([len(i.check) for i in items] + [5])
    subject_width = min(max([len(i.subject) for i in items] + [7]), 48)
    detail_width = max(width - check_width - subject_width - 10, 30)
    out.write(f"eic-guard verify: stack {checklist.stack} ({checklist.region})\n")
    out.write(f"{'':4}  {'check':<{check_width}}  {'subject':<{subject_width}}  detail\n")
    for item in items:
        details = textwrap.wrap(item.detail, detail_width, break_on_hyphens=False) or [""]
        subject = item.subject if len(item.subject) <= subject_width else item.subject[: subject_width - 1] + "…"
        out.write(f"{_MARKS[item.status]:<4}  {item.check:<{check_width}}  {subject:<{subject_width}}  {details[0]}\n")
        indent = " " * (4 + 2 + check_width + 2 + subject_width + 2)
        for line in details[1:]:
            out.write(f"{indent}{line}\n")
        if item.status in (FAIL, WARN):
            for line in _advice(item, width - 6):
                out.write(f"      {line}\n")
    counts = checklist.counts()
    verdict = "something is failing" if checklist.failed else "all good"
    out.write(
        f"{verdict}: {counts[PASS]} ok, {counts[FAIL]} failing, {counts[WARN]} warnings, {counts[SKIP]} skipped\n"
    )


def _advice(item: Item, width: int) -> Iterable[str]:
    if item.fix:
        yield from textwrap.wrap(f"→ {item.fix}", width, subsequent_indent="  ", break_on_hyphens=False)
    if item.url:
        yield f"  {item.url}"
