"""fanout/batch.py: the target worker over an ItemBatcher batch. Each target in turn within a fair share of the
invocation's time, each writing its own result object; a target's exception is its own error; a target the
invocation has no time left for is the next round's; the output is counts and the incomplete targets."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from types import SimpleNamespace

import boto3
import pytest
from eic_guard.aws import retries
from eic_guard.aws.clients import MAX_ATTEMPTS, AwsClients
from eic_guard.budget import Deadline, DeadlineExceeded
from eic_guard.engine import HELD
from eic_guard.fanout import batch, steps
from eic_guard.fanout.batch import START_AT_LEAST, WORKER_FAILED, TargetShare, batch_step, is_batch
from eic_guard.fanout.payloads import PAYLOAD_LIMIT, size_of
from eic_guard.fanout.plan import RunPlan
from eic_guard.fanout.results import result_name
from eic_guard.fanout.targets import Target
from eic_guard.settings import Settings
from eic_guard.simulated import SimulatedAccount

from tests.aws_views import metadata_options
from tests.faults.conftest import managed_group
from tests.faults.injector import FaultInjector
from tests.integration.org_fixtures import share_botocore_loader
from tests.lambda_runtime import event

RESERVE = 60.0
SHARED = {
    "run_id": "run-1",
    "bucket": "reports",
    "manifest_key": "runs/run-1/manifest.json",
    "phase": "apply",
    "round": 1,
}
TARGETS = [{"account_id": f"11111111111{n}", "region": "eu-west-3"} for n in range(3)]


class Clock:
    """time.monotonic for batch.py and the invocation's remaining time, moved by the fake targets."""

    def __init__(self, invocation_seconds: float):
        self.now = 0.0
        self.end = invocation_seconds

    def monotonic(self) -> float:
        return self.now

    def remaining(self) -> float:
        return self.end - self.now


class FakeObjects:
    """The run's objects: the manifest read once, the result objects the batch writes itself."""

    def __init__(self, s3, bucket, run_id):
        self.bucket, self.run_id = bucket, run_id
        self.reads: list[str] = []
        self.written: dict[str, dict] = {}
        FakeObjects.last = self

    def get(self, key):
        self.reads.append(key)
        return {"manifest": True}

    def put(self, name, document):
        self.written[name] = json.loads(json.dumps(document))
        return f"runs/{self.run_id}/{name}"


class Clients:
    def __init__(self, deadline):
        self.deadline = deadline

    def client(self, service):
        return object()


@pytest.fixture
def world(monkeypatch):
    """A fake clock and objects; `run(targets, seconds, work)` runs batch_step with `work(target, share)` as each
    target's worker (it moves the clock and returns the target's status) and returns (output, shares seen)."""
    monkeypatch.setattr(batch, "RunObjects", FakeObjects)
    monkeypatch.setattr(batch.RunPlan, "from_dict", classmethod(lambda cls, raw: "plan"))

    def run(targets, seconds, work):
        clock = Clock(seconds)
        monkeypatch.setattr(batch.time, "monotonic", clock.monotonic)
        deadline = Deadline(clock.remaining, RESERVE)
        clients = Clients(deadline)
        seen: list[tuple[str, float, bool]] = []

        def run_worker(request, plan, objects, settings, clients_, share):
            assert plan == "plan" and clients_ is clients and clients.deadline is share
            seen.append((request.target["account_id"], share.remaining(), request.round))
            status = work(request.target, share, clock)
            return {**request.model_dump(), "status": status, "instances": 2}

        monkeypatch.setattr(batch, "run_worker", run_worker)
        output = batch_step({"Items": targets, "BatchInput": SHARED}, None, clients, deadline)
        assert clients.deadline is deadline  # the invocation's own deadline again once the batch is done
        return output, seen

    return run


def test_each_target_gets_an_equal_share_of_what_is_left_and_what_one_leaves_goes_to_the_next(world):
    # Given three targets and 900 s (840 s of work after the 60 s reserve); the first takes 100 s, the others 10 s
    def work(target, share, clock):
        clock.now += 100 if target == TARGETS[0] else 10
        return "ok"

    # When the batch runs
    output, seen = world(TARGETS, 900, work)

    # Then the first had a third of 840 s, the second half of the 740 s left, the third all of the 730 s left; each
    # wrote its own result (the fake worker), the manifest was read once, every target is ok
    assert [(a, round(s)) for a, s, _ in seen] == [
        (TARGETS[0]["account_id"], 280),
        (TARGETS[1]["account_id"], 370),
        (TARGETS[2]["account_id"], 730),
    ]
    assert FakeObjects.last.reads == [SHARED["manifest_key"]]
    assert output | {"BatchInput": None} == {
        "BatchInput": None,
        "status": "ok",
        "targets": 3,
        "ok": 3,
        "error": 0,
        "incomplete": 0,
        "instances": 6,
        "incomplete_targets": [],
        "results_lost": [],
        "results_lost_total": 0,
        "items_unreadable": [],
        "items_unreadable_total": 0,
    }
    assert output["BatchInput"] == SHARED


def test_a_slow_target_is_cut_at_its_share_and_cannot_starve_the_ones_after_it(world):
    # Given a first target that would take the whole invocation: it stops starting fixes once its share is gone
    # (the engine's check: share.remaining() <= 0) and says incomplete
    def work(target, share, clock):
        if target == TARGETS[0]:
            while share.remaining() > 0:
                clock.now += 7  # one instance's fixes at a time
            return "incomplete"
        clock.now += 30
        return "ok"

    # When the batch runs
    output, seen = world(TARGETS, 900, work)

    # Then it stopped after its 280 s (no fix started past it), and the others still had half and all of the rest
    assert [round(s) for _, s, _ in seen] == [280, 280, 530]
    assert (output["status"], output["ok"], output["incomplete"]) == ("incomplete", 2, 1)
    assert output["incomplete_targets"] == [TARGETS[0]]  # the next round's Items


def test_a_share_refuses_no_call_before_the_invocations_reserve_and_its_finishing_keeps_the_last_reserve():
    # Given a batch deadline of 900 s (60 s reserve) and a target's share of 100 s
    clock = Clock(900)
    batch_deadline = Deadline(clock.remaining, RESERVE)
    real = batch.time.monotonic
    batch.time.monotonic = clock.monotonic
    try:
        share = TargetShare(batch_deadline, 100)

        # When the share is used up
        clock.now = 150

        # Then no new fix starts (remaining <= 0), but a call is still sent (a gather that started finishes)
        assert share.remaining() < 0
        share.check("DescribeInstances")
        # And once finishing (status tags, the result object), the invocation's time is what counts, down to the
        # finishing reserve, as for a single target
        share.finishing(30)
        assert share.remaining() == pytest.approx(900 - 150 - 30)
        clock.now = 875
        with pytest.raises(DeadlineExceeded):
            share.check("PutObject")
        # And the batch's own deadline keeps its reserve for the next target
        assert batch_deadline.reserve == RESERVE
    finally:
        batch.time.monotonic = real


def test_a_target_left_less_than_the_minimum_is_not_started_but_written_incomplete_for_the_next_round(world):
    # Given a first target that ends inside the last START_AT_LEAST seconds of the invocation's work time
    def work(target, share, clock):
        clock.now = 840 - START_AT_LEAST / 2
        return "ok"

    # When the batch runs
    output, seen = world(TARGETS, 900, work)

    # Then only the first ran; the other two have an incomplete result object naming why, and are the next round's
    assert len(seen) == 1
    assert output["incomplete_targets"] == TARGETS[1:] and output["status"] == "incomplete"
    written = FakeObjects.last.written
    for target in TARGETS[1:]:
        document = written[f"results/{target['account_id']}/eu-west-3/apply-r1.json"]
        assert (document["status"], document["error"], document["instances"]) == ("incomplete", None, [])
        assert document["notes"][0].startswith("not started in round 1: 10 s of the batch invocation's time")


def test_a_target_whose_worker_raises_is_its_own_error_written_as_its_result_and_the_others_go_on(world):
    # Given a worker that raises for the second target (a bug, a bad answer)
    def work(target, share, clock):
        if target == TARGETS[1]:
            raise KeyError("Reservations")
        return "ok"

    # When the batch runs
    output, seen = world(TARGETS, 900, work)

    # Then the other two ran, the second's result object says its error, the batch says error, nothing incomplete
    assert [a for a, _, _ in seen] == [t["account_id"] for t in TARGETS]
    document = FakeObjects.last.written[f"results/{TARGETS[1]['account_id']}/eu-west-3/apply-r1.json"]
    assert (document["status"], document["error"]) == ("error", f"{WORKER_FAILED}: KeyError: 'Reservations'")
    assert (output["status"], output["ok"], output["error"], output["incomplete_targets"]) == ("error", 2, 1, [])


def test_an_item_that_is_no_target_is_counted_and_sampled_and_the_others_run(world):
    # Given a batch with an item that is not a target
    items = [TARGETS[0], {"account": "x"}, TARGETS[2]]

    # When the batch runs
    output, seen = world(items, 900, lambda target, share, clock: "ok")

    # Then the two targets ran, the item is an error named in the (bounded) output
    assert [a for a, _, _ in seen] == [TARGETS[0]["account_id"], TARGETS[2]["account_id"]]
    assert (output["ok"], output["error"], output["items_unreadable_total"]) == (2, 1, 1)
    assert output["items_unreadable"] == ["{'account': 'x'}"]


def test_the_output_of_a_batch_of_100_incomplete_targets_is_bounded(world):
    # Given 100 targets (MaxItemsPerBatch's maximum) of the longest region name, each running out of its share
    targets = [{"account_id": f"{200000000000 + n}", "region": "ap-southeast-2"} for n in range(100)]

    def work(target, share, clock):
        clock.now += 5
        return "incomplete"

    # When the batch runs
    output, _ = world(targets, 900, work)

    # Then they are all in the output for the next round, under 16 KiB
    assert output["incomplete_targets"] == targets
    assert size_of(output) <= PAYLOAD_LIMIT


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"Items": [], "BatchInput": {}}, True),
        ({"run_id": "r", "target": TARGETS[0]}, False),
        ([1, 2], False),
        (None, False),
    ],
)
def test_a_batch_is_told_from_a_single_target_input(event, expected):
    assert is_batch(event) is expected


def test_a_batch_without_items_is_refused_clearly(world):
    with pytest.raises(Exception, match="not a batch of target worker requests: Items"):
        world([], 900, lambda target, share, clock: "ok")


def test_the_sample_events_are_a_batch_and_one_targets_input():
    # Given events/ (what `sam local invoke -e` and the docs show)
    batch_event, single_event = event("scan-target-batch.json"), event("scan-target.json")

    # Then the ItemBatcher's shape is a batch the worker parses, the one-by-one fallback's input is not a batch
    assert is_batch(batch_event) and not is_batch(single_event)
    request = batch.BatchRequest.model_validate(batch_event)
    assert [t["region"] for t in request.Items] == ["us-east-1", "eu-west-1"]
    assert request.BatchInput.model_dump() == {k: single_event[k] for k in request.BatchInput.model_dump()}


# ---- a target throttled past its share (the real worker on moto) ----------------------------------------------------
OWN = "123456789012"
REGIONS = ("us-east-1", "eu-west-1", "eu-west-3")
THROTTLED = HELD["throttled"]  # "throttled by AWS until its time in this round ran out"


@pytest.fixture
def throttled_world(aws, ranges_2026, monkeypatch):
    """A drifted instance in each of three regions of this account (one batch of three targets; the second region's VPC
    has eic-guard's managed group, without the EIC prefixes yet), the run's manifest in the reports bucket, a fake
    clock (time.monotonic and the invocation's remaining time; throttling backoffs advance it instead of sleeping) and
    a FaultInjector on the clients the batch builds. Security Hub findings are on."""
    share_botocore_loader(monkeypatch)
    s3 = boto3.client("s3", REGIONS[0])
    s3.create_bucket(Bucket=SHARED["bucket"])
    instances, managed = {}, {}
    for region in REGIONS:
        account = SimulatedAccount(boto3.client("ec2", region), boto3.client("ssm", region))
        net = account.network()
        if region == REGIONS[1]:
            managed[region] = managed_group(boto3.client("ec2", region), net.vpc_id)
        instances[region] = account.launch_drifted(net)
    targets = [Target(OWN, region) for region in REGIONS]

    def manifest(apply_ranges: bool) -> None:
        plan = RunPlan(
            run_id=SHARED["run_id"],
            job="scan",
            mode="remediate",
            started_at=datetime(2026, 8, 22, 16, 0, tzinfo=UTC),
            own_account=OWN,
            ranges=ranges_2026,
            apply_ranges=apply_ranges,
            targets=targets,
        )
        s3.put_object(Bucket=SHARED["bucket"], Key=SHARED["manifest_key"], Body=json.dumps(plan.to_dict()).encode())

    clock = Clock(0)
    monkeypatch.setattr(batch.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(retries, "backoff_sleep", lambda seconds: setattr(clock, "now", clock.now + seconds))
    monkeypatch.setattr(retries, "random", random.Random(20))  # the jitter, reproducible
    shares: list[tuple[float, float]] = []  # each target's start on the clock and its share's seconds

    def share(deadline: Deadline, seconds: float) -> TargetShare:
        shares.append((clock.now, seconds))
        return TargetShare(deadline, seconds)

    monkeypatch.setattr(batch, "TargetShare", share)
    faults = FaultInjector().install(monkeypatch)
    settings = Settings.build(regions=REGIONS, security_hub_findings="enabled", reports_bucket=SHARED["bucket"])

    def run(items: list[Target], round_: int = 1) -> dict:
        """One batched invocation of 900 s (a new container: the run's clients built again) of `items`."""
        clock.end = clock.now + 900
        deadline = Deadline(clock.remaining, RESERVE)
        steps._RUN_ACCOUNTS.clear()
        shares.clear()
        event = {"Items": [t.to_dict() for t in items], "BatchInput": {**SHARED, "round": round_}}
        output = batch_step(event, settings, AwsClients(deadline=deadline), deadline)
        assert clock.remaining() > RESERVE  # the invocation finished within its work time
        return output

    def result(target: Target, round_: int) -> dict:
        key = f"runs/{SHARED['run_id']}/{result_name(target, 'apply', round_)}"
        return json.loads(s3.get_object(Bucket=SHARED["bucket"], Key=key)["Body"].read())

    def imds(region: str) -> str:
        with faults.paused():
            return metadata_options(boto3.client("ec2", region), instances[region])["HttpEndpoint"]

    return SimpleNamespace(
        run=run,
        result=result,
        imds=imds,
        manifest=manifest,
        targets=targets,
        shares=shares,
        faults=faults,
        managed=managed,
    )


@pytest.mark.parametrize("operation", ["DescribeInstances", "DescribeSecurityGroups"], ids=["gather", "managed-groups"])
def test_a_target_throttled_past_its_share_is_incomplete_and_its_next_round_completes_it(throttled_world, operation):
    # Given a batch of three targets of a scan that applies the ranges, and EC2 throttling the second target's
    # `operation` for as long as it runs in round 1 (its gather's DescribeInstances, after its managed group got the
    # prefixes; or the first read of its managed groups)
    world = throttled_world
    world.manifest(apply_ranges=True)
    first, second, third = world.targets
    storm = world.faults.respond(operation, "RequestLimitExceeded", status=503, when=lambda _: len(world.shares) == 2)

    # When round 1 of the batch runs
    output = world.run(world.targets)

    # Then the second target's calls were retried until its share (half of 840 s) was used up, and not past it: the
    # third target started with the rest of the invocation's work time
    assert len(storm.hits) > MAX_ATTEMPTS
    [(_, _), (started, share), (ended, rest)] = world.shares
    assert share == 420 and share - retries.MAX_BACKOFF < ended - started <= share
    assert rest == 840 - ended
    # And it is incomplete, not an error: its result object says it was throttled until its time ran out; its
    # instance is untouched, no findings were imported for it (it was not scanned); the next round's items are that
    # target alone
    document = world.result(second, 1)
    assert (document["status"], document["error"], document["instances"]) == ("incomplete", None, [])
    reason = f"not finished: {THROTTLED} ({operation} throttled (RequestLimitExceeded) "
    assert [n for n in document["notes"] if n.startswith(reason)], document["notes"]
    assert world.imds(second.region) == "disabled"
    assert document["security_hub"] is None and world.result(first, 1)["security_hub"] is not None
    # And the prefixes its managed group got before a throttled gather stay recorded
    authorized = [a["resource"] for a in document["actions"] if a["action"] == "authorize-ingress"]
    assert authorized == ([world.managed[second.region]] if operation == "DescribeInstances" else [])
    assert (output["status"], output["ok"], output["error"], output["incomplete"]) == ("incomplete", 2, 0, 1)
    assert output["incomplete_targets"] == [second.to_dict()]
    # And the first and third targets are ok, their instances fixed (the third had the rest of the time)
    for target in (first, third):
        assert (world.result(target, 1)["status"], world.imds(target.region)) == ("ok", "enabled")

    # When the batch's round 2 runs the second target alone, EC2 no longer throttling
    storm.times = len(storm.hits)
    again = world.run([second], round_=2)

    # Then it is scanned and fixed
    assert (again["status"], again["ok"], again["incomplete_targets"]) == ("ok", 1, [])
    document = world.result(second, 2)
    assert (document["status"], [e["verdict"] for e in document["instances"]]) == ("ok", ["fixed"])
    assert world.imds(second.region) == "enabled"

    # And a second night of the three targets changes nothing
    world.faults.clear()
    night = world.run(world.targets)
    assert (night["ok"], world.faults.writes(service="ec2")) == (3, [])


def test_a_fix_throttled_past_its_targets_share_is_held_for_the_next_round_and_the_others_are_made(throttled_world):
    # Given a batch of three targets, and EC2 throttling the second target's ModifyInstanceMetadataOptions (its
    # instance's last fix, after its SSH rule is attached) for as long as it runs in round 1
    world = throttled_world
    world.manifest(apply_ranges=False)
    first, second, third = world.targets
    storm = world.faults.respond(
        "ModifyInstanceMetadataOptions", "RequestLimitExceeded", status=503, when=lambda _: len(world.shares) == 2
    )

    # When round 1 of the batch runs
    output = world.run(world.targets)

    # Then that fix is held for the next round, saying it was throttled until the target's time ran out (not a failed
    # fix); the instance's other fixes are made; the target is incomplete, the other two ok
    assert len(storm.hits) > MAX_ATTEMPTS
    document = world.result(second, 1)
    assert (document["status"], document["error"]) == ("incomplete", None)
    [entry] = document["instances"]
    imds = entry["checks"]["imds-enabled"]
    assert (imds["status"], entry["checks"]["eic-ssh-ingress"]["status"]) == ("fail", "fixed")
    assert imds["reason"].endswith(f"; not fixed: {THROTTLED}")
    assert [a["action"] for a in entry["actions"] if a["status"] == "failed"] == []
    assert world.imds(second.region) == "disabled"
    assert (output["ok"], output["incomplete_targets"]) == (2, [second.to_dict()])
    assert [world.result(t, 1)["status"] for t in (first, third)] == ["ok", "ok"]

    # When its next round runs, EC2 no longer throttling
    storm.times = len(storm.hits)
    again = world.run([second], round_=2)

    # Then the held fix is made; a second night of the three targets changes nothing
    assert (again["ok"], world.result(second, 2)["instances"][0]["checks"]["imds-enabled"]["status"]) == (1, "fixed")
    assert world.imds(second.region) == "enabled"
    world.faults.clear()
    assert (world.run(world.targets)["ok"], world.faults.writes(service="ec2")) == (3, [])
