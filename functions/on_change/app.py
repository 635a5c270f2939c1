"""Event-driven checks (docs/architecture.md §10): an SQS batch of EventBridge events (EC2 state changes, CloudTrail
API calls) → the affected opted-in instances checked and fixed with the nightly run's engine, mode and safety rules.

Returns {"batchItemFailures": [...]}: each bad record (malformed, foreign account, its target not checkable) goes back
to the queue and, after the queue's maxReceiveCount, to its dead-letter queue; the good ones are done.
"""

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.typing import LambdaContext
from eic_guard.aws.clients import lambda_clients
from eic_guard.budget import Deadline
from eic_guard.changes import ON_CHANGE_RESERVE, check_changes
from eic_guard.observability import logger, metrics
from eic_guard.settings import Settings
from eic_guard.tracing import tracer

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    settings = Settings.from_env()
    logger.append_keys(run_id=context.aws_request_id)
    deadline = Deadline.from_context(context, reserve=ON_CHANGE_RESERVE)
    batch = check_changes(event, settings, lambda_clients(deadline), context.aws_request_id, deadline=deadline)
    return process_partial_response(event=event, record_handler=batch.settle, processor=processor, context=context)
