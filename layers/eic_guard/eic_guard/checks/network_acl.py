"""network-acl: the subnet's NACL lets TCP 22 in from the EIC prefixes and the replies (1024-65535) out."""

from __future__ import annotations

import ipaddress

from ..models import CheckResult, Instance, IPNetwork, NaclEntry
from .base import CheckContext, failed, passed

ID = "network-acl"
PERMISSIONS = ("ec2:DescribeNetworkAcls",)
REMEDIATION_PERMISSIONS: tuple[str, ...] = ()
SSH = (22, 22)
EPHEMERAL = (1024, 65535)

Box = tuple[IPNetwork, int, int]  # addresses x ports still undecided


def first_match_verdict(
    entries: tuple[NaclEntry, ...], egress: bool, prefix: IPNetwork, ports: tuple[int, int]
) -> str | None:
    """Evaluate rules in number order, first match wins; return why traffic is denied, or None if all allowed.

    Traffic is a box of addresses x ports; a rule decides the part it matches and the rest falls through.
    """
    pending: list[Box] = [(prefix, *ports)]
    for rule in sorted((e for e in entries if e.egress == egress), key=lambda e: e.rule_number):
        cidr = ipaddress.ip_network(rule.cidr, strict=False) if rule.cidr else None
        if rule.protocol not in ("-1", "6") or cidr is None or cidr.version != prefix.version:
            continue
        whole = rule.protocol == "-1" or rule.port_from is None
        r_lo, r_hi = (0, 65535) if whole else (rule.port_from, rule.port_to)
        still: list[Box] = []
        for net, lo, hi in pending:
            o_lo, o_hi = max(lo, r_lo), min(hi, r_hi)
            if o_lo > o_hi or not net.overlaps(cidr):
                still.append((net, lo, hi))
                continue
            if not rule.allow:
                return f"rule {rule.rule_number} denies {_describe(net, o_lo, o_hi)}"
            inside = net if net.subnet_of(cidr) else cidr
            still.extend((part, lo, hi) for part in (net.address_exclude(cidr) if inside is cidr else ()))
            if lo < o_lo:
                still.append((inside, lo, o_lo - 1))
            if o_hi < hi:
                still.append((inside, o_hi + 1, hi))
        pending = still
        if not pending:
            return None
    net, lo, hi = pending[0]
    return f"no rule allows {_describe(net, lo, hi)} (default deny)"


def _describe(net: IPNetwork, lo: int, hi: int) -> str:
    return f"{net} port {lo}" if lo == hi else f"{net} ports {lo}-{hi}"


def evaluate(instance: Instance, ctx: CheckContext) -> CheckResult:
    subnet_id, has_ipv6 = instance.connect_subnet_id, instance.connect_has_ipv6
    key = (ID, subnet_id, has_ipv6)  # the result depends on nothing else: instances of a subnet share it
    result = ctx.memo.get(key)
    if result is None:
        result = ctx.memo[key] = _evaluate_subnet(subnet_id, has_ipv6, ctx)
    return result


def _evaluate_subnet(subnet_id: str | None, has_ipv6: bool, ctx: CheckContext) -> CheckResult:
    nacl = ctx.snapshot.network_acl_for(subnet_id)
    if nacl is None:
        return failed(f"no network ACL found for subnet {subnet_id}")
    prefixes = ctx.eic.ipv4 + (ctx.eic.ipv6 if has_ipv6 else ())
    if not prefixes:
        return failed(f"no EC2_INSTANCE_CONNECT prefix is published for {ctx.eic.region}")
    for prefix in prefixes:
        denied = first_match_verdict(nacl.entries, False, prefix, SSH)
        if denied:
            return failed(f"{nacl.nacl_id} inbound: {denied}")
        denied = first_match_verdict(nacl.entries, True, prefix, EPHEMERAL)
        if denied:
            return failed(f"{nacl.nacl_id} outbound: {denied}")
    return passed(f"{nacl.nacl_id} allows TCP 22 in and 1024-65535 out for the EIC prefixes")


def remediate(fix, instance, remediator, actions) -> None:  # pragma: no cover - never asked: no Fix is returned
    raise NotImplementedError(f"{ID} cannot be remediated in place")
