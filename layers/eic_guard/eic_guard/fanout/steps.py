"""The fan-out's three Lambda steps on Step Functions (statemachine/eic_guard.asl.json): Plan, the target worker
(per target, phase and round; a batch of targets: fanout/batch.py), Aggregate. Each step reads and writes the run's
objects in the reports bucket, so the state machine passes only small references between them:

    runs/<run_id>/manifest.json                               the RunPlan (prefixes, expired, targets)
    runs/<run_id>/targets.json                                the Distributed Map's items
    runs/<run_id>/results/<account>/<region>/<phase>-r<n>.json  each worker's result, written as it ends

and, in the state table, `lost#<run_id>#results/...` for a result object that could not be written (LostResults).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..aws.credentials import AccountClients
from ..budget import Deadline
from ..errors import InvalidEvent
from ..observability import logger, record_account_counts, record_refresh, record_scan_counts
from ..outputs.athena import write_findings
from ..outputs.publish import alert_state_store, publish_refresh, publish_scan
from ..settings import Settings
from .aggregate import finish_state, merge_rounds, merge_targets, stream_run
from .payloads import sampled
from .plan import RunPlan, plan_run
from .results import (
    LOST_DAYS,
    LostResult,
    UnreadableResult,
    identity,
    lost_key,
    lost_record,
    read_result,
    result_name,
    unreadable,
)
from .targets import Target
from .worker import run_target

# Plan's and Aggregate's own modules (the alert tally, the ip-ranges catch-up, the verify job) are imported where
# those steps use them: the target worker imports this module, and its cold start should not pay for them.

RUNS_PREFIX = "runs"
# Aggregate reads the targets' result objects in parallel: 8,500 targets at ~30 ms per GET take 8 s, not 4 min.
RESULT_READERS = 32
TARGETS_READ = 32  # targets whose results are read (and held) at once by the streamed Aggregate
# The most rounds a phase may have (template.yaml MaxRounds' MaxValue): where Aggregate looks for lost results.
MAX_ROUNDS = 10


class RunRequest(BaseModel):
    """The execution input: the schedule's {"job": "scan"}, the refresh function's {"job": "refresh"}, `eic-guard
    verify`'s {"job": "verify"} (docs/architecture.md §16: probes only, nothing changed).

    `{}` is a scan: what `aws stepfunctions start-execution` without `--input` starts, the obvious test input in the
    console; so is the console's pre-filled `{"Comment": "..."}` (a comment is never an instruction). Any other key
    is refused, so that an event meant for another function (an SNS delivery, say) never starts a scan.
    """

    model_config = ConfigDict(extra="forbid", defer_build=True)  # Plan's only: built on first use, not by the worker
    job: Literal["scan", "refresh", "verify"] = "scan"
    Comment: str | None = None


class PlanOutput(BaseModel):
    """What Plan returns and Aggregate receives (small: the objects hold the rest)."""

    model_config = ConfigDict(extra="ignore", defer_build=True)  # Plan's and Aggregate's only (see RunRequest)
    run_id: str
    job: Literal["scan", "refresh", "verify"]
    bucket: str
    manifest_key: str
    targets_key: str
    targets: int
    revoke: bool


class WorkerInput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    run_id: str
    bucket: str
    manifest_key: str
    target: dict[str, str]
    phase: Literal["apply", "revoke"] = "apply"
    round: int = Field(default=1, ge=1)
    # Set by the state machine's one-by-one fallback after a failed batch (fanout/batch.py): a target whose result
    # object for this phase and round the batch already wrote is not run again (its fixes are in that object).
    skip_if_done: bool = False


def _parse(model: type[BaseModel], event: Any, what: str) -> Any:
    try:
        return model.model_validate(event)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidEvent(f"not {what}: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None


class RunObjects:
    """The run's objects in the reports bucket."""

    def __init__(self, s3: Any, bucket: str, run_id: str):
        self.s3, self.bucket, self.run_id = s3, bucket, run_id

    def key(self, name: str) -> str:
        return f"{RUNS_PREFIX}/{self.run_id}/{name}"

    def put(self, name: str, document: Any) -> str:
        key = self.key(name)
        self.s3.put_object(
            Bucket=self.bucket, Key=key, Body=json.dumps(document).encode(), ContentType="application/json"
        )
        return key

    def get(self, key: str) -> Any:
        return json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def results(self) -> tuple[list[dict], list[UnreadableResult]]:
        """Every result object of the run, read RESULT_READERS at a time (thousands of targets: one GET each): the
        documents, and the objects that could not be read or are not result documents (each its target's error)."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.key("results/"))
        keys = [item["Key"] for page in pages for item in page.get("Contents", ())]
        if len(keys) <= 1:
            read = [self._result(key) for key in keys]
        else:
            with ThreadPoolExecutor(max_workers=RESULT_READERS, thread_name_prefix="eic-guard-results") as pool:
                read = list(pool.map(self._result, keys))
        documents = [r for r in read if isinstance(r, dict)]
        broken = [r for r in read if isinstance(r, UnreadableResult)]
        _log_unreadable(broken)
        return documents, broken

    def target_results(self, plan: RunPlan, lost: LostResults) -> Iterator[dict]:
        """Every planned target's merged document (fanout.aggregate.merge_targets), in the plan's order, its result
        objects read TARGETS_READ targets at a time (RESULT_READERS GETs in parallel, the next targets' read while
        these are merged): memory holds a few dozen targets' results, whatever the fleet (docs/architecture.md §15).
        An unreadable object is its target's error; a missing one is looked up among the lost results."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.key("results/"))
        keys: dict[tuple[str, str], list[str]] = defaultdict(list)
        for page in pages:
            for item in page.get("Contents", ()):
                named = identity(item["Key"])
                if named is None:
                    logger.warning(
                        "object under the run's results that is no result: ignored", extra={"key": item["Key"]}
                    )
                else:
                    keys[named[:2]].append(item["Key"])
        chunks = [plan.targets[i : i + TARGETS_READ] for i in range(0, len(plan.targets), TARGETS_READ)]
        with ThreadPoolExecutor(max_workers=RESULT_READERS, thread_name_prefix="eic-guard-results") as pool:

            def submit(chunk: list[Target]) -> list[Future]:
                return [pool.submit(self._result, key) for t in chunk for key in keys.get((t.account_id, t.region), ())]

            ahead = submit(chunks[0]) if chunks else []
            for number, chunk in enumerate(chunks):
                reading, ahead = ahead, submit(chunks[number + 1]) if number + 1 < len(chunks) else []
                read = [future.result() for future in reading]
                documents = [r for r in read if isinstance(r, dict)]
                broken = [r for r in read if isinstance(r, UnreadableResult)]
                _log_unreadable(broken)
                found = lost.find(lost_keys(plan, documents, broken, chunk))
                yield from merge_targets(plan, documents, [*broken, *found], chunk)

    def _result(self, key: str) -> dict | UnreadableResult | None:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            return unreadable(key, f"cannot be read: {exc}")
        read = read_result(key, body)
        if read is None:
            logger.warning("object under the run's results that is no result: ignored", extra={"key": key})
        return read


def _log_unreadable(broken: list[UnreadableResult]) -> None:
    for problem in broken:
        logger.error(
            "result object unreadable",
            extra={
                "target": f"{problem.account_id}/{problem.region}",
                "phase": problem.phase,
                "round": problem.round,
                "reason": problem.reason,
            },
        )


def plan_step(event: Any, settings: Settings, clients: Any, run_id: str, deadline: Deadline | None = None) -> dict:
    """Plan: decide the run and write its manifest and target list."""
    from ..ranges.catch_up import state_store
    from ..verify.job import plan_verify

    request = _parse(RunRequest, event, "a run request ({'job': 'scan'|'refresh'})")
    settings.require("reports_bucket")
    store = state_store(clients, settings)
    if request.job == "verify":  # read-only: the stored prefixes, nothing applied (verify/job.py)
        plan = plan_verify(settings, clients, store, run_id)
    else:
        plan = plan_run(request.job, settings, clients, store=store, run_id=run_id, deadline=deadline)
    objects = RunObjects(clients.client("s3"), settings.reports_bucket, plan.run_id)
    manifest_key = objects.put("manifest.json", plan.to_dict())
    targets_key = objects.put("targets.json", [t.to_dict() for t in plan.targets])
    return PlanOutput(
        run_id=plan.run_id,
        job=plan.job,
        bucket=settings.reports_bucket,
        manifest_key=manifest_key,
        targets_key=targets_key,
        targets=len(plan.targets),
        revoke=plan.revoke,
    ).model_dump()


def worker_step(event: Any, settings: Settings, clients: Any, deadline: Deadline | None = None) -> dict:
    """One target, one phase, one round; the result object is written before returning. (A batch of targets:
    fanout/batch.py, which runs `run_worker` for each.)"""
    request = _parse(WorkerInput, event, "a target worker request")
    objects = RunObjects(clients.client("s3"), request.bucket, request.run_id)
    if request.skip_if_done and (done := _done_by_batch(request, objects)) is not None:
        return done
    plan = RunPlan.from_dict(objects.get(request.manifest_key))
    return run_worker(request, plan, objects, settings, clients, deadline)


def _done_by_batch(request: WorkerInput, objects: RunObjects) -> dict | None:
    """The output of a target whose batch wrote its result for this phase and round before failing; None when it
    has none (or none that reads as one): the target runs."""
    key = objects.key(result_name(Target.from_dict(request.target), request.phase, request.round))
    try:
        found = read_result(key, objects.s3.get_object(Bucket=objects.bucket, Key=key)["Body"].read())
    except (ClientError, BotoCoreError):
        return None
    if not isinstance(found, dict):
        return None
    logger.info("target already done by its batch", extra={"key": key})
    output = request.model_dump(exclude={"skip_if_done"})
    return {**output, "status": found["status"], "instances": len(found["instances"]), "result_key": key}


def run_worker(
    request: WorkerInput,
    plan: RunPlan,
    objects: RunObjects,
    settings: Settings,
    clients: Any,
    deadline: Deadline | None,
) -> dict:
    """`worker_step` once the run's manifest is read: the target's phase, its result object, the step's output."""
    target = Target.from_dict(request.target)
    accounts = _accounts_of_run(clients, plan.run_id, settings.member_role_name)
    try:
        if plan.job == "verify":  # probes, nothing changed (verify/job.py)
            from ..verify.job import verify_target

            document = verify_target(plan, target, accounts.for_account, settings)
        else:
            document = run_target(
                plan, target, request.phase, accounts.for_account, settings, round_=request.round, deadline=deadline
            )
    finally:
        # A warm container runs hundreds of a run's targets (batches, one after the other): the account's clients
        # (a botocore session and a client per region, ~2.6 MiB) go after each target, its credentials stay (one
        # AssumeRole per account per container and run).
        accounts.release(target.account_id, again=True)
    if plan.job == "scan" and request.phase == "apply":
        _put_findings(objects, plan, target, request.round, document)
    output = {
        **request.model_dump(exclude={"skip_if_done"}),
        "status": document["status"],
        "instances": len(document["instances"]),
    }
    try:  # botocore's retries first (the deadline's for throttling: aws/retries.py)
        output["result_key"] = objects.put(result_name(target, request.phase, request.round), document)
    except (ClientError, BotoCoreError) as exc:
        # The changes are made: what they were must not be lost with the object. The bounded record goes into the
        # map item's output and into the state table, where Aggregate looks for a target without a result.
        record = lost_record(document, f"PutObject: {exc}")
        logger.error("result object not written: its record is kept", extra={"lost": record})
        key = lost_key(request.run_id, target, request.phase, request.round)
        LostResults(clients, settings).keep(key, record)
        output |= {"result_key": None, "result_lost": {**sampled(record), "kept_as": key}}  # a bounded payload
    return output


class LostResults:
    """The bounded records of result objects that could not be written, kept in the state table (a store that does
    not fail with the bucket) under `lost#<run id>#results/<target>/<phase>-r<n>.json`, expiring with the run."""

    def __init__(self, clients: Any, settings: Settings):
        self.table = settings.state_table
        self.dynamodb = clients.client("dynamodb") if self.table else None

    def keep(self, key: str, record: dict) -> None:
        if self.dynamodb is None:
            return
        expires = int(datetime.now(UTC).timestamp()) + LOST_DAYS * 86_400
        try:
            self.dynamodb.put_item(
                TableName=self.table,
                Item={"id": {"S": key}, "document": {"S": json.dumps(record)}, "expiration": {"N": str(expires)}},
            )
        except (ClientError, BotoCoreError) as exc:  # the map item's output still has it
            logger.error("lost result's record not kept in the state table", extra={"error": str(exc)})

    def find(self, keys: list[str]) -> list[LostResult]:
        """The records kept under `keys` (BatchGetItem, 100 keys a call); the ones that cannot be read are logged."""
        if self.dynamodb is None or not keys:
            return []
        found: list[LostResult] = []
        for start in range(0, len(keys), 100):
            request = {self.table: {"Keys": [{"id": {"S": k}} for k in keys[start : start + 100]]}}
            for _ in range(5):  # UnprocessedKeys: the rest, again (botocore retries each call itself)
                try:
                    answer = self.dynamodb.batch_get_item(RequestItems=request)
                except (ClientError, BotoCoreError) as exc:
                    logger.error("lost results not read from the state table", extra={"error": str(exc)})
                    break
                for item in answer.get("Responses", {}).get(self.table, []):
                    try:
                        found.append(LostResult.from_record(json.loads(item["document"]["S"])))
                    except (KeyError, TypeError, ValueError) as exc:
                        logger.error("lost result's record unreadable", extra={"key": item["id"], "error": str(exc)})
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
        return found


def lost_keys(
    plan: RunPlan, documents: list[dict], unreadable: list[UnreadableResult], targets: list[Target] | None = None
) -> list[str]:
    """The keys a lost result of this run may be kept under: each round of a phase that should have a result object
    and has none (a target with no apply result, an incomplete last round, a revoke phase without its result), for
    every planned target or for `targets`."""
    have: dict[tuple[str, str, str], int] = {}
    incomplete: set[tuple[str, str, str]] = set()
    for d in documents:
        key = (d["account_id"], d["region"], d["phase"])
        if d["round"] >= have.get(key, 0):
            have[key] = d["round"]
            incomplete.discard(key)
            if d["status"] == "incomplete":
                incomplete.add(key)
    for problem in unreadable:
        key = (problem.account_id, problem.region, problem.phase)
        have[key] = max(have.get(key, 0), problem.round)
    keys = []
    for target in plan.targets if targets is None else targets:
        phases = ["apply"] + (["revoke"] if plan.revoke and target.region in plan.expired else [])
        for phase in phases:
            last = have.get((target.account_id, target.region, phase))
            if last is not None and (target.account_id, target.region, phase) not in incomplete:
                continue
            keys += [lost_key(plan.run_id, target, phase, r) for r in range((last or 0) + 1, MAX_ROUNDS + 1)]
    return keys


def _put_findings(objects: RunObjects, plan: RunPlan, target: Target, round_: int, document: dict) -> None:
    """This target's per-instance rows for the Athena table (outputs/athena.py), its rounds so far merged (an earlier
    round's object that cannot be read is left out); a failure to write is a note of the target (amber in the
    report), never the loss of its result."""
    rounds = []
    for earlier in range(1, round_):
        key = objects.key(result_name(target, "apply", earlier))
        try:
            found = read_result(key, objects.s3.get_object(Bucket=objects.bucket, Key=key)["Body"].read())
        except (ClientError, BotoCoreError) as exc:
            found = None
            logger.warning("an earlier round's result is not in the Athena rows", extra={"key": key, "error": str(exc)})
        if isinstance(found, dict):
            rounds.append(found)
    try:
        merged = merge_rounds([*rounds, document])
        write_findings(objects.s3, objects.bucket, merged, plan.run_id, plan.started_at, plan.mode)
    except (ClientError, BotoCoreError) as exc:
        logger.error("per-instance results for Athena not written", extra={"target": target.key, "error": str(exc)})
        document["notes"].append(f"per-instance results for Athena (tables/findings/) not written: {exc}")


_RUN_ACCOUNTS: list[AccountClients] = []  # the latest run's, in a warm container


def _accounts_of_run(clients: Any, run_id: str, role_name: str) -> AccountClients:
    """A warm container's map items of one run share their member credentials: one AssumeRole per account per
    container and run, not one per target (credentials refresh themselves before they expire; the clients are let go
    after each target: run_worker). Only the latest run is kept."""
    for known in _RUN_ACCOUNTS:
        if known.own is clients and known.run_id == run_id and known.role_name == role_name:
            return known
    _RUN_ACCOUNTS[:] = [AccountClients(clients, run_id, role_name)]
    return _RUN_ACCOUNTS[0]


def aggregate_step(event: Any, settings: Settings, clients: Any) -> dict:
    """Aggregate: one report, one alert, the metrics, the state's last touches; returns the run's summary. The
    targets' results are read and the report written as a stream (outputs.stream): memory and the returned payload
    do not grow with the fleet (docs/architecture.md §15)."""
    from ..outputs.alerts import ProblemTally, read_previous
    from ..ranges.catch_up import state_store
    from ..verify.job import summarize

    request = _parse(PlanOutput, event, "a plan output")
    objects = RunObjects(clients.client("s3"), request.bucket, request.run_id)
    plan = RunPlan.from_dict(objects.get(request.manifest_key))
    if plan.job == "verify":  # the checklist data: no report, no alert, no state (verify/job.py)
        documents, unreadable_results = objects.results()
        return summarize(plan, documents, unreadable_results)
    finished = datetime.now(UTC)
    previous = tally = None
    if plan.job == "scan" and settings.alerts_topic_arn:  # the alert is decided as the targets are read
        previous = read_previous(alert_state_store(clients, settings))
        tally = ProblemTally(previous.state, previous.notes)
    targets = objects.target_results(plan, LostResults(clients, settings))
    stream, report, refresh, merged = stream_run(plan, targets, settings, finished, tally)
    try:
        finish_state(state_store(clients, settings), plan, merged, finished)
        record_account_counts([t.model_dump() for t in report.targets], stream.noncompliant_by_account)
        if refresh is not None:
            record_refresh(refresh)
        summary = report.summary.model_dump()
        if plan.job == "scan":
            record_scan_counts(summary, stream.applied, stream.failed, stream.failures)
            alerts = refresh["alerts"] if refresh else []
            published = publish_scan(clients, settings, report, alerts, stream=stream, tally=tally, previous=previous)
        else:
            alerts = (refresh or {}).get("alerts", [])
            published = publish_refresh(clients, settings, plan.run_id, plan.started_at, refresh or {}, alerts)
    finally:
        stream.close()
    logger.info("run finished", extra={"summary": summary, "job": plan.job, **published})
    # The execution's output: counts, keys and short samples (fanout/payloads.py), whatever the number of targets
    # and failures; the report and the refresh report hold the whole lists.
    return {
        "run_id": report.run_id,
        "job": plan.job,
        "mode": report.mode,
        **sampled({"regions": report.regions, "accounts": report.accounts}),
        "summary": summary,
        "targets": {s: sum(1 for t in report.targets if t.status == s) for s in ("ok", "error", "incomplete")},
        "ip_ranges": report.ip_ranges.model_dump(),
        "refresh": sampled(refresh) if refresh is not None else None,
        "report_key": published["report_key"],
    }
