"""Loop prevention (docs/architecture.md §10): which callers are eic-guard itself, from the ARNs CloudTrail records
(pure)."""

from __future__ import annotations

import pytest
from eic_guard.changes.actors import OWN_ROLE_ARNS_ENV, OwnRoles
from eic_guard.changes.events import Actor
from eic_guard.errors import ConfigurationError

ACCOUNT = "123456789012"
ON_CHANGE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/eic-guard-OnChangeFunctionRole-1A2B3C4D5E6F"
WORKER_ROLE = f"arn:aws:iam::{ACCOUNT}:role/service-role/eic-guard-ScanTargetFunctionRole-6F5E4D3C2B1A"
OWN = OwnRoles([ON_CHANGE_ROLE, WORKER_ROLE], "eic-guard-member")


@pytest.mark.parametrize(
    "actor",
    [
        Actor(f"arn:aws:sts::{ACCOUNT}:assumed-role/x/y", ON_CHANGE_ROLE),
        Actor(f"arn:aws:sts::{ACCOUNT}:assumed-role/eic-guard-OnChangeFunctionRole-1A2B3C4D5E6F/eic-guard-on-change"),
        Actor(f"arn:aws:sts::{ACCOUNT}:assumed-role/eic-guard-ScanTargetFunctionRole-6F5E4D3C2B1A/fn", WORKER_ROLE),
        Actor(f"arn:aws:sts::{ACCOUNT}:assumed-role/eic-guard-ScanTargetFunctionRole-6F5E4D3C2B1A/fn"),
        Actor("arn:aws:sts::111111111111:assumed-role/eic-guard-member/eic-guard-6f1d2c3b-0a9e-4e8f"),
        Actor("arn:aws-us-gov:sts::111111111111:assumed-role/eic-guard-member/eic-guard-run"),
    ],
    ids=[
        "role-by-issuer",
        "session-of-own-role",
        "role-with-path-by-issuer",
        "session-of-role-with-path",
        "member-session",
        "member-session-other-partition",
    ],
)
def test_eic_guards_own_callers_are_recognized(actor):
    # Given a caller that is one of eic-guard's roles or an eic-guard session of the member role
    # When it is asked about
    # Then it is eic-guard
    assert OWN.made(actor)


@pytest.mark.parametrize(
    "actor",
    [
        Actor(f"arn:aws:sts::{ACCOUNT}:assumed-role/Admin/alice", f"arn:aws:iam::{ACCOUNT}:role/Admin"),
        Actor("arn:aws:sts::111111111111:assumed-role/eic-guard-member/alice"),
        Actor("arn:aws:sts::111111111111:assumed-role/other-role/eic-guard-run"),
        Actor(f"arn:aws:sts::{ACCOUNT}:assumed-role/eic-guard-OnChangeFunctionRole-1A2B3C4D5E6F-copy/s"),
        Actor(f"arn:aws:iam::{ACCOUNT}:user/eic-guard"),
        Actor(None, None),
    ],
    ids=["a-person", "member-role-other-session", "other-role-eic-guard-session", "prefix-of-own-role", "user", "none"],
)
def test_everyone_else_is_not(actor):
    # Given a caller that is not eic-guard (a person, another session of the member role, a look-alike)
    # When it is asked about
    # Then its changes are checked
    assert not OWN.made(actor)


def test_the_own_roles_come_from_the_environment_and_a_bad_arn_is_refused():
    # Given the setting with two roles (spaces and empty entries tolerated), and one with a session ARN in it
    good = {OWN_ROLE_ARNS_ENV: f" {ON_CHANGE_ROLE} ,,{WORKER_ROLE}"}
    bad = {OWN_ROLE_ARNS_ENV: f"{ON_CHANGE_ROLE},arn:aws:sts::{ACCOUNT}:assumed-role/x/y"}

    # When they are read
    roles = OwnRoles.from_env("eic-guard-member", good)

    # Then the roles are known, and the bad setting fails clearly before anything is touched
    assert roles.role_arns == {ON_CHANGE_ROLE, WORKER_ROLE}
    with pytest.raises(ConfigurationError, match="EIC_GUARD_OWN_ROLE_ARNS: not an IAM role ARN: arn:aws:sts::"):
        OwnRoles.from_env("eic-guard-member", bad)
    assert OwnRoles.from_env("eic-guard-member", {}).role_arns == frozenset()
