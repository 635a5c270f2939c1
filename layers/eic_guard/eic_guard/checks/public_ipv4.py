"""public-ipv4: EIC's browser terminal reaches the instance on a public IPv4 address."""

from __future__ import annotations

from ..models import CheckResult, Fix, Instance
from .base import CheckContext, not_applicable, passed

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
NO_PUBLIC_IPV4 = "no-public-ipv4"  # the failure kind


def evaluate(instance: Instance, ctx: CheckContext) -> CheckResult:
    if instance.state in ("stopped", "stopping"):
        return not_applicable("instance is stopped: an auto-assigned public address exists only while it runs")
    address = instance.public_ipv4
    if address:
        return passed(f"public IPv4 {address}")
    fix = None
    eni = instance.primary_eni
    if ctx.settings.remediate_public_ip and eni is not None:
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
    return CheckResult(
        "fail", "no public IPv4 address on any network interface", fix, kind=NO_PUBLIC_IPV4, facts=tuple(facts)
    )


def remediate(fix: Fix, instance: Instance, remediator, actions: list) -> None:
    """Opt-in: allocate a tagged Elastic IP and associate it to the primary ENI."""
    actions.append(remediator.gateway.associate_elastic_ip(fix.param("eni_id")))
