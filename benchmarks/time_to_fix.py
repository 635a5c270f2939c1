"""Time to fix (issue 10, item 3): on moto, from a drift being made to eic-guard having fixed it, driving the
event-driven handler (functions/on_change/app.py) with the event AWS would deliver for that drift, wrapped in an SQS
record as the queue hands it to Lambda.

Drifts, each made through the EC2 API by "a person" and fixed by one handler invocation:
- sg-detached: someone sets the instance's interface groups without eic-guard's group
  → CloudTrail ModifyNetworkInterfaceAttribute → the group is attached again;
- imds-disabled: someone turns the metadata endpoint off
  → CloudTrail ModifyInstanceMetadataOptions → HttpEndpoint=enabled (HttpTokens kept);
- launched-without-group: a tagged instance is launched without the group
  → EC2 Instance State-change Notification "pending" (and, minutes later, CloudTrail RunInstances: then nothing
  is left to do) → the group is attached.

Per drift: the handler's own time (median of --runs runs, warm container: the first invocation of the process,
which also parses botocore's models, is reported on its own), the AWS API calls it makes per event (counted by
botocore's before-call hook: one per call, retries not included) and its writes. moto answers in well under a
millisecond; against AWS each call is a round trip of tens of milliseconds, so the call count is what carries over.

Run: `.venv/bin/python -m benchmarks.time_to_fix [--runs 5]` from the repository root. It prints a table; it is a
measurement script, not a test (nothing is asserted except that every drift is fixed).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
TABLE = "eic-guard-state"
BUCKET = "eic-guard-reports"
MANAGED = "eic-guard-ssh"
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION=REGION,
    AWS_REGION=REGION,
    POWERTOOLS_TRACE_DISABLED="true",
    POWERTOOLS_LOG_LEVEL="WARNING",  # the handler's INFO lines would drown the table
    EIC_GUARD_STATE_TABLE=TABLE,
    EIC_GUARD_REPORTS_BUCKET=BUCKET,
    MOTO_EC2_LOAD_DEFAULT_AMIS="false",  # moto's 7,000-image catalogue would make every DescribeImages moto's time
)
for _name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
    os.environ.pop(_name, None)

import boto3  # noqa: E402 - after the environment above
from eic_guard import simulated_eice  # noqa: E402
from moto import mock_aws  # noqa: E402

simulated_eice.install()  # the EC2 Instance Connect Endpoint API moto lacks: the scan describes endpoints


@dataclass
class Context:
    """The Lambda context attributes the handler and Powertools read."""

    aws_request_id: str
    function_name: str = "eic-guard-on-change"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:eic-guard-on-change"
    function_version: str = "$LATEST"

    def get_remaining_time_in_millis(self) -> int:
        return 120_000


class Calls:
    """botocore before-call hook: the API calls the handler makes (one per call, retries not counted)."""

    def __init__(self):
        self.names: list[str] = []

    def __call__(self, model, **_):
        self.names.append(model.name)

    def writes(self) -> list[str]:
        return [n for n in self.names if not n.startswith(("Describe", "Get", "List"))]


def load_handler():
    spec = importlib.util.spec_from_file_location(
        "eic_guard_on_change_app", ROOT / "functions" / "on_change" / "app.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sample(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def sqs(body: dict, n: int) -> dict:
    record = copy.deepcopy(sample("sqs-on-change-batch.json")["Records"][0])
    record.update(messageId=f"4f0c6a1e-2b3d-4e5f-8a9b-{n:012d}", body=json.dumps(body))
    return {"Records": [record]}


def state_change(instance_id: str) -> dict:
    body = sample("ec2-instance-state-change-aws-doc.json")
    body["detail"]["instance-id"] = instance_id
    return body


def interface_event(eni_id: str) -> dict:
    body = sample("cloudtrail-modify-network-interface-attribute.json")
    body["detail"]["requestParameters"]["networkInterfaceId"] = eni_id
    return body


def metadata_event(instance_id: str) -> dict:
    body = sample("cloudtrail-modify-instance-metadata-options.json")
    body["detail"]["requestParameters"]["ModifyInstanceMetadataOptionsRequest"]["InstanceId"] = instance_id
    return body


def run_instances_event(instance_id: str) -> dict:
    body = sample("cloudtrail-run-instances.json")
    items = body["detail"]["responseElements"]["instancesSet"]["items"]
    items[0]["instanceId"] = instance_id
    return body


def register_al2023() -> str:
    """An Amazon-owned AL2023 standard image, put straight into moto's EC2 backend (the API cannot register an image
    owned by another account, and the catalogue is not loaded)."""
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.amis import Ami

    image_id = "ami-0a1b2c3d4e5f60718"
    backend = ec2_backends[ACCOUNT][REGION]
    backend.amis[image_id] = Ami(
        backend,
        ami_id=image_id,
        name="al2023-ami-2023.8.20250818.0-kernel-6.1-x86_64",
        owner_id="137112412989",
        owner_alias="amazon",
    )
    return image_id


class Account:
    """The simulated account: one public subnet, the EIC prefixes stored, and helpers to make and read drifts."""

    def __init__(self):
        from eic_guard.ranges import ip_ranges
        from eic_guard.ranges.state import DynamoDbStateStore, RangesState
        from eic_guard.simulated import SimulatedAccount

        self.ec2 = boto3.client("ec2", REGION)
        self.sim = SimulatedAccount(self.ec2, boto3.client("ssm", REGION))
        self.net = self.sim.network()
        self.image = register_al2023()
        ranges = ip_ranges.load(str(ROOT / "tests" / "fixtures" / "ip-ranges" / "ip-ranges-2026-08-22.json"))
        dynamodb = boto3.client("dynamodb", REGION)
        dynamodb.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        current = {r: sorted(str(p) for p in e.all) for r, e in ranges.eic.items()}
        state = RangesState(
            sync_token=ranges.sync_token, create_date=ranges.create_date, md5=ranges.md5, current=current
        )
        DynamoDbStateStore(dynamodb, TABLE).save(state, None)
        boto3.client("s3", REGION).create_bucket(Bucket=BUCKET)

    def launch(self) -> str:
        (instance_id,) = self.sim.launch(
            image_id=self.image, subnet_id=self.net.public_subnet_id, group_ids=[self.net.app_group_id], public_ip=True
        )
        return instance_id

    def primary_eni(self, instance_id: str) -> dict:
        instance = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        return min(instance["NetworkInterfaces"], key=lambda n: n["Attachment"]["DeviceIndex"])

    def has_group(self, instance_id: str) -> bool:
        groups = [g["GroupId"] for g in self.primary_eni(instance_id)["Groups"]]
        described = self.ec2.describe_security_groups(GroupIds=groups)["SecurityGroups"]
        return MANAGED in {g["GroupName"] for g in described}

    def imds_on(self, instance_id: str) -> bool:
        instance = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        return instance["MetadataOptions"]["HttpEndpoint"] == "enabled"


@dataclass
class Drift:
    """How to make one drift on a compliant instance (returns the event AWS delivers), and how to see it fixed."""

    name: str
    event: str
    delivery: str
    make: Callable[[Account, str], tuple[str, dict]]  # (instance the event is about, event)
    fixed: Callable[[Account, str], bool]


def detach_group(account: Account, instance_id: str) -> tuple[str, dict]:
    eni = account.primary_eni(instance_id)["NetworkInterfaceId"]
    account.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[account.net.app_group_id])
    return instance_id, interface_event(eni)


def disable_imds(account: Account, instance_id: str) -> tuple[str, dict]:
    account.ec2.modify_instance_metadata_options(InstanceId=instance_id, HttpEndpoint="disabled", HttpTokens="required")
    return instance_id, metadata_event(instance_id)


def launch_without_group(account: Account, _: str) -> tuple[str, dict]:
    instance_id = account.launch()
    return instance_id, state_change(instance_id)


def launched_event_later(account: Account, _: str) -> tuple[str, dict]:
    """RunInstances arrives minutes after the state change fixed the instance: nothing is left to do."""
    instance_id = account.launch()
    return instance_id, run_instances_event(instance_id)


DRIFTS = [
    Drift(
        "sg-detached",
        "ModifyNetworkInterfaceAttribute",
        "CloudTrail",
        detach_group,
        lambda a, i: a.has_group(i),
    ),
    Drift(
        "imds-disabled",
        "ModifyInstanceMetadataOptions",
        "CloudTrail",
        disable_imds,
        lambda a, i: a.imds_on(i),
    ),
    Drift(
        "launched-without-group",
        "state-change pending",
        "EC2 event",
        launch_without_group,
        lambda a, i: a.has_group(i),
    ),
]


def measure(runs: int) -> tuple[list[dict], dict]:
    with mock_aws():
        account = Account()
        from eic_guard.aws import clients as aws_clients

        app = load_handler()
        calls = Calls()
        # The container's clients (aws.clients.lambda_clients builds them on the first invocation): built here so
        # that the hook sees every call; botocore parses its models on the first invocation all the same.
        aws_clients._LAMBDA_CLIENTS = aws_clients.AwsClients()
        aws_clients._LAMBDA_CLIENTS.session.events.register("before-call.*.*", calls)
        counter = iter(range(1, 1_000_000))

        cpu: list[float] = []

        def invoke(body: dict) -> tuple[float, dict]:
            n = next(counter)
            with contextlib.redirect_stdout(io.StringIO()):  # the EMF metrics
                started, started_cpu = time.perf_counter(), time.process_time()
                response = app.lambda_handler(sqs(body, n), Context(f"run-{n:06d}"))
                cpu.append(time.process_time() - started_cpu)
                return time.perf_counter() - started, response

        # The container's first invocation: botocore parses its models, Powertools warms up.
        cold_instance = account.launch()
        calls.names.clear()
        cold_seconds, _ = invoke(state_change(cold_instance))
        cold = {"seconds": cold_seconds, "calls": len(calls.names)}

        rows = []
        for drift in DRIFTS:
            seconds, cpu_seconds, fix_seconds, per_event, writes, breakdown = [], [], [], [], [], Counter()
            for _ in range(runs):
                instance_id = account.launch()
                invoke(state_change(instance_id))  # compliant to begin with (the launch is itself fixed)
                about, body = drift.make(account, instance_id)
                drift_made = time.perf_counter()
                calls.names.clear()
                handler_seconds, response = invoke(body)
                fix_seconds.append(time.perf_counter() - drift_made)
                if response != {"batchItemFailures": []} or not drift.fixed(account, about):
                    raise SystemExit(f"{drift.name}: not fixed ({response})")
                seconds.append(handler_seconds)
                cpu_seconds.append(cpu[-1])
                per_event.append(len(calls.names))
                writes.append(len(calls.writes()))
                breakdown = Counter(calls.names)
            rows.append(
                {
                    "drift": drift.name,
                    "event": drift.event,
                    "delivery": drift.delivery,
                    "handler_ms": statistics.median(seconds) * 1000,
                    "cpu_ms": statistics.median(cpu_seconds) * 1000,
                    "fix_ms": statistics.median(fix_seconds) * 1000,
                    "calls": statistics.median(per_event),
                    "writes": statistics.median(writes),
                    "breakdown": dict(sorted(breakdown.items())),
                }
            )
        # RunInstances after the state change already fixed the instance: the cost of the second, redundant event.
        seconds, cpu_seconds, per_event = [], [], []
        for _ in range(runs):
            instance_id, body = launched_event_later(account, "")
            invoke(state_change(instance_id))
            calls.names.clear()
            handler_seconds, _ = invoke(body)
            seconds.append(handler_seconds)
            cpu_seconds.append(cpu[-1])
            per_event.append(len(calls.names))
        rows.append(
            {
                "drift": "(launch, later event)",
                "event": "RunInstances",
                "delivery": "CloudTrail",
                "handler_ms": statistics.median(seconds) * 1000,
                "cpu_ms": statistics.median(cpu_seconds) * 1000,
                "fix_ms": None,
                "calls": statistics.median(per_event),
                "writes": len(calls.writes()),
                "breakdown": dict(sorted(Counter(calls.names).items())),
            }
        )
        return rows, cold


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per drift (the median is printed)")
    args = parser.parse_args(argv)
    rows, cold = measure(args.runs)
    print(
        f"Time to fix on moto (in-process: the handler's CPU includes moto's own work), median of {args.runs} runs, "
        f"warm container; Python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f}"
    )
    print()
    print("| drift | event (delivery) | handler ms | handler CPU ms | drift made → fixed ms | API calls | writes |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        fix = f"{r['fix_ms']:.0f}" if r["fix_ms"] is not None else "(already fixed)"
        print(
            f"| {r['drift']} | {r['event']} ({r['delivery']}) | {r['handler_ms']:.0f} | {r['cpu_ms']:.0f} | {fix} | "
            f"{r['calls']:.0f} | {r['writes']:.0f} |"
        )
    print()
    print(
        f"First invocation of a container (cold: botocore parses its models): {cold['seconds'] * 1000:.0f} ms, "
        f"{cold['calls']} API calls."
    )
    print("Writes: the EC2 fix and the report (S3 PutObject, stored because something was fixed).")
    print()
    for r in rows:
        print(f"{r['drift']}: " + ", ".join(f"{name} {n}" for name, n in r["breakdown"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
