"""The time budget and the aggregate (docs/architecture.md §9): a worker out of time holds its fixes and says
`incomplete`, the map item's next round re-gathers and makes them, and Aggregate merges the rounds so that the report
lists every change any round made; targets that are ok, in error, incomplete or without any result all appear in the
one report.

The rounds run on moto (one account, one region); the aggregation cases use small hand-written result documents in
the shape fanout.worker.to_document writes."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from eic_guard.aws.clients import AwsClients
from eic_guard.budget import Deadline
from eic_guard.engine import scan_target
from eic_guard.fanout.aggregate import NO_RESULT, aggregate_run, merge_targets, refresh_summary
from eic_guard.fanout.plan import RunPlan
from eic_guard.fanout.targets import Target, plan_targets
from eic_guard.fanout.worker import run_target
from eic_guard.settings import Settings

from tests.aws_views import eni_groups, metadata_options
from tests.conftest import REGION
from tests.faults.injector import FaultInjector
from tests.integration.org_fixtures import share_botocore_loader

OWN = "123456789012"
MEMBER_A, MEMBER_B, MEMBER_C = "111111111111", "222222222222", "333333333333"
TODAY = date(2026, 8, 22)
STARTED = datetime(2026, 8, 22, 16, 0, tzinfo=UTC)
FIXABLE = ("eic-ssh-ingress", "imds-enabled")
OUT_OF_TIME = "; not fixed: out of time in this round"


@pytest.fixture(autouse=True)
def fast_sessions(monkeypatch):
    """Speed only: one parsed copy of botocore's models for every session of the test."""
    share_botocore_loader(monkeypatch)


def out_of_time() -> Deadline:
    """A worker whose remaining time (10 s) is already inside its 60 s reserve."""
    return Deadline(lambda: 10.0, reserve=60)


def drifted(account, net) -> str:
    """An opted-in AL2023 instance with a public address, no SSH rule for EIC and its metadata endpoint off."""
    instance = account.launch_drifted(net)
    return instance


def managed_group_id(ec2) -> str:
    [group] = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["eic-guard-ssh"]}])[
        "SecurityGroups"
    ]
    return group["GroupId"]


def scan_plan(ranges, targets=None, mode="remediate") -> RunPlan:
    return RunPlan(
        run_id="run-1",
        job="scan",
        mode=mode,
        started_at=STARTED,
        own_account=OWN,
        ranges=ranges,
        apply_ranges=False,
        targets=targets or [Target(OWN, REGION)],
    )


def by_instance(document: dict) -> dict[str, dict]:
    return {e["instance_id"]: e for e in document["instances"]}


# ---- the time budget: stop ... -----------------------------------------------------------------------------------
def test_out_of_time_no_fix_starts_the_target_is_incomplete_and_nothing_is_written(
    account, ec2, api_calls, ranges_2026
):
    # Given two drifted instances, and a worker whose time is already inside its reserve
    net = account.network()
    instances = [drifted(account, net), drifted(account, net)]
    engine_ec2 = AwsClients().ec2(REGION)
    api_calls.clear()

    # When the target is scanned in remediate mode
    result = scan_target(engine_ec2, OWN, REGION, Settings.build(regions=(REGION,)), ranges_2026, TODAY, out_of_time())

    # Then the target is incomplete (not an error), and EC2 was only read
    assert (result.status, result.error, result.incomplete) == ("incomplete", None, True)
    assert api_calls.writes() == []
    assert result.actions == []
    # And each instance's fixable checks fail, saying they wait for the next round; no action was taken
    assert sorted(o.instance_id for o in result.outcomes) == sorted(instances)
    for outcome in result.outcomes:
        for check_id in FIXABLE:
            check = outcome.checks[check_id]
            assert check.status == "fail"
            assert check.reason.endswith(OUT_OF_TIME)
            assert check.fix is None  # held: the next round re-gathers and decides again
        assert outcome.actions == []
    # And AWS is as it was
    for instance in instances:
        assert eni_groups(ec2, instance) == [net.app_group_id]
        assert metadata_options(ec2, instance)["HttpEndpoint"] == "disabled"


def test_out_of_time_does_not_matter_in_report_mode(account, ec2, api_calls, ranges_2026):
    # Given a drifted instance and a worker already inside its reserve
    net = account.network()
    drifted(account, net)
    engine_ec2 = AwsClients().ec2(REGION)
    api_calls.clear()

    # When a report-mode scan runs (it plans, it never writes)
    result = scan_target(
        engine_ec2, OWN, REGION, Settings.build(regions=(REGION,), mode="report"), ranges_2026, TODAY, out_of_time()
    )

    # Then the target is complete and the fixes are planned as usual
    assert result.status == "ok"
    [outcome] = result.outcomes
    assert {outcome.checks[c].status for c in FIXABLE} == {"would-fix"}
    assert api_calls.writes() == []


# ---- ... and resume -------------------------------------------------------------------------------------------------
def test_the_next_round_makes_the_held_fixes_and_the_merged_target_lists_them(account, ec2, api_calls, ranges_2026):
    # Given two drifted instances and a run planned for the one target
    net = account.network()
    instances = sorted([drifted(account, net), drifted(account, net)])
    settings = Settings.build(regions=(REGION,))
    clients = AwsClients()
    plan = scan_plan(ranges_2026)
    target = plan.targets[0]
    api_calls.clear()

    # When the worker's first round runs out of time before any fix, and the map item runs it again (round 2,
    # a fresh invocation with its whole time)
    first = run_target(plan, target, "apply", lambda _: clients, settings, round_=1, deadline=out_of_time())
    assert api_calls.writes() == []
    second = run_target(plan, target, "apply", lambda _: clients, settings, round_=2, deadline=Deadline.after(900, 60))

    # Then round 1 is incomplete with every fix held, round 2 is ok with every fix made
    assert (first["status"], first["round"], second["status"], second["round"]) == ("incomplete", 1, "ok", 2)
    assert all(by_instance(first)[i]["checks"][c]["reason"].endswith(OUT_OF_TIME) for i in instances for c in FIXABLE)
    managed = managed_group_id(ec2)
    for instance in instances:
        assert eni_groups(ec2, instance) == [net.app_group_id, managed]
        assert (metadata_options(ec2, instance)["HttpEndpoint"], metadata_options(ec2, instance)["HttpTokens"]) == (
            "enabled",
            "required",
        )

    # And the merged target (documents in any order) is ok, each instance fixed with round 2's actions
    [merged] = merge_targets(plan, [second, first])
    assert (merged["status"], merged["error"], merged["round"]) == ("ok", None, 2)
    assert sorted(by_instance(merged)) == instances
    for instance in instances:
        entry = by_instance(merged)[instance]
        assert entry["verdict"] == "fixed"
        assert {c: entry["checks"][c]["status"] for c in FIXABLE} == {c: "fixed" for c in FIXABLE}
        assert entry["actions"] == by_instance(second)[instance]["actions"]
        assert {a["action"] for a in entry["actions"]} >= {"enable-imds"}
        assert all(a["status"] == "done" for a in entry["actions"])
    # And the report says so
    report, refresh, _ = aggregate_run(plan, [first, second], settings, STARTED)
    assert (report.summary.instances, report.summary.fixed, report.summary.noncompliant) == (2, 2, 0)
    assert [(t.status, t.instances) for t in report.targets] == [("ok", 2)]
    assert refresh is None


def test_a_fix_made_in_round_one_stays_fixed_when_round_two_finds_the_instance_compliant(
    account, ec2, api_calls, ranges_2026
):
    # Given a drifted instance fixed by round 1 (which then ended incomplete for other work)
    net = account.network()
    instance = drifted(account, net)
    settings = Settings.build(regions=(REGION,))
    clients = AwsClients()
    plan = scan_plan(ranges_2026)
    target = plan.targets[0]
    first = run_target(plan, target, "apply", lambda _: clients, settings, round_=1)
    first["status"] = "incomplete"  # as if time ran out after this instance (the merge does not look at it)
    round_one_actions = by_instance(first)[instance]["actions"]
    assert by_instance(first)[instance]["verdict"] == "fixed" and round_one_actions
    api_calls.clear()

    # When round 2 re-gathers and finds the instance compliant
    second = run_target(plan, target, "apply", lambda _: clients, settings, round_=2)
    assert api_calls.writes() == []
    assert by_instance(second)[instance]["verdict"] == "compliant"
    assert by_instance(second)[instance]["actions"] == []

    # Then the merged target reports it fixed, with round 1's actions and its fixed checks
    [merged] = merge_targets(plan, [first, second])
    entry = by_instance(merged)[instance]
    assert entry["verdict"] == "fixed"
    assert entry["actions"] == round_one_actions
    assert {c: entry["checks"][c]["status"] for c in FIXABLE} == {c: "fixed" for c in FIXABLE}
    assert merged["status"] == "ok"
    report, _, _ = aggregate_run(plan, [first, second], settings, STARTED)
    assert (report.summary.fixed, report.summary.compliant) == (1, 0)


def test_out_of_time_after_some_fixes_keeps_them_and_leaves_orphan_addresses_for_the_next_round(
    account, ec2, monkeypatch, ranges_2026
):
    # Given two drifted instances, an orphan eic-guard Elastic IP (its instance is gone), the Elastic IP opt-in, and a
    # worker whose clients refuse to send once its time is inside the reserve (as the Lambda worker's do)
    net = account.network()
    instances = sorted([drifted(account, net), drifted(account, net)])
    orphan = ec2.allocate_address(
        Domain="vpc",
        TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": [{"Key": "ManagedBy", "Value": "eic-guard"}]}],
    )["AllocationId"]
    faults = FaultInjector().install(monkeypatch)
    remaining = [900.0]
    deadline = Deadline(lambda: remaining[0], reserve=60)
    clients = AwsClients(deadline=deadline)
    # and time running out right after the first instance's last fix (its metadata endpoint) is made
    faults.rewrite("ModifyInstanceMetadataOptions", lambda _: remaining.__setitem__(0, 30.0), times=1)
    settings = Settings.build(regions=(REGION,), remediate_public_ip=True)
    plan = scan_plan(ranges_2026)

    # When the worker's round runs
    document = run_target(plan, plan.targets[0], "apply", lambda _: clients, settings, deadline=deadline)

    # Then the target is incomplete (the next round continues), not an error
    assert (document["status"], document["error"]) == ("incomplete", None)
    # And the instance fixed before the deadline is reported with its actions; the other one's fixes are held
    entries = by_instance(document)
    assert sorted(entries) == instances
    verdicts = sorted(e["verdict"] for e in entries.values())
    assert verdicts == ["fixed", "noncompliant"]
    [fixed] = [e for e in entries.values() if e["verdict"] == "fixed"]
    [held] = [e for e in entries.values() if e["verdict"] == "noncompliant"]
    assert {a["action"] for a in fixed["actions"] if a["status"] == "done"} >= {"enable-imds"}
    assert all(held["checks"][c]["reason"].endswith(OUT_OF_TIME) for c in FIXABLE)
    assert metadata_options(ec2, fixed["instance_id"])["HttpEndpoint"] == "enabled"
    # And the orphan address is left for the next round (no write is attempted past the deadline)
    assert [a["AllocationId"] for a in ec2.describe_addresses()["Addresses"]] == [orphan]
    assert "ReleaseAddress" not in faults.writes("ec2")


def test_a_fix_cut_short_by_the_deadline_leaves_the_target_incomplete_for_the_next_round(
    account, ec2, monkeypatch, ranges_2026
):
    # Given one drifted instance, and a worker whose clients refuse to send once its time is inside the reserve, its
    # time entering the reserve while the instance's first fix is under way (the managed group just created)
    net = account.network()
    instance = drifted(account, net)
    faults = FaultInjector().install(monkeypatch)
    remaining = [900.0]
    deadline = Deadline(lambda: remaining[0], reserve=60)
    clients = AwsClients(deadline=deadline)
    faults.rewrite("CreateSecurityGroup", lambda _: remaining.__setitem__(0, 30.0), times=1)
    settings = Settings.build(regions=(REGION,))
    plan = scan_plan(ranges_2026)

    # When the worker's round runs
    first = run_target(plan, plan.targets[0], "apply", lambda _: clients, settings, round_=1, deadline=deadline)

    # Then the target is incomplete, so that the map item runs it again, and the instance's unfinished fixes wait
    # for that round: they are not reported as errors of the instance
    assert (first["status"], first["error"]) == ("incomplete", None)
    entry = by_instance(first)[instance]
    assert entry["verdict"] == "noncompliant"
    assert {c: entry["checks"][c]["status"] for c in FIXABLE} == {c: "fail" for c in FIXABLE}

    # And the next round (a fresh invocation) finishes the instance; the merged target reports it fixed
    second = run_target(plan, plan.targets[0], "apply", lambda _: AwsClients(), settings, round_=2)
    [merged] = merge_targets(plan, [first, second])
    assert (merged["status"], by_instance(merged)[instance]["verdict"]) == ("ok", "fixed")
    assert eni_groups(ec2, instance) == [net.app_group_id, managed_group_id(ec2)]
    assert metadata_options(ec2, instance)["HttpEndpoint"] == "enabled"


# ---- aggregation of targets ---------------------------------------------------------------------------------------
def instance(instance_id: str, account_id: str, verdict: str, region: str = REGION) -> dict:
    status = {"compliant": "pass", "fixed": "fixed", "noncompliant": "fail", "error": "error"}[verdict]
    actions = (
        [{"action": "enable-imds", "resource": instance_id, "status": "done", "detail": "HttpEndpoint=enabled"}]
        if verdict == "fixed"
        else []
    )
    return {
        "instance_id": instance_id,
        "account_id": account_id,
        "region": region,
        "vpc_id": "vpc-1",
        "verdict": verdict,
        "checks": {"imds-enabled": {"status": status, "reason": None if status == "pass" else "endpoint off"}},
        "actions": actions,
        "excluded_reason": None,
    }


def document(
    account_id: str,
    status: str = "ok",
    *,
    error: str | None = None,
    instances: list[dict] = (),
    round_: int = 1,
    phase: str = "apply",
    region: str = REGION,
    actions: list[dict] = (),
    refresh: dict | None = None,
) -> dict:
    return {
        "account_id": account_id,
        "region": region,
        "phase": phase,
        "round": round_,
        "status": status,
        "error": error,
        "instances": list(instances),
        "actions": list(actions),
        "refresh": refresh,
        "finished_at": "2026-08-22T16:05:00+00:00",
    }


def test_ok_error_incomplete_and_missing_targets_all_appear_in_the_one_report(ranges_2026):
    # Given four planned targets: one ok, one whose account could not be entered, one that ran out of rounds, and one
    # whose worker left no result at all
    plan = scan_plan(ranges_2026, targets=plan_targets((OWN, MEMBER_A, MEMBER_B, MEMBER_C), (REGION,)))
    unreachable = f"cannot enter account {MEMBER_A}: cannot assume arn:aws:iam::{MEMBER_A}:role/eic-guard-member: x"
    documents = [
        document(OWN, instances=[instance("i-own1", OWN, "fixed"), instance("i-own2", OWN, "compliant")]),
        document(MEMBER_A, "error", error=unreachable),
        document(MEMBER_B, "incomplete", instances=[instance("i-b1", MEMBER_B, "noncompliant")], round_=3),
        document("999999999999", instances=[instance("i-stray", "999999999999", "fixed")]),  # not planned: ignored
    ]

    # When the run is aggregated
    report, refresh, targets = aggregate_run(plan, documents, Settings.build(regions=(REGION,)), STARTED)

    # Then every planned target is listed, in plan order, with its status, error and instance count
    assert [t.model_dump() for t in report.targets] == [
        {"account_id": OWN, "region": REGION, "status": "ok", "error": None, "instances": 2, "notes": []},
        {
            "account_id": MEMBER_A,
            "region": REGION,
            "status": "error",
            "error": unreachable,
            "instances": 0,
            "notes": [],
        },
        {"account_id": MEMBER_B, "region": REGION, "status": "incomplete", "error": None, "instances": 1, "notes": []},
        {"account_id": MEMBER_C, "region": REGION, "status": "error", "error": NO_RESULT, "instances": 0, "notes": []},
    ]
    assert NO_RESULT.startswith("no result")
    # And the accounts are every planned account, the run's own account is the caller's
    assert report.accounts == sorted([OWN, MEMBER_A, MEMBER_B, MEMBER_C])
    assert report.account_id == OWN
    # And the summary counts the instances and, among the errors, each target that failed
    assert report.summary.model_dump() == {
        "instances": 3,
        "compliant": 1,
        "fixed": 1,
        "noncompliant": 1,
        "excluded": 0,
        "errors": 2,
        "warnings": 0,
        "connect_paths": {},
    }
    assert [(e.account_id, e.error) for e in report.target_errors] == [(MEMBER_A, unreachable), (MEMBER_C, NO_RESULT)]
    assert {e.instance_id: e.account_id for e in report.instances} == {
        "i-own1": OWN,
        "i-own2": OWN,
        "i-b1": MEMBER_B,
    }
    assert report.has_noncompliant
    assert refresh is None and len(targets) == 4


def test_merging_keeps_an_instance_only_an_earlier_round_saw_and_its_changes_when_the_last_round_failed(ranges_2026):
    # Given round 1 fixed two instances then ran out of time, and round 2 failed before it could list anything
    plan = scan_plan(ranges_2026)
    first = document(
        OWN, "incomplete", instances=[instance("i-1", OWN, "fixed"), instance("i-2", OWN, "fixed")], round_=1
    )
    second = document(OWN, "error", error="RequestLimitExceeded: throttled", round_=2)

    # When the target's rounds are merged
    [merged] = merge_targets(plan, [second, first])

    # Then the target is an error, but both instances and their changes are still reported
    assert (merged["status"], merged["error"]) == ("error", "RequestLimitExceeded: throttled")
    assert sorted(by_instance(merged)) == ["i-1", "i-2"]
    assert all(e["verdict"] == "fixed" and e["actions"] for e in merged["instances"])


def test_a_planned_revoke_phase_without_a_result_makes_the_target_an_error(ranges_2026):
    # Given a refresh whose plan revokes an expired prefix in the region, and a target with only its apply phase
    plan = scan_plan(ranges_2026)
    plan.job, plan.apply_ranges, plan.expired = "refresh", True, {REGION: ["198.51.100.24/29"]}
    applied = {"groups": 1, "added": [], "revoked": [], "alerts": [], "error": None, "unknown_owned": []}

    # When it is merged
    [merged] = merge_targets(plan, [document(OWN, refresh=applied)])

    # Then the revoke phase's missing result is the target's error
    assert (merged["status"], merged["error"]) == ("error", f"revoke phase: {NO_RESULT}")


def test_refresh_summary_counts_every_account_and_each_target_that_failed(ranges_2026):
    # Given the refresh job over three accounts: two added the new prefixes to their managed group, one was refused
    plan = scan_plan(ranges_2026, targets=plan_targets((OWN, MEMBER_A, MEMBER_B), (REGION,)))
    plan.job, plan.apply_ranges = "refresh", True

    def applied(added: list[str]) -> dict:
        return {"groups": 1, "added": added, "revoked": [], "alerts": [], "error": None, "unknown_owned": []}

    refused = f"cannot enter account {MEMBER_B}: cannot assume arn:aws:iam::{MEMBER_B}:role/eic-guard-member: x"
    documents = [
        document(OWN, refresh=applied(["3.103.24.208/29", "2406:da12:80b3:4800::/56"])),
        document(MEMBER_A, refresh=applied(["3.103.24.208/29"])),
        document(MEMBER_B, "error", error=refused),
    ]

    # When the run is aggregated
    report, summary, _ = aggregate_run(plan, documents, Settings.build(regions=(REGION,)), STARTED)

    # Then the refresh is incomplete because of the refused account, named with its region, and alerted
    assert summary["status"] == "incomplete"
    assert (summary["prefixes_added"], summary["groups"]) == (3, 2)
    assert summary["accounts"] == ["111111111111", "123456789012", "222222222222"]
    assert summary["errors"] == [f"{MEMBER_B}/{REGION}: {refused}"]
    assert summary["alerts"] == summary["errors"]
    assert (summary["sync_token"], summary["create_date"]) == (ranges_2026.sync_token, ranges_2026.create_date)
    assert report.summary.errors == 1
    # And the same run without the failure is applied
    ok = refresh_summary(plan, merge_targets(plan, [*documents[:2], document(MEMBER_B, refresh=applied([]))]))
    assert (ok["status"], ok["errors"], ok["alerts"]) == ("applied", [], [])


@pytest.mark.parametrize("mode", ["report", "remediate"])
def test_refresh_summary_of_a_scan_that_applies_nothing_is_none(ranges_2026, mode):
    # Given a scan with given prefixes (nothing applied)
    plan = scan_plan(ranges_2026, mode=mode)

    # When / Then
    assert refresh_summary(plan, merge_targets(plan, [document(OWN)])) is None


@pytest.mark.parametrize(
    "revoke_phase",
    ["missing", "entered-nothing", "refresh-error"],
    ids=["worker-raised-or-map-never-ran", "account-not-entered", "revoke-refused"],
)
def test_a_failed_revoke_phase_makes_the_refresh_incomplete_and_is_alerted(ranges_2026, revoke_phase):
    # Given a refresh that revokes an expired prefix in the region, a target whose apply phase succeeded, and its
    # revoke phase: no result at all (the worker raised, timed out, or the revoke map never ran), a result whose
    # account could not be entered (no refresh part), or a result whose revoke was refused
    expired = "198.51.100.24/29"
    plan = scan_plan(ranges_2026)
    plan.job, plan.apply_ranges, plan.expired = "refresh", True, {REGION: [expired]}
    applied = {"groups": 1, "added": ["3.103.24.208/29"], "revoked": [], "alerts": [], "error": None}
    documents = [document(OWN, refresh=applied)]
    refused = f"UnauthorizedOperation: not allowed to revoke {expired}"
    unreachable = f"cannot enter account {OWN}: cannot assume the member role"
    if revoke_phase == "entered-nothing":
        documents.append(document(OWN, "error", phase="revoke", error=unreachable))
    elif revoke_phase == "refresh-error":
        revoked = {"groups": 1, "added": [], "revoked": [], "alerts": [], "error": refused}
        documents.append(document(OWN, "error", phase="revoke", error=refused, refresh=revoked))
    expected = {
        "missing": f"revoke phase: {NO_RESULT}",
        "entered-nothing": unreachable,
        "refresh-error": refused,
    }[revoke_phase]

    # When the run is aggregated
    report, summary, _ = aggregate_run(plan, documents, Settings.build(regions=(REGION,)), STARTED)

    # Then the job is not "applied": the failed revoke is its error, named once with its target, and alerted
    assert summary["status"] == "incomplete"
    assert summary["errors"] == [f"{OWN}/{REGION}: {expected}"]
    assert summary["alerts"] == summary["errors"]
    assert [(t.status, t.error) for t in report.targets] == [("error", expected)]
