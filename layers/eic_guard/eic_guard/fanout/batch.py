"""The target worker over a batch of targets: the Distributed Map's ItemBatcher hands one invocation up to
MaxItemsPerBatch targets (`{"Items": [target, ...], "BatchInput": {run_id, bucket, manifest_key, phase, round}}`),
so Step Functions bills its ~4 state transitions per batch, not per target (docs/architecture.md §9, README "Scale
and cost").

Each target is what a single-target invocation is (`steps.run_worker`): its phase, its own result object
(`runs/<run>/results/<account>/<region>/<phase>-r<n>.json`, which Aggregate reads unchanged), its own round. What a
batch adds:

- **A fair share of the time.** Target k of n starts with `remaining / (n - k)` of the invocation's work time as its
  own deadline (`TargetShare`): past it no new fix starts and throttled calls are no longer retried, so the target
  says `incomplete` and its next round continues it (alone or with fewer companions, so with more time). A call still
  throttled when the share ends is out of time, not failed (aws/retries.ThrottledOutOfTime, a DeadlineExceeded: its
  fix is held, or, a read, its target left unscanned and `incomplete`: fanout/worker.run_target). What a
  target leaves unused goes to the ones after it. Calls themselves are refused only at the invocation's reserve, as
  for a single target, so a gather that has started finishes. One slow target therefore delays the others by at most
  its share plus its finishing (the status tags and its result object: FINISH_RESERVE), never starves them.
- **Failure isolation.** An exception out of one target (a bug, a bad item) is caught: the target's result object
  records it as its error and the batch goes on. A target the invocation has no time left to start (less than
  START_AT_LEAST seconds of work time) gets an `incomplete` result object naming why, and the next round runs it.
  Should the whole invocation fail anyway (killed, out of memory), the state machine runs the batch's targets one
  invocation each (statemachine/eic_guard.asl.json, `ApplyEachTarget`).
- **A bounded output.** Counts, and the targets still incomplete (the next round's `Items`: at most the batch, 100
  targets at MaxItemsPerBatch's maximum, ~6 KiB); lost results as sampled keys (fanout/payloads.py).
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field

from ..budget import Deadline
from ..engine import TargetResult
from ..observability import logger
from .payloads import sampled
from .plan import RunPlan
from .results import result_name
from .steps import RunObjects, WorkerInput, _parse, run_worker
from .targets import Target
from .worker import Phase, to_document

# Work seconds a target needs for a start to be worth it (AssumeRole, the managed groups and one gather page);
# below that the target is left to the next round rather than made an error by calls refused at the reserve.
START_AT_LEAST = 20.0
WORKER_FAILED = "target worker failed"


class BatchInput(BaseModel):
    """The ItemBatcher's BatchInput: what every target of the batch shares."""

    model_config = ConfigDict(extra="ignore")
    run_id: str
    bucket: str
    manifest_key: str
    phase: Phase = "apply"
    round: int = Field(default=1, ge=1)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    Items: list[Any] = Field(min_length=1)
    BatchInput: BatchInput


def is_batch(event: Any) -> bool:
    """Whether a worker event is a batch (the ItemBatcher's shape) rather than one target's input."""
    return isinstance(event, dict) and "Items" in event and "BatchInput" in event


class TargetShare(Deadline):
    """One target's deadline inside a batch: the batch's, cut to `seconds` of work from now for what may be held
    for the next round (new fixes, throttling retries: `remaining`); AWS calls are refused only at the batch's reserve
    (`check`), and once the target is finishing, its last reserve is the batch's invocation time, not the share."""

    def __init__(self, batch: Deadline, seconds: float):
        super().__init__(batch._remaining_seconds, batch.reserve)
        self._end = time.monotonic() + seconds
        self._finishing = False

    def remaining(self) -> float:
        left = super().remaining()
        return left if self._finishing else min(left, self._end - time.monotonic())

    def finishing(self, reserve: float) -> None:
        super().finishing(reserve)
        self._finishing = True


def batch_step(event: Any, settings: Any, clients: Any, deadline: Deadline | None = None) -> dict:
    """Every target of the batch in turn, each within its share; returns the batch's counts and its incomplete
    targets (the next round's Items)."""
    request = _parse(BatchRequest, event, "a batch of target worker requests")
    shared = request.BatchInput
    objects = RunObjects(clients.client("s3"), shared.bucket, shared.run_id)
    plan = RunPlan.from_dict(objects.get(shared.manifest_key))  # once per batch, not per target
    counts = {"ok": 0, "error": 0, "incomplete": 0}
    instances = 0
    incomplete: list[Any] = []
    lost: list[str] = []
    unreadable: list[str] = []
    items = request.Items
    try:
        for index, item in enumerate(items):
            target = _target(item)
            if target is None:  # not a target: Aggregate reports every planned target without a result
                unreadable.append(str(item))
                logger.error("batch item that is no target: skipped", extra={"item": str(item)[:240]})
                counts["error"] += 1
                continue
            left = deadline.remaining() if deadline is not None else float("inf")
            if left < START_AT_LEAST:
                output = _not_started(objects, target, shared, left)
            else:
                share = TargetShare(deadline, left / (len(items) - index)) if deadline is not None else None
                if share is not None:
                    clients.deadline = share  # every client of the run, member accounts' included (credentials.py)
                output = _one(request, item, plan, objects, settings, clients, share)
            status = output["status"] if output["status"] in counts else "error"
            counts[status] += 1
            instances += output.get("instances", 0)
            if status == "incomplete":
                incomplete.append(target.to_dict())
            if output.get("result_lost"):
                lost.append(output["result_lost"]["kept_as"])
    finally:
        if deadline is not None:
            clients.deadline = deadline
    status = "incomplete" if counts["incomplete"] else "error" if counts["error"] else "ok"
    return {
        "BatchInput": shared.model_dump(),
        "status": status,
        "targets": len(items),
        **counts,
        "instances": instances,
        "incomplete_targets": incomplete,
        **sampled({"results_lost": lost, "items_unreadable": unreadable}),
    }


def _target(item: Any) -> Target | None:
    try:
        return Target.from_dict(item)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _one(
    request: BatchRequest, item: dict, plan: RunPlan, objects: RunObjects, settings: Any, clients: Any, share: Any
) -> dict:
    """One target of the batch, as a single-target invocation runs it; an exception out of it is its own error,
    written as its result object."""
    shared = request.BatchInput
    try:
        single = WorkerInput(target=item, **shared.model_dump())
        return run_worker(single, plan, objects, settings, clients, share)
    except Exception as exc:  # noqa: BLE001 - one target's failure is its error, never the batch's
        target = Target.from_dict(item)
        logger.exception("target worker failed inside its batch", extra={"target": target.key})
        where = "revoke phase: " if shared.phase == "revoke" else ""  # as Aggregate names a revoke phase's errors
        error = f"{where}{WORKER_FAILED}: {type(exc).__name__}: {exc}"
        result = TargetResult(target.region, account_id=target.account_id, error=error)
        document = to_document(result, shared.phase, shared.round, None)
        return _written(objects, target, shared, document)


def _not_started(objects: RunObjects, target: Target, shared: BatchInput, left: float) -> dict:
    """A target the invocation has no time left to start: `incomplete` in this round, continued in the next."""
    result = TargetResult(target.region, account_id=target.account_id, incomplete=True)
    result.notes.append(
        f"not started in round {shared.round}: {max(left, 0):.0f} s of the batch invocation's time were left; "
        "the next round runs it"
    )
    logger.warning("target not started: the batch's time ran out", extra={"target": target.key})
    return _written(objects, target, shared, to_document(result, shared.phase, shared.round, None))


def _written(objects: RunObjects, target: Target, shared: BatchInput, document: dict) -> dict:
    """Put a result document the batch made itself; one it cannot put is logged (Aggregate then reports the
    target's result as missing, its error either way)."""
    try:
        objects.put(result_name(target, shared.phase, shared.round), document)
    except (ClientError, BotoCoreError) as exc:
        logger.error("result object not written", extra={"target": target.key, "error": str(exc)})
    return {"status": document["status"], "instances": 0}
