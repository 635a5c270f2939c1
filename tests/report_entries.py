"""Report pieces the output tests build by hand (table, HTML, CSV, alerts): every check, and a summary that adds up."""

from __future__ import annotations

from collections.abc import Sequence

from eic_guard.checks import check_ids_for
from eic_guard.outputs.report import CheckEntry, InstanceEntry, Summary, TargetError

PASS = CheckEntry(status="pass", reason=None)


def every_check(**overrides: CheckEntry) -> dict[str, CheckEntry]:
    """Every check of a public-path instance, passing unless given (keyword `imds_enabled` for `imds-enabled`)."""
    by_id = {k.replace("_", "-"): v for k, v in overrides.items()}
    return {check_id: by_id.get(check_id, PASS) for check_id in check_ids_for("public")}


def summary_of(instances: Sequence[InstanceEntry], target_errors: Sequence[TargetError] = ()) -> Summary:
    """The summary a report of these instances has (each target error counts as an error, as build_report says)."""
    count = {v: sum(1 for e in instances if e.verdict == v) for v in ("compliant", "fixed", "noncompliant", "excluded")}
    return Summary(
        instances=len(instances),
        **count,
        errors=sum(1 for e in instances if e.verdict == "error") + len(target_errors),
        warnings=sum(1 for e in instances if e.warnings),
    )
