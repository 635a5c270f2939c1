"""Quiet alerts (outputs/alerts.py): problems and their fingerprints, what is new, the digest, subject, lines, link."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from eic_guard.outputs import alerts
from eic_guard.outputs.alerts import (
    ALERT_LINES,
    DIGEST_PERIOD,
    AlertState,
    Problem,
    decide,
    problems_of,
    quiet_message,
    quiet_subject,
    report_link,
)
from eic_guard.outputs.report import (
    CheckEntry,
    InstanceEntry,
    IpRangesEntry,
    Report,
    TargetEntry,
    TargetError,
)

from tests.report_entries import summary_of

NOW = datetime(2026, 8, 23, 3, 0, tzinfo=UTC)
ACCOUNT, MEMBER = "123456789012", "210987654321"
PASS = CheckEntry(status="pass", reason="ok")
AMI_FAIL = CheckEntry(status="fail", reason="ami-0abc (ubuntu-22.04) is not owned by Amazon (137112412989)")
IMDS_OFF = CheckEntry(status="would-fix", reason="HttpEndpoint is disabled")
OPEN_WORLD = "ssh-open-to-internet: sg-1 (web) allows TCP 22 from 0.0.0.0/0"


def instance(number: int, verdict: str, *, account: str = ACCOUNT, warnings=(), **checks: CheckEntry) -> InstanceEntry:
    return InstanceEntry(
        instance_id=f"i-{number:017x}",
        account_id=account,
        region="us-east-1",
        vpc_id="vpc-1",
        verdict=verdict,
        checks={"public-ipv4": PASS, **{k.replace("_", "-"): v for k, v in checks.items()}},
        actions=[],
        name=f"web-{number}",
        tags={"Owner": "alice", "Team": "web"},
        warnings=list(warnings),
    )


def report(
    instances: list[InstanceEntry],
    *,
    accounts: tuple[str, ...] = (ACCOUNT,),
    aliases: dict[str, str] | None = None,
    target_errors: tuple[TargetError, ...] = (),
) -> Report:
    failed = {(e.account_id, e.region) for e in target_errors}
    return Report(
        run_id="run-1",
        mode="report",
        account_id=ACCOUNT,
        regions=["us-east-1"],
        started_at=NOW,
        finished_at=NOW,
        ip_ranges=IpRangesEntry(sync_token="1787411825", create_date="2026-08-22-15-17-05"),
        summary=summary_of(instances, target_errors),
        accounts=list(accounts),
        account_aliases=aliases or {},
        targets=[
            TargetEntry(
                account_id=a,
                region="us-east-1",
                status="error" if (a, "us-east-1") in failed else "ok",
                error=None,
                instances=0,
            )
            for a in accounts
        ],
        instances=instances,
        target_errors=list(target_errors),
    )


def remembered(run: Report, last_digest_at: datetime | None = NOW) -> AlertState:
    return AlertState(frozenset(p.fingerprint for p in problems_of(run)), last_digest_at)


# ---- problems and fingerprints -------------------------------------------------------------------------------------
def test_problems_are_failing_checks_warnings_and_unscanned_targets():
    # Given a non-compliant instance, a compliant one with a warning, a fixed one, and a region not scanned
    fixed = CheckEntry(status="fixed", reason="TCP 22 not allowed from EIC")
    unreachable = TargetError(region="eu-west-1", account_id=ACCOUNT, error="AccessDenied: no")
    run = report(
        [
            instance(1, "noncompliant", al2023_ami=AMI_FAIL, imds_enabled=IMDS_OFF),
            instance(2, "compliant", warnings=[OPEN_WORLD]),
            instance(3, "fixed", eic_ssh_ingress=fixed),
        ],
        target_errors=(unreachable,),
    )

    # When its problems are listed
    found = problems_of(run)

    # Then each failing check, each warning and each unscanned target is one problem; passing and fixed are not
    assert [(p.instance_id, p.check, p.status) for p in found] == [
        (f"i-{1:017x}", "al2023-ami", "fail"),
        (f"i-{1:017x}", "imds-enabled", "would-fix"),
        (f"i-{2:017x}", "warning", "warning"),
        (None, "target", "error"),
    ]


def test_a_fingerprint_changes_when_the_instance_fails_differently_not_when_it_is_renamed():
    # Given one failing check
    base = Problem(ACCOUNT, "us-east-1", "i-1", "al2023-ami", "fail", "ami-1 is not owned by Amazon", "web-1")

    # Then its fingerprint is 8 bytes, the first 3 naming its target
    assert len(base.fingerprint) == 8
    assert base.fingerprint[:3] == alerts.target_prefix(ACCOUNT, "us-east-1")
    # And another name or owner tags leave it as it is
    renamed = Problem(ACCOUNT, "us-east-1", "i-1", "al2023-ami", "fail", base.reason, "db-1", (("Owner", "bob"),))
    assert renamed.fingerprint == base.fingerprint
    # And another status, reason, check, instance, region or account changes it
    others = [
        Problem(ACCOUNT, "us-east-1", "i-1", "al2023-ami", "error", base.reason),
        Problem(ACCOUNT, "us-east-1", "i-1", "al2023-ami", "fail", "ami-2 is not owned by Amazon"),
        Problem(ACCOUNT, "us-east-1", "i-1", "imds-enabled", "fail", base.reason),
        Problem(ACCOUNT, "us-east-1", "i-2", "al2023-ami", "fail", base.reason),
        Problem(ACCOUNT, "eu-west-1", "i-1", "al2023-ami", "fail", base.reason),
        Problem(MEMBER, "us-east-1", "i-1", "al2023-ami", "fail", base.reason),
    ]
    assert len({base.fingerprint, *(p.fingerprint for p in others)}) == 7


def test_the_parts_of_an_aws_error_that_change_at_every_call_do_not_change_the_fingerprint():
    # Given the same refused call twice: another request id, another encoded authorization message
    def refused(request_id: str, encoded: str) -> Problem:
        reason = (
            f"imds-enabled: cannot fix: UnauthorizedOperation (request {request_id}). "
            f"Encoded authorization failure message: {encoded}"
        )
        return Problem(ACCOUNT, "us-east-1", "i-1", "imds-enabled", "error", reason)

    # Then both are one problem
    first = refused("0a1b2c3d-1111-2222-3333-444455556666", "AbCdEf0123")
    again = refused("9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff", "ZyXw9876")
    assert first.fingerprint == again.fingerprint


# ---- the decision ------------------------------------------------------------------------------------------------
def test_first_run_everything_is_new_and_counts_as_the_digest():
    # Given no remembered run and two problems
    run = report([instance(1, "noncompliant", al2023_ami=AMI_FAIL, imds_enabled=IMDS_OFF)])

    # When deciding
    decision = decide(problems_of(run), None, NOW)

    # Then both are new (not a digest: nothing persists), and the digest clock starts now
    assert len(decision.new) == 2 and decision.listed == decision.new
    assert (decision.persisting, decision.resolved, decision.digest) == (0, 0, False)
    assert decision.state == remembered(run, NOW)


def test_same_problems_again_list_nothing_and_keep_the_state():
    # Given the last run remembered, one day ago
    run = report([instance(1, "noncompliant", al2023_ami=AMI_FAIL)])
    last = remembered(run, NOW - timedelta(days=1))

    # When the same run is decided
    decision = decide(problems_of(run), last, NOW)

    # Then nothing is listed (no alert), one persists, and the state is unchanged
    assert decision.listed == ()
    assert (decision.persisting, decision.resolved) == (1, 0)
    assert decision.state == last
    assert quiet_message(run, decision) is None


def test_an_instance_failing_differently_is_new_and_its_old_failure_resolved():
    # Given web-1 failing al2023-ami, remembered
    before = report([instance(1, "noncompliant", al2023_ami=AMI_FAIL)])
    later = NOW + timedelta(days=1)

    # When it now fails imds-enabled too, and the AMI reason changed
    other_ami = CheckEntry(status="fail", reason="ami-0def (debian-12) is not owned by Amazon (137112412989)")
    after = report([instance(1, "noncompliant", al2023_ami=other_ami, imds_enabled=IMDS_OFF)])
    decision = decide(problems_of(after), remembered(before), later)

    # Then both of its problems are new, and the old one is resolved
    assert [(p.check, p.reason) for p in decision.new] == [
        ("al2023-ami", other_ami.reason),
        ("imds-enabled", IMDS_OFF.reason),
    ]
    assert (decision.persisting, decision.resolved) == (0, 1)


@pytest.mark.parametrize(("days", "digest"), [(6, False), (7, True), (8, True)])
def test_what_persists_is_listed_once_the_digest_period_is_over(days, digest):
    # Given a problem remembered, the last digest `days` ago, and one new problem
    before = report([instance(1, "noncompliant", al2023_ami=AMI_FAIL)])
    last = remembered(before, NOW - timedelta(days=days))
    after = report(
        [instance(1, "noncompliant", al2023_ami=AMI_FAIL), instance(2, "noncompliant", imds_enabled=IMDS_OFF)]
    )

    # When deciding
    decision = decide(problems_of(after), last, NOW)

    # Then the digest lists everything, the new one first, and restarts the clock; otherwise only the new one
    assert timedelta(days=7) == DIGEST_PERIOD
    assert decision.digest is digest
    assert [p.instance_id for p in decision.listed] == [f"i-{2:017x}", f"i-{1:017x}"][: 2 if digest else 1]
    assert decision.state.last_digest_at == (NOW if digest else last.last_digest_at)


def test_a_target_not_scanned_keeps_its_problems_remembered():
    # Given a member account's instance remembered, and now its region could not be scanned
    before = report([instance(1, "noncompliant", account=MEMBER, al2023_ami=AMI_FAIL)], accounts=(ACCOUNT, MEMBER))
    unreachable = TargetError(region="us-east-1", account_id=MEMBER, error="cannot enter account")
    during = report([], accounts=(ACCOUNT, MEMBER), target_errors=(unreachable,))

    # When deciding that run
    decision = decide(problems_of(during), remembered(before), NOW, unscanned=[(MEMBER, "us-east-1")])

    # Then only the unreachable target is new; the instance is not resolved, and still remembered
    assert [(p.check, p.account_id) for p in decision.new] == [("target", MEMBER)]
    assert decision.resolved == 0
    # And when the target is back with the same problem, only the target error is resolved
    back = decide(problems_of(before), decision.state, NOW + timedelta(days=1))
    assert (back.new, back.resolved) == ((), 1)


def test_more_problems_than_the_state_keeps_are_all_alerted(monkeypatch):
    # Given a state that keeps at most 2 problems, and a run with 3
    monkeypatch.setattr(alerts, "MAX_FINGERPRINTS", 2)
    run = report([instance(n, "noncompliant", al2023_ami=AMI_FAIL) for n in (1, 2, 3)])

    # When deciding twice
    first = decide(problems_of(run), None, NOW)
    second = decide(problems_of(run), first.state, NOW + timedelta(days=1))

    # Then nothing is remembered, every run lists every problem as new, and says why
    assert first.state.fingerprints is None
    assert len(second.new) == 3
    assert any("more problems than eic-guard remembers" in note for note in second.notes)


# ---- subject, lines, link ------------------------------------------------------------------------------------------
def test_subject_names_the_account_alias_and_the_count():
    # Given two new problems in an account with an alias
    run = report([instance(1, "noncompliant", al2023_ami=AMI_FAIL, imds_enabled=IMDS_OFF)], aliases={ACCOUNT: "prod"})

    # When the subject is composed
    subject = quiet_subject(run, decide(problems_of(run), None, NOW))

    # Then it names the alias, the id and the count
    assert subject == f"eic-guard: 2 new problems in prod ({ACCOUNT})"


def test_digest_subject_counts_instances_and_an_organization_run_counts_accounts():
    # Given problems in two accounts, remembered and due for a digest
    run = report(
        [
            instance(1, "noncompliant", al2023_ami=AMI_FAIL),
            instance(2, "noncompliant", account=MEMBER, al2023_ami=AMI_FAIL, imds_enabled=IMDS_OFF),
        ],
        accounts=(ACCOUNT, MEMBER),
    )
    decision = decide(problems_of(run), remembered(run, NOW - timedelta(days=8)), NOW)

    # When the subject is composed
    # Then it is the digest's, counting instances and accounts
    assert quiet_subject(run, decision) == "eic-guard weekly digest: 2 instances need attention in 2 accounts"


def test_a_subject_too_long_with_the_alias_names_the_id_and_is_always_valid_for_sns():
    # Given an alias of 63 characters (IAM's longest)
    run = report([instance(1, "noncompliant", al2023_ami=AMI_FAIL)], aliases={ACCOUNT: "a" * 63})
    decision = decide(problems_of(run), remembered(run, NOW - timedelta(days=8)), NOW)

    # When the subject is composed
    subject = quiet_subject(run, decision)

    # Then it names the id alone: printable ASCII, under 100 characters
    assert subject == f"eic-guard weekly digest: 1 instance needs attention in {ACCOUNT}"
    assert alerts.sns_subject("é\nnew" + "x" * 200) == "? new" + "x" * 91 + "..."


def test_lines_name_the_instance_owner_account_region_check_and_warning_then_cap():
    # Given an account with an alias, a failing instance with a warning, and 30 more failing instances
    run = report(
        [instance(1, "noncompliant", warnings=[OPEN_WORLD], al2023_ami=AMI_FAIL)]
        + [instance(n, "noncompliant", imds_enabled=IMDS_OFF) for n in range(2, 32)],
        aliases={ACCOUNT: "prod"},
    )

    # When the first run's message is composed
    lines = quiet_message(run, decide(problems_of(run), None, NOW), "https://console/report").splitlines()

    # Then each problem is a line naming the instance (Name, owner tags), account label and region, then the check,
    # status and reason, or the warning; at most ALERT_LINES, then how many more; the link last
    where = f"in prod ({ACCOUNT}) us-east-1"
    assert lines[:4] == [
        f"eic-guard report run run-1, account prod ({ACCOUNT}) (us-east-1): 31 non-compliant, 0 errors, 0 fixed, "
        "0 compliant of 31, 1 with warnings.",
        "New or changed since the last run (32):",
        f"- i-{1:017x} (web-1, Owner=alice, Team=web) {where}: al2023-ami fail: {AMI_FAIL.reason}",
        f"- i-{1:017x} (web-1, Owner=alice, Team=web) {where}: warning: {OPEN_WORLD}",
    ]
    assert lines[4] == f"- i-{2:017x} (web-2, Owner=alice, Team=web) {where}: imds-enabled would-fix: {IMDS_OFF.reason}"
    assert len([line for line in lines if line.startswith("- i-")]) == ALERT_LINES == 25
    assert lines[-2:] == ["- … and 7 more", "Report: https://console/report"]


def test_a_digest_marks_the_new_problems_and_counts_what_is_resolved():
    # Given web-1 remembered with two problems, due for a digest; now one is fixed and web-2 breaks
    before = report([instance(1, "noncompliant", al2023_ami=AMI_FAIL, imds_enabled=IMDS_OFF)])
    after = report(
        [instance(1, "noncompliant", al2023_ami=AMI_FAIL), instance(2, "noncompliant", imds_enabled=IMDS_OFF)]
    )

    # When the message is composed
    decision = decide(problems_of(after), remembered(before, NOW - timedelta(days=8)), NOW)
    lines = quiet_message(after, decision).splitlines()

    # Then everything open is listed, the new one first and marked, and the resolved one counted
    assert lines[1:] == [
        "Weekly digest: every open problem (2), new or changed ones [new]:",
        f"- [new] i-{2:017x} (web-2, Owner=alice, Team=web) in {ACCOUNT} us-east-1: imds-enabled would-fix: "
        f"{IMDS_OFF.reason}",
        f"- i-{1:017x} (web-1, Owner=alice, Team=web) in {ACCOUNT} us-east-1: al2023-ami fail: {AMI_FAIL.reason}",
        "1 resolved since the last run.",
    ]


def test_refresh_alerts_are_sent_even_when_no_problem_is_new():
    # Given a run with nothing new, and a refresh alert
    run = report([instance(1, "noncompliant", al2023_ami=AMI_FAIL)])
    decision = decide(problems_of(run), remembered(run), NOW + timedelta(days=1))

    # When the alert is composed
    message = quiet_message(run, decision, "https://console/report", ["eu-west-1: no EIC prefix"])

    # Then it is the refresh's alone
    assert message.splitlines() == [
        "ip-ranges refresh:",
        "- eu-west-1: no EIC prefix",
        "Report: https://console/report",
    ]
    assert quiet_subject(run, decision) == "eic-guard: the ip-ranges refresh needs attention"


@pytest.mark.parametrize(
    ("region", "arn", "link"),
    [
        (
            "eu-west-1",
            None,
            "https://eu-west-1.console.aws.amazon.com/s3/object/reports?region=eu-west-1&prefix=reports/scan/r%201.html",
        ),
        (
            "cn-north-1",
            "arn:aws-cn:sns:cn-north-1:123456789012:alerts",
            "https://console.amazonaws.cn/s3/object/reports?region=cn-north-1&prefix=reports/scan/r%201.html",
        ),
        (
            "us-gov-west-1",
            None,
            "https://console.amazonaws-us-gov.com/s3/object/reports?region=us-gov-west-1&prefix=reports/scan/r%201.html",
        ),
        ("us-iso-east-1", None, "s3://reports/reports/scan/r 1.html"),
    ],
)
def test_the_report_link_is_the_s3_console_of_the_buckets_partition(region, arn, link):
    # When the link to a report object is made for a bucket in `region`
    # Then it is that partition's S3 console page of the object (no console host known: the s3:// location)
    assert report_link("reports", "reports/scan/r 1.html", region, alerts.partition_of(region, arn)) == link


def test_a_tally_of_a_large_run_keeps_the_worst_targets_lines_and_counts_the_rest():
    # Given 2,000 targets of problems fed one target at a time (what the streamed Aggregate does): target k has
    # 1 + k % 7 problems, every tenth target's first problem remembered from the last run (a week ago: digest due),
    # and one target that could not be scanned
    known = set()
    targets = [(f"{100000000000 + n:012d}", "us-east-1") for n in range(2_000)]
    every, by_target = [], {}
    for n, (account, region) in enumerate(targets):
        found = {}
        for k in range(1 + n % 7):
            problem = Problem(account, region, f"i-{n:08x}{k:09x}", "imds-enabled", "fail", f"reason {k}")
            found[problem.fingerprint] = problem
            if n % 10 == 0 and k == 0:
                known.add(problem.fingerprint)
        every += found.values()
        by_target[(account, region)] = list(found.values())
    unscanned = Problem(*targets[-1], None, "target", "error", "AssumeRole: AccessDenied")
    previous = AlertState(frozenset(known), NOW - timedelta(days=8))
    tally = alerts.ProblemTally(previous)
    by_target[targets[-1]].append(unscanned)  # the target that could not be scanned: its error after its instances
    for target in targets:
        tally.add(by_target[target])

    decision = tally.decide(NOW)

    # Then it counts every problem, remembers them all, and holds the lines of a few targets only (each target added
    # once, all its problems together)
    assert (decision.total, decision.new_count) == (len(every) + 1, len(every) + 1 - len(known))
    assert decision.digest and decision.state.fingerprints == frozenset(p.fingerprint for p in [*every, unscanned])
    assert len(tally.every.kept) <= 2 * ALERT_LINES and len(tally.new.kept) <= 2 * ALERT_LINES
    # and lists the target that could not be scanned first, then the targets with the most problems (7), each
    # target's new problems before the persisting one, the persisting ones unmarked
    assert [p.account_id for p in decision.listed[:6]] == [targets[-1][0]] * 6 and decision.listed[5] == unscanned
    assert [p.account_id for p in decision.listed[6:13]] == [targets[6][0]] * 7
    assert len(decision.listed) == ALERT_LINES
    assert set(decision.marked) == {p for p in decision.listed if p.fingerprint not in known}
    assert decision == decide([*every, unscanned], previous, NOW)
