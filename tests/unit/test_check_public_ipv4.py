"""public-ipv4: a public IPv4 address on any ENI (an Elastic IP counts); n/a while stopped (docs/architecture.md §2)."""

from __future__ import annotations

import pytest
from eic_guard.checks import public_ipv4

from tests.unit.snapshots import INSTANCE_ID, PRIMARY_ENI, context, eni, instance


def test_public_ip_on_the_primary_eni_passes():
    # Given a running instance with an auto-assigned public IP on its primary ENI
    inst = instance(public_ip="54.210.10.20")

    # When
    result = public_ipv4.evaluate(inst, context())

    # Then
    assert result.status == "pass"
    assert result.reason == "public IPv4 54.210.10.20"


def test_public_ip_only_on_a_secondary_eni_passes():
    # Given no instance-level public IP and a secondary ENI carrying one
    inst = instance(public_ip=None, enis=(eni(PRIMARY_ENI, 0), eni("eni-0second", 1, public_ip="3.3.3.3")))

    # When
    result = public_ipv4.evaluate(inst, context())

    # Then
    assert result.status == "pass"
    assert "3.3.3.3" in result.reason


def test_elastic_ip_on_the_eni_association_passes():
    # Given an Elastic IP associated to the primary ENI (no instance-level public IP field)
    inst = instance(public_ip=None, enis=(eni(PRIMARY_ENI, 0, public_ip="44.200.1.2"),))

    # When
    result = public_ipv4.evaluate(inst, context())

    # Then
    assert result.status == "pass"
    assert "44.200.1.2" in result.reason


def test_no_public_ip_fails_without_a_fix_by_default():
    # Given a private-only instance and default settings
    inst = instance(public_ip=None)

    # When
    result = public_ipv4.evaluate(inst, context())

    # Then
    assert result.status == "fail"
    assert result.reason == "no public IPv4 address on any network interface"
    assert result.fix is None


ALLOWED = {"eic-guard:public-ip": "allowed"}  # the admin-only tag RemediatePublicIp needs per instance


def test_no_public_ip_with_remediate_public_ip_offers_an_elastic_ip_on_the_primary_eni():
    # Given a private-only instance with two ENIs (primary listed last), RemediatePublicIp on and the admin's tag
    inst = instance(public_ip=None, enis=(eni("eni-0second", 1), eni(PRIMARY_ENI, 0)), tags=ALLOWED)

    # When
    result = public_ipv4.evaluate(inst, context(remediate_public_ip=True))

    # Then
    assert result.status == "fail"
    assert result.fix.action == "associate-elastic-ip"
    assert result.fix.resource == PRIMARY_ENI
    assert dict(result.fix.params) == {"eni_id": PRIMARY_ENI, "instance_id": INSTANCE_ID}


@pytest.mark.parametrize("value", [None, "true", "Allowed"])
def test_without_the_admins_public_ip_tag_remediate_public_ip_offers_no_elastic_ip(value):
    # Given a private-only instance and RemediatePublicIp on, but no eic-guard:public-ip=allowed tag (or another value)
    tags = {} if value is None else {"eic-guard:public-ip": value}
    inst = instance(public_ip=None, tags=tags)

    # When
    result = public_ipv4.evaluate(inst, context(remediate_public_ip=True))

    # Then it fails without a fix, and says which tag is missing
    assert (result.status, result.fix, result.kind) == ("fail", None, "public-ip-not-allowed")
    assert result.reason == (
        "no public IPv4 address on any network interface "
        "(no Elastic IP without the admin-only tag eic-guard:public-ip=allowed)"
    )


@pytest.mark.parametrize("state", ["stopped", "stopping"])
@pytest.mark.parametrize("public_ip", [None, "44.200.1.2"])
def test_stopped_instance_is_not_applicable_even_with_remediation_on(state, public_ip):
    # Given a stopped instance
    inst = instance(state=state, public_ip=public_ip)

    # When
    result = public_ipv4.evaluate(inst, context(remediate_public_ip=True))

    # Then
    assert result.status == "not-applicable"
    assert result.fix is None


@pytest.mark.parametrize("opt_in", [False, True])
def test_no_public_ip_has_the_kind_and_facts_the_guidance_needs(opt_in):
    # When
    result = public_ipv4.evaluate(instance(public_ip=None, tags=ALLOWED), context(remediate_public_ip=opt_in))

    # Then
    assert result.kind == "no-public-ipv4"
    assert dict(result.facts) == {
        "instance_id": INSTANCE_ID,
        "remediate_public_ip": str(opt_in).lower(),
        "eni_id": PRIMARY_ENI,
    }
