"""network-acl: rule-number order, TCP 22 in from the EIC prefix and 1024-65535 out to it (docs/architecture.md §2)."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from eic_guard.checks import network_acl
from eic_guard.checks.network_acl import first_match_verdict
from eic_guard.models import EicPrefixes

from tests.unit.snapshots import (
    EIC_V4,
    EIC_V6,
    SUBNET,
    context,
    default_nacl_entries,
    instance,
    nacl_entry,
    snapshot,
)
from tests.unit.snapshots import network_acl as acl

V4 = str(EIC_V4)
IPV6_ADDRESS = ("2600:1f18:1234:5600::10",)
ALLOW_ALL_OUT = nacl_entry(100, egress=True)
DENY_ALL_OUT = nacl_entry(32767, egress=True, allow=False)
ALLOW_ALL_IN = nacl_entry(100)
DENY_ALL_IN = nacl_entry(32767, allow=False)


def evaluate(*entries, ipv6=()):
    inst = instance(ipv6=ipv6)
    return network_acl.evaluate(inst, context(snapshot(inst, network_acls=(acl(*entries),))))


def test_default_nacl_passes():
    # Given AWS's default NACL (allow all, then * deny; IPv4 and IPv6)
    # When
    result = evaluate(*default_nacl_entries(), ipv6=IPV6_ADDRESS)

    # Then
    assert result.status == "pass"


def test_deny_22_before_allow_all_fails():
    # Given deny TCP 22 at rule 50, allow all at 100
    entries = (
        nacl_entry(50, allow=False, protocol="6", ports=(22, 22)),
        ALLOW_ALL_IN,
        DENY_ALL_IN,
        ALLOW_ALL_OUT,
        DENY_ALL_OUT,
    )

    # When
    result = evaluate(*entries)

    # Then
    assert result.status == "fail"
    assert result.reason == f"acl-0aaa inbound: rule 50 denies {V4} port 22"


def test_allow_22_before_deny_all_passes_whatever_the_listing_order():
    # Given allow TCP 22 at 50 and deny all at 100, listed in reverse order
    entries = (
        DENY_ALL_OUT,
        ALLOW_ALL_OUT,
        nacl_entry(100, allow=False),
        nacl_entry(50, protocol="6", ports=(22, 22), cidr=V4),
    )

    # When
    result = evaluate(*entries)

    # Then
    assert result.status == "pass"


def test_deny_for_a_different_cidr_does_not_matter():
    # Given deny TCP 22 from 10.0.0.0/8 at rule 50, allow all at 100
    entries = (
        nacl_entry(50, allow=False, protocol="6", ports=(22, 22), cidr="10.0.0.0/8"),
        ALLOW_ALL_IN,
        ALLOW_ALL_OUT,
    )

    # When
    result = evaluate(*entries)

    # Then
    assert result.status == "pass"


def test_deny_for_other_ports_before_allow_all_does_not_matter():
    # Given deny TCP 23-1023 inbound at rule 50, allow all at 100
    entries = (nacl_entry(50, allow=False, protocol="6", ports=(23, 1023)), ALLOW_ALL_IN, ALLOW_ALL_OUT)

    # When
    result = evaluate(*entries)

    # Then
    assert result.status == "pass"


def test_deny_outbound_ephemeral_range_fails():
    # Given inbound open, outbound deny TCP 1024-65535 at 50 before allow all
    entries = (ALLOW_ALL_IN, nacl_entry(50, egress=True, allow=False, protocol="6", ports=(1024, 65535)), ALLOW_ALL_OUT)

    # When
    result = evaluate(*entries)

    # Then
    assert result.status == "fail"
    assert result.reason == f"acl-0aaa outbound: rule 50 denies {V4} ports 1024-65535"


def test_without_the_ranges_the_check_errs_naming_why_instead_of_failing():
    # Given a subnet whose ACL denies everything, and no EIC ranges at all (no verified file, no stored state yet)
    inst = instance()
    missing = EicPrefixes("us-east-1", unavailable="no ip-ranges state stored yet")

    # When the check runs
    result = network_acl.evaluate(inst, context(snapshot(inst), eic=missing))

    # Then it is an error that names the missing ranges, not a failure blaming AWS's publication or the ACL
    assert (result.status, result.kind) == ("error", "ranges-unavailable")
    assert result.reason == "the EC2_INSTANCE_CONNECT ranges are unavailable (no ip-ranges state stored yet)"
    assert "no EC2_INSTANCE_CONNECT prefix is published" not in result.reason


@pytest.mark.parametrize("deny", [None, DENY_ALL_OUT])
def test_partial_outbound_allow_then_default_deny_fails(deny):
    # Given outbound allows only TCP 1024-2048 (then the * deny, or no further rule)
    entries = (ALLOW_ALL_IN, nacl_entry(100, egress=True, protocol="6", ports=(1024, 2048)), *((deny,) if deny else ()))

    # When
    result = evaluate(*entries)

    # Then
    assert result.status == "fail"
    assert result.reason.startswith("acl-0aaa outbound: ")
    assert f"{V4} ports 2049-65535" in result.reason


def test_outbound_ephemeral_allowed_in_two_tcp_ranges_passes():
    # Given outbound TCP 1024-2048 and 2049-65535 in two rules, then the * deny
    entries = (
        ALLOW_ALL_IN,
        nacl_entry(100, egress=True, protocol="6", ports=(1024, 2048)),
        nacl_entry(110, egress=True, protocol="6", ports=(2049, 65535), cidr=V4),
        DENY_ALL_OUT,
    )

    # When
    result = evaluate(*entries)

    # Then
    assert result.status == "pass"


def test_outbound_must_be_allowed_not_just_inbound():
    # Given inbound open and no outbound rule but the * deny
    # When
    result = evaluate(ALLOW_ALL_IN, DENY_ALL_OUT)

    # Then
    assert result.status == "fail"
    assert result.reason == f"acl-0aaa outbound: rule 32767 denies {V4} ports 1024-65535"


@pytest.mark.parametrize(("protocol", "status"), [("-1", "pass"), ("6", "pass"), ("17", "fail"), ("1", "fail")])
def test_only_all_traffic_and_tcp_rules_allow_ssh(protocol, status):
    # Given inbound allowed only by a rule of this protocol (ports 0-65535), then the * deny
    entries = (
        nacl_entry(100, protocol=protocol, ports=None if protocol == "-1" else (0, 65535)),
        DENY_ALL_IN,
        ALLOW_ALL_OUT,
    )

    # When
    result = evaluate(*entries)

    # Then
    assert result.status == status


def test_no_network_acl_fails():
    # Given a snapshot with no NACL associated to the subnet
    inst = instance()
    other = acl(*default_nacl_entries(), subnets=("subnet-0other",))

    # When
    result = network_acl.evaluate(inst, context(snapshot(inst, network_acls=(other,))))

    # Then
    assert result.status == "fail"
    assert result.reason == f"no network ACL found for subnet {SUBNET}"


V4_ONLY = (ALLOW_ALL_IN, DENY_ALL_IN, ALLOW_ALL_OUT, DENY_ALL_OUT)


def test_ipv6_prefix_is_required_for_an_instance_with_ipv6():
    # Given an IPv4-only NACL and an instance with an IPv6 address
    # When
    result = evaluate(*V4_ONLY, ipv6=IPV6_ADDRESS)

    # Then
    assert result.status == "fail"
    assert result.reason == f"acl-0aaa inbound: no rule allows {EIC_V6} port 22 (default deny)"


def test_ipv6_prefix_is_ignored_for_an_instance_without_ipv6():
    # Given an IPv4-only NACL and an IPv4-only instance
    # When
    result = evaluate(*V4_ONLY, ipv6=())

    # Then
    assert result.status == "pass"


def test_ipv6_deny_only_matters_for_ipv6_instances():
    # Given a NACL allowing IPv4 but denying ::/0 at a lower rule number
    entries = (nacl_entry(10, allow=False, cidr="::/0"), *V4_ONLY)

    # When
    with_v6 = evaluate(*entries, ipv6=IPV6_ADDRESS)
    without_v6 = evaluate(*entries)

    # Then
    assert with_v6.status == "fail"
    assert with_v6.reason == f"acl-0aaa inbound: rule 10 denies {EIC_V6} port 22"
    assert without_v6.status == "pass"


def test_no_prefix_published_fails():
    # Given a region without EIC prefixes and an open NACL
    inst = instance()

    # When
    result = network_acl.evaluate(inst, context(snapshot(inst), eic=EicPrefixes("us-east-1")))

    # Then
    assert result.status == "fail"
    assert result.reason == "no EC2_INSTANCE_CONNECT prefix is published for us-east-1"


class TestFirstMatchVerdict:
    def test_partial_overlap_leaves_the_rest_of_the_prefix_to_the_default_deny(self):
        # Given one rule allowing TCP 22 from the lower /30 of the EIC /29 only
        entries = (nacl_entry(100, protocol="6", ports=(22, 22), cidr="18.206.107.24/30"),)

        # When
        verdict = first_match_verdict(entries, False, EIC_V4, (22, 22))

        # Then
        assert verdict == "no rule allows 18.206.107.28/30 port 22 (default deny)"

    def test_partial_overlap_then_star_deny_names_the_deny_rule(self):
        # Given the lower /30 allowed, then the * deny
        entries = (nacl_entry(100, protocol="6", ports=(22, 22), cidr="18.206.107.24/30"), DENY_ALL_IN)

        # When
        verdict = first_match_verdict(entries, False, EIC_V4, (22, 22))

        # Then
        assert verdict == "rule 32767 denies 18.206.107.28/30 port 22"

    def test_two_halves_allow_everything(self):
        # Given each /30 half allowed by its own rule, then the * deny
        entries = (
            nacl_entry(100, protocol="6", ports=(22, 22), cidr="18.206.107.28/30"),
            nacl_entry(110, protocol="6", ports=(20, 30), cidr="18.206.107.24/30"),
            DENY_ALL_IN,
        )

        # When
        verdict = first_match_verdict(entries, False, EIC_V4, (22, 22))

        # Then
        assert verdict is None

    def test_deny_on_a_sub_range_after_a_partial_allow_is_reported(self):
        # Given the lower /30 allowed at 100, a deny of one address of the upper /30 at 110
        entries = (
            nacl_entry(100, protocol="6", ports=(22, 22), cidr="18.206.107.24/30"),
            nacl_entry(110, allow=False, cidr="18.206.107.30/32"),
            nacl_entry(120),
        )

        # When
        verdict = first_match_verdict(entries, False, EIC_V4, (22, 22))

        # Then
        assert verdict == "rule 110 denies 18.206.107.28/30 port 22"

    def test_egress_rules_are_not_used_for_ingress(self):
        # Given only an egress allow-all
        # When
        verdict = first_match_verdict((ALLOW_ALL_OUT,), False, EIC_V4, (22, 22))

        # Then
        assert verdict == f"no rule allows {V4} port 22 (default deny)"

    def test_wider_prefix_allowed_in_port_slices(self):
        # Given ports 1024-30000 and 30001-65535 allowed by two rules on wider CIDRs
        entries = (
            nacl_entry(100, egress=True, protocol="6", ports=(1024, 30000), cidr="18.0.0.0/8"),
            nacl_entry(200, egress=True, protocol="6", ports=(30001, 65535), cidr="18.206.107.0/24"),
        )

        # When
        verdict = first_match_verdict(entries, True, ip_network(V4), (1024, 65535))

        # Then
        assert verdict is None


# ---- kinds and facts: the allow rules the guidance names, numbered before the denying rule -------------------------
def test_an_inbound_deny_names_the_rule_and_the_closest_free_number_before_it():
    # Given deny TCP 22 at rule 50 (49 is taken by an unrelated rule), allow all at 100
    entries = (
        nacl_entry(49, cidr="10.0.0.0/8"),
        nacl_entry(50, allow=False, protocol="6", ports=(22, 22)),
        ALLOW_ALL_IN,
        DENY_ALL_IN,
        ALLOW_ALL_OUT,
        DENY_ALL_OUT,
    )

    # When
    result = evaluate(*entries)

    # Then
    assert result.kind == "nacl-inbound-deny"
    assert dict(result.facts) == {"nacl_id": "acl-0aaa", "prefix": V4, "in_rule": "50", "in_free": "48"}


def test_an_outbound_default_deny_suggests_a_round_number_after_the_last_rule():
    # Given inbound open, outbound only TCP 80-443 at rule 100, then the * deny
    entries = (ALLOW_ALL_IN, nacl_entry(100, egress=True, protocol="6", ports=(80, 443)), DENY_ALL_OUT)

    # When
    result = evaluate(*entries)

    # Then
    assert result.reason == f"acl-0aaa outbound: rule 32767 denies {V4} ports 1024-65535"
    assert result.kind == "nacl-outbound-default-deny"
    assert dict(result.facts) == {"nacl_id": "acl-0aaa", "prefix": V4, "out_rule": "*", "out_free": "110"}


def test_both_directions_denied_carry_both_allow_rules_and_the_inbound_kind():
    # Given inbound TCP 22 denied at 50 and no outbound rule at all (not even the * rule)
    entries = (nacl_entry(50, allow=False, protocol="6", ports=(22, 22)), ALLOW_ALL_IN)

    # When
    result = evaluate(*entries)

    # Then the reason stays the first denial; the facts hold both
    assert result.reason == f"acl-0aaa inbound: rule 50 denies {V4} port 22"
    assert result.kind == "nacl-inbound-deny"
    assert dict(result.facts) == {
        "nacl_id": "acl-0aaa",
        "prefix": V4,
        "in_rule": "50",
        "in_free": "49",
        "out_rule": "*",
        "out_free": "100",
    }


def test_a_deny_at_rule_1_has_no_free_number_before_it():
    # When
    result = evaluate(nacl_entry(1, allow=False), ALLOW_ALL_IN, ALLOW_ALL_OUT)

    # Then
    assert (result.kind, result.fact("in_rule"), result.fact("in_free")) == ("nacl-inbound-deny", "1", None)


def test_an_ipv6_default_deny_is_a_default_deny():
    # Given an IPv4-only NACL with the IPv6 * rule (32768), and an IPv6 instance
    entries = (*V4_ONLY, nacl_entry(32768, allow=False, cidr="::/0"))

    # When
    result = evaluate(*entries, ipv6=IPV6_ADDRESS)

    # Then (outbound has only IPv4 rules: the replies to the IPv6 prefix need a rule too)
    assert result.kind == "nacl-inbound-default-deny"
    assert dict(result.facts) == {
        "nacl_id": "acl-0aaa",
        "prefix": str(EIC_V6),
        "in_rule": "*",
        "in_free": "110",
        "out_rule": "*",
        "out_free": "110",
    }


def test_no_nacl_and_no_prefix_have_their_kinds():
    # Given
    inst = instance()
    other = acl(*default_nacl_entries(), subnets=("subnet-0other",))

    # When
    no_nacl = network_acl.evaluate(inst, context(snapshot(inst, network_acls=(other,))))
    no_prefix = network_acl.evaluate(inst, context(snapshot(inst), eic=EicPrefixes("us-east-1")))

    # Then
    assert (no_nacl.kind, dict(no_nacl.facts)) == ("no-nacl", {"subnet_id": SUBNET})
    assert (no_prefix.kind, dict(no_prefix.facts)) == ("no-eic-prefix", {"region": "us-east-1"})


@pytest.mark.parametrize(
    ("numbers", "denying", "free"),
    [
        ((100,), 100, 99),
        ((98, 99, 100), 100, 97),
        ((1,), 1, None),
        ((100, 32767), 32767, 110),
        ((), None, 100),
        ((32766, 32767), 32767, 32765),
        ((105, 32767), 32767, 110),
    ],
)
def test_free_rule_before(numbers, denying, free):
    # Given inbound rules with these numbers, one of them (or none) denying
    entries = tuple(nacl_entry(n, allow=n != denying) for n in numbers)
    denial = network_acl.Denial(denying, EIC_V4, 22, 22)

    # When / Then
    assert network_acl.free_rule_before(entries, False, denial) == free
