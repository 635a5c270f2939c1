"""The organization fan-out (docs/architecture.md §9) on moto with three accounts: the management account (moto's
default 123456789012) running eic-guard, and two member accounts entered through the member role. Each member holds one
drifted opted-in instance. What is checked is each account's own AWS state afterwards (read with that account's
clients) and the exact report fields: accounts, targets, per-instance account_id."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest
import responses
from eic_guard.aws.clients import AwsClients
from eic_guard.fanout import steps
from eic_guard.fanout.local import run_job
from eic_guard.ranges import ip_ranges
from eic_guard.ranges.catch_up import advance_state
from eic_guard.ranges.notification import advance_and_fan_out
from eic_guard.ranges.state import DynamoDbStateStore, RangesState
from eic_guard.settings import IP_RANGES_URL, Settings

from tests.aws_views import eni_groups, metadata_options
from tests.conftest import EIC_US_EAST_1, EIC_US_EAST_1_V6, IP_RANGES, REGION, create_state_table
from tests.faults.injector import FaultInjector
from tests.integration.org_fixtures import (
    Organization,
    create_organization,
    drifted_instance,
    eic_rules,
    group_rules,
    managed_group_with_rules,
    managed_groups,
    role_arn,
    share_botocore_loader,
)
from tests.lambda_runtime import FakeLambdaContext
from tests.step_functions import shared

FIXABLE = ("eic-ssh-ingress", "imds-enabled")
AP_SOUTHEAST_6 = "ap-southeast-6"
AP_SOUTHEAST_6_EIC = ("3.103.24.208/29", "2406:da12:80b3:4800::/56")  # new in ip-ranges-2026-06-01.json
T0 = datetime(2026, 5, 29, 12, 0, tzinfo=UTC)
STATE_TABLE = "eic-guard-state"


@pytest.fixture(autouse=True)
def fast_sessions(monkeypatch):
    share_botocore_loader(monkeypatch)


@pytest.fixture
def org(aws) -> Organization:
    return create_organization()


@pytest.fixture
def fleet(org) -> dict[str, tuple]:
    """One drifted instance in each member account: account id -> (network, instance id)."""
    return {member: drifted_instance(org, member) for member in org.members}


def organization_settings(**values) -> Settings:
    return Settings.build(regions=(REGION,), accounts="organization", **values)


def assert_fixed_in_its_account(org: Organization, account_id: str, net, instance_id: str) -> None:
    """The instance carries its account's managed group, and its metadata endpoint is on with IMDSv2 kept."""
    ec2 = org.ec2(account_id)
    [managed] = managed_groups(ec2)
    assert managed["OwnerId"] == account_id
    assert eni_groups(ec2, instance_id) == [net.app_group_id, managed["GroupId"]]
    options = metadata_options(ec2, instance_id)
    assert (options["HttpEndpoint"], options["HttpTokens"]) == ("enabled", "required")


def assert_untouched(org: Organization, account_id: str, net, instance_id: str) -> None:
    ec2 = org.ec2(account_id)
    assert managed_groups(ec2) == []
    assert eni_groups(ec2, instance_id) == [net.app_group_id]
    assert metadata_options(ec2, instance_id)["HttpEndpoint"] == "disabled"


def member_role_entries(count: int) -> list[str]:
    """The only non-read calls of a run that changes nothing: entering each member account once."""
    return ["AssumeRole"] * count


# ---- scan and remediate through the member role ---------------------------------------------------------------------
def test_organization_scan_fixes_each_members_instance_in_its_own_account(org, fleet, api_calls, ranges_2026):
    # Given the management account running eic-guard with EIC_GUARD_ACCOUNTS=organization, and one drifted instance in
    # each member account
    settings = organization_settings()
    api_calls.clear()

    # When a remediate scan runs (the local runner: plan -> workers in a thread pool -> aggregate)
    outcome = run_job("scan", settings, AwsClients(), ranges=ranges_2026, run_id="org-run-1")

    # Then each member's instance is fixed in its own account, through the member role
    for member, (net, instance) in fleet.items():
        assert_fixed_in_its_account(org, member, net, instance)
    # And nothing was created in the management account, which has no opted-in instance
    assert managed_groups(org.ec2(org.management)) == []
    # And each member was entered once, with the run in the session name
    assert sorted(p["RoleArn"] for name, p in api_calls.calls if name == "AssumeRole") == sorted(
        role_arn(m) for m in org.members
    )
    assert {p["RoleSessionName"] for name, p in api_calls.calls if name == "AssumeRole"} == {"eic-guard-org-run-1"}

    # And the report covers the three accounts, every target ok, each instance under its own account
    report = outcome.report
    assert report.accounts == org.accounts
    assert report.account_id == org.management
    assert [t.model_dump() for t in report.targets] == [
        {
            "account_id": account_id,
            "region": REGION,
            "status": "ok",
            "error": None,
            "instances": 1 if account_id in org.members else 0,
            "notes": [],
        }
        for account_id in org.accounts
    ]
    assert {e.instance_id: (e.account_id, e.verdict) for e in report.instances} == {
        instance: (member, "fixed") for member, (_, instance) in fleet.items()
    }
    for entry in report.instances:
        assert {c: entry.checks[c].status for c in FIXABLE} == {c: "fixed" for c in FIXABLE}
    assert report.summary.model_dump() == {
        "instances": 2,
        "compliant": 0,
        "fixed": 2,
        "noncompliant": 0,
        "excluded": 0,
        "errors": 0,
        "warnings": 0,
        "connect_paths": {"public": 2},
    }
    assert outcome.plan.skipped_accounts == []

    # And a second run changes nothing in any account and finds both instances compliant
    api_calls.clear()
    again = run_job("scan", settings, AwsClients(), ranges=ranges_2026, run_id="org-run-2")
    assert api_calls.writes() == member_role_entries(2)
    assert {e.instance_id: (e.account_id, e.verdict) for e in again.report.instances} == {
        instance: (member, "compliant") for member, (_, instance) in fleet.items()
    }
    assert [t.status for t in again.report.targets] == ["ok"] * 3
    assert again.report.summary.errors == 0


def test_a_member_whose_role_cannot_be_assumed_is_a_target_error_and_the_other_is_fixed(
    org, fleet, monkeypatch, ranges_2026
):
    # Given the second member's role refusing eic-guard (not deployed there, or not trusting the central role)
    reachable, refused = org.members
    faults = FaultInjector().install(monkeypatch)
    faults.error("AssumeRole", "AccessDenied", service="sts", when=lambda p: p["RoleArn"] == role_arn(refused))

    # When the organization scan runs
    outcome = run_job("scan", organization_settings(), AwsClients(), ranges=ranges_2026)

    # Then the run completes: the reachable member's instance is fixed, the refused member is left as it was
    assert_fixed_in_its_account(org, reachable, *fleet[reachable])
    assert_untouched(org, refused, *fleet[refused])
    assert faults.answers_of("AssumeRole").count("AccessDenied") == 1

    # And the refused member's target is an error naming the account and the role; the others are ok
    report = outcome.report
    targets = {t.account_id: t for t in report.targets}
    assert targets[refused].status == "error"
    assert targets[refused].error.startswith(f"cannot enter account {refused}: cannot assume {role_arn(refused)}")
    assert "AccessDenied" in targets[refused].error
    assert targets[refused].instances == 0
    assert {a: t.status for a, t in targets.items() if a != refused} == {org.management: "ok", reachable: "ok"}
    # And the summary counts the target error, the report still covers all three accounts
    assert report.summary.errors == 1
    assert report.summary.fixed == 1
    assert report.accounts == org.accounts
    assert [(e.account_id, e.error) for e in report.target_errors] == [(refused, targets[refused].error)]
    assert report.has_noncompliant


def test_report_mode_organization_scan_writes_nothing_in_any_account(org, fleet, api_calls, ranges_2026):
    # Given report mode
    api_calls.clear()

    # When the organization scan runs
    outcome = run_job("scan", organization_settings(mode="report"), AwsClients(), ranges=ranges_2026)

    # Then no account was changed: the only non-read calls entered the two members
    assert api_calls.writes() == member_role_entries(2)
    for member, (net, instance) in fleet.items():
        assert_untouched(org, member, net, instance)
    assert managed_groups(org.ec2(org.management)) == []
    # And each member's instance is reported noncompliant with its fixes planned, under its own account
    report = outcome.report
    assert report.mode == "report"
    assert {e.instance_id: (e.account_id, e.verdict) for e in report.instances} == {
        instance: (member, "noncompliant") for member, (_, instance) in fleet.items()
    }
    for entry in report.instances:
        assert {c: entry.checks[c].status for c in FIXABLE} == {c: "would-fix" for c in FIXABLE}
        assert {a.status for a in entry.actions} == {"planned"}
    assert [t.status for t in report.targets] == ["ok"] * 3
    assert report.accounts == org.accounts


# ---- the refresh follows in every account -------------------------------------------------------------------------
def test_refresh_fan_out_adds_the_new_prefix_in_every_accounts_managed_group(aws, monkeypatch, api_calls):
    # Given three accounts, each owning a managed group in us-east-1 and in ap-southeast-6 with the 2026-05-29 rules
    # (ap-southeast-6 had no EIC prefix then), and the state table holding the 2026-05-29 file as applied
    regions = (REGION, AP_SOUTHEAST_6)
    org = create_organization(regions)
    old, new = (ip_ranges.load(str(IP_RANGES / f"ip-ranges-{day}.json")) for day in ("2026-05-29", "2026-06-01"))
    assert old.for_region(AP_SOUTHEAST_6).all == ()
    assert {str(p) for p in new.for_region(AP_SOUTHEAST_6).all} == set(AP_SOUTHEAST_6_EIC)
    assert old.for_region(REGION).all == new.for_region(REGION).all
    groups = {}
    for account_id in org.accounts:
        for region in regions:
            prefixes = tuple(str(p) for p in old.for_region(region).all)
            groups[account_id, region] = managed_group_with_rules(org.ec2(account_id, region), region, prefixes)
    store = DynamoDbStateStore(create_state_table(STATE_TABLE), STATE_TABLE)
    settings = Settings.build(regions=regions, accounts="organization", state_table=STATE_TABLE)
    state = RangesState()
    advance_state(state, old, settings, T0)
    store.save(state, None)
    # and the SNS refresh having verified 2026-06-01, advanced the central state once and started the refresh job
    machine = boto3.client("stepfunctions", REGION).create_state_machine(
        name="eic-guard",
        definition=json.dumps({"StartAt": "Plan", "States": {"Plan": {"Type": "Pass", "End": True}}}),
        roleArn=f"arn:aws:iam::{org.management}:role/eic-guard-state-machine",
    )["stateMachineArn"]
    started = advance_and_fan_out(
        AwsClients(), settings.model_copy(update={"state_machine_arn": machine}), store, new, now=T0 + timedelta(days=3)
    )
    assert (started["status"], store.load().sync_token) == ("started", new.sync_token)
    api_calls.clear()

    # When the refresh job runs over the organization
    outcome = run_job("refresh", settings, AwsClients(), store=store, now=lambda: T0 + timedelta(days=3, minutes=1))

    # Then every account's ap-southeast-6 group holds the new prefixes, and the us-east-1 groups are unchanged
    for account_id in org.accounts:
        new_rules = group_rules(org.ec2(account_id, AP_SOUTHEAST_6), groups[account_id, AP_SOUTHEAST_6])
        assert new_rules == eic_rules(AP_SOUTHEAST_6, *AP_SOUTHEAST_6_EIC), account_id
        assert group_rules(org.ec2(account_id), groups[account_id, REGION]) == eic_rules(
            REGION, EIC_US_EAST_1, EIC_US_EAST_1_V6
        )
    # with one write per account (its ap-southeast-6 group), and each member entered once
    assert sorted(api_calls.writes()) == sorted(["AuthorizeSecurityGroupIngress"] * 3 + member_role_entries(2))
    # And the refresh summary counts every account's added prefixes; every target is ok
    assert outcome.refresh is not None
    assert {k: outcome.refresh[k] for k in ("status", "sync_token", "prefixes_added", "groups", "accounts")} == {
        "status": "applied",
        "sync_token": new.sync_token,
        "prefixes_added": 6,
        "groups": 6,
        "accounts": org.accounts,
    }
    assert (outcome.refresh["errors"], outcome.refresh["alerts"]) == ([], [])
    assert outcome.report.accounts == org.accounts
    assert [(t.account_id, t.region, t.status) for t in outcome.report.targets] == [
        (a, r, "ok") for a in org.accounts for r in regions
    ]
    assert sorted((a.account_id, a.region, a.action, a.resource) for a in outcome.report.target_actions) == sorted(
        (a, AP_SOUTHEAST_6, "authorize-ingress", groups[a, AP_SOUTHEAST_6]) for a in org.accounts
    )

    # And a second refresh writes nothing anywhere
    api_calls.clear()
    again = run_job("refresh", settings, AwsClients(), store=store, now=lambda: T0 + timedelta(days=3, minutes=2))
    assert api_calls.writes() == member_role_entries(2)
    assert (again.refresh["status"], again.refresh["prefixes_added"]) == ("applied", 0)


# ---- the deployed path: Plan -> Distributed Map of target workers -> Aggregate -------------------------------------
@pytest.fixture
def ip_ranges_url(aws):
    """The pinned AWS URL serving the real 2026-08-22 snapshot (started after moto, so it answers, not moto)."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.GET, IP_RANGES_URL, body=(IP_RANGES / "ip-ranges-2026-08-22.json").read_bytes())
        yield mock


def result_keys(bucket: str, run_id: str) -> list[str]:
    listed = boto3.client("s3", REGION).list_objects_v2(Bucket=bucket, Prefix=f"runs/{run_id}/results/")
    return sorted(o["Key"] for o in listed.get("Contents", ()))


def read_json(bucket: str, key: str) -> dict:
    return json.loads(boto3.client("s3", REGION).get_object(Bucket=bucket, Key=key)["Body"].read())


def test_state_machine_scans_the_listed_members_and_keeps_each_targets_result(
    state_machine, org, fleet, monkeypatch, runs_bucket, ip_ranges_url
):
    # Given the stack configured with the two member accounts (the management account is not listed)
    first, second = org.members
    monkeypatch.setenv("EIC_GUARD_ACCOUNTS", f"{second},{first}")
    monkeypatch.setenv("EIC_GUARD_REGIONS", REGION)

    # When the nightly execution of the deployed state machine runs (Plan, one map item per target, Aggregate)
    machine = state_machine()
    run = machine.run({"job": "scan"}, plan_request_id="org-execution-1")
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    summary = run.output

    # Then Aggregate's summary counts both members' instances as fixed, every target ok
    assert summary["run_id"] == "org-execution-1"
    assert summary["accounts"] == sorted(org.members)
    assert summary["summary"] == {
        "instances": 2,
        "compliant": 0,
        "fixed": 2,
        "noncompliant": 0,
        "excluded": 0,
        "errors": 0,
        "warnings": 0,
        "connect_paths": {"public": 2},
    }
    assert summary["targets"] == {"ok": 2, "error": 0, "incomplete": 0}
    assert machine.failures("ScanTargetFunction") == []
    # And the targets were planned in the listed order, and both ran in one batch (one worker invocation, round 1)
    planned = read_json(runs_bucket, "runs/org-execution-1/targets.json")
    assert [t["account_id"] for t in planned] == [second, first]
    [batch] = [i.event for i in machine.invocations if i.function == "ScanTargetFunction"]
    assert batch["Items"] == planned and batch["BatchInput"]["round"] == 1
    assert machine.worker_rounds() == [(1, "ok")]
    # And each target's result object is in S3 where Aggregate read it, naming its account and instance
    assert result_keys(runs_bucket, "org-execution-1") == sorted(
        f"runs/org-execution-1/results/{member}/{REGION}/apply-r1.json" for member in org.members
    )
    for member, (net, instance) in fleet.items():
        document = read_json(runs_bucket, f"runs/org-execution-1/results/{member}/{REGION}/apply-r1.json")
        assert (document["account_id"], document["region"], document["status"]) == (member, REGION, "ok")
        assert [(e["instance_id"], e["account_id"], e["verdict"]) for e in document["instances"]] == [
            (instance, member, "fixed")
        ]
        # And the change is in the member account itself
        assert_fixed_in_its_account(org, member, net, instance)
    assert managed_groups(org.ec2(org.management)) == []


def test_state_machine_worker_out_of_time_keeps_its_result_and_the_next_round_finishes(
    state_machine, org, fleet, monkeypatch, runs_bucket, ip_ranges_url
):
    # Given one member listed, and its worker's first invocation running into its time reserve right after gathering
    # (each invocation has its own context, starting with the function's whole timeout, as Lambda gives it)
    member = org.members[0]
    net, instance = fleet[member]
    monkeypatch.setenv("EIC_GUARD_ACCOUNTS", member)
    monkeypatch.setenv("EIC_GUARD_REGIONS", REGION)
    invocations: list[FakeLambdaContext] = []

    def worker_context(function: str, request: dict) -> FakeLambdaContext | None:
        if function != "ScanTargetFunction":
            return None  # the template's own context
        invocations.append(FakeLambdaContext(aws_request_id=f"worker-round-{shared(request)['round']}"))
        return invocations[-1]

    machine = state_machine(context_for=worker_context)
    faults = FaultInjector().install(monkeypatch)
    # 45 s left: inside the worker's 60 s reserve for work, outside the 30 s it keeps for its result
    faults.after_gather(lambda region, snapshot: setattr(invocations[-1], "remaining_ms", 45_000), times=1)

    # When the execution runs
    run = machine.run({"job": "scan"}, plan_request_id="org-execution-2")
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    summary = run.output

    # Then round 1 returned `incomplete` with its result stored, and the map item's round 2 made the fixes
    assert machine.failures("ScanTargetFunction") == []
    assert machine.worker_rounds() == [(1, "incomplete"), (2, "ok")]
    assert result_keys(runs_bucket, "org-execution-2") == [
        f"runs/org-execution-2/results/{member}/{REGION}/apply-r1.json",
        f"runs/org-execution-2/results/{member}/{REGION}/apply-r2.json",
    ]
    assert_fixed_in_its_account(org, member, net, instance)
    # And the report has the instance fixed and the target ok
    assert summary["summary"]["fixed"] == 1
    assert summary["summary"]["errors"] == 0
    assert summary["targets"] == {"ok": 1, "error": 0, "incomplete": 0}


def test_a_warm_worker_enters_each_member_account_once_per_run(
    state_machine, org, fleet, monkeypatch, runs_bucket, ip_ranges_url
):
    # Given the two members scanned in two regions each: four map items, run one after another by one warm
    # container (tests/step_functions.py loads each handler once per test, as a warm Lambda container keeps it)
    first, second = org.members
    monkeypatch.setenv("EIC_GUARD_ACCOUNTS", f"{first},{second}")
    monkeypatch.setenv("EIC_GUARD_REGIONS", f"{REGION},eu-west-1")
    assume_role_calls: list[str] = []
    original = boto3.Session.__init__

    def record_assume_role(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.events.register(
            "provide-client-params.sts.AssumeRole", lambda params, **_: assume_role_calls.append(params["RoleArn"])
        )

    monkeypatch.setattr(boto3.Session, "__init__", record_assume_role)

    # When the nightly execution runs
    run = state_machine().run({"job": "scan"}, plan_request_id="org-warm-run")
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    summary = run.output

    # Then every target was scanned, and each member's role was assumed once, not once per target
    assert summary["targets"] == {"ok": 4, "error": 0, "incomplete": 0}
    assert sorted(assume_role_calls) == sorted(f"arn:aws:iam::{m}:role/eic-guard-member" for m in org.members)
    # and the warm container holds no member's clients once its targets are done (only their credentials)
    [kept] = steps._RUN_ACCOUNTS
    assert kept.entered == frozenset()


# ---- account aliases (docs/architecture.md §5b: every output names the account)
# ----------------------------------------------------
def test_report_names_each_account_by_its_alias_where_it_has_one(org, fleet, api_calls, ranges_2026):
    # Given the first member account with an IAM alias, the other member and the management account without one
    named, unnamed = sorted(org.members)
    org.client(named, "iam").create_account_alias(AccountAlias="payments-prod")
    api_calls.clear()

    # When a report-mode scan of the organization runs
    outcome = run_job("scan", organization_settings(mode="report"), AwsClients(), ranges=ranges_2026, run_id="org-a")

    # Then the report maps exactly the named account to its alias, and labels accounts with it
    report = outcome.report
    assert report.account_aliases == {named: "payments-prod"}
    assert report.account_label(named) == f"payments-prod ({named})"
    assert report.account_label(unnamed) == unnamed
    # And each scanned account's alias was asked once in the run, whatever its number of regions
    assert [name for name, _ in api_calls.calls].count("ListAccountAliases") == len(org.accounts)


def test_a_local_run_releases_each_accounts_clients_once_its_targets_are_done(org, fleet, monkeypatch, ranges_2026):
    # Given the organization over two regions (each member has two targets), and a record of each target's end and
    # each account's release
    from eic_guard.aws import credentials
    from eic_guard.fanout.local import RunWatch

    events: list[tuple[str, str]] = []
    made: list[credentials.AccountClients] = []
    real_init, real_release = credentials.AccountClients.__init__, credentials.AccountClients.release

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        made.append(self)

    def release(self, account_id, **options):
        events.append(("released", account_id))
        real_release(self, account_id, **options)

    monkeypatch.setattr(credentials.AccountClients, "__init__", init)
    monkeypatch.setattr(credentials.AccountClients, "release", release)
    settings = Settings.build(regions=(REGION, "us-west-2"), accounts="organization", mode="report")
    watch = RunWatch(on_target=lambda target: events.append(("done", target.account_id)))

    # When the run is made by the local fan-out (what `eic-guard scan --organization` runs)
    outcome = run_job("scan", settings, AwsClients(), ranges=ranges_2026, watch=watch, max_workers=4)

    # Then each member account was released once, after the end of its last target (its clients no longer held)
    assert {t.status for t in outcome.report.targets} == {"ok"}
    for member in org.members:
        assert [e for e in events if e == ("released", member)] == [("released", member)]
        released = events.index(("released", member))
        assert [e for e in events[released:] if e == ("done", member)] in ([], [("done", member)])
        assert sum(1 for e in events[:released] if e == ("done", member)) >= 1
    [accounts] = made
    assert not accounts.entered
