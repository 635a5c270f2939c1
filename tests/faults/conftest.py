"""The fault tier's fixtures and helpers: the injector, the faulty moto server, small fleets and ip-ranges files.

Every test here asserts the AWS state afterwards (read back from moto) and the report or summary; every remediation
test runs a second time and asserts that it writes nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache

import boto3
import pytest
from botocore.loaders import create_loader
from eic_guard.aws.clients import AwsClients
from eic_guard.fanout.local import run_scan
from eic_guard.outputs.report import Report
from eic_guard.ranges import ip_ranges
from eic_guard.settings import Settings
from eic_guard.simulated import Network, SimulatedAccount, ssh_from

from tests.conftest import EIC_US_EAST_1, EIC_US_EAST_1_V6, IP_RANGES, REGION
from tests.faults.injector import FaultInjector, FaultyMotoServer

MANAGED_NAME = "eic-guard-ssh"
MANAGED_TAG = {"Key": "ManagedBy", "Value": "eic-guard"}
US_EAST_1 = (EIC_US_EAST_1, EIC_US_EAST_1_V6)
NEWEST_TOKEN = 1787411825  # ip-ranges-2026-08-22.json


# ---- fixtures -----------------------------------------------------------------------------------------------------
_LOADER = create_loader()


@pytest.fixture(autouse=True)
def shared_botocore_loader(monkeypatch):
    """Speed only, behaviour unchanged: every boto3 session of the tier shares one botocore data loader, so the
    endpoint and service model files are parsed once instead of once per session (~0.2 s each)."""
    original = boto3.Session.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self._session.register_component("data_loader", _LOADER)

    monkeypatch.setattr(boto3.Session, "__init__", init)


@pytest.fixture
def faults(monkeypatch) -> FaultInjector:
    """The botocore-hook injector, on every boto3 session created from now on."""
    return FaultInjector().install(monkeypatch)


@pytest.fixture
def no_backoff(monkeypatch):
    """botocore's standard-mode retries without their sleeps (behaviour unchanged, tests faster)."""
    monkeypatch.setattr("botocore.retries.standard.ExponentialBackoff.delay_amount", lambda self, context: 0)


@pytest.fixture(scope="session")
def _moto_server():
    server = FaultyMotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(_moto_server, monkeypatch) -> FaultyMotoServer:
    """The faulty moto server, empty, with every boto3 client of the test pointed at it (AWS_ENDPOINT_URL)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", _moto_server.url)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    _moto_server.reset()
    yield _moto_server
    _moto_server.reset()


# ---- scans --------------------------------------------------------------------------------------------------------
def remediate_settings(*regions: str, **values) -> Settings:
    return Settings.build(regions=regions or (REGION,), mode="remediate", **values)


def remediate_scan(faults: FaultInjector, ranges, *regions: str, clients: AwsClients | None = None) -> Report:
    """A remediate scan of `regions` (us-east-1 by default); `faults` records this run only."""
    faults.clear()
    return run_scan(clients or AwsClients(), remediate_settings(*regions), ranges)


def entry(report: Report, instance_id: str):
    [found] = [e for e in report.instances if e.instance_id == instance_id]
    return found


def action(report: Report, instance_id: str, name: str):
    [found] = [a for a in entry(report, instance_id).actions if a.action == name]
    return found


def summary(report: Report) -> dict:
    return report.summary.model_dump()


# ---- fleets -------------------------------------------------------------------------------------------------------
def launch(account: SimulatedAccount, net: Network, *, groups=None, count=1, imds="enabled", **kwargs) -> list[str]:
    """AL2023 instances with a public IPv4 in the public subnet (so only the checks under test can fail)."""
    return account.launch(
        image_id=account.al2023_ami(),
        subnet_id=net.public_subnet_id,
        group_ids=groups or [net.app_group_id],
        public_ip=True,
        imds=imds,
        count=count,
        **kwargs,
    )


def managed_group(ec2, vpc_id: str, *prefixes: str, region: str = REGION, tagged: bool = True) -> str:
    """An eic-guard-ssh group in `vpc_id` (tagged ManagedBy=eic-guard unless told), allowing TCP 22 from `prefixes`
    with eic-guard's rule description."""
    tags = {"TagSpecifications": [{"ResourceType": "security-group", "Tags": [MANAGED_TAG]}]} if tagged else {}
    group_id = ec2.create_security_group(GroupName=MANAGED_NAME, Description="ssh", VpcId=vpc_id, **tags)["GroupId"]
    if prefixes:
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=eic_permissions(region, *prefixes))
    return group_id


def managed_group_in(ec2, vpc_id: str) -> str:
    [group] = ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": [MANAGED_NAME]}]
    )["SecurityGroups"]
    return group["GroupId"]


def description(region: str) -> str:
    return f"eic-guard EC2_INSTANCE_CONNECT {region}"


def eic_permissions(region: str, *prefixes: str) -> list[dict]:
    permission = ssh_from(*prefixes)
    for key in ("IpRanges", "Ipv6Ranges"):
        for source in permission.get(key, ()):
            source["Description"] = description(region)
    return [permission]


def eic_rules(region: str, *prefixes: str) -> set[tuple]:
    """The ingress rules (tests.aws_views.ingress_of) eic-guard creates for `prefixes` of `region`."""
    return {("tcp", 22, 22, p, description(region)) for p in prefixes}


# ---- ip-ranges files ----------------------------------------------------------------------------------------------
def ip_ranges_file(sync_token: int | str, eic: dict[str, tuple[str, ...]]) -> bytes:
    """A small, well-formed ip-ranges.json whose EC2_INSTANCE_CONNECT prefixes are `eic` (region -> prefixes), plus
    one entry of another service so that the file is not EIC-only."""
    created = (
        datetime.fromtimestamp(int(sync_token), UTC).strftime("%Y-%m-%d-%H-%M-%S")
        if str(sync_token).isdigit()
        else "2026-08-22-16-00-00"
    )

    def entry_of(region: str, prefix: str) -> tuple[str, dict]:
        key = "ipv6_prefix" if ":" in prefix else "ip_prefix"
        value = {key: prefix, "region": region, "service": "EC2_INSTANCE_CONNECT", "network_border_group": region}
        return ("ipv6_prefixes" if ":" in prefix else "prefixes"), value

    document: dict = {
        "syncToken": str(sync_token),
        "createDate": created,
        "prefixes": [
            {"ip_prefix": "3.5.140.0/22", "region": "ap-northeast-2", "service": "AMAZON", "network_border_group": "x"}
        ],
        "ipv6_prefixes": [],
    }
    for region, prefixes in eic.items():
        for prefix in prefixes:
            key, value = entry_of(region, prefix)
            document[key].append(value)
    return json.dumps(document, indent=2).encode()


def ranges_of(raw: bytes) -> ip_ranges.IpRanges:
    return ip_ranges.parse(raw)


@cache
def snapshot_bytes(day: str) -> bytes:
    return (IP_RANGES / f"ip-ranges-{day}.json").read_bytes()


@cache
def snapshot(day: str) -> ip_ranges.IpRanges:
    """A real ip-ranges.json snapshot of tests/fixtures/ip-ranges."""
    return ip_ranges.parse(snapshot_bytes(day))
