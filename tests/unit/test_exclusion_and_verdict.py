"""Instance scope (stopped, excluded) through engine.evaluate_instance, and report.verdict (docs/architecture.md §2,
§5)."""

from __future__ import annotations

from datetime import date

import pytest
from eic_guard.checks import CHECK_IDS, check_ids_for
from eic_guard.engine import evaluate_instance, exclusion
from eic_guard.models import CheckResult, InstanceOutcome
from eic_guard.outputs.report import verdict

from tests.unit.snapshots import (
    INSTANCE_ID,
    REGION,
    VPC,
    context,
    group,
    image,
    instance,
    nacl_entry,
    network_acl,
    route,
    route_table,
    rule,
    snapshot,
)

TODAY = date(2026, 8, 22)
EXCLUDE = "eic-guard:exclude"
UNTIL = "eic-guard:exclude-until"


def test_compliant_defaults_pass_every_check():
    # Given the builders' default (compliant) running instance
    inst = instance()

    # When
    outcome = evaluate_instance(inst, context(snapshot(inst)), TODAY)

    # Then
    assert {cid: r.status for cid, r in outcome.checks.items()} == dict.fromkeys(check_ids_for("public"), "pass")
    assert (outcome.instance_id, outcome.region, outcome.vpc_id) == (INSTANCE_ID, REGION, VPC)
    assert verdict(outcome) == "compliant"


def test_stopped_instance_is_checked_except_public_ipv4():
    # Given a stopped instance where every prerequisite but the public address is broken
    inst = instance(state="stopped", public_ip=None, http_endpoint="disabled")
    snap = snapshot(
        inst,
        groups=(group("sg-0ssh", rule("10.0.0.0/8")),),
        images=(image("al2023-ami-minimal-2023.12.20260727.0-kernel-6.1-x86_64"),),
        route_tables=(route_table("rtb-0main", route(target="nat-0aaa"), main=True),),
        network_acls=(network_acl(nacl_entry(100, egress=True)),),
    )

    # When
    outcome = evaluate_instance(inst, context(snap), TODAY)

    # Then
    statuses = {cid: r.status for cid, r in outcome.checks.items()}
    assert statuses == {
        "public-ipv4": "not-applicable",
        "eic-ssh-ingress": "fail",
        "al2023-ami": "fail",
        "imds-enabled": "fail",
        "internet-route": "fail",
        "network-acl": "fail",
    }
    assert outcome.checks["eic-ssh-ingress"].fix is not None
    assert outcome.checks["imds-enabled"].fix is not None
    assert verdict(outcome) == "noncompliant"


def test_a_crashing_check_is_recorded_as_error_and_the_others_still_run(monkeypatch):
    # Given a check that raises
    from eic_guard.checks import imds_enabled

    def boom(instance, ctx):
        raise RuntimeError("bug")

    monkeypatch.setattr(imds_enabled, "evaluate", boom)
    inst = instance()

    # When
    outcome = evaluate_instance(inst, context(snapshot(inst)), TODAY)

    # Then
    assert outcome.checks["imds-enabled"] == CheckResult("error", "RuntimeError: bug", kind="check-bug")
    assert outcome.checks["network-acl"].status == "pass"
    assert verdict(outcome) == "error"


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({}, None),
        ({"eic-guard:managed": "true"}, None),
        ({EXCLUDE: "database migration CHG-1234"}, "database migration CHG-1234"),
        ({EXCLUDE: "migration", UNTIL: "2026-08-23"}, "migration (until 2026-08-23)"),
        ({EXCLUDE: "migration", UNTIL: "2026-08-22"}, "migration (until 2026-08-22)"),
        ({EXCLUDE: "migration", UNTIL: "2026-08-21"}, None),
        ({EXCLUDE: "", UNTIL: "2027-01-01"}, "excluded (no reason given) (until 2027-01-01)"),
    ],
    ids=["untagged", "managed-only", "reason", "until-tomorrow", "until-today", "until-yesterday", "empty-reason"],
)
def test_exclusion(tags, expected):
    # Given an instance with these tags, evaluated on 2026-08-22
    inst = instance(tags=tags)

    # When
    reason = exclusion(inst, TODAY)

    # Then
    assert reason == expected


@pytest.mark.parametrize("until", ["next friday", "2026-13-01", "22/08/2026", "2026-8-1", "20260101", "2026-W01-1"])
def test_malformed_until_date_keeps_the_exclusion_and_says_why(until):
    # Given an exclusion whose end date is not YYYY-MM-DD (even ISO forms Python accepts, in the past)
    inst = instance(tags={EXCLUDE: "migration", UNTIL: until})

    # When
    reason = exclusion(inst, TODAY)

    # Then
    assert reason is not None
    assert reason.startswith("migration; ")
    assert f"{UNTIL}={until!r} is not a YYYY-MM-DD date" in reason


def test_excluded_instance_has_no_checks_and_verdict_excluded():
    # Given an excluded instance that would fail checks
    inst = instance(public_ip=None, http_endpoint="disabled", tags={EXCLUDE: "legacy"})

    # When
    outcome = evaluate_instance(inst, context(snapshot(inst)), TODAY)

    # Then
    assert outcome.checks == {}
    assert outcome.excluded_reason == "legacy"
    assert verdict(outcome) == "excluded"


def test_expired_exclusion_is_evaluated_again():
    # Given an exclusion that ended yesterday
    inst = instance(http_endpoint="disabled", tags={EXCLUDE: "legacy", UNTIL: "2026-08-21"})

    # When
    outcome = evaluate_instance(inst, context(snapshot(inst)), TODAY)

    # Then
    assert outcome.excluded_reason is None
    assert outcome.checks["imds-enabled"].status == "fail"
    assert verdict(outcome) == "noncompliant"


def outcome_with(*statuses, error=None, excluded=None):
    outcome = InstanceOutcome(INSTANCE_ID, REGION, VPC, excluded_reason=excluded, error=error)
    outcome.checks = {cid: CheckResult(s) for cid, s in zip(CHECK_IDS, statuses, strict=False)}
    return outcome


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (("pass",) * 6, "compliant"),
        (("not-applicable",) + ("pass",) * 5, "compliant"),
        (("pass", "fixed", "pass", "fixed", "pass", "pass"), "fixed"),
        (("not-applicable", "fixed", "pass", "pass", "pass", "pass"), "fixed"),
        (("pass", "fixed", "pass", "pass", "pass", "fail"), "noncompliant"),
        (("pass", "would-fix", "pass", "pass", "pass", "pass"), "noncompliant"),
        (("fail",) + ("pass",) * 5, "noncompliant"),
        (("pass", "error", "pass", "pass", "pass", "pass"), "error"),
        (("fail", "error", "fixed", "pass", "pass", "pass"), "error"),
    ],
)
def test_verdict_from_check_statuses(statuses, expected):
    # Given an outcome with these check statuses
    outcome = outcome_with(*statuses)

    # When / Then
    assert verdict(outcome) == expected


def test_instance_level_error_is_an_error_verdict():
    # Given an outcome whose checks passed but the instance vanished during remediation
    outcome = outcome_with(*("pass",) * 6, error="instance vanished during the run (InvalidInstanceID.NotFound)")

    # When / Then
    assert verdict(outcome) == "error"


def test_excluded_wins_over_everything():
    # Given an excluded outcome that (wrongly) carries failing and error checks
    outcome = outcome_with("fail", "error", excluded="legacy")

    # When / Then
    assert verdict(outcome) == "excluded"
