"""The per-account metric dimension is optional and off by default (PerAccountMetrics, issue 20): 2 custom metrics per
account of an organization would cost more than the rest of eic-guard, while the reports and alerts name every
account anyway."""

from __future__ import annotations

import pytest
from eic_guard.errors import ConfigurationError
from eic_guard.observability import STACK_NAME_ENV, record_account_counts, record_targets

from tests.lambda_runtime import emf_blobs

VARIABLE = "EIC_GUARD_PER_ACCOUNT_METRICS"
# A run with a target error in one account and a non-compliant instance in another (both would be recorded)
DOCUMENT = {
    "targets": [
        {"account_id": "111111111111", "region": "us-east-1", "status": "error"},
        {"account_id": "222222222222", "region": "us-east-1", "status": "ok"},
    ],
    "instances": [{"account_id": "222222222222", "verdict": "noncompliant"}],
}


def account_metrics(output: str) -> set[tuple[str, str]]:
    """(metric name, AccountId) of every EMF metric with an AccountId dimension in `output`."""
    return {
        (metric["Name"], blob["AccountId"])
        for blob in emf_blobs(output)
        for directive in blob["_aws"]["CloudWatchMetrics"]
        for metric in directive["Metrics"]
        if any("AccountId" in dimensions for dimensions in directive["Dimensions"])
    }


@pytest.mark.parametrize("value", [None, "", "false"], ids=["unset", "empty", "false"])
def test_by_default_no_metric_with_an_account_id_dimension_is_emitted(capsys, monkeypatch, value):
    # Given a deployed function's environment without the setting, or with it off
    monkeypatch.setenv(STACK_NAME_ENV, "eic-guard")
    if value is None:
        monkeypatch.delenv(VARIABLE, raising=False)
    else:
        monkeypatch.setenv(VARIABLE, value)

    # When the run's per-target counts are recorded
    record_targets(DOCUMENT)

    # Then nothing is emitted: no AccountId series at all
    assert account_metrics(capsys.readouterr().out) == set()


def test_with_the_setting_on_each_account_with_a_finding_gets_its_two_counts(capsys, monkeypatch):
    # Given PerAccountMetrics=true (the template passes it to the Aggregate function)
    monkeypatch.setenv(STACK_NAME_ENV, "eic-guard")
    monkeypatch.setenv(VARIABLE, "true")

    # When the run's per-target counts are recorded
    record_targets(DOCUMENT)

    # Then both accounts have both counts
    names = ("TargetInstancesNoncompliant", "TargetErrors")
    assert account_metrics(capsys.readouterr().out) == {(n, a) for n in names for a in ("111111111111", "222222222222")}


def test_an_explicit_choice_overrides_the_environment(capsys, monkeypatch):
    # Given the setting on in the environment, and a caller that says off (and the reverse)
    monkeypatch.setenv(VARIABLE, "true")
    record_targets(DOCUMENT, per_account=False)
    assert account_metrics(capsys.readouterr().out) == set()
    monkeypatch.setenv(VARIABLE, "false")
    record_targets(DOCUMENT, per_account=True)
    assert len(account_metrics(capsys.readouterr().out)) == 4


def test_a_value_that_is_not_a_boolean_is_a_configuration_error(monkeypatch):
    monkeypatch.setenv(VARIABLE, "per-account")
    with pytest.raises(ConfigurationError, match="EIC_GUARD_PER_ACCOUNT_METRICS"):
        record_targets(DOCUMENT)


def test_the_streamed_aggregates_counts_follow_the_same_setting(capsys, monkeypatch):
    # Given the counts the streamed Aggregate hands over (fanout/steps.py: record_account_counts)
    targets, noncompliant = DOCUMENT["targets"], {"222222222222": 1}
    monkeypatch.delenv(VARIABLE, raising=False)

    # When they are recorded by default, Then nothing with an AccountId is emitted
    record_account_counts(targets, noncompliant)
    assert account_metrics(capsys.readouterr().out) == set()

    # And with PerAccountMetrics=true both accounts get both counts
    monkeypatch.setenv(VARIABLE, "true")
    record_account_counts(targets, noncompliant)
    assert len(account_metrics(capsys.readouterr().out)) == 4
