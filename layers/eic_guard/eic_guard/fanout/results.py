"""A target worker's result object (fanout.worker.to_document) as Aggregate reads it: defensively.

One result object must never cost the run its report. An object can be truncated or empty (written by hand or by
another tool), `{}` or `[1, 2]`, or the document of another layer version (a deploy between a run's workers and
its Aggregate). Each object is parsed and validated against the shape the aggregation relies on, in one
pydantic-core call (no more memory than json.loads: the result is the same plain dicts); one that fails is an
`UnreadableResult` of the target its key names, which the report lists as that target's error
("result object unreadable: <reason>"), while every other target is reported as usual (docs/architecture.md §9).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal, NotRequired

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict  # pydantic needs typing_extensions' TypedDict before Python 3.12

from ..models import CheckStatus, Verdict
from ..outputs.report import RESULT_LOST
from .targets import Target

UNREADABLE = "result object unreadable"
# results/<account>/<region>/<phase>-r<round>.json under the run's prefix (fanout.steps.RunObjects)
_KEY = re.compile(r"results/(?P<account>[^/]+)/(?P<region>[^/]+)/(?P<phase>apply|revoke)-r(?P<round>\d+)\.json$")


def result_name(target: Target, phase: str, round_: int) -> str:
    """The name of a target's result object under its run's prefix (the one place that spells it)."""
    return f"results/{target.key}/{phase}-r{round_}.json"


# The shape Aggregate reads. Unknown keys of an entry are dropped (a newer worker's additions cannot break the
# report, whose model forbids unknown fields); every key the aggregation or the report reads is typed.
_IGNORE_EXTRA = ConfigDict(extra="ignore")


@with_config(_IGNORE_EXTRA)
class CheckDocument(TypedDict):
    status: CheckStatus
    reason: str | None
    guidance: NotRequired[str | None]


@with_config(_IGNORE_EXTRA)
class ActionDocument(TypedDict):
    action: str
    resource: str
    status: Literal["done", "planned", "failed"]
    detail: str


@with_config(_IGNORE_EXTRA)
class InstanceDocument(TypedDict):
    instance_id: str
    account_id: str
    region: str
    vpc_id: str | None
    verdict: Verdict
    checks: dict[str, CheckDocument]
    actions: list[ActionDocument]
    excluded_reason: NotRequired[str | None]
    name: NotRequired[str | None]
    tags: NotRequired[dict[str, str]]
    warnings: NotRequired[list[str]]
    connect_path: NotRequired[Literal["public", "endpoint"] | None]  # docs/architecture.md §13
    connect_command: NotRequired[str | None]
    error: NotRequired[str | None]


@with_config(ConfigDict(extra="allow"))
class RefreshDocument(TypedDict):
    region: str
    groups: int
    added: list[str]
    revoked: list[str]
    alerts: list[str]
    error: str | None
    unknown_owned: NotRequired[list[str]]


@with_config(ConfigDict(extra="allow", defer_build=True))  # the validator is built by the first read, not at import
class ResultDocument(TypedDict):
    account_id: str
    region: str
    phase: Literal["apply", "revoke"]
    round: int
    status: Literal["ok", "error", "incomplete"]
    error: str | None
    instances: list[InstanceDocument]
    actions: list[ActionDocument]
    refresh: RefreshDocument | None
    account_alias: NotRequired[str | None]
    notes: NotRequired[list[str]]


_DOCUMENT = TypeAdapter(ResultDocument)


@dataclass(frozen=True)
class UnreadableResult:
    """A result object that could not be read or is not a result document: its target's error in the report."""

    account_id: str
    region: str
    phase: str
    round: int
    reason: str
    listed: tuple[dict[str, str], ...] = ()  # an unreadable object lists no change

    @property
    def error(self) -> str:
        where = "revoke phase: " if self.phase == "revoke" else ""
        return f"{where}{UNREADABLE}: {self.reason}"


def identity(key: str) -> tuple[str, str, str, int] | None:
    """(account, region, phase, round) a result object's key names; None for a key that is not a result's."""
    match = _KEY.search(key)
    if match is None:
        return None
    return match["account"], match["region"], match["phase"], int(match["round"])


def read_result(key: str, body: bytes) -> dict[str, Any] | UnreadableResult | None:
    """The result document in `body`, or what is wrong with it; None when `key` names no result (logged by the
    caller as a stray object)."""
    named = identity(key)
    if named is None:
        return None
    try:
        document = _DOCUMENT.validate_json(body)
    except ValidationError as exc:
        return unreadable(key, _first_problem(exc, body))
    found = (document["account_id"], document["region"], document["phase"], document["round"])
    if found != named:
        return unreadable(key, f"it holds the result of {'/'.join(map(str, found))}, not of its key")
    return document


def unreadable(key: str, reason: str) -> UnreadableResult | None:
    named = identity(key)
    return None if named is None else UnreadableResult(*named, reason=reason)


def _first_problem(exc: ValidationError, body: bytes) -> str:
    """One line: what is wrong first, and where (the reason must stay short: it goes into the alert)."""
    if not body.strip():
        return "empty object"
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    message = error["msg"]
    if error["type"].startswith("json_"):
        return f"not JSON ({message.removeprefix('Invalid JSON: ')}, {len(body)} bytes)"
    return f"{where}: {message}" if where else message


# ---- a result object that could not be written -------------------------------------------------------------------
LOST_CHANGES_LISTED = 20  # the changes a lost result lists (the count covers them all)
LOST_DETAIL_CHARS = 200
LOST_RECORD_BYTES = 16 * 1024  # far below a Step Functions output (256 KiB) and a DynamoDB item (400 KB)
LOST_PREFIX = "lost#"  # the state table's items that keep a lost result (the worker's role may write only these)
LOST_DAYS = 30  # they expire with the run's objects


def lost_record(document: dict[str, Any], reason: str) -> dict[str, Any]:
    """What survives of a target's result when its object cannot be written: its status and error, how many
    instances it scanned, how many changes it made (done or failed) and the first LOST_CHANGES_LISTED of them, each
    field cut, the whole under LOST_RECORD_BYTES."""
    changes = [a for a in document["actions"] if a["status"] != "planned"]
    changes += [a for e in document["instances"] for a in e["actions"] if a["status"] != "planned"]
    listed = [
        {k: str(a[k])[:LOST_DETAIL_CHARS] for k in ("action", "resource", "status", "detail")}
        for a in changes[:LOST_CHANGES_LISTED]
    ]
    record = {
        "account_id": document["account_id"],
        "region": document["region"],
        "phase": document["phase"],
        "round": document["round"],
        "reason": reason[:500],
        "status": document["status"],
        "error": (document["error"] or "")[:500] or None,
        "instances": len(document["instances"]),
        "changes": len(changes),
        "listed": listed,
    }
    while len(json.dumps(record)) > LOST_RECORD_BYTES and record["listed"]:
        record["listed"] = record["listed"][: len(record["listed"]) // 2]
    return record


@dataclass(frozen=True)
class LostResult:
    """A target's phase whose result object could not be written after its changes were made: the bounded record
    the worker returned (and kept in the state table), reported as "scanned, result lost, N changes made"."""

    account_id: str
    region: str
    phase: str
    round: int
    reason: str
    changes: int
    instances: int
    listed: tuple[dict[str, str], ...]

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> LostResult:
        return cls(
            str(record["account_id"]),
            str(record["region"]),
            str(record["phase"]),
            int(record["round"]),
            str(record["reason"]),
            int(record["changes"]),
            int(record["instances"]),
            tuple({k: str(a[k]) for k in ("action", "resource", "status", "detail")} for a in record["listed"]),
        )

    @property
    def error(self) -> str:
        where = "revoke phase: " if self.phase == "revoke" else ""
        listed = f" (the first {len(self.listed)} listed)" if self.changes > len(self.listed) else ""
        return (
            f"{where}{RESULT_LOST}, {self.changes} change{'' if self.changes == 1 else 's'} made{listed}, "
            f"{self.instances} instance{'' if self.instances == 1 else 's'} checked; the result object could not be "
            f"written: {self.reason}"
        )


def lost_key(run_id: str, target: Target, phase: str, round_: int) -> str:
    return f"{LOST_PREFIX}{run_id}#{result_name(target, phase, round_)}"
