"""Defect 9: one managed group refusing a write must not keep the region's other groups from their new prefixes.

Three managed groups in one region (one per VPC); AuthorizeSecurityGroupIngress on one of them is refused with
UnauthorizedOperation (e.g. an SCP or a permissions boundary that covers that VPC). The refused group is the first
one EC2 lists, so a loop that stops at the first failure leaves every other group behind. After the refresh: the
other groups have the new prefixes, the failure is reported per group, the status is `incomplete`, the state is not
advanced (so a retry applies the file again), and the SNS handler raises so that SNS retries the delivery.
"""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime, timedelta

import boto3
import pytest
import responses
from eic_guard.aws.clients import AwsClients
from eic_guard.ranges.refresh import RefreshIncomplete, apply_ranges
from eic_guard.ranges.state import DynamoDbStateStore, FileStateStore
from eic_guard.settings import IP_RANGES_URL, Settings

from functions.refresh import app as refresh_app
from tests.aws_views import ingress_of
from tests.conftest import EIC_US_EAST_1, EIC_US_EAST_1_V6, REGION, create_state_table
from tests.faults.conftest import (
    MANAGED_NAME,
    MANAGED_TAG,
    NEWEST_TOKEN,
    eic_rules,
    ip_ranges_file,
    managed_group,
    ranges_of,
)
from tests.faults.injector import FaultInjector
from tests.lambda_runtime import REFRESH_ARN, FakeLambdaContext, with_message

T0 = datetime(2026, 8, 22, 16, 0, tzinfo=UTC)
R1, R2 = "198.51.100.24/29", "198.51.100.32/29"  # TEST-NET-2: stand for prefixes AWS would add
TABLE = "eic-guard-state"
# The refresh's first file (IPv4 only) and the next one, which adds the IPv6 prefix.
FILE_V4 = ip_ranges_file(NEWEST_TOKEN, {REGION: (EIC_US_EAST_1,)})
FILE_V4_V6 = ip_ranges_file(NEWEST_TOKEN + 3600, {REGION: (EIC_US_EAST_1, EIC_US_EAST_1_V6)})


def three_managed_groups(*prefixes: str) -> list[str]:
    """Three managed groups in us-east-1, one per VPC, each allowing `prefixes`; in the order EC2 lists them."""
    ec2 = boto3.client("ec2", REGION)
    for n in range(3):
        vpc_id = ec2.create_vpc(CidrBlock=f"10.{20 + n}.0.0/16")["Vpc"]["VpcId"]
        managed_group(ec2, vpc_id, *prefixes)
    listed = ec2.describe_security_groups(
        Filters=[
            {"Name": f"tag:{MANAGED_TAG['Key']}", "Values": [MANAGED_TAG["Value"]]},
            {"Name": "group-name", "Values": [MANAGED_NAME]},
        ]
    )["SecurityGroups"]
    return [g["GroupId"] for g in listed]


def refuse_authorize(faults: FaultInjector, group_id: str):
    return faults.error(
        "AuthorizeSecurityGroupIngress",
        "UnauthorizedOperation",
        status=403,
        message="You are not authorized to perform this operation.",
        when=lambda p: p.get("GroupId") == group_id,
    )


def refresh(store, raw: bytes, at: datetime, *, replay_same: bool = False, grace_hours: int = 24):
    settings = Settings.build(regions=(REGION,), stale_prefix_grace_hours=grace_hours)
    return apply_ranges(AwsClients(), settings, store, ranges_of(raw), replay_same=replay_same, now=lambda: at)


def test_one_refused_group_leaves_the_others_refreshed_and_the_state_where_it_was(faults: FaultInjector, aws, tmp_path):
    # Given three managed groups in line with an IPv4-only file, the first one refusing AuthorizeSecurityGroupIngress
    refused, *others = three_managed_groups()
    store = FileStateStore(tmp_path / "state.json")
    refresh(store, FILE_V4, T0)
    token_before = store.load().sync_token
    denied = refuse_authorize(faults, refused)
    faults.clear()

    # When a file that adds the IPv6 prefix is applied
    result = refresh(store, FILE_V4_V6, T0 + timedelta(hours=1))

    # Then every other group has the new prefix, the refused one is as it was
    assert len(denied.hits) == 1
    for group in others:
        assert ingress_of(group) == eic_rules(REGION, EIC_US_EAST_1, EIC_US_EAST_1_V6)
    assert ingress_of(refused) == eic_rules(REGION, EIC_US_EAST_1)
    # And the refresh is incomplete, with an error naming the group and the code
    s = result.summary()
    assert s["status"] == "incomplete"
    assert isinstance(s["errors"], list) and all(isinstance(e, str) for e in s["errors"])
    assert any(refused in e and "UnauthorizedOperation" in e for e in s["errors"]), s["errors"]
    assert not any(g in e for e in s["errors"] for g in others)
    # And the state was not advanced
    assert store.load().sync_token == token_before

    # And once the group accepts writes again, a retry adds the prefix to it alone and advances the state
    faults.rules.clear()
    faults.clear()
    retried = refresh(store, FILE_V4_V6, T0 + timedelta(hours=2))
    assert retried.summary()["status"] == "applied"
    assert [c.params["GroupId"] for c in faults.calls if c.operation == "AuthorizeSecurityGroupIngress"] == [refused]
    assert ingress_of(refused) == eic_rules(REGION, EIC_US_EAST_1, EIC_US_EAST_1_V6)
    assert store.load().sync_token == str(NEWEST_TOKEN + 3600)

    # And applying it once more writes nothing
    faults.clear()
    refresh(store, FILE_V4_V6, T0 + timedelta(hours=3), replay_same=True)
    assert faults.writes() == []


def test_a_group_whose_additions_failed_is_never_revoked_from(faults: FaultInjector, aws, tmp_path):
    # Given three managed groups; the IPv4 prefix was replaced by R1 a day ago (so it is past its 24 h grace now)
    refused, *others = three_managed_groups()
    store = FileStateStore(tmp_path / "state.json")
    refresh(store, ip_ranges_file(NEWEST_TOKEN, {REGION: (EIC_US_EAST_1, EIC_US_EAST_1_V6)}), T0)
    refresh(store, ip_ranges_file(NEWEST_TOKEN + 3600, {REGION: (R1, EIC_US_EAST_1_V6)}), T0 + timedelta(hours=1))
    for group in (refused, *others):
        assert ingress_of(group) == eic_rules(REGION, EIC_US_EAST_1, R1, EIC_US_EAST_1_V6)
    # and the first group refusing AuthorizeSecurityGroupIngress
    refuse_authorize(faults, refused)

    # When a file that replaces R1 by R2 is applied 26 hours later
    result = refresh(
        store, ip_ranges_file(NEWEST_TOKEN + 7200, {REGION: (R2, EIC_US_EAST_1_V6)}), T0 + timedelta(hours=26)
    )

    # Then the other groups gained R2 and lost the expired prefix (R1 is in its grace period)
    for group in others:
        assert ingress_of(group) == eic_rules(REGION, R1, R2, EIC_US_EAST_1_V6)
    # And the refused group lost nothing: no revoke where the additions failed (add before revoke, per group)
    assert ingress_of(refused) == eic_rules(REGION, EIC_US_EAST_1, R1, EIC_US_EAST_1_V6)
    revoked = [c.params["GroupId"] for c in faults.calls if c.operation == "RevokeSecurityGroupIngress"]
    assert refused not in revoked
    assert sorted(revoked) == sorted(others)
    assert result.summary()["status"] == "incomplete"
    assert store.load().sync_token == str(NEWEST_TOKEN + 3600)


# ---- through the SNS refresh handler --------------------------------------------------------------------------------
@pytest.fixture
def table(aws, monkeypatch) -> DynamoDbStateStore:
    monkeypatch.setenv("EIC_GUARD_STATE_TABLE", TABLE)
    return DynamoDbStateStore(create_state_table(TABLE), TABLE)


@pytest.fixture
def http(aws):
    """Serves the pinned URL (started after moto, so it answers rather than moto's catch-all)."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def notification(raw: bytes) -> dict:
    token = int(ranges_of(raw).sync_token)
    created = datetime.fromtimestamp(token, UTC).strftime("%Y-%m-%d-%H-%M-%S")
    return with_message({"create-time": created, "synctoken": str(token), "md5": hashlib.md5(raw).hexdigest()})


def invoke(evt: dict, request_id: str):
    context = FakeLambdaContext(
        function_name="eic-guard-refresh", invoked_function_arn=REFRESH_ARN, aws_request_id=request_id
    )
    return refresh_app.lambda_handler(copy.deepcopy(evt), context)


@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
def test_refresh_handler_fails_the_invocation_so_sns_retries_and_the_retry_completes(
    faults: FaultInjector, table, http
):
    # Given three managed groups and the state at an IPv4-only file, AWS serving a file that adds the IPv6 prefix,
    # and the first group refusing AuthorizeSecurityGroupIngress
    refused, *others = three_managed_groups()
    refresh(table, FILE_V4, T0)
    token_before = table.load().sync_token
    http.add(responses.GET, IP_RANGES_URL, body=FILE_V4_V6)
    refuse_authorize(faults, refused)
    evt = notification(FILE_V4_V6)

    # When SNS delivers the notification
    with pytest.raises(RefreshIncomplete) as raised:
        invoke(evt, "first-delivery")

    # Then the invocation fails naming the group, after the other groups got the new prefix
    assert refused in str(raised.value)
    for group in others:
        assert ingress_of(group) == eic_rules(REGION, EIC_US_EAST_1, EIC_US_EAST_1_V6)
    assert ingress_of(refused) == eic_rules(REGION, EIC_US_EAST_1)
    assert table.load().sync_token == token_before

    # When SNS retries the delivery and the group accepts writes again
    faults.rules.clear()
    faults.clear()
    summary = invoke(evt, "retry")

    # Then the retry completes the refused group and advances the state
    assert summary["status"] == "applied"
    assert ingress_of(refused) == eic_rules(REGION, EIC_US_EAST_1, EIC_US_EAST_1_V6)
    assert [c.params["GroupId"] for c in faults.calls if c.operation == "AuthorizeSecurityGroupIngress"] == [refused]
    assert table.load().sync_token == str(NEWEST_TOKEN + 3600)
