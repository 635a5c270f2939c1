"""The deployed state machine (statemachine/eic_guard.asl.json, as template.yaml substitutes it) executed by moto's
Step Functions engine, its Lambda tasks running the real handlers with their template environments
(tests/step_functions.py). Each scenario asserts the execution's status, the report in S3, the alerts published and
the AWS state after."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import boto3
import pytest
import responses
from eic_guard.aws import retries
from eic_guard.fanout import batch, steps
from eic_guard.fanout.aggregate import NO_RESULT
from eic_guard.fanout.batch import WORKER_FAILED
from eic_guard.ranges.state import DynamoDbStateStore, RangesState
from eic_guard.settings import IP_RANGES_URL
from moto.s3.exceptions import S3AccessDeniedError
from moto.s3.models import S3Backend

from tests.aws_views import eni_groups, ingress_of, metadata_endpoint
from tests.conftest import EIC_US_EAST_1, EIC_US_EAST_1_V6, IP_RANGES, REGION
from tests.faults.conftest import NEWEST_TOKEN, eic_rules, ip_ranges_file, managed_group
from tests.faults.injector import FaultInjector
from tests.lambda_runtime import event, with_message
from tests.step_functions import shared

SNAPSHOT = IP_RANGES / "ip-ranges-2026-08-22.json"
OTHER_REGION = "eu-west-1"
EIC_EU_WEST_1 = "18.202.216.48/29"
RETIRED = "192.0.2.0/29"  # TEST-NET-1: an "EIC prefix" of yesterday's file, gone from today's
# A Lambda's unhandled error as the state machine reports it; also the metrics Powertools finds none of.
NO_METRICS = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

pytestmark = NO_METRICS


@pytest.fixture
def ip_ranges_url():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as http:
        http.add(responses.GET, IP_RANGES_URL, body=SNAPSHOT.read_bytes(), content_type="application/json")
        yield http


@pytest.fixture
def fleet(account):
    """One instance lacking SSH from EIC and IMDS, one compliant (its own group allows the EIC prefix)."""
    net = account.network()
    eic_ssh = account.security_group(
        net, "eic-ssh", [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": EIC_US_EAST_1}]}]
    )
    ami = account.al2023_ami()
    [fixable] = account.launch(
        image_id=ami, subnet_id=net.public_subnet_id, group_ids=[net.app_group_id], public_ip=True, imds="disabled"
    )
    [compliant] = account.launch(image_id=ami, subnet_id=net.public_subnet_id, group_ids=[eic_ssh], public_ip=True)
    return net, fixable, compliant


def fail_worker(monkeypatch, phase: str, region: str) -> Callable[[], None]:
    """The target worker raises (as a crash, a kill or an out-of-memory would end the invocation) for one target's
    phase; every other invocation runs as deployed. Returns what heals it."""
    original = steps.run_target

    def run_target(plan, target, phase_, *args, **kwargs):
        if phase_ == phase and target.region == region:
            raise MemoryError(f"worker killed in the {phase} phase of {target.key}")
        return original(plan, target, phase_, *args, **kwargs)

    monkeypatch.setattr(steps, "run_target", run_target)
    return lambda: monkeypatch.setattr(steps, "run_target", original)


def refuse_map_results(monkeypatch) -> list[str]:
    """S3 refuses every object under runs/<run id>/map/ (AccessDenied, as a bucket policy denying the prefix would):
    the Distributed Maps' ResultWriter exports fail, every other object is written. Returns the refused keys."""
    refused: list[str] = []
    put_object = S3Backend.put_object

    def refusing(self, bucket_name: str, key_name: str, *args, **kwargs):
        if "/map/" in key_name:
            refused.append(key_name)
            raise S3AccessDeniedError()
        return put_object(self, bucket_name, key_name, *args, **kwargs)

    monkeypatch.setattr(S3Backend, "put_object", refusing)
    return refused


def map_result_keys(machine, run_id: str) -> list[str]:
    s3 = machine.client("s3")
    listed = s3.list_objects_v2(Bucket=machine.reports_bucket, Prefix=f"runs/{run_id}/map/")
    return [o["Key"] for o in listed.get("Contents", [])]


def report_targets(report: dict) -> dict[str, tuple[str, str | None]]:
    return {t["region"]: (t["status"], t["error"]) for t in report["targets"]}


# ---- the nightly scan ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("execution_input", [event("plan-scan.json"), {}, None], ids=["schedule", "empty", "none"])
def test_the_nightly_execution_scans_fixes_reports_and_a_second_night_changes_nothing(
    state_machine, fleet, ec2, ip_ranges_url, execution_input
):
    # Given the stack deployed with its defaults and a fleet with one fixable and one compliant instance
    _, fixable, compliant = fleet
    machine = state_machine()

    # When the schedule starts the execution (its input, `{}`, or no input at all)
    run = machine.run(execution_input)

    # Then it succeeds with Aggregate's summary, the report names both instances, the fix is made in EC2
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert run.output["summary"]["instances"] == 2
    assert run.output["summary"]["fixed"] == 1 and run.output["summary"]["compliant"] == 1
    report = machine.report(run)
    assert {i["instance_id"]: i["verdict"] for i in report["instances"]} == {fixable: "fixed", compliant: "compliant"}
    assert report_targets(report) == {REGION: ("ok", None)}
    assert metadata_endpoint(ec2, fixable) == "enabled"
    assert len(eni_groups(ec2, fixable)) == 2
    assert machine.alerts() == []  # everything fixed: nothing for a person to do (quiet alerts)
    assert [(i.function, shared(i.event).get("phase")) for i in machine.invocations] == [
        ("PlanFunction", None),
        ("ScanTargetFunction", "apply"),
        ("AggregateFunction", None),
    ]

    # And a second night changes nothing
    again = machine.run(execution_input)
    assert again.status == "SUCCEEDED"
    assert again.output["summary"]["compliant"] == 2 and again.output["summary"]["fixed"] == 0
    assert [a for i in machine.report(again)["instances"] for a in i["actions"]] == []


def test_a_failed_result_export_is_harmless_the_nightly_report_is_whole_and_a_second_night_changes_nothing(
    state_machine, fleet, ec2, ip_ranges_url, monkeypatch
):
    # Given the nightly stack, and S3 refusing the map results under runs/<run id>/map/ (the ResultWriter export)
    _, fixable, compliant = fleet
    refused = refuse_map_results(monkeypatch)
    machine = state_machine()

    # When the nightly execution runs
    run = machine.run({"job": "scan"})

    # Then the export failed (States.ResultWriterFailed, caught) and the run went on as on success: it succeeded
    # with the full report (read from the workers' own result objects), the instance fixed, no alert
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    run_id = machine.invocations[0].output["run_id"]
    assert refused and all(k.startswith(f"runs/{run_id}/map/apply/") for k in refused)
    assert map_result_keys(machine, run_id) == []
    assert run.output["summary"]["fixed"] == 1 and run.output["summary"]["compliant"] == 1
    report = machine.report(run)
    assert {i["instance_id"]: i["verdict"] for i in report["instances"]} == {fixable: "fixed", compliant: "compliant"}
    assert report_targets(report) == {REGION: ("ok", None)}
    assert metadata_endpoint(ec2, fixable) == "enabled"
    assert machine.alerts() == []

    # And a second night (its export refused too) changes nothing
    again = machine.run({"job": "scan"})
    assert again.status == "SUCCEEDED", (again.error, again.cause)
    assert again.output["summary"]["compliant"] == 2 and again.output["summary"]["fixed"] == 0
    assert [a for i in machine.report(again)["instances"] for a in i["actions"]] == []


def test_without_a_refusal_each_map_exports_its_results_under_the_runs_own_map_prefix(
    state_machine, fleet, ip_ranges_url
):
    # Given the nightly stack
    machine = state_machine()

    # When the nightly execution runs
    run = machine.run({"job": "scan"})

    # Then the apply map's ResultWriter wrote its manifest under runs/<the run id Plan chose>/map/apply/ (where the
    # runs/ lifecycle rule expires it), resolved from the state input, not into the state's payload
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    run_id = machine.invocations[0].output["run_id"]
    keys = map_result_keys(machine, run_id)
    assert keys and all(k.startswith(f"runs/{run_id}/map/apply/") for k in keys)
    assert any(k.endswith("/manifest.json") for k in keys)


def kill_batch(monkeypatch, region: str) -> None:
    """The batched worker invocation is killed (out of memory, say: nothing the batch can catch) when it reaches the
    region's target; one-target invocations run as deployed."""
    original = batch._one

    def one(request, item, *args, **kwargs):
        if item["region"] == region:
            raise MemoryError(f"batch invocation killed at {item['account_id']}/{region}")
        return original(request, item, *args, **kwargs)

    monkeypatch.setattr(batch, "_one", one)


def test_a_target_whose_worker_raises_is_its_own_error_and_the_batchs_other_target_is_fixed(
    state_machine, fleet, ec2, ip_ranges_url, monkeypatch
):
    # Given a stack scanning two regions (one batch), and the worker raising for the second one
    monkeypatch.setenv("EIC_GUARD_REGIONS", f"{REGION},{OTHER_REGION}")
    _, fixable, _ = fleet
    heal = fail_worker(monkeypatch, "apply", OTHER_REGION)
    machine = state_machine()

    # When the nightly execution runs
    run = machine.run({"job": "scan"})

    # Then the batch's invocation caught it: the first region is fixed, the second is a target error naming the
    # failure (its own result object) in the report and in the alert; no invocation failed
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert machine.failures("ScanTargetFunction") == []
    assert run.output["targets"] == {"ok": 1, "error": 1, "incomplete": 0}
    killed = f"{WORKER_FAILED}: MemoryError: worker killed in the apply phase of 123456789012/{OTHER_REGION}"
    assert report_targets(machine.report(run)) == {REGION: ("ok", None), OTHER_REGION: ("error", killed)}
    assert metadata_endpoint(ec2, fixable) == "enabled"
    [alert] = machine.alerts()
    assert OTHER_REGION in alert and killed in alert

    # And the next night, the worker healthy again, both targets are ok and nothing more is changed in the first
    heal()
    again = machine.run({"job": "scan"})
    assert again.status == "SUCCEEDED" and again.output["targets"] == {"ok": 2, "error": 0, "incomplete": 0}
    assert again.output["summary"]["fixed"] == 0


def test_a_batch_invocation_that_is_killed_runs_each_target_alone_so_each_gets_its_result_or_its_error(
    state_machine, fleet, ec2, ip_ranges_url, monkeypatch
):
    # Given a stack scanning two regions (one batch), the batched invocation killed at the second region's target,
    # and that target's worker killed on its own too
    monkeypatch.setenv("EIC_GUARD_REGIONS", f"{REGION},{OTHER_REGION}")
    _, fixable, _ = fleet
    kill_batch(monkeypatch, OTHER_REGION)
    fail_worker(monkeypatch, "apply", OTHER_REGION)
    machine = state_machine()

    # When the nightly execution runs
    run = machine.run({"job": "scan"})

    # Then the batch's failure was caught and each target ran in its own invocation (single input, round 1): the
    # first region is fixed with its own result, the second's failure is its own error (no result); the run succeeds
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    workers = [i for i in machine.invocations if i.function == "ScanTargetFunction"]
    assert [("Items" in i.event, i.event.get("target", {}).get("region")) for i in workers] == [
        (True, None),
        (False, REGION),
        (False, OTHER_REGION),
    ]
    assert [type(e).__name__ for e in machine.failures("ScanTargetFunction")] == ["MemoryError", "MemoryError"]
    # (the first region's target had finished in the batch: its single invocation found its result and did not run
    # again, so the fix the batch made stays in the report)
    assert workers[1].output["status"] == "ok" and workers[1].output["result_key"]
    report = machine.report(run)
    assert {i["instance_id"]: i["verdict"] for i in report["instances"]}[fixable] == "fixed"
    assert run.output["targets"] == {"ok": 1, "error": 1, "incomplete": 0}
    assert report_targets(report) == {REGION: ("ok", None), OTHER_REGION: ("error", NO_RESULT)}
    assert metadata_endpoint(ec2, fixable) == "enabled"
    [alert] = machine.alerts()
    assert OTHER_REGION in alert and NO_RESULT in alert


def assert_round_two_carried_only_the_first_region(machine) -> None:
    """The batch's round 1 held both regions' targets and left REGION's incomplete; round 2 held it alone, ok."""
    workers = [i.event for i in machine.invocations if i.function == "ScanTargetFunction"]
    target = {"account_id": "123456789012", "region": REGION}
    assert [(w["BatchInput"]["round"], w["Items"]) for w in workers] == [
        (1, [target, {"account_id": "123456789012", "region": OTHER_REGION}]),
        (2, [target]),
    ]
    assert machine.worker_rounds() == [(1, "incomplete"), (2, "ok")]


def recorded_shares(monkeypatch) -> list[batch.TargetShare]:
    """Every TargetShare the batch worker gives a target, in order (a test moves a share's end to spend its time)."""
    shares: list[batch.TargetShare] = []
    real_share = batch.TargetShare

    def share(*args):
        shares.append(real_share(*args))
        return shares[-1]

    monkeypatch.setattr(batch, "TargetShare", share)
    return shares


def test_a_target_that_runs_out_of_its_share_continues_in_the_batchs_next_round_alone_and_the_other_is_done(
    state_machine, fleet, ec2, ip_ranges_url, monkeypatch
):
    # Given a stack scanning two regions (one batch), and the first region's target using up its share of the
    # invocation's time right after its gather (a slow target: its fixes are held for the next round)
    monkeypatch.setenv("EIC_GUARD_REGIONS", f"{REGION},{OTHER_REGION}")
    _, fixable, compliant = fleet
    shares = recorded_shares(monkeypatch)
    faults = FaultInjector().install(monkeypatch)
    faults.after_gather(lambda region, snapshot: setattr(shares[-1], "_end", time.monotonic() - 1), times=1)
    machine = state_machine()

    # When the nightly execution runs
    run = machine.run({"job": "scan"})

    # Then round 1 of the batch left that target incomplete (its fix held) and finished the other one; the batch's
    # round 2 carried only the incomplete target, which made the fix; the report has both targets ok
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert_round_two_carried_only_the_first_region(machine)
    results = sorted(k.split("/results/")[1] for k in result_keys(machine, run.output["run_id"]))
    assert results == [
        f"123456789012/{OTHER_REGION}/apply-r1.json",
        *(f"123456789012/{REGION}/apply-r{n}.json" for n in (1, 2)),
    ]
    assert run.output["targets"] == {"ok": 2, "error": 0, "incomplete": 0}
    report = machine.report(run)
    assert {i["instance_id"]: i["verdict"] for i in report["instances"]} == {fixable: "fixed", compliant: "compliant"}
    assert metadata_endpoint(ec2, fixable) == "enabled"


def test_a_target_throttled_past_its_share_continues_in_the_batchs_next_round_and_the_run_reports_it_fixed(
    state_machine, fleet, ec2, ip_ranges_url, monkeypatch
):
    # Given a stack scanning two regions (one batch), and EC2 throttling the first region's DescribeInstances for as
    # long as that target runs in round 1 (each throttling backoff uses up its share's time instead of sleeping)
    monkeypatch.setenv("EIC_GUARD_REGIONS", f"{REGION},{OTHER_REGION}")
    _, fixable, compliant = fleet
    shares = recorded_shares(monkeypatch)
    monkeypatch.setattr(
        retries, "backoff_sleep", lambda seconds: setattr(shares[-1], "_end", shares[-1]._end - seconds)
    )
    faults = FaultInjector().install(monkeypatch)
    storm = faults.respond("DescribeInstances", "RequestLimitExceeded", when=lambda _: len(shares) == 1)
    machine = state_machine()

    # When the nightly execution runs
    run = machine.run({"job": "scan"})

    # Then round 1 left the throttled target incomplete (not an error) and finished the other one; the batch's round
    # 2 carried only that target, which was scanned and fixed; the report has both targets ok, no alert
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert len(storm.hits) > 1
    assert_round_two_carried_only_the_first_region(machine)
    assert run.output["targets"] == {"ok": 2, "error": 0, "incomplete": 0}
    report = machine.report(run)
    assert {i["instance_id"]: i["verdict"] for i in report["instances"]} == {fixable: "fixed", compliant: "compliant"}
    assert metadata_endpoint(ec2, fixable) == "enabled"
    assert machine.alerts() == []

    # And a second night changes nothing (the status tags aside)
    faults.clear()
    again = machine.run({"job": "scan"})
    assert again.status == "SUCCEEDED" and again.output["targets"] == {"ok": 2, "error": 0, "incomplete": 0}
    assert again.output["summary"]["compliant"] == 2 and again.output["summary"]["fixed"] == 0
    assert [w for w in faults.writes(service="ec2") if w != "CreateTags"] == []


def result_keys(machine, run_id: str) -> list[str]:
    listed = machine.client("s3").list_objects_v2(Bucket=machine.reports_bucket, Prefix=f"runs/{run_id}/results/")
    return [o["Key"] for o in listed.get("Contents", [])]


def test_a_throttled_invoke_is_retried_by_the_state_machine_and_the_run_completes(
    state_machine, fleet, ec2, ip_ranges_url
):
    # Given Lambda refusing the first two invocations of the worker (429 TooManyRequestsException)
    _, fixable, _ = fleet
    machine = state_machine()
    machine.throttle("ScanTargetFunction", times=2)

    # When the nightly execution runs
    run = machine.run({"job": "scan"})

    # Then the Retry waited twice (full jitter under 2 s then 4 s: recorded, not slept) and the third invocation
    # ran: the fix is made and reported, no alert
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert len(machine.waits) == 2 and machine.waits[0] <= 2 and machine.waits[1] <= 4
    assert len(machine.outputs("ScanTargetFunction")) == 1
    assert run.output["summary"]["fixed"] == 1
    assert metadata_endpoint(ec2, fixable) == "enabled"
    assert machine.alerts() == []


def test_an_unreadable_target_list_fails_the_map_but_the_report_and_alert_still_go_out(
    state_machine, fleet, ec2, ip_ranges_url, monkeypatch
):
    # Given Plan's target list truncated in S3 (the ItemReader cannot parse it)
    _, fixable, _ = fleet
    original = steps.RunObjects.put

    def put(objects, name, document):
        key = original(objects, name, document)
        if name == "targets.json":
            objects.s3.put_object(Bucket=objects.bucket, Key=key, Body=b'[{"account_id": "1234')
        return key

    monkeypatch.setattr(steps.RunObjects, "put", put)
    machine = state_machine()

    # When the nightly execution runs
    run = machine.run({"job": "scan"})

    # Then the apply map failed as a whole (no worker ran, so nothing was changed), its Catch went to Aggregate:
    # the run succeeds with every target an error, in the report and the alert
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert machine.outputs("ScanTargetFunction") == []
    assert report_targets(machine.report(run)) == {REGION: ("error", NO_RESULT)}
    assert metadata_endpoint(ec2, fixable) == "disabled"
    [alert] = machine.alerts()
    assert NO_RESULT in alert


def test_a_failed_aggregate_still_stores_a_minimal_report_and_alerts_the_failure(
    state_machine, fleet, ec2, ip_ranges_url, monkeypatch
):
    # Given an Aggregate that fails (a bug, a result it cannot read, its memory limit)
    _, fixable, _ = fleet

    def broken(*args, **kwargs):
        raise KeyError("account_id")

    monkeypatch.setattr(steps, "stream_run", broken)
    machine = state_machine()

    # When the nightly execution runs
    run = machine.run({"job": "scan"})

    # Then the execution fails with Aggregate's error (the ErrorsAlarm counts it), after ReportRunFailure stored a
    # report naming the failure for every target and alerted it; the targets' fixes were made and stay
    assert (run.status, run.error) == ("FAILED", "KeyError")
    [fallback] = [i for i in machine.invocations if isinstance(i.event, dict) and "failure" in i.event]
    assert fallback.error is None and fallback.output["alerted"] is True
    bucket = machine.reports_bucket
    body = boto3.client("s3", REGION).get_object(Bucket=bucket, Key=f"{fallback.output['report_key']}.json")["Body"]
    report = json.loads(body.read())
    [(status, error)] = report_targets(report).values()
    assert status == "error" and "could not be aggregated (KeyError: 'account_id')" in error
    [alert] = machine.alerts()
    assert "could not be aggregated (KeyError: 'account_id')" in alert and f"runs/{report['run_id']}/results/" in alert
    assert metadata_endpoint(ec2, fixable) == "enabled"


# ---- the refresh job ----------------------------------------------------------------------------------------------
NEW_FILE = ip_ranges_file(NEWEST_TOKEN, {REGION: (EIC_US_EAST_1, EIC_US_EAST_1_V6), OTHER_REGION: (EIC_EU_WEST_1,)})


def notification() -> dict:
    created = datetime.fromtimestamp(NEWEST_TOKEN, UTC).strftime("%Y-%m-%d-%H-%M-%S")
    message = {"create-time": created, "synctoken": str(NEWEST_TOKEN), "md5": hashlib.md5(NEW_FILE).hexdigest()}
    return with_message(message)


@pytest.fixture
def refresh_world(aws, monkeypatch):
    """Yesterday's state (grace 0 h): each region's EIC prefix and RETIRED, which today's file drops, in the managed
    group of a VPC in each region; AWS serving today's file."""
    monkeypatch.setenv("EIC_GUARD_REGIONS", f"{REGION},{OTHER_REGION}")
    monkeypatch.setenv("EIC_GUARD_STALE_PREFIX_GRACE_HOURS", "0")
    groups = {}
    for region, prefix in ((REGION, EIC_US_EAST_1), (OTHER_REGION, EIC_EU_WEST_1)):
        ec2 = boto3.client("ec2", region)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        groups[region] = managed_group(ec2, vpc, prefix, RETIRED, region=region)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as http:
        http.add(responses.GET, IP_RANGES_URL, body=NEW_FILE)
        yield groups


def yesterdays_state(machine) -> DynamoDbStateStore:
    store = DynamoDbStateStore(boto3.client("dynamodb", REGION), machine.state_table)
    yesterday = datetime.fromtimestamp(NEWEST_TOKEN, UTC) - timedelta(days=1)
    current = {REGION: [EIC_US_EAST_1, RETIRED], OTHER_REGION: [EIC_EU_WEST_1, RETIRED]}
    store.save(
        RangesState(
            sync_token=str(NEWEST_TOKEN - 86400),
            create_date=f"{yesterday:%Y-%m-%d-%H-%M-%S}",
            current=current,
            last_seen={r: dict.fromkeys(p, yesterday) for r, p in current.items()},
            updated_at=yesterday,
        ),
        None,
    )
    return store


def refresh_report(machine, run) -> dict:
    key = run.output["report_key"]
    body = boto3.client("s3", REGION).get_object(Bucket=machine.reports_bucket, Key=f"{key}.json")["Body"].read()
    return json.loads(body)


def test_the_refresh_functions_sns_event_starts_its_own_refresh_job_which_adds_then_revokes(
    state_machine, refresh_world
):
    # Given the stack with yesterday's state, and today's AmazonIpSpaceChanged notification
    machine = state_machine()
    store = yesterdays_state(machine)

    # When the refresh function handles the SNS event (the execution it starts runs on its own, as on AWS)
    started = machine.invoke("RefreshFunction", notification())
    [run] = machine.wait_all()

    # Then it started one execution, named after the synctoken, of the refresh job: Plan, both targets' apply phase,
    # then (RETIRED expired, grace 0 h) both targets' revoke phase, then Aggregate
    assert run.arn.endswith(f":{started['execution'].rsplit(':', 1)[1]}") and str(NEWEST_TOKEN) in run.arn
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    phases = [
        (batch["BatchInput"]["phase"], target["region"])
        for batch in (i.event for i in machine.invocations if i.function == "ScanTargetFunction")
        for target in batch["Items"]
    ]
    assert sorted(phases) == [("apply", OTHER_REGION), ("apply", REGION), ("revoke", OTHER_REGION), ("revoke", REGION)]
    assert [phase for phase, _ in phases] == ["apply", "apply", "revoke", "revoke"]  # every add before any revoke
    refresh = run.output["refresh"]
    assert (refresh["status"], refresh["errors"], refresh["prefixes_added"], refresh["prefixes_revoked"]) == (
        "applied",
        [],
        1,
        2,
    )
    assert refresh_report(machine, run)["status"] == "applied"
    assert machine.alerts() == []
    # And each managed group follows today's file: the new prefix added, the retired one revoked
    assert ingress_of(refresh_world[REGION]) == eic_rules(REGION, EIC_US_EAST_1, EIC_US_EAST_1_V6)
    assert ingress_of(refresh_world[OTHER_REGION], OTHER_REGION) == eic_rules(OTHER_REGION, EIC_EU_WEST_1)
    assert store.load().sync_token == str(NEWEST_TOKEN)
    assert all(RETIRED not in seen for seen in store.load().last_seen.values())

    # And SNS delivering the same notification again starts nothing and changes nothing
    machine.invoke("RefreshFunction", notification())
    assert len(machine.wait_all()) == 1


def test_a_revoke_phase_that_fails_for_one_target_is_the_jobs_error_in_its_report_and_alert(
    state_machine, refresh_world, monkeypatch
):
    # Given the refresh job, and the worker of the second region's revoke phase killed
    machine = state_machine()
    store = yesterdays_state(machine)
    fail_worker(monkeypatch, "revoke", OTHER_REGION)

    # When the notification's refresh job runs
    machine.invoke("RefreshFunction", notification())
    [run] = machine.wait_all()

    # Then the run succeeds but the job is incomplete, not applied: the target whose revoke failed is its error,
    # in the stored refresh report and in the alert (before: "applied", errors [], no alert)
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    killed = f"MemoryError: worker killed in the revoke phase of 123456789012/{OTHER_REGION}"
    expected = f"123456789012/{OTHER_REGION}: revoke phase: {WORKER_FAILED}: {killed}"
    refresh = run.output["refresh"]
    assert (refresh["status"], refresh["errors"]) == ("incomplete", [expected])
    stored = refresh_report(machine, run)
    assert (stored["status"], stored["errors"]) == ("incomplete", [expected])
    [alert] = machine.alerts()
    assert expected in alert
    # And the first region's retired prefix is revoked; the second keeps it (and the state remembers it, so that
    # the next run revokes it)
    assert ingress_of(refresh_world[REGION]) == eic_rules(REGION, EIC_US_EAST_1, EIC_US_EAST_1_V6)
    assert ingress_of(refresh_world[OTHER_REGION], OTHER_REGION) == eic_rules(OTHER_REGION, EIC_EU_WEST_1, RETIRED)
    state = store.load()
    assert RETIRED in state.absent_since.get(OTHER_REGION, {})
    assert RETIRED not in state.absent_since.get(REGION, {})


def test_a_failed_result_export_still_lets_the_refresh_job_revoke(state_machine, refresh_world, monkeypatch):
    # Given the refresh job, and S3 refusing the map results under runs/<run id>/map/ (both maps' exports)
    machine = state_machine()
    store = yesterdays_state(machine)
    refused = refuse_map_results(monkeypatch)

    # When the notification's refresh job runs
    machine.invoke("RefreshFunction", notification())
    [run] = machine.wait_all()

    # Then both exports failed and each was caught as harmless: the revoke phase still ran after every apply phase
    # (before, a failed apply export skipped the revoke), and the job is applied with no error and no alert
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert {k.split("/")[3] for k in refused} == {"apply", "revoke"}
    phases = [shared(i.event)["phase"] for i in machine.invocations if i.function == "ScanTargetFunction"]
    assert phases == ["apply", "revoke"]  # both targets in one batch each
    refresh = run.output["refresh"]
    assert (refresh["status"], refresh["errors"], refresh["prefixes_revoked"]) == ("applied", [], 2)
    assert machine.alerts() == []
    assert ingress_of(refresh_world[REGION]) == eic_rules(REGION, EIC_US_EAST_1, EIC_US_EAST_1_V6)
    assert ingress_of(refresh_world[OTHER_REGION], OTHER_REGION) == eic_rules(OTHER_REGION, EIC_EU_WEST_1)
    assert all(RETIRED not in seen for seen in store.load().last_seen.values())

    # And the same notification again starts nothing and changes nothing
    machine.invoke("RefreshFunction", notification())
    assert len(machine.wait_all()) == 1
