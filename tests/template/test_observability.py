"""template.yaml: the alarms and the dashboard read exactly the metrics eic-guard emits (namespace EicGuard,
dimensions service=eic-guard and Stack=<the stack's name>; the per-account counts add AccountId), the functions' and
the state machine's own metrics, and notify the alerts topic."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from eic_guard.changes.publish import record_check, record_events
from eic_guard.checks import CHECK_IDS
from eic_guard.observability import (
    NAMESPACE,
    SERVICE,
    STACK_NAME_ENV,
    SUMMARY_METRICS,
    metrics,
    record_refresh,
    record_rejection,
    record_scan,
    record_targets,
)
from eic_guard.outputs.report import build_report

from tests.conftest import SCAN_SUMMARY_METRICS
from tests.lambda_runtime import emf_blobs
from tests.template.cfn import (
    PSEUDO,
    environment,
    parameter_values,
    physical,
    render,
    resolve,
    resource_exists,
    resources,
)

SCAN_METRICS = (*SCAN_SUMMARY_METRICS, "CheckFailures")
REFRESH_METRICS = ("RefreshApplied", "PrefixesAdded", "PrefixesRemoved", "RefreshAlerts", "RefreshRejected")
TARGET_METRICS = ("TargetInstancesNoncompliant", "TargetErrors")  # per account: dimension AccountId
FUNCTIONS = ("PlanFunction", "ScanTargetFunction", "AggregateFunction", "RefreshFunction", "OnChangeFunction")
BRIEFED_CHECK_IDS = {
    "public-ipv4",
    "eic-ssh-ingress",
    "al2023-ami",
    "imds-enabled",
    "internet-route",
    "network-acl",
} | {
    "endpoint-present",
    "endpoint-ssh-ingress",
    "endpoint-ssh-egress",
}
STACK = PSEUDO["AWS::StackName"]
# What every EicGuard metric of a deployed stack carries (template.yaml passes EIC_GUARD_STACK_NAME to every function).
STACK_DIMENSIONS = [{"Name": "service", "Value": "eic-guard"}, {"Name": "Stack", "Value": STACK}]
ALARM_LIMIT_SECONDS = 7 * 24 * 3600  # Period x EvaluationPeriods, for periods of one hour or more
SEARCH = re.compile(
    r"SEARCH\('\{(?P<namespace>[^,}]+),(?P<dimensions>[^}]*)\}(?P<filters>(?: \w+=\"[^\"]*\")*)"
    r" MetricName=\"(?P<name>[^\"]+)\"'"
)
FILTER = re.compile(r" (?P<name>\w+)=\"(?P<value>[^\"]*)\"")


def alarm(logical_id: str) -> dict:
    resource = resources()[logical_id]
    assert resource["Type"] == "AWS::CloudWatch::Alarm"
    return resolve(resource["Properties"], parameter_values())


# ---------------------------------------------------------------- alarms


def test_every_alarm_notifies_the_alerts_topic():
    # Given every alarm of the template
    alarms = [k for k, v in resources().items() if v["Type"] == "AWS::CloudWatch::Alarm"]

    # When their actions are read
    actions = {k: resources()[k]["Properties"]["AlarmActions"] for k in alarms}

    # Then the expected alarms exist (one on each dead-letter queue) and each one notifies the alerts topic
    assert set(alarms) == {
        "ErrorsAlarm",
        "NoRecentScanAlarm",
        "RefreshDeadLetterAlarm",
        "OnChangeDeadLetterAlarm",
        "EventDeliveryDeadLetterAlarm",
    }
    queues = {k for k, v in resources().items() if v["Type"] == "AWS::SQS::Queue" and "DeadLetter" in k}
    watched = {
        resources()[k]["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0] for k in alarms if "DeadLetter" in k
    }
    assert watched == queues
    assert all(a == [{"Ref": "AlertsTopic"}] for a in actions.values()), actions


def test_errors_alarm_fires_on_any_reported_error_or_failed_invocation():
    # Given the errors alarm
    errors = alarm("ErrorsAlarm")

    # When its metric queries are read
    queries = {m["Id"]: m for m in errors["Metrics"]}
    returned = [m for m in errors["Metrics"] if m.get("ReturnData", True)]
    stats = {q: m["MetricStat"]["Metric"] for q, m in queries.items() if "MetricStat" in m}

    # Then it sums the engine's Errors metric, every function's Lambda Errors and the state machine's failed and
    # timed-out executions, and fires above zero
    assert len(returned) == 1 and "Expression" in returned[0]
    assert set(stats) <= set(re.findall(r"[a-z][A-Za-z0-9_]*", returned[0]["Expression"]))
    state_machine = json.dumps([{"Name": "StateMachineArn", "Value": physical("EicGuardStateMachine")}])
    assert sorted((m["Namespace"], m["MetricName"], json.dumps(m["Dimensions"])) for m in stats.values()) == sorted(
        [
            ("EicGuard", "Errors", json.dumps(STACK_DIMENSIONS)),
            *(
                ("AWS/Lambda", "Errors", json.dumps([{"Name": "FunctionName", "Value": physical(f)}]))
                for f in FUNCTIONS
            ),
            ("AWS/States", "ExecutionsFailed", state_machine),
            ("AWS/States", "ExecutionsTimedOut", state_machine),
        ]
    )
    assert all(queries[q]["MetricStat"]["Stat"] == "Sum" for q in stats)
    assert (errors["ComparisonOperator"], errors["Threshold"]) == ("GreaterThanThreshold", 0)
    assert errors["TreatMissingData"] == "notBreaching"


def test_no_recent_scan_alarm_fires_when_no_scan_completed_for_26_hours():
    # Given the no-recent-scan alarm
    no_scan = alarm("NoRecentScanAlarm")

    # When its window is computed
    window = no_scan["Period"] * no_scan["EvaluationPeriods"]

    # Then it watches ScanCompleted over 26 hours, a window CloudWatch accepts (periods of one hour or more may
    # span seven days), and every period without a completed scan, missing data included, counts as breaching
    assert (no_scan["Namespace"], no_scan["MetricName"], no_scan["Dimensions"]) == (
        "EicGuard",
        "ScanCompleted",
        STACK_DIMENSIONS,
    )
    assert window == 26 * 3600
    assert no_scan["Period"] >= 3600 and window <= ALARM_LIMIT_SECONDS
    assert no_scan["DatapointsToAlarm"] == no_scan["EvaluationPeriods"]
    assert (no_scan["Statistic"], no_scan["ComparisonOperator"], no_scan["Threshold"]) == (
        "Sum",
        "LessThanThreshold",
        1,
    )
    assert no_scan["TreatMissingData"] == "breaching"


@pytest.mark.parametrize(("state", "exists"), [("ENABLED", True), ("DISABLED", False)])
def test_no_recent_scan_alarm_exists_only_while_the_schedule_runs(state, exists):
    # Given a schedule state
    params = parameter_values(ScheduleState=state)

    # When the alarm's condition is evaluated
    present = resource_exists("NoRecentScanAlarm", params)

    # Then a disabled schedule does not raise a "no recent scan" alarm every day
    assert present is exists


def test_dead_letter_alarm_fires_when_a_notification_waits_in_the_queue():
    # Given the dead-letter alarm
    dead_letters = alarm("RefreshDeadLetterAlarm")

    # When its metric is read
    metric = (dead_letters["Namespace"], dead_letters["MetricName"], dead_letters["Dimensions"])

    # Then it fires as soon as the refresh dead-letter queue holds a visible message
    assert metric == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        [{"Name": "QueueName", "Value": physical("RefreshDeadLetterQueue", "QueueName")}],
    )
    assert (dead_letters["ComparisonOperator"], dead_letters["Threshold"]) == ("GreaterThanThreshold", 0)
    assert dead_letters["TreatMissingData"] == "notBreaching"


# ---------------------------------------------------------------- dashboard


def dashboard_widgets(**overrides: str) -> list[dict]:
    dashboard = resources()["EicGuardDashboard"]
    assert dashboard["Type"] == "AWS::CloudWatch::Dashboard"
    body = resolve(dashboard["Properties"]["DashboardBody"], parameter_values(**overrides))
    assert isinstance(body, str) and "${" not in body, "every ${...} in the body must be substituted"
    return json.loads(body)["widgets"]


def dashboard_metrics(**overrides: str) -> list[tuple[str, str, dict[str, str]]]:
    """(namespace, metric name, dimensions) of every metric line of the dashboard (SEARCH: its schema's dimension
    names, "*" for a value it searches over, the value of a dimension it filters on)."""
    found = []
    for widget in dashboard_widgets(**overrides):
        for line in widget.get("properties", {}).get("metrics", []):
            if isinstance(line[0], dict) and "expression" in line[0]:
                match = SEARCH.search(line[0]["expression"])
                if match:
                    names = dict.fromkeys(match.group("dimensions").split(","), "*")
                    names.update((f.group("name"), f.group("value")) for f in FILTER.finditer(match.group("filters")))
                    found.append((match.group("namespace"), match.group("name"), names))
                continue
            namespace, name, *rest = line
            pairs = [p for p in rest if not isinstance(p, dict)]
            found.append((namespace, name, dict(zip(pairs[::2], pairs[1::2], strict=True))))
    return found


@pytest.mark.parametrize("per_account", ["false", "true"])
def test_dashboard_body_is_json_and_every_widget_is_in_the_stack_region(per_account):
    # Given the dashboard body with every ${...} substituted, per-account metrics off (the default) or on
    widgets = dashboard_widgets(PerAccountMetrics=per_account)

    # When the metric widgets are picked out
    metric_widgets = [w for w in widgets if w["type"] == "metric"]

    # Then there are some, each with a title, in the stack's region, on the 24-column grid
    assert len(metric_widgets) >= 6
    for widget in metric_widgets:
        assert widget["properties"]["title"]
        assert widget["properties"]["region"] == "eu-west-3"
        assert widget["x"] + widget["width"] <= 24


def test_dashboard_shows_every_metric_eic_guard_emits_with_the_service_and_stack_dimensions():
    # Given every metric line of the dashboard of a stack with per-account metrics on
    metrics = dashboard_metrics(PerAccountMetrics="true")

    # When the EicGuard ones are collected by name
    names = {name for namespace, name, _ in metrics if namespace == NAMESPACE}

    # Then every scan, refresh and per-target metric is there (the engine's summary counters too), each with
    # service=eic-guard and this stack's name (a SEARCH filters on it: another stack's series stay out)
    assert set(SCAN_METRICS + REFRESH_METRICS + TARGET_METRICS) <= names
    assert set(SUMMARY_METRICS.values()) <= names
    for namespace, name, dimensions in metrics:
        if namespace == NAMESPACE:
            assert dimensions.get("service") in (SERVICE, "*"), name
            assert dimensions.get("Stack") == STACK, name


def test_dashboard_shows_failures_for_every_check_and_rejections_by_reason():
    # Given every metric line of the dashboard
    metrics = dashboard_metrics()

    # When the CheckFailures and RefreshRejected lines are read
    check_ids = {d["CheckId"] for ns, name, d in metrics if (ns, name) == (NAMESPACE, "CheckFailures")}
    rejected = [d for ns, name, d in metrics if (ns, name) == (NAMESPACE, "RefreshRejected")]

    # Then there is one failures line per check the engine has, and the rejections are split by Reason (a SEARCH,
    # so a reason added later shows up without a template change)
    assert check_ids == set(CHECK_IDS) == BRIEFED_CHECK_IDS
    assert rejected and all(set(d) == {"service", "Stack", "Reason"} for d in rejected)


def test_dashboard_shows_per_account_counts_with_a_search_over_account_ids_when_they_are_on():
    # Given every metric line of the dashboard of a stack with PerAccountMetrics=true
    metrics = dashboard_metrics(PerAccountMetrics="true")

    # When the per-target metrics are read
    per_account = {name: d for ns, name, d in metrics if ns == NAMESPACE and name in TARGET_METRICS}

    # Then each is a SEARCH over the AccountId dimension (an account added later shows up without a template change)
    assert per_account == {name: {"AccountId": "*", "service": "*", "Stack": STACK} for name in TARGET_METRICS}


def test_by_default_the_dashboard_searches_no_per_account_metric_and_says_where_the_accounts_are():
    # Given the dashboard of a stack deployed with its defaults (PerAccountMetrics=false)
    assert parameter_values()["PerAccountMetrics"] == "false"
    widgets = dashboard_widgets()

    # When its metric lines and texts are read
    names = {name for namespace, name, _ in dashboard_metrics() if namespace == NAMESPACE}
    texts = [w["properties"]["markdown"] for w in widgets if w["type"] == "text"]

    # Then no line reads a per-account metric (nothing emits one), and a text says they are off and how to turn
    # them on, and where every account's figures are meanwhile
    assert names.isdisjoint(TARGET_METRICS) and not any("AccountId" in str(w) for w in widgets if w["type"] == "metric")
    [per_account] = [text for text in texts if "PerAccountMetrics" in text]
    assert "PerAccountMetrics=false" in per_account and "PerAccountMetrics=true" in per_account
    assert "report" in per_account and "findings" in per_account


def test_the_aggregate_function_gets_the_per_account_metrics_setting_from_its_parameter():
    # Given the stack rendered with each value
    for value in ("false", "true"):
        # Then the Aggregate function (the only one recording per-account counts) is given it
        stack = render(parameter_values(PerAccountMetrics=value))
        assert stack.environment("AggregateFunction")["EIC_GUARD_PER_ACCOUNT_METRICS"] == value


def test_dashboard_shows_lambda_errors_of_every_function_the_fan_out_and_the_dead_letter_queue():
    # Given every metric line of the dashboard
    metrics = dashboard_metrics()

    # When the AWS namespaces are picked out
    aws = [(ns, name, d) for ns, name, d in metrics if ns.startswith("AWS/")]

    # Then every function's Lambda errors, the state machine's executions, the worker's concurrency and throttles,
    # and the dead-letter queue depth are shown
    for function_id in FUNCTIONS:
        assert ("AWS/Lambda", "Errors", {"FunctionName": physical(function_id)}) in aws
    state_machine = {"StateMachineArn": physical("EicGuardStateMachine")}
    for name in ("ExecutionsStarted", "ExecutionsSucceeded", "ExecutionsFailed", "ExecutionsTimedOut"):
        assert ("AWS/States", name, state_machine) in aws
    for name in ("ConcurrentExecutions", "Throttles"):
        assert ("AWS/Lambda", name, {"FunctionName": physical("ScanTargetFunction")}) in aws
    assert (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        {"QueueName": physical("RefreshDeadLetterQueue", "QueueName")},
    ) in aws


@pytest.mark.parametrize("per_account", ["false", "true"])
def test_dashboard_widgets_do_not_overlap(per_account):
    # Given the widgets' positions on the 24-column grid
    cells = [
        (x, y)
        for w in dashboard_widgets(PerAccountMetrics=per_account)
        for x in range(w["x"], w["x"] + w["width"])
        for y in range(w["y"], w["y"] + w["height"])
    ]

    # Then no cell is covered twice
    assert len(cells) == len(set(cells))


def test_the_per_account_metrics_the_dashboard_searches_are_the_ones_aggregate_emits(capsys, monkeypatch):
    # Given a run document with two accounts, one with a non-compliant instance and a target error
    document = {
        "targets": [
            {"account_id": "111111111111", "region": "us-east-1", "status": "error"},
            {"account_id": "222222222222", "region": "us-east-1", "status": "ok"},
        ],
        "instances": [{"account_id": "222222222222", "verdict": "noncompliant"}],
    }

    # When the engine records the per-target metrics (what AggregateFunction emits, with its stack name, in a stack
    # deployed with PerAccountMetrics=true)
    monkeypatch.setenv(STACK_NAME_ENV, STACK)
    monkeypatch.setenv("EIC_GUARD_PER_ACCOUNT_METRICS", "true")
    record_targets(document)
    blobs = emf_blobs(capsys.readouterr().out)

    # Then every metric is one of the dashboard's per-account SEARCH metrics, in EicGuard, with exactly the
    # dimensions the SEARCH names
    emitted = {
        (directive["Namespace"], metric["Name"], tuple(sorted(dimensions)))
        for blob in blobs
        for directive in blob["_aws"]["CloudWatchMetrics"]
        for metric in directive["Metrics"]
        for dimensions in directive["Dimensions"]
    }
    assert emitted == {(NAMESPACE, name, ("AccountId", "Stack", "service")) for name in TARGET_METRICS}


# ---------------------------------------------------------------- what the code emits


def emitted_by_a_deployed_stack(capsys, monkeypatch, per_account: str) -> list[tuple[str, str, dict[str, str]]]:
    """(namespace, metric name, dimensions) of every EMF metric the engine's recorders write, with the stack name the
    template gives every function: a scan, a refresh, a rejection, per-account counts (PerAccountMetrics) and an
    event-driven check."""
    monkeypatch.setenv(STACK_NAME_ENV, STACK)
    monkeypatch.setenv("EIC_GUARD_PER_ACCOUNT_METRICS", per_account)
    summary = dict.fromkeys(SUMMARY_METRICS, 1)
    record_scan({"summary": summary, "instances": [{"actions": [{"status": "done"}], "checks": {}}]})
    record_refresh({"status": "applied", "prefixes_added": 1, "prefixes_revoked": 1, "alerts": ["an alert"]})
    record_rejection("md5-mismatch")
    record_targets({"targets": [{"account_id": "111111111111", "region": "eu-west-3", "status": "error"}]})
    now = datetime.now(UTC)
    ranges = SimpleNamespace(sync_token="1787411825", create_date="2026-08-22-15-17-05")
    report = build_report(
        run_id="r", mode="report", account_id="1", regions=[], started=now, finished=now, ip_ranges=ranges, targets=[]
    )
    record_events(received=1, ignored=0, failed=0)
    record_check(report, now)
    metrics.flush_metrics()
    return [
        (directive["Namespace"], metric["Name"], {name: str(blob[name]) for name in dimensions})
        for blob in emf_blobs(capsys.readouterr().out)
        for directive in blob["_aws"]["CloudWatchMetrics"]
        for metric in directive["Metrics"]
        for dimensions in directive["Dimensions"]
    ]


def alarm_metrics() -> list[tuple[str, str, dict[str, str]]]:
    """(namespace, metric name, dimensions) of every metric an alarm of the template reads."""
    found = []
    for logical_id, resource in resources().items():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        properties = alarm(logical_id)
        stats = [properties] + [m["MetricStat"]["Metric"] for m in properties.get("Metrics", []) if "MetricStat" in m]
        found += [
            (s["Namespace"], s["MetricName"], {d["Name"]: d["Value"] for d in s["Dimensions"]})
            for s in stats
            if "MetricName" in s
        ]
    return found


def reads(shown: dict[str, str], emitted: dict[str, str]) -> bool:
    """Whether a metric query with these dimensions reads a series emitted with those ("*": a SEARCH over it)."""
    return set(shown) == set(emitted) and all(v in ("*", emitted[k]) for k, v in shown.items())


@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
@pytest.mark.parametrize("per_account", ["false", "true"])
def test_every_alarm_and_dashboard_metric_of_eic_guard_is_a_series_the_code_emits(capsys, monkeypatch, per_account):
    # Given every series the engine emits when deployed, and every EicGuard metric the alarms and the dashboard read,
    # with per-account metrics off (the default) or on
    metrics.clear_metrics()
    try:
        emitted = emitted_by_a_deployed_stack(capsys, monkeypatch, per_account)
    finally:
        metrics.clear_metrics()
    shown = [m for m in alarm_metrics() + dashboard_metrics(PerAccountMetrics=per_account) if m[0] == NAMESPACE]

    # When each one is matched to the emitted series of its name
    unread = [
        (name, dimensions)
        for _, name, dimensions in shown
        if not any(reads(dimensions, e) for _, n, e in emitted if n == name)
    ]

    # Then every one reads a real series: service=eic-guard and Stack=<this stack> on every metric, so a second
    # stack in the account has its own alarms and dashboard
    assert {n for _, n, _ in shown} >= {"Errors", "ScanCompleted", "InstancesWithWarnings", "CheckFailures"}
    assert unread == []
    assert all(e.get("Stack") == STACK and e.get("service") == SERVICE for _, _, e in emitted)
    # And the AccountId series exist only when the stack asks for them
    assert any("AccountId" in e for _, _, e in emitted) == (per_account == "true")


def test_every_function_gives_the_metrics_its_stack_name():
    # Given the functions that emit metrics
    functions = [f for f in resources() if resources()[f]["Type"] == "AWS::Serverless::Function"]

    # When their environment is read (Globals merged)
    stack_names = {f: environment(f).get(STACK_NAME_ENV) for f in functions}

    # Then each one names its stack, the dimension the alarms and the dashboard filter on
    assert functions and stack_names == {f: {"Ref": "AWS::StackName"} for f in functions}
