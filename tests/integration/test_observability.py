"""What a run tells CloudWatch: EMF metric lines and structured log lines, for a scan with known drift (moto)."""

from __future__ import annotations

import contextlib
import io
import os
import sys

import boto3
import pytest
import responses
from eic_guard.checks import CHECK_IDS
from eic_guard.observability import logger, metrics, record_refresh, record_rejection, record_scan, record_targets
from eic_guard.settings import IP_RANGES_URL
from eic_guard.simulated import SimulatedAccount
from moto import mock_aws

from tests.conftest import EIC_US_EAST_1, IP_RANGES, REGION, SCAN_SUMMARY_METRICS, ApiCalls
from tests.lambda_runtime import emf_blobs, json_lines
from tests.step_functions import StateMachine

REQUEST_ID = "0b7e4c1a-5d2f-4e63-9a8b-1c2d3e4f5a6b"
STACK_NAME = "eic-guard-prod"  # template.yaml gives every function its stack's name (EIC_GUARD_STACK_NAME)


class _CurrentStdout:
    """Whatever sys.stdout is when a line is written, so capsys sees the log lines."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@contextlib.contextmanager
def powertools_to_stdout():
    """Metrics and Logger are module-level singletons: start empty, log INFO to stdout, and put things back.

    (The CLI, run in-process by other tests, moves the logger to stderr at WARNING.)
    """
    handler = logger.registered_handler
    stream, level = handler.stream, logger.log_level
    metrics.clear_metrics()
    handler.setStream(_CurrentStdout())
    logger.setLevel("INFO")
    try:
        yield
    finally:
        metrics.clear_metrics()
        handler.setStream(stream)
        logger.setLevel(level)


@pytest.fixture(autouse=True)
def clean_powertools():
    with powertools_to_stdout():
        yield


def metric_names(blob: dict) -> list[str]:
    return [m["Name"] for directive in blob["_aws"]["CloudWatchMetrics"] for m in directive["Metrics"]]


def blobs_with(blobs: list[dict], name: str) -> list[dict]:
    return [b for b in blobs if name in metric_names(b)]


def value(blob: dict, name: str) -> float:
    """The single value of `name` in an EMF blob (Powertools writes a list of values)."""
    [number] = blob[name]
    return number


def build_drift_fleet(account: SimulatedAccount) -> dict[str, str]:
    """Three opted-in instances: one fixable (no SSH from EIC, IMDS off), one on a non-AL2023 AMI, one excluded;
    plus one untagged instance that must not be read at all."""
    net = account.network()
    eic_ssh = account.security_group(
        net, "eic-ssh", [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": EIC_US_EAST_1}]}]
    )
    al2023 = account.al2023_ami()
    ubuntu = account.own_image("ubuntu-22.04-custom")
    [fixable] = account.launch(
        image_id=al2023, subnet_id=net.public_subnet_id, group_ids=[net.app_group_id], public_ip=True, imds="disabled"
    )
    [wrong_ami] = account.launch(image_id=ubuntu, subnet_id=net.public_subnet_id, group_ids=[eic_ssh], public_ip=True)
    [excluded] = account.launch(
        image_id=al2023,
        subnet_id=net.public_subnet_id,
        group_ids=[net.app_group_id],
        public_ip=True,
        tags={"eic-guard:exclude": "legacy bastion"},
    )
    account.launch(
        image_id=ubuntu, subnet_id=net.public_subnet_id, group_ids=[net.app_group_id], public_ip=True, opted_in=False
    )
    return {"fixable": fixable, "wrong_ami": wrong_ami, "excluded": excluded}


@pytest.fixture(scope="module")
def scan_run():
    """Invoke the scan handler once for the module (remediate mode, pinned URL served from the 2026-08-22 snapshot)
    and keep its standard output, its result and the AWS writes it made (one moto scan is enough to read)."""
    recorder = ApiCalls()
    original_init = boto3.Session.__init__

    def recording_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.events.register("provide-client-params.*.*", recorder)

    with pytest.MonkeyPatch.context() as patch, mock_aws():
        # Same environment as conftest's function-scoped aws_environment, which a module fixture cannot use.
        stray = [n for n in os.environ if n.startswith("EIC_GUARD_")]
        for name in (
            "AWS_PROFILE",
            "AWS_ENDPOINT_URL",
            "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN",
            "POWERTOOLS_METRICS_NAMESPACE",
            *stray,
        ):
            patch.delenv(name, raising=False)
        for name, setting in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_DEV": "false",
            "EIC_GUARD_REGIONS": REGION,
            "EIC_GUARD_MODE": "remediate",
            "EIC_GUARD_REPORTS_BUCKET": "eic-guard-reports",
            "EIC_GUARD_STACK_NAME": STACK_NAME,
        }.items():
            patch.setenv(name, setting)
        boto3.client("s3", REGION).create_bucket(Bucket="eic-guard-reports")
        fleet = build_drift_fleet(SimulatedAccount(boto3.client("ec2", REGION), boto3.client("ssm", REGION)))
        patch.setattr(boto3.Session, "__init__", recording_init)
        stdout = io.StringIO()
        with (
            powertools_to_stdout(),
            responses.RequestsMock(assert_all_requests_are_fired=True) as http,
            contextlib.redirect_stdout(stdout),
        ):
            http.add(responses.GET, IP_RANGES_URL, body=(IP_RANGES / "ip-ranges-2026-08-22.json").read_bytes())
            machine = StateMachine()  # the deployed state machine (tests/step_functions.py), once for the module
            machine.install(patch)
            run = machine.deploy().run({"job": "scan"}, plan_request_id=REQUEST_ID)
            assert run.status == "SUCCEEDED", (run.error, run.cause)
            result = run.output
    return {"result": result, "stdout": stdout.getvalue(), "fleet": fleet, "writes": recorder.writes()}


def test_scan_emits_the_summary_counters_in_one_emf_blob(scan_run):
    # Given a fleet with one fixable, one unfixable and one excluded opted-in instance (scan_run ran the handler)
    blobs = emf_blobs(scan_run["stdout"])

    # When the summary blob is read
    [summary] = blobs_with(blobs, "InstancesScanned")

    # Then it is in namespace EicGuard with the service and Stack dimensions and the exact counts of this run
    [directive] = summary["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "EicGuard"
    assert [sorted(d) for d in directive["Dimensions"]] == [["Stack", "service"]]
    assert (summary["service"], summary["Stack"]) == ("eic-guard", STACK_NAME)
    assert {name: value(summary, name) for name in SCAN_SUMMARY_METRICS} == {
        "InstancesScanned": 3,
        "InstancesCompliant": 0,
        "InstancesFixed": 1,
        "InstancesNoncompliant": 1,
        "InstancesExcluded": 1,
        "Errors": 0,
        "ScanCompleted": 1,
        # create eic-guard-ssh, authorize the EIC prefixes on it, attach it, enable IMDS
        "RemediationsApplied": 4,
        "RemediationsFailed": 0,
    }
    assert all(m["Unit"] == "Count" for m in directive["Metrics"])
    # And the counters agree with the handler's return value and with the writes really made
    assert scan_run["result"]["summary"] == {
        "instances": 3,
        "compliant": 0,
        "fixed": 1,
        "noncompliant": 1,
        "excluded": 1,
        "errors": 0,
        "warnings": 0,
        "connect_paths": {"public": 3},
    }
    # (the deployed stack also tags the instances' status, keeps its state and alert state, and publishes the alert)
    stack_bookkeeping = ("CreateTags", "PutItem", "Publish")
    assert sorted(w for w in scan_run["writes"] if w not in stack_bookkeeping) == sorted(
        [
            "CreateSecurityGroup",
            "AuthorizeSecurityGroupIngress",
            "ModifyNetworkInterfaceAttribute",
            "ModifyInstanceMetadataOptions",
            "PutObject",  # the report, JSON
            "PutObject",  # and HTML (the run's own objects under runs/ are not counted)
            "PutObject",  # the target's findings (JSON Lines for Athena)
        ]
    )
    # And the summary is published once, not once per region or per instance
    assert len(blobs_with(blobs, "ScanCompleted")) == 1
    # And it counts the instances with a warning (the report's summary.warnings; none here)
    assert value(summary, "InstancesWithWarnings") == 0


def test_every_metric_of_a_deployed_run_names_its_stack(scan_run):
    # Given every EMF blob the nightly run printed (Plan, the target worker, Aggregate; the cold start included)
    blobs = emf_blobs(scan_run["stdout"])

    # When their dimension sets are read
    dimension_sets = [
        d for blob in blobs for directive in blob["_aws"]["CloudWatchMetrics"] for d in directive["Dimensions"]
    ]

    # Then each one has service=eic-guard and Stack=<the stack's name>: the alarms of two stacks in one account
    # never read each other's metrics
    assert blobs and dimension_sets
    assert all({"service", "Stack"} <= set(d) for d in dimension_sets), dimension_sets
    assert {(b["service"], b["Stack"]) for b in blobs} == {("eic-guard", STACK_NAME)}


def test_without_a_stack_name_the_metrics_keep_the_service_dimension_only(capsys, monkeypatch):
    # Given no stack name in the environment (a run outside a deployed stack)
    monkeypatch.delenv("EIC_GUARD_STACK_NAME", raising=False)
    capsys.readouterr()

    # When a rejection and a refresh are recorded and flushed
    record_rejection("md5-mismatch")
    record_refresh({"status": "applied", "prefixes_added": 1, "prefixes_revoked": 0, "alerts": []})
    metrics.flush_metrics()

    # Then no blob has a Stack dimension (an empty one would be a series of its own)
    blobs = emf_blobs(capsys.readouterr().out)
    assert [sorted(d) for b in blobs for d in b["_aws"]["CloudWatchMetrics"][0]["Dimensions"]] == [
        ["Reason", "service"],
        ["service"],
    ]


def test_scan_emits_one_check_failures_blob_per_check(scan_run):
    # Given the scan where only the AMI check stays failing (on one instance); the fixed checks do not count
    blobs = blobs_with(emf_blobs(scan_run["stdout"]), "CheckFailures")

    # When the CheckFailures blobs are indexed by their CheckId dimension
    by_check = {b["CheckId"]: b for b in blobs}

    # Then there is exactly one per check id, each with the service, Stack and CheckId dimensions and the right count
    assert len(blobs) == len(CHECK_IDS)
    assert set(by_check) == set(CHECK_IDS)
    for check_id, blob in by_check.items():
        [directive] = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "EicGuard"
        assert [sorted(d) for d in directive["Dimensions"]] == [["CheckId", "Stack", "service"]]
        assert (blob["service"], blob["Stack"]) == ("eic-guard", STACK_NAME)
        assert value(blob, "CheckFailures") == (1 if check_id == "al2023-ami" else 0), check_id


def test_scan_log_lines_are_json_with_the_run_id_and_name_each_failing_check(scan_run):
    # Given the scan's standard output
    logs = [line for line in json_lines(scan_run["stdout"]) if "_aws" not in line]

    # When the log lines are read
    messages = [line["message"] for line in logs]
    not_passing = [line for line in logs if line["message"] == "check not passing"]

    # Then every line carries the invocation's request id as run_id
    assert "run planned" in messages and "target done" in messages and "run finished" in messages
    assert {line.get("run_id") for line in logs} == {REQUEST_ID}
    assert all(line["service"] == "eic-guard" for line in logs)
    # And exactly one "check not passing" line names the unfixable instance, its check and reason
    assert len(not_passing) == 1
    [line] = not_passing
    assert line["instance_id"] == scan_run["fleet"]["wrong_ami"]
    assert line["check"] == "al2023-ami"
    assert line["status"] == "fail"
    assert line["region"] == REGION
    assert "is not owned by Amazon" in line["reason"]
    # And it says whose instance it is: the account (no alias here), its Name tag and owner tags
    assert (line["account"], line.get("instance_name"), line["owner_tags"]) == ("123456789012", None, {})


def test_record_scan_counts_only_done_actions_as_applied_and_failed_ones_as_failed(capsys):
    # Given a report document with a done, a planned (report mode would plan) and a failed action,
    # and checks that are failing, planned, errored, fixed and passing
    def instance(actions: list[str], **checks: str) -> dict:
        return {
            "actions": [{"action": "enable-imds", "resource": "i-1", "status": s, "detail": ""} for s in actions],
            "checks": {k.replace("_", "-"): {"status": v, "reason": None} for k, v in checks.items()},
        }

    document = {
        "summary": {"instances": 3, "compliant": 0, "fixed": 1, "noncompliant": 1, "excluded": 0, "errors": 1},
        "instances": [
            instance(["done"], imds_enabled="fixed", al2023_ami="pass"),
            instance(["planned"], imds_enabled="would-fix", al2023_ami="fail"),
            instance(["failed"], imds_enabled="error", public_ipv4="not-applicable"),
        ],
    }
    capsys.readouterr()

    # When it is recorded and flushed
    record_scan(document)
    metrics.flush_metrics()

    # Then one action counts as applied, one as failed, and the planned one as neither
    blobs = emf_blobs(capsys.readouterr().out)
    [summary] = blobs_with(blobs, "RemediationsApplied")
    assert (value(summary, "RemediationsApplied"), value(summary, "RemediationsFailed")) == (1, 1)
    assert (value(summary, "InstancesFixed"), value(summary, "Errors")) == (1, 1)
    # And would-fix, fail and error count as failures of their check; fixed, pass and not-applicable do not
    failures = {b["CheckId"]: value(b, "CheckFailures") for b in blobs_with(blobs, "CheckFailures")}
    assert failures == {**dict.fromkeys(CHECK_IDS, 0), "imds-enabled": 2, "al2023-ami": 1}


def test_record_rejection_emits_refresh_rejected_with_the_reason(capsys):
    # Given nothing emitted yet
    capsys.readouterr()

    # When a rejection is recorded
    record_rejection("md5-mismatch")

    # Then one blob is printed at once: RefreshRejected=1 with the service and Reason dimensions
    [blob] = emf_blobs(capsys.readouterr().out)
    [directive] = blob["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "EicGuard"
    assert directive["Dimensions"] == [["service", "Reason"]]
    assert metric_names(blob) == ["RefreshRejected"]
    assert (blob["service"], blob["Reason"], value(blob, "RefreshRejected")) == ("eic-guard", "md5-mismatch", 1)


def test_record_refresh_emits_prefix_counters_and_refresh_applied(capsys):
    # Given an applied refresh that added 3 prefixes, revoked 1 and raised one alert
    summary = {
        "status": "applied",
        "sync_token": "1787411825",
        "prefixes_added": 3,
        "prefixes_revoked": 1,
        "alerts": ["ap-south-2: no prefix"],
    }
    capsys.readouterr()

    # When it is recorded and the metrics are flushed
    record_refresh(summary)
    metrics.flush_metrics()

    # Then one blob carries the refresh counters under the service dimension
    [blob] = emf_blobs(capsys.readouterr().out)
    assert blob["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "EicGuard"
    assert blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    assert {n: value(blob, n) for n in metric_names(blob)} == {
        "RefreshApplied": 1,
        "PrefixesAdded": 3,
        "PrefixesRemoved": 1,
        "RefreshAlerts": 1,
    }


def test_record_refresh_of_a_stale_notification_does_not_count_as_applied(capsys):
    # Given a stale notification's summary (nothing applied)
    capsys.readouterr()

    # When it is recorded and flushed
    record_refresh({"status": "stale", "sync_token": "1", "stored_sync_token": "1787411825"})
    metrics.flush_metrics()

    # Then RefreshApplied is absent and the counters are zero
    [blob] = emf_blobs(capsys.readouterr().out)
    assert "RefreshApplied" not in metric_names(blob)
    assert {n: value(blob, n) for n in metric_names(blob)} == {
        "PrefixesAdded": 0,
        "PrefixesRemoved": 0,
        "RefreshAlerts": 0,
    }


def test_record_targets_counts_per_account_only_where_there_is_something_to_count(capsys):
    # Given a run over three accounts: one healthy, one with a non-compliant instance, one whose target failed
    healthy, noncompliant, unreachable = "111111111111", "222222222222", "333333333333"
    document = {
        "targets": [
            {"account_id": healthy, "region": REGION, "status": "ok"},
            {"account_id": noncompliant, "region": REGION, "status": "ok"},
            {"account_id": unreachable, "region": REGION, "status": "error"},
        ],
        "instances": [
            {"account_id": healthy, "verdict": "compliant"},
            {"account_id": noncompliant, "verdict": "noncompliant"},
            {"account_id": noncompliant, "verdict": "fixed"},
        ],
    }

    # When the per-account metrics are recorded (PerAccountMetrics=true)
    record_targets(document, per_account=True)
    blobs = emf_blobs(capsys.readouterr().out)

    # Then each account with a problem gets both counts under its AccountId, and the healthy one nothing (a custom
    # metric is billed for the hours it receives data)
    counts = {(b["AccountId"], name): value(b, name) for b in blobs for name in metric_names(b)}
    assert counts == {
        (noncompliant, "TargetInstancesNoncompliant"): 1,
        (noncompliant, "TargetErrors"): 0,
        (unreachable, "TargetInstancesNoncompliant"): 0,
        (unreachable, "TargetErrors"): 1,
    }
    assert all(b["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service", "AccountId"]] for b in blobs)
