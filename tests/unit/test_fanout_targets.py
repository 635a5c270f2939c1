"""Targets of a run (docs/architecture.md §9): EIC_GUARD_ACCOUNTS read as the own account, a comma list or the
organization's ACTIVE accounts; (account, region) pairs in order; the run plan's JSON round trip. No AWS: Organizations
is a stub."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from eic_guard.errors import ConfigurationError
from eic_guard.fanout.plan import RunPlan, plan_run
from eic_guard.fanout.targets import (
    AccountsPlan,
    Target,
    organization_accounts,
    parse_accounts,
    plan_accounts,
    plan_targets,
)
from eic_guard.ranges.ip_ranges import IpRanges
from eic_guard.settings import Settings

OWN = "123456789012"
A, B, C, D, E = "111111111111", "222222222222", "333333333333", "444444444444", "555555555555"


class StubOrganizations:
    """An Organizations client whose ListAccounts paginator yields the given pages (moto cannot suspend an account)."""

    def __init__(self, *pages: list[dict]):
        self.pages = pages
        self.paginated = 0

    def get_paginator(self, operation: str):
        assert operation == "list_accounts"
        stub = self

        class Paginator:
            def paginate(self, **_):
                stub.paginated += 1
                return iter([{"Accounts": page} for page in stub.pages])

        return Paginator()


def account(account_id: str, state: str | None = None, status: str | None = None) -> dict:
    entry = {
        "Id": account_id,
        "Name": f"acct-{account_id}",
        "Arn": f"arn:aws:organizations::{OWN}:account/{account_id}",
    }
    if state:
        entry["State"] = state
    if status:
        entry["Status"] = status
    return entry


class StubClients:
    """What plan_run needs of AwsClients: the caller's account and an Organizations client."""

    def __init__(self, organizations=None):
        self.organizations = organizations
        self.asked: list[tuple[str, str | None]] = []

    def account_id(self) -> str:
        return OWN

    def client(self, service: str, region: str | None = None):
        self.asked.append((service, region))
        assert service == "organizations", f"plan_run asked for {service}"
        return self.organizations


# ---- the setting ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("setting", ["", "   "])
def test_empty_setting_covers_the_callers_own_account(setting):
    # Given no EIC_GUARD_ACCOUNTS
    # When the accounts are planned
    plan = plan_accounts(setting, OWN)

    # Then the run covers the caller's own account only, and asks Organizations nothing
    assert plan == AccountsPlan((OWN,), ())


def test_comma_list_keeps_its_order_and_drops_duplicates_and_blanks():
    # Given a list with spaces, a repeated id and empty items
    setting = f" {C}, {A},{C} ,, {B},"

    # When it is parsed and planned
    parsed = parse_accounts(setting)
    plan = plan_accounts(setting, OWN)

    # Then the ids come in the order given, each once; nothing is skipped
    assert parsed == (C, A, B)
    assert plan == AccountsPlan((C, A, B), ())


def test_comma_list_may_name_the_callers_own_account():
    # Given the caller's account among the listed ones
    # When
    plan = plan_accounts(f"{A},{OWN}", OWN)

    # Then it is a target like the others (entered with the caller's own credentials later)
    assert plan.accounts == (A, OWN)


def test_organization_covers_every_active_account_and_skips_suspended_and_pending_closure():
    # Given an organization listed over two pages: ACTIVE accounts (the State field, and an older answer carrying
    # only the deprecated Status), a SUSPENDED one, one PENDING_CLOSURE, and one whose State says SUSPENDED while the
    # deprecated Status still says ACTIVE
    organizations = StubOrganizations(
        [account(OWN, "ACTIVE", "ACTIVE"), account(C, "SUSPENDED", "SUSPENDED"), account(B, "ACTIVE")],
        [account(D, "PENDING_CLOSURE"), account(A, status="ACTIVE"), account(E, "SUSPENDED", "ACTIVE")],
    )

    # When the accounts are planned for EIC_GUARD_ACCOUNTS=organization
    plan = plan_accounts("organization", OWN, organizations)

    # Then every ACTIVE account of every page is covered (sorted by id), the others are skipped (State wins over
    # Status)
    assert plan == AccountsPlan(accounts=(A, OWN, B), skipped=(C, D, E))
    assert organizations.paginated == 1
    assert organization_accounts(organizations) == plan


def test_organization_without_an_organizations_client_is_a_configuration_error():
    # Given EIC_GUARD_ACCOUNTS=organization and no Organizations client
    # When / Then
    with pytest.raises(ConfigurationError, match="organization"):
        plan_accounts("organization", OWN, None)


BAD_VALUES = {
    "eleven-digits": "12345678901",
    "thirteen-digits": "1234567890123",
    "letters": "abcdefghijkl",
    "capitalized-keyword": "Organization",
    "keyword-in-a-list": f"organization,{A}",
    "one-bad-id-in-a-list": f"{A},12345",
    "semicolons": f"{A};{B}",
    "only-commas": " , ,",
    "arn": f"arn:aws:iam::{A}:root",
}


@pytest.mark.parametrize("value", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_bad_values_are_refused_with_one_line_naming_the_variable(value):
    # Given a value that is neither empty, "organization" nor 12-digit ids
    # When it is parsed
    with pytest.raises(ConfigurationError) as parsed:
        parse_accounts(value)

    # Then one line names the variable and says what is expected
    message = str(parsed.value)
    assert "\n" not in message
    assert message.startswith("EIC_GUARD_ACCOUNTS: expected empty, 'organization' or 12-digit account ids")

    # And the settings refuse it the same way (one line, naming the variable), before any AWS call
    with pytest.raises(ConfigurationError) as built:
        Settings.from_env({"AWS_REGION": "us-east-1", "EIC_GUARD_ACCOUNTS": value})
    assert "\n" not in str(built.value)
    assert str(built.value).startswith("invalid settings: EIC_GUARD_ACCOUNTS: ")


def test_a_bad_id_is_named_in_the_message():
    # Given a list with two bad ids among good ones
    # When / Then: both are named, the good one is not
    with pytest.raises(ConfigurationError) as raised:
        parse_accounts(f"{A},12345,abc")
    assert str(raised.value).endswith(": 12345, abc")


def test_settings_read_accounts_and_member_role_name_from_the_environment():
    # Given the two variables as the template passes them
    env = {
        "AWS_REGION": "us-east-1",
        "EIC_GUARD_ACCOUNTS": f" {B},{A},{B} ",
        "EIC_GUARD_MEMBER_ROLE_NAME": "org-eic-guard",
    }

    # When
    settings = Settings.from_env(env)

    # Then the list is normalized (order kept, duplicates dropped) and the role name kept
    assert settings.accounts == f"{B},{A}"
    assert settings.member_role_name == "org-eic-guard"
    # And the defaults are the own account and the documented role name
    defaults = Settings.from_env({"AWS_REGION": "us-east-1"})
    assert (defaults.accounts, defaults.member_role_name) == ("", "eic-guard-member")
    assert Settings.from_env({"AWS_REGION": "us-east-1", "EIC_GUARD_ACCOUNTS": "organization"}).accounts == (
        "organization"
    )


# ---- targets ----------------------------------------------------------------------------------------------------
def test_targets_are_every_account_region_pair_accounts_in_order_regions_of_an_account_together():
    # Given two accounts (not in sorted order) and three regions
    # When
    targets = plan_targets((B, A), ("us-east-1", "eu-west-1", "ap-southeast-6"))

    # Then one target per pair, account by account, regions in the configured order
    assert [t.key for t in targets] == [
        f"{B}/us-east-1",
        f"{B}/eu-west-1",
        f"{B}/ap-southeast-6",
        f"{A}/us-east-1",
        f"{A}/eu-west-1",
        f"{A}/ap-southeast-6",
    ]
    assert Target.from_dict(json.loads(json.dumps(targets[0].to_dict()))) == Target(B, "us-east-1")


def test_plan_run_for_the_organization_targets_every_active_account_and_records_the_skipped(ranges_2026):
    # Given an organization with the caller's account, two ACTIVE members and a SUSPENDED one
    organizations = StubOrganizations(
        [account(B, "ACTIVE"), account(OWN, "ACTIVE"), account(C, "SUSPENDED"), account(A, "ACTIVE")]
    )
    clients = StubClients(organizations)
    settings = Settings.build(regions=("us-east-1", "eu-west-1"), accounts="organization")
    started = datetime(2026, 8, 22, 16, 0, tzinfo=UTC)

    # When a scan is planned with given prefixes
    plan = plan_run("scan", settings, clients, ranges=ranges_2026, run_id="run-1", now=started)

    # Then the targets are the ACTIVE accounts' regions (accounts by id), the suspended account is recorded as skipped
    assert [t.key for t in plan.targets] == [
        f"{A}/us-east-1",
        f"{A}/eu-west-1",
        f"{OWN}/us-east-1",
        f"{OWN}/eu-west-1",
        f"{B}/us-east-1",
        f"{B}/eu-west-1",
    ]
    assert plan.skipped_accounts == [C]
    assert (plan.run_id, plan.job, plan.own_account, plan.started_at) == ("run-1", "scan", OWN, started)
    # And given prefixes are scanned with, never applied
    assert (plan.ranges, plan.apply_ranges, plan.revoke, plan.writes_ranges) == (ranges_2026, False, False, False)
    assert clients.asked == [("organizations", "us-east-1")]


def test_plan_run_for_a_list_does_not_ask_organizations(ranges_2026):
    # Given a comma list
    clients = StubClients(organizations=None)
    settings = Settings.build(regions=("us-east-1",), accounts=f"{B},{A}")

    # When
    plan = plan_run("scan", settings, clients, ranges=ranges_2026, run_id="run-2")

    # Then the listed accounts in order, and no Organizations client was built
    assert [t.account_id for t in plan.targets] == [B, A]
    assert clients.asked == []


# ---- the run plan's round trip ----------------------------------------------------------------------------------
def test_run_plan_round_trips_through_json_with_its_ranges(ranges_2026):
    # Given a plan with every field set (the manifest the workers read)
    plan = RunPlan(
        run_id="6f1d2c3b-0a9e-4e8f-b7d6-5c4b3a291807",
        job="refresh",
        mode="report",
        started_at=datetime(2026, 8, 22, 16, 0, 5, tzinfo=UTC),
        own_account=OWN,
        ranges=ranges_2026,
        apply_ranges=True,
        targets=plan_targets((OWN, A), ("us-east-1", "ap-southeast-6")),
        expired={"us-east-1": ["198.51.100.24/29"]},
        in_grace={"us-east-1": ["2001:db8:1:100::/56"]},
        skipped_accounts=[C],
        catch_up={"reason": "download-failed", "error": "timed out", "alerts": ["nightly ip-ranges catch-up failed"]},
        alerts=["nightly ip-ranges catch-up failed"],
    )

    # When it is written as JSON and read back
    raw = json.loads(json.dumps(plan.to_dict()))
    back = RunPlan.from_dict(raw)

    # Then it is the same plan: the prefixes of every region (IPv4 and IPv6), the targets in order, the time zone
    assert back == plan
    assert back.ranges.for_region("ap-southeast-6").all == ranges_2026.for_region("ap-southeast-6").all
    assert len(back.ranges.eic) == len(ranges_2026.eic) > 30
    assert back.started_at.tzinfo is not None
    assert (back.revoke, back.writes_ranges) == (True, True)


def test_run_plan_without_any_ranges_round_trips():
    # Given a plan made when no ip-ranges file could be read at all
    plan = RunPlan(
        run_id="r",
        job="scan",
        mode="remediate",
        started_at=datetime(2026, 8, 22, tzinfo=UTC),
        own_account=OWN,
        ranges=IpRanges.none_available("download-failed: timed out"),
        apply_ranges=False,
        targets=[Target(OWN, "us-east-1")],
    )

    # When / Then: the reason there are none survives (the SSH-rule check reports it)
    back = RunPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert back == plan
    assert back.ranges.for_region("us-east-1").unavailable == "download-failed: timed out"
