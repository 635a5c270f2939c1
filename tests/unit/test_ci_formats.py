"""SARIF and JUnit (outputs/sarif.py, outputs/junit.py) on reports built by hand: excluded instances, targets that
could not be scanned, an interrupted run, warnings, and text a tag writer controls."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from xml.etree import ElementTree

import jsonschema
from eic_guard.checks import ALL_CHECKS
from eic_guard.outputs.junit import render_junit
from eic_guard.outputs.report import CheckEntry, InstanceEntry, IpRangesEntry, Report, TargetEntry, TargetError
from eic_guard.outputs.sarif import render_sarif

from tests.conftest import FIXTURES
from tests.report_entries import every_check, summary_of

ACCOUNT, MEMBER, REGION = "123456789012", "210987654321", "eu-west-1"
STARTED = datetime(2026, 8, 23, 3, 0, 5, tzinfo=UTC)
WORLD_OPEN = "ssh-open-to-internet: sg-0open allows TCP 22 from 0.0.0.0/0"
SARIF_SCHEMA = json.loads((FIXTURES / "sarif" / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))


def report(*, interrupted: bool = False) -> Report:
    instances = [
        InstanceEntry(
            instance_id="i-01",
            account_id=ACCOUNT,
            region=REGION,
            vpc_id="vpc-1",
            verdict="error",
            checks=every_check(
                network_acl=CheckEntry(status="error", reason="DescribeNetworkAcls failed"),
                al2023_ami=CheckEntry(status="fail", reason="ami-unknown", guidance="Relaunch: https://docs..."),
                public_ipv4=CheckEntry(status="not-applicable", reason="stopped"),
            ),
            actions=[],
            name="web\x01<b>",  # a control character and markup, as anyone who can tag an instance may write
            tags={"Owner": "alice"},
            warnings=[WORLD_OPEN],
        ),
        InstanceEntry(
            instance_id="i-02",
            account_id=ACCOUNT,
            region=REGION,
            vpc_id=None,
            verdict="excluded",
            checks={},
            actions=[],
            excluded_reason="vendor appliance",
        ),
    ]
    errors = [TargetError(account_id=MEMBER, region=REGION, error="cannot enter account 210987654321: AccessDenied")]
    return Report(
        run_id="run-ci-1",
        mode="report",
        account_id=ACCOUNT,
        regions=[REGION],
        started_at=STARTED,
        finished_at=STARTED,
        ip_ranges=IpRangesEntry(sync_token="1", create_date="2026-08-22-15-17-05"),
        summary=summary_of(instances, errors),
        accounts=[ACCOUNT, MEMBER],
        account_aliases={ACCOUNT: "acme-prod"},
        targets=[
            TargetEntry(account_id=ACCOUNT, region=REGION, status="ok", error=None, instances=2),
            TargetEntry(account_id=MEMBER, region=REGION, status="error", error=errors[0].error, instances=0),
        ],
        instances=instances,
        target_errors=errors,
        interrupted=interrupted,
    )


def test_junit_cases_say_fail_error_skip_and_carry_the_warning():
    # When the report is written as JUnit
    root = ElementTree.fromstring(render_junit(report()))

    # Then one suite per target; the instance's six checks, the excluded instance and the target error are cases
    own, member = root.findall("testsuite")
    assert (own.get("name"), member.get("name")) == (f"acme-prod ({ACCOUNT}) {REGION}", f"{MEMBER} {REGION}")
    outcomes = {
        case.get("name"): next((child.tag for child in case if child.tag != "system-out"), "passed")
        for case in own.findall("testcase")
    }
    label = " (web\ufffd<b>)"  # the control character replaced, the markup kept as text
    assert outcomes == {
        f"public-ipv4{label}": "skipped",
        f"eic-ssh-ingress{label}": "passed",
        f"al2023-ami{label}": "failure",
        f"imds-enabled{label}": "passed",
        f"internet-route{label}": "passed",
        f"network-acl{label}": "error",
        "excluded": "skipped",
    }
    [scan] = member.findall("testcase")
    assert (scan.get("name"), scan.find("error").get("message")) == ("scan", report().target_errors[0].error)
    # And the warning is the system-out of the check it is about
    [warned] = [c for c in own.findall("testcase") if c.find("system-out") is not None]
    assert warned.get("name").startswith("eic-ssh-ingress")
    assert warned.find("system-out").text == f"warning: {WORLD_OPEN}"
    # And the counts add up, suite by suite and in total
    assert [(s.get("tests"), s.get("failures"), s.get("errors"), s.get("skipped")) for s in (own, member, root)] == [
        ("7", "1", "1", "2"),
        ("1", "0", "1", "0"),
        ("8", "1", "2", "2"),
    ]


def test_junit_makes_a_warning_the_failure_of_its_passing_case_when_warnings_fail_the_build():
    # When the report is written as JUnit for `--fail-on warning`
    root = ElementTree.fromstring(render_junit(report(), warnings_fail=True))

    # Then the warned check's case fails with the warning, not a system-out the CI would show as green
    own, _member = root.findall("testsuite")
    [warned] = [c for c in own.findall("testcase") if c.get("name").startswith("eic-ssh-ingress")]
    assert [(child.tag, child.get("message")) for child in warned] == [("failure", f"warning: {WORLD_OPEN}")]
    # And one more failure is counted, the number of cases unchanged
    assert [(s.get("tests"), s.get("failures"), s.get("errors"), s.get("skipped")) for s in (own, root)] == [
        ("7", "2", "1", "2"),
        ("8", "2", "2", "2"),
    ]


def test_sarif_of_a_partial_run_is_valid_and_says_it_did_not_succeed():
    # Given a run that was interrupted and could not enter an account
    log = render_sarif(report(interrupted=True))

    # Then the schema accepts it, the invocation did not succeed, and the target error is a notification
    jsonschema.validate(log, SARIF_SCHEMA)
    [run] = log["runs"]
    [invocation] = run["invocations"]
    assert invocation["executionSuccessful"] is False
    assert [n["message"]["text"] for n in invocation["toolExecutionNotifications"]] == [
        f"{MEMBER} {REGION} could not be scanned: cannot enter account 210987654321: AccessDenied"
    ]
    assert run["properties"]["interrupted"] is True
    # And the failing check, the undecidable one and the warning are results; the excluded instance is none
    assert sorted((r["ruleId"], r["level"]) for r in run["results"]) == [
        ("al2023-ami", "error"),
        ("eic-ssh-ingress", "warning"),
        ("network-acl", "error"),
    ]
    assert {r["properties"]["instanceId"] for r in run["results"]} == {"i-01"}
    arn = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-01"
    assert {r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] for r in run["results"]} == {arn}


def test_every_check_is_a_sarif_rule_with_a_title_and_a_documentation_link():
    # When the rules are rendered
    rules = render_sarif(report())["runs"][0]["tool"]["driver"]["rules"]

    # Then each check (a new one included: it must declare its TITLE) is one rule, in the report's order
    assert [(rule["id"], rule["shortDescription"]["text"]) for rule in rules] == [
        (check.ID, check.TITLE) for check in ALL_CHECKS
    ]
    assert all(rule["helpUri"].startswith("https://docs.aws.amazon.com/") for rule in rules)
    # And a result's fingerprint stays the same from run to run (the same instance, check and account)
    first = render_sarif(report())["runs"][0]["results"]
    again = render_sarif(report(interrupted=True))["runs"][0]["results"]
    assert [r["partialFingerprints"] for r in first] == [r["partialFingerprints"] for r in again]
