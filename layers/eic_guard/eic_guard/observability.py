"""Powertools Logger and Metrics shared by the handlers and the engine, and eic-guard's metric vocabulary (the
handlers' Tracer is tracing.py's).

Namespace EicGuard, dimensions service=eic-guard and Stack=<stack name> on every metric (Stack only where the stack
name is set: the deployed functions; the CLI publishes no metrics); CheckFailures adds CheckId, RefreshRejected
Reason, the per-account counts AccountId.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.metrics.functions import resolve_cold_start_function_name
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from .checks import CHECK_IDS
from .settings import ENV_PREFIX, Settings

SERVICE = "eic-guard"
NAMESPACE = "EicGuard"
# Two stacks in one account would otherwise share every metric, hence every alarm (template.yaml: Stack=StackName).
STACK_DIMENSION = "Stack"
STACK_NAME_ENV = f"{ENV_PREFIX}STACK_NAME"


def stack_dimensions() -> dict[str, str]:
    """{"Stack": <stack name>} when the deployed stack's name is set (template.yaml: EIC_GUARD_STACK_NAME), else {}.

    Read when metrics are serialized, not at import: the environment is the invocation's."""
    name = os.environ.get(STACK_NAME_ENV, "").strip()
    return {STACK_DIMENSION: name} if name else {}


def default_dimensions() -> dict[str, str]:
    """The dimensions every eic-guard metric carries."""
    return {"service": SERVICE, **stack_dimensions()}


class _StackEmfProvider(AmazonCloudWatchEMFProvider):
    """Powertools' EMF provider, adding the Stack dimension to every blob it serializes (a flush, or the automatic
    flush at 100 metrics), and to the cold-start metric, which Powertools emits with its own dimensions."""

    def serialize_metric_set(self, metrics: dict | None = None, dimensions: dict | None = None, metadata=None) -> Any:
        for name, value in stack_dimensions().items():
            if name not in self.dimension_set:
                self.add_dimension(name=name, value=value)
        return super().serialize_metric_set(metrics=metrics, dimensions=dimensions, metadata=metadata)

    def add_cold_start_metric(self, context: Any) -> None:
        with single_metric(
            name="ColdStart",
            unit=MetricUnit.Count,
            value=1,
            namespace=self.namespace,
            default_dimensions=default_dimensions(),
        ) as metric:
            metric.add_dimension(
                name="function_name", value=resolve_cold_start_function_name(self.function_name, context)
            )


logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
# The same shared metric, dimension and metadata sets Powertools keeps for every Metrics instance, serialized by the
# provider above (tests and other modules read metrics.metric_set, flush and clear as usual).
metrics.provider = _StackEmfProvider(
    namespace=NAMESPACE,
    service=SERVICE,
    metric_set=metrics.metric_set,
    dimension_set=metrics.dimension_set,
    metadata_set=metrics.metadata_set,
    default_dimensions=metrics.default_dimensions,
)

SUMMARY_METRICS = {
    "instances": "InstancesScanned",
    "compliant": "InstancesCompliant",
    "fixed": "InstancesFixed",
    "noncompliant": "InstancesNoncompliant",
    "excluded": "InstancesExcluded",
    "errors": "Errors",
    "warnings": "InstancesWithWarnings",
}


def _count(name: str, value: float) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def _dimensioned(name: str, value: float, dimension: str, dimension_value: str) -> None:
    """A metric with one extra dimension, emitted as its own EMF blob (keeps the service and Stack dimensions)."""
    with single_metric(
        name=name, unit=MetricUnit.Count, value=value, namespace=NAMESPACE, default_dimensions=default_dimensions()
    ) as metric:
        metric.add_dimension(name=dimension, value=dimension_value)


def record_scan(document: dict) -> None:
    """Summary counters, ScanCompleted, remediations applied/failed, and failures by check id, of a report's dict."""
    actions = [a for instance in document["instances"] for a in instance["actions"]]
    failures = dict.fromkeys(CHECK_IDS, 0)
    for instance in document["instances"]:
        for check_id, check in instance["checks"].items():
            if check["status"] in ("fail", "would-fix", "error"):
                failures[check_id] += 1
    applied = sum(1 for a in actions if a["status"] == "done")
    record_scan_counts(document["summary"], applied, sum(1 for a in actions if a["status"] == "failed"), failures)


def record_scan_counts(summary: dict, applied: int, failed: int, failures: dict[str, int]) -> None:
    """The same from counts (a streamed report's: outputs.stream.ReportStream)."""
    for key, name in SUMMARY_METRICS.items():
        _count(name, summary.get(key, 0))
    _count("ScanCompleted", 1)
    _count("RemediationsApplied", applied)
    _count("RemediationsFailed", failed)
    for check_id, count in failures.items():
        _dimensioned("CheckFailures", count, "CheckId", check_id)


def record_refresh(summary: dict) -> None:
    """RefreshApplied, prefixes added and removed, alerts raised."""
    if summary.get("status") == "applied":
        _count("RefreshApplied", 1)
    written = summary.get("status") != "planned"  # report mode's catch-up plans, it adds and removes nothing
    _count("PrefixesAdded", summary.get("prefixes_added", 0) if written else 0)
    _count("PrefixesRemoved", summary.get("prefixes_revoked", 0) if written else 0)
    _count("RefreshAlerts", len(summary.get("alerts", ())))


def record_rejection(reason: str) -> None:
    """One RefreshRejected metric with the reason as its dimension."""
    _dimensioned("RefreshRejected", 1, "Reason", reason)


def record_targets(document: dict, per_account: bool | None = None) -> None:
    """Per-account counts of a report's dict (record_account_counts)."""
    noncompliant: dict[str, int] = {}
    for entry in document.get("instances", ()):
        if entry["verdict"] in ("noncompliant", "error"):
            noncompliant[entry["account_id"]] = noncompliant.get(entry["account_id"], 0) + 1
    record_account_counts(document.get("targets", ()), noncompliant, per_account)


def record_account_counts(
    targets: Iterable[dict], noncompliant: Mapping[str, int], per_account: bool | None = None
) -> None:
    """Per-account counts (dimension AccountId, never per instance): TargetInstancesNoncompliant and TargetErrors,
    summed over the account's regions, for the accounts that have something to count (a custom metric is billed for
    the hours it receives data, so 500 healthy accounts cost nothing here). `noncompliant`: the account's
    non-compliant and errored instances. Only with the PerAccountMetrics setting (`per_account`; None:
    EIC_GUARD_PER_ACCOUNT_METRICS, default off): 2 metrics per account of an organization would cost more than the
    rest of eic-guard (README "Scale and cost")."""
    if per_account is None:
        per_account = bool(Settings.one_from_env("per_account_metrics"))
    if not per_account:
        return
    errors: dict[str, int] = {}
    for target in targets:
        errors[target["account_id"]] = errors.get(target["account_id"], 0) + (target["status"] == "error")
    for account in sorted(set(errors) | set(noncompliant)):
        if not (noncompliant.get(account) or errors.get(account)):
            continue
        _dimensioned("TargetInstancesNoncompliant", noncompliant.get(account, 0), "AccountId", account)
        _dimensioned("TargetErrors", errors.get(account, 0), "AccountId", account)
