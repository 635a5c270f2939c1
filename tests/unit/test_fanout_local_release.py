"""The local fan-out's memory (`eic-guard scan --organization`, docs/architecture.md §9): a member account's clients
are let go of once its targets of a phase are done, so a run holds the clients of the accounts in progress, never the
organization's; one target after the other, they are collected before the next account is entered (never kept alive
by the collector's freeze); a revoke phase enters each account again with the apply phase's credentials (one
AssumeRole per account per run). moto answers; the run's targets have no instance, only their calls."""

from __future__ import annotations

import weakref
from collections import Counter

import pytest
from eic_guard.aws.clients import AwsClients
from eic_guard.aws.credentials import AccountClients
from eic_guard.fanout import local
from eic_guard.settings import Settings

from tests.conftest import REGION
from tests.integration.org_fixtures import fast_member_accounts

MEMBERS = ("111111111111", "222222222222", "333333333333", "444444444444", "555555555555")
REGIONS = (REGION, "us-west-2")


@pytest.fixture(autouse=True)
def fast_accounts(monkeypatch):
    fast_member_accounts(monkeypatch)


class Followed:
    """Every member account's clients handed to a target (weakly: the record keeps nothing alive), and at each
    target's start what the run held then."""

    def __init__(self):
        self.handed: dict[str, list[weakref.ref]] = {}
        self.starts: list[tuple[str, str, frozenset[str], dict[str, int]]] = []  # phase, account, held, alive

    def alive(self) -> dict[str, int]:
        """Per member account, how many of the objects handed to its targets (clients, their botocore sessions)
        still exist."""
        return {account: sum(ref() is not None for ref in refs) for account, refs in self.handed.items()}

    def hand(self, account_id: str, clients: AwsClients) -> None:
        refs = self.handed.setdefault(account_id, [])
        if not any(ref() is clients for ref in refs):
            refs += [weakref.ref(clients), weakref.ref(clients.session._session), weakref.ref(clients.ec2(REGION))]


@pytest.fixture
def followed(aws, monkeypatch) -> Followed:
    record = Followed()
    real_for_account, real_run_target = AccountClients.for_account, local.run_target

    def for_account(self, account_id):
        clients = real_for_account(self, account_id)
        if clients is not self.own:
            record.hand(account_id, clients)
        return clients

    def run_target(plan, target, phase, clients_for, settings, **options):
        record.starts.append((phase, target.account_id, clients_for.__self__.entered, record.alive()))
        return real_run_target(plan, target, phase, clients_for, settings, **options)

    monkeypatch.setattr(AccountClients, "for_account", for_account)
    monkeypatch.setattr(local, "run_target", run_target)
    return record


@pytest.fixture
def with_revoke_phase(monkeypatch):
    """The run revokes an expired prefix after every target's apply phase (as a refresh past its grace does)."""
    real_plan_run = local.plan_run

    def plan_run(*args, **kwargs):
        plan = real_plan_run(*args, **kwargs)
        plan.apply_ranges = True
        plan.expired = {region: ["3.0.5.32/29"] for region in REGIONS}
        return plan

    monkeypatch.setattr(local, "plan_run", plan_run)


def run(max_workers: int, ranges) -> local.RunOutcome:
    settings = Settings.build(regions=REGIONS, accounts=",".join(MEMBERS), mode="report")
    return local.run_job("scan", settings, AwsClients(), ranges=ranges, max_workers=max_workers, run_id="run-20")


@pytest.mark.parametrize("phases", [("apply",), ("apply", "revoke")])
def test_one_target_after_the_other_each_accounts_clients_are_gone_before_the_next_account(
    followed, api_calls, ranges_2026, request, phases
):
    # Given five member accounts of two regions each, and a run of one phase or two (a revoke phase)
    if "revoke" in phases:
        request.getfixturevalue("with_revoke_phase")

    # When the run works on one target at a time
    outcome = run(1, ranges_2026)

    # Then every target of every phase ran
    assert [(phase, account) for phase, account, _, _ in followed.starts] == [
        (phase, account) for phase in phases for account in MEMBERS for _ in REGIONS
    ]
    assert {t.status for t in outcome.report.targets} == {"ok"}
    # And when a target started, the clients, sessions and EC2 clients of every other account no longer existed:
    # released and collected, not frozen until the run ends (nothing here calls the collector)
    for phase, account, _, alive in followed.starts:
        assert {a: n for a, n in alive.items() if a != account and n} == {}, f"at {phase} {account}"
    # And the revoke phase entered each account again without assuming its role again
    assert Counter(params["RoleArn"].split(":")[4] for name, params in api_calls.calls if name == "AssumeRole") == {
        account: 1 for account in MEMBERS
    }


def test_in_the_thread_pool_the_run_holds_only_the_accounts_in_progress(
    followed, with_revoke_phase, api_calls, ranges_2026
):
    # Given five member accounts of two regions each, and a run with a revoke phase
    # When two workers share the targets
    outcome = run(2, ranges_2026)

    # Then at no target's start did the run hold the clients of more accounts than targets in progress
    assert {t.status for t in outcome.report.targets} == {"ok"}
    assert len(followed.starts) == 2 * len(MEMBERS) * len(REGIONS)
    assert max(len(held) for _, _, held, _ in followed.starts) <= 2
    # And once the apply phase ended, none of its clients existed any more: the revoke phase's first target found
    # every account released and collected
    first_revoke = next(start for start in followed.starts if start[0] == "revoke")
    assert first_revoke[2] == frozenset()
    assert first_revoke[3] == {account: 0 for account in MEMBERS}
    # And each account's role was assumed once in the run
    assert Counter(params["RoleArn"].split(":")[4] for name, params in api_calls.calls if name == "AssumeRole") == {
        account: 1 for account in MEMBERS
    }
    # And at the end the run holds no member account's clients
    assert followed.alive() == {account: 0 for account in MEMBERS}
