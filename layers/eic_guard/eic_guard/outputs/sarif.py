"""The report as SARIF 2.1.0 (OASIS), the format code-scanning dashboards read (`--format sarif`).

One rule per check (its TITLE, and the AWS page about that prerequisite as help), one result per (instance, check)
that fails after the run (`fail`, `would-fix`: level error; `error`: the check could not be decided, level error)
and one per warning (TCP 22 open wider than the EIC range: level warning, under the check it is about). A cloud
instance has no file: each result's location is logical, the instance's ARN; `partialFingerprints` keep a result's
identity from run to run. Targets that could not be scanned are tool execution notifications.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..checks import ALL_CHECKS
from ..checks.guidance import DOCS
from ..settings import partition_of
from .report import WARNING_CHECKS, InstanceEntry, Report, split_warning

SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
FAILING = {"fail": "the check fails", "would-fix": "the check fails (report mode: the fix is planned)", "error": ""}
FINGERPRINT = "eicGuardCheck/v1"


def _rules() -> list[dict[str, Any]]:
    return [
        {
            "id": check.ID,
            "name": "".join(part.capitalize() for part in check.ID.split("-")),
            "shortDescription": {"text": check.TITLE},
            "fullDescription": {"text": f"{check.TITLE}. {check.__doc__.strip().splitlines()[0]}"},
            "helpUri": DOCS[check.ID],
            "help": {"text": f"{check.TITLE}: see {DOCS[check.ID]}"},
            "defaultConfiguration": {"level": "error"},
        }
        for check in ALL_CHECKS
    ]


def _location(entry: InstanceEntry) -> dict[str, Any]:
    arn = f"arn:{partition_of(entry.region)}:ec2:{entry.region}:{entry.account_id}:instance/{entry.instance_id}"
    return {"logicalLocations": [{"name": entry.instance_id, "fullyQualifiedName": arn, "kind": "resource"}]}


def _result(entry: InstanceEntry, rule_index: int, level: str, text: str, key: str) -> dict[str, Any]:
    check_id = ALL_CHECKS[rule_index].ID
    return {
        "ruleId": check_id,
        "ruleIndex": rule_index,
        "kind": "fail",
        "level": level,
        "message": {"text": text},
        "locations": [_location(entry)],
        "partialFingerprints": {FINGERPRINT: f"{entry.account_id}/{entry.region}/{entry.instance_id}/{key}"},
        "properties": {
            "accountId": entry.account_id,
            "region": entry.region,
            "instanceId": entry.instance_id,
            "name": entry.name,
            "ownerTags": dict(entry.tags),  # SARIF reserves `tags` (a list of strings)
            "verdict": entry.verdict,
        },
    }


def _results(entry: InstanceEntry, index: dict[str, int]) -> list[dict[str, Any]]:
    results = []
    who = f"{entry.instance_id}{f' ({entry.name})' if entry.name else ''}"
    for check_id, check in entry.checks.items():
        if check.status not in FAILING or check_id not in index:
            continue
        what = FAILING[check.status] or "the check could not be decided"
        text = " ".join(p for p in (f"{who}: {what}: {check.reason or check.status}.", check.guidance) if p)
        results.append(_result(entry, index[check_id], "error", text, check_id))
    for warning in entry.warnings:
        code, text = split_warning(warning)
        check_id = WARNING_CHECKS.get(code)
        if check_id in index:
            results.append(_result(entry, index[check_id], "warning", f"{who}: {text}", f"{check_id}/{code}"))
    return results


def render_sarif(report: Report) -> dict[str, Any]:
    """The SARIF log of one run."""
    index = {check.ID: position for position, check in enumerate(ALL_CHECKS)}
    entries = sorted(report.instances, key=lambda e: (e.account_id, e.region, e.instance_id))
    notifications = [
        {
            "level": "error",
            "message": {"text": f"{report.account_label(e.account_id)} {e.region} could not be scanned: {e.error}"},
        }
        for e in report.target_errors
    ]
    invocation: dict[str, Any] = {
        "executionSuccessful": not report.target_errors and not report.interrupted,
        "startTimeUtc": report.started_at.isoformat(),
        "endTimeUtc": report.finished_at.isoformat(),
        "toolExecutionNotifications": notifications,
    }
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": "eic-guard", "version": __version__, "rules": _rules()}},
                "automationDetails": {"id": f"eic-guard/{report.run_id}"},
                "invocations": [invocation],
                "results": [result for entry in entries for result in _results(entry, index)],
                "properties": {
                    "mode": report.mode,
                    "accounts": list(report.accounts),
                    "regions": list(report.regions),
                    "summary": report.summary.model_dump(),
                    "interrupted": report.interrupted,
                },
            }
        ],
    }
