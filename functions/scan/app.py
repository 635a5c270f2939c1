"""Nightly scan: the EventBridge Scheduler event catches up on ip-ranges.json, then checks and fixes every
opted-in instance of the configured regions."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from eic_guard.clients import AwsClients
from eic_guard.events import parse_scheduled_event
from eic_guard.nightly import nightly_run, state_store
from eic_guard.observability import logger, metrics, record_refresh, record_summary, tracer
from eic_guard.settings import Settings


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    scheduled = parse_scheduled_event(event)
    settings = Settings.from_env()
    logger.info("scan started", extra={"schedule": scheduled.resources, "mode": settings.mode})
    clients = AwsClients()
    report, refresh = nightly_run(clients, settings, run_id=context.aws_request_id,
                                  store=state_store(clients, settings))
    summary = report.to_dict()["summary"]
    record_summary(summary)
    if refresh is not None:
        record_refresh(refresh.summary())
    logger.info("scan finished", extra={"summary": summary})
    return {"run_id": report.run_id, "mode": report.mode, "regions": report.regions, "summary": summary,
            "ip_ranges": report.ip_ranges.model_dump(),
            "refresh": refresh.summary() if refresh is not None else None}
