"""Response timestamps (aws/clients.py parse_timestamp): eic-guard's clients read them with the standard library,
not dateutil (botocore's default, a fifth of a 5,000-instance scan's CPU), and get the values botocore would give."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
from botocore.utils import parse_timestamp as botocore_parse_timestamp
from eic_guard.aws.clients import AwsClients, parse_timestamp

from tests.conftest import REGION


@pytest.mark.parametrize(
    "raw",
    [
        "2026-08-22T15:50:37.000Z",  # EC2's LaunchTime, AttachTime
        "2026-08-22T15:50:37Z",
        "2026-08-22T15:50:37.123456Z",
        "2026-08-22T17:50:37+02:00",
        "2026-08-22T15:50:37.5+00:00",
    ],
)
def test_iso_timestamps_parse_to_the_instant_botocore_gives(raw):
    # Given a timestamp as AWS writes it in XML and query answers
    # When eic-guard's parser and botocore's default read it
    ours, theirs = parse_timestamp(raw), botocore_parse_timestamp(raw)

    # Then both are the same aware instant
    assert ours == theirs
    assert ours.utcoffset() == theirs.utcoffset()


@pytest.mark.parametrize("raw", [1787411825, 1787411825.5, "1787411825", "Sat, 22 Aug 2026 15:50:37 GMT"])
def test_other_timestamps_go_to_botocore(raw):
    # Given epoch seconds (JSON protocols) or an HTTP date (a header)
    # When eic-guard's parser reads them, Then the answer is botocore's own
    assert parse_timestamp(raw) == botocore_parse_timestamp(raw)


def test_clients_parse_ec2_timestamps_with_the_standard_library(account):
    # Given an instance (moto) and eic-guard's clients over a session
    instance_id = account.launch_drifted(account.network())
    clients = AwsClients(boto3.Session(region_name=REGION))

    # When DescribeInstances is read through them
    raw = clients.ec2(REGION).describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]

    # Then LaunchTime is the standard library's aware datetime (botocore's default gives a dateutil zone), same instant
    launched = raw["LaunchTime"]
    assert launched.tzinfo is UTC
    assert abs((datetime.now(UTC) - launched).total_seconds()) < 3600
