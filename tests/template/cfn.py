"""Read template.yaml and resolve it for given parameter values, the way CloudFormation would.

The template is read with cfn-lint's own loader (so !Ref, !If, !Sub parse) and then *resolved*: Fn::If follows the
template's Conditions, AWS::NoValue disappears, Fn::Sub, Ref and Fn::GetAtt become strings (resources get fixed
fake physical ids, see `physical`), and the JSON policy strings become documents. The tests therefore see what
IAM, CloudWatch and the functions would see.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from cfnlint.decode import decode_str

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"

PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::AccountId": "123456789012",
    "AWS::Region": "eu-west-3",  # not us-east-1: the AmazonIpSpaceChanged subscription must say its own region
    "AWS::StackName": "eic-guard",
    "AWS::URLSuffix": "amazonaws.com",
}
NO_VALUE = object()  # what Ref AWS::NoValue resolves to: removed from its list or map
SUB_VARIABLE = re.compile(r"\$\{([^}!]+)\}")
READ_PREFIXES = ("ec2:Describe", "ec2:Get")


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


def physical(logical_id: str, attribute: str | None = None) -> str:
    """A stable fake of what Ref (attribute None) or Fn::GetAtt returns for one of the template's resources."""
    kind = resources()[logical_id]["Type"]
    region, account = PSEUDO["AWS::Region"], PSEUDO["AWS::AccountId"]
    name = f"{PSEUDO['AWS::StackName']}-{logical_id}-1A2B3C4D"
    if attribute is None:
        return {
            "AWS::SNS::Topic": f"arn:aws:sns:{region}:{account}:{name}",
            "AWS::SQS::Queue": f"https://sqs.{region}.amazonaws.com/{account}/{name}",
            "AWS::S3::Bucket": name.lower(),
        }.get(kind, name)
    if attribute == "Arn":
        return {
            "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{region}:{account}:table/{name}",
            "AWS::S3::Bucket": f"arn:aws:s3:::{name.lower()}",
            "AWS::SQS::Queue": f"arn:aws:sqs:{region}:{account}:{name}",
            "AWS::SNS::Topic": f"arn:aws:sns:{region}:{account}:{name}",
            "AWS::KMS::Key": f"arn:aws:kms:{region}:{account}:key/{name}",
            "AWS::Serverless::Function": f"arn:aws:lambda:{region}:{account}:function:{name}",
        }[kind]
    if attribute == "QueueName" and kind == "AWS::SQS::Queue":
        return name
    raise KeyError(f"{logical_id}.{attribute}")


# ---------------------------------------------------------------- conditions and intrinsic functions


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
        logical_id, _, attribute = name.partition(".")
        if logical_id in resources():
            return physical(logical_id, attribute or None)
        return match.group(0)  # a SAM-generated resource (ScanFunctionRole...): left as written

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
            if value in params:
                return params[value]
            if value in PSEUDO:
                return PSEUDO[value]
            return physical(value) if value in resources() else node
        if key == "Fn::GetAtt":
            logical_id, attribute = value.split(".", 1) if isinstance(value, str) else value
            return physical(logical_id, attribute) if logical_id in resources() else node
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


# ---------------------------------------------------------------- IAM


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def policy_document(raw: Any, params: dict[str, str]) -> dict:
    document = resolve(raw, params)
    return json.loads(document) if isinstance(document, str) else document


def role_statements(function_id: str, params: dict[str, str]) -> list[dict]:
    """Every statement of a function's role: SAM `Policies:` plus the RolePolicies attached to that role.

    SAM's own additions (the basic execution and X-Ray managed policies, sqs:SendMessage for an OnFailure
    destination) are not part of the template and so not seen here.
    """
    statements: list[dict] = []
    for policy in resolve(resources()[function_id]["Properties"].get("Policies", []), params):
        statements.extend(as_list(policy["Statement"]))
    for logical_id, resource in resources().items():
        if resource["Type"] != "AWS::IAM::RolePolicy" or not resource_exists(logical_id, params):
            continue
        if resource["Properties"]["RoleName"] == {"Ref": f"{function_id}Role"}:
            statements.extend(as_list(policy_document(resource["Properties"]["PolicyDocument"], params)["Statement"]))
    return statements


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
