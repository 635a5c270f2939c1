"""Shared test setup: fake credentials, no network, the real ip-ranges snapshots and moto accounts."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from botocore.loaders import create_loader
from eic_guard import simulated_eice
from eic_guard.ranges import ip_ranges
from eic_guard.simulated import SimulatedAccount
from moto import mock_aws

from tests import moto_security_hub
from tests.layer_contents import block_pruned_modules

block_pruned_modules()  # what the layer leaves out of its dependencies, the tests cannot import either
moto_security_hub.install()  # Security Hub's documented behaviour where moto differs (tests/moto_security_hub.py)
simulated_eice.install()  # the EC2 Instance Connect Endpoint API moto lacks (eic_guard/simulated_eice.py)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
EVENTS = ROOT / "events"
IP_RANGES = FIXTURES / "ip-ranges"
REGION = "us-east-1"
EIC_US_EAST_1 = "18.206.107.24/29"
EIC_US_EAST_1_V6 = "2600:1f18:6fe3:8c00::/56"
# The run-summary metrics a scan emits (one EMF blob), written out here rather than read from the package.
SCAN_SUMMARY_METRICS = (
    "InstancesScanned",
    "InstancesCompliant",
    "InstancesFixed",
    "InstancesNoncompliant",
    "InstancesExcluded",
    "Errors",
    "ScanCompleted",
    "RemediationsApplied",
    "RemediationsFailed",
)


_LOADER = create_loader()


@pytest.fixture(autouse=True)
def shared_botocore_loader(monkeypatch):
    """Speed only, behaviour unchanged: every boto3 session of the suite shares one botocore data loader, so the
    endpoint and service model files are parsed once per worker instead of once per session (~0.2 s each)."""
    original = boto3.Session.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self._session.register_component("data_loader", _LOADER)

    monkeypatch.setattr(boto3.Session, "__init__", init)


@pytest.fixture(autouse=True)
def fresh_lambda_container(monkeypatch):
    """Each test starts a new Lambda container: the handlers' reused clients (aws.clients.lambda_clients) are built
    again, inside that test's moto mock and environment."""
    monkeypatch.setattr("eic_guard.aws.clients._LAMBDA_CLIENTS", None)
    monkeypatch.setattr("eic_guard.fanout.steps._RUN_ACCOUNTS", [])
    monkeypatch.setattr("eic_guard.changes.check._ORGANIZATION", None)


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch):
    """Fake credentials and a fixed region; never a real profile or endpoint."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name in [n for n in __import__("os").environ if n.startswith("EIC_GUARD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_DEV", "false")


@pytest.fixture(autouse=True)
def no_progress_lines_on_a_slow_machine(monkeypatch):
    """The CLI's periodic progress line on a non-terminal stderr (cli/progress.py) starts once a run has lasted
    DELAY seconds; on a loaded machine a test's run may last that long, and tests that read stderr exactly would see
    it. Tests of the progress line set DELAY themselves."""
    monkeypatch.setattr("eic_guard.cli.progress.DELAY", 3600.0)


@pytest.fixture(autouse=True)
def table_width(monkeypatch):
    """The terminal table takes $COLUMNS as its width (outputs/table.py), and pytest-xdist's workers run with
    COLUMNS=80: without it every test's table is 160 wide, as for any file or pipe."""
    monkeypatch.delenv("COLUMNS", raising=False)


@pytest.fixture(autouse=True)
def cli_state_directory(monkeypatch, tmp_path):
    """The CLI's default state file (a scan keeps alerts-state.json beside it) is the test's own, never ~/.eic-guard:
    in-process scans (the demo's included) neither touch the home directory nor see each other's alerts."""
    monkeypatch.setattr("eic_guard.cli.arguments.DEFAULT_STATE_FILE", str(tmp_path / ".eic-guard" / "state.json"))


@pytest.fixture(scope="session")
def ranges_2026() -> ip_ranges.IpRanges:
    """The newest real snapshot (2026-08-22)."""
    return ip_ranges.load(str(IP_RANGES / "ip-ranges-2026-08-22.json"))


@pytest.fixture
def aws():
    """In-process moto for every service."""
    with mock_aws():
        yield


@pytest.fixture
def ec2(aws):
    return boto3.client("ec2", REGION)


@pytest.fixture
def account(ec2) -> SimulatedAccount:
    return SimulatedAccount(ec2, boto3.client("ssm", REGION))


def create_state_table(name: str):
    """The state table (also Powertools' idempotency table), partition key `id`; returns the DynamoDB client."""
    client = boto3.client("dynamodb", REGION)
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return client


class ApiCalls:
    """Records every AWS API call made by botocore clients (operation name and parameters)."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, model, params, **_):
        self.calls.append((model.name, dict(params)))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def writes(self, run_objects: bool = False) -> list[str]:
        """Write calls; the fan-out's own run objects (S3 runs/…: manifest, targets, results) only when asked."""
        reads = ("Describe", "Get", "List")
        return [
            name
            for name, params in self.calls
            if not name.startswith(reads)
            and (run_objects or not (name == "PutObject" and str(params.get("Key", "")).startswith("runs/")))
        ]

    def count(self, name: str) -> int:
        return self.names().count(name)

    def clear(self) -> None:
        self.calls.clear()


@pytest.fixture
def api_calls(monkeypatch) -> ApiCalls:
    """Hook every new boto3 session's event system so calls made through eic-guard's clients are recorded."""
    recorder = ApiCalls()
    original = boto3.Session.__init__

    def patched(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.events.register("provide-client-params.*.*", recorder)

    monkeypatch.setattr(boto3.Session, "__init__", patched)
    return recorder


RUNS_BUCKET = "eic-guard-reports"


@pytest.fixture
def runs_bucket(aws, monkeypatch) -> str:
    """The reports bucket, which also holds the fan-out's run objects (manifest, targets, results)."""
    boto3.client("s3", REGION).create_bucket(Bucket=RUNS_BUCKET)
    monkeypatch.setenv("EIC_GUARD_REPORTS_BUCKET", RUNS_BUCKET)
    return RUNS_BUCKET


@pytest.fixture
def state_machine(aws, monkeypatch):
    """Deploys the stack's state machine in moto's Step Functions engine (tests/step_functions.py); call it once the
    test's EIC_GUARD_* settings are in the environment: `machine = state_machine(context_for=...)`."""
    from tests.step_functions import StateMachine

    def deploy(**options) -> StateMachine:
        machine = StateMachine(**options)
        machine.install(monkeypatch)
        return machine.deploy()

    return deploy


@pytest.fixture
def nightly_execution(state_machine):
    """The nightly schedule's execution ({"job": "scan"}) of the deployed state machine, deployed at the first call
    (once the test's settings are set): `nightly_execution(request_id)` runs it with Plan's request id (the run id)
    and returns Aggregate's summary; `nightly_execution.machine` is the StateMachine."""

    class Nightly:
        machine = None

        def __call__(self, request_id: str | None = None) -> dict:
            if self.machine is None:
                self.machine = state_machine()
            run = self.machine.run({"job": "scan"}, plan_request_id=request_id)
            assert run.status == "SUCCEEDED", (run.error, run.cause)
            return run.output

    return Nightly()
