"""Entering accounts (docs/architecture.md §9): the caller's own account with its own credentials, every other one
through its member role, once per account per run (a refusal included), from any number of worker threads; and a target
that cannot be entered or whose region is not enabled ends as that target's error, never as an exception. moto answers
STS (assumed-role credentials act in the role's account); the fault injector refuses chosen AssumeRole calls."""

from __future__ import annotations

import gc
import threading
import time
import traceback
import weakref
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import boto3
import pytest
from botocore.exceptions import ClientError
from eic_guard.aws.clients import AwsClients
from eic_guard.aws.credentials import AccountClients, AccountUnreachable, session_name
from eic_guard.fanout.plan import RunPlan
from eic_guard.fanout.targets import Target
from eic_guard.fanout.worker import run_target
from eic_guard.settings import Settings

from tests.conftest import REGION
from tests.faults.injector import FaultInjector
from tests.integration.org_fixtures import fast_member_accounts

OWN = "123456789012"  # moto's default account
MEMBER = "111111111111"
OTHER = "222222222222"
RUN_ID = "6f1d2c3b-0a9e-4e8f-b7d6-5c4b3a291807"


def role_arn(account_id: str, role: str = "eic-guard-member") -> str:
    return f"arn:aws:iam::{account_id}:role/{role}"


def assume_role_calls(faults: FaultInjector) -> list[dict]:
    return [c.params for c in faults.calls if c.operation == "AssumeRole"]


@pytest.fixture(autouse=True)
def fast_accounts(monkeypatch):
    fast_member_accounts(monkeypatch)


@pytest.fixture
def faults(aws, monkeypatch) -> FaultInjector:
    return FaultInjector().install(monkeypatch)


@pytest.fixture
def accounts(faults) -> AccountClients:
    """One run's AccountClients, built after the injector so that its STS calls are seen."""
    return AccountClients(AwsClients(), RUN_ID)


# ---- caching ----------------------------------------------------------------------------------------------------
def test_an_account_is_entered_once_per_run_and_its_clients_act_in_it(accounts, faults):
    # Given a run that has not entered the member account yet
    # When two targets of the account ask for its clients
    first = accounts.for_account(MEMBER)
    second = accounts.for_account(MEMBER)

    # Then one AssumeRole on the member role, with the run in its session name, for an hour
    assert assume_role_calls(faults) == [
        {"RoleArn": role_arn(MEMBER), "RoleSessionName": f"eic-guard-{RUN_ID}", "DurationSeconds": 3600}
    ]
    # And both get the same clients, which act in the member account (not the caller's)
    assert second is first
    assert first.account_id() == MEMBER
    identity = first.client("sts", REGION).get_caller_identity()
    assert identity["Account"] == MEMBER
    assert identity["Arn"] == f"arn:aws:sts::{MEMBER}:assumed-role/eic-guard-member/eic-guard-{RUN_ID}"
    vpc = first.ec2(REGION).create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]
    assert vpc["OwnerId"] == MEMBER
    with pytest.raises(ClientError, match=r"InvalidVpcID\.NotFound"):  # the caller's own account does not have it
        boto3.client("ec2", REGION).describe_vpcs(VpcIds=[vpc["VpcId"]])


def test_the_callers_own_account_uses_its_own_credentials(accounts, faults):
    # Given the run's own clients
    # When the caller's own account is asked for (twice)
    clients = accounts.for_account(OWN)
    again = accounts.for_account(OWN)

    # Then the run's own clients come back and no role is assumed
    assert clients is again is accounts.own
    assert assume_role_calls(faults) == []


def test_a_refused_account_is_unreachable_for_the_whole_run_after_one_assume_role(accounts, faults):
    # Given STS refusing the member role of one account
    faults.error("AssumeRole", "AccessDenied", service="sts", when=lambda p: p["RoleArn"] == role_arn(MEMBER))

    # When two targets of that account ask for its clients
    with pytest.raises(AccountUnreachable) as first:
        accounts.for_account(MEMBER)
    with pytest.raises(AccountUnreachable) as second:
        accounts.for_account(MEMBER)

    # Then both are refused, naming the account and the role, after a single AssumeRole
    for raised in (first.value, second.value):
        assert raised.account_id == MEMBER
        assert raised.reason == "access-denied"
        assert str(raised).startswith(f"cannot assume {role_arn(MEMBER)}: ")
        assert "AccessDenied" in str(raised)
    assert len(assume_role_calls(faults)) == 1
    # And another account of the same run is entered as usual
    assert accounts.for_account(OTHER).account_id() == OTHER
    assert [c["RoleArn"] for c in assume_role_calls(faults)] == [role_arn(MEMBER), role_arn(OTHER)]


def test_each_run_enters_again_under_its_own_session_name_and_role_name(aws, faults):
    # Given two runs, the second configured with another member role name and a run id AWS would not take as is
    first = AccountClients(AwsClients(), "run-1")
    second = AccountClients(AwsClients(), "arn:aws:states:us-east-1:1:execution:eic guard/2026", "org-eic-guard")

    # When each enters the member account
    first.for_account(MEMBER)
    second.for_account(MEMBER)

    # Then each run assumed the role once, its session name showing which run it is (only STS's characters)
    assert [(c["RoleArn"], c["RoleSessionName"]) for c in assume_role_calls(faults)] == [
        (role_arn(MEMBER), "eic-guard-run-1"),
        (role_arn(MEMBER, "org-eic-guard"), "eic-guard-arn-aws-states-us-east-1-1-execution-eic-guard-2026"),
    ]


# ---- releasing: memory for the accounts in progress, not the organization -------------------------------------
def test_a_released_account_lets_go_of_its_clients_and_session_and_a_later_use_enters_it_again(accounts, faults):
    # Given the member account entered, its EC2 client built (followed weakly)
    clients = accounts.for_account(MEMBER)
    refs = [weakref.ref(clients), weakref.ref(clients.session._session), weakref.ref(clients.ec2(REGION))]
    assert accounts.entered == {MEMBER}

    # When its targets are done and the run releases it
    del clients
    accounts.release(MEMBER)
    gc.collect()

    # Then the run holds nothing of it: clients, botocore session and EC2 client are gone
    assert accounts.entered == frozenset()
    assert [ref() for ref in refs] == [None, None, None]
    # And a later use enters it again (its credentials were forgotten too)
    assert accounts.for_account(MEMBER).account_id() == MEMBER
    assert [c["RoleArn"] for c in assume_role_calls(faults)] == [role_arn(MEMBER), role_arn(MEMBER)]


def test_an_account_released_until_a_later_phase_keeps_its_credentials_not_its_clients(accounts, faults):
    # Given the member account entered in the apply phase
    first = accounts.for_account(MEMBER)
    gone = weakref.ref(first.ec2(REGION))

    # When its apply targets are done and the run will come back to it (the revoke phase)
    accounts.release(MEMBER, again=True)
    del first
    gc.collect()

    # Then its clients are gone, and the revoke phase's clients act in the account under the same assumed role
    assert gone() is None
    assert accounts.entered == frozenset()
    again = accounts.for_account(MEMBER)
    assert again.client("sts", REGION).get_caller_identity()["Account"] == MEMBER
    # And the role was assumed once in the run
    assert len(assume_role_calls(faults)) == 1


def test_entering_accounts_leaves_the_shared_model_loader_as_it_was(accounts):
    # Given the run's own session and the loader of botocore's models every account shares
    loader = accounts.own.session._session.get_component("data_loader")
    search_paths = list(loader.search_paths)

    # When the run enters two member accounts and builds their EC2 clients
    members = [accounts.for_account(MEMBER), accounts.for_account(OTHER)]
    for clients in members:
        clients.ec2(REGION)

    # Then they share the loader, and its search paths did not grow by one per account (boto3.Session appends its
    # own data path to the loader it finds)
    assert all(clients.session._session.get_component("data_loader") is loader for clients in members)
    assert loader.search_paths == search_paths


def test_each_target_of_a_refused_account_gets_its_own_error(accounts, faults):
    # Given STS refusing the member role
    faults.error("AssumeRole", "AccessDenied", service="sts", when=lambda p: p["RoleArn"] == role_arn(MEMBER))

    # When three targets of the account ask for its clients
    raised = []
    for _ in range(3):
        with pytest.raises(AccountUnreachable) as refused:
            accounts.for_account(MEMBER)
        raised.append(refused.value)

    # Then each gets the same refusal, as an error of its own: one error raised again would carry the frames of every
    # target before it (and what they held) in its traceback
    assert len({id(error) for error in raised}) == 3
    assert {(e.account_id, e.reason, str(e)) for e in raised} == {(MEMBER, "access-denied", str(raised[0]))}
    assert len({len(traceback.extract_tb(e.__traceback__)) for e in raised}) == 1
    assert len(assume_role_calls(faults)) == 1


def test_session_name_is_cut_to_what_sts_accepts():
    # Given a run id longer than a session name may be
    # When / Then: 64 characters at most, from STS's character set
    name = session_name("x" * 100 + "/:")
    assert len(name) == 64
    assert name.startswith("eic-guard-xxx")


def test_eight_threads_entering_one_account_assume_its_role_once(accounts, faults):
    # Given a slow STS (so that the eight threads really meet), and eight worker threads starting together
    faults.before("AssumeRole", lambda _: time.sleep(0.2), service="sts", times=None)
    start = threading.Barrier(8)

    def enter(_):
        start.wait(timeout=5)
        return accounts.for_account(MEMBER)

    # When each asks for the member account's clients at once
    with ThreadPoolExecutor(max_workers=8) as pool:
        entered = list(pool.map(enter, range(8)))

    # Then the role was assumed once and every thread got the same clients
    assert len(assume_role_calls(faults)) == 1
    assert all(clients is entered[0] for clients in entered)
    assert entered[0].account_id() == MEMBER


def test_threads_entering_different_accounts_do_not_wait_for_each_other(accounts, faults):
    # Given STS taking 0.2 s per AssumeRole, and four threads entering four different accounts at once
    in_flight, most = [0], [0]
    lock = threading.Lock()

    def slow(_):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.2)
        with lock:
            in_flight[0] -= 1

    faults.before("AssumeRole", slow, service="sts", times=None)
    members = [f"{n}" * 12 for n in (1, 2, 3, 4)]
    start = threading.Barrier(len(members))

    def enter(account_id):
        start.wait(timeout=5)
        return accounts.for_account(account_id).account_id()

    # When they enter together
    with ThreadPoolExecutor(max_workers=len(members)) as pool:
        entered = list(pool.map(enter, members))

    # Then each is in its own account, and the AssumeRole calls overlapped: the per-run cache does not serialize
    # entering distinct accounts (200 accounts x 100 ms would otherwise add 20 s to an organization run)
    assert entered == members
    assert most[0] > 1, "AssumeRole calls for distinct accounts ran one at a time"


# ---- target errors: a result document, never an exception -------------------------------------------------------
def plan_for(target: Target, ranges) -> RunPlan:
    return RunPlan(
        run_id=RUN_ID,
        job="scan",
        mode="remediate",
        started_at=datetime(2026, 8, 22, 16, 0, tzinfo=UTC),
        own_account=OWN,
        ranges=ranges,
        apply_ranges=False,
        targets=[target],
    )


def test_a_target_whose_account_cannot_be_entered_is_an_error_document(accounts, faults, ranges_2026):
    # Given the member's role refused
    faults.error("AssumeRole", "AccessDenied", service="sts", when=lambda p: p["RoleArn"] == role_arn(MEMBER))
    target = Target(MEMBER, REGION)
    settings = Settings.build(regions=(REGION,))

    # When the target's worker runs
    document = run_target(plan_for(target, ranges_2026), target, "apply", accounts.for_account, settings)

    # Then the document says why, naming the account and the role; nothing was gathered or written anywhere
    assert (document["account_id"], document["region"], document["phase"], document["round"]) == (
        MEMBER,
        REGION,
        "apply",
        1,
    )
    assert document["status"] == "error"
    assert document["error"].startswith(f"cannot enter account {MEMBER}: cannot assume {role_arn(MEMBER)}: ")
    assert "AccessDenied" in document["error"]
    assert (document["instances"], document["actions"], document["refresh"]) == ([], [], None)
    assert [c.operation for c in faults.calls] == ["GetCallerIdentity", "AssumeRole"]


@pytest.mark.parametrize("code", ["OptInRequired", "AuthFailure", "UnrecognizedClientException"])
def test_a_region_the_target_cannot_use_is_an_error_document_naming_it(accounts, faults, ranges_2026, code):
    # Given EC2 in an opt-in region the member account has not enabled
    faults.error("DescribeInstances", code, status=401 if code == "AuthFailure" else 400)
    target = Target(MEMBER, "ap-southeast-6")
    settings = Settings.build(regions=("ap-southeast-6",))

    # When the target's worker runs
    document = run_target(plan_for(target, ranges_2026), target, "apply", accounts.for_account, settings)

    # Then the target is an error: OptInRequired says the region is not enabled in that account; AuthFailure and
    # UnrecognizedClientException can also mean bad credentials in an enabled region, so they are shown as they are
    assert document["status"] == "error"
    if code == "OptInRequired":
        assert document["error"] == f"region ap-southeast-6 is not enabled in account {MEMBER} ({code})"
    else:
        assert document["error"].startswith(f"{code}: An error occurred ({code}) when calling the DescribeInstances")
    assert document["instances"] == []
    assert faults.writes("ec2") == []
