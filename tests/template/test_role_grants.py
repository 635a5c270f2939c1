"""Every role the stacks deploy grants exactly the actions eic-guard's code paths call (docs/architecture.md §14).

For every combination of the parameters that change a role (Mode, RemediatePublicIp, TagInstances, SecurityHubFindings,
Accounts; for the member stack also whether it forwards its events), each role's allowed actions - rendered by SAM's
translator with every condition decided - are held to eic_guard.permissions.granted: the union of the `Call`s that
apply to that role with those parameters, each naming the code path that makes the call. A granted action no path
calls fails, and so does a call the role does not grant. No role carries a managed policy: SAM's basic execution,
X-Ray and SQS poller policies grant far more than the calls need (log writes to every log group, receive and delete
on every queue).
"""

from __future__ import annotations

import copy
import itertools

import pytest
from eic_guard.permissions import (
    CALLS,
    CENTRAL_ROLES,
    FORWARDER,
    MEMBER,
    MEMBER_ROLES,
    Deployment,
    declared_check_actions,
    granted,
)

from tests.template.cfn import (
    RenderedStack,
    allowed_actions,
    member_values_for,
    parameter_values,
    render,
    render_member,
)
from tests.template.parameter_sets import STACK_REGION

ORGANIZATION_ID = "o-exampleorg1"
ACCOUNTS = {"own": "", "listed": "111111111111,222222222222", "organization": "organization"}
CENTRAL_BUS = "arn:aws:events:us-east-1:123456789012:event-bus/eic-guard-member-events"
COMBINATIONS = [
    {
        "Mode": mode,
        "RemediatePublicIp": public_ip,
        "TagInstances": tags,
        "SecurityHubFindings": hub,
        "Accounts": ACCOUNTS[accounts],
        "OrganizationId": ORGANIZATION_ID if accounts == "organization" else "",
    }
    for mode, public_ip, tags, hub, accounts in itertools.product(
        ("report", "remediate"), ("true", "false"), ("true", "false"), ("enabled", "disabled"), ACCOUNTS
    )
]
# CreateEndpoints (docs/architecture.md §13), against the mode and the accounts it interacts with. ConnectPath changes
# no role: an instance's eic-guard:connect-path tag may choose the endpoint path whatever it says.
COMBINATIONS += [
    {
        "Mode": mode,
        "RemediatePublicIp": "false",
        "TagInstances": "true",
        "SecurityHubFindings": "disabled",
        "Accounts": ACCOUNTS[accounts],
        "OrganizationId": ORGANIZATION_ID if accounts == "organization" else "",
        "ConnectPath": path,
        "CreateEndpoints": "true",
    }
    for mode, path, accounts in itertools.product(("report", "remediate"), ("auto", "public"), ACCOUNTS)
]


def combination_id(params: dict[str, str]) -> str:
    accounts = next(name for name, value in ACCOUNTS.items() if value == params["Accounts"])
    switches = "-".join(f"{k[0]}{params[k][0]}" for k in ("Mode", "RemediatePublicIp", "TagInstances"))
    path = f"-{params['ConnectPath']}-create{params['CreateEndpoints'][0]}" if "ConnectPath" in params else ""
    return f"{switches}-hub{params['SecurityHubFindings'][0]}-{accounts}{path}"


def grant_problems(stack: RenderedStack, deployment: Deployment, roles: tuple[str, ...], prefix: str = "") -> list[str]:
    """Each granted action no code path calls, each called action not granted, each managed policy."""
    problems = []
    for role in roles:
        role_id = role.removeprefix(prefix)
        if role_id not in stack.resources:
            problems.append(f"{role}: not deployed")
            continue
        actions = allowed_actions(stack.role_statements(role_id))
        declared = granted(role, deployment)
        problems += [f"{role}: {a} is granted, but no code path calls it" for a in sorted(actions - set(declared))]
        problems += [
            f"{role}: {a} is called ({'; '.join(declared[a])}) but not granted" for a in sorted(set(declared) - actions)
        ]
        problems += [f"{role}: managed policy {arn}" for arn in stack.managed_policy_arns(role_id)]
    return problems


def listing(deployment: Deployment, roles: tuple[str, ...]) -> str:
    """What each role may do and why: the text a reviewer reads (shown with -s, and in every failure)."""
    lines = []
    for role in roles:
        lines.append(f"{role}:")
        lines += [f"  {action}: {'; '.join(paths)}" for action, paths in sorted(granted(role, deployment).items())]
    return "\n".join(lines)


@pytest.mark.parametrize("overrides", COMBINATIONS, ids=combination_id)
def test_every_central_role_grants_exactly_the_calls_its_code_makes(overrides):
    # Given the stack rendered with one combination of the parameters that change a role
    params = parameter_values(**overrides)
    stack = render(params, STACK_REGION)
    deployment = Deployment.from_parameters(params)

    # When every role's allowed actions are held to the calls the code paths declare for these parameters
    problems = grant_problems(stack, deployment, CENTRAL_ROLES)

    # Then the stack deploys exactly these roles, none has an action nobody calls or lacks one that is called
    roles = {k for k, v in stack.resources.items() if v["Type"] == "AWS::IAM::Role"}
    assert roles == set(CENTRAL_ROLES)
    assert problems == [], "\n".join(problems) + "\n\n" + listing(deployment, CENTRAL_ROLES)


@pytest.mark.parametrize("forward", [True, False], ids=["forwarding", "not-forwarding"])
@pytest.mark.parametrize("overrides", [c for c in COMBINATIONS if c["Accounts"]], ids=combination_id)
def test_every_member_role_grants_exactly_the_calls_its_code_makes(overrides, forward):
    # Given the member stack with the central stack's values (a stack with member accounts), forwarding its events or
    # not, in its roles' region
    central = parameter_values(**overrides)
    member_params = member_values_for(
        central, STACK_REGION, OrganizationId=ORGANIZATION_ID, CentralEventBusArn=CENTRAL_BUS if forward else ""
    )
    member = render_member(member_params)
    deployment = Deployment.from_parameters({**central, "CentralEventBusArn": member_params["CentralEventBusArn"]})

    # When its roles are held to the declared calls
    roles = MEMBER_ROLES if forward else (MEMBER,)
    problems = grant_problems(member, deployment, roles, prefix="member/")

    # Then each grants exactly what its calls need (no forwarding role when nothing is forwarded)
    assert problems == [], "\n".join(problems) + "\n\n" + listing(deployment, roles)
    assert (FORWARDER.removeprefix("member/") in member.resources) is forward


def test_an_action_no_code_path_calls_is_reported():
    # Given the worker role with one extra action, and the plan role without one it needs
    params = parameter_values(Mode="report")
    stack = render(params, STACK_REGION)
    resources = copy.deepcopy(stack.resources)
    [worker] = [p for p in resources["ScanTargetFunctionRole"]["Properties"]["Policies"] if p["PolicyName"] == "worker"]
    worker["PolicyDocument"]["Statement"].append(
        {"Effect": "Allow", "Action": "ec2:TerminateInstances", "Resource": "*"}
    )
    [plan] = resources["PlanFunctionRole"]["Properties"]["Policies"]
    plan["PolicyDocument"]["Statement"] = [s for s in plan["PolicyDocument"]["Statement"] if s["Sid"] != "WriteRunPlan"]
    changed = RenderedStack(stack.params, stack.pseudo, resources)

    # When the roles are held to the declared calls
    problems = grant_problems(
        changed, Deployment.from_parameters(params), ("ScanTargetFunctionRole", "PlanFunctionRole")
    )

    # Then both are named, the missing one with the code path that needs it
    assert problems == [
        "ScanTargetFunctionRole: ec2:TerminateInstances is granted, but no code path calls it",
        "PlanFunctionRole: s3:PutObject is called (fanout/steps.py: runs/<run id>/ manifest, targets, results) but not "
        "granted",
    ]


def test_every_action_a_check_declares_is_a_declared_call():
    # Given the actions the check modules declare next to their code
    declared = declared_check_actions()

    # Then each one is granted through some Call (a new check's action cannot be missed)
    assert sorted(declared - {a for call in CALLS for a in call.actions}) == []


def test_every_call_names_its_code_path_and_known_roles():
    # Given every declared call
    roles = set(CENTRAL_ROLES) | set(MEMBER_ROLES)

    # Then each names at least one action, roles that exist and a path a reader can follow
    for call in CALLS:
        assert call.actions and set(call.roles) <= roles, call
        assert call.path and (".py" in call.path or ":" in call.path), call
