"""Aggregate (last state of the fan-out): every target's results → one report in S3, one alert, the metrics and
the ip-ranges state's last touches; returns the run's summary. Invoked again by the ReportRunFailure state when that
failed (its input then carries `failure`): a minimal report and an alert naming the failure."""

from aws_lambda_powertools.utilities.typing import LambdaContext
from eic_guard.aws.clients import lambda_clients
from eic_guard.budget import FINISH_RESERVE, Deadline
from eic_guard.fanout.run_failed import run_failed_step
from eic_guard.fanout.steps import aggregate_step
from eic_guard.observability import logger, metrics
from eic_guard.settings import Settings
from eic_guard.tracing import tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    settings = Settings.from_env()
    logger.append_keys(run_id=event.get("run_id") if isinstance(event, dict) else None)
    deadline = Deadline.from_context(context, reserve=FINISH_RESERVE)
    if isinstance(event, dict) and "failure" in event:
        return run_failed_step(event, settings, lambda_clients(deadline))
    return aggregate_step(event, settings, lambda_clients(deadline))
