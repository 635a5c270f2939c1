"""ip-ranges refresh: an AmazonIpSpaceChanged notification updates eic-guard's managed security groups.

A rejected notification raises, so the invocation fails, SNS/Lambda retry it and the dead-letter queue keeps it.
"""

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext

from eic_guard.clients import RETRY_CONFIG, AwsClients
from eic_guard.errors import EicGuardError
from eic_guard.events import IpSpaceChange, parse_ip_space_notification
from eic_guard.observability import logger, metrics, record_refresh, record_rejection, tracer
from eic_guard.refresh import handle_notification, idempotent_on_synctoken
from eic_guard.settings import Settings
from eic_guard.state import DynamoDbStateStore


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    settings = Settings.from_env().require("state_table")
    try:
        change = parse_ip_space_notification(event, settings.ip_ranges_topic_arns)
        store = DynamoDbStateStore(boto3.client("dynamodb", config=RETRY_CONFIG), settings.state_table)
        process = idempotent_on_synctoken(
            lambda change: handle_notification(IpSpaceChange.model_validate(change), AwsClients(), settings, store),
            settings.state_table, context)
        summary = process(change=change.model_dump(by_alias=True))
    except EicGuardError as exc:
        record_rejection(getattr(exc, "reason", "invalid"))
        logger.error("ip-ranges notification rejected", extra={"reason": getattr(exc, "reason", None),
                                                               "error": str(exc)})
        raise
    record_refresh(summary)
    logger.info("ip-ranges refresh done", extra={"summary": summary})
    return summary
