"""A target worker's result object, read by Aggregate (fanout.results): one that cannot be read is its own target's
error, "result object unreadable: <reason>", and every other target is reported as usual."""

from __future__ import annotations

import json

import pytest
from eic_guard.fanout.aggregate import aggregate_run, merge_targets
from eic_guard.fanout.results import UNREADABLE, UnreadableResult, read_result, result_name
from eic_guard.fanout.targets import Target, plan_targets
from eic_guard.outputs.report import InstanceEntry
from eic_guard.settings import Settings

from tests.conftest import REGION
from tests.unit.test_fanout_aggregate import MEMBER_A, OWN, STARTED, document, instance, scan_plan

KEY = f"runs/run-1/{result_name(Target(MEMBER_A, REGION), 'apply', 1)}"


def valid() -> dict:
    return document(MEMBER_A, instances=[instance("i-a1", MEMBER_A, "fixed")])


def with_(**changes) -> bytes:
    return json.dumps({**valid(), **changes}).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (json.dumps(valid()).encode()[:50], "not JSON (EOF while parsing"),
        (b"", "empty object"),
        (b"{}", "account_id: Field required"),
        (b"[1,2]", "Input should be an object"),
        (b"null", "Input should be an object"),
        (with_(instances="many"), "instances: Input should be a valid array"),
        (with_(round="first"), "round: Input should be a valid integer"),
        (with_(status="done"), "status: Input should be 'ok', 'error' or 'incomplete'"),
        (with_(instances=[{**instance("i-a1", MEMBER_A, "fixed"), "verdict": 5}]), "instances.0.verdict: Input"),
        (with_(actions=[{"action": "x"}]), "actions.0.resource: Field required"),
        (with_(refresh={"groups": "two"}), "refresh.region: Field required"),
        (with_(account_id=OWN), f"it holds the result of {OWN}/{REGION}/apply/1, not of its key"),
    ],
    ids=[
        "truncated",
        "empty",
        "empty-object",
        "array",
        "null",
        "instances-not-a-list",
        "round-not-a-number",
        "unknown-status",
        "verdict-not-a-string",
        "action-incomplete",
        "refresh-wrong-shape",
        "another-target",
    ],
)
def test_an_object_that_is_not_a_result_document_is_unreadable_with_a_one_line_reason(body, reason):
    # Given a result object under a target's key that is not (this target's) result document
    # When Aggregate reads it
    read = read_result(KEY, body)

    # Then it is that target's unreadable result, with a short reason saying what is wrong first
    assert isinstance(read, UnreadableResult)
    assert (read.account_id, read.region, read.phase, read.round) == (MEMBER_A, REGION, "apply", 1)
    assert read.reason.startswith(reason), read.reason
    assert "\n" not in read.reason and len(read.reason) < 200
    assert read.error == f"{UNREADABLE}: {read.reason}"


def test_a_result_document_is_read_as_the_dicts_the_worker_wrote_unknown_instance_fields_dropped():
    # Given a result document with a field a newer worker added at the top and in an instance entry
    written = valid()
    written["from_a_newer_worker"] = {"x": 1}
    written["instances"][0]["new_field"] = "y"

    # When it is read
    read = read_result(KEY, json.dumps(written).encode())

    # Then it is the same document; the instance entry keeps only what the report's model knows (which forbids more)
    del written["instances"][0]["new_field"]
    assert read == written
    assert set(read["instances"][0]) <= set(InstanceEntry.model_fields)


def test_every_field_of_a_report_instance_entry_is_read_from_a_result_object():
    # Given an instance entry with every field the report knows
    entry = {**instance("i-a1", MEMBER_A, "fixed"), "name": "web", "tags": {"Owner": "ops"}, "warnings": ["w: x"]}
    entry |= {"connect_path": "endpoint", "error": None}
    entry["connect_command"] = (
        "aws ec2-instance-connect ssh --instance-id i-a1 --region us-east-1 --connection-type eice"
    )
    entry["checks"]["imds-enabled"]["guidance"] = "Enable it."
    assert set(entry) == set(InstanceEntry.model_fields)

    # When a result holding it is read, then nothing of it is lost
    assert read_result(KEY, with_(instances=[entry]))["instances"] == [entry]


def test_a_key_that_names_no_result_is_not_read():
    assert read_result("runs/run-1/results/notes.txt", b"{}") is None


def test_one_unreadable_result_is_its_targets_error_and_every_other_target_is_reported():
    # Given three planned targets: two with a result, one whose result object could not be read
    plan = scan_plan(None, targets=plan_targets((OWN, MEMBER_A, "333333333333"), (REGION,)))
    plan.ranges = _ranges()
    broken = read_result(f"runs/run-1/{result_name(Target(MEMBER_A, REGION), 'apply', 1)}", b"[1,2]")
    documents = [
        document(OWN, instances=[instance("i-own1", OWN, "fixed")]),
        document("333333333333", instances=[instance("i-c1", "333333333333", "noncompliant")]),
    ]

    # When the run is aggregated
    report, _, _ = aggregate_run(plan, documents, Settings.build(regions=(REGION,)), STARTED, [broken])

    # Then the unreadable target is an error naming why, and the other two are reported with their instances
    assert [(t.account_id, t.status, t.error) for t in report.targets] == [
        (OWN, "ok", None),
        (MEMBER_A, "error", f"{UNREADABLE}: Input should be an object"),
        ("333333333333", "ok", None),
    ]
    assert sorted(e.instance_id for e in report.instances) == ["i-c1", "i-own1"]
    assert report.summary.errors == 1 and report.summary.fixed == 1 and report.summary.noncompliant == 1


def test_an_unreadable_later_round_keeps_the_earlier_rounds_changes_and_makes_the_target_an_error():
    # Given round 1 fixed an instance and ran out of time, and round 2's object cannot be read
    plan = scan_plan(_ranges(), targets=[Target(OWN, REGION)])
    first = document(OWN, "incomplete", instances=[instance("i-1", OWN, "fixed")], round_=1)
    second = read_result(f"runs/run-1/{result_name(Target(OWN, REGION), 'apply', 2)}", b'{"account_id": ')

    # When merged
    [merged] = merge_targets(plan, [first], [second])

    # Then the target is an error naming round 2's object, and round 1's fix is still reported
    assert merged["status"] == "error"
    assert merged["error"].startswith(f"{UNREADABLE}: not JSON")
    assert [e["instance_id"] for e in merged["instances"]] == ["i-1"]
    assert merged["instances"][0]["actions"]


def test_an_unreadable_revoke_result_is_the_targets_error_named_as_the_revoke_phase():
    # Given a refresh that revokes an expired prefix; the target's apply result is fine, its revoke result is not
    plan = scan_plan(_ranges())
    plan.job, plan.apply_ranges, plan.expired = "refresh", True, {REGION: ["198.51.100.24/29"]}
    applied = {"region": REGION, "groups": 1, "added": [], "revoked": [], "alerts": [], "error": None}
    revoke = read_result(f"runs/run-1/{result_name(Target(OWN, REGION), 'revoke', 1)}", b"{}")

    # When merged
    [merged] = merge_targets(plan, [document(OWN, refresh=applied)], [revoke])

    # Then the target is an error that names the revoke phase's unreadable object
    assert (merged["status"], merged["error"]) == (
        "error",
        f"revoke phase: {UNREADABLE}: account_id: Field required",
    )


def _ranges():
    from eic_guard.ranges.ip_ranges import load

    from tests.conftest import IP_RANGES

    return load(str(IP_RANGES / "ip-ranges-2026-08-22.json"))


def test_aggregate_looks_for_lost_results_only_where_a_result_object_is_missing():
    # Given a refresh with a revoke phase over three targets: one complete, one without any result object, one whose
    # last object says incomplete at round 3 and whose revoke result is missing
    from eic_guard.fanout.steps import MAX_ROUNDS, lost_keys

    c = "333333333333"
    plan = scan_plan(_ranges(), targets=plan_targets((OWN, MEMBER_A, c), (REGION,)))
    plan.job, plan.apply_ranges, plan.expired = "refresh", True, {REGION: ["198.51.100.24/29"]}
    documents = [
        document(OWN),
        document(OWN, phase="revoke"),
        document(c, "incomplete", round_=1),
        document(c, "incomplete", round_=3),
    ]

    # When the keys to look up are listed
    keys = lost_keys(plan, documents, [])

    # Then they are every round of the target without results, the rounds after the incomplete one, and the missing
    # revoke phase; none for the complete target (a run without a missing object makes no lookup at all)
    def key(account, phase, round_):
        return f"lost#run-1#results/{account}/{REGION}/{phase}-r{round_}.json"

    assert keys == (
        [key(MEMBER_A, "apply", r) for r in range(1, MAX_ROUNDS + 1)]
        + [key(MEMBER_A, "revoke", r) for r in range(1, MAX_ROUNDS + 1)]
        + [key(c, "apply", r) for r in range(4, MAX_ROUNDS + 1)]
        + [key(c, "revoke", r) for r in range(1, MAX_ROUNDS + 1)]
    )
    assert (
        lost_keys(
            plan,
            [document(a) for a in (OWN, MEMBER_A, c)] + [document(a, phase="revoke") for a in (OWN, MEMBER_A, c)],
            [],
        )
        == []
    )
