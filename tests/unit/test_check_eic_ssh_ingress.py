"""eic-ssh-ingress: TCP 22 from every EIC prefix of the region, on the ENI EIC reaches (docs/architecture.md §2)."""

from __future__ import annotations

import pytest
from eic_guard.checks import eic_ssh_ingress
from eic_guard.models import EicPrefixes

from tests.unit.snapshots import (
    EIC_V4,
    EIC_V6,
    PRIMARY_ENI,
    SSH_GROUP,
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
    ("cidrs", "status", "found"),
    [
        ((V4,), "pass", None),
        (("18.206.0.0/16",), "pass", None),
        (("18.206.107.24/30",), "fail", "; found: TCP 22 from 18.206.107.24/30 in sg-0ssh"),
        (("18.206.107.28/30",), "fail", "; found: TCP 22 from 18.206.107.28/30 in sg-0ssh"),
        (("18.206.107.32/29",), "fail", "; found: TCP 22 from 18.206.107.32/29 in sg-0ssh"),
        (("18.206.107.24/30", "18.206.107.28/30"), "pass", None),
        (("10.0.0.0/8",), "fail", "; found: TCP 22 from 10.0.0.0/8 in sg-0ssh"),
    ],
)
def test_sources_must_cover_the_whole_eic_prefix(cidrs, status, found):
    # Given a group allowing TCP 22 from these IPv4 ranges
    sg = group("sg-0ssh", rule(*cidrs))

    # When
    result = evaluate(instance(), sg)

    # Then the failing reason names the missing prefix, then the TCP 22 sources that do not cover it
    assert result.status == status
    if status == "fail":
        assert result.reason == f"TCP 22 not allowed from {V4}{found}"


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


def test_security_group_references_do_not_count():
    # Given TCP 22 allowed only from another group, which itself allows the EIC prefix
    inst = instance(groups=("sg-0app",))
    app = group("sg-0app", rule(group_refs=("sg-0open",)))

    # When
    result = evaluate(inst, app, OPEN)

    # Then the reference is named as what was found instead
    assert result.status == "fail"
    assert result.reason == f"TCP 22 not allowed from {V4}; found: TCP 22 from sg-0open in sg-0app"


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


# ---- what a failing reason says was found (near misses) ------------------------------------------------------------
@pytest.mark.parametrize(
    ("permission", "found"),
    [
        (rule(V4, ports=(2222, 2222)), f"TCP 2222 from {V4} in sg-0abc"),
        (rule(V4, protocol="udp"), f"UDP 22 from {V4} in sg-0abc"),
        (rule(V4, protocol="17", ports=(0, 65535)), f"UDP 0-65535 from {V4} in sg-0abc"),
        (rule(V4, ports=(0, 21)), f"TCP 0-21 from {V4} in sg-0abc"),
        (rule(V4, protocol="icmp", ports=(-1, -1)), f"ICMP from {V4} in sg-0abc"),
        (rule("18.206.107.24/30", ports=(2222, 2222)), "TCP 2222 from 18.206.107.24/30 in sg-0abc"),
        (rule("203.0.113.0/24"), "TCP 22 from 203.0.113.0/24 in sg-0abc"),
        (rule(prefix_lists=(EIC_LIST,), ports=(2222, 2222)), f"TCP 2222 from {V4} (in {EIC_LIST}) in sg-0abc"),
        (rule(prefix_lists=("pl-0empty",)), "TCP 22 from pl-0empty (entries unknown) in sg-0abc"),
    ],
)
def test_a_failing_reason_names_the_rule_that_comes_close(permission, found):
    # Given a group whose only rule comes close to TCP 22 from the EIC prefix
    sg = group("sg-0abc", rule("10.0.0.0/16", ports=(443, 443)), permission)

    # When
    result = evaluate(instance(groups=("sg-0abc",)), sg, prefix_lists={EIC_LIST: (V4,), "pl-0empty": ()})

    # Then the reason says what is missing, then what was found (the unrelated HTTPS rule is not named)
    assert result.status == "fail"
    assert result.reason == f"TCP 22 not allowed from {V4}; found: {found}"


def test_near_misses_aimed_at_the_eic_range_come_before_broad_rules_and_at_most_three_are_named():
    # Given a web group open to the world on 80 and 443, and an SSH group with three near misses across two groups
    web = group("sg-0web", rule("0.0.0.0/0", ports=(443, 443)), rule("0.0.0.0/0", ports=(80, 80)))
    ssh = group(
        "sg-0ssh",
        rule(V4, ports=(2222, 2222)),
        rule(V4, protocol="udp"),
        rule("10.20.0.0/16"),
    )

    # When
    result = evaluate(instance(groups=("sg-0web", "sg-0ssh")), web, ssh)

    # Then
    assert result.reason == (
        f"TCP 22 not allowed from {V4}; found: TCP 2222 from {V4} in sg-0ssh, UDP 22 from {V4} in sg-0ssh, "
        "TCP 22 from 10.20.0.0/16 in sg-0ssh, and 2 more"
    )


def test_a_missing_ipv6_prefix_does_not_list_the_ipv4_rules_as_near_misses():
    # Given an IPv6 instance whose group allows TCP 22 from the IPv4 prefix and UDP 22 from the IPv6 one
    inst = instance(ipv6=("2600:1f18:1234:5600::10",))
    sg = group("sg-0ssh", rule(V4), rule(V6, protocol="udp"))

    # When
    result = evaluate(inst, sg)

    # Then
    assert result.reason == f"TCP 22 not allowed from {V6}; found: UDP 22 from {V6} in sg-0ssh"


def test_near_misses_are_worked_out_once_per_group_set():
    # Given two instances sharing one group set in one target
    first, second = instance(instance_id="i-0first"), instance(instance_id="i-0second")
    ctx = context(snapshot(first, second, groups=(group(SSH_GROUP, rule(V4, ports=(2222, 2222))),)))

    # When
    results = [eic_ssh_ingress.evaluate(i, ctx) for i in (first, second)]

    # Then both failing reasons come from the same memo entry
    assert (
        results[0].reason == results[1].reason == f"TCP 22 not allowed from {V4}; found: TCP 2222 from {V4} in sg-0ssh"
    )
    assert sum(1 for key in ctx.memo if key[0] == eic_ssh_ingress.ID and key[1] == (SSH_GROUP,)) == 1


# ---- kinds and facts (what the guidance says) -----------------------------------------------------------------------
def test_a_missing_rule_has_the_kind_and_facts_the_guidance_needs():
    # Given a failing ENI with two groups
    inst = instance(groups=("sg-0closed", "sg-0web"))

    # When
    result = eic_ssh_ingress.evaluate(inst, context(_with_eic_list(snapshot(inst, groups=(CLOSED,)))))

    # Then
    assert result.kind == "ssh-not-allowed"
    assert dict(result.facts) == {
        "missing": V4,
        "group_ids": "sg-0closed,sg-0web",
        "eni_id": PRIMARY_ENI,
        "vpc_id": VPC,
        "prefix_list": EIC_LIST,
    }


def test_no_interface_has_its_own_kind():
    # When
    result = evaluate(instance(groups=("sg-0closed",), enis=()), CLOSED)

    # Then
    assert (result.kind, dict(result.facts)) == ("no-interface", {"missing": V4, "group_ids": "sg-0closed"})


def test_no_published_prefix_and_unavailable_ranges_have_their_kinds():
    # When
    none_published = evaluate(instance(), OPEN, eic=eic_prefixes(ipv4=(), ipv6=()))
    unavailable = evaluate(instance(), OPEN, eic=EicPrefixes("us-east-1", unavailable="HTTP 503"))

    # Then
    assert (none_published.status, none_published.kind) == ("fail", "no-eic-prefix")
    assert none_published.fact("region") == "us-east-1"
    assert (unavailable.status, unavailable.kind) == ("error", "ranges-unavailable")
    assert unavailable.fact("error") == "HTTP 503"


# ---- warnings: SSH open wider than EIC (docs/architecture.md §5b)
# ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("permission", "warning"),
    [
        (
            rule("0.0.0.0/0"),
            f"ssh-open-to-internet: sg-0ssh allows TCP 22 from 0.0.0.0/0 (the whole internet); EIC needs only {V4}",
        ),
        (
            rule("0.0.0.0/0", protocol="-1", ports=None),
            f"ssh-open-to-internet: sg-0ssh allows TCP 22 from 0.0.0.0/0 (the whole internet); EIC needs only {V4}",
        ),
        (
            rule("0.0.0.0/0", ports=(0, 1023)),
            f"ssh-open-to-internet: sg-0ssh allows TCP 22 from 0.0.0.0/0 (the whole internet); EIC needs only {V4}",
        ),
        (
            rule(V4, "::/0"),
            f"ssh-open-to-internet: sg-0ssh allows TCP 22 from ::/0 (the whole internet); EIC needs only {V6}",
        ),
        (
            rule("18.206.0.0/16"),
            f"ssh-wider-than-eic: sg-0ssh allows TCP 22 from 18.206.0.0/16; EIC needs only {V4}",
        ),
        (
            rule(V4, "2600:1f18::/32"),
            f"ssh-wider-than-eic: sg-0ssh allows TCP 22 from 2600:1f18::/32; EIC needs only {V6}",
        ),
    ],
)
def test_a_pass_from_a_source_wider_than_eic_stays_a_pass_with_one_warning(permission, warning):
    # Given an instance whose group lets TCP 22 in from a range wider than the EIC prefix
    # When
    result = evaluate(instance(), group("sg-0ssh", permission))

    # Then the pass reason stays factual and the warning names the group and the source
    assert result.status == "pass"
    assert result.reason == f"TCP 22 allowed from {V4}"
    assert result.warnings == (warning,)


@pytest.mark.parametrize(
    "permissions",
    [
        (rule(V4),),
        (rule(V4, V6),),
        (rule("18.206.107.24/30", "18.206.107.28/30"),),
        (rule(prefix_lists=(EIC_LIST,)),),
        (rule(V4), rule("0.0.0.0/0", ports=(443, 443)), rule("0.0.0.0/0", protocol="udp")),
        (rule(V4), rule("10.0.0.0/8")),
    ],
)
def test_a_pass_from_exactly_the_eic_range_has_no_warning(permissions):
    # Given TCP 22 from the EIC prefix itself (or its halves, or the managed prefix list), and other unrelated rules
    # When
    result = evaluate(instance(), group("sg-0ssh", *permissions), prefix_lists={EIC_LIST: (V4, V6)})

    # Then
    assert result.status == "pass"
    assert result.warnings == ()


def test_one_warning_per_code_names_every_group_and_source():
    # Given two groups open to the world and one wider than EIC, on the same ENI
    inst = instance(groups=("sg-0a", "sg-0b", "sg-0c"))
    groups = (
        group("sg-0a", rule("0.0.0.0/0", "::/0")),
        group("sg-0b", rule(protocol="-1", ports=None, prefix_lists=("pl-0world",))),
        group("sg-0c", rule("18.0.0.0/8")),
    )

    # When
    result = evaluate(inst, *groups, prefix_lists={"pl-0world": ("0.0.0.0/0",)})

    # Then
    assert result.warnings == (
        "ssh-open-to-internet: sg-0a allows TCP 22 from 0.0.0.0/0 and ::/0, sg-0b allows TCP 22 from 0.0.0.0/0 "
        f"(in pl-0world) (the whole internet); EIC needs only {V4}, {V6}",
        f"ssh-wider-than-eic: sg-0c allows TCP 22 from 18.0.0.0/8; EIC needs only {V4}",
    )


def test_a_failing_check_carries_the_warning_too():
    # Given an IPv6 instance whose group opens TCP 22 to the IPv4 internet only
    inst = instance(ipv6=("2600:1f18:1234:5600::10",))

    # When
    result = evaluate(inst, group("sg-0ssh", rule("0.0.0.0/0")))

    # Then
    assert result.status == "fail"
    assert result.reason == f"TCP 22 not allowed from {V6}"
    assert result.warnings == (
        f"ssh-open-to-internet: sg-0ssh allows TCP 22 from 0.0.0.0/0 (the whole internet); EIC needs only {V4}",
    )


@pytest.mark.parametrize(
    "eic", [eic_prefixes(ipv4=(), ipv6=()), EicPrefixes("us-east-1", unavailable="HTTP 503")], ids=["none", "unread"]
)
def test_without_known_eic_prefixes_the_open_warning_still_shows(eic):
    # When
    result = evaluate(instance(), group("sg-0ssh", rule("0.0.0.0/0")), eic=eic)

    # Then
    assert result.warnings == ("ssh-open-to-internet: sg-0ssh allows TCP 22 from 0.0.0.0/0 (the whole internet)",)


def _with_eic_list(snap):
    from dataclasses import replace

    return replace(snap, eic_prefix_list_id=EIC_LIST)
