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
from eic_guard.fanout.results import LOST_CHANGES_LISTED, LOST_DETAIL_CHARS, LOST_RECORD_BYTES, LostResult, lost_record
from eic_guard.outputs.alerts import ALERT_STATE_ITEM_ID
from eic_guard.ranges.state import STATE_ITEM_ID, DynamoDbStateStore
from eic_guard.settings import IP_RANGES_URL

from tests.aws_views import metadata_endpoint, sns_deliveries
from tests.conftest import EIC_US_EAST_1, EIC_US_EAST_1_V6, IP_RANGES, REGION, create_state_table
from tests.faults.injector import FaultInjector
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
        return sns_deliveries(self.sqs, self.queue_url)

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
    # And the metrics count the run and its errors (per account only with PerAccountMetrics=true: off by default)
    metrics = {name for blob in emf_blobs(capsys.readouterr().out) for name in blob if not name.startswith("_")}
    assert {"InstancesNoncompliant", "Errors"} <= metrics, metrics
    assert "TargetErrors" not in metrics and "AccountId" not in metrics
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


# ---- 3. a result object that cannot be written after the target's changes were made --------------------------------
def is_result_put(params: dict) -> bool:
    return "/results/" in str(params.get("Key", ""))


def test_a_result_object_put_that_fails_once_is_retried_and_the_target_reported_as_usual(
    account, ec2, deployed, monkeypatch
):
    # Given S3 answering the first attempt to write each result object with a 500
    fixable, wrong_ami = fleet(account)
    faults = FaultInjector().install(monkeypatch)
    failed = faults.respond("PutObject", "InternalError", service="s3", status=500, when=is_result_put, times=1)
    steps = Steps()

    # When the run's steps run
    plan, outputs = steps.plan_and_workers({"job": "scan"})
    summary = steps.finish(plan)

    # Then botocore's retry wrote the object: nothing was lost, the target is reported from its object
    assert len(failed.hits) == 1
    assert all(o["result_key"] and "result_lost" not in o for o in outputs)
    assert summary["targets"] == {"ok": 2, "error": 0, "incomplete": 0}
    report = deployed.report(summary["report_key"])
    assert {e["instance_id"]: e["verdict"] for e in report["instances"]} == {
        fixable: "fixed",
        wrong_ami: "noncompliant",
    }


def test_a_result_object_that_cannot_be_written_is_reported_scanned_result_lost_with_its_changes(
    account, ec2, deployed, monkeypatch
):
    # Given S3 refusing every us-east-1 result object (a bucket policy, a KMS key the worker may not use...)
    fixable, wrong_ami = fleet(account)
    faults = FaultInjector().install(monkeypatch)
    refused = faults.error(
        "PutObject",
        "AccessDenied",
        service="s3",
        status=403,
        when=lambda params: is_result_put(params) and f"/{REGION}/" in params["Key"],
    )
    steps = Steps()

    # When the run's steps run
    plan, outputs = steps.plan_and_workers({"job": "scan"})
    summary = steps.finish(plan)

    # Then the us-east-1 worker returned, without raising, a bounded record of what it did
    assert len(refused.hits) == 1
    [lost] = [o for o in outputs if o["target"]["region"] == REGION]
    assert lost["result_key"] is None and lost["status"] == "ok"
    # And kept the whole record in the state table, where Aggregate found it (the map item's output is not read)
    key = f"lost#{plan['run_id']}#results/{ACCOUNT}/{REGION}/apply-r1.json"
    item = deployed.dynamodb.get_item(TableName=TABLE, Key={"id": {"S": key}})["Item"]
    record = json.loads(item["document"]["S"])
    assert int(item["expiration"]["N"]) > 0
    assert (record["instances"], record["status"]) == (2, "ok")
    assert record["changes"] == len(record["listed"]) == 1
    assert {(c["action"], c["resource"], c["status"]) for c in record["listed"]} >= {("enable-imds", fixable, "done")}
    assert "AccessDenied" in record["reason"]
    # And its output carries the same record, sampled (a bounded Step Functions payload), and where it is kept
    assert lost["result_lost"]["kept_as"] == key
    assert (lost["result_lost"]["changes"], lost["result_lost"]["listed_total"]) == (1, 1)
    assert lost["result_lost"]["listed"] == record["listed"]
    # And the fixes it made are made
    assert metadata_endpoint(ec2, fixable) == "enabled"
    # And the report says the target was scanned, its result lost, and lists the changes made, not "not scanned"
    assert summary["targets"] == {"ok": 1, "error": 1, "incomplete": 0}
    report = deployed.report(summary["report_key"])
    [error] = report["target_errors"]
    assert error["region"] == REGION
    assert error["error"].startswith("scanned, result lost, 1 change made, 2 instances checked;")
    assert "PutObject" in error["error"] and "AccessDenied" in error["error"]
    changes = [(a["action"], a["resource"], a["status"]) for a in report["target_actions"] if a["region"] == REGION]
    assert changes == [(c["action"], c["resource"], c["status"]) for c in record["listed"]]
    # And so does the alert, with the changes
    [alert] = deployed.alerts()
    [line] = [line for line in alert["Message"].splitlines() if line.startswith(f"- {ACCOUNT} {REGION} ")]
    assert line.startswith(f"- {ACCOUNT} {REGION} scanned, result lost, 1 change made, 2 instances checked;")
    assert f"enable-imds {fixable} (done)" in line
    assert "could not be scanned" not in line

    # And the next run, with S3 writable again, changes nothing and reports both instances from their objects
    faults.rules.clear()
    plan, outputs = steps.plan_and_workers({"job": "scan"})
    again = steps.finish(plan)
    assert again["targets"] == {"ok": 2, "error": 0, "incomplete": 0}
    assert all(not o.get("result_lost") for o in outputs)
    verdicts = {e["instance_id"]: e["verdict"] for e in deployed.report(again["report_key"])["instances"]}
    assert verdicts == {fixable: "compliant", wrong_ami: "noncompliant"}


def test_a_lost_result_record_is_bounded_in_changes_and_bytes():
    # Given a target document with 500 changes, each with a long detail
    actions = [
        {"action": "enable-imds", "resource": f"i-{n:017x}", "status": "done", "detail": "x" * 5000} for n in range(500)
    ]
    document = {
        "account_id": ACCOUNT,
        "region": REGION,
        "phase": "apply",
        "round": 2,
        "status": "incomplete",
        "error": None,
        "instances": [],
        "actions": actions,
    }

    # When its lost record is made
    record = lost_record(document, "PutObject: " + "AccessDenied " * 200)

    # Then it counts every change, lists the first LOST_CHANGES_LISTED with cut fields, and stays small
    assert record["changes"] == 500
    assert [c["resource"] for c in record["listed"]] == [a["resource"] for a in actions[:LOST_CHANGES_LISTED]]
    assert all(len(c["detail"]) == LOST_DETAIL_CHARS for c in record["listed"])
    assert len(record["reason"]) <= 500
    assert len(json.dumps(record)) <= LOST_RECORD_BYTES
    assert LostResult.from_record(record).error.startswith(
        f"scanned, result lost, 500 changes made (the first {LOST_CHANGES_LISTED} listed), 0 instances checked;"
    )
