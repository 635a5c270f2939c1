"""Security Hub findings (docs/architecture.md §11): one ASFF finding per (instance, check) that does not pass,
imported into the instance's own account and region with BatchImportFindings, and resolved once the check passes again.

Who imports: AWS requires the caller of BatchImportFindings, with the default product ARN, to be the finding's
account ("the identifier of the account that you are calling BatchImportFindings from needs to be the same as the
AwsAccountId attribute"), so each target's worker imports with that target's clients (a member account's role).

What it imports, per target and run (both modes: a finding describes the instance's state, and report mode is how
an auditing deployment runs; the import writes to Security Hub only, never to EC2):
- FAILED (Workflow NEW, RecordState ACTIVE) for each check that fails, would be fixed, or errs;
- PASSED (Workflow RESOLVED) for each finding last imported as FAILED whose check now passes, was fixed, or no
  longer applies;
- ARCHIVED for each finding last imported as FAILED whose instance is no longer in scope (terminated, no longer
  opted in, or excluded): Compliance NOT_AVAILABLE, since nothing was checked, as Security Hub's own control
  findings do for a resource AWS Config no longer evaluates;
- WARNING (Workflow NEW) for each warning code an instance has (docs/architecture.md §5b, §11: "Warnings become
  INFORMATIONAL/LOW findings"), Id `eic-guard/<account>/<region>/<instance>/warning:<code>`: the check passes, so not
  FAILED, but it passes through a rule wider than EC2 Instance Connect needs. Compliance WARNING is one of ASFF's four
  values (PASSED | WARNING | FAILED | NOT_AVAILABLE); Severity LOW for SSH open to the whole internet, INFORMATIONAL for
  a range merely wider than the EIC prefix (the most eic-guard allows for the real exposure, less for the lesser one).
  It is kept in the ledger like a check's finding, resolved (PASSED) once the instance is scanned without it, and
  archived with the instance. An instance one of whose checks errs keeps its open warning findings: the check that would
  have found the warning may not have looked.

Who the instance is: its Name tag starts the Description, and the Name and owner tags are the resource's Tags, so
Security Hub finds a finding by them. The Title stays the check's own, the same for every instance, because Security
Hub groups findings by Title. The check's guidance (docs/architecture.md §5b) is Remediation.Recommendation.Text,
clipped to ASFF's 512 characters, and its documentation URL Remediation.Recommendation.Url.

Which findings are open is kept in a small ledger per (account, region), because the import role has no read
permission (IAM: securityhub:BatchImportFindings on the default product ARN only): the reports bucket's
`findings/<account>/<region>.json` when deployed (written with the central clients, conditionally, so two writers
never lose each other's entries), else `~/.eic-guard/findings/<account>/<region>.json` for the CLI. The ledger also
keeps each open finding's CreatedAt, which therefore stays the same for as long as the check keeps failing (a
check that fails again after it passed opens a new occurrence: a new CreatedAt, the same Id).

Change of state: an open finding whose content is unchanged is not imported again, so a second identical scan makes
no BatchImportFindings call at all (each import is an ingestion event, billed and sent to EventBridge). It is
refreshed once REFRESH_AFTER has passed since its last import, because Security Hub deletes an active finding 90
days after its last UpdatedAt (https://docs.aws.amazon.com/securityhub/latest/userguide/securityhub-findings.html).

A failed import (an API error, or a finding in FailedFindings) never fails the scan: it is counted, logged and kept
out of the ledger, so the next run tries it again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from ...aws.gateway import error_code
from ...budget import Deadline
from ...local_files import replace_file
from ...observability import logger, metrics
from ...settings import Settings, partition_of
from ..report import DOC_URL, WARNING_CHECKS, split_warning

SCHEMA_VERSION = "2018-10-08"
PRODUCT_NAME = "eic-guard"
# ASFF Types are namespace/category/classifier; "AWS Security Best Practices" is a documented category of the
# "Software and Configuration Checks" namespace.
FINDING_TYPE = "Software and Configuration Checks/AWS Security Best Practices/EC2 Instance Connect"
PREREQUISITES_URL = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-instance-connect-prerequisites.html"
BATCH_LIMIT = 100  # BatchImportFindings takes at most 100 findings per request
REFRESH_AFTER = timedelta(days=30)  # well inside Security Hub's 90 days, with room for missed runs
LEDGER_PREFIX = "findings"
LEDGER_SCHEMA = "eic-guard/findings-ledger/v1"
IMPORT_FAILURES_METRIC = "SecurityHubImportFailures"
MAX_ERRORS = 10  # distinct error messages kept in a target's document
DESCRIPTION_LIMIT = 1024  # ASFF Description
RECOMMENDATION_LIMIT = 512  # ASFF Remediation.Recommendation.Text
# IAM, for the roles that run `publish_findings` (declared here, next to the calls):
# the target's account (central worker role for its own account, member role otherwise), on
# arn:<partition>:securityhub:<region>:<account>:product/<account>/default ...
IMPORT_PERMISSIONS = ("securityhub:BatchImportFindings",)
# ... and the central worker role, on <reports bucket ARN>/findings/* (the ledger).
LEDGER_PERMISSIONS = ("s3:GetObject", "s3:PutObject")

NOT_PASSING = frozenset({"fail", "would-fix", "error"})
FindingState = Literal["FAILED", "WARNING", "PASSED", "ARCHIVED"]
OPEN_STATES = frozenset({"FAILED", "WARNING"})  # what the ledger keeps until it is resolved or archived
WARNING_PREFIX = "warning:"  # the ledger's `check_id` and the finding Id's last part for a warning
Severity = Literal["INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL"]


@dataclass(frozen=True)
class CheckText:
    """What a finding of one check says whatever the instance: its title, severity while failing, what to do."""

    title: str
    severity: Severity
    recommendation: str


# Issue 11 replaces `recommendation` with the per-check guidance of guidance.py (docs/architecture.md §5b); the
# severities say how much each failure matters to EIC: every one keeps the console's Connect button from working except
# the AMI, which only means the EIC package must be installed by hand.
CHECK_TEXT: dict[str, CheckText] = {
    "public-ipv4": CheckText(
        "EC2 Instance Connect prerequisite: a public IPv4 address",
        "MEDIUM",
        "Give the instance a public IPv4 address (auto-assigned in a public subnet, or an Elastic IP on its primary "
        "network interface), or connect through an EC2 Instance Connect Endpoint.",
    ),
    "eic-ssh-ingress": CheckText(
        "EC2 Instance Connect prerequisite: SSH (TCP 22) allowed from the EC2 Instance Connect range",
        "MEDIUM",
        "Allow TCP 22 from the region's EC2_INSTANCE_CONNECT prefixes (ip-ranges.json), or from the "
        "com.amazonaws.<region>.ec2-instance-connect prefix list, in a security group of the instance's network "
        "interface. eic-guard attaches its eic-guard-ssh group in remediate mode.",
    ),
    "al2023-ami": CheckText(
        "EC2 Instance Connect prerequisite: an Amazon Linux 2023 AMI",
        "LOW",
        "Launch from an Amazon Linux 2023 AMI, which includes EC2 Instance Connect, or install the "
        "ec2-instance-connect package on this image.",
    ),
    "imds-enabled": CheckText(
        "EC2 Instance Connect prerequisite: instance metadata service enabled",
        "MEDIUM",
        "Turn the instance metadata endpoint on (ModifyInstanceMetadataOptions HttpEndpoint=enabled, keeping "
        "HttpTokens as it is). eic-guard does so in remediate mode.",
    ),
    "internet-route": CheckText(
        "EC2 Instance Connect prerequisite: a default route to an internet gateway",
        "MEDIUM",
        "Give the subnet's route table an active 0.0.0.0/0 route to an internet gateway, or connect through an "
        "EC2 Instance Connect Endpoint.",
    ),
    "network-acl": CheckText(
        "EC2 Instance Connect prerequisite: network ACL allows SSH from EC2 Instance Connect",
        "MEDIUM",
        "Allow TCP 22 in from the region's EC2 Instance Connect prefix and TCP 1024-65535 out to it in the "
        "subnet's network ACL.",
    ),
}


WARNING_TEXT: dict[str, CheckText] = {
    "ssh-open-to-internet": CheckText(
        "EC2 Instance Connect: SSH (TCP 22) open to the whole internet",
        "LOW",
        "Replace the rule that allows TCP 22 from 0.0.0.0/0 or ::/0 with one from the region's EC2 Instance Connect "
        "prefix (the com.amazonaws.<region>.ec2-instance-connect prefix list, or the EC2_INSTANCE_CONNECT ranges of "
        "ip-ranges.json): EC2 Instance Connect needs nothing wider.",
    ),
    "ssh-wider-than-eic": CheckText(
        "EC2 Instance Connect: SSH (TCP 22) allowed from a range wider than EC2 Instance Connect's",
        "INFORMATIONAL",
        "Narrow the rule that allows TCP 22 to the region's EC2 Instance Connect prefix (the "
        "com.amazonaws.<region>.ec2-instance-connect prefix list, or the EC2_INSTANCE_CONNECT ranges of "
        "ip-ranges.json): the rest of the range is not needed to connect.",
    ),
}


def check_text(check_id: str) -> CheckText:
    """The text of a check's findings, or of a warning's (`warning:<code>`); one this module does not know yet gets
    a generic text."""
    if check_id.startswith(WARNING_PREFIX):
        code = check_id.removeprefix(WARNING_PREFIX)
        return WARNING_TEXT.get(
            code,
            CheckText(
                f"EC2 Instance Connect warning: {code}",
                "LOW",
                "Allow TCP 22 only from the region's EC2 Instance Connect prefix.",
            ),
        )
    return CHECK_TEXT.get(
        check_id,
        CheckText(
            f"EC2 Instance Connect prerequisite: {check_id}",
            "MEDIUM",
            "Meet the EC2 Instance Connect prerequisite this check names.",
        ),
    )


# ---- where findings go --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FindingScope:
    """One (account, region): the findings' ids, product ARN and resource ARNs there."""

    account_id: str
    region: str
    partition: str = ""

    def __post_init__(self) -> None:
        if not self.partition:
            object.__setattr__(self, "partition", partition_of(self.region))

    @property
    def product_arn(self) -> str:
        """The account's default product: what a custom integration imports under."""
        return f"arn:{self.partition}:securityhub:{self.region}:{self.account_id}:product/{self.account_id}/default"

    def finding_id(self, instance_id: str, check_id: str) -> str:
        return f"eic-guard/{self.account_id}/{self.region}/{instance_id}/{check_id}"

    def instance_arn(self, instance_id: str) -> str:
        return f"arn:{self.partition}:ec2:{self.region}:{self.account_id}:instance/{instance_id}"


# ---- building findings --------------------------------------------------------------------------------------------
def asff_time(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and Z, as ASFF timestamps are written."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def recommendation(guidance: str | None, text: CheckText) -> dict[str, str]:
    """ASFF Remediation.Recommendation: the guidance (else the check's own text) within ASFF's 512 characters, and
    the first documentation URL it names (else the prerequisites page), whole even when the text is clipped."""
    found = DOC_URL.search(guidance or "")
    url = found.group().rstrip(".,;:") if found else PREREQUISITES_URL
    return {"Text": _clip(guidance or text.recommendation, RECOMMENDATION_LIMIT), "Url": url}


def resource_tags(name: str | None, tags: dict[str, str] | None) -> dict[str, str]:
    """The instance's Name and owner tags as ASFF Resource.Tags: values must not be blank, and `aws:` keys are
    AWS's own."""
    named = {"Name": name, **(tags or {})}
    return {k: v for k, v in named.items() if v and v.strip() and not k.lower().startswith("aws:")}


def _about(name: str | None, instance_id: str, description: str) -> str:
    """The Description, led by the instance's name when it has one (the Id and ARN already say which instance)."""
    return f"{name} ({instance_id}): {description}" if name else description


def describe(status: str, reason: str | None) -> str:
    """A finding's Description from the check's status and reason."""
    reason = reason or ""
    if status == "would-fix":
        return f"{reason}. eic-guard fixes this in remediate mode."
    if status == "error":
        return f"eic-guard could not complete this check: {reason}"
    if status == "fixed":
        return f"Fixed by eic-guard (it was: {reason})."
    if status == "not-applicable":
        return f"Not applicable now: {reason}"
    if status == "pass":
        return f"The prerequisite is met: {reason}" if reason else "The prerequisite is met."
    return reason or "The prerequisite is not met."


@dataclass(frozen=True)
class PlannedFinding:
    """One finding to import, and what the ledger records once it is imported."""

    finding_id: str
    instance_id: str
    check_id: str
    state: FindingState
    finding: dict[str, Any]
    fingerprint: str


def build_finding(
    scope: FindingScope,
    instance_id: str,
    check_id: str,
    state: FindingState,
    *,
    status: str,
    description: str,
    created_at: str,
    updated_at: str,
    run_id: str,
    guidance: str | None = None,
    name: str | None = None,
    tags: dict[str, str] | None = None,
) -> PlannedFinding:
    """One ASFF finding (https://docs.aws.amazon.com/securityhub/latest/userguide/securityhub-findings-format.html);
    `check_id` a check's id or `warning:<code>`; `guidance`: the check's own (docs/architecture.md §5b) when the report
    carries one, else the table's text; `name`, `tags`: the instance's Name and owner tags."""
    text = check_text(check_id)
    severity = text.severity if state in OPEN_STATES else "INFORMATIONAL"
    compliance = {"FAILED": "FAILED", "WARNING": "WARNING", "PASSED": "PASSED", "ARCHIVED": "NOT_AVAILABLE"}[state]
    finding_id = scope.finding_id(instance_id, check_id)
    resource = {
        "Type": "AwsEc2Instance",
        "Id": scope.instance_arn(instance_id),
        "Partition": scope.partition,
        "Region": scope.region,
    }
    if about := resource_tags(name, tags):
        resource["Tags"] = about
    product_fields = {"eic-guard/CheckId": check_id, "eic-guard/Status": status, "eic-guard/RunId": run_id}
    if check_id.startswith(WARNING_PREFIX):
        code = check_id.removeprefix(WARNING_PREFIX)
        product_fields.update({"eic-guard/CheckId": WARNING_CHECKS.get(code, ""), "eic-guard/Warning": code})
    finding: dict[str, Any] = {
        "SchemaVersion": SCHEMA_VERSION,
        "Id": finding_id,
        "ProductArn": scope.product_arn,
        "ProductName": PRODUCT_NAME,  # settable for a custom integration (the default product)
        "GeneratorId": f"eic-guard/{check_id}",
        "AwsAccountId": scope.account_id,
        "Types": [FINDING_TYPE],
        "CreatedAt": created_at,
        "UpdatedAt": updated_at,
        "Severity": {"Label": severity},
        "Title": text.title,
        "Description": _clip(_about(name, instance_id, description), DESCRIPTION_LIMIT),
        "Remediation": {"Recommendation": recommendation(guidance, text)},
        "ProductFields": product_fields,
        "Resources": [resource],
        "Compliance": {"Status": compliance},
        # After a finding is created, AWS ignores Workflow in BatchImportFindings (only customers change it, with
        # BatchUpdateFindings): "After a finding is created, BatchImportFindings cannot be used to update ...
        # Workflow" (https://docs.aws.amazon.com/securityhub/1.0/APIReference/API_BatchImportFindings.html).
        # It is sent anyway so that the record states the intent, and a new finding starts NEW. Security Hub itself
        # resets RESOLVED to NEW when Compliance goes from PASSED back to FAILED; it documents the automatic
        # PASSED -> RESOLVED move for control findings only
        # (https://docs.aws.amazon.com/securityhub/latest/userguide/findings-workflow-status.html).
        "Workflow": {"Status": "NEW" if state in OPEN_STATES else "RESOLVED"},
        "RecordState": "ARCHIVED" if state == "ARCHIVED" else "ACTIVE",
        # Finding providers update Severity and Types through FindingProviderFields (BatchImportFindings docs).
        "FindingProviderFields": {"Severity": {"Label": severity}, "Types": [FINDING_TYPE]},
    }
    return PlannedFinding(finding_id, instance_id, check_id, state, finding, fingerprint(finding))


def fingerprint(finding: dict[str, Any]) -> str:
    """What makes two imports of a finding the same: everything but its timestamps and run id."""
    content = {k: v for k, v in finding.items() if k not in ("CreatedAt", "UpdatedAt", "ProductFields")}
    content["ProductFields"] = {k: v for k, v in finding["ProductFields"].items() if k != "eic-guard/RunId"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:32]


# ---- deciding what to import (pure) -------------------------------------------------------------------------------
@dataclass
class FindingsPlan:
    findings: list[PlannedFinding] = field(default_factory=list)
    unchanged: int = 0  # open findings whose content is unchanged and fresh: not imported again


def plan_findings(
    scope: FindingScope,
    entries: Iterable[dict],
    open_findings: dict[str, dict],
    *,
    now: datetime,
    run_id: str,
    instance_ids: Collection[str] | None = None,
    resolve: bool = True,
) -> FindingsPlan:
    """The imports one scan calls for, from its report instance entries and the ledger's open findings.

    `instance_ids`: the scan covered only these instances (an event-driven check), so only their findings may be
    resolved or archived. `resolve=False`: the ledger could not be read, so only the failing checks are imported.
    """
    plan = FindingsPlan()
    stamp = asff_time(now)
    scanned: dict[str, dict] = {}
    open_warnings: dict[str, list[str]] = {}  # instance id -> the warning codes of its open findings
    for known in open_findings.values():
        if known["check_id"].startswith(WARNING_PREFIX):
            open_warnings.setdefault(known["instance_id"], []).append(known["check_id"].removeprefix(WARNING_PREFIX))
    for entry in entries:
        scanned[entry["instance_id"]] = entry
        if entry["verdict"] == "excluded":
            continue  # never checked: its open findings are archived below
        for check_id, check in entry["checks"].items():
            _plan_check(plan, scope, entry, check_id, check, open_findings, stamp, now, run_id)
        _plan_warnings(
            plan, scope, entry, open_findings, open_warnings.get(entry["instance_id"], []), stamp, now, run_id
        )
    if resolve:
        plan.findings.extend(_archived(scope, scanned, open_findings, stamp, run_id, instance_ids))
    return plan


def _plan_check(
    plan: FindingsPlan,
    scope: FindingScope,
    entry: dict,
    check_id: str,
    check: dict,
    open_findings: dict[str, dict],
    stamp: str,
    now: datetime,
    run_id: str,
) -> None:
    instance_id = entry["instance_id"]
    known = open_findings.get(scope.finding_id(instance_id, check_id))
    status, reason = check["status"], check.get("reason")
    who = {"name": entry.get("name"), "tags": entry.get("tags")}
    if status not in NOT_PASSING:
        if known is not None:  # passes now, was fixed, or no longer applies: resolve
            planned = build_finding(
                scope,
                instance_id,
                check_id,
                "PASSED",
                status=status,
                description=describe(status, reason),
                created_at=known["created_at"],
                updated_at=stamp,
                run_id=run_id,
                **who,
            )
            plan.findings.append(planned)
        return
    planned = build_finding(
        scope,
        instance_id,
        check_id,
        "FAILED",
        status=status,
        description=describe(status, reason),
        created_at=known["created_at"] if known else stamp,
        updated_at=stamp,
        run_id=run_id,
        guidance=check.get("guidance"),
        **who,
    )
    _add_unless_unchanged(plan, planned, known, now)


def _add_unless_unchanged(plan: FindingsPlan, planned: PlannedFinding, known: dict | None, now: datetime) -> None:
    """An open finding imported with the same content less than REFRESH_AFTER ago is not imported again."""
    if known is not None and known.get("fingerprint") == planned.fingerprint and not _due(known, now):
        plan.unchanged += 1
        return
    plan.findings.append(planned)


def _due(known: dict, now: datetime) -> bool:
    """An open finding last imported REFRESH_AFTER ago (or at an unreadable time) is imported again."""
    try:
        imported = datetime.fromisoformat(known["imported_at"].replace("Z", "+00:00"))
    except (KeyError, TypeError, ValueError):
        return True
    return now - imported >= REFRESH_AFTER


def _archived(
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
            continue  # checked: resolved or kept above (a check missing from its entry is unknown, so kept)
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


def _plan_warnings(
    plan: FindingsPlan,
    scope: FindingScope,
    entry: dict,
    open_findings: dict[str, dict],
    open_codes: list[str],
    stamp: str,
    now: datetime,
    run_id: str,
) -> None:
    """One WARNING finding per warning code of the instance (two groups open to the world are one finding naming
    both), and PASSED for each code it had an open finding for and no longer has, unless one of its checks erred."""
    instance_id = entry["instance_id"]
    who = {"name": entry.get("name"), "tags": entry.get("tags")}
    by_code: dict[str, list[str]] = {}
    for warning in entry.get("warnings") or ():
        code, text = split_warning(warning)
        by_code.setdefault(code or "unknown", []).append(text)
    for code, texts in by_code.items():
        check = entry["checks"].get(WARNING_CHECKS.get(code, ""), {})
        known = open_findings.get(scope.finding_id(instance_id, WARNING_PREFIX + code))
        planned = build_finding(
            scope,
            instance_id,
            WARNING_PREFIX + code,
            "WARNING",
            status=check.get("status", "warning"),
            description="; ".join(texts),
            created_at=known["created_at"] if known else stamp,
            updated_at=stamp,
            run_id=run_id,
            **who,
        )
        _add_unless_unchanged(plan, planned, known, now)
    if any(check["status"] == "error" for check in entry["checks"].values()):
        return  # the check that finds a warning may not have looked: what is open stays open
    for code in sorted(set(open_codes) - set(by_code)):
        known = open_findings[scope.finding_id(instance_id, WARNING_PREFIX + code)]
        check = entry["checks"].get(WARNING_CHECKS.get(code, ""), {})
        planned = build_finding(
            scope,
            instance_id,
            WARNING_PREFIX + code,
            "PASSED",
            status=check.get("status", "pass"),
            description=f"The instance no longer has this warning ({code}).",
            created_at=known["created_at"],
            updated_at=stamp,
            run_id=run_id,
            **who,
        )
        plan.findings.append(planned)


def batches(items: list, size: int = BATCH_LIMIT) -> Iterator[list]:
    """`items` in order, in lists of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---- the ledger of open findings ----------------------------------------------------------------------------------
class LedgerUnavailable(Exception):
    """The ledger could not be read or written."""


@dataclass
class LedgerChanges:
    """What one sync changes in the ledger: findings now open (upserted) and findings closed (removed)."""

    opened: dict[str, dict] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.opened or self.closed)

    def apply(self, open_findings: dict[str, dict]) -> dict[str, dict]:
        merged = {k: v for k, v in open_findings.items() if k not in self.closed}
        merged.update(self.opened)
        return merged


class Ledger(Protocol):
    location: str

    def load(self) -> dict[str, dict]: ...

    def save(self, changes: LedgerChanges, now: datetime) -> None: ...


def _document(account_id: str, region: str, open_findings: dict[str, dict], now: datetime) -> bytes:
    body = {
        "schema": LEDGER_SCHEMA,
        "account_id": account_id,
        "region": region,
        "updated_at": asff_time(now),
        "open": dict(sorted(open_findings.items())),
    }
    return json.dumps(body, indent=1).encode()


def _parse(raw: bytes, location: str) -> dict[str, dict]:
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise LedgerUnavailable(f"{location} is not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("schema") != LEDGER_SCHEMA:
        raise LedgerUnavailable(f"{location} is not an eic-guard findings ledger ({LEDGER_SCHEMA})")
    open_findings = document.get("open")
    if not isinstance(open_findings, dict) or not all(_is_record(r) for r in open_findings.values()):
        raise LedgerUnavailable(f"{location} has no valid 'open' object")
    return open_findings


def _is_record(record: Any) -> bool:
    """An open finding as `sync_findings` records it (the fingerprint and import time may be missing: then the
    finding is simply imported again)."""
    return isinstance(record, dict) and all(
        isinstance(record.get(key), str) for key in ("instance_id", "check_id", "created_at")
    )


class S3Ledger:
    """`findings/<account>/<region>.json` in the reports bucket, written only if it did not change since it was read
    (If-Match, or If-None-Match for a new one); on a conflict the changes are applied again to the newer copy."""

    ATTEMPTS = 3
    CONFLICTS = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})

    def __init__(self, s3: Any, bucket: str, account_id: str, region: str):
        self.s3, self.bucket, self.account_id, self.region = s3, bucket, account_id, region
        self.key = f"{LEDGER_PREFIX}/{account_id}/{region}.json"
        self.location = f"s3://{bucket}/{self.key}"
        self._etag: str | None = None
        self._denied = False
        self._base: dict[str, dict] = {}

    def load(self) -> dict[str, dict]:
        self._etag, self._base = None, {}
        try:
            answer = self.s3.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            code = error_code(exc)
            if code in ("NoSuchKey", "404", "NotFound"):
                return {}
            if code in ("AccessDenied", "403"):
                # S3 answers 403, not 404, for a missing key to a role without s3:ListBucket: taken as absent; the
                # conditional create in `save` then refuses to replace a ledger that exists but cannot be read.
                self._denied = True
                return {}
            raise LedgerUnavailable(f"{self.location} cannot be read: {code}: {exc}") from None
        except BotoCoreError as exc:
            raise LedgerUnavailable(f"{self.location} cannot be read: {exc}") from None
        self._base = _parse(answer["Body"].read(), self.location)
        self._etag = answer.get("ETag")
        return dict(self._base)

    def save(self, changes: LedgerChanges, now: datetime) -> None:
        if not changes:
            return
        for attempt in range(self.ATTEMPTS):
            if attempt:
                self.load()  # written by someone else since it was read: apply the changes to the newer copy
            condition = {"IfMatch": self._etag} if self._etag else {"IfNoneMatch": "*"}
            body = _document(self.account_id, self.region, changes.apply(self._base), now)
            try:
                self.s3.put_object(
                    Bucket=self.bucket, Key=self.key, Body=body, ContentType="application/json", **condition
                )
                return
            except ClientError as exc:
                code = error_code(exc)
                if code not in self.CONFLICTS:
                    raise LedgerUnavailable(f"{self.location} not written: {code}: {exc}") from None
                if self._denied:
                    raise LedgerUnavailable(f"{self.location} exists but cannot be read (AccessDenied)") from None
            except BotoCoreError as exc:
                raise LedgerUnavailable(f"{self.location} not written: {exc}") from None
        raise LedgerUnavailable(f"{self.location} not written: it changed under each of {self.ATTEMPTS} attempts")


class FileLedger:
    """The CLI's ledger: a JSON file replaced atomically (one file per target, one writer per target)."""

    def __init__(self, directory: Path, account_id: str, region: str):
        self.account_id, self.region = account_id, region
        self.path = directory / account_id / f"{region}.json"
        self.location = str(self.path)
        self._base: dict[str, dict] = {}

    def load(self) -> dict[str, dict]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self._base = {}
            return {}
        except OSError as exc:
            raise LedgerUnavailable(f"{self.location} cannot be read: {exc.strerror or exc}") from None
        self._base = _parse(raw, self.location)
        return dict(self._base)

    def save(self, changes: LedgerChanges, now: datetime) -> None:
        if not changes:
            return
        body = _document(self.account_id, self.region, changes.apply(self._base), now)
        try:
            replace_file(self.path, body)
        except OSError as exc:
            raise LedgerUnavailable(f"{self.location} not written: {exc.strerror or exc}") from None


def local_ledger_directory() -> Path:
    """Where the CLI keeps its ledgers when no reports bucket is set."""
    return Path.home() / ".eic-guard" / LEDGER_PREFIX


def ledger_for(central: Any, settings: Settings, account_id: str, region: str) -> S3Ledger | FileLedger:
    """The reports bucket's ledger (written with the central clients) when there is a bucket, else the local file."""
    if settings.reports_bucket:
        return S3Ledger(central.client("s3"), settings.reports_bucket, account_id, region)
    return FileLedger(local_ledger_directory(), account_id, region)


# ---- importing ----------------------------------------------------------------------------------------------------
@dataclass
class SyncOutcome:
    """What one target's sync did: the `security_hub` entry of its result document."""

    imported: int = 0  # FAILED and WARNING findings imported: new, changed, or refreshed
    resolved: int = 0  # PASSED findings imported
    archived: int = 0  # ARCHIVED findings imported
    unchanged: int = 0  # open findings not imported again: same content, imported less than REFRESH_AFTER ago
    failed: int = 0  # findings whose import failed (tried again next run)
    calls: int = 0  # BatchImportFindings calls
    errors: list[str] = field(default_factory=list)
    ledger: str | None = None

    def error(self, message: str) -> None:
        if message not in self.errors and len(self.errors) < MAX_ERRORS:
            self.errors.append(message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "imported": self.imported,
            "resolved": self.resolved,
            "archived": self.archived,
            "unchanged": self.unchanged,
            "failed": self.failed,
            "calls": self.calls,
            "errors": list(self.errors),
            "ledger": self.ledger,
        }


def _message(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return f"{error_code(exc)}: {exc.response.get('Error', {}).get('Message', exc)}"
    return f"{type(exc).__name__}: {exc}"


def import_findings(securityhub: Any, planned: list[PlannedFinding], outcome: SyncOutcome) -> list[PlannedFinding]:
    """BatchImportFindings in batches of at most BATCH_LIMIT; returns the findings Security Hub accepted."""
    accepted: list[PlannedFinding] = []
    for batch in batches(planned):
        outcome.calls += 1
        try:
            answer = securityhub.batch_import_findings(Findings=[p.finding for p in batch])
        except (ClientError, BotoCoreError) as exc:
            outcome.failed += len(batch)
            outcome.error(_message(exc))
            continue
        refused = {f.get("Id"): f for f in answer.get("FailedFindings") or ()}
        if answer.get("FailedCount", 0) > len(refused):  # refused without saying which: none counts as imported
            outcome.failed += len(batch)
            outcome.error(f"{answer['FailedCount']} of {len(batch)} findings refused without their ids")
            continue
        for planned_finding in batch:
            failure = refused.get(planned_finding.finding_id)
            if failure is None:
                accepted.append(planned_finding)
                continue
            outcome.failed += 1
            outcome.error(f"{failure.get('ErrorCode')}: {failure.get('ErrorMessage')} ({planned_finding.finding_id})")
    return accepted


def sync_findings(
    securityhub: Any,
    ledger: Ledger,
    scope: FindingScope,
    entries: Iterable[dict],
    *,
    run_id: str,
    now: datetime | None = None,
    instance_ids: Collection[str] | None = None,
) -> SyncOutcome:
    """Import one target's findings and record the open ones; AWS failures are counted in the outcome, not raised.

    `entries`: the scan's report instance entries (outputs.report.instance_entry). `instance_ids`: the scan covered
    only these instances (an event-driven check), so the other instances' findings are left as they are.
    """
    now = now or datetime.now(UTC)
    outcome = SyncOutcome(ledger=ledger.location)
    try:
        open_findings, resolve = ledger.load(), True
    except LedgerUnavailable as exc:
        open_findings, resolve = {}, False
        outcome.error(f"{exc}: failing checks imported, but no finding resolved or archived in this run")
    plan = plan_findings(
        scope, entries, open_findings, now=now, run_id=run_id, instance_ids=instance_ids, resolve=resolve
    )
    outcome.unchanged = plan.unchanged
    changes = LedgerChanges()
    for planned in import_findings(securityhub, plan.findings, outcome):
        if planned.state in OPEN_STATES:
            outcome.imported += 1
            changes.opened[planned.finding_id] = {
                "instance_id": planned.instance_id,
                "check_id": planned.check_id,
                "created_at": planned.finding["CreatedAt"],
                "imported_at": planned.finding["UpdatedAt"],
                "fingerprint": planned.fingerprint,
            }
        else:
            outcome.resolved += planned.state == "PASSED"
            outcome.archived += planned.state == "ARCHIVED"
            changes.closed.add(planned.finding_id)
    if resolve:
        try:
            ledger.save(changes, now)
        except LedgerUnavailable as exc:
            outcome.error(str(exc))
    return outcome


def findings_enabled(settings: Settings) -> bool:
    return settings.security_hub_findings == "enabled"


def publish_target_findings(
    clients_for: Callable[[str], Any],
    own_account: str,
    account_id: str,
    region: str,
    settings: Settings,
    entries: list[dict],
    *,
    run_id: str,
    instance_ids: Collection[str] | None = None,
    now: datetime | None = None,
    deadline: Deadline | None = None,
) -> dict[str, Any]:
    """After a target's scan: import its findings with the target's own clients, keep the ledger with the central
    ones (`clients_for(own_account)`). Never raises: the findings never fail the scan they describe.

    A worker whose time is already inside its reserve (the scan ran out of time) imports nothing this round: the
    next round, or the next run, does (nothing is lost, the ledger is unchanged), and it is not a failure.
    """
    scope = FindingScope(account_id, region)
    if deadline is not None and deadline.remaining() <= 0:
        outcome = SyncOutcome()
        outcome.error("not imported: out of time in this round (the next round or run imports them)")
        _record(outcome, scope)
        return outcome.to_dict()
    try:
        securityhub = clients_for(account_id).client("securityhub", region)
        ledger = ledger_for(clients_for(own_account), settings, account_id, region)
        outcome = sync_findings(securityhub, ledger, scope, entries, run_id=run_id, now=now, instance_ids=instance_ids)
    except Exception as exc:  # noqa: BLE001 - a bug here must not cost the target its result
        logger.exception("security hub findings failed", extra={"account_id": account_id, "region": region})
        outcome = SyncOutcome()
        outcome.failed = sum(
            sum(1 for c in e["checks"].values() if c["status"] in NOT_PASSING) + len(e.get("warnings") or ())
            for e in entries
        )
        outcome.error(_message(exc))
    _record(outcome, scope)
    return outcome.to_dict()


def _record(outcome: SyncOutcome, scope: FindingScope) -> None:
    """One log line per target; the SecurityHubImportFailures metric when some import failed."""
    extra = {"account_id": scope.account_id, "region": scope.region, **outcome.to_dict()}
    if outcome.failed or outcome.errors:
        logger.warning("security hub findings not all imported", extra=extra)
    else:
        logger.info("security hub findings imported", extra=extra)
    if outcome.failed:
        count_import_failures(outcome.failed)


def count_import_failures(count: int) -> None:
    """EMF metric SecurityHubImportFailures (flushed by the worker handler's log_metrics)."""
    metrics.add_metric(name=IMPORT_FAILURES_METRIC, unit=MetricUnit.Count, value=count)
