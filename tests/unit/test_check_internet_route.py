"""internet-route: the subnet's table (explicit, else the VPC's main) has an active 0.0.0.0/0 -> igw
(docs/architecture.md §2)."""

from __future__ import annotations

import pytest
from eic_guard.checks import internet_route

from tests.unit.snapshots import SUBNET, VPC, context, instance, route, route_table, snapshot


def evaluate(*tables):
    inst = instance()
    return internet_route.evaluate(inst, context(snapshot(inst, route_tables=tables)))


def test_explicit_table_with_an_igw_route_passes():
    # Given the subnet explicitly associated to a table routing to an IGW, and a main table without one
    explicit = route_table("rtb-0explicit", route(), subnets=(SUBNET,))
    main = route_table("rtb-0main", main=True)

    # When
    result = evaluate(explicit, main)

    # Then
    assert result.status == "pass"
    assert result.reason == "rtb-0explicit (explicit) 0.0.0.0/0 -> igw-0aaa"


def test_main_table_is_used_when_the_subnet_has_no_explicit_association():
    # Given only a main table with an IGW route, and another subnet's table without one
    main = route_table("rtb-0main", route(), main=True)
    other = route_table("rtb-0other", subnets=("subnet-0other",))

    # When
    result = evaluate(other, main)

    # Then
    assert result.status == "pass"
    assert result.reason == "rtb-0main (main) 0.0.0.0/0 -> igw-0aaa"


def test_explicit_table_without_igw_route_fails_even_if_main_has_one():
    # Given an explicit table without a default route, while the main table has an IGW route
    explicit = route_table("rtb-0explicit", subnets=(SUBNET,))
    main = route_table("rtb-0main", route(), main=True)

    # When
    result = evaluate(main, explicit)

    # Then
    assert result.status == "fail"
    assert result.reason == "rtb-0explicit (explicit) has no 0.0.0.0/0 route"


def test_main_table_without_igw_route_fails():
    # Given only a main table with just the local route
    # When
    result = evaluate(route_table("rtb-0main", main=True))

    # Then
    assert result.status == "fail"
    assert result.reason == "rtb-0main (main) has no 0.0.0.0/0 route"


@pytest.mark.parametrize("target", ["nat-0123456789abcdef0", "tgw-0123456789abcdef0", "eigw-0aaa", "pcx-0aaa", None])
def test_default_route_to_anything_but_an_internet_gateway_fails(target):
    # Given 0.0.0.0/0 to a NAT gateway, transit gateway, egress-only IGW, peering or nothing known
    table = route_table("rtb-0main", route(target=target), main=True)

    # When
    result = evaluate(table)

    # Then
    assert result.status == "fail"
    assert f"sends 0.0.0.0/0 to {target}, not an internet gateway" in result.reason


def test_blackhole_igw_route_fails():
    # Given a default route to an IGW that was detached (blackhole)
    table = route_table("rtb-0main", route(state="blackhole"), main=True)

    # When
    result = evaluate(table)

    # Then
    assert result.status == "fail"
    assert result.reason == "rtb-0main (main) route 0.0.0.0/0 -> igw-0aaa is blackhole"


def test_ipv6_default_route_alone_does_not_count():
    # Given only ::/0 to the IGW
    table = route_table("rtb-0main", route("::/0"), main=True)

    # When
    result = evaluate(table)

    # Then
    assert result.status == "fail"


def test_another_vpcs_main_table_does_not_apply():
    # Given a main table with an IGW route, but in another VPC
    table = route_table("rtb-0elsewhere", route(), main=True, vpc_id="vpc-0other")

    # When
    result = evaluate(table)

    # Then
    assert result.status == "fail"
    assert result.reason == f"no route table found for subnet {SUBNET}"


# ---- kinds and facts (what the guidance says) -----------------------------------------------------------------------
def test_a_missing_default_route_names_the_vpcs_internet_gateway_from_another_table():
    # Given the subnet's explicit table without a default route, and another table of the VPC routing to igw-0aaa
    explicit = route_table("rtb-0explicit", subnets=(SUBNET,))
    public = route_table("rtb-0public", route(), subnets=("subnet-0public",))

    # When
    result = evaluate(explicit, public)

    # Then
    assert result.kind == "no-default-route"
    assert dict(result.facts) == {
        "route_table_id": "rtb-0explicit",
        "association": "explicit",
        "vpc_id": VPC,
        "igw_id": "igw-0aaa",
    }


@pytest.mark.parametrize(
    "others",
    [(), (route_table("rtb-0dead", route(state="blackhole"), subnets=("subnet-0x",)),)],
    ids=["no-other-table", "blackhole-elsewhere"],
)
def test_without_an_active_gateway_route_in_the_vpc_no_gateway_is_named(others):
    # When
    result = evaluate(route_table("rtb-0main", main=True), *others)

    # Then
    assert result.kind == "no-default-route"
    assert result.fact("igw_id") is None
    assert result.fact("association") == "main"


def test_a_route_to_a_nat_gateway_names_its_target():
    # When
    result = evaluate(route_table("rtb-0main", route(target="nat-0123456789abcdef0"), main=True))

    # Then
    assert result.kind == "route-not-igw"
    assert result.fact("target") == "nat-0123456789abcdef0"
    assert result.fact("route_table_id") == "rtb-0main"


def test_a_blackhole_route_names_its_state():
    # When
    result = evaluate(route_table("rtb-0main", route(state="blackhole"), main=True))

    # Then
    assert result.kind == "route-not-active"
    assert (result.fact("target"), result.fact("state")) == ("igw-0aaa", "blackhole")


def test_no_route_table_names_the_subnet():
    # When
    result = evaluate(route_table("rtb-0elsewhere", route(), main=True, vpc_id="vpc-0other"))

    # Then
    assert (result.kind, dict(result.facts)) == ("no-route-table", {"subnet_id": SUBNET, "vpc_id": VPC})
