"""Security Hub as AWS documents it, where moto 5.2.5 differs (docs/architecture.md §8: one place per accommodation).

moto's BatchImportFindings stores each finding as sent and, for a finding that exists, merges every field of the new
import into it; it has no BatchUpdateFindings. AWS, for the parts eic-guard relies on:

- BatchImportFindings "cannot be used to update ... Note, UserDefinedFields, VerificationState, Workflow" once a
  finding exists: those are the customer's, changed with BatchUpdateFindings
  (https://docs.aws.amazon.com/securityhub/1.0/APIReference/API_BatchImportFindings.html);
- the top-level Severity and Types of a new finding come from FindingProviderFields when the provider sends only
  those, and after that they are the customer's (BatchUpdateFindings), not the provider's
  (https://docs.aws.amazon.com/securityhub/1.0/APIReference/API_FindingProviderFields.html);
- a finding whose Workflow.Status is NOTIFIED or RESOLVED goes back to NEW when its RecordState changes from ARCHIVED
  to ACTIVE, or its Compliance.Status from PASSED to FAILED, WARNING or NOT_AVAILABLE
  (https://docs.aws.amazon.com/securityhub/latest/userguide/findings-workflow-status.html);
- BatchUpdateFindings (PATCH /findings/batchupdate) sets Workflow, Note and the other customer fields of up to 100
  findings named by Id and ProductArn, and lists the ones it could not update in UnprocessedFindings
  (https://docs.aws.amazon.com/securityhub/1.0/APIReference/API_BatchUpdateFindings.html).

`install()` patches moto's Security Hub with exactly that (tests/conftest.py calls it at import time, so both
`mock_aws` and the ThreadedMotoServer of the end-to-end tests answer this way).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from moto.securityhub import urls
from moto.securityhub.models import Finding, SecurityHubBackend
from moto.securityhub.responses import SecurityHubResponse

CUSTOMER_FIELDS = ("Note", "UserDefinedFields", "VerificationState", "Workflow")
PROVIDER_MIRRORED = ("Severity", "Types")  # top-level fields filled from FindingProviderFields on creation
UPDATABLE = ("Workflow", "Note", "Severity", "Types", "UserDefinedFields", "VerificationState", "Confidence")
REOPENED_FROM = frozenset({"NOTIFIED", "RESOLVED"})


def _create(data: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    provided = data.get("FindingProviderFields") or {}
    for name in PROVIDER_MIRRORED:
        if name not in data and name in provided:
            data[name] = copy.deepcopy(provided[name])
    data.setdefault("Workflow", {"Status": "NEW"})
    return data


def _update(existing: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(new)
    for name in (*CUSTOMER_FIELDS, *PROVIDER_MIRRORED):
        if name in existing:
            merged[name] = copy.deepcopy(existing[name])
        else:
            merged.pop(name, None)
    was_archived = existing.get("RecordState") == "ARCHIVED" and merged.get("RecordState") == "ACTIVE"
    was_passed = existing.get("Compliance", {}).get("Status") == "PASSED" and merged.get("Compliance", {}).get(
        "Status"
    ) in ("FAILED", "WARNING", "NOT_AVAILABLE")
    if merged.get("Workflow", {}).get("Status") in REOPENED_FROM and (was_archived or was_passed):
        merged["Workflow"] = {"Status": "NEW"}
    return merged


def batch_import_findings(self: SecurityHubBackend, findings: list[dict[str, Any]]):
    failed: list[dict[str, Any]] = []
    for data in findings:
        if not isinstance(data.get("Resources"), list) or not data["Resources"]:
            failed.append({"Id": data.get("Id", ""), "ErrorCode": "InvalidInput", "ErrorMessage": "no resource"})
            continue
        existing = next((f for f in self.findings if f.id == data["Id"]), None)
        if existing is None:
            self.findings.append(Finding(data["Id"], _create(data)))
        else:
            existing.data = _update(existing.data, data)
    return len(failed), len(findings) - len(failed), failed


def batch_update_findings(self: SecurityHubBackend, identifiers: list[dict[str, str]], changes: dict[str, Any]):
    processed, unprocessed = [], []
    for identifier in identifiers:
        finding = next(
            (
                f
                for f in self.findings
                if f.id == identifier.get("Id") and f.data.get("ProductArn") == identifier.get("ProductArn")
            ),
            None,
        )
        if finding is None:
            unprocessed.append(
                {"FindingIdentifier": identifier, "ErrorCode": "FindingNotFound", "ErrorMessage": "Finding Not Found"}
            )
            continue
        for name, value in changes.items():
            if name == "Note":
                finding.data["Note"] = {**value, "UpdatedAt": finding.data.get("UpdatedAt", "")}
            else:
                finding.data[name] = copy.deepcopy(value)
        processed.append(identifier)
    return processed, unprocessed


def _batch_update_response(self: SecurityHubResponse) -> str:
    body = json.loads(self.body or "{}")
    changes = {name: body[name] for name in UPDATABLE if name in body}
    processed, unprocessed = self.securityhub_backend.batch_update_findings(body.get("FindingIdentifiers", []), changes)
    return json.dumps({"ProcessedFindings": processed, "UnprocessedFindings": unprocessed})


def install() -> None:
    """Patch moto's Security Hub (idempotent)."""
    SecurityHubBackend.batch_import_findings = batch_import_findings
    SecurityHubBackend.batch_update_findings = batch_update_findings
    SecurityHubResponse.batch_update_findings = _batch_update_response
    urls.url_paths.setdefault("{0}/findings/batchupdate$", SecurityHubResponse.dispatch)
