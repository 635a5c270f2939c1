"""ip-ranges refresh: an AmazonIpSpaceChanged notification updates eic-guard's managed security groups.

A rejected notification raises, so the invocation fails, Lambda retries it and the dead-letter queue keeps it.
"""

from datetime import UTC, datetime

from aws_lambda_powertools.utilities.typing import LambdaContext
from eic_guard.aws.clients import lambda_clients
from eic_guard.budget import FINISH_RESERVE, REFRESH_RESERVE, Deadline
from eic_guard.events import parse_ip_space_notification
from eic_guard.observability import logger, metrics, record_refresh, record_rejection
from eic_guard.outputs.publish import publish_refresh
from eic_guard.ranges.notification import process_notification, rejection_reason
from eic_guard.settings import Settings
from eic_guard.tracing import tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    started = datetime.now(UTC)
    settings = Settings.from_env().require("state_table")
    deadline = Deadline.from_context(context, reserve=REFRESH_RESERVE)
    clients = lambda_clients(deadline)
    try:
        change = parse_ip_space_notification(event, settings.ip_ranges_topic_arns)
        summary = process_notification(change, clients, settings, context, deadline)
    except Exception as exc:  # every rejection is counted by reason and alerted, then raised for SNS to retry
        reason = rejection_reason(exc)
        record_rejection(reason)
        logger.exception("ip-ranges notification rejected", extra={"reason": reason, "error": str(exc)})
        deadline.finishing(FINISH_RESERVE)
        document = {"status": "rejected", "reason": reason, "error": str(exc)}
        alert = f"notification rejected ({reason}): {exc}"
        publish_refresh(clients, settings, context.aws_request_id, started, document, [alert])
        raise
    deadline.finishing(FINISH_RESERVE)
    record_refresh(summary)
    publish_refresh(clients, settings, context.aws_request_id, started, summary, summary.get("alerts", []))
    logger.info("ip-ranges refresh done", extra={"summary": summary})
    return summary
