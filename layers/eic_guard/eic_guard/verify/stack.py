"""The stack: it exists, its last operation completed, and its parameters make sense together."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from .checklist import FAIL, PASS, WARN, Item

CFN_TROUBLESHOOTING = "https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/troubleshooting.html"
SAM_DEPLOY = "https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/sam-cli-command-reference-sam-deploy.html"
# A stack in one of these states has its resources as the template says (an update that rolled back is back to the
# previous template, which was complete).
COMPLETE = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE"})


class StackNotFound(Exception):
    """No stack of that name in the region: nothing else can be checked."""


@dataclass(frozen=True)
class Stack:
    name: str
    status: str
    parameters: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    def output(self, key: str) -> str | None:
        return self.outputs.get(key) or None


def read_stack(cloudformation: Any, name: str) -> Stack:
    try:
        raw = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    except ClientError as exc:
        if "does not exist" in str(exc):
            raise StackNotFound(name) from None
        raise
    return Stack(
        name=raw["StackName"],
        status=raw["StackStatus"],
        parameters={
            p["ParameterKey"]: p.get("ResolvedValue", p.get("ParameterValue", "")) for p in raw.get("Parameters", ())
        },
        outputs={o["OutputKey"]: o.get("OutputValue", "") for o in raw.get("Outputs", ())},
    )


def status_item(stack: Stack) -> Item:
    if stack.status in COMPLETE:
        return Item("stack", PASS, stack.name, stack.status)
    in_progress = stack.status.endswith("_IN_PROGRESS")
    return Item(
        "stack",
        FAIL,
        stack.name,
        f"{stack.status}: {'an operation is still running' if in_progress else 'the last operation did not complete'}",
        fix="wait for the operation to end, then run verify again"
        if in_progress
        else "read the stack's events (aws cloudformation describe-stack-events), fix the cause and deploy again",
        url=CFN_TROUBLESHOOTING,
    )


def parameter_items(stack: Stack) -> list[Item]:
    """What template.yaml's parameters cannot say together (its AllowedPattern holds each one alone)."""
    p = stack.parameters
    items = []
    if p.get("Accounts") == "organization" and not p.get("OrganizationId"):
        items.append(
            Item(
                "parameters",
                FAIL,
                "OrganizationId",
                "Accounts=organization but OrganizationId is empty: the member accounts' event bus admits no "
                "account of the organization, so their EC2 changes are never checked between nights",
                fix="sam deploy --parameter-overrides OrganizationId=o-... (the same value as member/template.yaml's)",
                url=SAM_DEPLOY,
            )
        )
    if p.get("OrganizationId") and p.get("Accounts") != "organization":
        items.append(
            Item(
                "parameters",
                WARN,
                "OrganizationId",
                f"OrganizationId={p['OrganizationId']} is used only with Accounts=organization "
                f"(Accounts={p.get('Accounts') or 'this account'})",
                fix="leave OrganizationId empty, or set Accounts=organization",
                url=SAM_DEPLOY,
            )
        )
    if p.get("Mode") == "report" and p.get("RemediatePublicIp") == "true":
        items.append(
            Item(
                "parameters",
                WARN,
                "RemediatePublicIp",
                "RemediatePublicIp=true has no effect in Mode=report (nothing is allocated)",
                fix="set Mode=remediate when you want the Elastic IPs, or RemediatePublicIp=false",
                url=SAM_DEPLOY,
            )
        )
    if not items:
        items.append(Item("parameters", PASS, stack.name, f"{len(p)} parameters, coherent"))
    return items
