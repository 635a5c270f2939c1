"""Every IAM action a principal of the stacks is granted, declared once with the code path that makes the call and the
parameters under which it does (docs/architecture.md §14).

The roles template.yaml and member/template.yaml render must grant, for every parameter combination, exactly the union
of the `Call`s that apply to them: tests/template/test_role_grants.py fails on a granted action no Call declares (a
grant nobody uses) and on a declared one the role lacks; tests/template/test_calls_against_roles.py then evaluates
every call the handlers really make against those statements, conditions included.

To add a call: one `Call` below, next to the others of its concern - the actions, the roles that make them (their
logical ids), the module (or the AWS service acting for the role) that makes them, and `when` the parameters say so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .checks import ALL_CHECKS, INVENTORY_PERMISSIONS, eic_ssh_ingress, imds_enabled, public_ipv4
from .checks.base import NEAR_MISS_PERMISSIONS
from .fanout.targets import ORGANIZATION
from .outputs.security_hub import IMPORT_PERMISSIONS, LEDGER_PERMISSIONS, RESOLVE_PERMISSIONS

# The roles, by the logical id the templates give them (member/template.yaml's prefixed "member/").
PLAN = "PlanFunctionRole"
WORKER = "ScanTargetFunctionRole"
AGGREGATE = "AggregateFunctionRole"
REFRESH = "RefreshFunctionRole"
ON_CHANGE = "OnChangeFunctionRole"
STATE_MACHINE = "EicGuardStateMachineRole"
SCHEDULE = "NightlyScheduleRole"
FIRST_RUN = "FirstRunRuleRole"
MEMBER = "member/MemberRole"
FORWARDER = "member/EventForwardingRole"
FUNCTIONS = (PLAN, WORKER, AGGREGATE, REFRESH, ON_CHANGE)
CENTRAL_ROLES = (*FUNCTIONS, STATE_MACHINE, SCHEDULE, FIRST_RUN)
MEMBER_ROLES = (MEMBER, FORWARDER)
# The roles that act on EC2 in a scanned account: the worker and the event-driven checks in this one, the member role
# in the others (entered by both).
IN_ACCOUNT = (WORKER, ON_CHANGE, MEMBER)


@dataclass(frozen=True)
class Deployment:
    """The parameters that change what a role may do (the template parameters of the same names)."""

    mode: str = "remediate"
    remediate_public_ip: bool = False
    tag_instances: bool = True
    security_hub: bool = False
    accounts: str = ""  # "" (this account only), "organization", or a comma list of account ids
    forward_events: bool = True  # member/template.yaml: CentralEventBusArn given (the member accounts' events)
    create_endpoints: bool = False

    @property
    def remediate(self) -> bool:
        return self.mode == "remediate"

    @property
    def public_ip_writes(self) -> bool:
        return self.remediate and self.remediate_public_ip

    @property
    def status_tags(self) -> bool:
        return self.remediate and self.tag_instances

    @property
    def endpoint_creation(self) -> bool:
        """Remediate mode may create an EC2 Instance Connect Endpoint (and its group) in a VPC that lacks one."""
        return self.remediate and self.create_endpoints

    @property
    def members(self) -> bool:
        """The run enters other accounts, and their events come in."""
        return self.accounts != ""

    @property
    def organization(self) -> bool:
        return self.accounts == ORGANIZATION

    @classmethod
    def from_parameters(cls, params: Mapping[str, str]) -> Deployment:
        """From template parameter values (template.yaml's, or member/template.yaml's)."""
        return cls(
            mode=params.get("Mode", "remediate"),
            remediate_public_ip=params.get("RemediatePublicIp", "false") == "true",
            tag_instances=params.get("TagInstances", "true") == "true",
            security_hub=params.get("SecurityHubFindings", "disabled") == "enabled",
            accounts=params.get("Accounts", ""),
            forward_events=bool(params.get("CentralEventBusArn", "x")),
            create_endpoints=params.get("CreateEndpoints", "false") == "true",
        )


# What Step Functions documents for a state machine's role that logs to CloudWatch Logs and traces with X-Ray (the
# vended-logs actions accept no resource).
STATE_MACHINE_LOG_DELIVERY = (
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
)
STATE_MACHINE_TRACES = (
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
)


def _always(_: Deployment) -> bool:
    return True


@dataclass(frozen=True)
class Call:
    """Actions `roles` are granted because `path` calls them, when `when(deployment)` holds."""

    actions: tuple[str, ...]
    roles: tuple[str, ...]
    path: str
    when: Callable[[Deployment], bool] = _always


def _remediate(d: Deployment) -> bool:
    return d.remediate


def _check_reads(check) -> tuple[str, ...]:
    return tuple(a for a in check.PERMISSIONS if a not in INVENTORY_PERMISSIONS and a != "ec2:DescribeAddresses")


# The EC2 Instance Connect Endpoint path (docs/architecture.md §13), whatever ConnectPath says (an instance's
# eic-guard:connect-path tag may choose it): the endpoints are read once per target with a paginator, and their
# network interfaces' addresses with the interface describe. eic-guard-eice-ssh, the group attached to an instance on
# that path, is created, filled and attached with the same calls (and statements) as eic-guard-ssh; the TCP 22 egress
# rule of eic-guard-eice (the group of an endpoint eic-guard created) is restored in remediate mode. Only with
# CreateEndpoints=true in remediate mode: the endpoint eic-guard creates in a VPC that has none, its group
# eic-guard-eice (created tagged, its default allow-all egress rule revoked), and the service-linked role EC2 creates
# with the first endpoint of an account (the EC2 User Guide's "Grant permissions to use EC2 Instance Connect Endpoint",
# https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/permissions-for-ec2-instance-connect-endpoint.html, lists
# ec2:CreateNetworkInterface and iam:CreateServiceLinkedRole among the caller's permissions). Nothing in a role
# deletes an endpoint: no code path of the functions does (a failed one is reported); `eic-guard cleanup` runs with
# the person's own credentials.
ENDPOINT_READS = ("ec2:DescribeInstanceConnectEndpoints", "ec2:DescribeNetworkInterfaces")
ENDPOINT_CREATION = (
    "ec2:CreateInstanceConnectEndpoint",
    "ec2:CreateNetworkInterface",
    "ec2:CreateSecurityGroup",
    "ec2:CreateTags",
    "ec2:RevokeSecurityGroupEgress",
    "iam:CreateServiceLinkedRole",
)
ENDPOINT_SERVICE = "ec2-instance-connect.amazonaws.com"  # the service-linked role AWSServiceRoleForEC2InstanceConnect


def _endpoint_creation(d: Deployment) -> bool:
    return d.endpoint_creation


_ENDPOINTS = (
    Call(
        ENDPOINT_READS,
        IN_ACCOUNT,
        "aws/inventory.py: the target's endpoints (one paginated describe) and their interfaces' addresses",
    ),
    Call(
        ("ec2:AuthorizeSecurityGroupEgress",),
        IN_ACCOUNT,
        "checks/endpoint_ssh_egress.py, endpoint_present.py: TCP 22 out of eic-guard-eice to eic-guard-eice-ssh",
        lambda d: d.remediate,
    ),
    Call(
        ENDPOINT_CREATION,
        IN_ACCOUNT,
        "checks/endpoint_present.py (aws/gateway.py): eic-guard-eice and the endpoint, tagged on create",
        _endpoint_creation,
    ),
)


# What a scan and a fix call in the account they cover (checks/*.py declare their own, used here).
_EC2 = (
    Call(("ec2:DescribeInstances",), IN_ACCOUNT, "aws/inventory.py: the opted-in instances (and changes/resolve.py)"),
    Call(NEAR_MISS_PERMISSIONS, (WORKER, MEMBER), "aws/inventory.py: near-miss opt-in tags (whole-region scans only)"),
    *(
        Call(_check_reads(check), IN_ACCOUNT, f"checks/{check.__name__.rsplit('.', 1)[1]}.py: its inventory")
        for check in ALL_CHECKS
        if _check_reads(check)
    ),
    Call(
        ("ec2:DescribeAddresses",),
        IN_ACCOUNT,
        "aws/inventory.py: eic-guard's Elastic IPs (checks/public_ipv4.py)",
        lambda d: d.remediate_public_ip,
    ),
    # ranges/refresh.py: the refresh job keeps the managed groups current in every mode (the worker's job, not the
    # event-driven checks', which only add the current rules when they fix).
    Call(
        ("ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"),
        (WORKER, MEMBER),
        "ranges/refresh.py: the managed groups' rules (the refresh job, every mode)",
    ),
    Call(
        ("ec2:AuthorizeSecurityGroupIngress",),
        (ON_CHANGE,),
        "ranges/managed_group.py: an event-driven fix adds the current rules",
        _remediate,
    ),
    Call(
        ("ec2:CreateSecurityGroup", "ec2:CreateTags", "ec2:ModifyNetworkInterfaceAttribute"),
        IN_ACCOUNT,
        "checks/eic_ssh_ingress.py (aws/gateway.py): create the managed group tagged on create, attach it",
        _remediate,
    ),
    Call(
        ("ec2:DescribeNetworkInterfaces",),
        (WORKER,),
        "aws/gateway.py: re-read the interface's groups just before the attach",
        _remediate,
    ),
    Call(
        ("ec2:DescribeNetworkInterfaces",),
        (ON_CHANGE,),
        "changes/resolve.py: the instances behind an event's interface or group (and the attach's re-read)",
    ),
    Call(
        ("ec2:DescribeNetworkInterfaces",),
        (MEMBER,),
        "aws/gateway.py re-read (remediate); changes/resolve.py look-ups of forwarded events",
        lambda d: d.remediate or (d.members and d.forward_events),
    ),
    Call(
        imds_enabled.REMEDIATION_PERMISSIONS, IN_ACCOUNT, "checks/imds_enabled.py: the metadata endpoint on", _remediate
    ),
    Call(
        (
            "ec2:AllocateAddress",
            "ec2:AssociateAddress",
            "ec2:DisassociateAddress",
            "ec2:ReleaseAddress",
            "ec2:CreateTags",
        ),
        IN_ACCOUNT,
        "checks/public_ipv4.py, engine.py: an Elastic IP for an allowed instance, released when no longer needed",
        lambda d: d.public_ip_writes,
    ),
    Call(
        ("ec2:CreateTags",),
        IN_ACCOUNT,
        "outputs/publish.py: eic-guard:status and eic-guard:checked-at on opted-in instances",
        lambda d: d.status_tags,
    ),
    Call(("iam:ListAccountAliases",), (WORKER, MEMBER), "aws/clients.py: the account's alias in the report"),
    *_ENDPOINTS,
)

_SECURITY_HUB = (
    Call(
        (*IMPORT_PERMISSIONS, *RESOLVE_PERMISSIONS),
        IN_ACCOUNT,
        "outputs/security_hub/publish.py, resolve.py, changes/opt_in.py: import and resolve in the finding's account",
        lambda d: d.security_hub,
    ),
    Call(
        ("securityhub:DescribeHub",),
        (WORKER, MEMBER),
        "verify/probes.py: the verify job checks that Security Hub is enabled in each target (eic-guard verify)",
        lambda d: d.security_hub,
    ),
    Call(
        LEDGER_PERMISSIONS,
        (WORKER, ON_CHANGE),
        "outputs/security_hub/ledger.py: the open findings, findings/ of the reports bucket",
        lambda d: d.security_hub,
    ),
)

_STACK = (
    # What the Lambda service does with every function's role.
    Call(("logs:CreateLogStream", "logs:PutLogEvents"), FUNCTIONS, "Lambda: the function's own log group"),
    Call(("xray:PutTraceSegments", "xray:PutTelemetryRecords"), FUNCTIONS, "Lambda: active tracing"),
    # The ip-ranges state and the alert state.
    Call(("dynamodb:GetItem", "dynamodb:PutItem"), (PLAN, AGGREGATE), "ranges/state.py, outputs/alerts.py"),
    Call(("dynamodb:PutItem",), (WORKER,), "fanout/steps.py: a lost result's record (lost# keys only)"),
    Call(("dynamodb:BatchGetItem",), (AGGREGATE,), "fanout/steps.py: the lost results' records"),
    Call(
        ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"),
        (REFRESH,),
        "ranges/notification.py: the state, once per synctoken (Powertools idempotency)",
    ),
    Call(("dynamodb:GetItem",), (ON_CHANGE,), "changes/check.py: the stored ip-ranges, read only"),
    # The reports bucket.
    Call(("s3:PutObject",), (PLAN, WORKER), "fanout/steps.py: runs/<run id>/ manifest, targets, results"),
    Call(("s3:PutObject",), (WORKER,), "outputs/athena.py: the target's rows of the Athena table, tables/findings/"),
    Call(("s3:GetObject",), (WORKER, AGGREGATE), "fanout/steps.py: the run's manifest and results"),
    Call(("s3:ListBucket",), (AGGREGATE,), "fanout/aggregate.py: the run's result objects (runs/ only)"),
    Call(("s3:PutObject",), (AGGREGATE, REFRESH, ON_CHANGE), "outputs/publish.py, changes/publish.py: reports/"),
    Call(("s3:AbortMultipartUpload",), (AGGREGATE,), "outputs/stream.py: a report upload in parts that failed"),
    Call(("sns:Publish",), (AGGREGATE, REFRESH, ON_CHANGE), "outputs/alerts.py, changes/opt_in.py: the alerts topic"),
    # Entering other accounts, and knowing them.
    Call(
        ("organizations:ListAccounts",),
        (PLAN, ON_CHANGE),
        "fanout/targets.py: the run's accounts; changes/check.py: admit only the organization's events",
        lambda d: d.organization,
    ),
    Call(
        ("sts:AssumeRole",),
        (WORKER, ON_CHANGE),
        "aws/credentials.py: the member role, in the run's accounts only",
        lambda d: d.members,
    ),
    # The fan-out.
    Call(("states:StartExecution",), (REFRESH,), "ranges/notification.py: the refresh job"),
    Call(("states:StartExecution",), (SCHEDULE, FIRST_RUN), "EventBridge Scheduler / the first-run rule: a scan job"),
    Call(("sqs:SendMessage",), (SCHEDULE,), "EventBridge Scheduler: an undeliverable start to its dead-letter queue"),
    Call(("sqs:SendMessage",), (REFRESH,), "Lambda: the OnFailure destination (RefreshDeadLetterQueue)"),
    Call(
        ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"),
        (ON_CHANGE,),
        "Lambda's event source mapping: OnChangeQueue only",
    ),
    Call(("lambda:InvokeFunction",), (STATE_MACHINE,), "statemachine/eic_guard.asl.json: Plan, the worker, Aggregate"),
    Call(("s3:GetObject",), (STATE_MACHINE,), "statemachine/eic_guard.asl.json: the Distributed Maps' ItemReader"),
    Call(
        ("s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"),
        (STATE_MACHINE,),
        "statemachine/eic_guard.asl.json: the Distributed Maps' ResultWriter (runs/<run id>/map/)",
    ),
    Call(
        ("states:StartExecution", "states:DescribeExecution", "states:StopExecution"),
        (STATE_MACHINE,),
        "Step Functions: the Distributed Maps' child executions",
    ),
    Call(STATE_MACHINE_LOG_DELIVERY, (STATE_MACHINE,), "Step Functions: the execution log (Logging, level ERROR)"),
    Call(STATE_MACHINE_TRACES, (STATE_MACHINE,), "Step Functions: X-Ray tracing"),
    # member/template.yaml: this account's events to the central bus.
    Call(("events:PutEvents",), (FORWARDER,), "EventBridge: the forwarding rules' target", lambda d: d.forward_events),
)

CALLS: tuple[Call, ...] = (*_EC2, *_SECURITY_HUB, *_STACK)

# The writes eic-guard's code makes in a member account: anything else the member role does is an anomaly
# (member/template.yaml and template.yaml's MemberRoleAnomalyRule match the CloudTrail events outside it).
MEMBER_WRITE_PROFILE = (
    "AuthorizeSecurityGroupIngress",
    "RevokeSecurityGroupIngress",
    "CreateSecurityGroup",
    "CreateTags",
    "ModifyNetworkInterfaceAttribute",
    "ModifyInstanceMetadataOptions",
    "AllocateAddress",
    "AssociateAddress",
    "DisassociateAddress",
    "ReleaseAddress",
    "BatchImportFindings",
    "BatchUpdateFindings",
    # CreateEndpoints=true (docs/architecture.md §13): the endpoint, its group's egress, the service-linked role.
    "CreateInstanceConnectEndpoint",
    "AuthorizeSecurityGroupEgress",
    "RevokeSecurityGroupEgress",
    "CreateServiceLinkedRole",
)


def granted(role: str, deployment: Deployment) -> dict[str, list[str]]:
    """The actions `role` needs with these parameters, each with the code paths that call it."""
    actions: dict[str, list[str]] = {}
    for call in CALLS:
        if role in call.roles and call.when(deployment):
            for action in call.actions:
                actions.setdefault(action, []).append(call.path)
    return actions


def declared_check_actions() -> set[str]:
    """Every action the check modules declare (each must be covered by a Call)."""
    return {
        action
        for check in (*ALL_CHECKS, eic_ssh_ingress, public_ipv4)
        for action in (*check.PERMISSIONS, *check.REMEDIATION_PERMISSIONS)
    } | set(INVENTORY_PERMISSIONS)
