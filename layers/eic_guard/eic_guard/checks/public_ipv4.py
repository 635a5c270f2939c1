"""public-ipv4: EIC's browser terminal reaches the instance on a public IPv4 address."""

from __future__ import annotations

from ..models import CheckResult, Fix, Instance
from ..settings import PUBLIC_IP_TAG
from .base import CheckContext, not_applicable, passed
from .connect_path import PUBLIC, connect_path, elsewhere

ID = "public-ipv4"
TITLE = "The instance has a public IPv4 address (EC2 Instance Connect's browser terminal connects to it)"
PERMISSIONS = ("ec2:DescribeInstances", "ec2:DescribeAddresses")
REMEDIATION_PERMISSIONS = (
    "ec2:AllocateAddress",
    "ec2:AssociateAddress",
    "ec2:DisassociateAddress",
    "ec2:ReleaseAddress",
    "ec2:CreateTags",
)
ASSOCIATE_ELASTIC_IP = "associate-elastic-ip"
NO_PUBLIC_IPV4 = "no-public-ipv4"  # the failure kinds
PUBLIC_IP_NOT_ALLOWED = "public-ip-not-allowed"  # RemediatePublicIp on, but the instance lacks the admin's tag


def public_ip_allowed(instance: Instance) -> bool:
    """An admin tagged the instance eic-guard:public-ip=allowed: RemediatePublicIp may give it an Elastic IP."""
    key, value = PUBLIC_IP_TAG
    return instance.tag(key) == value


def _given_by_eic_guard(instance: Instance, ctx: CheckContext) -> bool:
    """The instance's public address is an Elastic IP eic-guard allocated (tagged ManagedBy=eic-guard)."""
    enis = {n.eni_id for n in instance.network_interfaces}
    return any(
        a.instance_id == instance.instance_id or a.network_interface_id in enis for a in ctx.snapshot.managed_addresses
    )


def evaluate(instance: Instance, ctx: CheckContext) -> CheckResult:
    if (path := connect_path(instance, ctx)) != PUBLIC:
        return elsewhere(path)
    if instance.state in ("stopped", "stopping"):
        return not_applicable("instance is stopped: an auto-assigned public address exists only while it runs")
    address = instance.public_ipv4
    allowed = public_ip_allowed(instance)
    if address and ctx.settings.remediate_public_ip and not allowed and _given_by_eic_guard(instance, ctx):
        # eic-guard's Elastic IP, given because of a tag that is gone: the scan releases it (engine.py).
        return CheckResult(
            "fail",
            f"public IPv4 {address} is eic-guard's Elastic IP, released because the instance no longer carries the "
            f"admin-only tag {PUBLIC_IP_TAG[0]}={PUBLIC_IP_TAG[1]}",
            kind=PUBLIC_IP_NOT_ALLOWED,
            facts=(("instance_id", instance.instance_id), ("remediate_public_ip", "true")),
        )
    if address:
        return passed(f"public IPv4 {address}")
    fix = None
    eni = instance.primary_eni
    if ctx.settings.remediate_public_ip and eni is not None and allowed:
        fix = Fix(
            ASSOCIATE_ELASTIC_IP,
            eni.eni_id,
            f"allocate an Elastic IP tagged ManagedBy=eic-guard and associate it to {eni.eni_id}",
            (("eni_id", eni.eni_id), ("instance_id", instance.instance_id)),
        )
    facts = [
        ("instance_id", instance.instance_id),
        ("remediate_public_ip", str(ctx.settings.remediate_public_ip).lower()),
    ]
    if eni is not None:
        facts.append(("eni_id", eni.eni_id))
    reason, kind = "no public IPv4 address on any network interface", NO_PUBLIC_IPV4
    if ctx.settings.remediate_public_ip and not allowed:
        reason += f" (no Elastic IP without the admin-only tag {PUBLIC_IP_TAG[0]}={PUBLIC_IP_TAG[1]})"
        kind = PUBLIC_IP_NOT_ALLOWED
    return CheckResult("fail", reason, fix, kind=kind, facts=tuple(facts))


def remediate(fix: Fix, instance: Instance, remediator, actions: list) -> None:
    """Opt-in: allocate a tagged Elastic IP and associate it to the primary ENI."""
    actions.append(remediator.gateway.associate_elastic_ip(fix.param("eni_id")))
