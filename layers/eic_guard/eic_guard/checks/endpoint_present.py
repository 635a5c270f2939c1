"""endpoint-present: the instance's VPC has an EC2 Instance Connect Endpoint that is ready and serves IPv4.

AWS allows one endpoint per VPC and 5 per account and Region by default; creating one takes minutes
(`create-in-progress`, then `create-complete`); its IP address type is `ipv4`, `dualstack` or `ipv6` (the EC2 User
Guide's "Create an EC2 Instance Connect Endpoint",
https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/create-ec2-instance-connect-endpoints.html, and the API reference's
Ec2InstanceConnectEndpoint). eic-guard connects to the instance's private IPv4 address, so `ipv4` and `dualstack` serve.

Remediation only with `CreateEndpoints=true`: one endpoint per VPC that lacks one, in the subnet of the VPC's first
endpoint-path instance in id order, with eic-guard's own group `eic-guard-eice`, `PreserveClientIp=false`, tagged
`ManagedBy=eic-guard`, and a `ClientToken` derived from the VPC id (a retried or concurrent run creates one endpoint,
not two). The token also counts the endpoints eic-guard created there before (e.g. one `cleanup` deleted), so that a
new one is created after a deletion rather than the deleted one returned.

An endpoint that is `delete-in-progress` or `delete-failed` serves nobody but still holds the VPC's endpoint quota
(one per VPC; the EC2 User Guide's "Delete an EC2 Instance Connect Endpoint",
https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/delete-ec2-instance-connect-endpoint.html): while the VPC has one
and no live endpoint, this check fails naming it and no creation is attempted (it would be refused); once it is gone,
the next run creates one.
"""

from __future__ import annotations

import hashlib

from ..models import CheckResult, Fix, Instance, InstanceConnectEndpoint
from ..settings import MANAGED_BY_TAG
from .base import CheckContext
from .connect_path import ENDPOINT, connect_path, elsewhere

ID = "endpoint-present"
TITLE = "The instance's VPC has an EC2 Instance Connect Endpoint that is ready (create-complete) and serves IPv4"
PATHS = (ENDPOINT,)  # reported only for endpoint-path instances: public-path reports stay as they were
PERMISSIONS = ("ec2:DescribeInstanceConnectEndpoints", "ec2:DescribeNetworkInterfaces")
REMEDIATION_PERMISSIONS = (
    "ec2:CreateInstanceConnectEndpoint",
    "ec2:CreateSecurityGroup",
    "ec2:CreateTags",
    "ec2:RevokeSecurityGroupEgress",
    "ec2:AuthorizeSecurityGroupEgress",
    "ec2:AuthorizeSecurityGroupIngress",
)
CREATE_ENDPOINT = "create-instance-connect-endpoint"

# Failure kinds (CheckResult.kind).
NO_ENDPOINT = "no-endpoint"
ENDPOINT_CREATING = "endpoint-creating"
ENDPOINT_DELETING = "endpoint-deleting"
ENDPOINT_IPV6_ONLY = "endpoint-ipv6-only"
ENDPOINTS_UNREADABLE = "endpoints-unreadable"
NO_VPC = "no-vpc"

# Not usable, but held against the VPC's endpoint quota until it is gone: no endpoint can be created beside it.
DELETING_STATES = ("delete-in-progress", "delete-failed")


def evaluate(instance: Instance, ctx: CheckContext) -> CheckResult:
    if (path := connect_path(instance, ctx)) != ENDPOINT:
        return elsewhere(path)
    snapshot = ctx.snapshot
    if snapshot.endpoints_unreadable:
        return CheckResult("error", snapshot.endpoints_unreadable, kind=ENDPOINTS_UNREADABLE)
    vpc_id = instance.vpc_id
    if not vpc_id:
        return CheckResult("fail", "the instance is in no VPC", kind=NO_VPC)
    endpoint = snapshot.endpoint_for(vpc_id)
    facts = [("vpc_id", vpc_id), ("subnet_id", instance.connect_subnet_id or "")]
    if endpoint is not None and endpoint.usable:
        where = f"{endpoint.endpoint_id} ({endpoint.state}, {endpoint.ip_address_type}) in {endpoint.subnet_id}"
        if endpoint.serves_ipv4:
            return CheckResult("pass", where)
        facts.append(("endpoint_id", endpoint.endpoint_id))
        reason = f"{where} serves only IPv6: the instance is reached on its private IPv4 address"
        return CheckResult("fail", reason, kind=ENDPOINT_IPV6_ONLY, facts=tuple(facts))
    if endpoint is not None:
        facts.append(("endpoint_id", endpoint.endpoint_id))
        reason = f"{endpoint.endpoint_id} in {vpc_id} is being created ({endpoint.state}): ready in a few minutes"
        return CheckResult("fail", reason, kind=ENDPOINT_CREATING, facts=tuple(facts))
    facts.append(("create_endpoints", str(ctx.settings.create_endpoints).lower()))
    deleting = being_deleted(vpc_id, ctx)
    if deleting is not None:
        facts += [("endpoint_id", deleting.endpoint_id), ("state", deleting.state)]
        doing = "is being deleted" if deleting.state == "delete-in-progress" else "could not be deleted"
        message = f": {deleting.state_message}" if deleting.state_message else ""
        reason = (
            f"{deleting.endpoint_id} in {vpc_id} {doing} ({deleting.state}{message}): it serves no connection but "
            "holds the VPC's endpoint quota (one per VPC), so no endpoint can be created until it is gone"
        )
        return CheckResult("fail", reason, kind=ENDPOINT_DELETING, facts=tuple(facts))
    reason = f"no EC2 Instance Connect Endpoint in {vpc_id}"
    gone = [_named(e) for e in snapshot.endpoints_in(vpc_id)]
    if gone:
        reason += f" ({'; '.join(gone)})"
    fix = None
    if ctx.settings.create_endpoints:
        subnet_id = planned_subnet(vpc_id, ctx)
        token = client_token(vpc_id, ctx)
        fix = Fix(
            CREATE_ENDPOINT,
            vpc_id,
            f"create an EC2 Instance Connect Endpoint in {subnet_id} with eic-guard-eice, PreserveClientIp=false, "
            "tagged ManagedBy=eic-guard",
            (("vpc_id", vpc_id), ("subnet_id", subnet_id), ("client_token", token)),
        )
    return CheckResult("fail", reason, fix, kind=NO_ENDPOINT, facts=tuple(facts))


def _named(endpoint: InstanceConnectEndpoint) -> str:
    message = f": {endpoint.state_message}" if endpoint.state_message else ""
    return f"{endpoint.endpoint_id} is {endpoint.state}{message}"


def being_deleted(vpc_id: str | None, ctx: CheckContext) -> InstanceConnectEndpoint | None:
    """The VPC's endpoint that is being deleted (or failed to be), when the VPC has no live one: it holds the VPC's
    endpoint quota, so a creation would be refused."""
    snapshot = ctx.snapshot
    if snapshot.endpoint_for(vpc_id) is not None:
        return None
    return next((e for e in snapshot.endpoints_in(vpc_id) if e.state in DELETING_STATES), None)


def creates_endpoint(vpc_id: str | None, ctx: CheckContext) -> bool:
    """Whether eic-guard creates the VPC's endpoint in this run (plans it, in report mode): CreateEndpoints is on and
    the VPC has neither a live endpoint nor one being deleted. The checks that pass through that endpoint plan their
    changes for it only then."""
    return (
        bool(vpc_id)
        and ctx.settings.create_endpoints
        and ctx.snapshot.endpoint_for(vpc_id) is None
        and being_deleted(vpc_id, ctx) is None
    )


def planned_subnet(vpc_id: str, ctx: CheckContext) -> str:
    """Where eic-guard creates the VPC's endpoint: the subnet of its first endpoint-path instance in id order."""
    key = (ID, "subnet", vpc_id)
    if key not in ctx.memo:
        candidates = sorted(
            (i for i in ctx.snapshot.instances if i.vpc_id == vpc_id and connect_path(i, ctx) == ENDPOINT),
            key=lambda i: i.instance_id,
        )
        ctx.memo[key] = next((i.connect_subnet_id for i in candidates if i.connect_subnet_id), "")
    return ctx.memo[key]


def client_token(vpc_id: str, ctx: CheckContext) -> str:
    """The ClientToken of the VPC's endpoint: the same for every run that sees the same VPC (at most 64 ASCII
    characters), changed only by an endpoint eic-guard created there before (deleted or failed since)."""
    key, value = MANAGED_BY_TAG
    before = sorted(e.endpoint_id for e in ctx.snapshot.endpoints_in(vpc_id) if e.tag(key) == value)
    if not before:
        return f"eic-guard-{vpc_id}"
    digest = hashlib.sha256(",".join(before).encode()).hexdigest()[:16]
    return f"eic-guard-{vpc_id}-{digest}"


def remediate(fix: Fix, instance: Instance, remediator, actions: list) -> None:
    """Create the VPC's endpoint (once per VPC in a run; the ClientToken makes a retry or a racing run harmless)."""
    remediator.created_endpoint(fix.param("vpc_id"), fix.param("subnet_id"), fix.param("client_token"), actions)
