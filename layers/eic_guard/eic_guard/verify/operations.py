"""The running parts: the nightly schedule is enabled, the last runs succeeded, nothing waits in a dead-letter queue."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from .checklist import FAIL, PASS, WARN, Item
from .execution import VERIFY_PREFIX
from .stack import Stack

SCHEDULER_DOCS = "https://docs.aws.amazon.com/scheduler/latest/UserGuide/managing-schedule.html"
EXECUTION_DOCS = "https://docs.aws.amazon.com/step-functions/latest/apireference/API_DescribeExecution.html"
REDRIVE_DOCS = "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-configure-dead-letter-queue-redrive.html"
RECENT = 5  # executions listed
REDEPLOY = "deploy the current template (sam build && sam deploy): its outputs name what verify reads"
# The stack's dead-letter queues (template.yaml outputs) and what waiting in each means.
DEAD_LETTER_QUEUES = (
    (
        "EventDeliveryDeadLetterQueueUrl",
        "a nightly start, the first run or EC2 change events EventBridge could not deliver",
    ),
    ("RefreshDeadLetterQueueUrl", "AmazonIpSpaceChanged notifications the refresh function failed on every retry"),
    ("OnChangeDeadLetterQueueUrl", "EC2 change events the event-driven check failed on every delivery"),
)


def schedule_item(scheduler: Any, stack: Stack) -> Item:
    name = stack.output("NightlyScheduleName")
    if not name:
        return Item("schedule", FAIL, "nightly schedule", "the stack has no NightlyScheduleName output", fix=REDEPLOY)
    try:
        schedule = scheduler.get_schedule(Name=name)
    except ClientError as exc:
        return Item("schedule", FAIL, name, f"cannot read it: {exc}", url=SCHEDULER_DOCS)
    state = schedule.get("State")
    if state != "ENABLED":
        return Item(
            "schedule",
            FAIL,
            name,
            f"{state}: no nightly run checks or fixes drift",
            fix="sam deploy --parameter-overrides ScheduleState=ENABLED",
            url=SCHEDULER_DOCS,
        )
    return Item("schedule", PASS, name, f"ENABLED, {schedule.get('ScheduleExpression', '')}".rstrip(", "))


def executions_item(sfn: Any, state_machine_arn: str | None) -> Item:
    """The last runs of the fan-out (verify's own executions left out): the latest finished one must have succeeded."""
    if not state_machine_arn:
        return Item("executions", FAIL, "state machine", "the stack has no StateMachineArn output", fix=REDEPLOY)
    listed = sfn.list_executions(stateMachineArn=state_machine_arn, maxResults=RECENT * 2)["executions"]
    runs = [e for e in listed if not e["name"].startswith(VERIFY_PREFIX)][:RECENT]
    name = state_machine_arn.rsplit(":", 1)[-1]
    if not runs:
        return Item("executions", WARN, name, "no run yet (the first starts when the stack is created, then nightly)")
    statuses = ", ".join(f"{e['status']} {e['startDate']:%Y-%m-%d %H:%M}" for e in runs)
    finished = next((e for e in runs if e["status"] != "RUNNING"), None)
    if finished is None or finished["status"] == "SUCCEEDED":
        return Item("executions", PASS, name, f"last {len(runs)}: {statuses}")
    return Item(
        "executions",
        FAIL,
        name,
        f"the last finished run ({finished['name']}) is {finished['status']}; last {len(runs)}: {statuses}",
        fix=f"aws stepfunctions describe-execution --execution-arn {finished['executionArn']} (its error and cause), "
        "and the state machine's log group; the next nightly run retries",
        url=EXECUTION_DOCS,
    )


def dead_letter_items(sqs: Any, stack: Stack) -> list[Item]:
    items = []
    for output, meaning in DEAD_LETTER_QUEUES:
        url = stack.output(output)
        if not url:
            continue
        name = url.rsplit("/", 1)[-1]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        depth = int(attributes["Attributes"].get("ApproximateNumberOfMessages", 0))
        if depth == 0:
            items.append(Item("dead-letter-queue", PASS, name, "empty"))
            continue
        items.append(
            Item(
                "dead-letter-queue",
                FAIL,
                name,
                f"{depth} message{'s' if depth != 1 else ''} waiting: {meaning}",
                fix=f"read them (aws sqs receive-message --queue-url {url}), fix the cause, then redrive or purge",
                url=REDRIVE_DOCS,
            )
        )
    return items
