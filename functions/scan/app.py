"""Nightly scan: the EventBridge Scheduler event catches up on ip-ranges.json, then checks and fixes every
opted-in instance of the configured regions, stores the report and alerts when something needs a person."""

from aws_lambda_powertools.utilities.typing import LambdaContext
from eic_guard.clients import AwsClients
from eic_guard.events import parse_scheduled_event
from eic_guard.nightly import nightly_run, state_store
from eic_guard.observability import logger, metrics, record_refresh, record_scan, tracer
from eic_guard.publish import publish_scan
from eic_guard.settings import Settings


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    scheduled = parse_scheduled_event(event)
    settings = Settings.from_env()
    logger.append_keys(run_id=context.aws_request_id)
    logger.info("scan started", extra={"schedule": scheduled.resources, "mode": settings.mode})
    clients = AwsClients()
    report, refresh = nightly_run(
        clients, settings, run_id=context.aws_request_id, store=state_store(clients, settings)
    )
    document = report.to_dict()
    record_scan(document)
    if refresh is not None:
        record_refresh(refresh.summary())
    published = publish_scan(clients, settings, report, refresh.alerts if refresh is not None else [])
    logger.info("scan finished", extra={"summary": document["summary"], **published})
    return {
        "run_id": report.run_id,
        "mode": report.mode,
        "regions": report.regions,
        "summary": document["summary"],
        "ip_ranges": document["ip_ranges"],
        "refresh": refresh.summary() if refresh is not None else None,
        "report_key": published["report_key"],
    }
