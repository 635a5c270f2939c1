"""internet-route: the subnet routes 0.0.0.0/0 to an internet gateway, so EIC's service can reach it.

A failure carries the route table and, when another table of the VPC routes to one, the VPC's internet gateway
(`igw_id`): the guidance can then name the exact route to add. The snapshot holds route tables, not gateways, so a
VPC none of whose tables uses a gateway may still have one attached: the guidance says "attach one if it has none".
"""

from __future__ import annotations

from ..models import CheckResult, Instance, RouteTable
from .base import CheckContext, passed
from .connect_path import PUBLIC, connect_path, elsewhere

ID = "internet-route"
TITLE = "The subnet routes 0.0.0.0/0 to an internet gateway"
PERMISSIONS = ("ec2:DescribeRouteTables",)
REMEDIATION_PERMISSIONS: tuple[str, ...] = ()

# Failure kinds (CheckResult.kind).
NO_ROUTE_TABLE = "no-route-table"
NO_DEFAULT_ROUTE = "no-default-route"
ROUTE_NOT_IGW = "route-not-igw"
ROUTE_NOT_ACTIVE = "route-not-active"


def evaluate(instance: Instance, ctx: CheckContext) -> CheckResult:
    if (path := connect_path(instance, ctx)) != PUBLIC:
        return elsewhere(path)
    subnet_id = instance.connect_subnet_id
    table = ctx.snapshot.route_table_for(instance.vpc_id, subnet_id)
    if table is None:
        facts = (("subnet_id", subnet_id or "unknown"), ("vpc_id", instance.vpc_id or "unknown"))
        return CheckResult("fail", f"no route table found for subnet {subnet_id}", kind=NO_ROUTE_TABLE, facts=facts)
    association = "main" if table.main and subnet_id not in table.subnet_ids else "explicit"
    default = next((r for r in table.routes if r.destination == "0.0.0.0/0"), None)
    name = f"{table.route_table_id} ({association})"
    if default is None:
        return _failed(f"{name} has no 0.0.0.0/0 route", NO_DEFAULT_ROUTE, table, association, ctx)
    target = (("target", default.gateway_id),) if default.gateway_id else ()
    if not (default.gateway_id or "").startswith("igw-"):
        reason = f"{name} sends 0.0.0.0/0 to {default.gateway_id}, not an internet gateway"
        return _failed(reason, ROUTE_NOT_IGW, table, association, ctx, target)
    if default.state != "active":
        reason = f"{name} route 0.0.0.0/0 -> {default.gateway_id} is {default.state}"
        return _failed(reason, ROUTE_NOT_ACTIVE, table, association, ctx, (*target, ("state", default.state)))
    return passed(f"{name} 0.0.0.0/0 -> {default.gateway_id}")


def _failed(
    reason: str, kind: str, table: RouteTable, association: str, ctx: CheckContext, facts: tuple = ()
) -> CheckResult:
    found = [("route_table_id", table.route_table_id), ("association", association), ("vpc_id", table.vpc_id)]
    igw_id = vpc_internet_gateway(table.vpc_id, ctx)
    if igw_id:
        found.append(("igw_id", igw_id))
    return CheckResult("fail", reason, kind=kind, facts=(*found, *facts))


def vpc_internet_gateway(vpc_id: str, ctx: CheckContext) -> str | None:
    """The internet gateway an active route of the VPC's tables uses (a VPC has at most one attached), else None."""
    key = (ID, "igw", vpc_id)
    if key not in ctx.memo:
        ctx.memo[key] = next(
            (
                route.gateway_id
                for table in ctx.snapshot.route_tables
                if table.vpc_id == vpc_id
                for route in table.routes
                if (route.gateway_id or "").startswith("igw-") and route.state == "active"
            ),
            None,
        )
    return ctx.memo[key]


def remediate(fix, instance, remediator, actions) -> None:  # pragma: no cover - never asked: no Fix is returned
    raise NotImplementedError(f"{ID} cannot be remediated in place")
