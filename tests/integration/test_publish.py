"""After a run (moto): the S3 report (JSON + HTML), one SNS alert when something needs a person, status tags."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import boto3
import pytest
import responses
from eic_guard.errors import IpRangesError
from eic_guard.outputs.publish import CHECKED_AT_TAG, STATUS_TAG
from eic_guard.settings import IP_RANGES_URL

from tests.conftest import EIC_US_EAST_1, IP_RANGES, REGION, create_state_table
from tests.lambda_runtime import REFRESH_ARN, FakeLambdaContext, emf_blobs, event, load_handler

BUCKET = "eic-guard-reports-123456789012"
STATE_TABLE = "eic-guard-state"
REQUEST_ID = "3c9a1f0e-8b7d-4c6e-a5f4-0e1d2c3b4a59"
# A rejected refresh publishes no application metric; Powertools warns about that on flush.
NO_METRICS = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")


@dataclass
class Destinations:
    s3: object
    sqs: object
    queue_url: str
    topic_arn: str

    def alerts(self) -> list[dict]:
        """Every SNS notification delivered to the subscribed queue (SNS envelope: Subject, Message)."""
        received = []
        while True:
            batch = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not batch:
                return received
            for message in batch:
                received.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def keys(self, prefix: str) -> list[str]:
        return [o["Key"] for o in self.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


@pytest.fixture
def destinations(aws, monkeypatch) -> Destinations:
    """The reports bucket and the alerts topic, with a queue subscribed to the topic to read what was sent."""
    s3 = boto3.client("s3", REGION)
    s3.create_bucket(Bucket=BUCKET)
    sns = boto3.client("sns", REGION)
    topic_arn = sns.create_topic(Name="eic-guard-alerts")["TopicArn"]
    sqs = boto3.client("sqs", REGION)
    queue_url = sqs.create_queue(QueueName="alerts-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    monkeypatch.setenv("EIC_GUARD_REGIONS", REGION)
    monkeypatch.setenv("EIC_GUARD_MODE", "remediate")
    monkeypatch.setenv("EIC_GUARD_REPORTS_BUCKET", BUCKET)
    monkeypatch.setenv("EIC_GUARD_ALERTS_TOPIC_ARN", topic_arn)
    monkeypatch.setenv("EIC_GUARD_TAG_INSTANCES", "true")
    return Destinations(s3, sqs, queue_url, topic_arn)


@pytest.fixture
def pinned_url():
    """The pinned AWS URL served from the real 2026-08-22 snapshot."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as http:
        http.add(responses.GET, IP_RANGES_URL, body=(IP_RANGES / "ip-ranges-2026-08-22.json").read_bytes())
        yield http


@dataclass
class Fleet:
    compliant: list[str]
    fixable: list[str]
    wrong_ami: list[str]
    excluded: list[str]
    untagged: list[str]

    @property
    def opted_in(self) -> list[str]:
        return self.compliant + self.fixable + self.wrong_ami + self.excluded


def build_fleet(
    account, *, compliant: int = 0, fixable: int = 0, wrong_ami: int = 0, excluded: int = 0, untagged: int = 0
) -> Fleet:
    """compliant: AL2023 + SSH from EIC; fixable: no SSH from EIC and IMDS off; wrong_ami: a non-Amazon AMI
    (cannot be fixed); excluded: eic-guard:exclude; untagged: not opted in (and as broken as can be)."""
    net = account.network()
    eic_ssh = account.security_group(
        net, "eic-ssh", [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": EIC_US_EAST_1}]}]
    )
    al2023 = account.al2023_ami()
    ubuntu = account.own_image("ubuntu-22.04-custom") if wrong_ami or untagged else None

    def launch(count: int, **kwargs) -> list[str]:
        return account.launch(subnet_id=net.public_subnet_id, public_ip=True, count=count, **kwargs) if count else []

    return Fleet(
        compliant=launch(compliant, image_id=al2023, group_ids=[eic_ssh]),
        fixable=launch(fixable, image_id=al2023, group_ids=[net.app_group_id], imds="disabled"),
        wrong_ami=launch(wrong_ami, image_id=ubuntu, group_ids=[eic_ssh]),
        excluded=launch(excluded, image_id=al2023, group_ids=[net.app_group_id], tags={"eic-guard:exclude": "legacy"}),
        untagged=launch(untagged, image_id=ubuntu, group_ids=[net.app_group_id], opted_in=False),
    )


def tags_of(ec2, instance_ids: list[str]) -> dict[str, dict[str, str]]:
    reservations = ec2.describe_instances(InstanceIds=instance_ids)["Reservations"]
    return {
        i["InstanceId"]: {t["Key"]: t["Value"] for t in i.get("Tags", [])} for r in reservations for i in r["Instances"]
    }


def run_scan(nightly, api_calls=None) -> tuple[dict, list[str]]:
    """Run the nightly execution; returns its summary and the days (UTC) the run may have started on."""
    day_before = datetime.now(UTC).strftime("%Y/%m/%d")
    if api_calls is not None:
        api_calls.clear()
    result = nightly(REQUEST_ID)
    return result, sorted({day_before, datetime.now(UTC).strftime("%Y/%m/%d")})


def test_scan_stores_the_json_report_and_its_html_page_under_a_dated_key(
    nightly_execution, account, destinations, pinned_url
):
    # Given a fleet with one compliant, one fixable and one unfixable instance
    fleet = build_fleet(account, compliant=1, fixable=1, wrong_ami=1)

    # When the nightly scan runs
    result, days = run_scan(nightly_execution)

    # Then exactly the two report objects exist, at reports/scan/YYYY/MM/DD/<run id>.{json,html}
    keys = destinations.keys("reports/")
    [key] = {k.rsplit(".", 1)[0] for k in keys}
    assert sorted(keys) == [f"{key}.html", f"{key}.json"]
    assert key in [f"reports/scan/{day}/{REQUEST_ID}" for day in days]
    assert result["report_key"] == key
    # And the JSON is the v1 report with the summary the handler returned and every opted-in instance
    stored = destinations.s3.get_object(Bucket=BUCKET, Key=f"{key}.json")
    assert stored["ContentType"] == "application/json"
    document = json.loads(stored["Body"].read())
    assert document["schema"] == "eic-guard/report/v1"
    assert document["run_id"] == REQUEST_ID
    assert (
        document["summary"]
        == result["summary"]
        == {
            "instances": 3,
            "compliant": 1,
            "fixed": 1,
            "noncompliant": 1,
            "excluded": 0,
            "errors": 0,
            "warnings": 0,
            "connect_paths": {"public": 3},
        }
    )
    assert sorted(i["instance_id"] for i in document["instances"]) == sorted(fleet.opted_in)
    # And the HTML page is served as HTML and shows this run and its instances
    page = destinations.s3.get_object(Bucket=BUCKET, Key=f"{key}.html")
    assert page["ContentType"].split(";")[0] == "text/html"
    html = page["Body"].read().decode()
    assert html.startswith("<!DOCTYPE html>")
    assert REQUEST_ID in html
    assert all(instance_id in html for instance_id in fleet.opted_in)


def test_one_alert_names_the_instance_check_reason_and_report_when_something_stays_noncompliant(
    nightly_execution, account, destinations, pinned_url
):
    # Given a fleet where one instance is fixable and one cannot be fixed (its AMI)
    fleet = build_fleet(account, compliant=1, fixable=1, wrong_ami=1)

    # When the nightly scan runs
    result, days = run_scan(nightly_execution)

    # Then exactly one alert arrives, with a subject counting the new problems in the account
    [alert] = destinations.alerts()
    assert alert["TopicArn"] == destinations.topic_arn
    assert alert["Subject"] == "eic-guard: 1 new problem in 123456789012"
    message = alert["Message"]
    print(f"\n--- sample alert ---\nSubject: {alert['Subject']}\n{message}\n---")
    # And it names the unfixable instance, its failing check and why, and not the fixed or compliant one
    [wrong_ami] = fleet.wrong_ami
    [problem_line] = [line for line in message.splitlines() if wrong_ami in line]
    assert re.fullmatch(
        rf"- {wrong_ami} in 123456789012 us-east-1: al2023-ami fail: ami-\w+ \(ubuntu-22.04-custom\b[^)]*\) "
        r"is not owned by Amazon \(137112412989\).*",
        problem_line,
    )
    assert fleet.fixable[0] not in message and fleet.compliant[0] not in message
    # And it points at the HTML report of this run, on the S3 console
    assert message.splitlines()[-1] in [
        f"Report: https://us-east-1.console.aws.amazon.com/s3/object/{BUCKET}?region=us-east-1"
        f"&prefix=reports/scan/{day}/{REQUEST_ID}.html"
        for day in days
    ]
    assert result["summary"]["noncompliant"] == 1


def test_no_alert_when_every_instance_ends_compliant(nightly_execution, account, destinations, pinned_url):
    # Given a fleet that is compliant once the fixable instance is fixed
    build_fleet(account, compliant=2, fixable=1, excluded=1)

    # When the nightly scan runs
    result, _ = run_scan(nightly_execution)

    # Then the report is stored but no alert is sent
    assert result["summary"] == {
        "instances": 4,
        "compliant": 2,
        "fixed": 1,
        "noncompliant": 0,
        "excluded": 1,
        "errors": 0,
        "warnings": 0,
        "connect_paths": {"public": 4},
    }
    assert len(destinations.keys("reports/scan/")) == 2
    assert destinations.alerts() == []


def test_status_tags_are_written_once_per_distinct_verdict_on_opted_in_instances_only(
    nightly_execution, account, ec2, destinations, pinned_url, api_calls
):
    # Given 5 opted-in instances with two verdicts (3 compliant, 2 non-compliant), one excluded, one untagged
    fleet = build_fleet(account, compliant=3, wrong_ami=2, excluded=1, untagged=1)

    # When the nightly scan runs in remediate mode with tagging on
    run_scan(nightly_execution, api_calls)

    # Then one CreateTags call was made per distinct verdict, each carrying both tags
    create_tags = [params for name, params in api_calls.calls if name == "CreateTags"]
    assert len(create_tags) == 2
    assert sorted(sorted(p["Resources"]) for p in create_tags) == sorted(
        [sorted(fleet.compliant), sorted(fleet.wrong_ami)]
    )
    # And every scanned, non-excluded instance carries its verdict and the run's time
    tags = tags_of(ec2, fleet.opted_in + fleet.untagged)
    for instance_id in fleet.compliant:
        assert tags[instance_id][STATUS_TAG] == "compliant"
    for instance_id in fleet.wrong_ami:
        assert tags[instance_id][STATUS_TAG] == "noncompliant"
    checked_at = {tags[i][CHECKED_AT_TAG] for i in fleet.compliant + fleet.wrong_ami}
    assert len(checked_at) == 1
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}Z", checked_at.pop())
    # And the excluded and the untagged instances got neither tag
    for instance_id in fleet.excluded + fleet.untagged:
        assert STATUS_TAG not in tags[instance_id] and CHECKED_AT_TAG not in tags[instance_id]


def test_report_mode_writes_no_tags_but_still_reports_and_alerts(
    nightly_execution, account, ec2, destinations, pinned_url, api_calls, monkeypatch
):
    # Given report mode (tagging requested) and a fleet with a fixable and a compliant instance
    monkeypatch.setenv("EIC_GUARD_MODE", "report")
    fleet = build_fleet(account, compliant=1, fixable=1)

    # When the nightly scan runs
    result, _ = run_scan(nightly_execution, api_calls)
    writes = api_calls.writes()

    # Then nothing was written to EC2 (no tags, no fixes): only the report objects, the target's findings, the alert
    # and the stack's state table (the ip-ranges catch-up's first state, the alert state)
    assert sorted(w for w in writes if w != "PutItem") == ["Publish", "PutObject", "PutObject", "PutObject"]
    tags = tags_of(ec2, fleet.opted_in)
    assert all(STATUS_TAG not in t and CHECKED_AT_TAG not in t for t in tags.values())
    # And the planned fix is still something a person must know about
    assert result["summary"]["noncompliant"] == 1
    [alert] = destinations.alerts()
    assert f"- {fleet.fixable[0]} in 123456789012 us-east-1: imds-enabled would-fix: " in alert["Message"]
    assert alert["Subject"] == "eic-guard: 2 new problems in 123456789012"  # no SSH from EIC, IMDS off


@NO_METRICS
def test_rejected_refresh_notification_raises_alerts_once_and_stores_a_refresh_report(
    destinations, pinned_url, monkeypatch, capsys
):
    # Given the refresh function's state table and an AmazonIpSpaceChanged notification whose md5 does not match
    create_state_table(STATE_TABLE)
    monkeypatch.setenv("EIC_GUARD_STATE_TABLE", STATE_TABLE)
    day_before = datetime.now(UTC).strftime("%Y/%m/%d")

    # When the refresh handler receives it
    with pytest.raises(IpRangesError) as rejected:
        load_handler("refresh", "eic_guard_refresh_app_pub")(
            event("sns-ip-space-changed-wrong-md5.json"),
            FakeLambdaContext(
                function_name="eic-guard-refresh", invoked_function_arn=REFRESH_ARN, aws_request_id=REQUEST_ID
            ),
        )

    # Then the invocation fails with the md5-mismatch reason, after downloading only the pinned URL
    assert rejected.value.reason == "md5-mismatch"
    # And it emitted a RefreshRejected metric with that reason
    emf = emf_blobs(capsys.readouterr().out)
    assert [(b["Reason"], b["RefreshRejected"]) for b in emf if "RefreshRejected" in b] == [("md5-mismatch", [1.0])]
    assert [c.request.url for c in pinned_url.calls] == [IP_RANGES_URL]
    # And exactly one alert says the notification was rejected and why
    [alert] = destinations.alerts()
    assert alert["Subject"] == "eic-guard: the ip-ranges refresh needs attention"
    lines = alert["Message"].splitlines()
    assert lines[0] == "ip-ranges refresh:"
    assert lines[1].startswith("- notification rejected (md5-mismatch): ip-ranges.json md5 is ")
    assert lines[1].endswith("expected 00000000000000000000000000000000")
    # And a refresh report records the rejection under reports/refresh/
    days = {day_before, datetime.now(UTC).strftime("%Y/%m/%d")}
    [key] = destinations.keys("reports/")
    assert key in [f"reports/refresh/{day}/{REQUEST_ID}.json" for day in days]
    document = json.loads(destinations.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert document["schema"] == "eic-guard/refresh/v1"
    assert (document["run_id"], document["status"], document["reason"]) == (REQUEST_ID, "rejected", "md5-mismatch")
