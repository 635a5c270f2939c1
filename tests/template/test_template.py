"""template.yaml: runtimes and layer, each fan-out function's least privilege, parameters and environment.

The template is resolved for given parameter values (see `cfn.py`), so the IAM tests see what IAM would see. The
state machine and its schedule are in test_statemachine.py, the member role in test_member_template.py, the refresh
function and the data resources in test_refresh_and_data.py, the alarms and dashboard in test_observability.py.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
from cfnlint import api as cfnlint_api
from eic_guard.outputs.publish import CHECKED_AT_TAG, STATUS_TAG
from eic_guard.settings import ENV_PREFIX, MANAGED_BY_TAG, Settings

from tests.template.cfn import (
    PSEUDO,
    ROOT,
    TEMPLATE_PATH,
    allowed_actions,
    arn_resource_type,
    as_list,
    environment,
    is_ec2_write,
    is_write,
    names_resource_type,
    parameter_values,
    physical,
    referenced_names,
    render,
    resolve,
    resources,
    role_statements,
    serverless_functions,
    statements_granting,
    string_equals,
    template,
)

FULL_REMEDIATION = {"Mode": "remediate", "RemediatePublicIp": "true", "TagInstances": "true"}
MANAGED_KEY, MANAGED_VALUE = MANAGED_BY_TAG
STATUS_TAG_KEYS = sorted([STATUS_TAG, CHECKED_AT_TAG])  # what publish.py writes on instances


FAN_OUT_FUNCTIONS = ("PlanFunction", "ScanTargetFunction", "AggregateFunction")


def worker_statements(params: dict[str, str]) -> list[dict]:
    return role_statements("ScanTargetFunction", params)


# ---------------------------------------------------------------- 1. cfn-lint


def test_cfn_lint_reports_no_error_or_warning():
    # Given the template text
    text = TEMPLATE_PATH.read_text(encoding="utf-8")

    # When cfn-lint checks it with every rule, against every region
    matches = cfnlint_api.lint_all(text)

    # Then nothing is an error or a warning (informational notes are allowed)
    serious = [str(m) for m in matches if m.rule.id[0] in "EW"]
    assert serious == []


# ---------------------------------------------------------------- 2. runtime, architecture, layer


def test_every_function_is_python313_arm64_and_the_layer_agrees():
    # Given the global function settings and the layer
    function_globals = template()["Globals"]["Function"]
    layer = template()["Resources"]["EicGuardLayer"]

    # When each function's effective runtime and architectures are read (own value, else Globals)
    effective = {
        name: (
            fn["Properties"].get("Runtime", function_globals.get("Runtime")),
            tuple(fn["Properties"].get("Architectures", function_globals.get("Architectures"))),
        )
        for name, fn in serverless_functions().items()
    }

    # Then every function runs python3.13 on arm64, uses the layer, and the layer is built for exactly that
    assert effective, "no AWS::Serverless::Function in template.yaml"
    assert set(effective.values()) == {("python3.13", ("arm64",))}
    for fn in serverless_functions().values():
        assert {"Ref": "EicGuardLayer"} in fn["Properties"]["Layers"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Properties"]["ContentUri"] == "layers/eic_guard"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    assert layer["Metadata"] == {"BuildMethod": "makefile", "BuildArchitecture": "arm64"}
    # ... and the layer's Makefile installs wheels for that same runtime and architecture.
    makefile = (ROOT / "layers" / "eic_guard" / "Makefile").read_text()
    assert "build-EicGuardLayer:" in makefile
    assert "--python-version 3.13" in makefile and "manylinux2014_aarch64" in makefile


def test_layer_pins_every_dependency_and_leaves_the_sdk_to_the_runtime():
    # Given the layer's requirements (installed with --no-deps) and the development pins
    layer = _pins(ROOT / "layers" / "eic_guard" / "requirements.txt")
    dev = _pins(ROOT / "requirements-dev.txt")

    # Then every layer package is pinned to the version the tests run with, and the SDK is not shipped
    assert layer, "no pinned requirement in the layer"
    assert {name: dev.get(name) for name in layer} == layer
    assert not {"boto3", "botocore", "s3transfer", "urllib3"} & layer.keys()


def _pins(path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.split("[")[0].lower().replace("_", "-")] = version
    return pins


# ---------------------------------------------------------------- 3. the engine's actions are granted, no more
# (every role against eic_guard.permissions for every parameter combination: test_role_grants.py)

MANAGED_GROUP_RULE_EDITS = ("ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress")


@pytest.mark.parametrize(("accounts", "organization"), [("", False), ("111111111111", False), ("organization", True)])
def test_the_plan_role_lists_accounts_only_for_an_organization_and_on_star(accounts, organization):
    # Given an Accounts setting
    statements = role_statements("PlanFunction", parameter_values(Accounts=accounts))

    # Then organizations:ListAccounts is there only with Accounts=organization, on "*" (the action supports no
    # resource-level permission), and the role has no EC2 action
    listing = statements_granting("organizations:ListAccounts", statements)
    assert [as_list(s["Resource"]) for s in listing] == ([["*"]] if organization else [])
    assert [a for a in allowed_actions(statements) if a.startswith("ec2:")] == []


def test_report_mode_worker_may_write_only_the_managed_groups_rules():
    # Given report mode (even with the Elastic IP and status-tag switches on)
    params = parameter_values(Mode="report", RemediatePublicIp="true", TagInstances="true")

    # When the worker role is resolved
    granted = allowed_actions(worker_statements(params))

    # Then its only EC2 writes are the refresh job's rule edits of eic-guard's own groups (the scan job in report
    # mode makes none: test_calls_against_roles.py)
    assert sorted(a for a in granted if is_ec2_write(a)) == sorted(MANAGED_GROUP_RULE_EDITS)


def test_elastic_ip_actions_exist_only_when_remediate_public_ip_is_true():
    # Given the address actions eic-guard may use
    address_actions = {"ec2:AllocateAddress", "ec2:AssociateAddress", "ec2:DisassociateAddress", "ec2:ReleaseAddress"}

    # When the worker role is resolved with RemediatePublicIp false, then true
    without = allowed_actions(worker_statements(parameter_values(Mode="remediate", RemediatePublicIp="false")))
    with_eip = allowed_actions(worker_statements(parameter_values(**FULL_REMEDIATION)))

    # Then the address actions (and tagging an address) appear only with the switch on
    assert without & address_actions == set()
    assert address_actions <= with_eip


@pytest.mark.parametrize("role_name", ["eic-guard-member", "OrgAudit.eic@guard"])
@pytest.mark.parametrize(
    ("accounts", "organization_id", "condition"),
    [
        ("111111111111,222222222222", "", {"aws:ResourceAccount": ["111111111111", "222222222222"]}),
        ("organization", "o-exampleorg1", {"aws:ResourceOrgID": "${aws:PrincipalOrgID}"}),
    ],
    ids=["listed", "organization"],
)
def test_the_worker_may_assume_only_the_member_role_in_the_runs_accounts(
    role_name, accounts, organization_id, condition
):
    # Given a MemberRoleName and the accounts a run may enter
    params = parameter_values(MemberRoleName=role_name, Accounts=accounts, OrganizationId=organization_id)

    # When the statements granting sts actions are read, for the worker and the event-driven checks
    for function_id in ("ScanTargetFunction", "OnChangeFunction"):
        statements = role_statements(function_id, params)
        assume = [s for s in statements if any(a.startswith("sts:") for a in as_list(s["Action"]))]

        # Then one statement allows sts:AssumeRole, on that role name only, in those accounts only (the listed ones
        # by aws:ResourceAccount, the organization's by aws:ResourceOrgID: STS supports both global keys on the role)
        assert [(s["Effect"], as_list(s["Action"]), as_list(s["Resource"])) for s in assume] == [
            ("Allow", ["sts:AssumeRole"], [f"arn:aws:iam::*:role/{role_name}"])
        ]
        assert assume[0]["Condition"] == {"StringEquals": condition}
    # and the function is told the same name; no other function may assume a role
    assert resolve(environment("ScanTargetFunction")["EIC_GUARD_MEMBER_ROLE_NAME"], params) == role_name
    for function_id in ("PlanFunction", "AggregateFunction", "RefreshFunction"):
        assert not [a for a in allowed_actions(role_statements(function_id, params)) if a.startswith("sts:")]


def test_a_stack_of_its_own_account_only_may_assume_no_role():
    # Given the default Accounts (this account only)
    params = parameter_values(**FULL_REMEDIATION)

    # Then no function may assume any role
    for function_id in ("ScanTargetFunction", "OnChangeFunction", "PlanFunction", "AggregateFunction"):
        assert not [a for a in allowed_actions(role_statements(function_id, params)) if a.startswith("sts:")]


def test_member_role_name_pattern_is_iams():
    # Given the MemberRoleName pattern
    pattern = re.compile(template()["Parameters"]["MemberRoleName"]["AllowedPattern"])

    # Then IAM role names pass and anything that could widen the ARN pattern (a wildcard, a path) does not
    assert all(pattern.fullmatch(v) for v in ["eic-guard-member", "a", "x" * 64, "A+=,.@_-1"])
    assert not any(pattern.fullmatch(v) for v in ["", "x" * 65, "eic-*", "path/role", "a b", "a?"])


# ---------------------------------------------------------------- 4. least privilege


def test_every_write_statement_is_narrowed_and_no_action_is_a_wildcard():
    # Given every statement of the worker role with every remediation switched on
    statements = worker_statements(parameter_values(**FULL_REMEDIATION))

    # When the Allow statements that grant a write action are picked out
    writes = [s for s in statements if s["Effect"] == "Allow" and any(is_write(a) for a in as_list(s["Action"]))]

    # Then each has a condition or only resources narrower than "*" (but X-Ray's trace writes, which accept no
    # resource), and no action anywhere is a wildcard
    assert writes
    for statement in writes:
        resources_ = as_list(statement["Resource"])
        if statement["Sid"] == "WriteTraces":
            assert all(a.startswith("xray:") for a in as_list(statement["Action"]))
            continue
        assert "Condition" in statement or "*" not in resources_, statement["Sid"]
    for statement in statements:
        for action in as_list(statement["Action"]):
            assert "*" not in action, (statement.get("Sid"), action)


def test_security_group_rules_change_only_in_groups_tagged_managed_by_eic_guard():
    # Given every statement of the remediating worker role
    statements = worker_statements(parameter_values(**FULL_REMEDIATION))

    for action in ("ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"):
        # When the statements granting the action are picked out
        granting = statements_granting(action, statements)

        # Then each one is limited to security groups carrying ManagedBy=eic-guard
        assert granting, action
        for statement in granting:
            assert {arn_resource_type(r) for r in as_list(statement["Resource"])} == {"security-group"}
            assert string_equals(statement).get(f"aws:ResourceTag/{MANAGED_KEY}") == MANAGED_VALUE


def test_created_security_groups_and_addresses_must_be_tagged_managed_by_eic_guard():
    # Given every statement of the remediating worker role
    statements = worker_statements(parameter_values(**FULL_REMEDIATION))

    # When the statements that create a security group or an address, or tag one while creating it, are read
    creating = statements_granting("ec2:CreateSecurityGroup", statements) + statements_granting(
        "ec2:AllocateAddress", statements
    )
    tagging = [s for s in statements_granting("ec2:CreateTags", statements) if not names_resource_type(s, "instance")]

    # Then the created group/address needs the ManagedBy request tag (the VPC side of CreateSecurityGroup
    # has no tag to check), and those tags can only be written while creating those two kinds of resource
    for statement in creating:
        types = {arn_resource_type(r) for r in as_list(statement["Resource"])}
        if types == {"vpc"}:
            assert statement["Action"] == "ec2:CreateSecurityGroup"
            continue
        assert types <= {"security-group", "elastic-ip"}, statement["Sid"]
        assert string_equals(statement).get(f"aws:RequestTag/{MANAGED_KEY}") == MANAGED_VALUE, statement["Sid"]
    assert {s["Sid"] for s in tagging} == {"TagManagedGroupOnCreate", "TagElasticIpOnAllocate"}
    for statement in tagging:
        assert {arn_resource_type(r) for r in as_list(statement["Resource"])} <= {"security-group", "elastic-ip"}
        assert set(as_list(string_equals(statement)["ec2:CreateAction"])) <= {"CreateSecurityGroup", "AllocateAddress"}


@pytest.mark.parametrize("tag_key, tag_value", [("eic-guard:managed", "true"), ("team/eic", "on")])
def test_instance_writes_follow_the_opt_in_tag_parameters(tag_key, tag_value):
    # Given a stack whose opt-in tag is TagKey=TagValue
    params = parameter_values(TagKey=tag_key, TagValue=tag_value, **FULL_REMEDIATION)

    # When the statements that name instance resources are picked out
    statements = worker_statements(params)
    on_instances = [s for s in statements if s["Effect"] == "Allow" and names_resource_type(s, "instance")]

    # Then IMDS changes are granted only there, and every one of them requires that exact resource tag (the metadata
    # fix also the endpoint turned on, an Elastic IP also the admin's eic-guard:public-ip=allowed)
    imds = statements_granting("ec2:ModifyInstanceMetadataOptions", statements)
    assert imds
    assert all(s in on_instances for s in imds)
    extra = {
        "EnableMetadataEndpointOfOptedInInstances": {"ec2:Attribute/HttpEndpoint": "enabled"},
        "ElasticIpOnlyForAllowedOptedInInstances": {"aws:ResourceTag/eic-guard:public-ip": "allowed"},
    }
    for statement in on_instances:
        assert string_equals(statement) == {f"aws:ResourceTag/{tag_key}": tag_value, **extra.get(statement["Sid"], {})}


@pytest.mark.parametrize("tag_key, tag_value", [("eic-guard:managed", "true"), ("team/eic", "on")])
def test_status_tags_go_only_on_opted_in_instances_and_only_with_the_two_status_keys(tag_key, tag_value):
    # Given a remediating stack with TagInstances on and the opt-in tag TagKey=TagValue
    params = parameter_values(TagKey=tag_key, TagValue=tag_value, Mode="remediate", TagInstances="true")

    # When the CreateTags statements on instances are picked out
    statements = worker_statements(params)
    on_instances = [s for s in statements_granting("ec2:CreateTags", statements) if names_resource_type(s, "instance")]

    # Then there is one, limited to instances, and it needs both the opt-in tag and only the status tag keys
    assert len(on_instances) == 1
    statement = on_instances[0]
    assert as_list(statement["Action"]) == ["ec2:CreateTags"]
    assert {arn_resource_type(r) for r in as_list(statement["Resource"])} == {"instance"}
    assert string_equals(statement) == {f"aws:ResourceTag/{tag_key}": tag_value}
    assert sorted(statement["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"]) == STATUS_TAG_KEYS
    # ForAllValues is also true for a request without tags: Null makes the keys mandatory
    assert statement["Condition"]["Null"] == {"aws:TagKeys": "false"}
    assert set(statement["Condition"]) == {"StringEquals", "ForAllValues:StringEquals", "Null"}


@pytest.mark.parametrize(
    "overrides",
    [{"Mode": "report", "TagInstances": "true"}, {"Mode": "remediate", "TagInstances": "false"}],
    ids=["report-mode", "tag-instances-false"],
)
def test_no_status_tags_on_instances_in_report_mode_or_when_switched_off(overrides):
    # Given report mode, or remediate mode with TagInstances=false
    params = parameter_values(**overrides)

    # When the worker role is resolved
    statements = worker_statements(params)

    # Then no statement lets it tag an instance, and the function is told the switch's value
    assert [s for s in statements_granting("ec2:CreateTags", statements) if names_resource_type(s, "instance")] == []
    assert resolve(environment("ScanTargetFunction")["EIC_GUARD_TAG_INSTANCES"], params) == overrides["TagInstances"]


def test_writes_are_denied_outside_the_configured_regions():
    # Given two configured regions
    params = parameter_values(Regions="eu-west-1,us-east-1", Mode="remediate")

    # When the Deny statements of the worker role that test the requested region are read, in either mode
    denies = [s for s in worker_statements(params) if s["Effect"] == "Deny" and _tests_region(s)]
    report_mode = worker_statements(parameter_values(Regions="eu-west-1,us-east-1", Mode="report"))

    # Then every EC2 write the role allows is denied outside exactly those regions, report mode's rule edits too
    granted = allowed_actions(worker_statements(parameter_values(**FULL_REMEDIATION)))
    writes = {a for a in granted if is_ec2_write(a)}
    assert len(denies) == 1
    assert [s for s in report_mode if s["Effect"] == "Deny" and _tests_region(s)] == denies
    assert writes <= set(denies[0]["Action"])
    assert denies[0]["Resource"] == "*"
    assert denies[0]["Condition"] == {"StringNotEquals": {"aws:RequestedRegion": ["eu-west-1", "us-east-1"]}}


def _tests_region(statement: dict) -> bool:
    return any("aws:RequestedRegion" in keys for keys in statement.get("Condition", {}).values())


# What eic-guard must never do, refused by IAM itself: (Sid, actions, resource type, condition).
GUARDRAILS = [
    (
        "DenyRuleChangesOutsideManagedGroups",
        ["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"],
        "security-group",
        {"StringNotEquals": {f"aws:ResourceTag/{MANAGED_KEY}": MANAGED_VALUE}},
    ),
    (
        "DenyUntaggedGroupCreation",
        ["ec2:CreateSecurityGroup"],
        "security-group",
        {"StringNotEquals": {f"aws:RequestTag/{MANAGED_KEY}": MANAGED_VALUE}},
    ),
    (
        "DenyUntaggedElasticIp",
        ["ec2:AllocateAddress"],
        "elastic-ip",
        {"StringNotEquals": {f"aws:RequestTag/{MANAGED_KEY}": MANAGED_VALUE}},
    ),
    (
        "DenyForeignElasticIps",
        ["ec2:AssociateAddress", "ec2:DisassociateAddress", "ec2:ReleaseAddress"],
        "elastic-ip",
        {"StringNotEquals": {f"aws:ResourceTag/{MANAGED_KEY}": MANAGED_VALUE}},
    ),
    (
        "DenyWritesToInstancesNotOptedIn",
        ["ec2:ModifyInstanceMetadataOptions", "ec2:ModifyNetworkInterfaceAttribute", "ec2:AssociateAddress"],
        "instance",
        {"StringNotEquals": {"aws:ResourceTag/eic-guard:managed": "true"}},
    ),
    (
        "DenyInstanceTagsOtherThanStatus",
        ["ec2:CreateTags"],
        "instance",
        {"ForAnyValue:StringNotEquals": {"aws:TagKeys": STATUS_TAG_KEYS[::-1]}},
    ),
]


@pytest.mark.parametrize(("sid", "actions", "resource_type", "condition"), GUARDRAILS, ids=[g[0] for g in GUARDRAILS])
def test_guardrails_deny_what_eic_guard_must_never_do(sid, actions, resource_type, condition):
    # Given the remediating worker role with every switch on
    statements = worker_statements(parameter_values(**FULL_REMEDIATION))

    # When the guardrail is looked up by its Sid
    [statement] = [s for s in statements if s.get("Sid") == sid]

    # Then it denies exactly those actions on that resource type, in any account, unless the condition holds
    assert statement["Effect"] == "Deny"
    assert sorted(as_list(statement["Action"])) == sorted(actions)
    assert as_list(statement["Resource"]) == [f"arn:aws:ec2:*:*:{resource_type}/*"]
    assert {k: {kk: sorted(as_list(vv)) for kk, vv in v.items()} for k, v in statement["Condition"].items()} == {
        k: {kk: sorted(as_list(vv)) for kk, vv in v.items()} for k, v in condition.items()
    }


def test_report_mode_keeps_only_the_guardrails_of_the_managed_groups_rules():
    # Given report mode with every switch on
    statements = worker_statements(parameter_values(Mode="report", RemediatePublicIp="true"))

    # When its Deny statements are listed
    denies = {s["Sid"] for s in statements if s["Effect"] == "Deny"}

    # Then the only writes are the managed groups' rules, guarded by the tag Deny and the region Deny
    assert sorted(a for a in allowed_actions(statements) if is_ec2_write(a)) == sorted(MANAGED_GROUP_RULE_EDITS)
    assert denies == {"DenyRuleChangesOutsideManagedGroups", "DenyOutsideConfiguredRegions"}


@pytest.mark.parametrize("function_id", ["PlanFunction", "AggregateFunction", "RefreshFunction"])
def test_only_the_worker_touches_ec2(function_id):
    # Given the other functions' roles with every switch on
    statements = role_statements(function_id, parameter_values(Accounts="organization", **FULL_REMEDIATION))

    # Then none of them has an EC2 action (the refresh's rule changes are the fan-out's refresh job)
    assert [a for a in allowed_actions(statements) if a.startswith("ec2:")] == []


# ---------------------------------------------------------------- 5. ConnectPolicy


def connect_policy(**overrides: str) -> dict:
    return render(parameter_values(**overrides)).managed_policy_document("ConnectPolicy")


@pytest.mark.parametrize("path", ["public", "auto", "endpoint"])
def test_connect_policy_pushes_keys_only_as_ec2_user_to_opted_in_instances(path):
    # Given the ConnectPolicy resolved with the default opt-in tag, for each connect path
    connect = template()["Resources"]["ConnectPolicy"]
    document = connect_policy(ConnectPath=path)

    # When its statements are split into the key push, the tunnel (docs/architecture.md §13) and the rest
    push = [s for s in document["Statement"] if "ec2-instance-connect:SendSSHPublicKey" in as_list(s["Action"])]
    tunnel = [s for s in document["Statement"] if "ec2-instance-connect:OpenTunnel" in as_list(s["Action"])]
    others = [a for s in document["Statement"] if s not in push + tunnel for a in as_list(s["Action"])]

    # Then the key push is limited to instances with the opt-in tag and to ec2-user, the rest only reads,
    # and the policy's ARN is a stack output
    assert connect["Type"] == "AWS::IAM::ManagedPolicy"
    assert len(push) == 1
    assert push[0]["Effect"] == "Allow"
    assert as_list(push[0]["Action"]) == ["ec2-instance-connect:SendSSHPublicKey"]
    assert [arn_resource_type(r) for r in as_list(push[0]["Resource"])] == ["instance"]
    assert string_equals(push[0]) == {"aws:ResourceTag/eic-guard:managed": "true", "ec2:osuser": "ec2-user"}
    assert set(push[0]["Condition"]) == {"StringEquals"}
    # (ec2:DescribeVpcs: EC2 Instance Connect needs it to connect to an instance's IPv6 address; the endpoint path
    # finds the endpoint of the instance's VPC - whatever ConnectPath says, an instance's tag may choose that path)
    assert sorted(others) == ["ec2:DescribeInstanceConnectEndpoints", "ec2:DescribeInstances", "ec2:DescribeVpcs"]
    assert all(s["Resource"] == "*" for s in document["Statement"] if s not in push + tunnel)
    assert template()["Outputs"]["ConnectPolicyArn"]["Value"] == {"Ref": "ConnectPolicy"}
    assert len(tunnel) == 1


@pytest.mark.parametrize("path", ["public", "auto", "endpoint"])
def test_connect_policy_opens_tunnels_to_ssh_only_for_an_hour_at_most(path):
    # Given the ConnectPolicy of a stack (with ConnectPath=public too, a tagged instance may take the endpoint path)
    document = connect_policy(ConnectPath=path)

    # When its tunnel statement is read
    (tunnel,) = [s for s in document["Statement"] if "ec2-instance-connect:OpenTunnel" in as_list(s["Action"])]

    # Then it opens tunnels through this account's endpoints only, to TCP 22 only, for 3600 s at most
    assert tunnel["Effect"] == "Allow"
    assert as_list(tunnel["Action"]) == ["ec2-instance-connect:OpenTunnel"]
    assert tunnel["Resource"] == "arn:aws:ec2:*:123456789012:instance-connect-endpoint/*"
    assert tunnel["Condition"] == {
        "NumericEquals": {"ec2-instance-connect:remotePort": "22"},
        "NumericLessThanEquals": {"ec2-instance-connect:maxTunnelDuration": "3600"},
    }


# ---------------------------------------------------------------- 6. parameters and environment


def env_sources(value: Any) -> set[str]:
    """Where an environment value comes from: "constant", or the parameters/resources it references."""
    if isinstance(value, str):
        return {"constant"}
    if isinstance(value, dict) and "Fn::If" in value:
        return env_sources(value["Fn::If"][1]) | env_sources(value["Fn::If"][2])
    if isinstance(value, dict) and "Fn::Join" in value:
        return set().union(*(env_sources(v) for v in value["Fn::Join"][1]))
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return {".".join(value["Fn::GetAtt"])}
    assert isinstance(value, dict) and set(value) == {"Ref"}, value
    name = value["Ref"]
    assert name in template()["Parameters"] or name in PSEUDO or name in resources(), value
    return {name}


SHARED_ENVIRONMENT = {
    "POWERTOOLS_SERVICE_NAME": {"constant"},
    "POWERTOOLS_METRICS_NAMESPACE": {"constant"},
    "POWERTOOLS_LOG_LEVEL": {"LogLevel"},
    "EIC_GUARD_STACK_NAME": {"AWS::StackName"},  # the metrics' Stack dimension
    "EIC_GUARD_REGIONS": {"Regions", "AWS::Region"},
    "EIC_GUARD_INGRESS_SOURCE": {"IngressSource"},
    "EIC_GUARD_STALE_PREFIX_GRACE_HOURS": {"StalePrefixGraceHours"},
    "EIC_GUARD_STATE_TABLE": {"StateTable"},
    "EIC_GUARD_REPORTS_BUCKET": {"ReportsBucket"},
    "EIC_GUARD_ALERTS_TOPIC_ARN": {"AlertsTopic"},
}
FAN_OUT_ENVIRONMENT = SHARED_ENVIRONMENT | {
    "EIC_GUARD_TAG_KEY": {"TagKey"},
    "EIC_GUARD_TAG_VALUE": {"TagValue"},
    "EIC_GUARD_MODE": {"Mode"},
    "EIC_GUARD_REMEDIATE_PUBLIC_IP": {"RemediatePublicIp"},
    "EIC_GUARD_TAG_INSTANCES": {"TagInstances"},
    "EIC_GUARD_ACCOUNTS": {"Accounts"},
    "EIC_GUARD_MEMBER_ROLE_NAME": {"MemberRoleName"},
}
# The functions that check instances (the target worker, the event-driven checks) also import Security Hub findings;
# the on-change function also knows eic-guard's own roles (loop prevention, changes/actors.py).
CHECK_ENVIRONMENT = FAN_OUT_ENVIRONMENT | {
    "EIC_GUARD_SECURITY_HUB_FINDINGS": {"SecurityHubFindings"},
    "EIC_GUARD_ALLOWED_IMAGES": {"AllowedImages"},
    "EIC_GUARD_OWNER_TAGS": {"OwnerTags"},
    "EIC_GUARD_CONNECT_PATH": {"ConnectPath"},
    "EIC_GUARD_CREATE_ENDPOINTS": {"CreateEndpoints"},
}
OWN_ROLE_ARNS = {
    f"{f}Role.Arn"
    for f in ("OnChangeFunction", "ScanTargetFunction", "RefreshFunction", "PlanFunction", "AggregateFunction")
}
NOT_SETTINGS = {"EIC_GUARD_OWN_ROLE_ARNS"}  # read by changes.actors.OwnRoles, not by Settings
EXPECTED_ENVIRONMENT = {
    **dict.fromkeys(FAN_OUT_FUNCTIONS, FAN_OUT_ENVIRONMENT),
    "ScanTargetFunction": CHECK_ENVIRONMENT,
    "OnChangeFunction": CHECK_ENVIRONMENT | {"EIC_GUARD_OWN_ROLE_ARNS": OWN_ROLE_ARNS},
    "RefreshFunction": SHARED_ENVIRONMENT | {"EIC_GUARD_STATE_MACHINE_ARN": {"EicGuardStateMachine"}},
    # the run's metrics: per-account counts only when asked for (observability.record_targets)
    "AggregateFunction": FAN_OUT_ENVIRONMENT | {"EIC_GUARD_PER_ACCOUNT_METRICS": {"PerAccountMetrics"}},
}
RESOURCE_KINDS = {
    "EicGuardStateMachine": "AWS::Serverless::StateMachine",
    "StateTable": "AWS::DynamoDB::Table",
    "ReportsBucket": "AWS::S3::Bucket",
    "AlertsTopic": "AWS::SNS::Topic",
}


@pytest.mark.parametrize("function_id", sorted(EXPECTED_ENVIRONMENT))
def test_environment_variables_map_to_parameters_or_resources(function_id):
    # Given the function's environment (Globals merged with its own)
    env = environment(function_id)

    # When each value is classified as a constant, a parameter, a pseudo parameter or a resource
    mapped = {name: env_sources(value) for name, value in env.items()}

    # Then each variable is fed by the expected parameter or resource, and the resources are the right kind
    assert mapped == EXPECTED_ENVIRONMENT[function_id]
    for name in set().union(*mapped.values()) & set(resources()):
        assert resources()[name]["Type"] == RESOURCE_KINDS[name], name
    assert env["POWERTOOLS_SERVICE_NAME"] == "eic-guard"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "EicGuard"


@pytest.mark.parametrize("function_id", sorted(EXPECTED_ENVIRONMENT))
def test_environment_variables_are_engine_settings(function_id):
    # Given the function's EIC_GUARD_* variables
    env = environment(function_id)

    # When they are mapped to settings field names
    fields = {name.removeprefix(ENV_PREFIX).lower() for name in env if name.startswith(ENV_PREFIX)} - {
        n.removeprefix(ENV_PREFIX).lower() for n in NOT_SETTINGS
    }

    # Then each one is a field the engine's Settings reads
    assert sorted(fields - set(Settings.model_fields)) == []


@pytest.mark.parametrize("function_id", sorted(EXPECTED_ENVIRONMENT))
def test_default_parameters_give_settings_the_engine_accepts(function_id):
    # Given the function's environment resolved with the default parameters
    env = {k: str(v) for k, v in resolve(environment(function_id), parameter_values()).items()}

    # When the engine validates it
    settings = Settings.from_env(env)

    # Then the defaults are the documented ones, the region list defaulting to the stack's region, and the
    # state, report and alert settings name this stack's table, bucket and topic
    assert settings.regions == (PSEUDO["AWS::Region"],)
    assert (settings.ingress_source, settings.stale_prefix_grace_hours) == ("cidr", 24)
    assert (settings.state_table, settings.reports_bucket, settings.alerts_topic_arn) == (
        physical("StateTable"),
        physical("ReportsBucket"),
        physical("AlertsTopic"),
    )
    if function_id in (*FAN_OUT_FUNCTIONS, "OnChangeFunction"):
        assert (settings.tag_key, settings.tag_value, settings.mode) == ("eic-guard:managed", "true", "remediate")
        assert (settings.remediate_public_ip, settings.tag_instances) == (False, True)
        assert (settings.accounts, settings.member_role_name) == ("", "eic-guard-member")
    else:
        assert settings.state_machine_arn == physical("EicGuardStateMachine")


@pytest.mark.parametrize(
    ("accounts", "expected"),
    [("", ""), ("organization", "organization"), ("111111111111,222222222222", "111111111111,222222222222")],
)
def test_accounts_reach_every_fan_out_function_as_a_valid_setting(accounts, expected):
    # Given an Accounts value the parameter accepts
    params = parameter_values(Accounts=accounts)

    for function_id in FAN_OUT_FUNCTIONS:
        # When the function's environment is resolved and validated by the engine
        env = {k: str(v) for k, v in resolve(environment(function_id), params).items()}

        # Then the engine reads the same accounts
        assert Settings.from_env(env).accounts == expected


def test_every_parameter_is_described_constrained_and_used():
    # Given the parameters and every other part of the template
    parameters = template()["Parameters"]
    rest = {k: v for k, v in template().items() if k not in ("Parameters", "Metadata")}

    # When the names used by Ref and Fn::Sub are collected
    used = referenced_names(rest)

    # Then each parameter has a description, a constraint and at least one use
    for name, spec in parameters.items():
        assert spec.get("Description"), name
        assert {"AllowedValues", "AllowedPattern", "MinValue"} & set(spec), name
        assert name in used, f"parameter {name} is never used"


@pytest.mark.parametrize(
    ("parameter", "good", "bad"),
    [
        (
            "Regions",
            ["", "us-east-1", "us-east-1,eu-west-1", "us-gov-west-1"],
            ["us-east-1, eu-west-1", "US-EAST-1", ","],
        ),
        ("TagKey", ["eic-guard:managed", "team/eic", "Owner Team"], ['a"b', "a\\b", "aws:managed", ""]),
        ("TagValue", ["true", "yes please"], ['"}', "a\\u0022", ""]),
        ("AlertEmail", ["", "ops@example.com", "sec-team+eic@corp.example.org"], ["ops", "a b@c.d", "@example.com"]),
        (
            "Accounts",
            ["", "organization", "123456789012", "123456789012,210987654321"],
            ["Organization", "12345678901", "123456789012, 210987654321", "123456789012,", "all"],
        ),
    ],
)
def test_patterns_keep_regions_parseable_and_policy_json_intact(parameter, good, bad):
    # Given the parameter's AllowedPattern (TagKey/TagValue are substituted into JSON policy strings)
    pattern = re.compile(template()["Parameters"][parameter]["AllowedPattern"])

    # When candidate values are matched
    accepted = [v for v in good + bad if pattern.fullmatch(v)]

    # Then the good values pass and the bad ones (spaces, quotes, backslashes, aws: prefix, no address) do not
    assert accepted == good


# ---------------------------------------------------------------- 7. functions


@pytest.mark.parametrize(
    ("function_id", "code", "timeout", "memory"),
    [
        ("PlanFunction", "functions/plan/", 300, 512),
        ("ScanTargetFunction", "functions/scan_target/", 900, 512),
        ("AggregateFunction", "functions/aggregate/", 900, 1769),
    ],
)
def test_each_fan_out_function_is_its_handler_with_the_layer_and_its_own_log_group(function_id, code, timeout, memory):
    # Given the function, its global defaults and the log group it names
    function = resources()[function_id]["Properties"]
    memory_size = function.get("MemorySize", template()["Globals"]["Function"]["MemorySize"])
    log_group = resources()[function["LoggingConfig"]["LogGroup"]["Ref"]]

    # Then it runs app.lambda_handler of its folder from the layer, with its timeout and memory, logging to a
    # group of its own that expires
    assert (function["CodeUri"], function["Handler"], function["Timeout"], memory_size) == (
        code,
        "app.lambda_handler",
        timeout,
        memory,
    )
    assert (ROOT / code / "requirements.txt").is_file()
    assert function["Layers"] == [{"Ref": "EicGuardLayer"}]
    assert log_group["Type"] == "AWS::Logs::LogGroup"
    assert log_group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_no_function_is_scheduled_itself():
    # Given every function's events
    events = {name: fn["Properties"].get("Events", {}) for name, fn in serverless_functions().items()}

    # Then only the refresh (its SNS topic) and the event-driven checks (their queue) have one: the schedule starts
    # the state machine (test_statemachine.py)
    assert {name: [e["Type"] for e in ev.values()] for name, ev in events.items() if ev} == {
        "RefreshFunction": ["SNS"],
        "OnChangeFunction": ["SQS"],
    }
    assert "ScanFunction" not in resources()


def test_outputs_expose_the_deployed_pieces():
    # Given the outputs
    outputs = template()["Outputs"]

    # When their names are listed
    names = set(outputs)

    # Then the state machine, every function and its role (the worker's is the member StackSet's WorkerRoleArns),
    # the layer, the connect policy, the schedule and the data resources are all reachable, each output says what
    # it is, and nothing names the old scan function
    assert {
        "StateMachineArn",
        "PlanFunctionArn",
        "PlanFunctionRoleArn",
        "ScanTargetFunctionArn",
        "ScanTargetFunctionRoleArn",
        "AggregateFunctionArn",
        "AggregateFunctionRoleArn",
        "RefreshFunctionRoleArn",
        "EicGuardLayerArn",
        "ConnectPolicyArn",
        "NightlyScheduleName",
        "RefreshFunctionArn",
        "StateTableName",
        "ReportsBucketName",
        "AlertsTopicArn",
        "DashboardName",
        "RefreshDeadLetterQueueUrl",
        "OnChangeFunctionArn",
        "OnChangeQueueUrl",
        "OnChangeDeadLetterQueueUrl",
    } <= names
    assert all(o.get("Description") for o in outputs.values())
    assert outputs["StateTableName"]["Value"] == {"Ref": "StateTable"}
    assert outputs["ReportsBucketName"]["Value"] == {"Ref": "ReportsBucket"}
    assert outputs["AlertsTopicArn"]["Value"] == {"Ref": "AlertsTopic"}
    assert outputs["RefreshDeadLetterQueueUrl"]["Value"] == {"Ref": "RefreshDeadLetterQueue"}
    assert outputs["DashboardName"]["Value"] == {"Ref": "EicGuardDashboard"}
    assert outputs["StateMachineArn"]["Value"] == {"Ref": "EicGuardStateMachine"}
    assert outputs["ScanTargetFunctionRoleArn"]["Value"] == {"Fn::GetAtt": ["ScanTargetFunctionRole", "Arn"]}
    assert outputs["NightlyScheduleName"]["Value"] == {"Ref": "EicGuardStateMachineNightly"}
    assert not [name for name in outputs if name.startswith("ScanFunction")]


def test_samconfig_passes_every_parameter_with_its_default():
    # Given samconfig.toml's deploy parameter overrides
    config = tomllib.loads((ROOT / "samconfig.toml").read_text(encoding="utf-8"))
    overrides = dict(item.split("=", 1) for item in config["default"]["deploy"]["parameters"]["parameter_overrides"])

    # When their values are unquoted
    values = {name: value.strip('"') for name, value in overrides.items()}

    # Then every template parameter is there, set to the template's default (so --guided starts from them)
    assert values == parameter_values()
