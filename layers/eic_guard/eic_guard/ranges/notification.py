"""The SNS path: an AmazonIpSpaceChanged notification, verified and applied once per synctoken.

Without a state machine (the CLI, a stack run in one process) the refresh applies the file to the configured
regions of the caller's account itself. Deployed, it verifies the file, advances the central state once and starts
the fan-out's `refresh` job, so every account's managed groups follow (adds before revokes across all of them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..budget import Deadline, DeadlineExceeded
from ..events import IpSpaceChange
from ..observability import logger, record_rejection
from ..settings import Settings
from . import ip_ranges
from .catch_up import advance_state
from .ip_ranges import IpRanges
from .refresh import RefreshIncomplete, apply_ranges, require_eic
from .state import DynamoDbStateStore, StateConflict, StateStore


def handle_notification(
    change: IpSpaceChange, clients: Any, settings: Settings, store: StateStore, deadline: Deadline | None = None
) -> dict:
    """The SNS path: skip stale or repeated synctokens, else download the pinned URL, verify and apply.

    A corrupt state item (DynamoDbStateStore.load) reads as no state: this notification's verified file rebuilds it,
    rather than every notification being rejected to the dead-letter queue until a person edits the table.
    """
    state = store.load()
    if state.corrupt is not None:
        logger.error("the stored ip-ranges state is corrupt: rebuilt", extra={"reason": state.corrupt.reason})
        record_rejection("state-corrupt")
    if state.sync_token is not None and not state.is_newer(change.synctoken):
        status = "duplicate" if int(change.synctoken) == int(state.sync_token) else "stale"
        if status == "duplicate" and settings.state_machine_arn:
            # The state was advanced by an invocation whose StartExecution then failed (SNS retries it): start the
            # job now; an execution already started under this synctoken's name is found, never run twice.
            return _start_refresh_job(clients, settings, state.sync_token, state.create_date or "")
        logger.info(
            f"notification {status}: nothing to do",
            extra={"sync_token": change.synctoken, "stored_sync_token": state.sync_token},
        )
        return {"status": status, "sync_token": change.synctoken, "stored_sync_token": state.sync_token}
    # the pinned URL only: change.url is never followed
    ranges = ip_ranges.load(None, expected_md5=change.md5, deadline=deadline)
    if settings.state_machine_arn:
        summary = advance_and_fan_out(clients, settings, store, ranges)
    else:
        result = apply_ranges(clients, settings, store, ranges, replay_same=False)
        failed = [f"{r.region}: {r.error}" for r in result.regions if r.error]
        if failed:
            # Fail the invocation so SNS retries it; the state was not advanced.
            raise RefreshIncomplete("apply-failed", "refresh incomplete: " + "; ".join(failed))
        summary = result.summary()
    if state.corrupt is not None:
        summary["alerts"] = [
            *summary.get("alerts", []),
            f"the stored ip-ranges state was corrupt ({state.corrupt.reason}): rebuilt from this notification's "
            f"verified ip-ranges.json (synctoken {ranges.sync_token}); absence clocks of vanished prefixes restart",
        ]
    return summary


def process_notification(
    change: IpSpaceChange, clients: Any, settings: Settings, context: Any, deadline: Deadline | None = None
) -> dict:
    """handle_notification, once per synctoken (Powertools idempotency on the state table)."""
    store = DynamoDbStateStore(clients.client("dynamodb"), settings.state_table)
    process = idempotent_on_synctoken(
        lambda change: handle_notification(IpSpaceChange.model_validate(change), clients, settings, store, deadline),
        settings.state_table,
        context,
    )
    return process(change=change.model_dump(by_alias=True))


def rejection_reason(exc: Exception) -> str:
    """The RefreshRejected metric's Reason for any exception a notification ends in (every one is counted)."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    if isinstance(exc, StateConflict):
        return "state-conflict"
    if type(exc).__name__ == "IdempotencyAlreadyInProgressError":  # the same synctoken is being processed now
        return "in-progress"
    if isinstance(exc, DeadlineExceeded):
        return "out-of-time"
    if isinstance(exc, (ClientError, BotoCoreError)):
        return "aws-error"
    if isinstance(exc, (ValueError, TypeError, KeyError)):
        return "invalid-state"
    return "internal-error"


def idempotent_on_synctoken(process: Callable[..., dict], table_name: str, context: Any) -> Callable[..., dict]:
    """Wrap `process(change=...)` so one synctoken is processed once, even when delivered twice at once."""
    # Imported here: only the refresh function needs it, the scan's cold start does not pay for it.
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )

    config = IdempotencyConfig(event_key_jmespath="synctoken", expires_after_seconds=24 * 3600)
    config.register_lambda_context(context)
    persistence = DynamoDBPersistenceLayer(table_name=table_name, key_attr="id")
    return idempotent_function(process, data_keyword_argument="change", persistence_store=persistence, config=config)


def advance_and_fan_out(
    clients: Any, settings: Settings, store: StateStore, ranges: IpRanges, now: datetime | None = None
) -> dict:
    """Advance the central state once with the verified file, then start the fan-out's refresh job.

    The execution is named after the synctoken: a second start for the same file (a retried invocation) finds it
    already started rather than running the job twice.
    """
    require_eic(ranges)
    moment = now or datetime.now(UTC)
    state = store.load()
    previous = state.sync_token
    advance_state(state, ranges, settings, moment)
    store.save(state, previous)
    return _start_refresh_job(clients, settings, ranges.sync_token, ranges.create_date)


def _start_refresh_job(clients: Any, settings: Settings, sync_token: str, create_date: str) -> dict:
    """Start the fan-out's refresh job, named after the synctoken (idempotent: a second start finds the first)."""
    name = f"refresh-{sync_token}"
    stepfunctions = clients.client("stepfunctions")
    try:
        started = stepfunctions.start_execution(
            stateMachineArn=settings.state_machine_arn, name=name, input=json.dumps({"job": "refresh"})
        )
        execution = started["executionArn"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
            raise
        execution = f"{settings.state_machine_arn.replace(':stateMachine:', ':execution:')}:{name}"
    logger.info("ip-ranges refresh job started", extra={"execution": execution})
    return {
        "status": "started",
        "sync_token": sync_token,
        "create_date": create_date,
        "execution": execution,
        "alerts": [],
    }
