"""The ASFF documents eic-guard imports into Security Hub (docs/architecture.md §11): what each finding says about one
(instance, check) or warning, whose it is, and what makes two imports of it the same.

Who the instance is: its Name tag starts the Description, and the Name and owner tags are the resource's Tags, so
Security Hub finds a finding by them. The Title stays the check's own, the same for every instance, because Security
Hub groups findings by Title. The check's guidance (docs/architecture.md §5b) is Remediation.Recommendation.Text,
clipped to ASFF's 512 characters, and its documentation URL Remediation.Recommendation.Url.

Severity and Types are sent in FindingProviderFields only. The top-level Severity and Types are the customer's (they
change them with BatchUpdateFindings); a finding provider states and updates its own values in FindingProviderFields,
from which Security Hub fills the top level of a new finding
(https://docs.aws.amazon.com/securityhub/1.0/APIReference/API_FindingProviderFields.html,
https://docs.aws.amazon.com/securityhub/latest/userguide/finding-update-batchimportfindings.html). Sending both would
restate on every import what a customer may have changed on purpose.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ...settings import partition_of
from ..report import DOC_URL, WARNING_CHECKS

SCHEMA_VERSION = "2018-10-08"
PRODUCT_NAME = "eic-guard"
# ASFF Types are namespace/category/classifier; "AWS Security Best Practices" is a documented category of the
# "Software and Configuration Checks" namespace.
FINDING_TYPE = "Software and Configuration Checks/AWS Security Best Practices/EC2 Instance Connect"
PREREQUISITES_URL = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-instance-connect-prerequisites.html"
BATCH_LIMIT = 100  # BatchImportFindings takes at most 100 findings per request
# ... up to 240 KB per finding and 6 MB per request (Security Hub's partner guide, "Guidelines for using the
# BatchImportFindings API"): a margin for the request's own JSON.
FINDING_BYTES = 240 * 1000
BATCH_BYTES = 6 * 1000 * 1000 - 64 * 1024
DESCRIPTION_LIMIT = 1024  # ASFF Description
RECOMMENDATION_LIMIT = 512  # ASFF Remediation.Recommendation.Text
# ASFF Resources[].Partition takes these values only
# (https://docs.aws.amazon.com/securityhub/1.0/APIReference/API_Resource.html); a resource in another partition
# (aws-iso, aws-iso-b, ...) is named by its ARN alone.
ASFF_PARTITIONS = frozenset({"aws", "aws-cn", "aws-us-gov"})

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

    @property
    def hub_arn(self) -> str:
        """The account's hub in the region: what BatchUpdateFindings authorizes."""
        return f"arn:{self.partition}:securityhub:{self.region}:{self.account_id}:hub/default"

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
    connect_path: str | None = None,
) -> PlannedFinding:
    """One ASFF finding (https://docs.aws.amazon.com/securityhub/latest/userguide/securityhub-findings-format.html);
    `check_id` a check's id or `warning:<code>`; `guidance`: the check's own (docs/architecture.md §5b) when the report
    carries one, else the table's text; `name`, `tags`: the instance's Name and owner tags; `connect_path`: public or
    endpoint (docs/architecture.md §13), ProductFields `eic-guard/ConnectPath`, so findings filter by path."""
    text = check_text(check_id)
    severity = text.severity if state in OPEN_STATES else "INFORMATIONAL"
    compliance = {"FAILED": "FAILED", "WARNING": "WARNING", "PASSED": "PASSED", "ARCHIVED": "NOT_AVAILABLE"}[state]
    finding_id = scope.finding_id(instance_id, check_id)
    resource = _instance_resource(scope, instance_id, name, tags)
    product_fields = {"eic-guard/CheckId": check_id, "eic-guard/Status": status, "eic-guard/RunId": run_id}
    if connect_path:
        product_fields["eic-guard/ConnectPath"] = connect_path
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
        "CreatedAt": created_at,
        "UpdatedAt": updated_at,
        "Title": text.title,
        "Description": _clip(_about(name, instance_id, description), DESCRIPTION_LIMIT),
        "Remediation": {"Recommendation": recommendation(guidance, text)},
        "ProductFields": product_fields,
        "Resources": [resource],
        "Compliance": {"Status": compliance},
        # After a finding is created, AWS ignores Workflow in BatchImportFindings (only customers change it, with
        # BatchUpdateFindings): "After a finding is created, BatchImportFindings cannot be used to update ...
        # Workflow" (https://docs.aws.amazon.com/securityhub/1.0/APIReference/API_BatchImportFindings.html). A new
        # finding starts NEW; a resolved one is closed by resolve.mark_resolved (BatchUpdateFindings). Security Hub
        # itself resets RESOLVED to NEW when Compliance goes from PASSED back to FAILED
        # (https://docs.aws.amazon.com/securityhub/latest/userguide/findings-workflow-status.html).
        "Workflow": {"Status": "NEW" if state in OPEN_STATES else "RESOLVED"},
        "RecordState": "ARCHIVED" if state == "ARCHIVED" else "ACTIVE",
        "FindingProviderFields": {"Severity": {"Label": severity}, "Types": [FINDING_TYPE]},
    }
    return PlannedFinding(finding_id, instance_id, check_id, state, finding, fingerprint(finding))


def _instance_resource(
    scope: FindingScope, instance_id: str, name: str | None, tags: dict[str, str] | None
) -> dict[str, Any]:
    resource: dict[str, Any] = {"Type": "AwsEc2Instance", "Id": scope.instance_arn(instance_id), "Region": scope.region}
    if scope.partition in ASFF_PARTITIONS:
        resource["Partition"] = scope.partition
    if about := resource_tags(name, tags):
        resource["Tags"] = about
    return resource


def fingerprint(finding: dict[str, Any]) -> str:
    """What makes two imports of a finding the same: everything but its timestamps and run id."""
    content = {k: v for k, v in finding.items() if k not in ("CreatedAt", "UpdatedAt", "ProductFields")}
    content["ProductFields"] = {k: v for k, v in finding["ProductFields"].items() if k != "eic-guard/RunId"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:32]


def batches(
    items: list, size: int = BATCH_LIMIT, weight: Callable[[Any], int] | None = None, limit: int = BATCH_BYTES
) -> Iterator[list]:
    """`items` in order, in lists of at most `size` items and, given their `weight` in bytes, at most `limit`."""
    batch: list = []
    used = 0
    for item in items:
        weighs = weight(item) if weight is not None else 0
        if batch and (len(batch) == size or used + weighs > limit):
            yield batch
            batch, used = [], 0
        batch.append(item)
        used += weighs
    if batch:
        yield batch


def finding_bytes(finding: dict[str, Any]) -> int:
    """A finding's size in a BatchImportFindings request (its JSON)."""
    return len(json.dumps(finding, separators=(",", ":")).encode("utf-8"))


# ---- an access boundary change: the opt-in tag added (README "Threat model") --------------------------------------
OPT_IN_TYPE = "Software and Configuration Checks/AWS Security Best Practices/EC2 Instance Connect opt-in"
OPT_IN_TITLE = "EC2 Instance Connect access boundary: an instance was opted in"
EIC_IAM_URL = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-instance-connect-configure-IAM-role.html"


def opt_in_finding(
    scope: FindingScope,
    instance_id: str,
    *,
    tag: tuple[str, str],
    actor: str,
    event_name: str,
    event_id: str,
    event_time: str | None,
    now: datetime,
) -> dict[str, Any]:
    """One finding per instance an API call opted in, naming who made the call: not a compliance check (no Compliance,
    not kept in the ledger), an event a security team reviews and closes."""
    key, value = tag
    stamp = asff_time(now)
    description = (
        f"{actor} tagged {instance_id} {key}={value} ({event_name}, {event_time or stamp}): every holder of "
        "eic-guard's ConnectPolicy may now push an SSH key to it, and eic-guard opens TCP 22 from the EC2 Instance "
        "Connect range. If this was not intended, remove the tag and review who may tag instances."
    )
    return {
        "SchemaVersion": SCHEMA_VERSION,
        "Id": f"eic-guard/{scope.account_id}/{scope.region}/{instance_id}/opt-in/{event_id}",
        "ProductArn": scope.product_arn,
        "ProductName": PRODUCT_NAME,
        "GeneratorId": "eic-guard/opt-in",
        "AwsAccountId": scope.account_id,
        "CreatedAt": _event_time(event_time) or stamp,
        "UpdatedAt": stamp,
        "Title": OPT_IN_TITLE,
        "Description": _clip(description, DESCRIPTION_LIMIT),
        "Remediation": {
            "Recommendation": {
                "Text": _clip(
                    "Confirm the instance is meant to be reachable with EC2 Instance Connect; otherwise remove the "
                    f"{key} tag. Reserve the tag to named admins with eic-guard's service control policy.",
                    RECOMMENDATION_LIMIT,
                ),
                "Url": EIC_IAM_URL,
            }
        },
        "ProductFields": {
            "eic-guard/Actor": actor,
            "eic-guard/EventName": event_name,
            "eic-guard/EventId": event_id,
            "eic-guard/Tag": f"{key}={value}",
        },
        "Resources": [_instance_resource(scope, instance_id, None, None)],
        "Workflow": {"Status": "NEW"},
        "RecordState": "ACTIVE",
        "FindingProviderFields": {"Severity": {"Label": "LOW"}, "Types": [OPT_IN_TYPE]},
    }


def _event_time(value: str | None) -> str | None:
    """CloudTrail's eventTime (2026-08-22T15:50:37Z) as an ASFF timestamp; None when it is not one."""
    try:
        return asff_time(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except ValueError:
        return None
