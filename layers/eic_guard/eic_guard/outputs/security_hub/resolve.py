"""Closing findings (docs/architecture.md §11): which open findings a scan resolves or archives, and how a resolved one
leaves Security Hub's default views.

- PASSED for each finding last imported as FAILED (or WARNING) whose check now passes, was fixed, or no longer applies
  (its warning is gone). Importing it PASSED is not enough: once a finding exists, BatchImportFindings ignores its
  Workflow, and Security Hub's default views (and most customers' filters) show every ACTIVE finding whose
  Workflow.Status is NEW or NOTIFIED
  (https://docs.aws.amazon.com/securityhub/latest/userguide/findings-workflow-status.html). So `mark_resolved` sets
  Workflow.Status RESOLVED with BatchUpdateFindings, in the finding's own account (a member account's with its
  member role). Should the check fail again, Security Hub itself moves a RESOLVED finding whose Compliance goes from
  PASSED to FAILED back to NEW, and eic-guard imports it FAILED: it reappears.
- ARCHIVED for each finding last imported as FAILED whose instance is no longer in scope (terminated, no longer opted
  in, or excluded): Compliance NOT_AVAILABLE, since nothing was checked, as Security Hub's own control findings do for
  a resource AWS Config no longer evaluates. RecordState ARCHIVED already takes it out of the default views.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ...aws.gateway import error_code
from ..report import WARNING_CHECKS
from .build import WARNING_PREFIX, FindingScope, PlannedFinding, batches, build_finding, describe

# IAM, for the role acting in the finding's account (the central worker role in its own account, the member role
# otherwise), on arn:<partition>:securityhub:<region>:<account>:hub/default.
RESOLVE_PERMISSIONS = ("securityhub:BatchUpdateFindings",)
NOTE = "Resolved by eic-guard: the check passes again, or was fixed."
UPDATED_BY = "eic-guard"


def resolved_check(
    scope: FindingScope, entry: dict, check_id: str, check: dict, known: dict, stamp: str, run_id: str
) -> PlannedFinding:
    """The PASSED import of an open finding whose check passes now, was fixed, or no longer applies."""
    status, reason = check["status"], check.get("reason")
    return build_finding(
        scope,
        entry["instance_id"],
        check_id,
        "PASSED",
        status=status,
        description=describe(status, reason),
        created_at=known["created_at"],
        updated_at=stamp,
        run_id=run_id,
        name=entry.get("name"),
        tags=entry.get("tags"),
    )


def resolved_warnings(
    scope: FindingScope,
    entry: dict,
    open_findings: dict[str, dict],
    gone_codes: Collection[str],
    stamp: str,
    run_id: str,
) -> Iterator[PlannedFinding]:
    """PASSED for each warning code the instance had an open finding for and no longer has, unless one of its checks
    erred (the check that finds a warning may not have looked: what is open stays open)."""
    if any(check["status"] == "error" for check in entry["checks"].values()):
        return
    instance_id = entry["instance_id"]
    for code in sorted(gone_codes):
        known = open_findings[scope.finding_id(instance_id, WARNING_PREFIX + code)]
        check = entry["checks"].get(WARNING_CHECKS.get(code, ""), {})
        yield build_finding(
            scope,
            instance_id,
            WARNING_PREFIX + code,
            "PASSED",
            status=check.get("status", "pass"),
            description=f"The instance no longer has this warning ({code}).",
            created_at=known["created_at"],
            updated_at=stamp,
            run_id=run_id,
            name=entry.get("name"),
            tags=entry.get("tags"),
        )


def archived(
    scope: FindingScope,
    scanned: dict[str, dict],
    open_findings: dict[str, dict],
    stamp: str,
    run_id: str,
    instance_ids: Collection[str] | None,
) -> Iterator[PlannedFinding]:
    """Open findings of instances this scan covered but did not check: gone, no longer opted in, or excluded."""
    for finding_id in sorted(open_findings):
        known = open_findings[finding_id]
        instance_id, check_id = known["instance_id"], known["check_id"]
        if instance_ids is not None and instance_id not in instance_ids:
            continue  # outside this (partial) scan
        entry = scanned.get(instance_id)
        if entry is not None and entry["verdict"] != "excluded":
            continue  # checked: resolved or kept (a check missing from its entry is unknown, so kept)
        if entry is None:
            status = "gone"
            description = (
                "The instance is no longer in eic-guard's scope (terminated, or no longer tagged for eic-guard): "
                "the finding is archived."
            )
        else:
            status = "excluded"
            description = f"The instance is excluded from eic-guard ({entry.get('excluded_reason')}): archived."
        yield build_finding(
            scope,
            instance_id,
            check_id,
            "ARCHIVED",
            status=status,
            description=description,
            created_at=known["created_at"],
            updated_at=stamp,
            run_id=run_id,
            name=entry.get("name") if entry else None,
            tags=entry.get("tags") if entry else None,
        )


def mark_resolved(securityhub: Any, resolved: list[PlannedFinding]) -> tuple[list[PlannedFinding], list[str]]:
    """Workflow.Status RESOLVED for findings just imported PASSED (BatchUpdateFindings, at most 100 per call).

    Returns the findings Security Hub updated, and one message per failure; a finding it did not update stays open
    in the ledger, so the next run imports and resolves it again.
    """
    done: list[PlannedFinding] = []
    errors: list[str] = []
    for batch in batches(resolved):
        identifiers = [{"Id": p.finding_id, "ProductArn": p.finding["ProductArn"]} for p in batch]
        try:
            answer = securityhub.batch_update_findings(
                FindingIdentifiers=identifiers,
                Workflow={"Status": "RESOLVED"},
                Note={"Text": NOTE, "UpdatedBy": UPDATED_BY},
            )
        except (ClientError, BotoCoreError) as exc:
            code = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
            errors.append(f"BatchUpdateFindings: {code}: {exc}")
            continue
        refused = {u.get("FindingIdentifier", {}).get("Id"): u for u in answer.get("UnprocessedFindings") or ()}
        for planned in batch:
            failure = refused.get(planned.finding_id)
            if failure is None:
                done.append(planned)
            else:
                errors.append(
                    f"not resolved: {failure.get('ErrorCode')}: {failure.get('ErrorMessage')} ({planned.finding_id})"
                )
    return done, errors
