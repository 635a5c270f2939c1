"""Nightly scan: the EventBridge Scheduler event catches up on ip-ranges.json, then checks and fixes every
opted-in instance of the configured regions, stores the report and alerts when something needs a person."""

from aws_lambda_powertools.utilities.typing import LambdaContext
from eic_guard.aws.clients import AwsClients
from eic_guard.budget import FINISH_RESERVE, SCAN_RESERVE, Deadline
from eic_guard.events import parse_scheduled_event
from eic_guard.observability import logger, metrics, record_refresh, record_scan, tracer
from eic_guard.outputs.publish import publish_scan
from eic_guard.ranges.catch_up import nightly_run, state_store
from eic_guard.settings import Settings


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    scheduled = parse_scheduled_event(event)
    settings = Settings.from_env()
    logger.append_keys(run_id=context.aws_request_id)
    logger.info("scan started", extra={"schedule": scheduled.resources, "mode": settings.mode})
    deadline = Deadline.from_context(context, reserve=SCAN_RESERVE)
    clients = AwsClients(deadline=deadline)
    store = state_store(clients, settings)
    report, catch_up = nightly_run(clients, settings, run_id=context.aws_request_id, store=store, deadline=deadline)
    deadline.finishing(FINISH_RESERVE)  # what is left of the reserve goes to the report and the alert
    document = report.to_dict()
    record_scan(document)
    if catch_up.refresh is not None:
        record_refresh(catch_up.refresh.summary())
    published = publish_scan(clients, settings, report, catch_up.all_alerts)
    logger.info("scan finished", extra={"summary": document["summary"], **published})
    return {
        "run_id": report.run_id,
        "mode": report.mode,
        "regions": report.regions,
        "summary": document["summary"],
        "ip_ranges": document["ip_ranges"],
        "refresh": catch_up.summary(),
        "report_key": published["report_key"],
    }
