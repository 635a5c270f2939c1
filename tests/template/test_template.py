"""template.yaml: runtimes and layer, IAM least privilege, parameters and environment, schedule.

The template is read with cfn-lint's own loader (so !Ref, !If, !Sub parse) and then *resolved* for a given set
of parameter values: Fn::If follows the template's Conditions, AWS::NoValue disappears, Fn::Sub and Ref become
strings and the JSON policy strings become documents. The IAM tests therefore see what IAM would see.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cfnlint import api as cfnlint_api
from cfnlint.decode import decode_str
from eic_guard.checks import required_actions
from eic_guard.settings import ENV_PREFIX, MANAGED_BY_TAG, Settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"

PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::AccountId": "123456789012",
    "AWS::Region": "us-east-1",
    "AWS::StackName": "eic-guard",
    "AWS::URLSuffix": "amazonaws.com",
}
NO_VALUE = object()  # what Ref AWS::NoValue resolves to: removed from its list or map
FULL_REMEDIATION = {"Mode": "remediate", "RemediatePublicIp": "true"}
READ_PREFIXES = ("ec2:Describe", "ec2:Get")
MANAGED_KEY, MANAGED_VALUE = MANAGED_BY_TAG
SUB_VARIABLE = re.compile(r"\$\{([^}!]+)\}")


# ---------------------------------------------------------------- loading and resolving


@cache
def template() -> dict:
    parsed, problems = decode_str(TEMPLATE_PATH.read_text(encoding="utf-8"))
    assert not problems, problems
    return parsed


def parameter_values(**overrides: str) -> dict[str, str]:
    values = {name: str(spec.get("Default", "")) for name, spec in template()["Parameters"].items()}
    values.update(overrides)
    return values


def condition_holds(name: str, params: dict[str, str]) -> bool:
    return bool(_evaluate_condition(template()["Conditions"][name], params))


def _evaluate_condition(node: Any, params: dict[str, str]) -> Any:
    if isinstance(node, dict) and len(node) == 1:
        ((key, value),) = node.items()
        if key == "Fn::Equals":
            left, right = (resolve(v, params) for v in value)
            return str(left) == str(right)
        if key == "Fn::And":
            return all(_evaluate_condition(v, params) for v in value)
        if key == "Fn::Or":
            return any(_evaluate_condition(v, params) for v in value)
        if key == "Fn::Not":
            return not _evaluate_condition(value[0], params)
        if key == "Condition":
            return condition_holds(value, params)
    return resolve(node, params)


def _substitute(text: str, params: dict[str, str], variables: dict[str, Any]) -> str:
    def value_of(match: re.Match) -> str:
        name = match.group(1)
        if name in variables:
            return str(variables[name])
        if name in params:
            return params[name]
        if name in PSEUDO:
            return PSEUDO[name]
        return match.group(0)  # ${Resource.Attr}: left as written

    return SUB_VARIABLE.sub(value_of, text)


def resolve(node: Any, params: dict[str, str]) -> Any:
    """The value CloudFormation would compute for `node` with these parameter values."""
    if isinstance(node, list):
        return [v for v in (resolve(item, params) for item in node) if v is not NO_VALUE]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        ((key, value),) = node.items()
        if key == "Ref":
            if value == "AWS::NoValue":
                return NO_VALUE
            return params.get(value, PSEUDO.get(value, node))
        if key == "Fn::If":
            name, when_true, when_false = value
            return resolve(when_true if condition_holds(name, params) else when_false, params)
        if key == "Fn::Sub":
            text, variables = (value, {}) if isinstance(value, str) else value
            return _substitute(text, params, {k: resolve(v, params) for k, v in variables.items()})
        if key == "Fn::Split":
            delimiter, source = value
            return str(resolve(source, params)).split(delimiter)
        if key == "Fn::Join":
            delimiter, items = value
            return delimiter.join(str(i) for i in resolve(items, params))
    return {k: v for k, v in ((k, resolve(v, params)) for k, v in node.items()) if v is not NO_VALUE}


def resource_exists(logical_id: str, params: dict[str, str]) -> bool:
    condition = template()["Resources"][logical_id].get("Condition")
    return condition is None or condition_holds(condition, params)


def policy_document(raw: Any, params: dict[str, str]) -> dict:
    document = resolve(raw, params)
    return json.loads(document) if isinstance(document, str) else document


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def scan_function_statements(params: dict[str, str]) -> list[dict]:
    """Every statement of ScanFunction's role: SAM `Policies:` plus the RolePolicies attached to that role."""
    statements: list[dict] = []
    for policy in resolve(template()["Resources"]["ScanFunction"]["Properties"]["Policies"], params):
        statements.extend(as_list(policy["Statement"]))
    for logical_id, resource in template()["Resources"].items():
        if resource["Type"] != "AWS::IAM::RolePolicy" or not resource_exists(logical_id, params):
            continue
        if resource["Properties"]["RoleName"] == {"Ref": "ScanFunctionRole"}:
            statements.extend(as_list(policy_document(resource["Properties"]["PolicyDocument"], params)["Statement"]))
    return statements


def allowed_actions(statements: list[dict]) -> set[str]:
    return {a for s in statements if s["Effect"] == "Allow" for a in as_list(s["Action"])}


def is_write(action: str) -> bool:
    return not action.startswith(READ_PREFIXES)


def string_equals(statement: dict) -> dict:
    return statement.get("Condition", {}).get("StringEquals", {})


def statements_granting(action: str, statements: list[dict]) -> list[dict]:
    return [s for s in statements if s["Effect"] == "Allow" and action in as_list(s["Action"])]


def arn_resource_type(arn: str) -> str:
    return arn.split(":", 5)[5].split("/", 1)[0]


def environment(function_id: str) -> dict:
    merged = dict(template().get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}))
    merged.update(template()["Resources"][function_id]["Properties"].get("Environment", {}).get("Variables", {}))
    return merged


def serverless_functions() -> dict[str, dict]:
    return {k: v for k, v in template()["Resources"].items() if v["Type"] == "AWS::Serverless::Function"}


def referenced_names(node: Any) -> set[str]:
    """Names used by Ref and by ${Name} inside Fn::Sub strings."""
    names: set[str] = set()
    if isinstance(node, list):
        for item in node:
            names |= referenced_names(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                names.add(value)
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                names |= set(SUB_VARIABLE.findall(text))
                names |= referenced_names(value if isinstance(value, str) else value[1])
            else:
                names |= referenced_names(value)
    return names


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
    assert layer["Metadata"] == {"BuildMethod": "python3.13", "BuildArchitecture": "arm64"}


# ---------------------------------------------------------------- 3. the engine's actions are granted


def test_scan_role_grants_every_action_the_engine_needs():
    # Given the actions the engine declares for a remediating scan (Elastic IPs included)
    needed = required_actions(remediate=True)

    # When the scan role is resolved with every remediation switched on
    granted = allowed_actions(scan_function_statements(parameter_values(**FULL_REMEDIATION)))

    # Then each needed action is allowed by some statement
    assert needed, "required_actions() returned nothing"
    assert sorted(needed - granted) == []


def test_report_mode_grants_the_reads_and_no_write():
    # Given report mode (even with the Elastic IP switch on)
    params = parameter_values(Mode="report", RemediatePublicIp="true")

    # When the scan role is resolved
    granted = allowed_actions(scan_function_statements(params))

    # Then every read the engine needs is there and no write action is
    assert sorted(required_actions(remediate=False) - granted) == []
    assert sorted(a for a in granted if is_write(a)) == []


def test_elastic_ip_actions_exist_only_when_remediate_public_ip_is_true():
    # Given the address actions eic-guard may use
    address_actions = {"ec2:AllocateAddress", "ec2:AssociateAddress", "ec2:DisassociateAddress", "ec2:ReleaseAddress"}

    # When the scan role is resolved with RemediatePublicIp false, then true
    without = allowed_actions(scan_function_statements(parameter_values(Mode="remediate", RemediatePublicIp="false")))
    with_eip = allowed_actions(scan_function_statements(parameter_values(**FULL_REMEDIATION)))

    # Then the address actions (and tagging an address) appear only with the switch on
    assert without & address_actions == set()
    assert address_actions <= with_eip


# ---------------------------------------------------------------- 4. least privilege


def test_every_write_statement_is_narrowed_and_no_action_is_a_wildcard():
    # Given every statement of the scan role with every remediation switched on
    statements = scan_function_statements(parameter_values(**FULL_REMEDIATION))

    # When the Allow statements that grant a write action are picked out
    writes = [s for s in statements if s["Effect"] == "Allow" and any(is_write(a) for a in as_list(s["Action"]))]

    # Then each has a condition or only resources narrower than "*", and no action anywhere is a wildcard
    assert writes
    for statement in writes:
        resources = as_list(statement["Resource"])
        assert "Condition" in statement or "*" not in resources, statement["Sid"]
    for statement in statements:
        for action in as_list(statement["Action"]):
            assert "*" not in action, (statement.get("Sid"), action)


def test_security_group_rules_change_only_in_groups_tagged_managed_by_eic_guard():
    # Given every statement of the remediating scan role
    statements = scan_function_statements(parameter_values(**FULL_REMEDIATION))

    for action in ("ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"):
        # When the statements granting the action are picked out
        granting = statements_granting(action, statements)

        # Then each one is limited to security groups carrying ManagedBy=eic-guard
        assert granting, action
        for statement in granting:
            assert {arn_resource_type(r) for r in as_list(statement["Resource"])} == {"security-group"}
            assert string_equals(statement).get(f"aws:ResourceTag/{MANAGED_KEY}") == MANAGED_VALUE


def test_created_security_groups_and_addresses_must_be_tagged_managed_by_eic_guard():
    # Given every statement of the remediating scan role
    statements = scan_function_statements(parameter_values(**FULL_REMEDIATION))

    # When the statements that create a security group or an address, or tag anything, are read
    creating = statements_granting("ec2:CreateSecurityGroup", statements) + statements_granting(
        "ec2:AllocateAddress", statements
    )
    tagging = statements_granting("ec2:CreateTags", statements)

    # Then the created group/address needs the ManagedBy request tag (the VPC side of CreateSecurityGroup
    # has no tag to check), and tags can only be written while creating those two kinds of resource
    for statement in creating:
        types = {arn_resource_type(r) for r in as_list(statement["Resource"])}
        if types == {"vpc"}:
            assert statement["Action"] == "ec2:CreateSecurityGroup"
            continue
        assert types <= {"security-group", "elastic-ip"}, statement["Sid"]
        assert string_equals(statement).get(f"aws:RequestTag/{MANAGED_KEY}") == MANAGED_VALUE, statement["Sid"]
    assert tagging
    for statement in tagging:
        assert {arn_resource_type(r) for r in as_list(statement["Resource"])} <= {"security-group", "elastic-ip"}
        assert set(as_list(string_equals(statement)["ec2:CreateAction"])) <= {"CreateSecurityGroup", "AllocateAddress"}


@pytest.mark.parametrize("tag_key, tag_value", [("eic-guard:managed", "true"), ("team/eic", "on")])
def test_instance_writes_follow_the_opt_in_tag_parameters(tag_key, tag_value):
    # Given a stack whose opt-in tag is TagKey=TagValue
    params = parameter_values(TagKey=tag_key, TagValue=tag_value, **FULL_REMEDIATION)

    # When the statements that name instance resources are picked out
    statements = scan_function_statements(params)
    on_instances = [
        s
        for s in statements
        if s["Effect"] == "Allow"
        and any(arn_resource_type(r) == "instance" for r in as_list(s["Resource"]) if r != "*")
    ]

    # Then IMDS changes are granted only there, and all of them require that exact resource tag
    assert statements_granting("ec2:ModifyInstanceMetadataOptions", statements) == on_instances
    for statement in on_instances:
        assert string_equals(statement) == {f"aws:ResourceTag/{tag_key}": tag_value}


def test_writes_are_denied_outside_the_configured_regions():
    # Given two configured regions
    params = parameter_values(Regions="eu-west-1,us-east-1", Mode="remediate")

    # When the Deny statements of the scan role are read
    denies = [s for s in scan_function_statements(params) if s["Effect"] == "Deny"]

    # Then every write the role allows is denied outside exactly those regions
    writes = {a for a in allowed_actions(scan_function_statements(parameter_values(**FULL_REMEDIATION))) if is_write(a)}
    assert len(denies) == 1
    assert writes <= set(denies[0]["Action"])
    assert denies[0]["Condition"] == {"StringNotEquals": {"aws:RequestedRegion": ["eu-west-1", "us-east-1"]}}


# ---------------------------------------------------------------- 5. ConnectPolicy


def test_connect_policy_pushes_keys_only_as_ec2_user_to_opted_in_instances():
    # Given the ConnectPolicy resolved with the default opt-in tag
    params = parameter_values()
    connect = template()["Resources"]["ConnectPolicy"]
    document = policy_document(connect["Properties"]["PolicyDocument"], params)

    # When its statements are split into the key push and the rest
    push = [s for s in document["Statement"] if "ec2-instance-connect:SendSSHPublicKey" in as_list(s["Action"])]
    others = [a for s in document["Statement"] if s not in push for a in as_list(s["Action"])]

    # Then the key push is limited to instances with the opt-in tag and to ec2-user, the rest only reads,
    # and the policy's ARN is a stack output
    assert connect["Type"] == "AWS::IAM::ManagedPolicy"
    assert len(push) == 1
    assert push[0]["Effect"] == "Allow"
    assert as_list(push[0]["Action"]) == ["ec2-instance-connect:SendSSHPublicKey"]
    assert [arn_resource_type(r) for r in as_list(push[0]["Resource"])] == ["instance"]
    assert string_equals(push[0]) == {"aws:ResourceTag/eic-guard:managed": "true", "ec2:osuser": "ec2-user"}
    assert set(push[0]["Condition"]) == {"StringEquals"}
    assert others == ["ec2:DescribeInstances"]
    assert template()["Outputs"]["ConnectPolicyArn"]["Value"] == {"Ref": "ConnectPolicy"}


# ---------------------------------------------------------------- 6. parameters and environment


def test_environment_variables_come_from_parameters_and_match_the_engine_settings():
    # Given the scan function's environment (Globals merged with its own)
    env = environment("ScanFunction")
    parameters = template()["Parameters"]

    # When each value is classified as a constant, a parameter or a pseudo parameter
    def sources(value: Any) -> set[str]:
        if isinstance(value, str):
            return {"constant"}
        if isinstance(value, dict) and "Fn::If" in value:
            return sources(value["Fn::If"][1]) | sources(value["Fn::If"][2])
        assert isinstance(value, dict) and set(value) == {"Ref"}, value
        assert value["Ref"] in parameters or value["Ref"] in PSEUDO, value
        return {value["Ref"]}

    mapped = {name: sources(value) for name, value in env.items()}

    # Then the EIC_GUARD_* variables are exactly the engine's settings fields, each fed by its parameter
    assert mapped == {
        "POWERTOOLS_SERVICE_NAME": {"constant"},
        "POWERTOOLS_METRICS_NAMESPACE": {"constant"},
        "POWERTOOLS_LOG_LEVEL": {"LogLevel"},
        "EIC_GUARD_TAG_KEY": {"TagKey"},
        "EIC_GUARD_TAG_VALUE": {"TagValue"},
        "EIC_GUARD_REGIONS": {"Regions", "AWS::Region"},
        "EIC_GUARD_MODE": {"Mode"},
        "EIC_GUARD_INGRESS_SOURCE": {"IngressSource"},
        "EIC_GUARD_REMEDIATE_PUBLIC_IP": {"RemediatePublicIp"},
        "EIC_GUARD_STALE_PREFIX_GRACE_HOURS": {"StalePrefixGraceHours"},
    }
    fields = {name.removeprefix(ENV_PREFIX).lower() for name in env if name.startswith(ENV_PREFIX)}
    assert fields <= set(Settings.model_fields)
    assert env["POWERTOOLS_SERVICE_NAME"] == "eic-guard"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "EicGuard"


def test_default_parameters_give_settings_the_engine_accepts():
    # Given the function's environment resolved with the default parameters
    env = {k: str(v) for k, v in resolve(environment("ScanFunction"), parameter_values()).items()}

    # When the engine validates it
    settings = Settings.from_env(env)

    # Then the defaults are the documented ones, the region list defaulting to the stack's region
    assert settings.regions == (PSEUDO["AWS::Region"],)
    assert (settings.tag_key, settings.tag_value, settings.mode) == ("eic-guard:managed", "true", "remediate")
    assert (settings.ingress_source, settings.remediate_public_ip, settings.stale_prefix_grace_hours) == (
        "cidr",
        False,
        24,
    )


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
    ],
)
def test_patterns_keep_regions_parseable_and_policy_json_intact(parameter, good, bad):
    # Given the parameter's AllowedPattern (TagKey/TagValue are substituted into JSON policy strings)
    pattern = re.compile(template()["Parameters"][parameter]["AllowedPattern"])

    # When candidate values are matched
    accepted = [v for v in good + bad if pattern.fullmatch(v)]

    # Then the good values pass and the bad ones (spaces, quotes, backslashes, aws: prefix) do not
    assert accepted == good


# ---------------------------------------------------------------- 7. schedule


def test_nightly_schedule_uses_the_schedule_parameters_and_retries():
    # Given the scan function's events
    events = template()["Resources"]["ScanFunction"]["Properties"]["Events"]

    # When the ScheduleV2 event is read
    schedules = [e["Properties"] for e in events.values() if e["Type"] == "ScheduleV2"]

    # Then there is one, driven by the ScheduleExpression parameter (nightly by default), with a retry policy
    assert len(schedules) == 1
    schedule = schedules[0]
    assert schedule["ScheduleExpression"] == {"Ref": "ScheduleExpression"}
    assert schedule["ScheduleExpressionTimezone"] == {"Ref": "ScheduleExpressionTimezone"}
    assert template()["Parameters"]["ScheduleExpression"]["Default"] == "cron(0 3 * * ? *)"
    assert template()["Parameters"]["ScheduleExpressionTimezone"]["Default"] == "UTC"
    assert schedule["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    assert template()["Resources"]["ScanFunction"]["Properties"]["Timeout"] == 900


def test_outputs_expose_the_deployed_pieces():
    # Given the outputs
    outputs = template()["Outputs"]

    # When their names are listed
    names = set(outputs)

    # Then the function, its role, the layer, the connect policy and the schedule are all reachable
    assert {
        "ScanFunctionArn",
        "ScanFunctionRoleArn",
        "EicGuardLayerArn",
        "ConnectPolicyArn",
        "NightlyScheduleName",
    } <= names
    assert all(o.get("Description") for o in outputs.values())
