"""Quiet alerts (moto): the nightly run alerts on what is new or changed since the last run, remembered in the state
table; a weekly digest lists what persists; the CLI does the same on stderr with its state file."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import boto3
import pytest
import responses
from eic_guard import cli
from eic_guard.outputs.alerts import (
    ALERT_STATE_FILE,
    ALERT_STATE_ITEM_ID,
    MAX_FINGERPRINTS,
    AlertState,
    DynamoDbAlertState,
    FileAlertState,
)
from eic_guard.settings import IP_RANGES_URL

from tests.aws_views import sns_deliveries
from tests.conftest import EIC_US_EAST_1, IP_RANGES, REGION, create_state_table

ACCOUNT = "123456789012"  # moto's default account
ALIAS = "prod-web"
LABEL = f"{ALIAS} ({ACCOUNT})"
BUCKET = "eic-guard-reports-123456789012"
TABLE = "eic-guard-state"
SNAPSHOT = str(IP_RANGES / "ip-ranges-2026-08-22.json")
SSH_FROM_EIC = [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": EIC_US_EAST_1}]}]


@dataclass
class Deployed:
    """The state table, the reports bucket and the alerts topic, with a queue subscribed to read what was sent."""

    dynamodb: object
    s3: object
    sqs: object
    queue_url: str
    topic_arn: str
    nightly: Callable[[str], dict]  # the nightly execution (conftest's nightly_execution)

    def alerts(self) -> list[dict]:
        return sns_deliveries(self.sqs, self.queue_url)

    def item(self) -> dict | None:
        key = {"id": {"S": ALERT_STATE_ITEM_ID}}
        return self.dynamodb.get_item(TableName=TABLE, Key=key, ConsistentRead=True).get("Item")

    def report(self, run: dict) -> dict:
        body = self.s3.get_object(Bucket=BUCKET, Key=f"{run['report_key']}.json")["Body"].read()
        return json.loads(body)

    def link(self, run: dict) -> str:
        return (
            f"Report: https://us-east-1.console.aws.amazon.com/s3/object/{BUCKET}?region=us-east-1"
            f"&prefix={run['report_key']}.html"
        )


@pytest.fixture
def deployed(aws, monkeypatch, nightly_execution) -> Deployed:
    dynamodb = create_state_table(TABLE)
    s3 = boto3.client("s3", REGION)
    s3.create_bucket(Bucket=BUCKET)
    sns, sqs = boto3.client("sns", REGION), boto3.client("sqs", REGION)
    topic_arn = sns.create_topic(Name="eic-guard-alerts")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="alerts-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    boto3.client("iam", REGION).create_account_alias(AccountAlias=ALIAS)
    for name, value in {
        "EIC_GUARD_REGIONS": REGION,
        "EIC_GUARD_MODE": "report",  # a planned fix is a problem: breaking an instance needs no unfixable drift
        "EIC_GUARD_STATE_TABLE": TABLE,
        "EIC_GUARD_REPORTS_BUCKET": BUCKET,
        "EIC_GUARD_ALERTS_TOPIC_ARN": topic_arn,
    }.items():
        monkeypatch.setenv(name, value)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as http:
        http.add(responses.GET, IP_RANGES_URL, body=(IP_RANGES / "ip-ranges-2026-08-22.json").read_bytes())
        yield Deployed(dynamodb, s3, sqs, queue_url, topic_arn, nightly_execution)


@dataclass
class Fleet:
    account: object
    network: object
    eic_ssh: str
    ubuntu: str
    broken: str  # a non-Amazon AMI: al2023-ami fails
    healthy: str

    def launch_broken(self, name: str) -> str:
        [instance] = self.account.launch(
            image_id=self.ubuntu,
            subnet_id=self.network.public_subnet_id,
            group_ids=[self.eic_ssh],
            public_ip=True,
            name=name,
            tags={"Owner": "alice"},
        )
        return instance


@pytest.fixture
def fleet(account) -> Fleet:
    net = account.network()
    eic_ssh = account.security_group(net, "eic-ssh", SSH_FROM_EIC)
    [healthy] = account.launch(
        image_id=account.al2023_ami(), subnet_id=net.public_subnet_id, group_ids=[eic_ssh], public_ip=True
    )
    built = Fleet(account, net, eic_ssh, account.own_image("ubuntu-22.04-custom"), "", healthy)
    built.broken = built.launch_broken("web-1")
    return built


def night(deployed: Deployed, number: int) -> dict:
    """The nightly execution of the deployed state machine, run id night-<number>."""
    return deployed.nightly(f"night-{number}")


def check_line(report: dict, instance_id: str, check: str, who: str = "web-1, Owner=alice") -> str:
    """The alert line of a failing check, with its status and reason as the stored report has them."""
    [entry] = [e for e in report["instances"] if e["instance_id"] == instance_id]
    result = entry["checks"][check]
    return f"{instance_id} ({who}) in {LABEL} {REGION}: {check} {result['status']}: {result['reason']}"


def headline(report: dict) -> str:
    s = report["summary"]
    return (
        f"eic-guard report run {report['run_id']}, account {LABEL} ({REGION}): {s['noncompliant']} non-compliant, "
        f"{s['errors']} errors, {s['fixed']} fixed, {s['compliant']} compliant of {s['instances']}."
    )


def test_new_then_same_then_changed_alerts_only_what_is_new(deployed, fleet, ec2):
    # Given an account (alias prod-web) with one healthy instance and one on a non-Amazon AMI (web-1, Owner=alice)
    # When the first nightly run finds it
    first = night(deployed, 1)

    # Then one alert names the account and the count, and lists the problem with the instance's Name and owner
    report = deployed.report(first)
    [alert] = deployed.alerts()
    assert alert["Subject"] == f"eic-guard: 1 new problem in {LABEL}"
    assert alert["Message"].splitlines() == [
        headline(report),
        "New or changed since the last run (1):",
        f"- {check_line(report, fleet.broken, 'al2023-ami')}",
        deployed.link(first),
    ]

    # When the next night finds the same
    second = night(deployed, 2)

    # Then nothing is sent, and the run is as complete as ever
    assert deployed.alerts() == []
    assert second["summary"]["noncompliant"] == 1 and second["report_key"]

    # When web-1 also loses its metadata endpoint (it now fails differently) and the next night runs
    ec2.modify_instance_metadata_options(InstanceId=fleet.broken, HttpEndpoint="disabled")
    third = night(deployed, 3)

    # Then the alert lists only the change and counts what persists
    report = deployed.report(third)
    [alert] = deployed.alerts()
    assert alert["Subject"] == f"eic-guard: 1 new problem in {LABEL}"
    assert alert["Message"].splitlines() == [
        headline(report),
        "New or changed since the last run (1):",
        f"- {check_line(report, fleet.broken, 'imds-enabled')}",
        "And 1 persisting problem, listed in the weekly digest and the report.",
        deployed.link(third),
    ]

    # When web-1 is gone and another instance breaks
    ec2.terminate_instances(InstanceIds=[fleet.broken])
    other = fleet.launch_broken("web-2")
    fourth = night(deployed, 4)

    # Then only the new instance is listed, and the two problems of web-1 are counted as resolved
    report = deployed.report(fourth)
    [alert] = deployed.alerts()
    assert alert["Message"].splitlines() == [
        headline(report),
        "New or changed since the last run (1):",
        f"- {check_line(report, other, 'al2023-ami', who='web-2, Owner=alice')}",
        "2 resolved since the last run.",
        deployed.link(fourth),
    ]


def test_weekly_digest_lists_what_persists_then_goes_quiet_again(deployed, fleet):
    # Given a first night that alerted web-1, and a second that was quiet
    night(deployed, 1)
    night(deployed, 2)
    assert len(deployed.alerts()) == 1
    # ... and the last digest 8 days ago (the clock of the stored state moved back rather than waiting)
    eight_days_ago = datetime.now(UTC) - timedelta(days=8)
    deployed.dynamodb.update_item(
        TableName=TABLE,
        Key={"id": {"S": ALERT_STATE_ITEM_ID}},
        UpdateExpression="SET last_digest_at = :t",
        ExpressionAttributeValues={":t": {"S": eight_days_ago.isoformat()}},
    )

    # When the next night runs, with nothing new
    third = night(deployed, 3)

    # Then the weekly digest lists what persists, and records when it went out
    report = deployed.report(third)
    [alert] = deployed.alerts()
    assert alert["Subject"] == f"eic-guard weekly digest: 1 instance needs attention in {LABEL}"
    assert alert["Message"].splitlines() == [
        headline(report),
        "Weekly digest: every open problem (1), new or changed ones [new]:",
        f"- {check_line(report, fleet.broken, 'al2023-ami')}",
        deployed.link(third),
    ]
    digest_at = datetime.fromisoformat(deployed.item()["last_digest_at"]["S"])
    assert digest_at == datetime.fromisoformat(report["finished_at"])

    # And the night after is quiet again
    night(deployed, 4)
    assert deployed.alerts() == []


def test_a_corrupt_alert_state_alerts_everything_and_the_run_goes_on(deployed, fleet):
    # Given an alert state item that cannot be read (5 bytes are no fingerprint)
    deployed.dynamodb.put_item(
        TableName=TABLE,
        Item={
            "id": {"S": ALERT_STATE_ITEM_ID},
            "schema": {"S": "eic-guard/alert-state/v1"},
            "fingerprints": {"B": b"12345"},
        },
    )

    # When the nightly run finds web-1
    first = night(deployed, 1)

    # Then the run is complete and its report stored, and the alert lists every problem, saying why
    report = deployed.report(first)
    assert first["summary"]["noncompliant"] == 1
    [alert] = deployed.alerts()
    lines = alert["Message"].splitlines()
    assert lines[2] == f"- {check_line(report, fleet.broken, 'al2023-ami')}"
    assert lines[3].startswith(f"The alert state could not be read ({TABLE}/{ALERT_STATE_ITEM_ID}: 5 bytes")
    assert lines[3].endswith("every problem is listed as new.")
    # And the state is replaced by a good one: the next night is quiet
    assert len(deployed.item()["fingerprints"]["B"]) == 8
    night(deployed, 2)
    assert deployed.alerts() == []


def test_an_alert_that_could_not_be_sent_is_sent_by_the_next_run(deployed, fleet):
    # Given the alerts topic gone (Publish fails)
    sns = boto3.client("sns", REGION)
    sns.delete_topic(TopicArn=deployed.topic_arn)

    # When the nightly run finds web-1
    first = night(deployed, 1)

    # Then the run is complete, nothing was sent, and nothing was remembered as alerted
    assert first["summary"]["noncompliant"] == 1 and first["report_key"]
    assert deployed.alerts() == []
    assert deployed.item() is None

    # When the topic is back and the next night runs
    sns.create_topic(Name="eic-guard-alerts")
    queue_arn = deployed.sqs.get_queue_attributes(QueueUrl=deployed.queue_url, AttributeNames=["QueueArn"])
    sns.subscribe(TopicArn=deployed.topic_arn, Protocol="sqs", Endpoint=queue_arn["Attributes"]["QueueArn"])
    second = night(deployed, 2)

    # Then web-1 is alerted then
    [alert] = deployed.alerts()
    assert alert["Subject"] == f"eic-guard: 1 new problem in {LABEL}"
    assert f"- {check_line(deployed.report(second), fleet.broken, 'al2023-ami')}" in alert["Message"].splitlines()


def test_fifty_thousand_fingerprints_fit_in_one_state_item(deployed):
    # Given as many problems as the alert state keeps
    fingerprints = frozenset(i.to_bytes(8, "big") for i in range(MAX_FINGERPRINTS))
    store = DynamoDbAlertState(deployed.dynamodb, TABLE)
    digest_at = datetime(2026, 8, 23, 3, 0, tzinfo=UTC)

    # When they are saved and read back
    store.save(AlertState(fingerprints, digest_at))

    # Then DynamoDB took the item (under its 400 KB limit) and gives back the same state
    assert store.load() == AlertState(fingerprints, digest_at)


# ---- the CLI: stderr, the state file ---------------------------------------------------------------------------------
def cli_scan(capsys, state_file) -> tuple[int, dict, list[str]]:
    argv = ["scan", "--region", REGION, "--ip-ranges", SNAPSHOT, "--format", "json", "--state-file", str(state_file)]
    code = cli.main(argv)
    captured = capsys.readouterr()
    alert = [line for line in captured.err.splitlines() if not line.startswith('{"level":')]  # not the logs
    return code, json.loads(captured.out), alert


def cli_line(report: dict, instance_id: str, check: str) -> str:
    [entry] = [e for e in report["instances"] if e["instance_id"] == instance_id]
    result = entry["checks"][check]
    return f"- {instance_id} (web-1, Owner=alice) in {ACCOUNT} {REGION}: {check} {result['status']}: {result['reason']}"


def test_cli_scan_prints_on_stderr_only_what_is_new_since_its_last_scan(fleet, ec2, capsys, tmp_path):
    # Given the CLI's state file in a directory of its own
    state_file = tmp_path / "local" / "state.json"
    state_file.parent.mkdir()

    # When the CLI scans
    code, report, err = cli_scan(capsys, state_file)

    # Then stdout is the report, and stderr the alert: subject, headline, the problem line
    assert code == cli.exit_codes.FINDINGS
    assert err[0] == f"eic-guard: 1 new problem in {ACCOUNT}"
    assert err[2:] == ["New or changed since the last run (1):", cli_line(report, fleet.broken, "al2023-ami")]
    # And what was alerted is kept beside the state file (the state file itself is the refresh's)
    assert (tmp_path / "local" / ALERT_STATE_FILE).is_file()
    assert not state_file.exists()

    # When it scans again, nothing changed
    code, report, err = cli_scan(capsys, state_file)

    # Then stderr is silent (the exit code still says something is non-compliant)
    assert (code, err) == (cli.exit_codes.FINDINGS, [])

    # When web-1 fails differently
    ec2.modify_instance_metadata_options(InstanceId=fleet.broken, HttpEndpoint="disabled")
    code, report, err = cli_scan(capsys, state_file)

    # Then only the change is printed, and what persists is counted
    assert err[0] == f"eic-guard: 1 new problem in {ACCOUNT}"
    assert err[2:] == [
        "New or changed since the last run (1):",
        cli_line(report, fleet.broken, "imds-enabled"),
        "And 1 persisting problem, listed in the weekly digest and the report.",
    ]


def test_cli_alert_state_is_kept_per_scope(fleet, capsys, tmp_path):
    # Given a scan of us-east-1 alerted on web-1, and an earlier scan of another region remembered in the same file
    state_file = tmp_path / "state.json"
    other = FileAlertState(tmp_path / ALERT_STATE_FILE, f"{ACCOUNT} {ACCOUNT} eu-west-1")
    other.save(AlertState(frozenset({b"\x01" * 8}), datetime(2026, 8, 20, tzinfo=UTC)))
    _, _, first = cli_scan(capsys, state_file)
    assert first[0] == f"eic-guard: 1 new problem in {ACCOUNT}"

    # When us-east-1 is scanned again
    _, _, err = cli_scan(capsys, state_file)

    # Then it is quiet, and the other scope's state is still there, untouched
    assert err == []
    assert other.load() == AlertState(frozenset({b"\x01" * 8}), datetime(2026, 8, 20, tzinfo=UTC))


def test_cli_with_a_corrupt_alert_state_file_alerts_everything_and_repairs_it(fleet, capsys, tmp_path):
    # Given an alerts-state.json that is not JSON
    state_file = tmp_path / "state.json"
    (tmp_path / ALERT_STATE_FILE).write_text("{not json", encoding="utf-8")

    # When the CLI scans
    code, report, err = cli_scan(capsys, state_file)

    # Then the scan is whole (the report on stdout, exit 1), and the alert lists the problem and says why
    assert code == cli.exit_codes.FINDINGS and report["summary"]["noncompliant"] == 1
    assert err[3] == cli_line(report, fleet.broken, "al2023-ami")
    assert err[4].startswith(f"The alert state could not be read ({tmp_path / ALERT_STATE_FILE} is not JSON")
    # And the file is replaced by a good one: the next scan is quiet
    assert cli_scan(capsys, state_file)[2] == []
