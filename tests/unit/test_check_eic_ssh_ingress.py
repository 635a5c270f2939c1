"""eic-ssh-ingress: TCP 22 from every EIC prefix of the region, on the ENI EIC reaches (DESIGN §2)."""

from __future__ import annotations

import pytest
from eic_guard.checks import eic_ssh_ingress

from tests.unit.snapshots import (
    EIC_V4,
    EIC_V6,
    PRIMARY_ENI,
    VPC,
    context,
    eic_prefixes,
    eni,
    group,
    instance,
    rule,
    snapshot,
)

V4 = str(EIC_V4)
V6 = str(EIC_V6)
EIC_LIST = "pl-0e4bcff02b13bef1e"


def evaluate(inst, *groups, eic=None, prefix_lists=None):
    return eic_ssh_ingress.evaluate(inst, context(snapshot(inst, groups=groups, prefix_lists=prefix_lists), eic))


@pytest.mark.parametrize(
    ("protocol", "ports", "status"),
    [
        ("tcp", (22, 22), "pass"),
        ("tcp", (0, 65535), "pass"),
        ("tcp", (20, 25), "pass"),
        ("tcp", (22, 23), "pass"),
        ("tcp", (2222, 2222), "fail"),
        ("tcp", (23, 80), "fail"),
        ("tcp", (0, 21), "fail"),
        ("-1", None, "pass"),
        ("udp", (22, 22), "fail"),
        ("udp", (0, 65535), "fail"),
        ("icmp", (-1, -1), "fail"),
    ],
)
def test_protocol_and_port_range_must_include_tcp_22(protocol, ports, status):
    # Given a group allowing the EIC prefix on this protocol and port range
    inst = instance()
    sg = group("sg-0ssh", rule(V4, protocol=protocol, ports=ports))

    # When
    result = evaluate(inst, sg)

    # Then
    assert result.status == status


@pytest.mark.parametrize(
    ("cidrs", "status"),
    [
        ((V4,), "pass"),
        (("18.206.0.0/16",), "pass"),
        (("18.206.107.24/30",), "fail"),
        (("18.206.107.28/30",), "fail"),
        (("18.206.107.32/29",), "fail"),
        (("18.206.107.24/30", "18.206.107.28/30"), "pass"),
        (("10.0.0.0/8",), "fail"),
    ],
)
def test_sources_must_cover_the_whole_eic_prefix(cidrs, status):
    # Given a group allowing TCP 22 from these IPv4 ranges
    sg = group("sg-0ssh", rule(*cidrs))

    # When
    result = evaluate(instance(), sg)

    # Then
    assert result.status == status
    if status == "fail":
        assert result.reason == f"TCP 22 not allowed from {V4}"


def test_adjacent_halves_in_two_groups_of_the_same_eni_together_pass():
    # Given each half of the /29 allowed by a different group on the ENI
    inst = instance(groups=("sg-0low", "sg-0high"))
    low = group("sg-0low", rule("18.206.107.24/30"))
    high = group("sg-0high", rule("18.206.107.28/30"))

    # When
    result = evaluate(inst, low, high)

    # Then
    assert result.status == "pass"


def test_a_narrower_half_alone_fails_with_the_missing_prefix_named():
    # Given only the lower /30 of the EIC /29
    sg = group("sg-0ssh", rule("18.206.107.24/30"))

    # When
    result = evaluate(instance(), sg)

    # Then
    assert result.status == "fail"
    assert "18.206.107.24/29" in result.reason


@pytest.mark.parametrize(
    ("entries", "status"),
    [
        ((V4,), "pass"),
        (("18.206.107.24/30", "18.206.107.28/30"), "pass"),
        (("18.206.0.0/16", "3.16.146.0/29"), "pass"),
        (("3.16.146.0/29",), "fail"),
        (("18.206.107.24/30",), "fail"),
        ((), "fail"),
    ],
)
def test_prefix_list_reference_counts_by_its_entries(entries, status):
    # Given a group whose TCP 22 rule references a prefix list with these entries
    sg = group("sg-0ssh", rule(prefix_lists=(EIC_LIST,)))

    # When
    result = evaluate(instance(), sg, prefix_lists={EIC_LIST: entries})

    # Then
    assert result.status == status


def test_prefix_list_with_unknown_entries_does_not_count():
    # Given a reference to a prefix list the snapshot holds no entries for
    sg = group("sg-0ssh", rule(prefix_lists=("pl-0unknown",)))

    # When
    result = evaluate(instance(), sg, prefix_lists={})

    # Then
    assert result.status == "fail"


def test_prefix_list_on_a_udp_rule_does_not_count():
    # Given the right prefix list, but on UDP 22
    sg = group("sg-0ssh", rule(protocol="udp", prefix_lists=(EIC_LIST,)))

    # When
    result = evaluate(instance(), sg, prefix_lists={EIC_LIST: (V4,)})

    # Then
    assert result.status == "fail"


def test_instance_with_ipv6_needs_the_ipv6_prefix_too():
    # Given an instance with an IPv6 address and a group allowing only the IPv4 EIC prefix
    inst = instance(ipv6=("2600:1f18:1234:5600::10",))
    sg = group("sg-0ssh", rule(V4))

    # When
    result = evaluate(inst, sg)

    # Then
    assert result.status == "fail"
    assert result.reason == f"TCP 22 not allowed from {V6}"


def test_instance_with_ipv6_passes_when_both_prefixes_are_allowed():
    # Given an IPv6 instance and a group allowing the IPv4 and IPv6 EIC prefixes in separate rules
    inst = instance(ipv6=("2600:1f18:1234:5600::10",))
    sg = group("sg-0ssh", rule(V4), rule("2600:1f18:6fe3::/48"))

    # When
    result = evaluate(inst, sg)

    # Then
    assert result.status == "pass"


def test_instance_without_ipv6_does_not_need_the_ipv6_prefix():
    # Given an IPv4-only instance and a group allowing only the IPv4 EIC prefix
    sg = group("sg-0ssh", rule(V4))

    # When
    result = evaluate(instance(ipv6=()), sg)

    # Then
    assert result.status == "pass"
    assert V6 not in result.reason


def test_ipv6_source_does_not_cover_the_ipv4_prefix():
    # Given an instance allowed only from ::/0
    sg = group("sg-0ssh", rule("::/0"))

    # When
    result = evaluate(instance(), sg)

    # Then
    assert result.status == "fail"
    assert result.reason == f"TCP 22 not allowed from {V4}"


OPEN = group("sg-0open", rule(V4, V6))
CLOSED = group("sg-0closed", rule("10.0.0.0/8"))


def test_the_eni_carrying_the_public_ip_is_evaluated():
    # Given a closed primary ENI without public IP and an open secondary ENI that carries it
    inst = instance(
        public_ip=None,
        enis=(
            eni(PRIMARY_ENI, 0, groups=("sg-0closed",)),
            eni("eni-0second", 1, groups=("sg-0open",), public_ip="3.3.3.3"),
        ),
    )

    # When
    result = evaluate(inst, OPEN, CLOSED)

    # Then
    assert result.status == "pass"


def test_a_closed_public_eni_fails_and_the_fix_targets_it_even_if_the_primary_is_open():
    # Given an open primary ENI without public IP and a closed secondary ENI that carries it
    inst = instance(
        public_ip=None,
        enis=(
            eni(PRIMARY_ENI, 0, groups=("sg-0open",)),
            eni("eni-0second", 1, groups=("sg-0closed",), public_ip="3.3.3.3"),
        ),
    )

    # When
    result = evaluate(inst, OPEN, CLOSED)

    # Then
    assert result.status == "fail"
    assert result.fix.resource == "eni-0second"
    assert result.fix.param("group_ids") == "sg-0closed"


@pytest.mark.parametrize(("primary_groups", "status"), [(("sg-0open",), "pass"), (("sg-0closed",), "fail")])
def test_without_public_ip_the_primary_eni_by_device_index_is_evaluated(primary_groups, status):
    # Given two ENIs without public IP, the primary (device index 0) listed second
    inst = instance(
        public_ip=None,
        enis=(
            eni("eni-0second", 1, groups=("sg-0open",) if status == "fail" else ("sg-0closed",)),
            eni(PRIMARY_ENI, 0, groups=primary_groups),
        ),
    )

    # When
    result = evaluate(inst, OPEN, CLOSED)

    # Then
    assert result.status == status
    if status == "fail":
        assert result.fix.resource == PRIMARY_ENI


@pytest.mark.parametrize(
    ("instance_groups", "eni_groups", "status"),
    [(("sg-0open",), ("sg-0closed",), "fail"), (("sg-0closed",), ("sg-0open",), "pass")],
)
def test_eni_groups_count_not_the_instance_level_list(instance_groups, eni_groups, status):
    # Given instance-level groups that disagree with the ENI's groups (moto and drift both do this)
    inst = instance(groups=instance_groups, enis=(eni(groups=eni_groups, public_ip="3.3.3.3"),))

    # When
    result = evaluate(inst, OPEN, CLOSED)

    # Then
    assert result.status == status


@pytest.mark.parametrize(("groups", "status"), [(("sg-0open",), "pass"), (("sg-0closed",), "fail")])
def test_without_enis_the_instance_level_groups_are_evaluated_and_no_fix_is_offered(groups, status):
    # Given an instance snapshot with no network interface at all
    inst = instance(groups=groups, enis=())

    # When
    result = evaluate(inst, OPEN, CLOSED)

    # Then
    assert result.status == status
    assert result.fix is None
    if status == "fail":
        assert "no network interface" in result.reason


@pytest.mark.parametrize("cidrs", [("0.0.0.0/0",), ("0.0.0.0/0", "::/0")])
def test_open_to_the_world_passes_but_says_over_permissive(cidrs):
    # Given TCP 22 open to the whole internet
    inst = instance(ipv6=("2600:1f18:1234:5600::10",) if "::/0" in cidrs else ())
    sg = group("sg-0ssh", rule(*cidrs))

    # When
    result = evaluate(inst, sg)

    # Then
    assert result.status == "pass"
    assert result.reason.startswith("over-permissive")


def test_an_exact_eic_rule_passes_without_the_over_permissive_warning():
    # Given the default group (exact EIC prefixes)
    # When
    result = evaluate(instance(), group("sg-0ssh", rule(V4)))

    # Then
    assert result.status == "pass"
    assert "over-permissive" not in result.reason
    assert V4 in result.reason


def test_security_group_references_do_not_count():
    # Given TCP 22 allowed only from another group, which itself allows the EIC prefix
    inst = instance(groups=("sg-0app",))
    app = group("sg-0app", rule(group_refs=("sg-0open",)))

    # When
    result = evaluate(inst, app, OPEN)

    # Then
    assert result.status == "fail"


def test_a_group_missing_from_the_snapshot_is_ignored():
    # Given an ENI with an unknown group id next to a closed one
    inst = instance(groups=("sg-0gone", "sg-0closed"))

    # When
    result = evaluate(inst, CLOSED)

    # Then
    assert result.status == "fail"
    assert result.fix.param("group_ids") == "sg-0gone,sg-0closed"


@pytest.mark.parametrize("eic", [eic_prefixes(ipv4=(), ipv6=()), eic_prefixes(ipv4=(), ipv6=(EIC_V6,))])
def test_no_eic_prefix_for_the_region_fails_without_a_fix(eic):
    # Given a region with no published IPv4 EIC prefix, and a group open to the world
    sg = group("sg-0ssh", rule("0.0.0.0/0", "::/0"))

    # When
    result = evaluate(instance(), sg, eic=eic)

    # Then
    assert result.status == "fail"
    assert result.fix is None
    assert "us-east-1" in result.reason


def test_fix_attaches_the_managed_group_to_the_connect_eni_keeping_its_groups():
    # Given a failing ENI with two existing groups
    inst = instance(groups=("sg-0closed", "sg-0web"))
    web = group("sg-0web", rule("0.0.0.0/0", ports=(443, 443)))

    # When
    result = evaluate(inst, CLOSED, web)

    # Then
    assert result.status == "fail"
    assert result.fix.action == eic_ssh_ingress.ATTACH_MANAGED_GROUP == "attach-security-group"
    assert result.fix.resource == PRIMARY_ENI
    assert dict(result.fix.params) == {"eni_id": PRIMARY_ENI, "vpc_id": VPC, "group_ids": "sg-0closed,sg-0web"}
    assert "sg-0closed, sg-0web" in result.fix.detail
