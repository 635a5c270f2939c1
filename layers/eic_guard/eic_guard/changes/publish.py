"""After an event-driven check: like the nightly run, but quietly.

- The report (schema eic-guard/report/v1) goes to `reports/on-change/YYYY/MM/DD/<request id>.json` only when the
  check changed something, planned or failed a change, or left a problem (a non-compliant, errored or fixed instance,
  a target error). Most events (an instance starting, a tag added to a compliant instance) find nothing to do:
  storing those would write an object per instance start with nothing an auditor needs; the logs and the metrics
  keep them, and the nightly report is the full picture.
- An alert only when an instance stays non-compliant or errors (or a target cannot be checked).
- Metrics: the run-summary counters with the extra dimension Trigger=on-change (their own series: the nightly's
  service-only series, its alarms and dashboards stay as they are), and OnChange* counters. Never ScanCompleted,
  which feeds the alarm that fires when the nightly scan has not run for 26 hours.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from ..observability import NAMESPACE, SERVICE, SUMMARY_METRICS, logger, metrics, stack_dimensions
from ..outputs.alerts import alert_message, send_alert
from ..outputs.publish import report_key
from ..outputs.report import Report
from ..settings import Settings

KIND = "on-change"
TRIGGER = ("Trigger", "on-change")


def worth_keeping(report: Report) -> bool:
    """True when the report records a change, a planned or failed change, or a problem."""
    return bool(
        report.target_errors
        or report.target_actions
        or any(e.actions or e.verdict in ("fixed", "noncompliant", "error") for e in report.instances)
    )


def publish_check(clients: Any, settings: Settings, report: Report) -> dict[str, Any]:
    """Store the report if worth keeping, alert if a person is needed; a publishing failure is logged, never raised."""
    outcome: dict[str, Any] = {"report_key": None, "alerted": False}
    if settings.reports_bucket and worth_keeping(report):
        key = f"{report_key(KIND, report.run_id, report.started_at)}.json"
        try:
            clients.client("s3").put_object(
                Bucket=settings.reports_bucket,
                Key=key,
                Body=json.dumps(report.to_dict(), indent=2).encode(),
                ContentType="application/json",
            )
            outcome["report_key"] = key
        except (ClientError, BotoCoreError) as exc:
            logger.error("on-change report not stored", extra={"error": str(exc)})
    location = f"s3://{settings.reports_bucket}/{outcome['report_key']}" if outcome["report_key"] else None
    message = alert_message(report, [], location)
    if message and settings.alerts_topic_arn:
        problems = report.summary.noncompliant + report.summary.errors
        subject = f"eic-guard: {problems} instance(s) need attention after a change"
        try:
            region = settings.alerts_topic_arn.split(":")[3]
            send_alert(clients.client("sns", region), settings.alerts_topic_arn, subject, message)
            outcome["alerted"] = True
        except (ClientError, BotoCoreError, IndexError) as exc:
            logger.error("alert not sent", extra={"error": str(exc)})
    return outcome


def record_events(received: int, ignored: int, failed: int) -> None:
    """What became of the batch's events: OnChangeEvents, OnChangeEventsIgnored, OnChangeEventsFailed."""
    metrics.add_metric(name="OnChangeEvents", unit=MetricUnit.Count, value=received)
    metrics.add_metric(name="OnChangeEventsIgnored", unit=MetricUnit.Count, value=ignored)
    metrics.add_metric(name="OnChangeEventsFailed", unit=MetricUnit.Count, value=failed)


def record_check(report: Report, finished: datetime) -> None:
    """OnChangeChecks (the (account, region) targets checked) and OnChangeSeconds, then the summary counters and
    remediations with Trigger=on-change, in one EMF document of their own."""
    metrics.add_metric(name="OnChangeChecks", unit=MetricUnit.Count, value=len(report.targets))
    seconds = (finished - report.started_at).total_seconds()
    metrics.add_metric(name="OnChangeSeconds", unit=MetricUnit.Seconds, value=round(seconds, 3))
    summary = report.summary.model_dump()
    actions = [a for e in report.instances for a in e.actions]
    on_change = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    for name, value in (*stack_dimensions().items(), TRIGGER):
        on_change.add_dimension(name=name, value=value)
    for key, name in SUMMARY_METRICS.items():
        on_change.add_metric(name=name, unit=MetricUnit.Count, value=summary.get(key, 0))
    on_change.add_metric(
        name="RemediationsApplied", unit=MetricUnit.Count, value=sum(a.status == "done" for a in actions)
    )
    on_change.add_metric(
        name="RemediationsFailed", unit=MetricUnit.Count, value=sum(a.status == "failed" for a in actions)
    )
    on_change.flush_metrics()
