"""The nightly run as the deployed state machine makes it (Plan → target workers → Aggregate: the real definition
executed by moto's Step Functions engine, tests/step_functions.py), with the schedule's execution input, against
moto."""

from __future__ import annotations

import json

import boto3
import pytest
import responses
from eic_guard import engine
from eic_guard.errors import ConfigurationError
from eic_guard.events import InvalidEvent
from eic_guard.settings import IP_RANGES_URL

from tests.aws_views import eni_groups, metadata_endpoint
from tests.conftest import IP_RANGES, REGION
from tests.lambda_runtime import FakeLambdaContext, event, load_handler
from tests.step_functions import Run, shared

SNAPSHOT = IP_RANGES / "ip-ranges-2026-08-22.json"
RUN_REQUESTS = ["plan-scan.json"]
# The writes a run makes outside EC2: its report (S3), the ip-ranges and alert state (DynamoDB), the alert (SNS).
STACK_WRITES = {"PutObject", "PutItem", "UpdateItem", "Publish"}
# A rejected invocation publishes no metric; Powertools warns about that on flush.
NO_METRICS = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")


def succeeded(run: Run) -> dict:
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    return run.output


@pytest.fixture
def nightly(state_machine):
    """The deployed state machine (deployed at its first execution, once the test's settings are set)."""
    machines = []

    def machine(**options):
        if not machines:
            machines.append(state_machine(**options))
        return machines[0]

    return machine


@pytest.fixture
def handler(nightly):
    """A nightly execution: the execution input (the schedule sends {"job": "scan"}) and Plan's context (its
    request id is the run id); returns Aggregate's summary."""
    return lambda execution_input, context: succeeded(
        nightly().run(execution_input, plan_request_id=context.aws_request_id)
    )


@pytest.fixture
def plan_handler():
    return load_handler("plan", "eic_guard_plan_app_nightly")


@pytest.fixture
def ip_ranges_url():
    """The pinned AWS URL, served from the real 2026-08-22 snapshot (boto3 does not use requests, moto is untouched)."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add(responses.GET, IP_RANGES_URL, body=SNAPSHOT.read_bytes(), content_type="application/json")
        yield rsps


@pytest.fixture
def scan_env(monkeypatch, runs_bucket):
    monkeypatch.setenv("EIC_GUARD_REGIONS", REGION)
    monkeypatch.setenv("EIC_GUARD_MODE", "remediate")


def build_fleet(account):
    """One instance that only lacks SSH from EIC and IMDS, one that is fully compliant."""
    net = account.network()
    eic_ssh = account.security_group(
        net,
        "eic-ssh",
        [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "18.206.107.24/29"}]}],
    )
    ami = account.al2023_ami()
    [failing] = account.launch(
        image_id=ami, subnet_id=net.public_subnet_id, group_ids=[net.app_group_id], public_ip=True, imds="disabled"
    )
    [compliant] = account.launch(image_id=ami, subnet_id=net.public_subnet_id, group_ids=[eic_ssh], public_ip=True)
    return net, failing, compliant


@pytest.mark.parametrize("event_file", RUN_REQUESTS)
def test_nightly_execution_scans_fixes_and_returns_the_summary(
    handler, account, ec2, api_calls, ip_ranges_url, scan_env, event_file
):
    # Given a fleet with one fixable instance and one compliant instance, and remediate settings
    net, failing, compliant = build_fleet(account)
    context = FakeLambdaContext()
    api_calls.clear()

    # When the schedule starts the execution
    result = handler(event(event_file), context)

    # Then it returns the run's summary under the invocation's request id
    assert result["run_id"] == context.aws_request_id
    assert result["mode"] == "remediate"
    assert result["regions"] == [REGION]
    assert result["summary"] == {
        "instances": 2,
        "compliant": 1,
        "fixed": 1,
        "noncompliant": 0,
        "excluded": 0,
        "errors": 0,
        "warnings": 0,
        "connect_paths": {"public": 2},
    }
    assert result["ip_ranges"] == {"sync_token": "1787411825", "create_date": "2026-08-22-15-17-05"}
    # And it read the ranges from the pinned AWS URL
    assert [c.request.url for c in ip_ranges_url.calls] == [IP_RANGES_URL]
    # And the failing instance was fixed in AWS, the compliant one left alone
    [managed] = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["eic-guard-ssh"]}])[
        "SecurityGroups"
    ]
    assert eni_groups(ec2, failing) == [net.app_group_id, managed["GroupId"]]
    assert metadata_endpoint(ec2, failing) == "enabled"
    assert len(eni_groups(ec2, compliant)) == 1

    # And a second invocation writes nothing and finds both compliant
    api_calls.clear()
    again = handler(event(event_file), FakeLambdaContext(aws_request_id="second-run"))
    # the target's Athena rows, the report (JSON and HTML), the stack's state and alert (table, topic); in EC2 only
    # the instances' status tags (TagInstances, on by default)
    assert api_calls.writes().count("PutObject") == 3
    assert [w for w in api_calls.writes() if w not in STACK_WRITES] == ["CreateTags"]
    assert again["run_id"] == "second-run"
    assert again["summary"] == {
        "instances": 2,
        "compliant": 2,
        "fixed": 0,
        "noncompliant": 0,
        "excluded": 0,
        "errors": 0,
        "warnings": 0,
        "connect_paths": {"public": 2},
    }


# A minimal SNS delivery (the shape Lambda receives from an SNS subscription) — not a scheduled event.
SNS_EVENT = {
    "Records": [
        {
            "EventSource": "aws:sns",
            "EventVersion": "1.0",
            "EventSubscriptionArn": "arn:aws:sns:us-east-1:806199016981:AmazonIpSpaceChanged:x",
            "Sns": {
                "Type": "Notification",
                "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
                "TopicArn": "arn:aws:sns:us-east-1:806199016981:AmazonIpSpaceChanged",
                "Subject": None,
                "Message": "{}",
                "Timestamp": "2026-08-22T15:17:05.000Z",
            },
        }
    ]
}


@NO_METRICS
@pytest.mark.parametrize(
    "bad_event",
    [{"foo": 1}, {"job": "delete-everything"}, SNS_EVENT, "not even an object"],
    ids=["foo", "unknown-job", "sns", "string"],
)
def test_malformed_execution_input_is_rejected_and_nothing_changes(
    plan_handler, account, ec2, api_calls, ip_ranges_url, scan_env, bad_event
):
    # Given a fixable instance
    net, failing, _ = build_fleet(account)
    api_calls.clear()

    # When Plan is invoked with something that is not a run request
    with pytest.raises(InvalidEvent, match="not a run request"):
        plan_handler(bad_event, FakeLambdaContext())

    # Then no AWS call and no download was made, and the instance is as it was
    assert api_calls.calls == []
    assert len(ip_ranges_url.calls) == 0
    assert eni_groups(ec2, failing) == [net.app_group_id]
    assert metadata_endpoint(ec2, failing) == "disabled"


def stored_report(bucket: str, key: str) -> dict:
    """The run's JSON report without what differs from run to run (its id, times and object key)."""
    body = boto3.client("s3", REGION).get_object(Bucket=bucket, Key=f"{key}.json")["Body"].read()
    report = json.loads(body)
    for run_specific in ("run_id", "started_at", "finished_at"):
        report.pop(run_specific)
    return report


@pytest.mark.parametrize("test_input", [{}, {"Comment": "Insert your JSON here"}], ids=["empty", "console-comment"])
def test_an_empty_execution_input_runs_the_same_scan_as_the_schedule(
    handler, account, ec2, api_calls, ip_ranges_url, scan_env, runs_bucket, monkeypatch, test_input
):
    # Given a fleet with a fixable and a compliant instance, in report mode (both runs see the same fleet)
    build_fleet(account)
    monkeypatch.setenv("EIC_GUARD_MODE", "report")

    # When the state machine is started with {} (start-execution without --input) or the console's pre-filled comment,
    # with the schedule's {"job": "scan"}
    empty = handler(test_input, FakeLambdaContext(aws_request_id="empty-input"))
    scheduled = handler(event("plan-scan.json"), FakeLambdaContext(aws_request_id="scheduled"))

    # Then both are scans with the same summary and the same stored report, apart from the run's id and times
    assert empty["job"] == scheduled["job"] == "scan"
    assert empty["summary"] == scheduled["summary"]
    assert empty["summary"]["instances"] == 2 and empty["summary"]["noncompliant"] == 1
    assert stored_report(runs_bucket, empty["report_key"]) == stored_report(runs_bucket, scheduled["report_key"])
    # report mode: each run's Athena rows and report (JSON, HTML), the stack's state and alert, no EC2 write
    assert api_calls.writes().count("PutObject") == 6
    assert set(api_calls.writes()) <= STACK_WRITES


@NO_METRICS
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EIC_GUARD_MODE", "fix"),
        ("EIC_GUARD_INGRESS_SOURCE", "security-group"),
        ("EIC_GUARD_STALE_PREFIX_GRACE_HOURS", "-1"),
        ("EIC_GUARD_REGIONS", "us-east-1,not_a_region"),
    ],
)
def test_bad_setting_fails_before_any_aws_call(
    nightly, account, ec2, api_calls, ip_ranges_url, scan_env, monkeypatch, variable, value
):
    # Given a fixable instance and one invalid setting
    net, failing, _ = build_fleet(account)
    monkeypatch.setenv(variable, value)
    api_calls.clear()

    # When the schedule starts the execution
    run = nightly().run(event("plan-scan.json"))

    # Then Plan failed the execution with an error naming the setting, and nothing was called, downloaded or changed
    assert (run.status, run.error) == ("FAILED", ConfigurationError.__name__)
    assert variable in run.cause
    assert api_calls.calls == []
    assert len(ip_ranges_url.calls) == 0
    assert eni_groups(ec2, failing) == [net.app_group_id]
    assert metadata_endpoint(ec2, failing) == "disabled"


class RunningOutContext(FakeLambdaContext):
    """A worker's context whose time runs out once the target has been gathered (40 s left of 900 s: inside the
    worker's 60 s reserve, outside the 30 s it keeps for its result)."""

    def __init__(self, out_of_time: bool):
        super().__init__()
        self.out_of_time = out_of_time
        self.gathered = False

    def get_remaining_time_in_millis(self) -> int:
        return 40_000 if self.out_of_time and self.gathered else 900_000


@pytest.fixture
def contexts(monkeypatch):
    """Each worker invocation's context; the time of those made `out_of_time` runs out right after the gather."""
    made: list[RunningOutContext] = []
    real_gather = engine.gather

    def gather_then_run_out(*args, **kwargs):
        snapshot = real_gather(*args, **kwargs)
        if made:
            made[-1].gathered = True
        return snapshot

    monkeypatch.setattr(engine, "gather", gather_then_run_out)

    def context_for(out_of_time):
        def make(function, request):
            if function != "ScanTargetFunction":
                return None  # the template's own context
            made.append(RunningOutContext(out_of_time(request)))
            return made[-1]

        return make

    return context_for


def test_a_worker_out_of_time_returns_incomplete_and_the_next_round_finishes_the_target(
    nightly, account, ec2, api_calls, ip_ranges_url, scan_env, contexts
):
    # Given two fixable instances, and a first round whose time runs out right after the gather
    net, failing, _ = build_fleet(account)
    second = account.launch_drifted(net)
    machine = nightly(context_for=contexts(lambda request: shared(request)["round"] == 1))

    # When the schedule starts the execution
    result = succeeded(machine.run(event("plan-scan.json")))

    # Then round 1 said incomplete, the Choice state ran round 2, which made the fixes; nothing was lost between them
    assert machine.worker_rounds() == [(1, "incomplete"), (2, "ok")]
    assert result["summary"]["fixed"] == 2 and result["summary"]["noncompliant"] == 0
    assert result["targets"] == {"ok": 1, "error": 0, "incomplete": 0}
    for instance in (failing, second):
        assert metadata_endpoint(ec2, instance) == "enabled"
        assert len(eni_groups(ec2, instance)) == 2


def test_a_target_out_of_rounds_is_reported_incomplete_with_the_fixes_held(
    nightly, account, ec2, api_calls, ip_ranges_url, scan_env, contexts
):
    # Given a fixable instance and workers whose time always runs out right after the gather
    net, failing, _ = build_fleet(account)
    machine = nightly(parameters={"MaxRounds": "2"}, context_for=contexts(lambda request: True))

    # When the schedule starts the execution
    run = machine.run(event("plan-scan.json"))
    result = succeeded(run)

    # Then both rounds said incomplete and the Choice state let the item end at MaxRounds (2): the run succeeds, the
    # report marks the target incomplete, and the instance is unchanged and reported as not fixed for lack of time
    # (nothing silently skipped), which the alert names
    assert machine.worker_rounds() == [(1, "incomplete"), (2, "incomplete")]
    assert [t["status"] for t in machine.report(run)["targets"]] == ["incomplete"]
    [alert] = machine.alerts()
    assert failing in alert
    assert result["targets"] == {"ok": 0, "error": 0, "incomplete": 1}
    assert result["summary"]["noncompliant"] == 1
    assert metadata_endpoint(ec2, failing) == "disabled"
    assert eni_groups(ec2, failing) == [net.app_group_id]
