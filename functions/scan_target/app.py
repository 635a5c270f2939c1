"""The target worker (the fan-out's Distributed Map item): one phase of one (account, region) — enter the account
through its member role, apply the run's prefixes, scan and fix within the time budget — result to S3 at once."""

from aws_lambda_powertools.utilities.typing import LambdaContext
from eic_guard.aws.clients import lambda_clients
from eic_guard.budget import WORKER_RESERVE, Deadline
from eic_guard.fanout.steps import worker_step
from eic_guard.observability import logger, metrics
from eic_guard.settings import Settings
from eic_guard.tracing import tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    settings = Settings.from_env()
    logger.append_keys(run_id=event.get("run_id") if isinstance(event, dict) else None)
    deadline = Deadline.from_context(context, reserve=WORKER_RESERVE)
    return worker_step(event, settings, lambda_clients(deadline), deadline)
