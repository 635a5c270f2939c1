"""eic-ssh-ingress: the connect ENI's security groups allow TCP 22 from every EIC prefix of the region.

A failing reason names what was found near the mark (a rule from the EIC range on another port or protocol, TCP 22
from another source), so a person sees at once why their rule does not count. Whatever the status, a source that
lets far more than EIC in (TCP 22 from the whole internet, or from a range strictly wider than an EIC prefix it
contains) becomes a warning (docs/architecture.md §5b): `ssh-open-to-internet` / `ssh-wider-than-eic`, `<code>: <text>`
with a text that only changes when the rules do (alerts dedupe on it; Security Hub names the finding `warning:<code>`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from ..models import CheckResult, Fix, IngressPermission, Instance, IPNetwork
from .base import CheckContext, ranges_unavailable
from .connect_path import PUBLIC, connect_path, elsewhere

ID = "eic-ssh-ingress"
TITLE = "The instance's security groups allow TCP 22 from every EC2 Instance Connect prefix of its region"
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
SHOWN_FINDINGS = 3  # near misses named in a failing reason; the rest are counted

# Failure kinds (CheckResult.kind) and warning codes.
NO_EIC_PREFIX = "no-eic-prefix"
NO_INTERFACE = "no-interface"
SSH_NOT_ALLOWED = "ssh-not-allowed"
OPEN_TO_INTERNET = "ssh-open-to-internet"
WIDER_THAN_EIC = "ssh-wider-than-eic"

_PROTOCOLS = {"tcp": "TCP", "6": "TCP", "udp": "UDP", "17": "UDP", "icmp": "ICMP", "1": "ICMP"}
_PROTOCOLS |= {"icmpv6": "ICMPv6", "58": "ICMPv6"}


@dataclass(frozen=True)
class Source:
    """One network a rule of a group lets traffic in from; `label` is how a person finds it in the console."""

    network: IPNetwork
    group_id: str
    label: str  # "18.206.0.0/16", or "0.0.0.0/0 (in pl-0abc)" for a prefix-list entry


@dataclass(frozen=True)
class Coverage:
    """What one set of groups does for one address family mix: computed once per combination in a target."""

    missing: tuple[IPNetwork, ...]
    found: tuple[str, ...]  # near misses, most telling first
    passing: CheckResult | None


def ssh_sources(group_ids: tuple[str, ...], ctx: CheckContext) -> list[IPNetwork]:
    """Every network the groups allow TCP 22 from, prefix-list entries included."""
    return [s.network for s in _ssh_sources(group_ids, ctx)]


def _ssh_sources(group_ids: tuple[str, ...], ctx: CheckContext) -> tuple[Source, ...]:
    key = (ID, "sources", group_ids)
    known = ctx.memo.get(key)
    if known is None:
        known = ctx.memo[key] = tuple(
            source
            for group_id, permission in _permissions(group_ids, ctx)
            if permission.allows_tcp_port(SSH_PORT)
            for source in _sources(group_id, permission, ctx)
        )
    return known


def _permissions(group_ids: tuple[str, ...], ctx: CheckContext) -> Iterator[tuple[str, IngressPermission]]:
    for group_id in group_ids:
        group = ctx.snapshot.security_groups.get(group_id)
        if group is not None:
            yield from ((group_id, permission) for permission in group.ingress)


def _sources(group_id: str, permission: IngressPermission, ctx: CheckContext) -> Iterator[Source]:
    for cidr in (*permission.ipv4_ranges, *permission.ipv6_ranges):
        yield Source(ipaddress.ip_network(cidr, strict=False), group_id, cidr)
    for list_id in permission.prefix_list_ids:
        for cidr in ctx.snapshot.prefix_lists.get(list_id, ()):
            yield Source(ipaddress.ip_network(cidr, strict=False), group_id, f"{cidr} (in {list_id})")


def uncovered(required: tuple[IPNetwork, ...], sources: list[IPNetwork]) -> list[IPNetwork]:
    """The required prefixes no source (alone or merged with adjacent ones) contains."""
    merged = {
        4: list(ipaddress.collapse_addresses(s for s in sources if s.version == 4)),
        6: list(ipaddress.collapse_addresses(s for s in sources if s.version == 6)),
    }
    return [p for p in required if not any(p.subnet_of(m) for m in merged[p.version])]


def evaluate(instance: Instance, ctx: CheckContext) -> CheckResult:
    if (path := connect_path(instance, ctx)) != PUBLIC:
        return elsewhere(path)
    eni = instance.connect_eni()
    group_ids = eni.group_ids if eni else instance.instance_group_ids
    warnings = _warnings(group_ids, ctx)
    if ctx.eic.unavailable:
        return ranges_unavailable(ctx.eic, warnings)
    if not ctx.eic.ipv4:
        return CheckResult(
            "fail",
            f"no EC2_INSTANCE_CONNECT IPv4 prefix is published for {ctx.eic.region}",
            kind=NO_EIC_PREFIX,
            facts=(("region", ctx.eic.region),),
            warnings=warnings,
        )
    coverage = _coverage(group_ids, instance.connect_has_ipv6, ctx)
    if coverage.passing is not None:
        return coverage.passing
    missing = ", ".join(str(p) for p in coverage.missing)
    facts = [("missing", missing), ("group_ids", ",".join(group_ids))]
    if eni is None or instance.vpc_id is None:
        reason = f"TCP 22 not allowed from {missing} (no network interface to attach a group to)"
        reason = _with_findings(reason, coverage)
        return CheckResult("fail", reason, kind=NO_INTERFACE, facts=tuple(facts), warnings=warnings)
    facts += [("eni_id", eni.eni_id), ("vpc_id", instance.vpc_id)]
    if ctx.snapshot.eic_prefix_list_id:
        facts.append(("prefix_list", ctx.snapshot.eic_prefix_list_id))
    fix = Fix(
        ATTACH_MANAGED_GROUP,
        eni.eni_id,
        f"attach eic-guard-ssh to {eni.eni_id} keeping {', '.join(group_ids) or 'no groups'}",
        (("eni_id", eni.eni_id), ("vpc_id", instance.vpc_id), ("group_ids", ",".join(group_ids))),
    )
    reason = _with_findings(f"TCP 22 not allowed from {missing}", coverage)
    return CheckResult("fail", reason, fix, kind=SSH_NOT_ALLOWED, facts=tuple(facts), warnings=warnings)


def _with_findings(reason: str, coverage: Coverage) -> str:
    found = coverage.found
    if not found:
        return reason
    more = f", and {len(found) - SHOWN_FINDINGS} more" if len(found) > SHOWN_FINDINGS else ""
    return f"{reason}; found: {', '.join(found[:SHOWN_FINDINGS])}{more}"


def _coverage(group_ids: tuple[str, ...], has_ipv6: bool, ctx: CheckContext) -> Coverage:
    """The required prefixes the groups do not cover, what comes close, and the passing result when none is missing.

    Depends only on the group set and the address families within one target: computed once per combination.
    """
    key = (ID, group_ids, has_ipv6)
    known = ctx.memo.get(key)
    if known is None:
        required = ctx.eic.ipv4 + (ctx.eic.ipv6 if has_ipv6 else ())
        missing = tuple(uncovered(required, ssh_sources(group_ids, ctx)))
        if missing:
            known = Coverage(missing, _near_misses(group_ids, missing, ctx), None)
        else:
            reason = f"TCP 22 allowed from {', '.join(str(p) for p in required)}"
            known = Coverage((), (), CheckResult("pass", reason, warnings=_warnings(group_ids, ctx)))
        ctx.memo[key] = known
    return known


def _near_misses(group_ids: tuple[str, ...], missing: tuple[IPNetwork, ...], ctx: CheckContext) -> tuple[str, ...]:
    """Rules that almost let EIC in: from the EIC range but not TCP 22, or TCP 22 from a source not covering it.

    Ranked so that a rule aimed at the EIC range shows before a broad one (a web group's HTTPS from 0.0.0.0/0 is
    technically "from the EIC range" too, and says little).
    """
    ranked: list[tuple[bool, int, str]] = []
    for group_id, permission in _permissions(group_ids, ctx):
        ssh = permission.allows_tcp_port(SSH_PORT)
        what = "TCP 22" if ssh else describe_rule(permission)
        for source in _sources(group_id, permission, ctx):
            same_family = [p for p in missing if p.version == source.network.version]
            near = (
                any(not p.subnet_of(source.network) for p in same_family)
                if ssh
                else any(p.overlaps(source.network) for p in same_family)
            )
            if near:
                ranked.append((source.network in _OPEN, len(ranked), f"{what} from {source.label} in {group_id}"))
        for list_id in permission.prefix_list_ids:
            if ssh and not ctx.snapshot.prefix_lists.get(list_id):
                ranked.append((False, len(ranked), f"TCP 22 from {list_id} (entries unknown) in {group_id}"))
        if ssh:
            ranked.extend((False, len(ranked), f"TCP 22 from {ref} in {group_id}") for ref in permission.group_refs)
    return tuple(dict.fromkeys(text for _, _, text in sorted(ranked)))


def describe_rule(permission: IngressPermission) -> str:
    """A rule's protocol and ports as the console shows them: "TCP 2222", "UDP 22", "TCP 0-21", "all traffic"."""
    if permission.protocol == "-1":
        return "all traffic"
    name = _PROTOCOLS.get(permission.protocol.lower(), f"protocol {permission.protocol}")
    if name not in ("TCP", "UDP"):
        return name
    low, high = permission.from_port, permission.to_port
    if low is None or high is None:
        return f"{name} all ports"
    return f"{name} {low}" if low == high else f"{name} {low}-{high}"


def _warnings(group_ids: tuple[str, ...], ctx: CheckContext) -> tuple[str, ...]:
    """`ssh-open-to-internet` and `ssh-wider-than-eic` for the groups' TCP 22 sources (one of each at most)."""
    key = (ID, "warnings", group_ids)
    known = ctx.memo.get(key)
    if known is None:
        open_, wider = _GroupSources(), _GroupSources()
        contained: list[IPNetwork] = []
        for source in _ssh_sources(group_ids, ctx):
            if source.network in _OPEN:
                open_.add(source)
                continue
            inside = [p for p in ctx.eic.all if p.version == source.network.version and p.subnet_of(source.network)]
            if any(p != source.network for p in inside):
                wider.add(source)
                contained.extend(p for p in inside if p not in contained)
        found = []
        if open_:
            families = {s.network.version for s in open_.sources}
            needs = [p for p in ctx.eic.all if p.version in families]
            found.append(f"{OPEN_TO_INTERNET}: {open_} (the whole internet){_eic_needs(needs)}")
        if wider:
            found.append(f"{WIDER_THAN_EIC}: {wider}{_eic_needs(contained)}")
        known = ctx.memo[key] = tuple(found)
    return known


def _eic_needs(prefixes: list[IPNetwork]) -> str:
    return f"; EIC needs only {', '.join(str(p) for p in prefixes)}" if prefixes else ""


class _GroupSources:
    """Sources grouped by security group, in the order met: "sg-0a allows TCP 22 from X and Y, sg-0b allows ..."."""

    def __init__(self) -> None:
        self.sources: list[Source] = []

    def add(self, source: Source) -> None:
        if all(s.label != source.label or s.group_id != source.group_id for s in self.sources):
            self.sources.append(source)

    def __bool__(self) -> bool:
        return bool(self.sources)

    def __str__(self) -> str:
        by_group: dict[str, list[str]] = {}
        for source in self.sources:
            by_group.setdefault(source.group_id, []).append(source.label)
        return ", ".join(f"{group} allows TCP 22 from {' and '.join(labels)}" for group, labels in by_group.items())


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
