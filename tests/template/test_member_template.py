"""member/template.yaml: the member role the central target worker assumes in every other account.

It must grant exactly the EC2 actions the engine declares for a member account (eic_guard.permissions.
member_role_actions: the worker's, plus the event-driven checks' ec2:DescribeNetworkInterfaces in every mode), through
the same statements, tag conditions, guardrails and region Deny as the central worker role grants in its own
account (but that one read, in ReadInventory rather than the worker's remediate-mode ReReadInterfacesBeforeAttach),
for every Mode/RemediatePublicIp/TagInstances combination; trust only the central worker role(s); and be deployable
as a service-managed StackSet.
"""

from __future__ import annotations

import itertools
import json

import pytest
from cfnlint import api as cfnlint_api
from eic_guard.permissions import CHANGE_LOOKUPS, member_role_actions

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


def member_statements(**overrides: str) -> list[dict]:
    return render_member(member_parameter_values(**overrides)).role_statements("MemberRole")


MEMBER_OWN = ("ec2:", "iam:ListAccountAliases")  # what a target needs in its account: EC2 and the account's alias


def central_ec2_statements(**overrides: str) -> list[dict]:
    statements = render(parameter_values(**overrides)).role_statements("ScanTargetFunctionRole")
    return [s for s in statements if all(a.startswith(MEMBER_OWN) for a in as_list(s["Action"]))]


def as_member_grants(central: list[dict]) -> list[dict]:
    """The central worker's EC2 statements with the member role's one addition: the event-driven checks' interface
    lookups in ReadInventory, in every mode (which makes the worker's remediate-mode re-read statement redundant)."""
    adjusted = []
    for statement in central:
        if statement.get("Sid") == "ReReadInterfacesBeforeAttach":
            continue
        if statement.get("Sid") == "ReadInventory":
            statement = {**statement, "Action": [*as_list(statement["Action"]), *CHANGE_LOOKUPS]}
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
def test_member_role_grants_exactly_the_engines_worker_ec2_actions(switches):
    # Given a combination of the switches that change the worker's permissions
    remediate = switches["Mode"] == "remediate"
    public_ip, tags = switches["RemediatePublicIp"] == "true", switches["TagInstances"] == "true"

    # When the member role is rendered with them
    granted = allowed_actions(member_statements(**switches))

    # Then it allows exactly what the engine declares for one target with those settings
    assert sorted(granted ^ member_role_actions(remediate, public_ip, tags)) == []


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


def test_the_role_trusts_only_the_central_worker_roles_to_assume_it():
    # Given two central worker roles (two central stacks, say prod and dev)
    stack = render_member(member_parameter_values(WorkerRoleArns=WORKER_ROLES, MemberRoleName="eic-guard-member"))
    role = stack.resources["MemberRole"]["Properties"]

    # When its trust policy is read
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]

    # Then only those two roles may call sts:AssumeRole, nothing else, and the role has the name the central stack
    # may assume
    assert trust["Effect"] == "Allow"
    assert trust["Principal"] == {"AWS": WORKER_ROLES.split(",")}
    assert as_list(trust["Action"]) == ["sts:AssumeRole"]
    assert set(trust) == {"Sid", "Effect", "Principal", "Action"}
    assert role["RoleName"] == "eic-guard-member"


def test_the_role_grants_nothing_but_ec2():
    # Given every combination of switches
    actions = {a for c in COMBINATIONS for a in allowed_actions(member_statements(**c))}

    # Then every action is an EC2 one but the account alias's read (the run's objects and the member accounts are the
    # central role's business)
    assert {a for a in actions if not a.startswith("ec2:")} == {"iam:ListAccountAliases"}


def test_it_is_a_plain_stackset_template_with_only_iam_resources_and_the_role_arn_as_output():
    # Given the member template
    document = member_template()

    # Then it needs no transform (service-managed StackSets cannot use macros such as SAM), creates IAM resources
    # only, and outputs the role's ARN
    assert "Transform" not in document
    assert {r["Type"] for r in document["Resources"].values()} == {"AWS::IAM::Role", "AWS::IAM::RolePolicy"}
    assert document["Outputs"]["MemberRoleArn"]["Value"] == {"Fn::GetAtt": ["MemberRole", "Arn"]}


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
