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
