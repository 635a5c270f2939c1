"""The run's last resort (statemachine/eic_guard.asl.json: Aggregate's Catch -> ReportRunFailure): Aggregate itself
failed (its time or memory limit, throttled past its retries, a result it could not read, a bug), so the run has no
report yet. This step writes a minimal one and one alert that names the failure, reading nothing but the run's
manifest, so that whatever stopped Aggregate cannot stop it too; the execution then fails (ExecutionsFailed).

Every change the targets made is still in their result objects (runs/<run id>/results/) and their logs; the next
run re-checks every instance.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import InvalidEvent
from ..observability import logger
from ..outputs.publish import publish_refresh, report_key, store_scan_report
from ..outputs.report import build_report
from ..settings import Settings
from .aggregate import unscanned_target
from .plan import RunPlan
from .steps import RunObjects

MAX_CAUSE = 1000  # characters of the failure's cause kept (a Lambda error's cause holds its whole stack trace)
SUBJECT = "eic-guard: a run's report could not be aggregated"
MINIMAL_SCHEMA = "eic-guard/run-failure/v1"  # a scan whose manifest could not be read either


class Failure(BaseModel):
    model_config = ConfigDict(extra="ignore")
    Error: str = "States.Unknown"
    Cause: str | None = None


class RunFailure(BaseModel):
    """Aggregate's input (the Plan output) with what its Catch put at $.failure."""

    model_config = ConfigDict(extra="ignore")
    run_id: str
    job: Literal["scan", "refresh"]
    bucket: str
    manifest_key: str
    failure: Failure


def failure_text(failure: Failure) -> str:
    """`Error: message` of the failure, the message taken from a Lambda error's JSON cause where there is one."""
    cause = failure.Cause or ""
    try:
        parsed = json.loads(cause)
        if isinstance(parsed, dict) and parsed.get("errorMessage"):
            kind = parsed.get("errorType")
            cause = parsed["errorMessage"] if kind in (None, failure.Error) else f"{kind}: {parsed['errorMessage']}"
    except ValueError:
        pass
    cause = cause if len(cause) <= MAX_CAUSE else cause[:MAX_CAUSE] + "..."
    return f"{failure.Error}: {cause}" if cause else failure.Error


def run_failed_step(event: Any, settings: Settings, clients: Any) -> dict:
    """Store a minimal report of the run and alert the failure; returns what was published."""
    try:
        request = RunFailure.model_validate(event)
    except ValidationError as exc:
        raise InvalidEvent(f"not a run failure: {exc.errors()[0]['msg']}") from None
    problem = (
        f"the report of run {request.run_id} could not be aggregated ({failure_text(request.failure)}). The changes "
        f"each target made are in its result objects (s3://{request.bucket}/runs/{request.run_id}/results/) and the "
        "workers' logs; the next run checks every instance again."
    )
    logger.error("run not aggregated", extra={"job": request.job, "failure": request.failure.model_dump()})
    objects = RunObjects(clients.client("s3"), request.bucket, request.run_id)
    try:
        plan = RunPlan.from_dict(objects.get(request.manifest_key))
    except Exception as exc:  # noqa: BLE001 - the alert goes out whatever the manifest's state
        logger.error("run manifest unreadable", extra={"error": str(exc)})
        plan = None
    now = datetime.now(UTC)
    if request.job == "refresh":
        document = {"status": "failed", "reason": "aggregate-failed", "error": problem}
        if plan is not None:
            document.update(sync_token=plan.ranges.sync_token, create_date=plan.ranges.create_date)
        started = plan.started_at if plan is not None else now
        published = publish_refresh(clients, settings, request.run_id, started, document, [problem])
        return {"run_id": request.run_id, "job": request.job, "status": "failed", "error": problem, **published}
    if plan is None:  # no target list to report on: the failure alone, under the scan's report key
        document = {"schema": MINIMAL_SCHEMA, "run_id": request.run_id, "job": "scan", "status": "failed"}
        stored = _publish(
            clients, settings, problem, lambda s3: _put_minimal(s3, settings, {**document, "error": problem}, now)
        )
        return {"run_id": request.run_id, "job": request.job, "status": "failed", "error": problem, **stored}
    report = build_report(
        run_id=plan.run_id,
        mode=plan.mode,
        account_id=plan.own_account,
        regions=list(settings.regions),
        started=plan.started_at,
        finished=now,
        ip_ranges=plan.ranges,
        targets=[unscanned_target(t.account_id, t.region, problem) for t in plan.targets],
    )
    return {
        "run_id": request.run_id,
        "job": request.job,
        "status": "failed",
        "error": problem,
        **_publish(clients, settings, problem, lambda s3: store_scan_report(s3, settings.reports_bucket, report)),
    }


def _put_minimal(s3: Any, settings: Settings, document: dict, started: datetime) -> str:
    key = report_key("scan", document["run_id"], started)
    body = json.dumps(document, indent=2).encode()
    s3.put_object(Bucket=settings.reports_bucket, Key=f"{key}.json", Body=body, ContentType="application/json")
    return key


def _publish(clients: Any, settings: Settings, problem: str, store: Callable[[Any], str]) -> dict:
    """The report and the alert, each attempted whatever happened to the other (no quiet-alert state: this is
    never a repeat of last night)."""
    from ..outputs.alerts import send_alert

    outcome: dict[str, Any] = {"report_key": None, "alerted": False}
    if settings.reports_bucket:
        try:
            outcome["report_key"] = store(clients.client("s3"))
        except (ClientError, BotoCoreError) as exc:
            logger.error("report not stored", extra={"error": str(exc)})
    if settings.alerts_topic_arn:
        location = f"s3://{settings.reports_bucket}/{outcome['report_key']}.html" if outcome["report_key"] else None
        message = problem + (f"\n\nReport: {location}" if location else "")
        try:
            region = settings.alerts_topic_arn.split(":")[3] or None
            send_alert(clients.client("sns", region), settings.alerts_topic_arn, SUBJECT, message)
            outcome["alerted"] = True
        except (ClientError, BotoCoreError) as exc:
            logger.error("alert not sent", extra={"error": str(exc)})
    return outcome
