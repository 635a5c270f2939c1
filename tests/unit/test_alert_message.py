"""alert_message: the message that lists every problem, without memory (the event-driven checks, the refresh)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from eic_guard.outputs.alerts import ALERT_LINES, alert_message
from eic_guard.outputs.report import CheckEntry, InstanceEntry, IpRangesEntry, Report, TargetError

from tests.report_entries import summary_of

STARTED = datetime(2026, 8, 23, 3, 0, tzinfo=UTC)
PASS = CheckEntry(status="pass", reason="ok")
AMI_FAIL = CheckEntry(status="fail", reason="ami-0abc (ubuntu-22.04) is not owned by Amazon (137112412989)")


def instance(number: int, verdict: str, **checks: CheckEntry) -> InstanceEntry:
    return InstanceEntry(
        instance_id=f"i-{number:017x}",
        account_id="123456789012",
        region="us-east-1",
        vpc_id="vpc-1",
        verdict=verdict,
        checks={"public-ipv4": PASS, **{k.replace("_", "-"): v for k, v in checks.items()}},
        actions=[],
    )


def report(
    instances: list[InstanceEntry], *, mode: str = "remediate", target_errors: tuple[TargetError, ...] = ()
) -> Report:
    return Report(
        run_id="run-1",
        mode=mode,
        account_id="123456789012",
        regions=["us-east-1", "eu-west-1"],
        started_at=STARTED,
        finished_at=STARTED,
        ip_ranges=IpRangesEntry(sync_token="1787411825", create_date="2026-08-22-15-17-05"),
        summary=summary_of(instances, target_errors),
        accounts=["123456789012"],
        targets=[],
        instances=instances,
        target_errors=list(target_errors),
    )


def test_no_message_when_every_instance_is_compliant_fixed_or_excluded():
    # Given a run where nothing stays non-compliant and a refresh without alerts
    fixed_check = CheckEntry(status="fixed", reason="TCP 22 not allowed from 18.206.107.24/29")
    done = report(
        [instance(1, "compliant"), instance(2, "fixed", eic_ssh_ingress=fixed_check), instance(3, "excluded")]
    )

    # When the alert is composed
    message = alert_message(done, [], "s3://bucket/reports/scan/2026/08/23/run-1.html")

    # Then there is none, with or without a report
    assert message is None
    assert alert_message(None, []) is None


def test_lists_each_problem_instance_with_its_failing_checks_and_reasons():
    # Given one instance that cannot be fixed, one that errored and one compliant
    error = CheckEntry(status="error", reason="imds-enabled: fix failed: UnauthorizedOperation")
    run = report(
        [
            instance(1, "noncompliant", al2023_ami=AMI_FAIL),
            instance(2, "error", imds_enabled=error),
            instance(3, "compliant"),
        ]
    )

    # When the alert is composed
    message = alert_message(run, [], "s3://bucket/reports/scan/2026/08/23/run-1.html")

    # Then a headline with the counts, one line per problem instance naming the failing check and reason,
    # nothing about the compliant instance or passing checks, and the report location last
    lines = message.splitlines()
    assert lines[0] == (
        "eic-guard remediate run run-1, account 123456789012 (us-east-1, eu-west-1): "
        "1 non-compliant, 1 errors, 0 fixed, 1 compliant of 3."
    )
    assert lines[1] == f"- i-{1:017x} in 123456789012 us-east-1: al2023-ami fail: {AMI_FAIL.reason}"
    assert lines[2] == f"- i-{2:017x} in 123456789012 us-east-1: imds-enabled error: {error.reason}"
    assert lines[3] == "Report: s3://bucket/reports/scan/2026/08/23/run-1.html"
    assert len(lines) == 4
    assert f"i-{3:017x}" not in message
    assert "public-ipv4" not in message


def test_would_fix_in_report_mode_needs_attention():
    # Given a report-mode run that planned a fix
    planned = CheckEntry(status="would-fix", reason="HttpEndpoint is disabled")
    run = report([instance(1, "noncompliant", imds_enabled=planned)], mode="report")

    # When the alert is composed
    message = alert_message(run, [])

    # Then the planned fix is listed as still needing attention
    assert message.splitlines()[1] == (
        f"- i-{1:017x} in 123456789012 us-east-1: imds-enabled would-fix: HttpEndpoint is disabled"
    )
    assert "Report:" not in message


def test_lists_at_most_25_instances_then_says_how_many_more():
    # Given 31 non-compliant instances
    run = report([instance(n, "noncompliant", al2023_ami=AMI_FAIL) for n in range(1, 32)])

    # When the alert is composed
    lines = alert_message(run, []).splitlines()

    # Then the first 25 are listed, then one line for the remaining 6
    instance_lines = [line for line in lines if line.startswith("- i-")]
    assert ALERT_LINES == 25
    assert instance_lines == [
        f"- i-{n:017x} in 123456789012 us-east-1: al2023-ami fail: {AMI_FAIL.reason}" for n in range(1, 26)
    ]
    assert lines[-1] == "- … and 6 more"
    assert len(lines) == 1 + 25 + 1


def test_exactly_25_instances_need_no_more_line():
    # Given exactly 25 non-compliant instances
    run = report([instance(n, "noncompliant", al2023_ami=AMI_FAIL) for n in range(1, 26)])

    # When the alert is composed
    message = alert_message(run, [])

    # Then all 25 are listed and there is no "more" line
    assert message.count("\n- i-") == 25
    assert "more" not in message


def test_includes_regions_that_could_not_be_scanned():
    # Given a run where one region could not be read at all
    run = report(
        [instance(1, "compliant")],
        target_errors=[
            TargetError(region="eu-west-1", account_id="123456789012", error="ClientError: UnauthorizedOperation")
        ],
    )

    # When the alert is composed
    message = alert_message(run, [])

    # Then the headline counts the error and the region is named with its error
    assert "0 non-compliant, 1 errors" in message.splitlines()[0]
    assert "- 123456789012 eu-west-1 could not be scanned: ClientError: UnauthorizedOperation" in message.splitlines()


def test_includes_refresh_alerts_even_when_the_scan_is_clean():
    # Given a clean scan and a refresh that raised two alerts
    alerts = [
        "ap-south-2: ip-ranges.json 1787411825 lists no EC2_INSTANCE_CONNECT prefix for the region",
        "notification rejected (md5-mismatch): ip-ranges.json md5 is abc, expected 000",
    ]

    # When the alert is composed for the scan and for a refresh alone
    with_scan = alert_message(report([instance(1, "compliant")]), alerts, "s3://b/k.html")
    refresh_only = alert_message(None, alerts)

    # Then both carry a refresh section with each alert; the clean scan adds no headline
    assert with_scan.splitlines() == ["ip-ranges refresh:", f"- {alerts[0]}", f"- {alerts[1]}", "Report: s3://b/k.html"]
    assert refresh_only.splitlines() == ["ip-ranges refresh:", f"- {alerts[0]}", f"- {alerts[1]}"]


def test_an_organization_run_names_each_problems_account():
    # Given a run over two accounts: one instance failing in the member, one member region not enabled
    member = "210987654321"
    failing = instance(1, "noncompliant", al2023_ami=AMI_FAIL).model_copy(update={"account_id": member})
    unreachable = TargetError(region="eu-west-1", account_id=member, error="region not enabled (OptInRequired)")
    run = report([failing, instance(2, "compliant")], target_errors=(unreachable,)).model_copy(
        update={"accounts": ["123456789012", member]}
    )

    # When the alert is composed
    message = alert_message(run, [])

    # Then it counts the accounts and names the account of the target error (first: a target that could not be
    # scanned is the worst) and of the instance
    lines = message.splitlines()
    assert "2 accounts (us-east-1, eu-west-1)" in lines[0]
    assert lines[1] == f"- {member} eu-west-1 could not be scanned: region not enabled (OptInRequired)"
    assert lines[2].startswith(f"- i-{1:017x} in {member} us-east-1: al2023-ami fail:")


@pytest.mark.parametrize(
    ("paths", "counted"),
    [({"public": 2, "endpoint": 1}, " (2 public, 1 endpoint)"), ({"public": 3}, ""), ({}, "")],
    ids=["both-paths", "public-only", "no-paths"],
)
def test_the_headline_counts_instances_per_path_once_the_endpoint_path_is_in_use(paths, counted):
    # Given a run with one non-compliant instance, its summary counting instances per connect path
    run = report([instance(1, "noncompliant", al2023_ami=AMI_FAIL), instance(2, "compliant"), instance(3, "compliant")])
    run = run.model_copy(update={"summary": run.summary.model_copy(update={"connect_paths": paths})})

    # When the alert is composed
    headline = alert_message(run, []).splitlines()[0]

    # Then the counts per path follow the instance count when some instance takes the endpoint path
    # (docs/architecture.md §13); a public-only fleet's headline is as it always was
    assert headline.endswith(f"compliant of 3{counted}.")
