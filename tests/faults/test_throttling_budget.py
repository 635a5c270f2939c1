"""Throttling follows the deadline (issue 19, item 3): a worker keeps retrying a throttled call while its Lambda time
lasts, instead of giving up after botocore's fixed attempts (a 30 s storm once made a target give up after 4 s with
896 s of its budget left).

Time is a fake clock: the worker's Lambda context reads it, and the retry backoff (eic_guard.aws.retries.backoff_sleep)
advances it instead of sleeping. Throttling is an HTTP error response (FaultInjector.respond) while the fake clock is
inside the storm, so botocore parses and hands it to the retry handlers exactly like a real one.
"""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import boto3
import pytest
import responses
from eic_guard.aws import retries
from eic_guard.aws.clients import MAX_ATTEMPTS, AwsClients
from eic_guard.aws.gateway import Ec2Gateway
from eic_guard.budget import WORKER_RESERVE, Deadline, DeadlineExceeded
from eic_guard.engine import HELD
from eic_guard.settings import IP_RANGES_URL

from tests.aws_views import metadata_endpoint
from tests.conftest import IP_RANGES, REGION
from tests.faults.conftest import launch
from tests.faults.injector import FaultInjector
from tests.lambda_runtime import FakeLambdaContext, load_handler

BUCKET = "eic-guard-reports-123456789012"
WORKER_TIMEOUT = 900  # template.yaml ScanTargetFunction Timeout
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")


class FakeClock:
    """Seconds since the worker's invocation started; the backoff advances it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ClockedContext(FakeLambdaContext):
    """The worker's Lambda context, its remaining time read from the fake clock."""

    def __init__(self, clock: FakeClock, timeout: float = WORKER_TIMEOUT):
        super().__init__()
        self.clock, self.timeout = clock, timeout

    def get_remaining_time_in_millis(self) -> int:
        return int((self.timeout - self.clock.now) * 1000)


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(retries, "backoff_sleep", fake.sleep)
    monkeypatch.setattr(retries, "random", random.Random(19))  # the jitter, reproducible
    return fake


@pytest.fixture
def deployed(aws, monkeypatch):
    boto3.client("s3", REGION).create_bucket(Bucket=BUCKET)
    for name, value in {
        "EIC_GUARD_REGIONS": REGION,
        "EIC_GUARD_MODE": "remediate",
        "EIC_GUARD_REPORTS_BUCKET": BUCKET,
    }.items():
        monkeypatch.setenv(name, value)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as http:
        http.add(responses.GET, IP_RANGES_URL, body=(IP_RANGES / "ip-ranges-2026-08-22.json").read_bytes())
        yield


def planned_worker_request() -> dict:
    """Plan's output turned into the map item's request for the one target (as the ItemSelector builds it)."""
    plan = load_handler("plan", "eic_guard_plan_app_throttling")(
        {"job": "scan"}, FakeLambdaContext(remaining_ms=300_000)
    )
    [target] = json.loads(boto3.client("s3", REGION).get_object(Bucket=BUCKET, Key=plan["targets_key"])["Body"].read())
    return {
        **{k: plan[k] for k in ("run_id", "bucket", "manifest_key")},
        "target": target,
        "phase": "apply",
        "round": 1,
    }


def result_of(output: dict) -> dict:
    return json.loads(boto3.client("s3", REGION).get_object(Bucket=BUCKET, Key=output["result_key"])["Body"].read())


def test_a_30_second_throttling_storm_is_waited_out_and_the_target_is_scanned_and_fixed(
    faults: FaultInjector, account, ec2, deployed, clock
):
    # Given an instance with its metadata endpoint off, and EC2 throttling DescribeInstances for 30 s of the
    # worker's time
    [instance] = launch(account, account.network(), imds="disabled")
    request = planned_worker_request()
    storm = faults.respond("DescribeInstances", "RequestLimitExceeded", status=503, when=lambda _: clock.now < 30)
    worker = load_handler("scan_target", "eic_guard_scan_target_app_throttling")

    # When the target's worker runs
    output = worker(request, ClockedContext(clock))

    # Then it kept retrying through the storm, well past botocore's fixed attempts, and got through after it
    assert len(storm.hits) > MAX_ATTEMPTS
    assert 30 <= clock.now < 30 + retries.MAX_BACKOFF
    assert all(0 <= s <= retries.MAX_BACKOFF for s in clock.sleeps)
    assert faults.answers_of("DescribeInstances") == ["ok"]
    # And the target is scanned and its instance fixed
    assert output["status"] == "ok"
    document = result_of(output)
    assert document["error"] is None
    assert [(e["instance_id"], e["verdict"]) for e in document["instances"]] == [(instance, "fixed")]
    assert metadata_endpoint(ec2, instance) == "enabled"

    # And the next night, with no storm, changes nothing
    faults.clear()
    again = worker(planned_worker_request(), ClockedContext(FakeClock()))
    assert faults.writes(service="ec2") == []
    assert [e["verdict"] for e in result_of(again)["instances"]] == ["compliant"]


def test_a_storm_longer_than_the_budget_leaves_the_target_incomplete_before_the_reserve_and_the_next_round_fixes_it(
    faults: FaultInjector, account, ec2, deployed, clock
):
    # Given an instance to fix, and EC2 throttling every DescribeInstances
    [instance] = launch(account, account.network(), imds="disabled")
    request = planned_worker_request()
    storm = faults.respond("DescribeInstances", "RequestLimitExceeded", status=503)
    worker = load_handler("scan_target", "eic_guard_scan_target_app_throttling")
    faults.clear()

    # When the target's worker runs
    output = worker(request, ClockedContext(clock))

    # Then it retried for nearly all of its work time, never backing off into the reserve kept for its result
    assert len(storm.hits) > MAX_ATTEMPTS
    work_time = WORKER_TIMEOUT - WORKER_RESERVE
    assert work_time - retries.MAX_BACKOFF < clock.now < work_time
    # And the target ran out of time, it did not fail: it is incomplete (its map item runs it again), its result
    # object written and naming the throttling, nothing changed in EC2
    assert output["status"] == "incomplete"
    document = result_of(output)
    assert document["error"] is None
    assert [n for n in document["notes"] if n.startswith(f"not finished: {HELD['throttled']} (DescribeInstances")]
    assert "RequestLimitExceeded" in " ".join(document["notes"])
    assert faults.writes(service="ec2") == []
    with faults.paused():  # the test's own look is not throttled
        assert metadata_endpoint(ec2, instance) == "disabled"

    # And the next round, the storm over, fixes the instance; the one after changes nothing
    storm.times = len(storm.hits)
    again = worker({**request, "round": 2}, ClockedContext(FakeClock()))
    assert (again["status"], [e["verdict"] for e in result_of(again)["instances"]]) == ("ok", ["fixed"])
    assert metadata_endpoint(ec2, instance) == "enabled"
    faults.clear()
    worker({**request, "round": 3}, ClockedContext(FakeClock()))
    assert faults.writes(service="ec2") == []


# ---- the handler's decisions ---------------------------------------------------------------------------------------
def throttled(code: str = "RequestLimitExceeded") -> tuple:
    return (object(), {"Error": {"Code": code, "Message": "slow down"}})


@pytest.mark.parametrize(
    ("deadline", "response", "attempts", "answer"),
    [
        (None, throttled(), 1, None),  # no deadline (the CLI's plain clients): botocore's fixed attempts
        (Deadline(lambda: float("inf"), 0), throttled(), 9, None),  # no time limit: likewise
        (Deadline(lambda: 600.0, 60), (object(), {"Error": {"Code": "InternalError"}}), 1, None),  # not throttling
        (Deadline(lambda: 600.0, 60), None, 1, None),  # a connection error: botocore decides
        (Deadline(lambda: 600.0, 60), throttled(), 9, 0),  # throttled with time left: retried after a backoff
        (Deadline(lambda: 600.0, 60), throttled("SlowDown"), 9, 0),
        (Deadline(lambda: 600.0, 60), throttled(), retries.MAX_THROTTLED_ATTEMPTS, False),  # the backstop
    ],
    ids=["no-deadline", "unlimited", "not-throttling", "no-response", "time-left", "s3-slow-down", "cap"],
)
def test_throttle_retries_decides_from_the_deadline(monkeypatch, deadline, response, attempts, answer):
    # Given the handler, with the largest jitter and the backoff recorded instead of slept
    slept: list[float] = []
    monkeypatch.setattr(retries, "backoff_sleep", slept.append)
    handler = retries.ThrottleRetries(lambda: deadline, jitter=lambda: 1.0)

    # When a response comes back for the `attempts`-th attempt
    result = handler(attempts=attempts, response=response)

    # Then the answer is botocore's to make (None), retry now after the backoff slept here (0), or stop (False)
    assert result == answer and type(result) is type(answer)
    expected_sleeps = [min(2 ** (attempts - 1), retries.MAX_BACKOFF)] if type(answer) is int else []
    assert slept == expected_sleeps


def test_a_call_still_throttled_when_its_deadline_leaves_no_time_for_the_backoff_is_out_of_time_not_failed(monkeypatch):
    # Given the handler with the largest jitter, and 10 s of work time left (70 s remain, 60 s reserve)
    slept: list[float] = []
    monkeypatch.setattr(retries, "backoff_sleep", slept.append)
    handler = retries.ThrottleRetries(lambda: Deadline(lambda: 70.0, 60), jitter=lambda: 1.0)

    # When the 9th attempt of a DescribeInstances is throttled (its backoff, 20 s, would end inside the reserve)
    with pytest.raises(retries.ThrottledOutOfTime) as raised:
        handler(attempts=9, response=throttled(), operation=SimpleNamespace(name="DescribeInstances"))

    # Then it is not retried, and what it raises is a DeadlineExceeded held as "throttled" (the out-of-time path:
    # a fix held for the next round, its target incomplete), naming the call, the code and the time
    assert slept == []
    assert isinstance(raised.value, DeadlineExceeded) and raised.value.held == "throttled"
    assert str(raised.value) == (
        "DescribeInstances throttled (RequestLimitExceeded) 9 time(s) until its time in this round ran out: 10 s "
        "left, not enough for the next backoff (20 s)"
    )


def test_an_address_whose_association_is_throttled_until_the_deadline_is_released_not_left_behind(
    faults: FaultInjector, account, ec2, monkeypatch
):
    # Given an instance's network interface, and clients whose deadline leaves 10 s of work time, EC2 throttling
    # every AssociateAddress (the backoff recorded instead of slept, so the time never passes)
    launch(account, account.network())
    [eni] = [i["NetworkInterfaceId"] for i in ec2.describe_network_interfaces()["NetworkInterfaces"]]
    monkeypatch.setattr(retries, "backoff_sleep", lambda seconds: None)
    monkeypatch.setattr(retries, "random", random.Random(19))
    throttled = faults.respond("AssociateAddress", "RequestLimitExceeded", status=503)
    faults.clear()
    gateway = Ec2Gateway(AwsClients(deadline=Deadline(lambda: 70.0, 60)).ec2(REGION), REGION, dry_run=False)

    # When eic-guard gives the interface an Elastic IP
    with pytest.raises(retries.ThrottledOutOfTime):
        gateway.associate_elastic_ip(eni)

    # Then the association was retried until the next backoff no longer fitted the time left, and the address it
    # allocated was released: nothing paid is left unattached
    assert len(throttled.hits) > 1
    assert faults.writes(service="ec2") == ["AllocateAddress", "AssociateAddress", "ReleaseAddress"]
    assert ec2.describe_addresses()["Addresses"] == []
