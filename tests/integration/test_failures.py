"""One instance's (or one region's) failure never aborts the run: faults injected into the engine's botocore clients.

Faults are injected with botocore event handlers on the very clients the engine uses (AwsClients caches one client
per service and region, so a handler registered on `clients.ec2(region)` sees the engine's calls):
- `before-call.ec2.<Operation>` returning `(http_response, parsed_error)` short-circuits the call with a real
  ClientError, as AWS would return it (moto does not enforce quotas or IAM).
- `before-send.ec2.<Operation>`, registered first, answers the HTTP request itself with an EC2 error document, so the
  response goes through botocore's parser and *retry handler*: that is how throttling is simulated.
"""

from __future__ import annotations

from collections.abc import Callable

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from eic_guard.aws.clients import MAX_ATTEMPTS, RETRY_CONFIG, AwsClients
from eic_guard.checks import eic_ssh_ingress
from eic_guard.fanout.local import run_scan
from eic_guard.settings import Settings
from eic_guard.simulated import SimulatedAccount

from tests.aws_views import eni_groups, metadata_endpoint, primary_eni_id
from tests.conftest import REGION

OTHER_REGION = "us-west-2"


# ---- fault injection -------------------------------------------------------------------------------------------
class Fault:
    """Makes `operation` fail with `code` for requests whose query parameters match `when`."""

    def __init__(
        self, client, operation: str, code: str, when: Callable[[dict], bool] = lambda _: True, status: int = 400
    ):
        self.code, self.when, self.status = code, when, status
        self.hits: list[dict] = []
        client.meta.events.register(f"before-call.ec2.{operation}", self)

    def __call__(self, params, **_):
        body = params.get("body") or {}
        if not self.when(body):
            return None
        self.hits.append(body)
        http = AWSResponse(params.get("url", ""), self.status, {}, None)
        return http, {
            "Error": {"Code": self.code, "Message": f"injected {self.code}"},
            "ResponseMetadata": {"HTTPStatusCode": self.status},
        }


class _RawBody:
    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_):
        yield self.data


def ec2_error_response(code: str, status: int) -> AWSResponse:
    body = (
        f"<Response><Errors><Error><Code>{code}</Code><Message>injected</Message></Error></Errors>"
        f"<RequestID>eic-guard-test</RequestID></Response>"
    ).encode()
    return AWSResponse("https://ec2.us-east-1.amazonaws.com/", status, {}, _RawBody(body))


# ---- helpers ---------------------------------------------------------------------------------------------------
def settings(*regions: str) -> Settings:
    return Settings.build(regions=regions or (REGION,), mode="remediate")


def entry(report, instance_id):
    [match] = [e for e in report.instances if e.instance_id == instance_id]
    return match


def fixable_fleet(account, count=3) -> tuple[str, list[str]]:
    """`count` instances that lack only SSH from EIC and the metadata endpoint."""
    net = account.network()
    ids = account.launch(
        image_id=account.al2023_ami(),
        subnet_id=net.public_subnet_id,
        group_ids=[net.app_group_id],
        public_ip=True,
        imds="disabled",
        count=count,
    )
    return net.app_group_id, ids


def total_attempts(retries: dict) -> int:
    """Attempts including the first. botocore rewrites a Config's `max_attempts` (retries) into
    `total_max_attempts` in place when it builds the first client from it, so accept either form."""
    return retries["total_max_attempts"] if "total_max_attempts" in retries else retries["max_attempts"] + 1


def summary(report) -> dict:
    return report.summary.model_dump()


def remediate_scan(clients: AwsClients, api_calls, ranges, *regions: str):
    """A remediate scan of `regions` (us-east-1 by default) through `clients`; `api_calls` records this run only."""
    api_calls.clear()
    return run_scan(clients, settings(*regions), ranges)


# ---- per-instance failures ---------------------------------------------------------------------------------------
def test_eni_at_its_security_group_quota_fails_that_instance_only(account, ec2, api_calls, ranges_2026):
    # Given three fixable instances, the first one's ENI already at its security-group quota
    app_group, (full, *others) = fixable_fleet(account)
    full_eni = primary_eni_id(ec2, full)
    clients = AwsClients()
    quota = Fault(
        clients.ec2(REGION),
        "ModifyNetworkInterfaceAttribute",
        "SecurityGroupsPerInterfaceLimitExceeded",
        when=lambda body: body.get("NetworkInterfaceId") == full_eni,
    )

    # When a remediate scan runs
    report = remediate_scan(clients, api_calls, ranges_2026)

    # Then that instance's SSH check fails with the quota as reason and a failed action, its ENI unchanged
    e = entry(report, full)
    assert len(quota.hits) == 1
    assert e.checks["eic-ssh-ingress"].status == "fail"
    assert "security-group quota" in e.checks["eic-ssh-ingress"].reason
    assert "SecurityGroupsPerInterfaceLimitExceeded" in e.checks["eic-ssh-ingress"].reason
    # (a failed fix is recorded under the check's Fix action name, a done one under the gateway's)
    assert [(a.action, a.resource) for a in e.actions if a.status == "failed"] == [
        (eic_ssh_ingress.ATTACH_MANAGED_GROUP, full_eni)
    ]
    assert eni_groups(ec2, full) == [app_group]
    # And its other fix still went through, so it is noncompliant (not an error)
    assert e.checks["imds-enabled"].status == "fixed"
    assert metadata_endpoint(ec2, full) == "enabled"
    assert e.verdict == "noncompliant"
    # And the other instances are fixed, and counted so
    for instance in others:
        assert entry(report, instance).verdict == "fixed"
        assert len(eni_groups(ec2, instance)) == 2
    assert summary(report) == dict(
        instances=3, compliant=0, fixed=2, noncompliant=1, excluded=0, errors=0, warnings=0, connect_paths={"public": 3}
    )
    assert report.has_noncompliant

    # And a second run only retries the attach that failed, and says the same
    again = remediate_scan(clients, api_calls, ranges_2026)
    assert api_calls.writes() == ["ModifyNetworkInterfaceAttribute"]
    assert len(quota.hits) == 2
    assert summary(again) == dict(
        instances=3, compliant=2, fixed=0, noncompliant=1, excluded=0, errors=0, warnings=0, connect_paths={"public": 3}
    )


def test_unauthorized_imds_change_is_an_error_for_that_instance_only(account, ec2, api_calls, ranges_2026):
    # Given three fixable instances; changing the first one's metadata options is denied
    _, (denied, *others) = fixable_fleet(account)
    clients = AwsClients()
    fault = Fault(
        clients.ec2(REGION),
        "ModifyInstanceMetadataOptions",
        "UnauthorizedOperation",
        when=lambda body: body.get("InstanceId") == denied,
        status=403,
    )

    # When a remediate scan runs
    report = remediate_scan(clients, api_calls, ranges_2026)

    # Then that check is an error naming the code, the instance's verdict is error, and it is counted
    e = entry(report, denied)
    assert len(fault.hits) == 1
    assert e.checks["imds-enabled"].status == "error"
    assert "UnauthorizedOperation" in e.checks["imds-enabled"].reason
    assert [a.status for a in e.actions if a.action == "enable-imds"] == ["failed"]
    assert e.verdict == "error"
    assert metadata_endpoint(ec2, denied) == "disabled"
    # And its SSH fix, and the other instances, went through
    assert e.checks["eic-ssh-ingress"].status == "fixed"
    for instance in others:
        assert entry(report, instance).verdict == "fixed"
        assert metadata_endpoint(ec2, instance) == "enabled"
    assert summary(report) == dict(
        instances=3, compliant=0, fixed=2, noncompliant=0, excluded=0, errors=1, warnings=0, connect_paths={"public": 3}
    )
    assert report.has_noncompliant

    # And a second run only retries the denied call
    again = remediate_scan(clients, api_calls, ranges_2026)
    assert api_calls.writes() == ["ModifyInstanceMetadataOptions"]
    assert summary(again)["compliant"] == 2 and summary(again)["errors"] == 1


@pytest.mark.parametrize(
    ("operation", "code", "key"),
    [
        ("ModifyNetworkInterfaceAttribute", "InvalidNetworkInterfaceID.NotFound", "NetworkInterfaceId"),
        ("ModifyInstanceMetadataOptions", "InvalidInstanceID.NotFound", "InstanceId"),
    ],
)
def test_instance_vanishing_mid_run_is_an_error_and_the_run_goes_on(
    account, ec2, api_calls, ranges_2026, operation, code, key
):
    # Given three fixable instances; the first one is terminated by someone else between gather and act
    _, (gone, *others) = fixable_fleet(account)
    resource = primary_eni_id(ec2, gone) if key == "NetworkInterfaceId" else gone
    clients = AwsClients()
    fault = Fault(clients.ec2(REGION), operation, code, when=lambda body: body.get(key) == resource)

    # When a remediate scan runs
    report = remediate_scan(clients, api_calls, ranges_2026)

    # Then that instance is an error that says it vanished
    e = entry(report, gone)
    assert len(fault.hits) == 1
    assert e.verdict == "error"
    assert "vanished" in " ".join(c.reason or "" for c in e.checks.values())
    assert code in " ".join(c.reason or "" for c in e.checks.values())
    # And the others are fixed, and the counts add up
    for instance in others:
        assert entry(report, instance).verdict == "fixed"
    assert summary(report) == dict(
        instances=3, compliant=0, fixed=2, noncompliant=0, excluded=0, errors=1, warnings=0, connect_paths={"public": 3}
    )

    # And once it is really gone, the next run neither reports it nor writes anything
    ec2.terminate_instances(InstanceIds=[gone])
    again = remediate_scan(clients, api_calls, ranges_2026)
    assert api_calls.writes() == []
    assert {x.instance_id for x in again.instances} == set(others)
    assert summary(again)["compliant"] == 2 and summary(again)["errors"] == 0


# ---- throttling ---------------------------------------------------------------------------------------------------
def test_retry_config_is_standard_with_a_bounded_number_of_attempts():
    # Given / When the clients eic-guard builds
    clients = AwsClients(boto3.Session(region_name=REGION))
    retries = clients.ec2(REGION).meta.config.retries

    # Then they retry in botocore's standard (or adaptive) mode, a few times but not so often that one hung call
    # (connect + read timeout per attempt) outlasts the refresh function's reserve
    assert RETRY_CONFIG.retries["mode"] in ("standard", "adaptive")
    assert 3 <= total_attempts(RETRY_CONFIG.retries) == MAX_ATTEMPTS <= 4
    assert retries["mode"] == RETRY_CONFIG.retries["mode"]
    assert retries["total_max_attempts"] == total_attempts(RETRY_CONFIG.retries)


@pytest.mark.parametrize(("code", "status"), [("RequestLimitExceeded", 503), ("Throttling", 400)])
def test_throttled_describe_instances_is_retried_and_the_scan_succeeds(
    account, ec2, api_calls, ranges_2026, monkeypatch, code, status
):
    # Given a fixable instance, and EC2 throttling the first two DescribeInstances requests.
    # The error is answered at before-send (registered ahead of moto's own before-send stub), so it goes through
    # botocore's response parsing and its standard-mode retry handler exactly as a real throttle would; a
    # before-call short-circuit would bypass the retry loop. Backoff sleeps are zeroed to keep the test fast.
    _, [instance] = fixable_fleet(account, count=1)
    monkeypatch.setattr("botocore.retries.standard.ExponentialBackoff.delay_amount", lambda self, context: 0)
    clients = AwsClients()
    attempts: list[int] = []

    def throttle(request, **_):
        attempts.append(1)
        return ec2_error_response(code, status) if len(attempts) <= 2 else None

    clients.ec2(REGION).meta.events.register_first("before-send.ec2.DescribeInstances", throttle)

    # When a remediate scan runs
    report = remediate_scan(clients, api_calls, ranges_2026)

    # Then the one DescribeInstances call took three attempts and the scan went through
    assert api_calls.count("DescribeInstances") == 1
    assert len(attempts) == 3
    assert report.target_errors == []
    assert entry(report, instance).verdict == "fixed"

    # And a second run (no throttling left) writes nothing
    again = remediate_scan(clients, api_calls, ranges_2026)
    assert api_calls.writes() == []
    assert entry(again, instance).verdict == "compliant"


def test_throttling_that_never_ends_becomes_a_region_error(account, api_calls, ranges_2026, monkeypatch):
    # Given EC2 throttling every DescribeInstances request
    fixable_fleet(account, count=1)
    monkeypatch.setattr("botocore.retries.standard.ExponentialBackoff.delay_amount", lambda self, context: 0)
    clients = AwsClients()
    attempts: list[int] = []

    def throttle(request, **_):
        attempts.append(1)
        return ec2_error_response("RequestLimitExceeded", 503)

    clients.ec2(REGION).meta.events.register_first("before-send.ec2.DescribeInstances", throttle)

    # When a remediate scan runs
    report = remediate_scan(clients, api_calls, ranges_2026)

    # Then it gave up after the configured attempts and reported the region, writing nothing
    assert len(attempts) == total_attempts(clients.ec2(REGION).meta.config.retries) == MAX_ATTEMPTS == 4
    assert [e.region for e in report.target_errors] == [REGION]
    assert "RequestLimitExceeded" in report.target_errors[0].error
    assert report.summary.errors == 1
    assert api_calls.writes() == []


# ---- a region that cannot be read --------------------------------------------------------------------------------
def test_region_without_describe_permission_is_reported_and_the_other_region_scanned(
    account, ec2, api_calls, ranges_2026
):
    # Given a fixable instance in each of two regions, and DescribeInstances denied in the first
    app_group, [east] = fixable_fleet(account, count=1)
    west_ec2 = boto3.client("ec2", OTHER_REGION)
    _, [west] = fixable_fleet(SimulatedAccount(west_ec2, boto3.client("ssm", OTHER_REGION)), count=1)
    clients = AwsClients()
    denied = Fault(clients.ec2(REGION), "DescribeInstances", "UnauthorizedOperation", status=403)

    # When a remediate scan of both regions runs
    report = remediate_scan(clients, api_calls, ranges_2026, REGION, OTHER_REGION)

    # Then the denied region is a target error, counted, and nothing in it was touched
    assert len(denied.hits) == 1
    [error] = report.target_errors
    assert error.region == REGION
    assert "UnauthorizedOperation" in error.error
    assert eni_groups(ec2, east) == [app_group]
    assert metadata_endpoint(ec2, east) == "disabled"
    # And the other region's instance was scanned and fixed
    assert [(e.instance_id, e.region, e.verdict) for e in report.instances] == [(west, OTHER_REGION, "fixed")]
    assert metadata_endpoint(west_ec2, west) == "enabled"
    assert summary(report) == dict(
        instances=1, compliant=0, fixed=1, noncompliant=0, excluded=0, errors=1, warnings=0, connect_paths={"public": 1}
    )
    assert report.has_noncompliant
    west_writes = {name for name, params in api_calls.calls if name in api_calls.writes()}
    assert west_writes == {
        "CreateSecurityGroup",
        "AuthorizeSecurityGroupIngress",
        "ModifyNetworkInterfaceAttribute",
        "ModifyInstanceMetadataOptions",
    }

    # And a second run writes nothing and reports the same region error
    again = remediate_scan(clients, api_calls, ranges_2026, REGION, OTHER_REGION)
    assert api_calls.writes() == []
    assert [e.region for e in again.target_errors] == [REGION]
    assert [(e.instance_id, e.verdict) for e in again.instances] == [(west, "compliant")]
