"""A deployed eic-guard stack in the simulator (moto), for `eic-guard verify` in the demo and the tests.

moto does not deploy SAM templates (no transform, and several of template.yaml's resource types are not modelled),
so the stack is a small CloudFormation template with template.yaml's parameters and the outputs verify reads, and the
resources those outputs name are created with the APIs they come from: the state machine, the nightly schedule, the
dead-letter queues, the alerts topic with a mail subscription, the refresh function's subscription to AWS's
AmazonIpSpaceChanged (the topic itself is made in AWS's account 806199016981 of the simulator).

Two accommodations, both here and nowhere else:
- moto's ModifyInstanceMetadataOptions ignores DryRun (it makes the change); EC2 answers a DryRun request with
  DryRunOperation or UnauthorizedOperation and changes nothing
  (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ModifyInstanceMetadataOptions.html). `hook` answers
  such a request as EC2 does for a caller that may make it.
- moto's state machines do not run the Lambda tasks. `hook` completes every StartExecution at once by running the
  fan-out's steps (fanout/steps.py: Plan, each target's worker, Aggregate) in-process, in the order the definition
  runs them, and records the output on the execution, as the deployed state machine would return it.

`Simulation` adds, on demand, two AWS behaviours moto lacks, to show a broken deployment: IAM refusing a call on a
resource (`refuse`: moto evaluates no IAM policy) and a subscription not confirmed yet (`pending`: moto confirms
every subscription at once).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

IP_SPACE_CHANGED = "arn:aws:sns:us-east-1:806199016981:AmazonIpSpaceChanged"
AWS_ACCOUNT = "806199016981"
# template.yaml's defaults (samconfig.toml's answers): what `sam deploy` would have been given.
PARAMETERS = {
    "Mode": "remediate",
    "TagKey": "eic-guard:managed",
    "TagValue": "true",
    "OwnerTags": "Owner,Team",
    "Regions": "",
    "Accounts": "",
    "OrganizationId": "",
    "MemberRoleName": "eic-guard-member",
    "AllowedImages": "al2023",
    "IngressSource": "cidr",
    "RemediatePublicIp": "false",
    "StalePrefixGraceHours": "24",
    "ScheduleExpression": "cron(0 3 * * ? *)",
    "ScheduleExpressionTimezone": "UTC",
    "ScheduleState": "ENABLED",
    "MaxConcurrency": "40",
    "MaxRounds": "3",
    "TagInstances": "true",
    "AlertEmail": "security@example.com",
    "SecurityHubFindings": "disabled",
}
# The smallest definition moto accepts: the executions are completed by `hook`, not by this definition.
DEFINITION = {"StartAt": "Plan", "States": {"Plan": {"Type": "Pass", "End": True}}}


@dataclass(frozen=True)
class SimulatedStack:
    name: str
    region: str
    outputs: dict[str, str]
    parameters: dict[str, str]

    def function_environment(self) -> dict[str, str]:
        """The functions' EIC_GUARD_* variables, as template.yaml sets them from these parameters and resources."""
        p = self.parameters
        return {
            "EIC_GUARD_STACK_NAME": self.name,
            "EIC_GUARD_REGIONS": p["Regions"] or self.region,
            "EIC_GUARD_MODE": p["Mode"],
            "EIC_GUARD_TAG_KEY": p["TagKey"],
            "EIC_GUARD_TAG_VALUE": p["TagValue"],
            "EIC_GUARD_OWNER_TAGS": p["OwnerTags"],
            "EIC_GUARD_ACCOUNTS": p["Accounts"],
            "EIC_GUARD_MEMBER_ROLE_NAME": p["MemberRoleName"],
            "EIC_GUARD_ALLOWED_IMAGES": p["AllowedImages"],
            "EIC_GUARD_INGRESS_SOURCE": p["IngressSource"],
            "EIC_GUARD_REMEDIATE_PUBLIC_IP": p["RemediatePublicIp"],
            "EIC_GUARD_TAG_INSTANCES": p["TagInstances"],
            "EIC_GUARD_STALE_PREFIX_GRACE_HOURS": p["StalePrefixGraceHours"],
            "EIC_GUARD_SECURITY_HUB_FINDINGS": p["SecurityHubFindings"],
            "EIC_GUARD_STATE_TABLE": self.outputs["StateTableName"],
            "EIC_GUARD_REPORTS_BUCKET": self.outputs["ReportsBucketName"],
            "EIC_GUARD_ALERTS_TOPIC_ARN": self.outputs["AlertsTopicArn"],
        }


def deploy(session: Any, name: str = "eic-guard", **parameters: str) -> SimulatedStack:
    """The stack and what its outputs name, in `session`'s account and region (an active moto mock or server)."""
    region = session.region_name
    values = {**PARAMETERS, **parameters}
    account = session.client("sts").get_caller_identity()["Account"]
    sqs, sns = session.client("sqs"), session.client("sns")
    bucket, table = f"{name}-reports-{account}", f"{name}-state"
    session.client("s3").create_bucket(Bucket=bucket, **_bucket_location(region))
    session.client("dynamodb").create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    queues = {
        output: sqs.create_queue(QueueName=f"{name}-{queue}")["QueueUrl"]
        for output, queue in (
            ("EventDeliveryDeadLetterQueueUrl", "event-delivery-dlq"),
            ("RefreshDeadLetterQueueUrl", "refresh-dlq"),
            ("OnChangeDeadLetterQueueUrl", "on-change-dlq"),
        )
    }
    role = f"arn:aws:iam::{account}:role/{name}-state-machine"
    state_machine = session.client("stepfunctions").create_state_machine(
        name=f"{name}-EicGuardStateMachine", definition=json.dumps(DEFINITION), roleArn=role
    )["stateMachineArn"]
    schedule = f"{name}-nightly-scan"
    session.client("scheduler").create_schedule(
        Name=schedule,
        ScheduleExpression=values["ScheduleExpression"],
        ScheduleExpressionTimezone=values["ScheduleExpressionTimezone"],
        State=values["ScheduleState"],
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": state_machine, "RoleArn": role, "Input": '{"job": "scan"}'},
    )
    topic = sns.create_topic(Name=f"{name}-AlertsTopic")["TopicArn"]
    if values["AlertEmail"]:
        sns.subscribe(TopicArn=topic, Protocol="email", Endpoint=values["AlertEmail"])
    refresh = f"arn:aws:lambda:{region}:{account}:function:{name}-RefreshFunction"
    _ip_space_changed_topic()
    session.client("sns", region_name="us-east-1").subscribe(
        TopicArn=IP_SPACE_CHANGED, Protocol="lambda", Endpoint=refresh
    )
    outputs = {
        "StateMachineArn": state_machine,
        "NightlyScheduleName": schedule,
        "RefreshFunctionArn": refresh,
        "AlertsTopicArn": topic,
        "ReportsBucketName": bucket,
        "StateTableName": table,
        **queues,
    }
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": {key: {"Type": "String"} for key in values},
        # One resource of the real stack that moto's CloudFormation makes (a template needs one).
        "Resources": {"OnChangeQueue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": f"{name}-on-change"}}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    session.client("cloudformation").create_stack(
        StackName=name,
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()],
    )
    return SimulatedStack(name, region, outputs, values)


def _bucket_location(region: str) -> dict:
    return {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}


def _ip_space_changed_topic() -> None:
    """AWS's topic lives in AWS's own account: made there directly (no credentials of that account exist)."""
    from moto.sns.models import sns_backends

    backend = sns_backends[AWS_ACCOUNT]["us-east-1"]
    if IP_SPACE_CHANGED not in backend.topics:
        backend.create_topic("AmazonIpSpaceChanged")


class Simulation:
    """What the simulator adds to moto for verify (the module's docstring), and two AWS behaviours moto lacks, to show
    a failing deployment: IAM refusing a call (moto enforces no IAM), a subscription not confirmed yet (moto confirms
    every subscription at once)."""

    def __init__(self, complete_executions: bool = True) -> None:
        self.refused: dict[str, set[str]] = {}  # operation -> resource ids IAM refuses it on
        self.pending: set[str] = set()  # subscription endpoints not confirmed
        # False where the state machine really runs (moto's Step Functions engine with the handlers routed to it)
        self.complete_executions = complete_executions

    def refuse(self, operation: str, resource_id: str) -> None:
        """IAM answers `operation` on `resource_id` with UnauthorizedOperation (a role without that permission)."""
        self.refused.setdefault(operation, set()).add(resource_id)

    def hook(self, events: Any) -> None:
        """Register on a botocore event emitter (a session's events). The DryRun answer is registered on every call,
        last: a handler registered before it (a test's fault injector refusing the call, say) answers first, as IAM
        is evaluated before DryRun."""
        events.register("before-call", self._before_call)
        if self.complete_executions:
            events.register("after-call.sfn.StartExecution", _complete_execution)
        events.register("after-call.sns.ListSubscriptionsByTopic", self._pending_subscriptions)

    @contextmanager
    def installed(self) -> Iterator[Simulation]:
        """Every boto3 session created meanwhile is hooked (the CLI's and the fan-out's own clients included)."""
        import boto3

        original = boto3.Session.__init__
        simulation = self

        def init(session: Any, *args: Any, **kwargs: Any) -> None:
            original(session, *args, **kwargs)
            simulation.hook(session.events)

        boto3.Session.__init__ = init  # type: ignore[method-assign]
        try:
            yield self
        finally:
            boto3.Session.__init__ = original  # type: ignore[method-assign]

    def _before_call(self, params: dict, model: Any, **_: Any) -> Any:
        body = params.get("body")  # the serialized request: EC2's query parameters
        if not isinstance(body, dict):
            return None
        if self.refused.get(model.name, set()) & {str(v) for v in body.values()}:
            return _error_answer("UnauthorizedOperation", "You are not authorized to perform this operation.", 403)
        if model.name == "ModifyInstanceMetadataOptions" and body.get("DryRun") == "true":
            return _error_answer("DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412)
        return None

    def _pending_subscriptions(self, parsed: dict, **_: Any) -> None:
        for subscription in parsed.get("Subscriptions", ()):
            if subscription.get("Endpoint") in self.pending:
                subscription["SubscriptionArn"] = "PendingConfirmation"


def hook(events: Any) -> None:
    """The accommodations alone (no refusal, nothing pending) on a botocore event emitter."""
    Simulation().hook(events)


class _NoBody:
    def stream(self, **_: Any) -> Any:
        yield b""


def _error_answer(code: str, message: str, status: int) -> tuple[Any, dict]:
    from botocore.awsrequest import AWSResponse

    parsed = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}},
    }
    return AWSResponse("https://simulated.invalid/", status, {}, _NoBody()), parsed


def _complete_execution(parsed: dict, model: Any, context: dict | None = None, **_: Any) -> None:
    arn = parsed.get("executionArn")
    if not arn:
        return
    from moto.stepfunctions.models import stepfunctions_backends

    _, _, _, region, account, _, _machine, _name = arn.split(":")
    backend = stepfunctions_backends[account][region]
    execution = backend.describe_execution(arn)
    try:
        output = run_steps(json.loads(execution.execution_input or "{}"), run_id=arn.rsplit(":", 1)[-1])
    except Exception as exc:  # noqa: BLE001 - the execution fails, as a Lambda task's error fails it
        execution.status, execution.error, execution.cause = "FAILED", type(exc).__name__, str(exc)
    else:
        execution.status, execution.output = "SUCCEEDED", json.dumps(output)
    from datetime import UTC, datetime

    execution.stop_date = datetime.now(UTC)


def run_steps(execution_input: dict, run_id: str) -> dict:
    """Plan, every target's apply-phase worker, Aggregate, in-process, with the functions' settings."""
    from .aws.clients import AwsClients
    from .fanout.steps import aggregate_step, plan_step, worker_step
    from .settings import Settings

    settings = Settings.from_env()
    clients = AwsClients()
    plan = plan_step(execution_input, settings, clients, run_id)
    items = json.loads(clients.client("s3").get_object(Bucket=plan["bucket"], Key=plan["targets_key"])["Body"].read())
    phases = ("apply", "revoke") if plan["revoke"] else ("apply",)
    for phase in phases:
        for item in items:
            request = {key: plan[key] for key in ("run_id", "bucket", "manifest_key")}
            worker_step({**request, "target": item, "phase": phase, "round": 1}, settings, AwsClients())
    return aggregate_step(plan, settings, AwsClients())
