"""internet-route: the subnet routes 0.0.0.0/0 to an internet gateway, so EIC's service can reach it."""

from __future__ import annotations

from ..models import CheckResult, Instance
from .base import CheckContext, failed, passed

ID = "internet-route"
PERMISSIONS = ("ec2:DescribeRouteTables",)
REMEDIATION_PERMISSIONS: tuple[str, ...] = ()


def evaluate(instance: Instance, ctx: CheckContext) -> CheckResult:
    subnet_id = instance.connect_subnet_id
    table = ctx.snapshot.route_table_for(instance.vpc_id, subnet_id)
    if table is None:
        return failed(f"no route table found for subnet {subnet_id}")
    kind = "main" if table.main and subnet_id not in table.subnet_ids else "explicit"
    default = next((r for r in table.routes if r.destination == "0.0.0.0/0"), None)
    if default is None:
        return failed(f"{table.route_table_id} ({kind}) has no 0.0.0.0/0 route")
    if not (default.gateway_id or "").startswith("igw-"):
        return failed(
            f"{table.route_table_id} ({kind}) sends 0.0.0.0/0 to {default.gateway_id}, not an internet gateway"
        )
    if default.state != "active":
        return failed(f"{table.route_table_id} ({kind}) route 0.0.0.0/0 -> {default.gateway_id} is {default.state}")
    return passed(f"{table.route_table_id} ({kind}) 0.0.0.0/0 -> {default.gateway_id}")


def remediate(fix, instance, remediator, actions) -> None:  # pragma: no cover - never asked: no Fix is returned
    raise NotImplementedError(f"{ID} cannot be remediated in place")
