"""Defect 10: the nightly ip-ranges catch-up never aborts the scan.

The scan function (functions/scan/app.py) is invoked with the scheduled event, its state table in moto DynamoDB, a
reports bucket, an alerts topic (read back through an SQS subscription) and https://ip-ranges.amazonaws.com served
by `responses`. Whatever goes wrong with the catch-up (a file with no EIC prefix, a non-numeric syncToken, a state
item that cannot be read, a concurrent refresh advancing the state), the handler returns a summary covering every
opted-in instance, stores the report, alerts naming the problem, emits RefreshRejected with the problem's reason,
and cuts no access.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import boto3
import pytest
import responses
from eic_guard.aws.clients import AwsClients
from eic_guard.ranges.refresh import apply_ranges
from eic_guard.ranges.state import STATE_ITEM_ID, DynamoDbStateStore
from eic_guard.settings import IP_RANGES_URL, Settings
from eic_guard.simulated import ssh_from

from tests.aws_views import eni_groups, ingress_of, metadata_endpoint
from tests.conftest import IP_RANGES, REGION, create_state_table
from tests.faults.conftest import (
    NEWEST_TOKEN,
    US_EAST_1,
    eic_rules,
    ip_ranges_file,
    launch,
    managed_group,
    snapshot,
    snapshot_bytes,
)
from tests.faults.injector import FaultInjector
from tests.lambda_runtime import emf_blobs

TABLE = "eic-guard-state"
BUCKET = "eic-guard-reports-123456789012"
R1 = "198.51.100.24/29"  # TEST-NET-2: a prefix the scan must not adopt from a file it refused


@dataclass
class Nightly:
    """The deployed pieces around the scan function, and a fleet: one instance to fix, one compliant."""

    group: str  # the VPC's managed group, in line with the stored state
    fixable: str
    compliant: str
    app_group: str
    queue_url: str
    store: DynamoDbStateStore
    http: responses.RequestsMock
    nightly: Callable[[str], dict]  # the deployed state machine's nightly execution (conftest's nightly_execution)

    def serve(self, body: bytes) -> None:
        self.http.add(responses.GET, IP_RANGES_URL, body=body)

    def alerts(self) -> list[str]:
        sqs = boto3.client("sqs", REGION)
        messages = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        return [m["Body"] for m in messages]


@pytest.fixture
def nightly(account, ec2, monkeypatch, nightly_execution) -> Nightly:
    # The state table, the reports bucket and the alerts topic, subscribed to by a queue the test reads
    client = create_state_table(TABLE)
    boto3.client("s3", REGION).create_bucket(Bucket=BUCKET)
    sns, sqs = boto3.client("sns", REGION), boto3.client("sqs", REGION)
    topic = sns.create_topic(Name="eic-guard-alerts")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    for name, value in {
        "EIC_GUARD_REGIONS": REGION,
        "EIC_GUARD_MODE": "remediate",
        "EIC_GUARD_STATE_TABLE": TABLE,
        "EIC_GUARD_REPORTS_BUCKET": BUCKET,
        "EIC_GUARD_ALERTS_TOPIC_ARN": topic,
        "EIC_GUARD_TAG_INSTANCES": "false",  # TagInstances off: the EC2 writes counted below are the fixes alone
    }.items():
        monkeypatch.setenv(name, value)
    # A fleet: the VPC's managed group (empty), an instance lacking SSH from EIC and IMDS, a compliant instance
    net = account.network()
    group = managed_group(ec2, net.vpc_id)
    own_ssh = account.security_group(net, "eic-ssh", [ssh_from(*US_EAST_1)])
    [fixable] = launch(account, net, imds="disabled")
    [compliant] = launch(account, net, groups=[own_ssh])
    with responses.RequestsMock(assert_all_requests_are_fired=False) as http:
        store = DynamoDbStateStore(client, TABLE)
        yield Nightly(group, fixable, compliant, net.app_group_id, queue_url, store, http, nightly_execution)


def apply_stored(nightly: Nightly, day: str) -> None:
    """The state as the refresh function left it after applying the real snapshot of `day` (the group follows)."""
    settings = Settings.build(regions=(REGION,))
    apply_ranges(AwsClients(), settings, nightly.store, snapshot(day), replay_same=False)
    assert ingress_of(nightly.group) == eic_rules(REGION, *US_EAST_1)


def run_nightly(nightly: Nightly, request_id: str) -> dict:
    """The nightly execution of the deployed state machine (Plan → target workers → Aggregate), each step's context
    with its whole time ahead."""
    return nightly.nightly(request_id)


def rejections(stdout: str) -> list[str]:
    """The Reason of each RefreshRejected EMF metric printed."""
    return [blob["Reason"] for blob in emf_blobs(stdout) if "RefreshRejected" in blob]


def assert_scanned_and_published(nightly: Nightly, result: dict) -> None:
    """Every opted-in instance was scanned (and the fixable one fixed in AWS), the report stored in the bucket."""
    assert result["summary"] == dict(
        instances=2, compliant=1, fixed=1, noncompliant=0, excluded=0, errors=0, warnings=0, connect_paths={"public": 2}
    )
    assert eni_groups(boto3.client("ec2", REGION), nightly.fixable) == [nightly.app_group, nightly.group]
    assert metadata_endpoint(boto3.client("ec2", REGION), nightly.fixable) == "enabled"
    assert result["report_key"], result
    stored = json.loads(
        boto3.client("s3", REGION).get_object(Bucket=BUCKET, Key=f"{result['report_key']}.json")["Body"].read()
    )
    assert {i["instance_id"] for i in stored["instances"]} == {nightly.fixable, nightly.compliant}


def assert_second_night_changes_nothing(faults: FaultInjector, nightly: Nightly, reason: str) -> None:
    faults.clear()
    again = run_nightly(nightly, "second-night")
    assert faults.writes(service="ec2") == []
    assert again["summary"]["compliant"] == 2
    assert again["refresh"]["status"] == "failed" and again["refresh"]["reason"] == reason
    assert ingress_of(nightly.group) == eic_rules(REGION, *US_EAST_1)


def restamped(raw: bytes, sync_token: str) -> bytes:
    document = json.loads(raw)
    document["syncToken"] = sync_token
    document["createDate"] = datetime.fromtimestamp(int(sync_token), UTC).strftime("%Y-%m-%d-%H-%M-%S")
    return json.dumps(document).encode()


# ---- a downloaded file that cannot be used: scan with the stored prefixes ------------------------------------------
FILES = {
    # the real 2017 file (before EC2 Instance Connect existed) as a newer file: no EIC prefix at all
    "empty-eic-set": restamped((IP_RANGES / "ip-ranges-2017-11-30.json").read_bytes(), str(NEWEST_TOKEN + 3600)),
    # a syncToken that is not epoch seconds, with a prefix that must not be adopted
    "invalid-sync-token": ip_ranges_file("2026-08-22T17:00:00Z", {REGION: (R1,)}),
}


@pytest.mark.parametrize("reason", list(FILES))
def test_unusable_file_is_reported_and_the_scan_runs_with_the_stored_prefixes(
    faults: FaultInjector, nightly: Nightly, capsys, reason
):
    # Given the state and the managed group at 2026-08-22, and AWS serving a newer file that cannot be used
    apply_stored(nightly, "2026-08-22")
    nightly.serve(FILES[reason])
    capsys.readouterr()

    # When the nightly scan runs
    result = run_nightly(nightly, "night-1")

    # Then it scanned every instance with the stored prefixes, fixed what it could and stored the report
    assert result["ip_ranges"]["sync_token"] == str(NEWEST_TOKEN)
    assert_scanned_and_published(nightly, result)
    # And the catch-up is reported as failed with its reason, alerted and counted
    assert result["refresh"]["status"] == "failed"
    assert result["refresh"]["reason"] == reason
    assert any(reason in alert for alert in nightly.alerts())
    assert rejections(capsys.readouterr().out) == [reason]
    # And no access was cut, nothing adopted from the file, the state not advanced
    assert ingress_of(nightly.group) == eic_rules(REGION, *US_EAST_1)
    assert nightly.store.load().sync_token == str(NEWEST_TOKEN)

    # And the next night changes nothing in EC2
    assert_second_night_changes_nothing(faults, nightly, reason)


# ---- a state item that cannot be read: scan with the fresh file -------------------------------------------------
CORRUPT_ITEMS = {
    "not-json": {"document": {"S": '{"sync_token": "1787411825", "current": {"us-east-1": ['}},
    "wrong-shape": {"document": {"S": json.dumps({"sync_token": "1787411825", "current": {"us-east-1": 7}})}},
    "no-document": {"state": {"S": "1787411825"}},
    # valid JSON of the right shape, with a value that is not what it claims to be
    "bad-cidr": {"document": {"S": json.dumps({"sync_token": "1787411825", "current": {"us-east-1": ["1.2.3.4/33"]}})}},
    "bad-clock-prefix": {
        "document": {
            "S": json.dumps(
                {
                    "sync_token": "1787411825",
                    "current": {},
                    "last_seen": {"us-east-1": {"nowhere": "2026-08-22T00:00:00Z"}},
                }
            )
        }
    },
    "non-numeric-token": {"document": {"S": json.dumps({"sync_token": "yesterday", "current": {}})}},
}
CORRUPTION_REASONS = {
    "not-json": "Invalid JSON",
    "wrong-shape": "current.us-east-1: Input should be a valid array",
    "no-document": "the item has no document",
    "bad-cidr": "current: '1.2.3.4/33' is not a CIDR prefix",
    "bad-clock-prefix": "last_seen: 'nowhere' is not a CIDR prefix",
    "non-numeric-token": "sync_token: 'yesterday' is not a number",
}


@pytest.mark.parametrize("corruption", list(CORRUPT_ITEMS))
def test_corrupt_state_is_rebuilt_from_the_verified_download_alerted_once_and_the_scan_runs(
    faults: FaultInjector, nightly: Nightly, capsys, corruption
):
    # Given the managed group at 2026-08-22, a corrupt state item, and AWS serving 2026-08-22
    apply_stored(nightly, "2026-08-22")
    boto3.client("dynamodb", REGION).put_item(
        TableName=TABLE,
        Item={"id": {"S": STATE_ITEM_ID}, "sync_token": {"S": str(NEWEST_TOKEN)}, **CORRUPT_ITEMS[corruption]},
    )
    nightly.serve(snapshot_bytes("2026-08-22"))
    capsys.readouterr()

    # When the nightly scan runs
    result = run_nightly(nightly, "night-1")

    # Then it scanned every instance with the downloaded prefixes and stored the report
    assert result["ip_ranges"]["sync_token"] == str(NEWEST_TOKEN)
    assert_scanned_and_published(nightly, result)
    # And the state was rebuilt from the verified download: the catch-up applied, the item is a valid state again
    assert result["refresh"]["status"] == "applied", result["refresh"]
    state = nightly.store.load()
    assert state.corrupt is None
    assert (state.sync_token, state.current) == (str(NEWEST_TOKEN), {REGION: sorted(US_EAST_1)})
    # And the corruption is alerted, with what was wrong, and counted
    [alert] = nightly.alerts()
    assert "the stored ip-ranges state was corrupt (" in alert
    assert CORRUPTION_REASONS[corruption] in alert
    assert f"rebuilt from a verified download of ip-ranges.json (synctoken {NEWEST_TOKEN})" in alert
    assert rejections(capsys.readouterr().out) == ["state-corrupt"]
    # And the managed group's rules are unchanged
    assert ingress_of(nightly.group) == eic_rules(REGION, *US_EAST_1)

    # And the next night changes nothing, alerts nothing and counts nothing
    faults.clear()
    again = run_nightly(nightly, "second-night")
    assert faults.writes(service="ec2") == []
    assert again["summary"]["compliant"] == 2
    assert again["refresh"]["status"] == "applied" and again["refresh"]["alerts"] == []
    assert nightly.alerts() == []
    assert rejections(capsys.readouterr().out) == []
    assert ingress_of(nightly.group) == eic_rules(REGION, *US_EAST_1)


def test_corrupt_state_in_report_mode_is_reset_alerted_once_and_nothing_is_written_to_ec2(
    faults: FaultInjector, nightly: Nightly, capsys, monkeypatch
):
    # Given report mode, a state item with a bad CIDR, and AWS serving 2026-08-22
    monkeypatch.setenv("EIC_GUARD_MODE", "report")
    apply_stored(nightly, "2026-08-22")
    boto3.client("dynamodb", REGION).put_item(
        TableName=TABLE,
        Item={"id": {"S": STATE_ITEM_ID}, "sync_token": {"S": str(NEWEST_TOKEN)}, **CORRUPT_ITEMS["bad-cidr"]},
    )
    nightly.serve(snapshot_bytes("2026-08-22"))
    faults.clear()

    # When the nightly scan runs
    result = run_nightly(nightly, "night-1")

    # Then it wrote nothing to EC2, scanned both instances and planned the fix
    assert faults.writes(service="ec2") == []
    assert result["summary"]["instances"] == 2
    # And the corrupt item is now "no file applied yet" (what the refresh function records next), alerted once
    state = nightly.store.load()
    assert (state.corrupt, state.sync_token, state.current) == (None, None, {})
    [alert] = nightly.alerts()
    assert "the stored ip-ranges state was corrupt (current: '1.2.3.4/33' is not a CIDR prefix" in alert
    assert "reset to no file applied" in alert
    run_nightly(nightly, "night-2")
    assert faults.writes(service="ec2") == []
    assert not any("corrupt" in a for a in nightly.alerts())


# ---- a concurrent refresh advancing the state between our read and our write -----------------------------------
def is_state_put(params: dict) -> bool:
    return params.get("Item", {}).get("id", {}).get("S") == STATE_ITEM_ID


def test_state_conflict_is_retried_once_on_the_new_state_and_succeeds(faults: FaultInjector, nightly: Nightly):
    # Given the state at 2026-06-01, AWS serving 2026-08-22, and the SNS refresh for 2026-08-22 saving its state
    # just before the nightly run saves its own
    apply_stored(nightly, "2026-06-01")
    nightly.serve(snapshot_bytes("2026-08-22"))

    def concurrent_refresh(params):
        other = DynamoDbStateStore(boto3.client("dynamodb", REGION), TABLE)
        apply_ranges(AwsClients(), Settings.build(regions=(REGION,)), other, snapshot("2026-08-22"), replay_same=False)

    race = faults.before("PutItem", concurrent_refresh, service="dynamodb", when=is_state_put)
    faults.clear()

    # When the nightly scan runs
    result = run_nightly(nightly, "night-1")

    # Then its first save met the conflict, and its retry on the new state succeeded
    assert len(race.hits) == 1
    assert faults.answers_of("PutItem") == ["ConditionalCheckFailedException", "ok"]
    assert result["refresh"]["status"] == "applied"
    assert result["refresh"]["sync_token"] == str(NEWEST_TOKEN)
    assert nightly.store.load().sync_token == str(NEWEST_TOKEN)
    # And the scan ran over every instance, with the report stored; no access was cut
    assert_scanned_and_published(nightly, result)
    assert ingress_of(nightly.group) == eic_rules(REGION, *US_EAST_1)

    # And the next night changes nothing in EC2
    faults.clear()
    again = run_nightly(nightly, "night-2")
    assert faults.writes(service="ec2") == []
    assert again["summary"]["compliant"] == 2
    assert again["refresh"]["status"] == "applied"


def test_state_conflict_that_persists_is_reported_and_the_scan_runs(faults: FaultInjector, nightly: Nightly, capsys):
    # Given the state at 2026-06-01, AWS serving 2026-08-22, and every save of the state losing to another run
    apply_stored(nightly, "2026-06-01")
    token_before = nightly.store.load().sync_token
    nightly.serve(snapshot_bytes("2026-08-22"))
    lost = faults.error(
        "PutItem",
        "ConditionalCheckFailedException",
        service="dynamodb",
        message="The conditional request failed",
        when=is_state_put,
    )
    capsys.readouterr()

    # When the nightly scan runs
    result = run_nightly(nightly, "night-1")

    # Then it tried twice (the first try and one retry) and reported the conflict, alerted and counted it
    assert len(lost.hits) == 2
    assert result["refresh"]["status"] == "failed"
    assert result["refresh"]["reason"] == "state-conflict"
    assert any("state-conflict" in alert for alert in nightly.alerts())
    assert rejections(capsys.readouterr().out) == ["state-conflict"]
    assert nightly.store.load().sync_token == token_before
    # And the scan ran over every instance, with the report stored; no access was cut
    assert_scanned_and_published(nightly, result)
    assert ingress_of(nightly.group) == eic_rules(REGION, *US_EAST_1)

    # And the next night changes nothing in EC2
    assert_second_night_changes_nothing(faults, nightly, "state-conflict")
