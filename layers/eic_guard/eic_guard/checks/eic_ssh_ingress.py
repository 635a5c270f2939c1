"""eic-ssh-ingress: the connect ENI's security groups allow TCP 22 from every EIC prefix of the region."""

from __future__ import annotations

import ipaddress

from ..models import CheckResult, Fix, Instance, IPNetwork
from .base import CheckContext, failed, passed

ID = "eic-ssh-ingress"
PERMISSIONS = ("ec2:DescribeSecurityGroups", "ec2:DescribeManagedPrefixLists", "ec2:GetManagedPrefixListEntries")
REMEDIATION_PERMISSIONS = (
    "ec2:CreateSecurityGroup",
    "ec2:CreateTags",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:ModifyNetworkInterfaceAttribute",
    # Re-reads the ENIs' current groups right before the attach (EC2 replaces the whole set).
    "ec2:DescribeNetworkInterfaces",
)
ATTACH_MANAGED_GROUP = "attach-security-group"  # the same name the gateway records
SSH_PORT = 22
_OPEN = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def ssh_sources(group_ids: tuple[str, ...], ctx: CheckContext) -> list[IPNetwork]:
    """Every network the groups allow TCP 22 from, prefix-list entries included."""
    sources: list[IPNetwork] = []
    for group_id in group_ids:
        group = ctx.snapshot.security_groups.get(group_id)
        if group is None:
            continue
        for permission in group.ingress:
            if not permission.allows_tcp_port(SSH_PORT):
                continue
            cidrs = list(permission.ipv4_ranges) + list(permission.ipv6_ranges)
            for list_id in permission.prefix_list_ids:
                cidrs.extend(ctx.snapshot.prefix_lists.get(list_id, ()))
            sources.extend(ipaddress.ip_network(c, strict=False) for c in cidrs)
    return sources


def uncovered(required: tuple[IPNetwork, ...], sources: list[IPNetwork]) -> list[IPNetwork]:
    """The required prefixes no source (alone or merged with adjacent ones) contains."""
    merged = {
        4: list(ipaddress.collapse_addresses(s for s in sources if s.version == 4)),
        6: list(ipaddress.collapse_addresses(s for s in sources if s.version == 6)),
    }
    return [p for p in required if not any(p.subnet_of(m) for m in merged[p.version])]


def _coverage_reason(required: tuple[IPNetwork, ...], sources: list[IPNetwork]) -> str:
    """Say so when a source that lets EIC in is wider than the EIC range (it lets others in too)."""
    if any(s in _OPEN for s in sources):
        return "over-permissive: TCP 22 is open to the whole internet, wider than the EIC range"
    wider = sorted({str(s) for s in sources for p in required if p.version == s.version and p.subnet_of(s) and s != p})
    if wider:
        return f"over-permissive: TCP 22 allowed from {', '.join(wider)}, wider than the EIC range"
    return f"TCP 22 allowed from {', '.join(str(p) for p in required)}"


def evaluate(instance: Instance, ctx: CheckContext) -> CheckResult:
    if ctx.eic.unavailable:
        return CheckResult("error", f"the EC2_INSTANCE_CONNECT ranges are unavailable ({ctx.eic.unavailable})")
    if not ctx.eic.ipv4:
        return failed(f"no EC2_INSTANCE_CONNECT IPv4 prefix is published for {ctx.eic.region}")
    eni = instance.connect_eni()
    group_ids = eni.group_ids if eni else instance.instance_group_ids
    missing, passing = _coverage(group_ids, instance.connect_has_ipv6, ctx)
    if passing is not None:
        return passing
    reason = f"TCP 22 not allowed from {', '.join(str(p) for p in missing)}"
    if eni is None or instance.vpc_id is None:
        return failed(reason + " (no network interface to attach a group to)")
    fix = Fix(
        ATTACH_MANAGED_GROUP,
        eni.eni_id,
        f"attach eic-guard-ssh to {eni.eni_id} keeping {', '.join(group_ids) or 'no groups'}",
        (("eni_id", eni.eni_id), ("vpc_id", instance.vpc_id), ("group_ids", ",".join(group_ids))),
    )
    return failed(reason, fix)


def _coverage(
    group_ids: tuple[str, ...], has_ipv6: bool, ctx: CheckContext
) -> tuple[list[IPNetwork], CheckResult | None]:
    """The required prefixes the groups do not cover, and the passing result when none is missing.

    Depends only on the group set and the address families within one target: computed once per combination.
    """
    key = (ID, group_ids, has_ipv6)
    known = ctx.memo.get(key)
    if known is None:
        required = ctx.eic.ipv4 + (ctx.eic.ipv6 if has_ipv6 else ())
        sources = ssh_sources(group_ids, ctx)
        missing = uncovered(required, sources)
        known = ctx.memo[key] = (missing, None if missing else passed(_coverage_reason(required, sources)))
    return known


def remediate(fix: Fix, instance: Instance, remediator, actions: list) -> None:
    """Attach the VPC's managed group to the connect ENI, keeping the groups it has *now* (idempotent)."""
    group_id = remediator.managed_group(fix.param("vpc_id"), actions)
    gathered = tuple(g for g in fix.param("group_ids").split(",") if g)
    groups = remediator.current_groups(fix.resource, gathered)
    if group_id in groups:
        actions.append(
            remediator.note(
                ATTACH_MANAGED_GROUP,
                fix.resource,
                f"{group_id} already attached; its rules now cover the current prefixes",
            )
        )
        return
    actions.append(remediator.gateway.set_interface_groups(fix.resource, groups, group_id))
