"""The run report (schema eic-guard/report/v1, docs/architecture.md §5): model, builder and renderers."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .. import __version__
from ..checks import CHECK_IDS, eic_ssh_ingress, imds_enabled, public_ipv4
from ..checks.guidance import guidance_for
from ..models import InstanceOutcome, Verdict
from .connect import connect_command

if TYPE_CHECKING:
    from ..ranges.ip_ranges import IpRanges

SCHEMA = "eic-guard/report/v1"
# How a target error begins when the target was scanned and changed but its result object could not be written
# (fanout.results.LostResult): the report lists its changes in target_actions, and no output says "not scanned".
RESULT_LOST = "scanned, result lost"


class _Model(BaseModel):
    # defer_build: the validators are built by the first report, not at import (the target worker builds none).
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, defer_build=True)


class CheckEntry(_Model):
    status: Literal["pass", "fail", "fixed", "would-fix", "error", "not-applicable"]
    reason: str | None
    guidance: str | None = None  # docs/architecture.md §5b: what to do, on every status but pass and not-applicable


class ActionEntry(_Model):
    action: str
    resource: str
    status: Literal["done", "planned", "failed"]
    detail: str


class InstanceEntry(_Model):
    instance_id: str
    account_id: str
    region: str
    vpc_id: str | None
    verdict: Verdict
    checks: dict[str, CheckEntry]
    actions: list[ActionEntry]
    excluded_reason: str | None = None
    name: str | None = None  # the Name tag
    tags: dict[str, str] = {}  # the configured owner tags (Owner, Team...) the instance carries
    warnings: list[str] = []  # "<code>: <text>", e.g. TCP 22 open to the whole internet on a passing check
    connect_path: Literal["public", "endpoint"] | None = None  # docs/architecture.md §13
    # What a person runs to connect (outputs/connect.py): compliant and fixed instances only.
    connect_command: str | None = None
    error: str | None = None  # why the instance could not be checked at all (e.g. a bad eic-guard:connect-path tag)


class TargetActionEntry(ActionEntry):
    region: str
    account_id: str


class TargetError(_Model):
    region: str
    account_id: str
    error: str


class TargetEntry(_Model):
    """One (account, region) of the run (docs/architecture.md §5b): ok, error (could not be entered or read) or
    incomplete."""

    account_id: str
    region: str
    status: Literal["ok", "error", "incomplete"]
    error: str | None
    instances: int
    notes: list[str] = []  # what a person should know that is not an error (near-miss opt-in tags, fallbacks)


class IpRangesEntry(_Model):
    sync_token: str
    create_date: str


class Summary(_Model):
    instances: int
    compliant: int
    fixed: int
    noncompliant: int
    excluded: int
    errors: int
    warnings: int = 0  # instances with at least one warning
    connect_paths: dict[str, int] = {}  # instances per connect path present: {"public": n, "endpoint": m}


class Report(_Model):
    schema_: str = Field(default=SCHEMA, alias="schema")
    tool_version: str = __version__
    run_id: str
    mode: Literal["report", "remediate"]
    account_id: str
    regions: list[str]
    started_at: datetime
    finished_at: datetime
    ip_ranges: IpRangesEntry
    summary: Summary
    accounts: list[str]
    account_aliases: dict[str, str] = {}  # account id -> IAM account alias, where iam:ListAccountAliases allows
    targets: list[TargetEntry]
    instances: list[InstanceEntry]
    # Extensions to the v1 contract (README "Report"): writes and failures that belong to a region, not an instance.
    target_actions: list[TargetActionEntry] = []
    target_errors: list[TargetError] = []
    # The run was stopped (Ctrl-C, SIGTERM) before every target was done: what it holds is what was done. Written
    # only when true, so a complete report's document is unchanged.
    interrupted: bool = False

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True, exclude=None if self.interrupted else {"interrupted"})

    def to_json_bytes(self, *, ensure_ascii: bool = False) -> bytes:
        """The document to_dict() gives, as indented JSON in UTF-8, encoded by pydantic-core straight from the model
        (no dict, no str: at 100,000 instances each would be another copy of the report). `ensure_ascii`: every
        character past ASCII escaped, the bytes `json.dumps(report.to_dict(), indent=2)` gives (the CLI's file)."""
        exclude = None if self.interrupted else {"interrupted"}
        serializer = type(self).__pydantic_serializer__
        return serializer.to_json(self, indent=2, by_alias=True, exclude=exclude, ensure_ascii=ensure_ascii)

    def account_label(self, account_id: str) -> str:
        """`alias (id)` when the account has an alias, else the id."""
        return account_label(self.account_aliases, account_id)

    @property
    def has_noncompliant(self) -> bool:
        return self.summary.noncompliant > 0 or self.summary.errors > 0


# How every output spells a check status (failures in capitals, so they stand out without colour).
STATUS_LABEL = {
    "pass": "pass",
    "fail": "FAIL",
    "fixed": "fixed",
    "would-fix": "would-fix",
    "error": "ERROR",
    "not-applicable": "n/a",
}
# Each check's short id, where a narrow table or page needs one (the full id is its tooltip or legend).
SHORT_IDS = {
    "public-ipv4": "ipv4",
    "eic-ssh-ingress": "ssh",
    "al2023-ami": "ami",
    "imds-enabled": "imds",
    "internet-route": "route",
    "network-acl": "nacl",
    "endpoint-present": "eice",
    "endpoint-ssh-ingress": "eice-in",
    "endpoint-ssh-egress": "eice-out",
}
DOC_URL = re.compile(r"https://[^\s<>\"')\]]+")  # a documentation link inside a guidance text
# The check each warning code is about (outputs place a warning beside its check; an unknown code stands alone).
WARNING_CHECKS = {
    eic_ssh_ingress.OPEN_TO_INTERNET: eic_ssh_ingress.ID,
    eic_ssh_ingress.WIDER_THAN_EIC: eic_ssh_ingress.ID,
}


# The check each instance action is made for (outputs place an action beside its check; an unknown one stands alone).
# The managed group is created and topped up on the way to its first attachment: eic-ssh-ingress's actions too.
ACTION_CHECKS = {
    public_ipv4.ASSOCIATE_ELASTIC_IP: public_ipv4.ID,
    "create-security-group": eic_ssh_ingress.ID,
    "authorize-ingress": eic_ssh_ingress.ID,
    eic_ssh_ingress.ATTACH_MANAGED_GROUP: eic_ssh_ingress.ID,
    imds_enabled.ENABLE_IMDS: imds_enabled.ID,
}


def split_warning(warning: str) -> tuple[str, str]:
    """("<code>", "<text>") of a warning "<code>: <text>" (the whole warning as text when it has no code)."""
    code, separator, text = warning.partition(": ")
    return (code, text) if separator else ("", warning)


def verdict(outcome: InstanceOutcome) -> Verdict:
    """compliant / fixed (every failing check fixed now) / noncompliant (something still fails) / excluded / error."""
    if outcome.excluded_reason:
        return "excluded"
    statuses = {r.status for r in outcome.checks.values()}
    if outcome.error or "error" in statuses:
        return "error"
    if statuses & {"fail", "would-fix"}:
        return "noncompliant"
    return "fixed" if "fixed" in statuses else "compliant"


def instance_entry(outcome: InstanceOutcome) -> dict:
    status = verdict(outcome)
    return {
        "instance_id": outcome.instance_id,
        "account_id": outcome.account_id,
        "region": outcome.region,
        "vpc_id": outcome.vpc_id,
        "verdict": status,
        "checks": {
            cid: {"status": r.status, "reason": r.reason, "guidance": guidance_for(cid, r)}
            for cid, r in outcome.checks.items()
        },
        "actions": [dict(vars(a)) for a in outcome.actions],
        "excluded_reason": outcome.excluded_reason,
        "name": outcome.name,
        "tags": dict(outcome.tags),
        "warnings": list(outcome.warnings),
        "connect_path": outcome.connect_path,
        "connect_command": connect_command(outcome.instance_id, outcome.region, outcome.connect_path, status),
        "error": outcome.error if outcome.error and not outcome.checks else None,
    }


def build_report(
    *,
    run_id: str,
    mode: str,
    account_id: str,
    regions: list[str],
    started: datetime,
    finished: datetime,
    ip_ranges: IpRanges,
    targets: list[dict],
) -> Report:
    """One report for the whole run from its targets' documents (fanout.worker.to_document, rounds merged):
    every target's instances, the targets' statuses, the accounts covered."""
    # Validated as one document: one pydantic-core call instead of a model __init__ per entry (~7 per instance).
    entries = [e for t in targets for e in t["instances"]]
    counts = {
        v: sum(1 for e in entries if e["verdict"] == v) for v in ("compliant", "fixed", "noncompliant", "excluded")
    }
    errors = [
        {"region": t["region"], "account_id": t["account_id"], "error": t["error"]} for t in targets if t["error"]
    ]
    return Report.model_validate(
        {
            **report_header(run_id, mode, account_id, regions, started, finished, ip_ranges),
            "summary": {
                "instances": len(entries),
                "errors": sum(1 for e in entries if e["verdict"] == "error") + len(errors),
                "warnings": sum(1 for e in entries if e.get("warnings")),
                "connect_paths": dict(
                    sorted(
                        Counter(e["connect_path"] for e in entries if e.get("connect_path")).items(),
                        key=lambda item: ("public", "endpoint").index(item[0]),
                    )
                ),
                **counts,
            },
            "accounts": sorted({t["account_id"] for t in targets}),
            "account_aliases": {t["account_id"]: t["account_alias"] for t in targets if t.get("account_alias")},
            "targets": [target_entry(t) for t in targets],
            "instances": entries,
            "target_actions": [
                {"region": t["region"], "account_id": t["account_id"], **a} for t in targets for a in t["actions"]
            ],
            "target_errors": errors,
        }
    )


def account_label(aliases: dict[str, str], account_id: str) -> str:
    """`alias (id)` when the account has an alias in `aliases`, else the id."""
    alias = aliases.get(account_id)
    return f"{alias} ({account_id})" if alias else account_id


def report_header(
    run_id: str, mode: str, account_id: str, regions: list[str], started: datetime, finished: datetime, ip_ranges: Any
) -> dict:
    """The report's fields about the run itself, before its summary."""
    return {
        "run_id": run_id,
        "mode": mode,
        "account_id": account_id,
        "regions": regions,
        "started_at": started,
        "finished_at": finished,
        "ip_ranges": {"sync_token": ip_ranges.sync_token, "create_date": ip_ranges.create_date},
    }


def target_entry(target: dict) -> dict:
    """A target's entry in the report, from its merged document (fanout.aggregate.merge_targets)."""
    return {
        "account_id": target["account_id"],
        "region": target["region"],
        "status": target["status"],
        "error": target["error"],
        "instances": len(target["instances"]),
        "notes": target.get("notes", []),
    }


__all__ = ["CHECK_IDS", "Report", "build_report", "report_header", "target_entry", "verdict"]
