"""The IAM evaluator the call recorder relies on: IAM's documented matching and condition semantics."""

from __future__ import annotations

import pytest

from tests.template.iam_eval import Request, conditions_match, evaluate

TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/eic-guard-state"
ALLOW_STATE = {"Sid": "State", "Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:PutItem"], "Resource": TABLE}


@pytest.mark.parametrize(
    ("request_", "allowed"),
    [
        (Request("dynamodb:GetItem", TABLE), True),
        (Request("DynamoDB:getitem", TABLE), True),  # action names are case-insensitive
        (Request("dynamodb:UpdateItem", TABLE), False),
        (Request("dynamodb:GetItem", TABLE.replace("us-east-1", "eu-west-1")), False),  # the table in another region
        (Request("dynamodb:GetItem", "*"), False),
    ],
    ids=["granted", "case", "other-action", "other-region", "any-resource"],
)
def test_action_and_resource_must_both_match(request_, allowed):
    # Given a statement allowing two actions on one table

    # When a request is evaluated
    decision = evaluate([ALLOW_STATE], request_)

    # Then it is allowed only for those actions on that table
    assert decision.allowed is allowed


def test_resource_wildcards_stay_within_their_arn_field():
    # Given an Allow on security groups of any region of one account
    statement = {
        "Effect": "Allow",
        "Action": "ec2:AuthorizeSecurityGroupIngress",
        "Resource": "arn:aws:ec2:*:123456789012:security-group/*",
    }
    group = "arn:aws:ec2:eu-west-1:123456789012:security-group/sg-1"

    # When a group of that account and one of another account are evaluated
    own, foreign = (Request(statement["Action"], group), Request(statement["Action"], group.replace("1234", "9999")))

    # Then only the account's own group matches (the region wildcard does not swallow the account field)
    assert evaluate([statement], own).allowed
    assert not evaluate([statement], foreign).allowed


def test_an_explicit_deny_wins_over_any_allow():
    # Given an Allow and a Deny outside the configured regions
    deny = {
        "Sid": "DenyElsewhere",
        "Effect": "Deny",
        "Action": "dynamodb:*",
        "Resource": "*",
        "Condition": {"StringNotEquals": {"aws:RequestedRegion": ["us-east-1"]}},
    }
    inside = Request("dynamodb:GetItem", TABLE, {"aws:RequestedRegion": "us-east-1"})
    outside = Request("dynamodb:GetItem", TABLE, {"aws:RequestedRegion": "eu-west-1"})

    # When requests in and outside the region are evaluated
    decisions = [evaluate([ALLOW_STATE, deny], r) for r in (inside, outside)]

    # Then the one outside is explicitly denied although the Allow matches
    assert [d.allowed for d in decisions] == [True, False]
    assert decisions[1].reason == "explicitly denied by DenyElsewhere"


STATUS_KEYS = ["eic-guard:status", "eic-guard:checked-at"]


@pytest.mark.parametrize(
    ("condition", "context", "matches"),
    [
        ({"StringEquals": {"aws:ResourceTag/k": "v"}}, {"aws:ResourceTag/k": "v"}, True),
        ({"StringEquals": {"aws:ResourceTag/k": "v"}}, {}, False),  # absent key: a positive test fails
        ({"StringNotEquals": {"aws:ResourceTag/k": "v"}}, {}, True),  # ... a negated one holds
        ({"StringEqualsIfExists": {"aws:ResourceTag/k": "v"}}, {}, True),
        ({"StringLike": {"aws:ResourceTag/k": "eic-*"}}, {"aws:ResourceTag/k": "eic-guard"}, True),
        ({"StringEquals": {"a": ["x", "y"]}}, {"a": "y"}, True),  # values of one key: OR
        ({"StringEquals": {"a": "x", "b": "y"}}, {"a": "x", "b": "z"}, False),  # keys: AND
        ({"ForAllValues:StringEquals": {"aws:TagKeys": STATUS_KEYS}}, {"aws:TagKeys": ("eic-guard:status",)}, True),
        (
            {"ForAllValues:StringEquals": {"aws:TagKeys": STATUS_KEYS}},
            {"aws:TagKeys": ("eic-guard:status", "x")},
            False,
        ),
        ({"ForAllValues:StringEquals": {"aws:TagKeys": STATUS_KEYS}}, {}, True),  # vacuously true without tags
        ({"Null": {"aws:TagKeys": "false"}}, {}, False),  # ... which is why the role adds Null
        ({"ForAnyValue:StringNotEquals": {"aws:TagKeys": STATUS_KEYS}}, {"aws:TagKeys": ("Owner",)}, True),
        ({"ForAnyValue:StringNotEquals": {"aws:TagKeys": STATUS_KEYS}}, {"aws:TagKeys": tuple(STATUS_KEYS)}, False),
        (
            {"ArnLike": {"aws:SourceArn": "arn:aws:cloudwatch:*:1:alarm:*"}},
            {"aws:SourceArn": "arn:aws:cloudwatch:us-east-1:1:alarm:a"},
            True,
        ),
        ({"Bool": {"aws:SecureTransport": "false"}}, {"aws:SecureTransport": "true"}, False),
    ],
)
def test_condition_operators(condition, context, matches):
    # Given a condition block and a request context

    # When the block is evaluated
    result = conditions_match(condition, context)

    # Then it follows IAM's semantics for that operator
    assert result is matches


def test_an_operator_it_does_not_model_is_an_error_not_a_silent_pass():
    # Given a numeric condition (not modelled)
    condition = {"NumericLessThan": {"ec2:MetadataHttpPutResponseHopLimit": "2"}}

    # When it is evaluated, then the evaluator refuses to guess
    with pytest.raises(ValueError, match="not modelled"):
        conditions_match(condition, {"ec2:MetadataHttpPutResponseHopLimit": "1"})


def test_a_policy_variable_in_a_value_is_the_requests_own_key():
    # Given an AssumeRole allowed only into the caller's own organization (${aws:PrincipalOrgID})
    statements = [
        {
            "Effect": "Allow",
            "Action": "sts:AssumeRole",
            "Resource": "arn:aws:iam::*:role/eic-guard-member",
            "Condition": {"StringEquals": {"aws:ResourceOrgID": "${aws:PrincipalOrgID}"}},
        }
    ]
    role = "arn:aws:iam::111111111111:role/eic-guard-member"

    # When requests name a role of the same organization, of another, or come from a caller in none
    same = Request("sts:AssumeRole", role, {"aws:ResourceOrgID": "o-a", "aws:PrincipalOrgID": "o-a"})
    other = Request("sts:AssumeRole", role, {"aws:ResourceOrgID": "o-b", "aws:PrincipalOrgID": "o-a"})
    outside = Request("sts:AssumeRole", role, {"aws:ResourceOrgID": "o-a"})

    # Then only the same organization is allowed
    assert [evaluate(statements, r).allowed for r in (same, other, outside)] == [True, False, False]
