"""The target worker (the fan-out's Distributed Map item): a batch of (account, region) targets (the ItemBatcher's
{"Items", "BatchInput"}) or one target's input, one phase each — enter the account through its member role, apply
the run's prefixes, scan and fix within the time budget — each target's result to S3 at once."""

from aws_lambda_powertools.utilities.typing import LambdaContext
from eic_guard.aws.clients import lambda_clients
from eic_guard.budget import WORKER_RESERVE, Deadline
from eic_guard.fanout.batch import batch_step, is_batch
from eic_guard.fanout.steps import worker_step
from eic_guard.observability import logger, metrics
from eic_guard.settings import Settings
from eic_guard.tracing import tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    settings = Settings.from_env()
    batch = is_batch(event)
    shared = event.get("BatchInput") if batch else event
    logger.append_keys(run_id=shared.get("run_id") if isinstance(shared, dict) else None)
    deadline = Deadline.from_context(context, reserve=WORKER_RESERVE)
    step = batch_step if batch else worker_step
    return step(event, settings, lambda_clients(deadline), deadline)
