"""Print, for each parameter set of the permission tier, every IAM role the stacks render and the actions it is
granted (inline Allow statements plus the AWS-managed policies attached to it), and how many of them are granted on
"*". Run from the repository root: .venv/bin/python scripts/rendered_role_actions.py

The AWS-managed policies are expanded from their published documents (the AWS Managed Policy reference), because a
managed policy's actions are part of what the role can do.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.template.cfn import as_list, member_values_for, render, render_member
from tests.template.parameter_sets import PARAMETER_SETS, STACK_REGION

LOGS = ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents")
MANAGED = {
    "AWSLambdaBasicExecutionRole": LOGS,
    "AWSXrayWriteOnlyAccess": (
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "xray:GetSamplingRules",
        "xray:GetSamplingTargets",
        "xray:GetSamplingStatisticSummaries",
    ),
    "AWSLambdaSQSQueueExecutionRole": ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", *LOGS),
}


def role_actions(stack, role_id: str) -> tuple[set[str], set[str]]:
    """(every allowed action, the ones allowed on "*")."""
    actions, anywhere = set(), set()
    for statement in stack.role_statements(role_id):
        if statement["Effect"] != "Allow":
            continue
        for action in as_list(statement["Action"]):
            actions.add(action)
            if "*" in as_list(statement["Resource"]):
                anywhere.add(action)
    for arn in stack.managed_policy_arns(role_id):
        name = arn.rsplit("/", 1)[1] if isinstance(arn, str) else str(arn)
        actions.update(MANAGED.get(name, (f"<unknown managed policy {name}>",)))
        anywhere.update(MANAGED.get(name, ()))
    return actions, anywhere


def main() -> None:
    total = total_anywhere = 0
    for parameter_set in PARAMETER_SETS:
        stack = render(parameter_set.params, STACK_REGION)
        member = render_member(member_values_for(parameter_set.params, STACK_REGION))
        roles = [(stack, r) for r, v in stack.resources.items() if v["Type"] == "AWS::IAM::Role"]
        roles += [(member, r) for r, v in member.resources.items() if v["Type"] == "AWS::IAM::Role"]
        print(f"{parameter_set.id}:")
        for rendered, role_id in roles:
            actions, anywhere = role_actions(rendered, role_id)
            where = "member/" if rendered is member else ""
            print(f"  {where}{role_id}: {len(actions)} actions, {len(anywhere)} on '*'")
            total += len(actions)
            total_anywhere += len(anywhere)
    print(f"all parameter sets: {total} role actions, {total_anywhere} of them on '*'")


if __name__ == "__main__":
    main()
