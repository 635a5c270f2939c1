"""network-acl: the subnet's NACL lets TCP 22 in from the EIC prefixes and the replies (1024-65535) out."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..models import CheckResult, Instance, IPNetwork, NaclEntry, NetworkAcl
from . import endpoint_present
from .base import CheckContext, passed, ranges_unavailable
from .connect_path import ENDPOINT, connect_path
from .endpoint_present import planned_subnet

ID = "network-acl"
TITLE = "The subnet's network ACL allows TCP 22 in from the EC2 Instance Connect prefixes and the replies out"
PERMISSIONS = ("ec2:DescribeNetworkAcls",)
REMEDIATION_PERMISSIONS: tuple[str, ...] = ()
# On the endpoint path it may pass on the strength of the endpoint eic-guard creates (in the instance's own subnet):
# that pass (fact `planned`) holds only while endpoint-present is passing, fixed or planned; after a failed or refused
# creation it becomes `unplanned(...)`, a failure (engine.py).
NEEDS = (endpoint_present.ID,)
SSH = (22, 22)
EPHEMERAL = (1024, 65535)

Box = tuple[IPNetwork, int, int]  # addresses x ports still undecided
DEFAULT_RULE = 32767  # the `*` rules: 32767 (IPv4) and 32768 (IPv6), always last, always deny
LAST_RULE = 32766  # the highest number a person can give a rule

# Failure kinds (CheckResult.kind).
NO_NACL = "no-nacl"
NO_EIC_PREFIX = "no-eic-prefix"
ENDPOINT_UNKNOWN = "nacl-endpoint-unknown"  # the endpoint path, before the endpoint (or its address) exists


@dataclass(frozen=True)
class Denial:
    """The first rule that denies part of the traffic, and that part."""

    rule_number: int | None  # None: no rule matched the part at all (the implicit deny)
    network: IPNetwork
    low: int
    high: int

    @property
    def default(self) -> bool:
        """Denied by the `*` rule (or by no rule): any allow rule before it lets the traffic through."""
        return self.rule_number is None or self.rule_number >= DEFAULT_RULE

    def __str__(self) -> str:
        if self.rule_number is None:
            return f"no rule allows {_describe(self.network, self.low, self.high)} (default deny)"
        return f"rule {self.rule_number} denies {_describe(self.network, self.low, self.high)}"


def first_match_verdict(
    entries: tuple[NaclEntry, ...], egress: bool, prefix: IPNetwork, ports: tuple[int, int]
) -> str | None:
    """Why the traffic is denied (rules in number order, first match wins), or None if all of it is allowed."""
    denial = first_denial(entries, egress, prefix, ports)
    return str(denial) if denial else None


def first_denial(
    entries: tuple[NaclEntry, ...], egress: bool, prefix: IPNetwork, ports: tuple[int, int]
) -> Denial | None:
    """Evaluate rules in number order, first match wins; return the first denial, or None if all is allowed.

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
                return Denial(rule.rule_number, net, o_lo, o_hi)
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
    return Denial(None, net, lo, hi)


def free_rule_before(entries: tuple[NaclEntry, ...], egress: bool, denial: Denial) -> int | None:
    """A free rule number for the allow rule that lets the traffic through: it must come before the denying rule.

    Before an explicit deny: the closest free number below it (None when there is none). Before the `*` rule: every
    numbered rule before it let the traffic pass or did not match, so any free number works; the next round ten
    after the last numbered rule reads best.
    """
    used = {e.rule_number for e in entries if e.egress == egress}
    if not denial.default:
        return next((n for n in range(denial.rule_number - 1, 0, -1) if n not in used), None)
    last = max((n for n in used if n <= LAST_RULE), default=0)
    after = (last // 10 + 1) * 10 if last else 100
    if after <= LAST_RULE and after not in used:
        return after
    return next((n for n in range(LAST_RULE, 0, -1) if n not in used), None)


def _describe(net: IPNetwork, lo: int, hi: int) -> str:
    return f"{net} port {lo}" if lo == hi else f"{net} ports {lo}-{hi}"


def evaluate(instance: Instance, ctx: CheckContext) -> CheckResult:
    if connect_path(instance, ctx) == ENDPOINT:
        return _evaluate_endpoint_path(instance, ctx)
    subnet_id, has_ipv6 = instance.connect_subnet_id, instance.connect_has_ipv6
    key = (ID, subnet_id, has_ipv6)  # the result depends on nothing else: instances of a subnet share it
    result = ctx.memo.get(key)
    if result is None:
        result = ctx.memo[key] = _evaluate_subnet(subnet_id, has_ipv6, ctx)
    return result


def _evaluate_subnet(subnet_id: str | None, has_ipv6: bool, ctx: CheckContext) -> CheckResult:
    if ctx.eic.unavailable:
        # Missing ranges say nothing about the ACL: an error naming why, never a failure blaming AWS's publication.
        return ranges_unavailable(ctx.eic)
    nacl = ctx.snapshot.network_acl_for(subnet_id)
    if nacl is None:
        reason = f"no network ACL found for subnet {subnet_id}"
        return CheckResult("fail", reason, kind=NO_NACL, facts=(("subnet_id", subnet_id or "unknown"),))
    prefixes = ctx.eic.ipv4 + (ctx.eic.ipv6 if has_ipv6 else ())
    if not prefixes:
        reason = f"no EC2_INSTANCE_CONNECT prefix is published for {ctx.eic.region}"
        return CheckResult("fail", reason, kind=NO_EIC_PREFIX, facts=(("region", ctx.eic.region),))
    for prefix in prefixes:
        inbound = first_denial(nacl.entries, False, prefix, SSH)
        outbound = first_denial(nacl.entries, True, prefix, EPHEMERAL)
        if inbound or outbound:
            return _denied(nacl, prefix, inbound, outbound)
    return passed(f"{nacl.nacl_id} allows TCP 22 in and 1024-65535 out for the EIC prefixes")


def _denied(nacl: NetworkAcl, prefix: IPNetwork, inbound: Denial | None, outbound: Denial | None) -> CheckResult:
    """The failure, with what the guidance needs to name both allow rules and where they go."""
    facts = [("nacl_id", nacl.nacl_id), ("prefix", str(prefix))]
    for direction, egress, denial in (("in", False, inbound), ("out", True, outbound)):
        if denial is None:
            continue
        facts.append((f"{direction}_rule", "*" if denial.default else str(denial.rule_number)))
        free = free_rule_before(nacl.entries, egress, denial)
        if free is not None:
            facts.append((f"{direction}_free", str(free)))
    first, direction = (inbound, "inbound") if inbound else (outbound, "outbound")
    kind = f"nacl-{direction}-{'default-deny' if first.default else 'deny'}"
    return CheckResult("fail", f"{nacl.nacl_id} {direction}: {first}", kind=kind, facts=tuple(facts))


def _evaluate_endpoint_path(instance: Instance, ctx: CheckContext) -> CheckResult:
    """Between the VPC's endpoint and the instance: the instance subnet's NACL lets TCP 22 in from the endpoint's
    address and 1024-65535 out to it; when the endpoint sits in another subnet, that subnet's NACL lets TCP 22 out
    to the instance and the replies in. Traffic within one subnet crosses no network ACL."""
    subnet_id = instance.connect_subnet_id
    endpoint = ctx.snapshot.endpoint_for(instance.vpc_id)
    if endpoint is None:
        vpc_id = instance.vpc_id or ""
        if endpoint_present.creates_endpoint(vpc_id, ctx) and subnet_id and subnet_id == planned_subnet(vpc_id, ctx):
            reason = f"the endpoint eic-guard creates will be in {subnet_id}: no network ACL between them"
            facts = (("vpc_id", vpc_id), ("subnet_id", subnet_id), ("planned", "true"))
            return CheckResult("pass", reason, facts=facts)
        reason = f"no EC2 Instance Connect Endpoint in {instance.vpc_id}: the network ACLs are checked once it exists"
        return CheckResult("fail", reason, kind=ENDPOINT_UNKNOWN, facts=(("vpc_id", vpc_id),))
    if endpoint.subnet_id == subnet_id:
        return passed(f"{endpoint.endpoint_id} is in the instance's subnet {subnet_id}: no network ACL between them")
    if not endpoint.address or not instance.private_ip:
        missing = (
            f"{endpoint.endpoint_id} has no address yet" if not endpoint.address else "the instance has no address"
        )
        return CheckResult("fail", missing, kind=ENDPOINT_UNKNOWN, facts=(("endpoint_id", endpoint.endpoint_id),))
    endpoint_net = ipaddress.ip_network(f"{endpoint.address}/32")
    instance_net = ipaddress.ip_network(f"{instance.private_ip}/32")
    legs = (
        (subnet_id, False, endpoint_net, SSH, "inbound", "instance"),
        (subnet_id, True, endpoint_net, EPHEMERAL, "outbound", "instance"),
        (endpoint.subnet_id, True, instance_net, SSH, "outbound", "endpoint"),
        (endpoint.subnet_id, False, instance_net, EPHEMERAL, "inbound", "endpoint"),
    )
    for leg_subnet, egress, peer, ports, direction, side in legs:
        nacl = ctx.snapshot.network_acl_for(leg_subnet)
        if nacl is None:
            reason = f"no network ACL found for subnet {leg_subnet}"
            return CheckResult("fail", reason, kind=NO_NACL, facts=(("subnet_id", leg_subnet or "unknown"),))
        denial = first_denial(nacl.entries, egress, peer, ports)
        if denial is None:
            continue
        facts = [
            ("nacl_id", nacl.nacl_id),
            ("subnet_id", leg_subnet or ""),
            ("prefix", str(peer)),
            ("side", side),
            (f"{'out' if egress else 'in'}_rule", "*" if denial.default else str(denial.rule_number)),
        ]
        free = free_rule_before(nacl.entries, egress, denial)
        if free is not None:
            facts.append((f"{'out' if egress else 'in'}_free", str(free)))
        kind = f"nacl-endpoint-{direction}-{'default-deny' if denial.default else 'deny'}"
        where = "the instance's subnet" if side == "instance" else f"the endpoint {endpoint.endpoint_id}'s subnet"
        return CheckResult("fail", f"{nacl.nacl_id} ({where}) {direction}: {denial}", kind=kind, facts=tuple(facts))
    return passed(
        f"the network ACLs of {subnet_id} and {endpoint.subnet_id} allow TCP 22 from {endpoint.address} to "
        f"{instance.private_ip} and the replies"
    )


def unplanned(result: CheckResult, waiting: str) -> CheckResult:
    """The pass about the endpoint eic-guard creates, once that endpoint was not created in this run (`waiting`, e.g.
    "endpoint-present is error": its creation failed or was refused): no endpoint, no network path to check yet."""
    vpc_id, subnet_id = result.fact("vpc_id") or "", result.fact("subnet_id") or ""
    reason = (
        f"no EC2 Instance Connect Endpoint in {vpc_id}: the one eic-guard was to create in {subnet_id} was not "
        f"created ({waiting}); the network ACLs are checked once it exists"
    )
    return CheckResult("fail", reason, kind=ENDPOINT_UNKNOWN, facts=(("vpc_id", vpc_id), ("subnet_id", subnet_id)))


def remediate(fix, instance, remediator, actions) -> None:  # pragma: no cover - never asked: no Fix is returned
    raise NotImplementedError(f"{ID} cannot be remediated in place")
