"""member/template.yaml: the member role the central worker and event-driven checks assume in every other account,
the rules that forward the account's EC2 changes to the central stack, and the detective rule on the role.

The role grants exactly the calls eic_guard.permissions declares for it (test_role_grants.py), through the same
statements, tag conditions, condition keys, guardrails and region Deny as the central worker role grants in its own
account (but the interface read, in a policy of its own: the event-driven look-ups of forwarded events need it in
report mode too), for every Mode/RemediatePublicIp/TagInstances combination; trusts only the central roles, only from
its organization; forwards exactly the events the central stack's rules take; and is deployable as a
service-managed StackSet in every region (the roles once, in the first of Regions).
"""

from __future__ import annotations

import itertools
import json

import pytest
from cfnlint import api as cfnlint_api
from eic_guard.permissions import MEMBER_WRITE_PROFILE

from tests.template.cfn import (
    MEMBER_TEMPLATE_PATH,
    allowed_actions,
    as_list,
    member_parameter_values,
    member_template,
    parameter_values,
    referenced_names,
    render,
    render_member,
    template,
)

COMBINATIONS = [
    {"Mode": mode, "RemediatePublicIp": public_ip, "TagInstances": tags}
    for mode, public_ip, tags in itertools.product(("report", "remediate"), ("true", "false"), ("true", "false"))
]
IDS = ["-".join(f"{k[0]}{v[0]}" for k, v in c.items()) for c in COMBINATIONS]
SHARED = ("TagKey", "TagValue", "MemberRoleName", "Mode", "RemediatePublicIp", "TagInstances")
REGIONS = "eu-west-1,us-east-1"
WORKER_ROLES = (
    "arn:aws:iam::123456789012:role/eic-guard-ScanTargetFunctionRole-1A2B3C4D,"
    "arn:aws:iam::123456789012:role/eic-guard-dev-ScanTargetFunctionRole-9Z8Y7X6W"
)


CENTRAL_BUS = "arn:aws:events:us-east-1:123456789012:event-bus/eic-guard-member-events"


def member_statements(**overrides: str) -> list[dict]:
    return render_member(member_parameter_values(**overrides)).role_statements("MemberRole")


# What a target needs in its account: EC2, the account's alias, (CreateEndpoints) the endpoints' service-linked role.
MEMBER_OWN = ("ec2:", "iam:ListAccountAliases", "iam:CreateServiceLinkedRole")


def central_ec2_statements(**overrides: str) -> list[dict]:
    statements = render(parameter_values(**overrides)).role_statements("ScanTargetFunctionRole")
    return [s for s in statements if all(a.startswith(MEMBER_OWN) for a in as_list(s["Action"]))]


def as_member_grants(central: list[dict]) -> list[dict]:
    """The central worker's EC2 statements with the member role's one difference: the interface read has a statement
    of its own (in remediate mode it is the worker's ReReadInterfacesBeforeAttach)."""
    adjusted = []
    for statement in central:
        if statement.get("Sid") == "ReReadInterfacesBeforeAttach":
            statement = {**statement, "Sid": "ReadInterfaces"}
        adjusted.append(statement)
    return adjusted


def canonical(statements: list[dict]) -> list[str]:
    """Statements compared whatever the order of statements, actions and values."""

    def normal(node):
        if isinstance(node, dict):
            return {k: normal(v) for k, v in sorted(node.items())}
        if isinstance(node, list):
            return sorted((normal(v) for v in node), key=json.dumps)
        return node

    return sorted(json.dumps(normal({**s, "Action": as_list(s["Action"])})) for s in statements)


def test_cfn_lint_reports_no_error_or_warning():
    # Given the member template's text
    text = MEMBER_TEMPLATE_PATH.read_text(encoding="utf-8")

    # When cfn-lint checks it with every rule
    matches = cfnlint_api.lint_all(text)

    # Then nothing is an error or a warning
    assert [str(m) for m in matches if m.rule.id[0] in "EW"] == []


@pytest.mark.parametrize("switches", COMBINATIONS, ids=IDS)
@pytest.mark.parametrize("tag", [("eic-guard:managed", "true"), ("team/eic", "on")], ids=["default-tag", "own-tag"])
def test_member_role_statements_are_the_central_workers_ec2_statements(switches, tag):
    # Given the same settings for the central stack and the member stack
    shared = {**switches, "TagKey": tag[0], "TagValue": tag[1], "Regions": REGIONS}

    # When the central worker role's EC2 statements and the member role's statements are rendered (same account)
    central = central_ec2_statements(**shared)
    member = member_statements(**shared)

    # Then they are the same statements: same Sids, actions, resources, tag conditions, guardrails, region Deny
    assert canonical(member) == canonical(as_member_grants(central))


def test_the_region_deny_lists_the_regions_given():
    # Given two regions
    statements = member_statements(Regions=REGIONS, Mode="remediate")

    # When the Deny on the requested region is read
    (deny,) = [s for s in statements if s.get("Sid") == "DenyOutsideConfiguredRegions"]

    # Then every EC2 write the role can ever have is denied outside exactly those regions
    writes = {a for c in COMBINATIONS for a in allowed_actions(member_statements(**c)) if _is_write(a)}
    assert writes <= set(deny["Action"])
    assert (deny["Effect"], deny["Resource"]) == ("Deny", "*")
    assert deny["Condition"] == {"StringNotEquals": {"aws:RequestedRegion": ["eu-west-1", "us-east-1"]}}


def _is_write(action: str) -> bool:
    return not action.split(":")[1].startswith(("Describe", "Get", "ListAccountAliases"))


def test_report_mode_allows_no_ec2_write_but_the_managed_groups_rules():
    # Given report mode with every switch on
    statements = member_statements(Mode="report", RemediatePublicIp="true", TagInstances="true")

    # When the writes it allows are listed
    writes = {a for a in allowed_actions(statements) if _is_write(a)}

    # Then they are the refresh job's edits of eic-guard's own groups, on ManagedBy=eic-guard groups only
    assert writes == {"ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"}
    (edit,) = [s for s in statements if s["Effect"] == "Allow" and set(as_list(s["Action"])) == writes]
    assert edit["Condition"] == {"StringEquals": {"aws:ResourceTag/ManagedBy": "eic-guard"}}


def test_the_role_trusts_only_the_central_roles_and_only_from_the_organization():
    # Given two central roles (the worker and the event-driven checks) and the organization
    stack = render_member(member_parameter_values(WorkerRoleArns=WORKER_ROLES, OrganizationId="o-exampleorg1"))
    role = stack.resources["MemberRole"]["Properties"]

    # When its trust policy is read
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]

    # Then only those roles may call sts:AssumeRole, and only while they are in that organization
    assert trust["Effect"] == "Allow"
    assert trust["Principal"] == {"AWS": WORKER_ROLES.split(",")}
    assert as_list(trust["Action"]) == ["sts:AssumeRole"]
    assert trust["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": "o-exampleorg1"}}
    assert role["RoleName"] == "eic-guard-member"


def test_the_role_grants_nothing_but_ec2_the_alias_and_security_hub():
    # Given every combination of switches, Security Hub on
    actions = {a for c in COMBINATIONS for a in allowed_actions(member_statements(**c, SecurityHubFindings="enabled"))}

    # Then every action is an EC2 one but the account alias's read and the account's own findings and hub (`eic-guard
    # verify` reads it) (the run's objects and the member accounts are the central roles' business)
    assert {a for a in actions if not a.startswith("ec2:")} == {
        "iam:ListAccountAliases",
        "securityhub:BatchImportFindings",
        "securityhub:BatchUpdateFindings",
        "securityhub:DescribeHub",
    }


@pytest.mark.parametrize(("region", "roles"), [("eu-west-1", True), ("us-east-1", False)])
def test_the_roles_are_created_once_in_the_first_region_and_the_rules_in_every_region(region, roles):
    # Given a member stack of two regions forwarding its events, deployed in each
    params = member_parameter_values(Regions="eu-west-1,us-east-1", CentralEventBusArn=CENTRAL_BUS)
    stack = render_member(params, region=region)

    # Then its IAM roles exist in the first region only (IAM is global), its rules and their dead-letter queue in both
    iam = {k for k, v in stack.resources.items() if v["Type"].startswith("AWS::IAM::")}
    assert bool(iam) is roles
    assert {k for k, v in stack.resources.items() if v["Type"] == "AWS::Events::Rule"} == {
        "ForwardInstanceStateRule",
        "ForwardApiCallRule",
        "ForwardOptInTagRule",
        "MemberRoleAnomalyRule",
    }
    assert "ForwardingDeadLetterQueue" in stack.resources


def test_nothing_is_forwarded_without_the_central_bus():
    # Given a member stack without CentralEventBusArn
    stack = render_member(member_parameter_values())

    # Then it is the role alone, and it needs no transform (service-managed StackSets cannot use macros such as SAM)
    assert {v["Type"] for v in stack.resources.values()} == {"AWS::IAM::Role", "AWS::IAM::RolePolicy"}
    assert "Transform" not in member_template()
    assert member_template()["Outputs"]["MemberRoleArn"]["Value"] == {"Fn::GetAtt": ["MemberRole", "Arn"]}


@pytest.mark.parametrize("rule", ["ForwardInstanceStateRule", "ForwardApiCallRule", "ForwardOptInTagRule"])
def test_the_forwarding_rules_take_this_accounts_events_as_the_central_rules_take_the_stacks_own(rule):
    # Given the member stack forwarding its events, and the central stack with the same opt-in tag
    member = render_member(member_parameter_values(CentralEventBusArn=CENTRAL_BUS, TagKey="team:eic"))
    central = render(parameter_values(TagKey="team:eic"))
    central_rule = rule.replace("Forward", "OnChange")

    # When both patterns are read, each with its own account
    forwarded = member.resources[rule]["Properties"]
    own = central.resources[central_rule]["Properties"]

    # Then they are the same pattern, and the member's goes to the central bus with the forwarding role, and to a
    # dead-letter queue when it cannot
    assert {**forwarded["EventPattern"], "account": None} == {**own["EventPattern"], "account": None}
    assert forwarded["EventPattern"]["account"] == [member.pseudo["AWS::AccountId"]]
    [target] = forwarded["Targets"]
    assert target["Arn"] == CENTRAL_BUS
    assert target["RoleArn"] == f"arn:aws:iam::{member.pseudo['AWS::AccountId']}:role/eic-guard-member-events"
    assert target["DeadLetterConfig"]["Arn"] == member.physical("ForwardingDeadLetterQueue", "Arn")


def test_the_forwarding_role_may_only_put_events_on_the_central_bus():
    # Given the member stack forwarding its events
    stack = render_member(member_parameter_values(CentralEventBusArn=CENTRAL_BUS))
    role = stack.resources["EventForwardingRole"]["Properties"]

    # Then EventBridge of this account alone may assume it, to put events on that bus alone
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "events.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": stack.pseudo["AWS::AccountId"]}}
    assert stack.role_statements("EventForwardingRole") == [
        {"Sid": "PutOnTheCentralBusOnly", "Effect": "Allow", "Action": "events:PutEvents", "Resource": CENTRAL_BUS}
    ]


def test_the_detective_rule_takes_the_member_roles_writes_outside_eic_guards_profile():
    # Given the member stack's detective rule and the central stack's alert rule for its events
    member = render_member(member_parameter_values(CentralEventBusArn=CENTRAL_BUS))
    detail = member.resources["MemberRoleAnomalyRule"]["Properties"]["EventPattern"]["detail"]
    central = render(parameter_values(Accounts="111111111111")).resources["MemberRoleAnomalyRule"]["Properties"]

    # Then both take the role's calls outside the profile eic-guard's code writes, or refused ones
    account = member.pseudo["AWS::AccountId"]
    assert detail["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"] == [
        f"arn:aws:iam::{account}:role/eic-guard-member"
    ]
    [names, refused] = detail["$or"]
    assert sorted(names["eventName"][0]["anything-but"]) == sorted(MEMBER_WRITE_PROFILE)
    assert refused == {"errorCode": [{"exists": True}]}
    assert central["EventPattern"]["detail"]["$or"] == detail["$or"]
    assert central["EventPattern"]["detail"]["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"] == [
        {"suffix": ":role/eic-guard-member"}
    ]


def test_every_member_parameter_is_described_constrained_and_used():
    # Given the member parameters and the rest of the member template
    parameters = member_template()["Parameters"]
    used = referenced_names({k: v for k, v in member_template().items() if k not in ("Parameters", "Metadata")})

    # Then each has a description, a constraint and a use
    for name, spec in parameters.items():
        assert spec.get("Description"), name
        assert {"AllowedValues", "AllowedPattern", "MinValue"} & set(spec), name
        assert name in used, f"parameter {name} is never used"


@pytest.mark.parametrize("name", SHARED)
def test_shared_parameters_accept_exactly_what_the_central_stack_accepts(name):
    # Given a parameter both templates have
    member, central = member_template()["Parameters"][name], template()["Parameters"][name]

    # Then its type, default and constraints are the central stack's (the same value must be valid in both)
    keys = ("Type", "Default", "AllowedValues", "AllowedPattern")
    assert {k: member.get(k) for k in keys} == {k: central.get(k) for k in keys}


def test_regions_are_required_and_worker_roles_are_role_arns():
    # Given the two parameters without a default
    regions, workers = member_template()["Parameters"]["Regions"], member_template()["Parameters"]["WorkerRoleArns"]

    # Then Regions has no default (the central stack's empty value means its own region, unknown here) and takes
    # the central pattern without the empty alternative, and WorkerRoleArns is a list of role ARNs
    assert "Default" not in regions and "Default" not in workers
    assert "^$|" + regions["AllowedPattern"] == template()["Parameters"]["Regions"]["AllowedPattern"]
    assert workers["Type"] == "CommaDelimitedList"
