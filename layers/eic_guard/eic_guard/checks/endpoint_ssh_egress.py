"""endpoint-ssh-egress: the EC2 Instance Connect Endpoint's groups allow TCP 22 out to the instance.

The endpoint's security groups must let its connections out to the instance: TCP 22 to a reference to one of the
instance's groups, or to an IPv4 range covering its private address (the EC2 User Guide's "Security groups for EC2
Instance Connect Endpoint", https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/eice-security-groups.html). Protocol
`-1` and port ranges containing 22 count.

Remediation only on an endpoint eic-guard created (tagged ManagedBy=eic-guard: it owns that endpoint's group
`eic-guard-eice`): egress TCP 22 to `eic-guard-eice-ssh`, which is attached to the instance's primary ENI. On any other
endpoint it stays `fail`, the guidance naming the exact rule to add: eic-guard never edits a group it does not own.
"""

from __future__ import annotations

import ipaddress

from ..models import CheckResult, Fix, Instance, InstanceConnectEndpoint
from ..settings import ENDPOINT_GROUP_NAME, ENDPOINT_INSTANCE_GROUP_NAME, MANAGED_BY_TAG
from . import endpoint_present
from .base import CheckContext
from .connect_path import ENDPOINT, connect_path, elsewhere
from .eic_ssh_ingress import SSH_PORT
from .endpoint_ssh_ingress import instance_groups

ID = "endpoint-ssh-egress"
TITLE = "The EC2 Instance Connect Endpoint's security groups allow TCP 22 out to the instance"
PATHS = (ENDPOINT,)  # reported only for endpoint-path instances: public-path reports stay as they were
# It passes only with the VPC's endpoint: while endpoint-present is neither passing nor fixed (the endpoint's creation
# failed or was refused), a change this fix made leaves it `fail`, not `fixed` (engine.py).
NEEDS = (endpoint_present.ID,)
PERMISSIONS = ("ec2:DescribeSecurityGroups",)
REMEDIATION_PERMISSIONS = (
    "ec2:AuthorizeSecurityGroupEgress",
    "ec2:ModifyNetworkInterfaceAttribute",
    "ec2:DescribeNetworkInterfaces",
)
ALLOW_EGRESS = "authorize-egress"

# Failure kinds (CheckResult.kind).
NO_ENDPOINT = "no-endpoint"
EGRESS_NOT_ALLOWED = "ssh-egress-not-allowed"


def evaluate(instance: Instance, ctx: CheckContext) -> CheckResult:
    if (path := connect_path(instance, ctx)) != ENDPOINT:
        return elsewhere(path)
    endpoint = ctx.snapshot.endpoint_for(instance.vpc_id)
    groups = instance_groups(instance)
    eni = instance.primary_eni
    if endpoint is None:
        if endpoint_present.creates_endpoint(instance.vpc_id, ctx) and eni is not None:
            # The endpoint eic-guard creates carries eic-guard-eice, whose only egress is TCP 22 to eic-guard-eice-ssh.
            return CheckResult(
                "fail",
                f"no EC2 Instance Connect Endpoint in {instance.vpc_id} yet (endpoint-present creates it)",
                _fix(instance, groups, eni.eni_id),
                kind=NO_ENDPOINT,
                facts=(("vpc_id", instance.vpc_id),),
            )
        reason = f"no EC2 Instance Connect Endpoint in {instance.vpc_id} to allow TCP 22 out of (endpoint-present)"
        return CheckResult("fail", reason, kind=NO_ENDPOINT)
    allowed = _allowed_to(endpoint, groups, instance.private_ip, ctx)
    if allowed:
        return CheckResult("pass", f"{endpoint.endpoint_id} allows TCP 22 out to {allowed}")
    reason = (
        f"the groups of {endpoint.endpoint_id} ({', '.join(endpoint.group_ids) or 'none'}) allow no TCP 22 out to "
        f"the instance (groups {', '.join(groups) or 'none'}, address {instance.private_ip or 'unknown'})"
    )
    facts = (
        ("endpoint_id", endpoint.endpoint_id),
        ("endpoint_groups", ",".join(endpoint.group_ids)),
        ("group_ids", ",".join(groups)),
        ("private_ip", instance.private_ip or ""),
        ("owned", str(_owned_group(endpoint, ctx) is not None).lower()),
    )
    fix = _fix(instance, groups, eni.eni_id) if eni is not None and _owned_group(endpoint, ctx) else None
    if fix is None and eni is not None:
        reason += "; eic-guard changes only the group of an endpoint it created"
    return CheckResult("fail", reason, fix, kind=EGRESS_NOT_ALLOWED, facts=facts)


def _fix(instance: Instance, groups: tuple[str, ...], eni_id: str) -> Fix:
    return Fix(
        ALLOW_EGRESS,
        eni_id,
        f"allow TCP 22 from {ENDPOINT_GROUP_NAME} out to {ENDPOINT_INSTANCE_GROUP_NAME}, and attach it to {eni_id}",
        (("eni_id", eni_id), ("vpc_id", instance.vpc_id or ""), ("group_ids", ",".join(groups))),
    )


def _owned_group(endpoint: InstanceConnectEndpoint, ctx: CheckContext) -> str | None:
    """eic-guard-eice, when the endpoint is eic-guard's and carries it."""
    key, value = MANAGED_BY_TAG
    group = ctx.snapshot.endpoint_groups.get(endpoint.vpc_id)
    if endpoint.tag(key) != value or group is None or group.group_id not in endpoint.group_ids:
        return None
    return group.group_id


def _allowed_to(
    endpoint: InstanceConnectEndpoint, groups: tuple[str, ...], private_ip: str | None, ctx: CheckContext
) -> str | None:
    address = ipaddress.ip_address(private_ip) if private_ip else None
    for group_id in endpoint.group_ids:
        group = ctx.snapshot.security_groups.get(group_id)
        if group is None:
            continue
        for permission in group.egress:
            if not permission.allows_tcp_port(SSH_PORT):
                continue
            for ref in permission.group_refs:
                if ref in groups:
                    return f"{ref} (the instance's group) in {group_id}"
            if address is None:
                continue
            for cidr in permission.ipv4_ranges:
                if address in ipaddress.ip_network(cidr, strict=False):
                    return f"{cidr} (covers the instance's address {private_ip}) in {group_id}"
    return None


def remediate(fix: Fix, instance: Instance, remediator, actions: list) -> None:
    """Egress TCP 22 from eic-guard-eice to eic-guard-eice-ssh, and that group on the primary ENI (idempotent)."""
    vpc_id = fix.param("vpc_id")
    remediator.endpoint_egress(vpc_id, actions)
    group_id = remediator.endpoint_instance_group(vpc_id, actions)
    gathered = tuple(g for g in fix.param("group_ids").split(",") if g)
    remediator.attach(fix.resource, gathered, group_id, actions)
