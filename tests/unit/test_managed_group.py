"""managed_group: the rules eic-guard-ssh should hold, and which existing rules are eic-guard's (docs/architecture.md
§4)."""

from __future__ import annotations

import pytest
from eic_guard.ranges.managed_group import RuleSet, current_rules, desired_rules, owned_rules, rule_description

from tests.unit.snapshots import EIC_V4, EIC_V6, eic_prefixes, group, rule

V4 = str(EIC_V4)
V6 = str(EIC_V6)
EIC_LIST = "pl-0e4bcff02b13bef1e"
OURS = "eic-guard EC2_INSTANCE_CONNECT us-east-1"


def test_rule_description():
    # Given / When / Then
    assert rule_description("us-east-1") == OURS


def test_desired_rules_in_cidr_mode_are_every_eic_prefix():
    # Given the us-east-1 prefixes, cidr mode (even with a list available)
    # When
    rules = desired_rules(eic_prefixes(), "cidr", EIC_LIST)

    # Then
    assert rules == RuleSet(cidrs=frozenset({V4, V6}))


def test_desired_rules_in_prefix_list_mode_reference_the_list():
    # Given prefix-list mode and the AWS-managed IPv4 list id, but no IPv6 list in the region
    # When
    rules = desired_rules(eic_prefixes(), "prefix-list", EIC_LIST)

    # Then IPv4 comes from the list, IPv6 from the CIDR (an IPv6 instance must still be covered)
    assert rules == RuleSet(cidrs=frozenset({V6}), prefix_lists=frozenset({EIC_LIST}))


def test_desired_rules_in_prefix_list_mode_reference_both_lists_when_they_exist():
    # Given prefix-list mode and both AWS-managed lists (IPv4 and IPv6 are separate lists)
    # When
    rules = desired_rules(eic_prefixes(), "prefix-list", EIC_LIST, "pl-0ipv6eic")

    # Then
    assert rules == RuleSet(prefix_lists=frozenset({EIC_LIST, "pl-0ipv6eic"}))


def test_prefix_list_mode_falls_back_to_cidrs_when_the_region_has_no_list():
    # Given prefix-list mode in a region without the managed list
    # When
    rules = desired_rules(eic_prefixes(), "prefix-list", None)

    # Then
    assert rules == RuleSet(cidrs=frozenset({V4, V6}))


def test_no_prefixes_means_no_rules():
    # Given a region without EIC prefixes
    # When
    rules = desired_rules(eic_prefixes(ipv4=(), ipv6=()), "cidr", None)

    # Then
    assert not rules


def test_ruleset_subtraction_is_what_to_add_or_revoke():
    # Given desired and current sources that partly overlap
    desired = RuleSet(frozenset({V4, V6}), frozenset({EIC_LIST}))
    current = RuleSet(frozenset({V4, "18.206.107.16/29"}), frozenset())

    # When
    to_add = desired - current
    to_revoke = current - desired

    # Then
    assert to_add == RuleSet(frozenset({V6}), frozenset({EIC_LIST}))
    assert to_revoke == RuleSet(frozenset({"18.206.107.16/29"}), frozenset())
    assert not (desired - desired)
    assert to_add.describe() == f"{V6}, {EIC_LIST}"


def test_ip_permissions_shape_for_cidrs_and_lists():
    # Given IPv4, IPv6 and a prefix list
    rules = RuleSet(frozenset({V6, V4, "18.206.107.16/29"}), frozenset({EIC_LIST}))

    # When
    permissions = rules.ip_permissions("us-east-1")

    # Then
    assert permissions == [
        {
            "IpProtocol": "tcp",
            "FromPort": 22,
            "ToPort": 22,
            "IpRanges": [{"CidrIp": "18.206.107.16/29", "Description": OURS}, {"CidrIp": V4, "Description": OURS}],
            "Ipv6Ranges": [{"CidrIpv6": V6, "Description": OURS}],
            "PrefixListIds": [{"PrefixListId": EIC_LIST, "Description": OURS}],
        }
    ]


@pytest.mark.parametrize(
    ("rules", "keys"),
    [
        (RuleSet(cidrs=frozenset({V4})), {"IpRanges"}),
        (RuleSet(cidrs=frozenset({V6})), {"Ipv6Ranges"}),
        (RuleSet(prefix_lists=frozenset({EIC_LIST})), {"PrefixListIds"}),
    ],
)
def test_ip_permissions_omit_empty_source_lists(rules, keys):
    # Given sources of one kind
    # When
    (permission,) = rules.ip_permissions("eu-west-1")

    # Then
    assert set(permission) == {"IpProtocol", "FromPort", "ToPort"} | keys
    (entries,) = (permission[k] for k in keys)
    assert entries[0]["Description"] == "eic-guard EC2_INSTANCE_CONNECT eu-west-1"


MIXED = group(
    "sg-0managed",
    rule(
        V4,
        "203.0.113.0/24",
        V6,
        "2001:db8::/32",
        prefix_lists=(EIC_LIST, "pl-0office"),
        descriptions=(OURS, "office VPN", OURS, "", OURS, "office list"),
    ),
    rule("18.206.107.16/29", descriptions=("eic-guard EC2_INSTANCE_CONNECT eu-west-1",)),
    rule("18.206.107.8/29", ports=(0, 65535), descriptions=(OURS,)),
    rule("18.206.107.0/29", protocol="udp", descriptions=(OURS,)),
    rule("198.51.100.0/24", ports=(443, 443), descriptions=(OURS,)),
)


def test_owned_rules_are_only_tcp_22_sources_with_our_description():
    # Given a managed group where someone added their own rules next to eic-guard's
    # When
    owned = owned_rules(MIXED, "us-east-1")

    # Then
    assert owned == RuleSet(frozenset({V4, V6}), frozenset({EIC_LIST}))


def test_owned_rules_are_per_region():
    # Given the same group read for eu-west-1
    # When
    owned = owned_rules(MIXED, "eu-west-1")

    # Then
    assert owned == RuleSet(frozenset({"18.206.107.16/29"}), frozenset())


def test_current_rules_are_every_tcp_22_source_whatever_the_description():
    # Given the same group
    # When
    current = current_rules(MIXED)

    # Then
    assert current == RuleSet(
        frozenset({V4, "203.0.113.0/24", V6, "2001:db8::/32", "18.206.107.16/29"}),
        frozenset({EIC_LIST, "pl-0office"}),
    )


def test_a_missing_group_has_no_rules():
    # Given no managed group yet
    # When / Then
    assert owned_rules(None, "us-east-1") == RuleSet()
    assert current_rules(None) == RuleSet()
