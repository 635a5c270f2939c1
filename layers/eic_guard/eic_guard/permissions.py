"""Every IAM action each function may call, declared next to the code that calls it.

The deployed engine is a state machine (statemachine/eic_guard.asl.json): PlanFunction → ScanTargetFunction per
(account, region) → AggregateFunction, started nightly and by RefreshFunction. tests/template holds template.yaml's
roles, and member/template.yaml's member role, to these sets; tests/template/test_calls_against_roles.py holds the
calls the handlers really make to the roles the templates render.
"""

from __future__ import annotations

from .checks import ALL_CHECKS, INVENTORY_PERMISSIONS, public_ipv4
from .checks.base import NEAR_MISS_PERMISSIONS
from .outputs import security_hub

# The managed groups' rules (ranges/refresh.py): one filtered describe per region, the prefix lists' entries, then
# authorize/revoke on eic-guard's own groups only. The target worker makes these writes in every mode: the
# `refresh` job (started by the SNS refresh) writes eic-guard's own groups even in report mode.
MANAGED_GROUP_READS = (
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeManagedPrefixLists",
    "ec2:GetManagedPrefixListEntries",
)
MANAGED_GROUP_RULE_EDITS = ("ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress")
REFRESH_EC2 = MANAGED_GROUP_READS + MANAGED_GROUP_RULE_EDITS
# state.py: the ip-ranges state item, a consistent read and a conditional put (Plan decides, Aggregate finishes);
# outputs/alerts.py: Aggregate reads and replaces the alert state item (alerts#scan), the last run's problems.
STATE_TABLE = ("dynamodb:GetItem", "dynamodb:PutItem")
# The refresh: the same state item, plus Powertools idempotency records (put/get/update/delete), same table.
REFRESH_STATE_TABLE = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
# publish.py: the run's report to the bucket (reports/*), one alert message to the topic.
REPORTS_BUCKET = ("s3:PutObject",)
ALERTS_TOPIC = ("sns:Publish",)
# fanout/steps.py: the run's objects under runs/<run id>/ (manifest, targets, one result per target and phase).
RUN_OBJECTS_WRITE = ("s3:PutObject",)
RUN_OBJECTS_READ = ("s3:GetObject",)
RUN_OBJECTS_LIST = ("s3:ListBucket",)  # ListObjectsV2 of runs/<run id>/results/
# fanout/targets.py: every ACTIVE account of the organization (Accounts=organization only).
ORGANIZATION_ACCOUNTS = ("organizations:ListAccounts",)
# aws/credentials.py: each member account is entered through its member role (never the caller's own account).
ENTER_MEMBER_ACCOUNTS = ("sts:AssumeRole",)
# aws/clients.py: the scanned account's alias, which names it in the report and the alert (a scan's apply phase).
ACCOUNT_ALIAS = ("iam:ListAccountAliases",)
# ranges/notification.py: the refresh starts the fan-out's refresh job.
START_FAN_OUT = ("states:StartExecution",)
# publish.py: eic-guard:status and eic-guard:checked-at on opted-in instances (remediate mode, TagInstances on).
INSTANCE_STATUS_TAGS = ("ec2:CreateTags",)


def worker_ec2_actions(remediate: bool, remediate_public_ip: bool = False, tag_instances: bool = False) -> set[str]:
    """The EC2 actions one target needs in the account it scans: what a member role grants (member/template.yaml)
    and the central worker role grants in its own account.

    Reads always, and the managed groups' rule edits always (the refresh job). In remediate mode, the checks'
    fixes; the Elastic IP fix only with `remediate_public_ip`, status tags only with `tag_instances` (both switches
    mean nothing in report mode, which writes nothing else).
    """
    actions = set(INVENTORY_PERMISSIONS) | set(REFRESH_EC2)
    for check in ALL_CHECKS:
        actions.update(check.PERMISSIONS)
        if not remediate or (check is public_ipv4 and not remediate_public_ip):
            continue
        actions.update(check.REMEDIATION_PERMISSIONS)
    if remediate and tag_instances:
        actions.update(INSTANCE_STATUS_TAGS)
    return actions


def worker_function_actions(
    remediate: bool, remediate_public_ip: bool = False, tag_instances: bool = False, security_hub_enabled: bool = False
) -> set[str]:
    """ScanTargetFunction: its EC2 actions (own account), the run's objects, entering the member accounts, and with
    SecurityHubFindings enabled the import (own account) and the findings ledger."""
    actions = worker_ec2_actions(remediate, remediate_public_ip, tag_instances)
    actions |= set(RUN_OBJECTS_READ) | set(RUN_OBJECTS_WRITE) | set(ENTER_MEMBER_ACCOUNTS) | set(ACCOUNT_ALIAS)
    return actions | security_hub_actions(security_hub_enabled, ledger=True)


def plan_function_actions(organization: bool) -> set[str]:
    """PlanFunction: the state item (catch-up decision), the run's manifest and targets, the organization's
    accounts when Accounts=organization. The ip-ranges download is plain HTTPS (no IAM)."""
    actions = set(STATE_TABLE) | set(RUN_OBJECTS_WRITE)
    return actions | set(ORGANIZATION_ACCOUNTS) if organization else actions


def aggregate_function_actions() -> set[str]:
    """AggregateFunction: every result of the run and its manifest, the report, the alert, the state's last touch."""
    actions = set(RUN_OBJECTS_READ) | set(RUN_OBJECTS_LIST) | set(REPORTS_BUCKET) | set(ALERTS_TOPIC)
    return actions | set(STATE_TABLE)


def refresh_function_actions() -> set[str]:
    """RefreshFunction: verify, advance the state once (idempotently), start the fan-out; no EC2 at all."""
    return set(REFRESH_STATE_TABLE) | set(REPORTS_BUCKET) | set(ALERTS_TOPIC) | set(START_FAN_OUT)


# ------------------------------------------- event-driven checks and Security Hub (docs/architecture.md §10, §11)

# changes/resolve.py: an event's security group, network interface, route table or NACL → the affected instances
# (DescribeSecurityGroups, DescribeRouteTables, DescribeNetworkAcls and DescribeInstances are reads the scan has
# anyway; the interfaces are the one lookup of its own), in every mode and in every account an event comes from.
CHANGE_LOOKUPS = ("ec2:DescribeNetworkInterfaces",)
# changes/check.py: the stored ip-ranges state (never downloaded per event), read only.
ON_CHANGE_STATE_TABLE = ("dynamodb:GetItem",)
# changes/publish.py: the report (reports/on-change/*) when worth keeping, an alert when a person is needed.
ON_CHANGE_REPORTS_BUCKET = ("s3:PutObject",)


def security_hub_actions(enabled: bool, ledger: bool) -> set[str]:
    """outputs/security_hub.py: the import (in the account the finding is about), and for a central role the ledger
    of open findings (<reports bucket>/findings/*)."""
    if not enabled:
        return set()
    actions = set(security_hub.IMPORT_PERMISSIONS)
    return actions | set(security_hub.LEDGER_PERMISSIONS) if ledger else actions


def member_role_actions(
    remediate: bool, remediate_public_ip: bool = False, tag_instances: bool = False, security_hub_enabled: bool = False
) -> set[str]:
    """member/template.yaml's MemberRole: the worker's EC2 actions, the event-driven lookups (in every mode: report
    mode checks member accounts' events too) and, with SecurityHubFindings enabled, the import into its own account."""
    actions = worker_ec2_actions(remediate, remediate_public_ip, tag_instances) | set(CHANGE_LOOKUPS)
    actions |= set(ACCOUNT_ALIAS)
    return actions | security_hub_actions(security_hub_enabled, ledger=False)


def on_change_ec2_actions(remediate: bool, remediate_public_ip: bool = False, tag_instances: bool = False) -> set[str]:
    """OnChangeFunction's EC2 actions in its own account: the worker's reads and fixes, but never the refresh job's
    revokes (an event-driven check only adds the current rules), the managed groups' rule edits only in remediate
    mode, the managed Elastic IPs read only with `remediate_public_ip` (the inventory reads them only then), and the
    event lookups; not the inventory's DescribeTags (it looks for near-miss opt-in tags only when a whole region is
    scanned, never for an event's instances)."""
    actions = worker_ec2_actions(remediate, remediate_public_ip, tag_instances) | set(CHANGE_LOOKUPS)
    actions -= set(MANAGED_GROUP_RULE_EDITS) | set(NEAR_MISS_PERMISSIONS)
    if remediate:
        actions.add("ec2:AuthorizeSecurityGroupIngress")
    if not remediate_public_ip:
        actions.discard("ec2:DescribeAddresses")
    return actions


def on_change_function_actions(
    remediate: bool, remediate_public_ip: bool = False, tag_instances: bool = False, security_hub_enabled: bool = False
) -> set[str]:
    """OnChangeFunction: its EC2 actions (own account), entering the member accounts, the stored ip-ranges state,
    the report and alert, and Security Hub with the findings ledger when enabled. (SAM adds the SQS poller's
    actions on the queue.)"""
    actions = on_change_ec2_actions(remediate, remediate_public_ip, tag_instances) | set(ENTER_MEMBER_ACCOUNTS)
    actions |= set(ON_CHANGE_STATE_TABLE) | set(ON_CHANGE_REPORTS_BUCKET) | set(ALERTS_TOPIC)
    return actions | security_hub_actions(security_hub_enabled, ledger=True)
