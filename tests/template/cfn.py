"""Read template.yaml and render it for given parameter values with AWS's own tooling, the way a deploy would.

- cfn-lint's loader parses the YAML (short-form intrinsics such as !Ref, !If, !Sub).
- SAM's translator (`samtranslator`, the library behind `sam deploy`) turns the AWS::Serverless::* resources into
  CloudFormation, so the functions' execution roles (PlanFunctionRole, ScanTargetFunctionRole...), the state
  machine's and the schedule's roles, their inline policies and managed policy ARNs, and the functions' merged
  Globals are exactly what SAM produces (`render`). member/template.yaml is plain CloudFormation: `render_member`
  resolves it the same way, without the translator.
- cfn-lint's condition model (`cfnlint.conditions`) decides every Condition for the parameter values.
- samtranslator's `IntrinsicsResolver` walks the result and resolves Ref and Fn::Sub with its own actions.

What neither library computes down to a final value is the small remainder below (`_GetAtt`, `_If`, `_Split`,
`_Select`, `_Join`, `_finish`, and `_evaluate_conditions` for member/template.yaml, whose conditions compare computed
values): Fn::GetAtt of a resource (CloudFormation knows it only after the deploy: here a fixed fake,
see `physical`), Fn::If (picks the branch cfn-lint's condition model chose), Fn::Split/Fn::Join of resolved
strings, removing AWS::NoValue, and substituting the variables map of `!Sub [text, {..}]` (samtranslator resolves
the text's own references and leaves the map to CloudFormation). JSON policy strings become documents.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import boto3
from cfnlint.conditions._condition import ConditionNamed
from cfnlint.conditions._utils import get_hash
from cfnlint.decode import decode_str
from samtranslator.intrinsics.actions import Action, RefAction, SubAction
from samtranslator.intrinsics.resolver import IntrinsicsResolver
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"

PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::AccountId": "123456789012",
    "AWS::Region": "eu-west-3",  # not us-east-1: the AmazonIpSpaceChanged subscription must say its own region
    "AWS::StackName": "eic-guard",
    "AWS::StackId": "arn:aws:cloudformation:eu-west-3:123456789012:stack/eic-guard/"
    "5b0e7a30-8c41-11f1-9b2a-0a1b2c3d4e5f",
    "AWS::URLSuffix": "amazonaws.com",
}
NO_VALUE = object()  # what Ref AWS::NoValue resolves to: removed from its list or map
SUB_VARIABLE = re.compile(r"\$\{([^}!]+)\}")
READ_PREFIXES = ("ec2:Describe", "ec2:Get", "iam:ListAccountAliases")
# The attributes `physical` fakes (the ones the template reads with Fn::GetAtt or ${Resource.Attribute}).
ATTRIBUTES = ("Arn", "QueueName", "Name")
STATE_MACHINE_KINDS = ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine")


@cache
def template() -> dict:
    parsed, problems = decode_str(TEMPLATE_PATH.read_text(encoding="utf-8"))
    assert not problems, problems
    return parsed


def resources() -> dict[str, dict]:
    return template()["Resources"]


def parameter_values(**overrides: str) -> dict[str, str]:
    values = {name: str(spec.get("Default", "")) for name, spec in template()["Parameters"].items()}
    values.update(overrides)
    return values


# ---------------------------------------------------------------- fake physical ids


def physical(
    logical_id: str, attribute: str | None = None, pseudo: dict[str, str] | None = None, kind: str = ""
) -> str:
    """A stable fake of what Ref (attribute None) or Fn::GetAtt returns for one of the stack's resources."""
    pseudo = pseudo or PSEUDO
    kind = kind or resources()[logical_id]["Type"]
    region, account, partition = pseudo["AWS::Region"], pseudo["AWS::AccountId"], pseudo["AWS::Partition"]
    name = f"{pseudo['AWS::StackName']}-{logical_id}-1A2B3C4D"
    state_machine = f"arn:{partition}:states:{region}:{account}:stateMachine:{name}"
    if attribute is None:
        return {
            "AWS::Serverless::StateMachine": state_machine,
            "AWS::StepFunctions::StateMachine": state_machine,
            "AWS::SNS::Topic": f"arn:{partition}:sns:{region}:{account}:{name}",
            "AWS::SQS::Queue": f"https://sqs.{region}.amazonaws.com/{account}/{name}",
            "AWS::S3::Bucket": name.lower(),
            "AWS::Logs::LogGroup": f"/aws/{name}",
        }.get(kind, name)
    if attribute == "Arn":
        return {
            "AWS::DynamoDB::Table": f"arn:{partition}:dynamodb:{region}:{account}:table/{name}",
            "AWS::S3::Bucket": f"arn:{partition}:s3:::{name.lower()}",
            "AWS::SQS::Queue": f"arn:{partition}:sqs:{region}:{account}:{name}",
            "AWS::SNS::Topic": f"arn:{partition}:sns:{region}:{account}:{name}",
            "AWS::KMS::Key": f"arn:{partition}:kms:{region}:{account}:key/{name}",
            "AWS::Serverless::Function": f"arn:{partition}:lambda:{region}:{account}:function:{name}",
            "AWS::Lambda::Function": f"arn:{partition}:lambda:{region}:{account}:function:{name}",
            "AWS::IAM::Role": f"arn:{partition}:iam::{account}:role/{name}",
            "AWS::Serverless::StateMachine": state_machine,
            "AWS::StepFunctions::StateMachine": state_machine,
            "AWS::Logs::LogGroup": f"arn:{partition}:logs:{region}:{account}:log-group:/aws/{name}:*",
            "AWS::Events::Rule": f"arn:{partition}:events:{region}:{account}:rule/{name}",
            "AWS::Events::EventBus": f"arn:{partition}:events:{region}:{account}:event-bus/{name}",
        }[kind]
    if attribute == "QueueName" and kind == "AWS::SQS::Queue":
        return name
    if attribute == "Name" and kind in STATE_MACHINE_KINDS:
        return name
    raise KeyError(f"{logical_id}.{attribute}")


def _reference_values(params: dict[str, str], pseudo: dict[str, str], stack_resources: dict[str, dict]) -> dict:
    """What Ref and ${...} may name: parameters, pseudo parameters, resources and their faked attributes."""
    values: dict[str, Any] = {**params, **pseudo, "AWS::NoValue": NO_VALUE}
    for logical_id, resource in stack_resources.items():
        values[logical_id] = physical(logical_id, None, pseudo, resource["Type"])
        for attribute in ATTRIBUTES:
            try:
                values[f"{logical_id}.{attribute}"] = physical(logical_id, attribute, pseudo, resource["Type"])
            except KeyError:
                continue
    return values


# ---------------------------------------------------------------- conditions (cfn-lint)


def _conditions_for(params: dict[str, str], conditions: dict) -> dict[str, bool]:
    """Every named Condition decided by cfn-lint's model for these parameter values."""
    scenario = {get_hash({"Ref": name}): str(value) for name, value in params.items()}
    return {name: ConditionNamed(name, conditions).test(scenario) for name in conditions}


def condition_holds(name: str, params: dict[str, str]) -> bool:
    return _conditions_for({**params, **PSEUDO}, template()["Conditions"])[name]


# ---------------------------------------------------------------- intrinsic functions (samtranslator + remainder)


class _GetAtt(Action):
    intrinsic_name = "Fn::GetAtt"

    def resolve_parameter_refs(self, input_dict: Any, parameters: dict[str, Any]) -> Any:
        value = input_dict[self.intrinsic_name]
        logical_id, attribute = value.split(".", 1) if isinstance(value, str) else value
        return parameters.get(f"{logical_id}.{attribute}", input_dict)


class _If(Action):
    intrinsic_name = "Fn::If"

    def __init__(self, conditions: dict[str, bool], resolve_branch: Callable[[Any], Any]):
        self.conditions = conditions
        self.resolve_branch = resolve_branch

    def resolve_parameter_refs(self, input_dict: Any, parameters: dict[str, Any]) -> Any:
        name, when_true, when_false = input_dict[self.intrinsic_name]
        return self.resolve_branch(when_true if self.conditions[name] else when_false)


class _Split(Action):
    intrinsic_name = "Fn::Split"

    def __init__(self, resolve_value: Callable[[Any], Any]):
        self.resolve_value = resolve_value

    def resolve_parameter_refs(self, input_dict: Any, parameters: dict[str, Any]) -> Any:
        delimiter, source = input_dict[self.intrinsic_name]
        source = _finish(self.resolve_value(source))
        return source.split(delimiter) if isinstance(source, str) else input_dict


class _Select(Action):
    intrinsic_name = "Fn::Select"

    def __init__(self, resolve_value: Callable[[Any], Any]):
        self.resolve_value = resolve_value

    def resolve_parameter_refs(self, input_dict: Any, parameters: dict[str, Any]) -> Any:
        index, items = input_dict[self.intrinsic_name]
        items = _finish(self.resolve_value(items))
        return items[int(index)] if isinstance(items, list) else input_dict


class _Join(Action):
    intrinsic_name = "Fn::Join"

    def __init__(self, resolve_value: Callable[[Any], Any]):
        self.resolve_value = resolve_value

    def resolve_parameter_refs(self, input_dict: Any, parameters: dict[str, Any]) -> Any:
        delimiter, items = input_dict[self.intrinsic_name]
        items = _finish(self.resolve_value(items))
        return delimiter.join(items) if all(isinstance(i, str) for i in items) else input_dict


def _finish(node: Any) -> Any:
    """Drop AWS::NoValue, and turn a fully substituted Fn::Sub into its string."""
    if isinstance(node, list):
        return [v for v in (_finish(item) for item in node) if v is not NO_VALUE]
    if not isinstance(node, dict):
        return node
    node = {k: v for k, v in ((k, _finish(v)) for k, v in node.items()) if v is not NO_VALUE}
    if set(node) != {"Fn::Sub"}:
        return node
    value = node["Fn::Sub"]
    if isinstance(value, list):
        text, variables = value
        if not all(isinstance(v, str) for v in variables.values()):
            return node
        value = SubAction().resolve_parameter_refs({"Fn::Sub": text}, variables)["Fn::Sub"]
    return value if isinstance(value, str) and "${" not in value else {"Fn::Sub": value}


class _Resolver:
    """samtranslator's IntrinsicsResolver with Ref and Fn::Sub (its own) plus the remainder actions above."""

    def __init__(self, values: dict[str, Any], conditions: dict[str, bool]):
        actions = {
            "Ref": RefAction(),
            "Fn::Sub": SubAction(),
            "Fn::GetAtt": _GetAtt(),
            "Fn::If": _If(conditions, self._resolve),
            "Fn::Split": _Split(self._resolve),
            "Fn::Select": _Select(self._resolve),
            "Fn::Join": _Join(self._resolve),
        }
        self.resolver = IntrinsicsResolver(values, actions)

    def _resolve(self, node: Any) -> Any:
        return self.resolver.resolve_parameter_refs(node)

    def __call__(self, node: Any) -> Any:
        return _finish(self._resolve(copy.deepcopy(node)))


def resolve(node: Any, params: dict[str, str]) -> Any:
    """The value CloudFormation would compute for `node` of template.yaml with these parameter values."""
    values = _reference_values(params, PSEUDO, resources())
    return _Resolver(values, _conditions_for({**params, **PSEUDO}, template()["Conditions"]))(node)


def resource_exists(logical_id: str, params: dict[str, str]) -> bool:
    condition = resources()[logical_id].get("Condition")
    return condition is None or condition_holds(condition, params)


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


# ---------------------------------------------------------------- the stack as SAM renders it


@cache
def _sam_input() -> str:
    """template.yaml as `sam package` hands it over: local code folders replaced by S3 locations."""
    document = json.loads(json.dumps(template()))
    for resource in document["Resources"].values():
        for key in ("CodeUri", "ContentUri", "DefinitionUri"):
            if key in resource.get("Properties", {}):
                resource["Properties"][key] = "s3://eic-guard-artifacts/eic-guard.zip"
    return json.dumps(document)


@dataclass(frozen=True)
class RenderedStack:
    """The CloudFormation template SAM generates, with every intrinsic resolved for one parameter set."""

    params: dict[str, str]
    pseudo: dict[str, str]
    resources: dict[str, dict]  # only the resources whose Condition holds

    def physical(self, logical_id: str, attribute: str | None = None) -> str:
        return physical(logical_id, attribute, self.pseudo, self.resources[logical_id]["Type"])

    def role_policies(self, role_id: str) -> list[tuple[str, dict]]:
        """(policy name, document) of every inline policy of a role: its own Policies and the RolePolicies."""
        properties = self.resources[role_id]["Properties"]
        policies = [(p["PolicyName"], _document(p["PolicyDocument"])) for p in properties.get("Policies", [])]
        role_name = self.physical(role_id)
        for resource in self.resources.values():
            if resource["Type"] == "AWS::IAM::RolePolicy" and resource["Properties"]["RoleName"] == role_name:
                policies.append(
                    (resource["Properties"]["PolicyName"], _document(resource["Properties"]["PolicyDocument"]))
                )
        return policies

    def role_statements(self, role_id: str) -> list[dict]:
        return [s for _, document in self.role_policies(role_id) for s in as_list(document["Statement"])]

    def managed_policy_arns(self, role_id: str) -> list[str]:
        return self.resources[role_id]["Properties"].get("ManagedPolicyArns", [])

    def managed_policy_document(self, logical_id: str) -> dict:
        return _document(self.resources[logical_id]["Properties"]["PolicyDocument"])

    def environment(self, function_id: str) -> dict[str, str]:
        """The function's environment variables as Lambda receives them (Globals merged by SAM)."""
        variables = self.resources[function_id]["Properties"].get("Environment", {}).get("Variables", {})
        return {name: str(value) for name, value in variables.items()}


def _document(raw: Any) -> dict:
    return json.loads(raw) if isinstance(raw, str) else raw


def render(params: dict[str, str], region: str | None = None) -> RenderedStack:
    """template.yaml through SAM's translator, then resolved for these parameter values (and the stack region)."""
    return _render(tuple(sorted(params.items())), region or PSEUDO["AWS::Region"])


@cache
def _render(params_items: tuple[tuple[str, str], ...], region: str) -> RenderedStack:
    params = dict(params_items)
    pseudo = {**PSEUDO, "AWS::Region": region}
    translator = Translator(None, Parser(), boto_session=boto3.Session(region_name=region))
    transformed = translator.translate(
        json.loads(_sam_input()),
        parameter_values={**params, **pseudo},
        get_managed_policy_map=lambda: {},  # the template names no managed policy by name
    )
    conditions = _conditions_for({**params, **pseudo}, transformed.get("Conditions", {}))
    kept = {k: v for k, v in transformed["Resources"].items() if conditions.get(v.get("Condition"), True)}
    resolver = _Resolver(_reference_values(params, pseudo, kept), conditions)
    return RenderedStack(params, pseudo, {k: resolver(v) for k, v in kept.items()})


# ---------------------------------------------------------------- IAM


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def policy_document(raw: Any, params: dict[str, str]) -> dict:
    return _document(resolve(raw, params))


def role_statements(function_id: str, params: dict[str, str]) -> list[dict]:
    """Every statement of a function's role (template.yaml declares each role: its Policies plus the RolePolicies
    attached to it)."""
    return render(params).role_statements(f"{function_id}Role")


def allowed_actions(statements: list[dict]) -> set[str]:
    return {a for s in statements if s["Effect"] == "Allow" for a in as_list(s["Action"])}


def is_write(action: str) -> bool:
    return not action.startswith(READ_PREFIXES)


def is_ec2_write(action: str) -> bool:
    return action.startswith("ec2:") and is_write(action)


def string_equals(statement: dict) -> dict:
    return statement.get("Condition", {}).get("StringEquals", {})


def statements_granting(action: str, statements: list[dict]) -> list[dict]:
    return [s for s in statements if s["Effect"] == "Allow" and action in as_list(s["Action"])]


def arn_resource_type(arn: str) -> str:
    return arn.split(":", 5)[5].split("/", 1)[0]


def names_resource_type(statement: dict, resource_type: str) -> bool:
    return any(r != "*" and arn_resource_type(r) == resource_type for r in as_list(statement["Resource"]))


# ---------------------------------------------------------------- functions


def environment(function_id: str) -> dict:
    merged = dict(template().get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}))
    merged.update(resources()[function_id]["Properties"].get("Environment", {}).get("Variables", {}))
    return merged


def serverless_functions() -> dict[str, dict]:
    return {k: v for k, v in resources().items() if v["Type"] == "AWS::Serverless::Function"}


# ---------------------------------------------------------------- member/template.yaml (plain CloudFormation)

MEMBER_TEMPLATE_PATH = ROOT / "member" / "template.yaml"
# What a StackSet operator passes for the member parameters without a default (the tests' stand-ins).
MEMBER_REQUIRED = {
    "WorkerRoleArns": f"arn:aws:iam::{PSEUDO['AWS::AccountId']}:role/eic-guard-ScanTargetFunctionRole-1A2B3C4D",
    "Regions": PSEUDO["AWS::Region"],
    "OrganizationId": "o-exampleorg1",
}


@cache
def member_template() -> dict:
    parsed, problems = decode_str(MEMBER_TEMPLATE_PATH.read_text(encoding="utf-8"))
    assert not problems, problems
    return parsed


def member_parameter_values(**overrides: str) -> dict[str, str]:
    values = {name: str(spec["Default"]) for name, spec in member_template()["Parameters"].items() if "Default" in spec}
    values.update(MEMBER_REQUIRED)
    values.update(overrides)
    return values


# The central stack's parameters the member StackSet is given the same values of (the README's commands).
SHARED_WITH_MEMBER = (
    "MemberRoleName",
    "TagKey",
    "TagValue",
    "Mode",
    "RemediatePublicIp",
    "TagInstances",
    "SecurityHubFindings",
    "CreateEndpoints",
)


def member_values_for(central: dict[str, str], stack_region: str, **overrides: str) -> dict[str, str]:
    """The member stack's parameter values for a central stack with parameters `central` in `stack_region`."""
    shared = {name: central[name] for name in SHARED_WITH_MEMBER}
    return member_parameter_values(**shared, Regions=central["Regions"] or stack_region, **overrides)


def render_member(params: dict[str, str], account_id: str | None = None, region: str | None = None) -> RenderedStack:
    """member/template.yaml resolved for these parameter values, deployed in `account_id` (default PSEUDO's) and
    `region` (default the first of its Regions, where it creates its roles)."""
    region = region or params["Regions"].split(",")[0]
    return _render_member(tuple(sorted(params.items())), account_id or PSEUDO["AWS::AccountId"], region)


@cache
def _render_member(params_items: tuple[tuple[str, str], ...], account_id: str, region: str) -> RenderedStack:
    params = dict(params_items)
    pseudo = {**PSEUDO, "AWS::AccountId": account_id, "AWS::Region": region}
    document = member_template()
    values: dict[str, Any] = dict(params)
    for name, spec in document["Parameters"].items():
        if spec["Type"] == "CommaDelimitedList":
            values[name] = [part.strip() for part in params[name].split(",")]
    references = _reference_values(values, pseudo, document["Resources"])
    conditions = _evaluate_conditions(document.get("Conditions", {}), _Resolver(references, {}))
    kept = {k: v for k, v in document["Resources"].items() if conditions.get(v.get("Condition"), True)}
    resolver = _Resolver(_reference_values(values, pseudo, kept), conditions)
    return RenderedStack(params, pseudo, {k: resolver(v) for k, v in kept.items()})


def _evaluate_conditions(conditions: dict, resolve: Callable[[Any], Any]) -> dict[str, bool]:
    """Every named Condition of a plain template: Fn::Equals of resolved values (Ref, Fn::Select, Fn::Split...),
    Fn::Not, Fn::And, Fn::Or and Condition references."""
    decided: dict[str, bool] = {}

    def holds(node: Any) -> bool:
        [(function, argument)] = node.items()
        if function == "Condition":
            return decide(argument)
        if function == "Fn::Equals":
            left, right = (resolve(a) for a in argument)
            return str(left) == str(right)
        if function == "Fn::Not":
            return not holds(argument[0])
        if function == "Fn::And":
            return all(holds(a) for a in argument)
        if function == "Fn::Or":
            return any(holds(a) for a in argument)
        raise ValueError(f"condition function {function} is not modelled")

    def decide(name: str) -> bool:
        if name not in decided:
            decided[name] = holds(conditions[name])
        return decided[name]

    for name in conditions:
        decide(name)
    return decided
