"""`eic-guard verify` (docs/architecture.md §16): a read-only health check of a deployed stack, as a checklist.

One module per concern: `stack` (status, parameters), `subscriptions` (AmazonIpSpaceChanged, alerts), `operations`
(schedule, recent executions, dead-letter queues), `security_hub` (enabled where findings go), `execution` (the
CLI's side of the verify job), `job` and `probes` (the job inside the state machine), `checklist` (the items and
their rendering).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .checklist import SKIP, Checklist, Item
from .stack import StackNotFound

STEPS = ("stack", "subscriptions", "schedule", "executions", "dead-letter queues", "verify job")


def verify_stack(
    session: Any,
    stack_name: str,
    *,
    timeout: float,
    with_job: bool = True,
    on_step: Callable[[str], None] = lambda _: None,
    on_tick: Callable[[float], None] = lambda _: None,
) -> Checklist:
    """Every check, in STEPS order; `on_step(name)` as each begins. Reads only (the job makes DryRun calls)."""
    from . import execution, operations, stack, subscriptions

    region = session.region_name
    on_step("stack")
    found = stack.read_stack(session.client("cloudformation"), stack_name)  # StackNotFound: the caller's usage error
    items: list[Item] = [stack.status_item(found), *stack.parameter_items(found)]
    on_step("subscriptions")
    us_east_1 = session.client("sns", region_name=subscriptions.IP_SPACE_REGION)
    items.append(subscriptions.ip_space_item(us_east_1, found.output("RefreshFunctionArn")))
    items += subscriptions.alerts_items(session.client("sns"), found.output("AlertsTopicArn"))
    on_step("schedule")
    items.append(operations.schedule_item(session.client("scheduler"), found))
    on_step("executions")
    sfn = session.client("stepfunctions")
    items.append(operations.executions_item(sfn, found.output("StateMachineArn")))
    on_step("dead-letter queues")
    items += operations.dead_letter_items(session.client("sqs"), found)
    security_hub = found.parameters.get("SecurityHubFindings") == "enabled"
    on_step("verify job")
    if not with_job:
        items.append(Item("verify-job", SKIP, "state machine", "--no-job: the roles' permissions were not probed"))
    elif found.output("StateMachineArn"):
        outcome = execution.run_job(sfn, found.output("StateMachineArn"), timeout, on_tick=on_tick)
        items += execution.job_items(outcome, timeout, security_hub)
    return Checklist(found.name, region, tuple(items))


__all__ = ["STEPS", "Checklist", "StackNotFound", "verify_stack"]
