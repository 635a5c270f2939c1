"""endpoint-ssh-ingress: the instance's groups allow TCP 22 from its VPC's EC2 Instance Connect Endpoint.

The endpoint opens TCP connections from its network interface to the instance's private address; the instance's
groups (of the ENI the endpoint reaches: the primary one) must allow them: a reference to one of the endpoint's
security groups, or, only when the endpoint does not preserve the client's IP (`PreserveClientIp=false`, the source is
then the endpoint's own address), an IPv4 range covering the endpoint's network-interface address (the EC2 User
Guide's "Security groups for EC2 Instance Connect Endpoint",
https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/eice-security-groups.html). Protocol `-1` and port ranges containing
22 count, as on the public path; TCP 22 from the whole internet is a warning, as there.

Remediation: attach the VPC's group `eic-guard-eice-ssh` (tagged ManagedBy=eic-guard, TCP 22 from the endpoint's
group by reference, nothing else) to the primary ENI, keeping its groups.
"""

from __future__ import annotations

import ipaddress

from ..models import CheckResult, Fix, Instance, InstanceConnectEndpoint
from ..settings import ENDPOINT_INSTANCE_GROUP_NAME
from . import endpoint_present
from .base import CheckContext
from .connect_path import ENDPOINT, connect_path, elsewhere
from .eic_ssh_ingress import OPEN_TO_INTERNET, SSH_PORT

ID = "endpoint-ssh-ingress"
TITLE = "The instance's security groups allow TCP 22 from its VPC's EC2 Instance Connect Endpoint"
PATHS = (ENDPOINT,)  # reported only for endpoint-path instances: public-path reports stay as they were
# It passes only with the VPC's endpoint: while endpoint-present is neither passing nor fixed (the endpoint's creation
# failed or was refused), a change this fix made leaves it `fail`, not `fixed` (engine.py).
NEEDS = (endpoint_present.ID,)
PERMISSIONS = ("ec2:DescribeSecurityGroups",)
REMEDIATION_PERMISSIONS = (
    "ec2:CreateSecurityGroup",
    "ec2:CreateTags",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:ModifyNetworkInterfaceAttribute",
    "ec2:DescribeNetworkInterfaces",
)
ATTACH_ENDPOINT_GROUP = "attach-security-group"  # the same name the gateway records
_OPEN = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))

# Failure kinds (CheckResult.kind).
NO_ENDPOINT = "no-endpoint"
NO_INTERFACE = "no-interface"
SSH_NOT_ALLOWED = "ssh-not-allowed-from-endpoint"


def instance_groups(instance: Instance) -> tuple[str, ...]:
    """The groups of the ENI the endpoint reaches: the primary one (the instance's own list when it has none)."""
    eni = instance.primary_eni
    return eni.group_ids if eni else instance.instance_group_ids


def evaluate(instance: Instance, ctx: CheckContext) -> CheckResult:
    if (path := connect_path(instance, ctx)) != ENDPOINT:
        return elsewhere(path)
    groups = instance_groups(instance)
    warnings = _warnings(groups, ctx)
    endpoint = ctx.snapshot.endpoint_for(instance.vpc_id)
    if endpoint is None and not endpoint_present.creates_endpoint(instance.vpc_id, ctx):
        reason = f"no EC2 Instance Connect Endpoint in {instance.vpc_id} to allow TCP 22 from (endpoint-present)"
        return CheckResult("fail", reason, kind=NO_ENDPOINT, warnings=warnings)
    if endpoint is not None:
        allowed = _allowed_by(groups, endpoint, ctx)
        if allowed:
            return CheckResult("pass", f"TCP 22 allowed from {allowed}", warnings=warnings)
    eni = instance.primary_eni
    what = _describe(endpoint, instance)
    facts = [("group_ids", ",".join(groups)), ("vpc_id", instance.vpc_id or "")]
    if endpoint is not None:
        facts += [("endpoint_id", endpoint.endpoint_id), ("endpoint_groups", ",".join(endpoint.group_ids))]
    reason = f"TCP 22 not allowed from {what}{_near_miss(groups, endpoint, ctx)}"
    if eni is None or not instance.vpc_id:
        return CheckResult(
            "fail",
            f"{reason} (no network interface to attach a group to)",
            kind=NO_INTERFACE,
            facts=tuple(facts),
            warnings=warnings,
        )
    facts.append(("eni_id", eni.eni_id))
    fix = Fix(
        ATTACH_ENDPOINT_GROUP,
        eni.eni_id,
        f"attach {ENDPOINT_INSTANCE_GROUP_NAME} to {eni.eni_id} keeping {', '.join(groups) or 'no groups'}",
        (("eni_id", eni.eni_id), ("vpc_id", instance.vpc_id), ("group_ids", ",".join(groups))),
    )
    return CheckResult("fail", reason, fix, kind=SSH_NOT_ALLOWED, facts=tuple(facts), warnings=warnings)


def _describe(endpoint: InstanceConnectEndpoint | None, instance: Instance) -> str:
    if endpoint is None:
        return f"the endpoint eic-guard creates in {instance.vpc_id}"
    address = f", address {endpoint.address}" if endpoint.address else ""
    return f"the endpoint {endpoint.endpoint_id} (groups {', '.join(endpoint.group_ids) or 'none'}{address})"


def _ssh_rules(group_ids: tuple[str, ...], ctx: CheckContext):
    for group_id in group_ids:
        group = ctx.snapshot.security_groups.get(group_id)
        if group is None:
            continue
        for permission in group.ingress:
            if permission.allows_tcp_port(SSH_PORT):
                yield group_id, permission


def _allowed_by(group_ids: tuple[str, ...], endpoint: InstanceConnectEndpoint, ctx: CheckContext) -> str | None:
    """What lets the endpoint in ("sg-e (the endpoint's group) in sg-i"), or None."""
    address = ipaddress.ip_address(endpoint.address) if endpoint.address else None
    for group_id, permission in _ssh_rules(group_ids, ctx):
        for ref in permission.group_refs:
            if ref in endpoint.group_ids:
                return f"{ref} (the endpoint's group) in {group_id}"
        if endpoint.preserve_client_ip or address is None:
            continue
        for cidr in permission.ipv4_ranges:
            network = ipaddress.ip_network(cidr, strict=False)
            if address in network:
                return f"{cidr} (covers the endpoint's address {endpoint.address}) in {group_id}"
    return None


def _near_miss(group_ids: tuple[str, ...], endpoint: InstanceConnectEndpoint | None, ctx: CheckContext) -> str:
    """A range that would count if the endpoint did not preserve the client's IP."""
    if endpoint is None or not endpoint.preserve_client_ip or not endpoint.address:
        return ""
    address = ipaddress.ip_address(endpoint.address)
    for group_id, permission in _ssh_rules(group_ids, ctx):
        for cidr in permission.ipv4_ranges:
            if address in ipaddress.ip_network(cidr, strict=False):
                return (
                    f"; found: TCP 22 from {cidr} in {group_id}, which does not count: the endpoint preserves the "
                    "client's IP (PreserveClientIp=true), so connections come from the client's address"
                )
    return ""


def _warnings(group_ids: tuple[str, ...], ctx: CheckContext) -> tuple[str, ...]:
    """`ssh-open-to-internet` when the groups let TCP 22 in from 0.0.0.0/0 or ::/0 (the endpoint needs none of it)."""
    found: dict[str, list[str]] = {}
    for group_id, permission in _ssh_rules(group_ids, ctx):
        for cidr in (*permission.ipv4_ranges, *permission.ipv6_ranges):
            if ipaddress.ip_network(cidr, strict=False) in _OPEN and cidr not in found.setdefault(group_id, []):
                found[group_id].append(cidr)
    texts = [f"{g} allows TCP 22 from {' and '.join(c)}" for g, c in found.items() if c]
    if not texts:
        return ()
    return (
        f"{OPEN_TO_INTERNET}: {', '.join(texts)} (the whole internet); the endpoint path needs only the endpoint's "
        "group",
    )


def remediate(fix: Fix, instance: Instance, remediator, actions: list) -> None:
    """Attach the VPC's eic-guard-eice-ssh to the primary ENI, keeping the groups it has *now* (idempotent)."""
    group_id = remediator.endpoint_instance_group(fix.param("vpc_id"), actions)
    gathered = tuple(g for g in fix.param("group_ids").split(",") if g)
    remediator.attach(fix.resource, gathered, group_id, actions)
