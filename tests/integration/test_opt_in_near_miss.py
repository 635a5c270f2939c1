"""Some instance carries a near-miss of the opt-in tag: the inventory says so in a target note, with one bounded
DescribeTags per region (moto), whether or not other instances are opted in; an event-driven check never looks."""

from __future__ import annotations

from datetime import date

import boto3
import pytest
from botocore.exceptions import ClientError
from eic_guard.aws.inventory import gather
from eic_guard.engine import scan_target
from eic_guard.settings import Settings

from tests.conftest import REGION

ACCOUNT = "123456789012"
TODAY = date(2026, 8, 23)


def settings(**overrides) -> Settings:
    return Settings.build(regions=(REGION,), mode="report", **overrides)


def recorded_ec2():
    """A client of a new session, so that the api_calls fixture records its calls."""
    return boto3.Session(region_name=REGION).client("ec2")


def launch_tagged(account, tags: dict[str, str], count: int = 1, name: str | None = None) -> list[str]:
    """Instances that are not opted in (no exact eic-guard:managed=true) but carry `tags`."""
    net = account.network()
    return account.launch(
        image_id=account.al2023_ami(),
        subnet_id=net.public_subnet_id,
        group_ids=[net.app_group_id],
        tags=tags,
        count=count,
        opted_in=False,
        name=name,
    )


@pytest.mark.parametrize(
    ("tags", "tagged", "problem"),
    [
        ({"eic-guard:managed": "True"}, "eic-guard:managed=True", "the value must be exactly `true`"),
        ({"eic-guard:managed": "TRUE"}, "eic-guard:managed=TRUE", "the value must be exactly `true`"),
        ({"eic-guard:managed": "yes"}, "eic-guard:managed=yes", "the value must be exactly `true`"),
        ({"eic-guard:managed": "Yes"}, "eic-guard:managed=Yes", "the value must be exactly `true`"),
        ({"eic-guard:managed": "1"}, "eic-guard:managed=1", "the value must be exactly `true`"),
        ({"eic-guard:managed": "on"}, "eic-guard:managed=on", "the value must be exactly `true`"),
        ({"eic-guard:managed": "true "}, "eic-guard:managed='true '", "the value must be exactly `true`"),
        (
            {"EIC-Guard:Managed": "true"},
            "EIC-Guard:Managed=true",
            "the key must be exactly `eic-guard:managed` (tag keys are case-sensitive)",
        ),
        (
            {"Eic-Guard:managed": "Yes"},
            "Eic-Guard:managed=Yes",
            "the key must be exactly `eic-guard:managed` (tag keys are case-sensitive) and the value exactly `true`",
        ),
    ],
)
def test_a_near_miss_of_the_opt_in_tag_is_named_in_a_target_note(account, api_calls, tags, tagged, problem):
    # Given no opted-in instance, and one instance named web-1 carrying a near-miss of the opt-in tag
    [instance] = launch_tagged(account, tags, name="web-1")
    api_calls.clear()

    # When the region is gathered
    snapshot = gather(recorded_ec2(), ACCOUNT, REGION, settings())

    # Then nothing is scanned, and one note names the instance, the tag it carries and what is wrong with it
    assert snapshot.instances == ()
    assert snapshot.notes == (f"0 instances opted in here, but {instance} (web-1) is tagged {tagged}: {problem}",)
    # And the look-up was one DescribeTags for the opt-in key in any case, plus one DescribeInstances for what it found
    assert api_calls.names()[:3] == ["DescribeInstances", "DescribeTags", "DescribeInstances"]
    [(_, params)] = [c for c in api_calls.calls if c[0] == "DescribeTags"]
    assert params["Filters"] == [
        {"Name": "resource-type", "Values": ["instance"]},
        {"Name": "key", "Values": ["???-?????:???????", "eic-guard:managed"]},
    ]
    assert params["MaxResults"] == 1000


@pytest.mark.parametrize(
    "tags",
    [
        {"eic-guard:managed": "false"},
        {"eic-guard:managed": "no"},
        {"eic-guard:managed-by": "true"},
        {"eic-guard:exclude": "true"},
        {"Purpose": "eic-guard:managed=true"},
    ],
    ids=["false", "no", "other-key", "exclude-key", "other-tag-mentioning-it"],
)
def test_a_tag_that_is_not_a_near_miss_makes_no_note(account, api_calls, tags):
    # Given no opted-in instance, and one instance with a tag that only looks like the opt-in
    launch_tagged(account, tags)
    api_calls.clear()

    # When the region is gathered
    snapshot = gather(recorded_ec2(), ACCOUNT, REGION, settings())

    # Then there is no note, and no instance was read beyond the opted-in query
    assert snapshot.notes == ()
    assert api_calls.names()[:3] == ["DescribeInstances", "DescribeTags", "DescribeManagedPrefixLists"]


def test_a_near_miss_is_named_even_where_other_instances_are_opted_in(account, api_calls):
    # Given one opted-in instance and one with a near-miss of the opt-in tag
    net = account.network()
    account.launch(image_id=account.al2023_ami(), subnet_id=net.public_subnet_id, group_ids=[net.app_group_id])
    [near_miss] = launch_tagged(account, {"eic-guard:managed": "True"})
    api_calls.clear()

    # When the region is gathered
    snapshot = gather(recorded_ec2(), ACCOUNT, REGION, settings())

    # Then the mistyped instance is named (it is not watched), at the price of one DescribeTags
    assert len(snapshot.instances) == 1
    assert api_calls.names().count("DescribeTags") == 1
    assert snapshot.notes == (
        f"1 instance opted in here, but {near_miss} is tagged eic-guard:managed=True: the value must be exactly `true`",
    )


def test_a_fleet_without_near_misses_pays_one_describe_tags_and_gets_no_note(account, api_calls):
    # Given one opted-in instance and nothing mistyped
    net = account.network()
    account.launch(image_id=account.al2023_ami(), subnet_id=net.public_subnet_id, group_ids=[net.app_group_id])
    api_calls.clear()

    # When the region is gathered
    snapshot = gather(recorded_ec2(), ACCOUNT, REGION, settings())

    # Then one DescribeTags page was read, no instance was looked up for it, and there is no note
    assert api_calls.names().count("DescribeTags") == 1
    assert api_calls.names().count("DescribeInstances") == 1
    assert snapshot.notes == ()


def test_an_event_driven_scan_of_given_instances_never_looks_for_near_misses(account, api_calls):
    # Given an instance with a near-miss of the opt-in tag
    [instance] = launch_tagged(account, {"eic-guard:managed": "True"})
    api_calls.clear()

    # When only that instance is gathered (an event-driven check)
    snapshot = gather(recorded_ec2(), ACCOUNT, REGION, settings(), instance_ids=[instance])

    # Then it is not opted in, and no DescribeTags was made (the on-change role does not grant it)
    assert snapshot.instances == ()
    assert "DescribeTags" not in api_calls.names()
    assert snapshot.notes == ()


def test_the_note_names_at_most_five_live_instances_and_counts_the_others(account, ec2):
    # Given eight instances with a near-miss of the opt-in tag, one of them terminated
    instances = sorted(launch_tagged(account, {"eic-guard:managed": "yes"}, count=8))
    ec2.terminate_instances(InstanceIds=[instances[0]])

    # When the region is gathered
    snapshot = gather(ec2, ACCOUNT, REGION, settings())

    # Then the first five live ones are named (no Name tag: no parentheses), the other two counted, the terminated
    # one left out
    assert snapshot.notes == (
        *(
            f"0 instances opted in here, but {i} is tagged eic-guard:managed=yes: the value must be exactly `true`"
            for i in instances[1:6]
        ),
        "... and 2 more instance(s) with a near-miss opt-in tag",
    )


def test_a_configured_opt_in_tag_is_matched_in_any_case_and_values_are_not_read_as_true(account, ec2):
    # Given the opt-in tag Team=platform, and instances tagged team=platform, Team=Platform and Team=yes
    [lower_key] = launch_tagged(account, {"team": "platform"})
    [capital_value] = launch_tagged(account, {"Team": "Platform"})
    launch_tagged(account, {"Team": "yes"})

    # When the region is gathered with that opt-in tag
    snapshot = gather(ec2, ACCOUNT, REGION, settings(tag_key="Team", tag_value="platform"))

    # Then the key in another case and the value in another case are near-misses; "yes" means true only for `true`
    assert sorted(snapshot.notes) == sorted(
        [
            f"0 instances opted in here, but {lower_key} is tagged team=platform: the key must be exactly `Team` "
            "(tag keys are case-sensitive)",
            f"0 instances opted in here, but {capital_value} is tagged Team=Platform: the value must be exactly "
            "`platform`",
        ]
    )


def test_the_scan_of_the_target_carries_the_note(account, ec2, ranges_2026):
    # Given a region whose only candidate instance is tagged eic-guard:managed=True
    [instance] = launch_tagged(account, {"eic-guard:managed": "True"}, name="web-1")

    # When the target is scanned
    result = scan_target(ec2, ACCOUNT, REGION, settings(), ranges_2026, TODAY)

    # Then the target result carries the note for the report, and no instance
    assert result.outcomes == []
    assert result.notes == [
        f"0 instances opted in here, but {instance} (web-1) is tagged eic-guard:managed=True: "
        "the value must be exactly `true`"
    ]


class DescribeTagsRefused:
    """An EC2 client whose role does not grant ec2:DescribeTags (a member stack deployed before the look-up)."""

    def __init__(self, ec2, code: str):
        self.ec2, self.code = ec2, code

    def __getattr__(self, name):
        return getattr(self.ec2, name)

    def get_paginator(self, operation: str):
        if operation == "describe_tags":
            error = {"Error": {"Code": self.code, "Message": "You are not authorized to perform this operation."}}
            raise ClientError(error, "DescribeTags")
        return self.ec2.get_paginator(operation)


def test_a_role_without_describe_tags_still_scans_the_region(account, ec2):
    # Given a near-miss instance, and a role that refuses DescribeTags
    launch_tagged(account, {"eic-guard:managed": "True"})

    # When the region is gathered
    snapshot = gather(DescribeTagsRefused(ec2, "UnauthorizedOperation"), ACCOUNT, REGION, settings())

    # Then the region is gathered as before, without the advice
    assert snapshot.instances == ()
    assert snapshot.notes == ()


def test_any_other_describe_tags_error_fails_the_target_as_usual(account, ec2):
    # Given a near-miss instance, and DescribeTags failing for another reason than permissions
    launch_tagged(account, {"eic-guard:managed": "True"})

    # When the region is gathered, then the error is the target's, as for every other describe
    with pytest.raises(ClientError, match="RequestLimitExceeded"):
        gather(DescribeTagsRefused(ec2, "RequestLimitExceeded"), ACCOUNT, REGION, settings())
