"""The eic-guard-ssh security group: what rules it should hold for a region's current EIC prefixes."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..models import EicPrefixes, IngressPermission, SecurityGroup

SSH_PORT = 22
# The AWS-managed EIC prefix lists (IPv4 and IPv6 are separate lists), by region.
EIC_PREFIX_LIST = "com.amazonaws.{region}.ec2-instance-connect"
EIC_IPV6_PREFIX_LIST = "com.amazonaws.{region}.ipv6.ec2-instance-connect"


def rule_description(region: str) -> str:
    return f"eic-guard EC2_INSTANCE_CONNECT {region}"


def prefix_list_fallback_note(region: str, ipv6: bool = False) -> str:
    """The target note for prefix-list mode in a region without the AWS-managed list of a family (the same words
    from the scan and from the refresh, so that a target's notes list it once)."""
    name = (EIC_IPV6_PREFIX_LIST if ipv6 else EIC_PREFIX_LIST).format(region=region)
    cidrs = "EIC IPv6 CIDRs" if ipv6 else "EIC CIDRs"
    return f"prefix-list mode: {name} does not exist in {region}; the managed groups use the {cidrs} instead"


@dataclass(frozen=True)
class RuleSet:
    """TCP 22 sources of a managed group: CIDRs (IPv4 and IPv6) and prefix-list ids."""

    cidrs: frozenset[str] = frozenset()
    prefix_lists: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.cidrs or self.prefix_lists)

    def __sub__(self, other: RuleSet) -> RuleSet:
        return RuleSet(self.cidrs - other.cidrs, self.prefix_lists - other.prefix_lists)

    def describe(self) -> str:
        return ", ".join(sorted(self.cidrs) + sorted(self.prefix_lists))

    def ip_permissions(self, region: str) -> list[dict]:
        """The IpPermissions argument for Authorize/RevokeSecurityGroupIngress."""
        description = rule_description(region)
        cidrs = sorted(self.cidrs)
        permission = {
            "IpProtocol": "tcp",
            "FromPort": SSH_PORT,
            "ToPort": SSH_PORT,
            "IpRanges": [{"CidrIp": c, "Description": description} for c in cidrs if ":" not in c],
            "Ipv6Ranges": [{"CidrIpv6": c, "Description": description} for c in cidrs if ":" in c],
            "PrefixListIds": [{"PrefixListId": p, "Description": description} for p in sorted(self.prefix_lists)],
        }
        return [{k: v for k, v in permission.items() if v != []}]


def desired_rules(
    eic: EicPrefixes, ingress_source: str, eic_prefix_list_id: str | None, eic_ipv6_prefix_list_id: str | None = None
) -> RuleSet:
    """TCP 22 from the region's EIC prefixes; in prefix-list mode from the AWS-managed lists (IPv4 and IPv6 are
    separate lists) where they exist, from the CIDRs of a family whose list does not."""
    if ingress_source != "prefix-list":
        return RuleSet(cidrs=frozenset(str(p) for p in eic.all))
    lists, cidrs = set(), set()
    for list_id, prefixes in ((eic_prefix_list_id, eic.ipv4), (eic_ipv6_prefix_list_id, eic.ipv6)):
        if list_id:
            lists.add(list_id)
        else:
            cidrs.update(str(p) for p in prefixes)
    return RuleSet(frozenset(cidrs), frozenset(lists))


def _is_ssh_only(permission: IngressPermission) -> bool:
    return permission.protocol in ("tcp", "6") and permission.from_port == SSH_PORT and permission.to_port == SSH_PORT


def current_rules(group: SecurityGroup | None) -> RuleSet:
    """The TCP 22 sources a managed group already has (any description: a rule we would add is there)."""
    if group is None:
        return RuleSet()
    cidrs: set[str] = set()
    lists: set[str] = set()
    for permission in group.ingress:
        if _is_ssh_only(permission):
            cidrs.update(str(ipaddress.ip_network(c, strict=False)) for c in permission.ipv4_ranges)
            cidrs.update(str(ipaddress.ip_network(c, strict=False)) for c in permission.ipv6_ranges)
            lists.update(permission.prefix_list_ids)
    return RuleSet(frozenset(cidrs), frozenset(lists))


def owned_rules(group: SecurityGroup | None, region: str) -> RuleSet:
    """The TCP 22 rules eic-guard created (its description), the only ones it may ever revoke."""
    if group is None:
        return RuleSet()
    description = rule_description(region)
    cidrs: set[str] = set()
    lists: set[str] = set()
    for permission in group.ingress:
        if not _is_ssh_only(permission):
            continue
        sources = (*permission.ipv4_ranges, *permission.ipv6_ranges, *permission.prefix_list_ids)
        for source, desc in zip(sources, permission.descriptions, strict=False):
            if desc == description:
                (lists if source.startswith("pl-") else cidrs).add(source)
    return RuleSet(frozenset(cidrs), frozenset(lists))
