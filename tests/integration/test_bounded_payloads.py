"""Bounded payloads (issue 20, item 2): at 10,000 targets, every one failing, each handler's output stays under
16 KiB (Step Functions refuses a state output over 256 KiB, after the report was written), the alert under SNS's
256 KB, and Security Hub batches within 100 findings and 6 MB."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest
import responses
from eic_guard.aws import credentials
from eic_guard.fanout.payloads import PAYLOAD_LIMIT, size_of
from eic_guard.fanout.plan import RunPlan
from eic_guard.fanout.steps import RunObjects
from eic_guard.fanout.targets import Target
from eic_guard.outputs import alerts
from eic_guard.outputs.security_hub import publish
from eic_guard.outputs.security_hub.build import BATCH_BYTES, BATCH_LIMIT, FINDING_BYTES, PlannedFinding
from eic_guard.ranges import ip_ranges
from eic_guard.settings import IP_RANGES_URL

from tests.conftest import IP_RANGES, REGION, create_state_table
from tests.lambda_runtime import FakeLambdaContext, load_handler
from tests.template import cfn

ACCOUNTS = [f"{200000000000 + n:012d}" for n in range(1000)]
REGIONS = (
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "eu-west-2",
    "eu-central-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
)
SNS_LIMIT = 256 * 1024
# What STS says when a member role is missing, with AWS's encoded detail (kilobytes) - the worst error text.
REFUSED = "AccessDenied: not authorized to perform sts:AssumeRole. Encoded authorization failure message: " + "x" * 3000
TABLE = "eic-guard-state"
BATCH_MAX = int(cfn.template()["Parameters"]["MaxItemsPerBatch"]["MaxValue"])  # targets in a worker's largest batch


@pytest.fixture
def org_deployment(aws, monkeypatch, runs_bucket):
    """The stack's settings for 1,000 listed member accounts x 10 regions, an alerts topic and the state table."""
    create_state_table(TABLE)
    topic_arn = boto3.client("sns", REGION).create_topic(Name="eic-guard-alerts")["TopicArn"]
    for name, value in {
        "EIC_GUARD_ACCOUNTS": ",".join(ACCOUNTS),
        "EIC_GUARD_REGIONS": ",".join(REGIONS),
        "EIC_GUARD_MODE": "remediate",
        "EIC_GUARD_STATE_TABLE": TABLE,
        "EIC_GUARD_ALERTS_TOPIC_ARN": topic_arn,
    }.items():
        monkeypatch.setenv(name, value)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as http:
        http.add(responses.GET, IP_RANGES_URL, body=(IP_RANGES / "ip-ranges-2026-08-22.json").read_bytes())
        yield runs_bucket


def test_every_handler_output_and_the_alert_stay_bounded_when_10000_targets_fail(
    org_deployment, api_calls, monkeypatch
):
    # Given a run over 1,000 accounts x 10 regions whose member roles all refuse (the worker cannot enter any)
    def refuse(self, account_id):
        raise credentials.AccountUnreachable(account_id, REFUSED)

    monkeypatch.setattr(credentials.AccountClients, "for_account", refuse)
    context = FakeLambdaContext(aws_request_id="run-10000")
    plan = load_handler("plan", "eic_guard_plan_app_bounds")
    worker = load_handler("scan_target", "eic_guard_scan_target_app_bounds")
    aggregate = load_handler("aggregate", "eic_guard_aggregate_app_bounds")

    # When Plan runs, the worker runs for the first 300 targets: 100 alone (the fallback's single input), 200 in two
    # batches of MaxItemsPerBatch's largest size (the other 9,700 leave no result: killed, throttled), and Aggregate
    # reads them all
    planned = plan({"job": "scan"}, context)
    items = json.loads(
        boto3.client("s3", REGION).get_object(Bucket=planned["bucket"], Key=planned["targets_key"])["Body"].read()
    )
    request = {"run_id": planned["run_id"], "bucket": planned["bucket"], "manifest_key": planned["manifest_key"]}
    outputs = [worker({**request, "target": item, "phase": "apply", "round": 1}, context) for item in items[:100]]
    shared = {**request, "phase": "apply", "round": 1}
    batches = [worker({"Items": items[n : n + BATCH_MAX], "BatchInput": shared}, context) for n in (100, 200)]
    api_calls.clear()
    summary = aggregate(planned, context)

    # Then there were 10,000 targets, every one failed
    assert planned["targets"] == len(items) == 10_000
    assert {o["status"] for o in outputs + batches} == {"error"}
    assert [(b["targets"], b["error"], b["incomplete_targets"]) for b in batches] == [(BATCH_MAX, BATCH_MAX, [])] * 2
    assert summary["targets"] == {"ok": 0, "error": 10_000, "incomplete": 0}
    # And every handler's output is under 16 KiB: Plan's, each worker's (one target or a batch), Aggregate's
    sizes = {
        "plan": size_of(planned),
        "worker": max(map(size_of, outputs)),
        "batch": max(map(size_of, batches)),
        "aggregate": size_of(summary),
    }
    assert max(sizes.values()) <= PAYLOAD_LIMIT, sizes
    # And Aggregate's lists are samples with their totals (the report holds them all)
    assert summary["accounts_total"] == 1000 and len(summary["accounts"]) <= 5
    assert summary["regions_total"] == 10
    report = json.loads(
        boto3.client("s3", REGION)
        .get_object(Bucket=planned["bucket"], Key=f"{summary['report_key']}.json")["Body"]
        .read()
    )
    assert len(report["target_errors"]) == 10_000
    # And the one alert is under SNS's 256 KB: 25 targets, "and N more", the report's link
    [(_, publish_call)] = [(n, p) for n, p in api_calls.calls if n == "Publish"]
    message = publish_call["Message"]
    assert len(message.encode("utf-8")) <= SNS_LIMIT
    lines = message.splitlines()
    assert sum(1 for line in lines if "could not be scanned" in line) == alerts.ALERT_LINES
    assert "- … and 9975 more" in lines
    assert lines[-1].startswith("Report: ") and summary["report_key"] in lines[-1]
    assert all(len(line) <= alerts.LINE_LIMIT for line in lines)
    print(f"10,000 failing targets: {sizes}, alert {len(message.encode())} bytes")


def test_a_batch_of_the_largest_size_whose_targets_are_all_left_incomplete_returns_them_within_the_bound(
    org_deployment, monkeypatch
):
    # Given a run's largest batch (MaxItemsPerBatch's maximum) of the longest region names, and an invocation whose
    # time is already inside the reserve: no target can start, every one is the next round's
    context = FakeLambdaContext(aws_request_id="run-incomplete")
    plan = load_handler("plan", "eic_guard_plan_app_bounds_incomplete")
    worker = load_handler("scan_target", "eic_guard_scan_target_app_bounds_incomplete")
    planned = plan({"job": "scan"}, context)
    longest = [{"account_id": account, "region": "ap-southeast-2"} for account in ACCOUNTS[:BATCH_MAX]]
    shared = {k: planned[k] for k in ("run_id", "bucket", "manifest_key")} | {"phase": "apply", "round": 1}

    # When the worker gets the batch with 70 s left (10 s of work time after its 60 s reserve)
    output = worker({"Items": longest, "BatchInput": shared}, FakeLambdaContext(remaining_ms=70_000))

    # Then every target is incomplete with its result object saying so, the output lists them all for the next
    # round, and it stays under 16 KiB
    assert (output["status"], output["incomplete"], output["incomplete_targets"]) == ("incomplete", BATCH_MAX, longest)
    s3 = boto3.client("s3", REGION)
    key = f"runs/{planned['run_id']}/results/{ACCOUNTS[0]}/ap-southeast-2/apply-r1.json"
    document = json.loads(s3.get_object(Bucket=planned["bucket"], Key=key)["Body"].read())
    assert document["status"] == "incomplete" and "not started in round 1" in document["notes"][0]
    assert size_of(output) <= PAYLOAD_LIMIT, size_of(output)
    print(f"a batch of {BATCH_MAX} incomplete targets: {size_of(output)} bytes")


def test_a_refresh_job_whose_10000_targets_fail_returns_a_bounded_summary_and_alert(
    aws, runs_bucket, monkeypatch, api_calls
):
    # Given a refresh job's manifest over 10,000 targets, none of which left a result
    topic_arn = boto3.client("sns", REGION).create_topic(Name="eic-guard-alerts")["TopicArn"]
    monkeypatch.setenv("EIC_GUARD_ALERTS_TOPIC_ARN", topic_arn)
    monkeypatch.setenv("EIC_GUARD_REGIONS", ",".join(REGIONS))
    ranges = ip_ranges.load(str(IP_RANGES / "ip-ranges-2026-08-22.json"))
    targets = [Target(a, r) for a in ACCOUNTS for r in REGIONS]
    plan = RunPlan(
        run_id="refresh-10000",
        job="refresh",
        mode="remediate",
        started_at=datetime(2026, 12, 7, 3, 0, tzinfo=UTC),
        own_account="123456789012",
        ranges=ranges,
        apply_ranges=True,
        targets=targets,
    )
    objects = RunObjects(boto3.client("s3", REGION), runs_bucket, plan.run_id)
    manifest_key = objects.put("manifest.json", plan.to_dict())
    event = {
        "run_id": plan.run_id,
        "job": "refresh",
        "bucket": runs_bucket,
        "manifest_key": manifest_key,
        "targets_key": objects.key("targets.json"),
        "targets": len(targets),
        "revoke": False,
    }
    api_calls.clear()

    # When Aggregate runs
    summary = load_handler("aggregate", "eic_guard_aggregate_app_refresh_bounds")(event, FakeLambdaContext())

    # Then its output is under 16 KiB, the refresh's 10,000 errors a sample and a count
    assert size_of(summary) <= PAYLOAD_LIMIT, size_of(summary)
    refresh = summary["refresh"]
    assert refresh["status"] == "incomplete"
    assert refresh["errors_total"] == 10_000 and len(refresh["errors"]) == 5
    assert refresh["alerts_total"] == 10_000
    # And the refresh report in S3 holds all of them
    stored = json.loads(objects.s3.get_object(Bucket=runs_bucket, Key=f"{summary['report_key']}.json")["Body"].read())
    assert len(stored["errors"]) == 10_000
    # And its alert lists 25, then how many more, under SNS's limit
    [message] = [p["Message"] for n, p in api_calls.calls if n == "Publish"]
    assert len(message.encode("utf-8")) <= SNS_LIMIT
    assert "- … and 9975 more" in message.splitlines()


def test_an_alert_of_huge_lines_is_cut_to_sns_size_and_keeps_its_report_link():
    # Given 30,000 refresh alerts of 5,000 characters each (an adversarial error text)
    many = [f"{n}: " + "y" * 5000 for n in range(30_000)]

    # When the alert is composed
    message = alerts.alert_message(None, many, "https://console.example/report")

    # Then it is under SNS's limit, each line clipped, and the link is its last line
    assert len(message.encode("utf-8")) <= SNS_LIMIT
    assert all(len(line) <= alerts.LINE_LIMIT for line in message.splitlines())
    assert message.splitlines()[-1] == "Report: https://console.example/report"
    # And a message of lines that together pass the limit keeps the link too
    fitted = alerts.fit_message(["- " + "z" * 900] * 400, "https://console.example/r")
    assert len(fitted.encode("utf-8")) <= alerts.MESSAGE_LIMIT
    assert fitted.splitlines()[-2:] == ["- … and the rest in the report", "Report: https://console.example/r"]


class RecordingHub:
    def __init__(self):
        self.requests: list[list[dict]] = []

    def batch_import_findings(self, Findings):
        self.requests.append(Findings)
        return {"FailedCount": 0, "SuccessCount": len(Findings), "FailedFindings": []}


def test_security_hub_imports_stay_within_100_findings_and_6_mb_per_request():
    # Given 1,000 findings of ~100 KB each (a fleet with long reasons), and one of 300 KB
    def planned(n: int, size: int) -> PlannedFinding:
        finding = {"Id": f"f-{n}", "ProductArn": "arn:aws:securityhub:us-east-1::product/x/default", "Pad": "p" * size}
        return PlannedFinding(f"f-{n}", f"i-{n}", "al2023-ami", "FAILED", finding, "x")

    findings = [planned(n, 100_000) for n in range(1000)] + [planned(1000, 300_000)]
    hub, outcome = RecordingHub(), publish.SyncOutcome()

    # When they are imported
    accepted = publish.import_findings(hub, findings, outcome)

    # Then every request has at most 100 findings and at most 6 MB of them, and all but the oversized one went
    sizes = [sum(len(json.dumps(f, separators=(",", ":"))) for f in request) for request in hub.requests]
    assert max(map(len, hub.requests)) <= BATCH_LIMIT
    assert max(sizes) <= BATCH_BYTES < 6_000_000
    assert len(accepted) == 1000 and outcome.failed == 1
    assert "over Security Hub's 240 KB (f-1000)" in outcome.errors[0]
    assert FINDING_BYTES == 240_000
