"""Aggregate's fallback (fanout/run_failed.py, the ReportRunFailure state): what it stores and alerts when the run's
manifest cannot be read either, and for a refresh job. (A scan whose manifest is readable is run through the real
state machine in test_state_machine_runs.py.)"""

from __future__ import annotations

import json

import boto3
import pytest
from eic_guard.aws.clients import AwsClients
from eic_guard.events import InvalidEvent
from eic_guard.fanout.run_failed import MINIMAL_SCHEMA, run_failed_step
from eic_guard.settings import Settings

from tests.conftest import REGION

BUCKET = "eic-guard-reports"
LAMBDA_ERROR = json.dumps({"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after 300.00 seconds"})


@pytest.fixture
def stack(aws):
    """The reports bucket and the alerts topic, read through a subscribed queue."""
    boto3.client("s3", REGION).create_bucket(Bucket=BUCKET)
    sns, sqs = boto3.client("sns", REGION), boto3.client("sqs", REGION)
    topic = sns.create_topic(Name="eic-guard-alerts")["TopicArn"]
    queue = sqs.create_queue(QueueName="alerts")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    settings = Settings.build(regions=(REGION,), reports_bucket=BUCKET, alerts_topic_arn=topic)

    def alerts() -> list[str]:
        return [m["Body"] for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])]

    return settings, alerts


def failure_input(job: str) -> dict:
    """Aggregate's input (the Plan output) with what its Catch put at $.failure; the manifest was never written."""
    return {
        "run_id": "run-1",
        "job": job,
        "bucket": BUCKET,
        "manifest_key": "runs/run-1/manifest.json",
        "targets_key": "runs/run-1/targets.json",
        "targets": 1,
        "revoke": False,
        "failure": {"Error": "Sandbox.Timedout", "Cause": LAMBDA_ERROR},
    }


def stored(key: str) -> dict:
    return json.loads(boto3.client("s3", REGION).get_object(Bucket=BUCKET, Key=f"{key}.json")["Body"].read())


@pytest.mark.parametrize("job", ["scan", "refresh"])
def test_an_unreadable_manifest_still_stores_a_minimal_report_and_alerts_the_failure(stack, job):
    # Given Aggregate timed out, and the run's manifest cannot be read
    settings, alerts = stack

    # When the fallback runs
    outcome = run_failed_step(failure_input(job), settings, AwsClients())

    # Then a minimal report under the job's report key names the failure, and one alert says it
    expected = "could not be aggregated (Sandbox.Timedout: Task timed out after 300.00 seconds)"
    assert outcome["status"] == "failed" and outcome["alerted"] is True
    assert outcome["report_key"].startswith(f"reports/{job}/") and outcome["report_key"].endswith("/run-1")
    document = stored(outcome["report_key"])
    assert document["status"] == "failed" and expected in document["error"]
    if job == "scan":
        assert document["schema"] == MINIMAL_SCHEMA
    else:
        assert (document["schema"], document["reason"]) == ("eic-guard/refresh/v1", "aggregate-failed")
    [alert] = alerts()
    assert expected in alert and "s3://eic-guard-reports/runs/run-1/results/" in alert


def test_an_input_without_the_plan_output_is_refused(stack):
    settings, _ = stack
    with pytest.raises(InvalidEvent, match="not a run failure"):
        run_failed_step({"failure": {"Error": "X"}}, settings, AwsClients())
