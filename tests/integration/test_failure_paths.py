"""Nothing lost on any failure path (issue 19, item 3), at the handlers (moto): Plan, each target's worker and
Aggregate invoked as Step Functions invokes them, one failure injected between them. Each failure is its own
target's (or the state's) problem, named in the report and the alert; every other target is reported, alerted and
metered, and the run's state is advanced."""

from __future__ import annotations

import json
from dataclasses import dataclass

import boto3
import pytest
import responses
from eic_guard.outputs.alerts import ALERT_STATE_ITEM_ID
from eic_guard.ranges.state import STATE_ITEM_ID, DynamoDbStateStore
from eic_guard.settings import IP_RANGES_URL

from tests.aws_views import metadata_endpoint
from tests.conftest import EIC_US_EAST_1, EIC_US_EAST_1_V6, IP_RANGES, REGION, create_state_table
from tests.lambda_runtime import REFRESH_ARN, FakeLambdaContext, emf_blobs, event, load_handler

BUCKET = "eic-guard-reports-123456789012"
TABLE = "eic-guard-state"
OTHER_REGION = "us-west-2"
ACCOUNT = "123456789012"  # moto's default account
SNAPSHOT = IP_RANGES / "ip-ranges-2026-08-22.json"
SSH_FROM_EIC = [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": EIC_US_EAST_1}]}]
# Plan publishes no application metric; Powertools warns about that on flush.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")


@dataclass
class Deployed:
    """The stack's bucket, table and alerts topic, with a queue subscribed to the topic to read what was sent."""

    s3: object
    dynamodb: object
    sqs: object
    queue_url: str

    def alerts(self) -> list[dict]:
        received = []
        while batch := self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages"):
            for message in batch:
                received.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return received

    def report(self, key: str) -> dict:
        return json.loads(self.s3.get_object(Bucket=BUCKET, Key=f"{key}.json")["Body"].read())

    def put(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=body)


@pytest.fixture
def deployed(aws, monkeypatch) -> Deployed:
    s3 = boto3.client("s3", REGION)
    s3.create_bucket(Bucket=BUCKET)
    dynamodb = create_state_table(TABLE)
    topic_arn = boto3.client("sns", REGION).create_topic(Name="eic-guard-alerts")["TopicArn"]
    sqs = boto3.client("sqs", REGION)
    queue_url = sqs.create_queue(QueueName="alerts-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    boto3.client("sns", REGION).subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    for name, value in {
        "EIC_GUARD_REGIONS": f"{REGION},{OTHER_REGION}",
        "EIC_GUARD_MODE": "remediate",
        "EIC_GUARD_REPORTS_BUCKET": BUCKET,
        "EIC_GUARD_STATE_TABLE": TABLE,
        "EIC_GUARD_ALERTS_TOPIC_ARN": topic_arn,
    }.items():
        monkeypatch.setenv(name, value)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as http:
        http.add(responses.GET, IP_RANGES_URL, body=SNAPSHOT.read_bytes())
        yield Deployed(s3, dynamodb, sqs, queue_url)


def fleet(account) -> tuple[str, str]:
    """In us-east-1: one instance eic-guard fixes (metadata endpoint off), one it cannot (not Amazon Linux 2023)."""
    net = account.network()
    eic_ssh = account.security_group(net, "eic-ssh", SSH_FROM_EIC)
    [fixable] = account.launch(
        image_id=account.al2023_ami(),
        subnet_id=net.public_subnet_id,
        group_ids=[eic_ssh],
        public_ip=True,
        imds="disabled",
    )
    [wrong_ami] = account.launch(
        image_id=account.own_image("ubuntu-22.04-custom"),
        subnet_id=net.public_subnet_id,
        group_ids=[eic_ssh],
        public_ip=True,
    )
    return fixable, wrong_ami


class Steps:
    """The three handlers, invoked with what Step Functions passes them (statemachine/eic_guard.asl.json)."""

    def __init__(self):
        self.plan = load_handler("plan", "eic_guard_plan_app_failures")
        self.worker = load_handler("scan_target", "eic_guard_scan_target_app_failures")
        self.aggregate = load_handler("aggregate", "eic_guard_aggregate_app_failures")

    def plan_and_workers(self, execution_input: dict) -> tuple[dict, list[dict]]:
        plan = self.plan(execution_input, FakeLambdaContext(remaining_ms=300_000))
        items = json.loads(boto3.client("s3", REGION).get_object(Bucket=BUCKET, Key=plan["targets_key"])["Body"].read())
        outputs = []
        for item in items:
            request = {key: plan[key] for key in ("run_id", "bucket", "manifest_key")}
            outputs.append(self.worker({**request, "target": item, "phase": "apply", "round": 1}, FakeLambdaContext()))
        return plan, outputs

    def finish(self, plan: dict) -> dict:
        return self.aggregate(plan, FakeLambdaContext(remaining_ms=300_000))


# ---- 1. one unreadable result object ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (lambda good: good[: len(good) // 2], "not JSON (EOF while parsing"),
        (lambda good: b"{}", "account_id: Field required"),
        (lambda good: b"[1,2]", "Input should be an object"),
        (lambda good: good.replace(b'"instances": []', b'"instances": {}'), "instances: Input should be a valid array"),
    ],
    ids=["truncated", "empty-object", "array", "wrong-type"],
)
def test_one_unreadable_result_object_is_its_targets_error_and_the_rest_is_reported_alerted_and_metered(
    account, ec2, deployed, capsys, body, reason
):
    # Given a nightly run whose two targets' workers have run: us-east-1 fixed one instance and found one it cannot
    # fix; us-west-2 has no instance, and its result object is then damaged (another layer version, a hand edit)
    fixable, wrong_ami = fleet(account)
    steps = Steps()
    plan, outputs = steps.plan_and_workers({"job": "scan"})
    [damaged] = [o["result_key"] for o in outputs if o["target"]["region"] == OTHER_REGION]
    good = deployed.s3.get_object(Bucket=BUCKET, Key=damaged)["Body"].read()
    deployed.put(damaged, body(good))
    capsys.readouterr()

    # When Aggregate runs
    summary = steps.finish(plan)

    # Then the run's summary counts the damaged target as an error and the other as ok
    assert summary["targets"] == {"ok": 1, "error": 1, "incomplete": 0}
    assert (summary["summary"]["fixed"], summary["summary"]["noncompliant"], summary["summary"]["errors"]) == (1, 1, 1)
    # And the stored report names the damaged target's error, and lists every instance of the other target
    report = deployed.report(summary["report_key"])
    [error] = report["target_errors"]
    assert (error["account_id"], error["region"]) == (ACCOUNT, OTHER_REGION)
    assert error["error"].startswith(f"result object unreadable: {reason}"), error["error"]
    assert {e["instance_id"]: e["verdict"] for e in report["instances"]} == {
        fixable: "fixed",
        wrong_ami: "noncompliant",
    }
    # And the alert names both problems
    [alert] = deployed.alerts()
    assert f"{OTHER_REGION} could not be scanned: result object unreadable: {reason}" in alert["Message"]
    assert f"{wrong_ami}" in alert["Message"] and "al2023-ami fail" in alert["Message"]
    # And the metrics count the run and the target error
    metrics = {name for blob in emf_blobs(capsys.readouterr().out) for name in blob if not name.startswith("_")}
    assert {"InstancesNoncompliant", "TargetErrors"} <= metrics, metrics
    # And the alert state advanced (the next run alerts only what is new)
    item = deployed.dynamodb.get_item(TableName=TABLE, Key={"id": {"S": ALERT_STATE_ITEM_ID}})
    assert "Item" in item
    # And the fix made stays made
    assert metadata_endpoint(ec2, fixable) == "enabled"


# ---- 2. a corrupt ip-ranges state item, on the SNS refresh path ----------------------------------------------------
CORRUPT_DOCUMENTS = {
    "bad-cidr": json.dumps({"sync_token": "1700000000", "current": {REGION: ["1.2.3.4/33"]}}),
    "not-json": '{"sync_token": "1700000000", "current": {"us-east-1": [',
}


@pytest.mark.parametrize("corruption", list(CORRUPT_DOCUMENTS))
def test_a_corrupt_state_item_is_rebuilt_by_the_next_notification_not_rejected_to_the_dead_letter_queue(
    deployed, monkeypatch, corruption
):
    # Given the deployed refresh (its state machine) and a state item that is valid JSON with a bad CIDR, or not JSON
    monkeypatch.setenv("EIC_GUARD_REGIONS", REGION)
    stepfunctions = boto3.client("stepfunctions", REGION)
    machine = stepfunctions.create_state_machine(
        name="eic-guard",
        definition=json.dumps({"StartAt": "Plan", "States": {"Plan": {"Type": "Pass", "End": True}}}),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/eic-guard-state-machine",
    )["stateMachineArn"]
    monkeypatch.setenv("EIC_GUARD_STATE_MACHINE_ARN", machine)
    deployed.dynamodb.put_item(
        TableName=TABLE,
        Item={
            "id": {"S": STATE_ITEM_ID},
            "sync_token": {"S": "1700000000"},
            "document": {"S": CORRUPT_DOCUMENTS[corruption]},
        },
    )
    refresh = load_handler("refresh", "eic_guard_refresh_app_failures")
    context = FakeLambdaContext(function_name="eic-guard-refresh", invoked_function_arn=REFRESH_ARN)

    # When AmazonIpSpaceChanged announces the 2026-08-22 file
    summary = refresh(event("sns-ip-space-changed-current.json"), context)

    # Then the notification is accepted: the state is rebuilt from its verified file and the refresh job started
    assert summary["status"] == "started"
    state = DynamoDbStateStore(deployed.dynamodb, TABLE).load()
    assert state.corrupt is None
    assert state.sync_token == summary["sync_token"] == "1787411825"
    assert state.current[REGION] == sorted([EIC_US_EAST_1, EIC_US_EAST_1_V6])
    [execution] = stepfunctions.list_executions(stateMachineArn=machine)["executions"]
    assert execution["name"] == "refresh-1787411825"
    # And the repair is alerted once, saying what was wrong
    [alert] = deployed.alerts()
    assert "the stored ip-ranges state was corrupt (" in alert["Message"]
    assert "rebuilt from this notification's verified ip-ranges.json (synctoken 1787411825)" in alert["Message"]
    assert ("'1.2.3.4/33' is not a CIDR prefix" if corruption == "bad-cidr" else "Invalid JSON") in alert["Message"]
