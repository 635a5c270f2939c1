"""Plan (first state of the fan-out): decide the run — the ip-ranges catch-up of a nightly scan, or the refresh
job's verified prefixes — and the (account, region) targets; writes the run's manifest and target list to S3."""

from aws_lambda_powertools.utilities.typing import LambdaContext
from eic_guard.aws.clients import lambda_clients
from eic_guard.budget import PLAN_RESERVE, Deadline
from eic_guard.fanout.steps import plan_step
from eic_guard.observability import logger, metrics
from eic_guard.settings import Settings
from eic_guard.tracing import tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    settings = Settings.from_env()
    logger.append_keys(run_id=context.aws_request_id)
    deadline = Deadline.from_context(context, reserve=PLAN_RESERVE)
    return plan_step(event, settings, lambda_clients(deadline), context.aws_request_id, deadline)
