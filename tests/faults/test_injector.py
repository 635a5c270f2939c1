"""The fault injector itself: a fault that does not fire, or fires differently than documented, would let the
defect tests pass for nothing."""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import REGION
from tests.faults.injector import FaultInjector, FaultyMotoServer

STANDARD_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 4})


def test_error_is_answered_before_sending_is_not_retried_and_stops_after_times(faults: FaultInjector, aws):
    # Given DescribeVpcs failing once with a 500 that botocore would retry if it came from the wire
    ec2 = boto3.client("ec2", REGION, config=STANDARD_RETRIES)
    rule = faults.error("DescribeVpcs", "InternalError", status=500, times=1)

    # When it is called twice, then once more while the injector is paused
    with pytest.raises(ClientError) as raised:
        ec2.describe_vpcs()
    ec2.describe_vpcs()
    with faults.paused():
        ec2.describe_vpcs()

    # Then the first call got the error on its only attempt, the second went through, the paused one is not recorded
    assert raised.value.response["Error"]["Code"] == "InternalError"
    assert len(rule.hits) == 1
    assert [a.outcome for a in faults.attempts_of("DescribeVpcs")] == ["InternalError", "sent"]
    assert faults.answers_of("DescribeVpcs") == ["InternalError", "ok"]
    assert faults.count("DescribeVpcs") == 2


def test_respond_is_retried_by_botocore_and_never_reaches_moto(faults: FaultInjector, aws, no_backoff):
    # Given CreateVpc answered with a throttling response on every attempt
    ec2 = boto3.client("ec2", REGION, config=STANDARD_RETRIES)
    vpcs_before = len(ec2.describe_vpcs()["Vpcs"])
    faults.respond("CreateVpc", "RequestLimitExceeded", status=503)

    # When a VPC is created
    with pytest.raises(ClientError) as raised:
        ec2.create_vpc(CidrBlock="10.9.0.0/16")

    # Then botocore tried four times, and no attempt created anything in moto
    assert raised.value.response["Error"]["Code"] == "RequestLimitExceeded"
    assert [a.outcome for a in faults.attempts_of("CreateVpc")] == ["RequestLimitExceeded"] * 4
    assert len(ec2.describe_vpcs()["Vpcs"]) == vpcs_before


@pytest.mark.e2e
def test_server_middleware_counts_per_operation_and_its_throttling_is_retried(server: FaultyMotoServer, no_backoff):
    # Given the server throttling the first two DescribeVpcs requests
    server.faults.fail("DescribeVpcs", 503, "RequestLimitExceeded", times=2)

    # When an EC2 (Query API) and a DynamoDB (JSON API) call are made against it
    vpcs = boto3.client("ec2", REGION, config=STANDARD_RETRIES).describe_vpcs()["Vpcs"]
    boto3.client("dynamodb", REGION, config=STANDARD_RETRIES).list_tables()

    # Then the EC2 call succeeded on its third request, and each request was counted under its operation
    assert vpcs
    assert server.faults.counts["DescribeVpcs"] == 3
    assert server.faults.counts["ListTables"] == 1
