"""Powertools Logger, Tracer and Metrics shared by the handlers and the engine (service eic-guard)."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = "eic-guard"
NAMESPACE = "EicGuard"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

SUMMARY_METRICS = {
    "instances": "InstancesScanned",
    "compliant": "InstancesCompliant",
    "fixed": "InstancesFixed",
    "noncompliant": "InstancesNoncompliant",
    "excluded": "InstancesExcluded",
    "errors": "Errors",
}


def record_summary(summary: dict[str, int]) -> None:
    """Emit one EMF metric per summary counter."""
    from aws_lambda_powertools.metrics import MetricUnit

    for key, name in SUMMARY_METRICS.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=summary.get(key, 0))


def record_rejection(reason: str) -> None:
    """One RefreshRejected metric with the reason as its dimension (a separate EMF blob)."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    with single_metric(name="RefreshRejected", unit=MetricUnit.Count, value=1, namespace=NAMESPACE) as metric:
        metric.add_dimension(name="Reason", value=reason)


def record_refresh(summary: dict) -> None:
    from aws_lambda_powertools.metrics import MetricUnit

    metrics.add_metric(name="PrefixesAdded", unit=MetricUnit.Count, value=summary.get("prefixes_added", 0))
    metrics.add_metric(name="PrefixesRemoved", unit=MetricUnit.Count, value=summary.get("prefixes_revoked", 0))
    metrics.add_metric(name="RefreshAlerts", unit=MetricUnit.Count, value=len(summary.get("alerts", ())))
