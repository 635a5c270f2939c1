"""Writes that state their whole intent and changes that can help (docs/architecture.md §4), against moto's resulting
state.

moto stores exactly what a request carries, so its state after a fix shows what EC2 would hold had the request
relied on an API default. And an instance whose network path eic-guard cannot fix gets no change at all.
"""

from __future__ import annotations

from datetime import date

import boto3
import pytest
from eic_guard.aws.clients import AwsClients
from eic_guard.engine import scan_target
from eic_guard.fanout.local import run_scan
from eic_guard.settings import Settings

from tests.aws_views import eni_groups, metadata_options
from tests.conftest import REGION

FIXABLE = ("eic-ssh-ingress", "imds-enabled")


def scan(ranges, mode="remediate", **settings):
    return run_scan(AwsClients(), Settings.build(regions=(REGION,), mode=mode, **settings), ranges)


def entry(report, instance_id):
    [found] = [e for e in report.instances if e.instance_id == instance_id]
    return found


def state_of(ec2, instance_id: str) -> tuple:
    """What a fix could change on the instance: its ENI's groups and its whole metadata options."""
    return eni_groups(ec2, instance_id), metadata_options(ec2, instance_id)


def addresses(ec2) -> list[dict]:
    return ec2.describe_addresses()["Addresses"]


PUBLIC_IP_ALLOWED = {"eic-guard:public-ip": "allowed"}  # the admin-only tag RemediatePublicIp needs per instance


def drifted(account, subnet_id: str, group_id: str, *, public_ip: bool = True, image_id: str | None = None, **kw):
    """An opted-in instance without an SSH rule for EIC and with its metadata endpoint off."""
    [instance] = account.launch(
        image_id=image_id or account.al2023_ami(),
        subnet_id=subnet_id,
        group_ids=[group_id],
        public_ip=public_ip,
        imds="disabled",
        **kw,
    )
    return instance


# ---- defect 1: the IMDS fix restates HttpTokens -------------------------------------------------------------------
@pytest.mark.parametrize("tokens", ["required", "optional"])
def test_enabling_imds_keeps_http_tokens_as_they_were(account, ec2, api_calls, ranges_2026, tokens):
    # Given an opted-in instance with the metadata endpoint off and HttpTokens set one way or the other
    net = account.network()
    instance = drifted(account, net.public_subnet_id, net.app_group_id, http_tokens=tokens)

    # When a remediate scan runs
    report = scan(ranges_2026)

    # Then the endpoint is on and HttpTokens is what it was: IMDSv2 stays required, IMDSv1 is not silently closed
    after = metadata_options(ec2, instance)
    assert (after["HttpEndpoint"], after["HttpTokens"]) == ("enabled", tokens)
    e = entry(report, instance)
    assert e.checks["imds-enabled"].status == "fixed"
    [imds] = [a for a in e.actions if a.action == "enable-imds"]
    assert imds.detail == f"HttpEndpoint=enabled, HttpTokens={tokens} (kept)"

    # And a second run writes nothing
    api_calls.clear()
    again = scan(ranges_2026)
    assert api_calls.writes() == []
    assert entry(again, instance).checks["imds-enabled"].status == "pass"


# ---- defect 5: no change that cannot help -------------------------------------------------------------------------
def _private_no_route(account, net):
    """A public address, but in the subnet whose route table has no route to the internet gateway."""
    return drifted(account, net.private_subnet_id, net.app_group_id, public_ip=True)


def _nacl_denies_ssh(account, net):
    instance = drifted(account, net.public_subnet_id, net.app_group_id)
    account.block_ssh_in_nacl(net.vpc_id, net.public_subnet_id)
    return instance


def _no_public_ip(account, net):
    return drifted(account, net.public_subnet_id, net.app_group_id, public_ip=False)


def _private_without_ip(account, net):
    """No public address, and allowed one by the admin's tag, but in the subnet without an internet route."""
    return drifted(account, net.private_subnet_id, net.app_group_id, public_ip=False, tags=PUBLIC_IP_ALLOWED)


BLOCKED = {
    # id: (how the instance is made, settings, the checks that block)
    "no-internet-route": (_private_no_route, {}, "internet-route"),
    "no-internet-route-with-eip-opt-in": (_private_no_route, {"remediate_public_ip": True}, "internet-route"),
    "nacl-denies-22": (_nacl_denies_ssh, {}, "network-acl"),
    "no-public-ip-without-eip-opt-in": (_no_public_ip, {}, "public-ipv4"),
    "private-without-ip-with-eip-opt-in": (_private_without_ip, {"remediate_public_ip": True}, "internet-route"),
}


@pytest.mark.parametrize("mode", ["remediate", "report"])
@pytest.mark.parametrize("case", BLOCKED, ids=list(BLOCKED))
def test_an_instance_whose_network_path_cannot_be_fixed_gets_no_change(
    account, ec2, api_calls, ranges_2026, case, mode
):
    # Given an instance lacking the SSH rule and IMDS, whose network path eic-guard cannot fix
    make, settings, blocker = BLOCKED[case]
    net = account.network()
    instance = make(account, net)
    before = state_of(ec2, instance)
    api_calls.clear()

    # When a scan runs (the Elastic IP opt-in where the case says)
    report = scan(ranges_2026, mode=mode, **settings)

    # Then no write at all: no group attached, no metadata change, no Elastic IP, not even the managed group
    assert api_calls.writes() == []
    assert state_of(ec2, instance) == before
    assert addresses(ec2) == []
    # And the fixable checks stay `fail` (not would-fix) and name the blocking check; nothing is planned
    e = entry(report, instance)
    assert e.verdict == "noncompliant"
    for check_id in FIXABLE:
        assert e.checks[check_id].status == "fail"
        assert e.checks[check_id].reason.endswith(f"not fixed: blocked by {blocker}")
    assert e.actions == []


def test_a_failing_ami_does_not_block_the_other_fixes(account, ec2, ranges_2026):
    # Given an instance on an image that is not AL2023 (EIC can be installed by hand), lacking SSH and IMDS
    net = account.network()
    instance = drifted(
        account, net.public_subnet_id, net.app_group_id, image_id=account.own_image("ubuntu-22.04-custom")
    )

    # When a remediate scan runs
    report = scan(ranges_2026)

    # Then the group and IMDS are fixed; only the AMI check still fails
    e = entry(report, instance)
    assert {c: e.checks[c].status for c in (*FIXABLE, "al2023-ami")} == {
        "eic-ssh-ingress": "fixed",
        "imds-enabled": "fixed",
        "al2023-ami": "fail",
    }
    assert len(eni_groups(ec2, instance)) == 2
    assert metadata_options(ec2, instance)["HttpEndpoint"] == "enabled"


def test_the_blocked_rule_is_per_instance(account, ec2, ranges_2026):
    # Given one blocked instance and one fixable instance in the same VPC
    net = account.network()
    blocked = _private_no_route(account, net)
    fixable = drifted(account, net.public_subnet_id, net.app_group_id)

    # When a remediate scan runs
    report = scan(ranges_2026)

    # Then the fixable one is fixed and the blocked one untouched
    assert entry(report, fixable).verdict == "fixed"
    assert entry(report, blocked).verdict == "noncompliant"
    assert eni_groups(ec2, blocked) == [net.app_group_id]
    assert metadata_options(boto3.client("ec2", REGION), blocked)["HttpEndpoint"] == "disabled"


def _managed_address(ec2, instance_id: str) -> str:
    """An Elastic IP tagged ManagedBy=eic-guard, associated to the instance."""
    allocation = ec2.allocate_address(
        Domain="vpc",
        TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": [{"Key": "ManagedBy", "Value": "eic-guard"}]}],
    )["AllocationId"]
    ec2.associate_address(AllocationId=allocation, InstanceId=instance_id)
    return allocation


def test_a_scan_of_given_instances_releases_only_the_addresses_of_those_instances(account, ec2, ranges_2026):
    # Given three opted-in instances holding eic-guard Elastic IPs, one of which has just been opted out
    net = account.network()
    kept, other, opted_out = (
        drifted(account, net.public_subnet_id, net.app_group_id, public_ip=False, tags=PUBLIC_IP_ALLOWED)
        for _ in range(3)
    )
    addresses_before = {i: _managed_address(ec2, i) for i in (kept, other, opted_out)}
    ec2.delete_tags(Resources=[opted_out], Tags=[{"Key": "eic-guard:managed"}])
    settings = Settings.build(regions=(REGION,), mode="remediate", remediate_public_ip=True)

    # When an event-driven check scans only `kept` and `opted_out`
    ids = [kept, opted_out]
    result = scan_target(ec2, "123456789012", REGION, settings, ranges_2026, date.today(), instance_ids=ids)

    # Then the opted-out instance's address is released, and the address of `other` (not read, so not judged) stays
    remaining = {a["AllocationId"] for a in addresses(ec2)}
    assert addresses_before[opted_out] not in remaining
    assert {addresses_before[kept], addresses_before[other]} <= remaining
    assert [(a.action, a.resource) for a in result.actions] == [("release-elastic-ip", addresses_before[opted_out])]


def test_an_elastic_ip_goes_back_when_the_admin_takes_the_public_ip_tag_away(account, ec2, api_calls, ranges_2026):
    # Given an opted-in instance that a remediate scan gave an Elastic IP because an admin allowed it
    net = account.network()
    instance = drifted(account, net.public_subnet_id, net.app_group_id, public_ip=False, tags=PUBLIC_IP_ALLOWED)
    scan(ranges_2026, remediate_public_ip=True)
    assert len(addresses(ec2)) == 1

    # When the admin removes eic-guard:public-ip and the next scan runs
    ec2.delete_tags(Resources=[instance], Tags=[{"Key": "eic-guard:public-ip"}])
    report = scan(ranges_2026, remediate_public_ip=True)

    # Then the address eic-guard gave is released, none is allocated again, and the check fails naming the tag
    assert addresses(ec2) == []
    assert [a.action for a in report.target_actions] == ["release-elastic-ip"]
    e = entry(report, instance)
    assert e.checks["public-ipv4"].status == "fail"
    assert "eic-guard:public-ip=allowed" in e.checks["public-ipv4"].reason

    # And a second run changes nothing
    api_calls.clear()
    scan(ranges_2026, remediate_public_ip=True)
    assert api_calls.writes() == []
