"""The CLI's side of the verify job: start `{"job": "verify"}` on the stack's state machine, wait for it (bounded),
and turn Aggregate's output (verify/job.py `summarize`) into checklist items (Security Hub's: security_hub.py)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .checklist import FAIL, PASS, SKIP, Item
from .security_hub import not_enabled as hub_not_enabled
from .security_hub import not_enabled_item as hub_not_enabled_item
from .security_hub import summary_item as security_hub_line

VERIFY_PREFIX = "eic-guard-verify-"  # the names of verify's own executions (not runs of the fan-out)
POLL_SECONDS = 2.0
EC2_ERRORS = "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html"
ROLE_DOCS = "https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_roles.html"
EXECUTION_DOCS = "https://docs.aws.amazon.com/step-functions/latest/apireference/API_DescribeExecution.html"
ROLES = {"ScanTargetFunctionRole": "worker role", "member/MemberRole": "member role"}


@dataclass(frozen=True)
class JobOutcome:
    """How the verify execution ended: its status and Aggregate's output (None unless it succeeded)."""

    execution_arn: str
    status: str  # SUCCEEDED, FAILED, TIMED_OUT, ABORTED, or RUNNING when verify stopped waiting
    output: dict | None
    error: str | None = None


def run_job(
    sfn: Any,
    state_machine_arn: str,
    timeout: float,
    on_tick: Callable[[float], None] = lambda _: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> JobOutcome:
    """Start the verify job and wait for it at most `timeout` seconds (an unfinished one is left running)."""
    name = f"{VERIFY_PREFIX}{uuid.uuid4()}"
    arn = sfn.start_execution(stateMachineArn=state_machine_arn, name=name, input=json.dumps({"job": "verify"}))[
        "executionArn"
    ]
    started = clock()
    while True:
        described = sfn.describe_execution(executionArn=arn)
        status = described["status"]
        if status != "RUNNING":
            output = json.loads(described["output"]) if status == "SUCCEEDED" and described.get("output") else None
            error = " ".join(filter(None, (described.get("error"), described.get("cause")))) or None
            return JobOutcome(arn, status, output, error)
        elapsed = clock() - started
        if elapsed >= timeout:
            return JobOutcome(arn, "RUNNING", None)
        on_tick(elapsed)
        sleep(min(POLL_SECONDS, max(timeout - elapsed, 0.0)))


def job_items(outcome: JobOutcome, timeout: float, security_hub: bool) -> list[Item]:
    """The job's own line, one line per problem the probes found (grouped across targets), Security Hub's line."""
    name = outcome.execution_arn.rsplit(":", 1)[-1]
    subject = name[: len(VERIFY_PREFIX) + 8]  # the run's id starts it; a failing item's fix names the whole ARN
    if outcome.status == "RUNNING":
        return [
            Item(
                "verify-job",
                FAIL,
                subject,
                f"still running after {timeout:.0f} s (left running)",
                fix=f"run verify again with a longer --timeout, or follow it: aws stepfunctions describe-execution "
                f"--execution-arn {outcome.execution_arn}",
                url=EXECUTION_DOCS,
            )
        ]
    if outcome.status != "SUCCEEDED" or not outcome.output:
        return [
            Item(
                "verify-job",
                FAIL,
                subject,
                f"{outcome.status}: {outcome.error or 'no output'}",
                fix=f"aws stepfunctions describe-execution --execution-arn {outcome.execution_arn}, and the functions' "
                "log groups (a worker or Aggregate that failed names its error there)",
                url=EXECUTION_DOCS,
            )
        ]
    out = outcome.output
    probes = out.get("probes", {})
    items = [
        Item(
            "verify-job",
            PASS,
            subject,
            f"{out.get('targets_with_result', 0)} of {out.get('targets', 0)} targets answered; probes: "
            + ", ".join(f"{n} {k}" for k, n in sorted(probes.items())),
        )
    ]
    problems = list(out.get("problems", ()))
    items += [_problem_item(problem) for problem in problems]
    hub = security_hub_line(security_hub, problems)
    return items + ([hub] if hub is not None else [])


def _targets(n: int) -> str:
    return f"{n} target{'s' if n != 1 else ''}"


def _where(problem: dict) -> str:
    examples = "; ".join(problem.get("examples", ()))
    more = problem["targets"] - len(problem.get("examples", ()))
    return f"{examples}{f' (and {more} more targets)' if more > 0 else ''}"


def _problem_item(problem: dict) -> Item:
    action, outcome = problem["action"], problem["outcome"]
    role = ROLES.get(problem.get("role", ""), problem.get("role") or "worker")
    where = _where(problem)
    if outcome == "untested":
        return Item("permission", SKIP, f"{role} {action}", f"not tested: {where}")
    if action == "worker":
        return Item(
            "verify-job",
            FAIL,
            "target worker",
            f"{'an unreadable' if problem['outcome'] == 'unreadable' else 'no'} result from "
            f"{_targets(problem['targets'])}: {where}",
            fix="read the target worker's log group (ScanTargetFunctionLogGroupName output) for its error",
            url=EXECUTION_DOCS,
        )
    if action == "sts:AssumeRole":
        return Item(
            "member-account",
            FAIL,
            "member role",
            f"cannot enter the accounts of {_targets(problem['targets'])}: {where}",
            fix="deploy member/template.yaml in those accounts (a StackSet) with WorkerRoleArns from this stack's "
            "outputs, and check the role name (MemberRoleName)",
            url=ROLE_DOCS,
        )
    if hub_not_enabled(problem):
        return hub_not_enabled_item(problem, _targets(problem["targets"]), where)
    if outcome == "denied":
        fix = (
            "deploy member/template.yaml again in those accounts with the central stack's parameters (Mode, "
            "RemediatePublicIp, TagInstances, SecurityHubFindings); if it is current, an SCP or a permission "
            "boundary denies the action"
            if role == "member role"
            else "deploy the stack again (sam deploy); if it is current, an SCP or a permission boundary denies it"
        )
        return Item(
            "permission",
            FAIL,
            f"{role} {action}",
            f"denied in {_targets(problem['targets'])}: {where}",
            fix=fix,
            url=EC2_ERRORS,
        )
    return Item(
        "permission",
        FAIL,
        f"{role} {action}",
        f"{outcome} in {_targets(problem['targets'])}: {where}",
        fix="read the error: a missing resource or a throttled call is retried by the next run; anything else is a bug "
        "to report",
        url=EC2_ERRORS,
    )
