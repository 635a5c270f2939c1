"""Nightly scan: the EventBridge Scheduler event starts a scan (and fix) of every opted-in instance."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from eic_guard import ip_ranges
from eic_guard.clients import AwsClients
from eic_guard.engine import run_scan
from eic_guard.events import parse_scheduled_event
from eic_guard.observability import logger, metrics, record_summary, tracer
from eic_guard.settings import Settings


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    scheduled = parse_scheduled_event(event)
    settings = Settings.from_env()
    logger.info("scan started", extra={"schedule": scheduled.resources, "mode": settings.mode})
    report = run_scan(AwsClients(), settings, ip_ranges.load(), run_id=context.aws_request_id)
    summary = report.to_dict()["summary"]
    record_summary(summary)
    logger.info("scan finished", extra={"summary": summary})
    return {"run_id": report.run_id, "mode": report.mode, "regions": report.regions, "summary": summary,
            "ip_ranges": report.ip_ranges.model_dump()}
