"""Defect 12 (engine parts): one vanished instance id must not fail its whole status-tag batch, and a scan racing
another for the VPC's managed group must use the group the other run created, not call it someone else's.
"""

from __future__ import annotations

import boto3
from eic_guard.aws.clients import AwsClients
from eic_guard.outputs.publish import CHECKED_AT_TAG, STATUS_TAG, tag_instances

from tests.aws_views import describe_instance, eni_groups, ingress_of
from tests.conftest import REGION
from tests.faults.conftest import (
    MANAGED_NAME,
    US_EAST_1,
    eic_rules,
    entry,
    launch,
    managed_group,
    managed_group_in,
    remediate_scan,
)
from tests.faults.injector import FaultInjector

CHECKED_AT = "2026-08-22T16:00Z"
NOT_OURS = "without the ManagedBy=eic-guard tag"


def tags_of(ec2, instance_id: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in describe_instance(ec2, instance_id).get("Tags", ())}


# ---- status tags ----------------------------------------------------------------------------------------------------
def test_one_vanished_instance_does_not_leave_the_rest_of_its_tag_batch_untagged(
    faults: FaultInjector, account, ec2, ranges_2026
):
    # Given three instances fixed by a remediate scan (one status-tag batch: they share their verdict)
    net = account.network()
    gone, *others = launch(account, net, count=3, imds="disabled")
    report = remediate_scan(faults, ranges_2026)
    assert {entry(report, i).verdict for i in (gone, *others)} == {"fixed"}
    # and one of them terminated and gone before the tags are written, so EC2 refuses any batch naming it
    ec2.terminate_instances(InstanceIds=[gone])
    refused = faults.error(
        "CreateTags",
        "InvalidInstanceID.NotFound",
        message=f"The instance ID '{gone}' does not exist",
        when=lambda params: gone in params.get("Resources", ()),
    )

    # When the status tags are written
    tag_instances(AwsClients(), report, CHECKED_AT)

    # Then the batch was refused once because of it, and every other instance still has its tags
    assert len(refused.hits) >= 1
    for instance in others:
        tags = tags_of(ec2, instance)
        assert (tags.get(STATUS_TAG), tags.get(CHECKED_AT_TAG)) == ("fixed", CHECKED_AT)
    assert STATUS_TAG not in tags_of(ec2, gone)
    # And no batch ever named an instance twice or one that was not in the report
    for call in (c for c in faults.calls if c.operation == "CreateTags"):
        resources = call.params["Resources"]
        assert len(resources) == len(set(resources)) and set(resources) <= {gone, *others}


# ---- racing another run for the managed group ------------------------------------------------------------------------
def other_run_creates_the_group_first(faults: FaultInjector, vpc_id: str, *, tagged: bool):
    """Right before eic-guard's CreateSecurityGroup for eic-guard-ssh in `vpc_id`, another run (or, untagged, a
    person) creates a group of that name there; moto then refuses eic-guard's with InvalidGroup.Duplicate."""
    ec2 = boto3.client("ec2", REGION)
    return faults.before(
        "CreateSecurityGroup",
        lambda params: managed_group(ec2, vpc_id, tagged=tagged),
        when=lambda params: params.get("GroupName") == MANAGED_NAME and params.get("VpcId") == vpc_id,
    )


def test_scan_racing_another_run_uses_the_managed_group_it_created(faults: FaultInjector, account, ec2, ranges_2026):
    # Given an instance lacking SSH from EIC, and another run creating the VPC's tagged managed group first
    net = account.network()
    [instance] = launch(account, net)
    race = other_run_creates_the_group_first(faults, net.vpc_id, tagged=True)

    # When a remediate scan runs
    report = remediate_scan(faults, ranges_2026)

    # Then its own creation failed as a duplicate ...
    assert len(race.hits) == 1
    assert faults.answers_of("CreateSecurityGroup") == ["InvalidGroup.Duplicate"]
    # ... and it used the other run's group: topped up with the region's prefixes and attached to the ENI
    group = managed_group_in(ec2, net.vpc_id)
    assert ingress_of(group) == eic_rules(REGION, *US_EAST_1)
    assert eni_groups(ec2, instance) == [net.app_group_id, group]
    e = entry(report, instance)
    assert e.verdict == "fixed"
    assert not any(NOT_OURS in (c.reason or "") for c in e.checks.values())

    # And a second run writes nothing
    again = remediate_scan(faults, ranges_2026)
    assert faults.writes() == []
    assert entry(again, instance).verdict == "compliant"


def test_scan_racing_a_person_with_an_untagged_look_alike_refuses_it(faults: FaultInjector, account, ec2, ranges_2026):
    # Given an instance lacking SSH from EIC, and a person creating an untagged eic-guard-ssh group first
    net = account.network()
    [instance] = launch(account, net)
    other_run_creates_the_group_first(faults, net.vpc_id, tagged=False)

    # When a remediate scan runs
    report = remediate_scan(faults, ranges_2026)

    # Then the look-alike is refused with that reason, left untouched, and the ENI unchanged
    assert faults.answers_of("CreateSecurityGroup") == ["InvalidGroup.Duplicate"]
    look_alike = managed_group_in(ec2, net.vpc_id)
    assert ingress_of(look_alike) == set()
    assert eni_groups(ec2, instance) == [net.app_group_id]
    e = entry(report, instance)
    assert e.checks["eic-ssh-ingress"].status == "fail"
    assert NOT_OURS in e.checks["eic-ssh-ingress"].reason
    assert e.verdict == "noncompliant"

    # And a second run refuses it before any write
    again = remediate_scan(faults, ranges_2026)
    assert faults.writes() == []
    assert NOT_OURS in entry(again, instance).checks["eic-ssh-ingress"].reason
