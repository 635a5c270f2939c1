"""The endpoint path's own calls under faults: a throttled CreateInstanceConnectEndpoint, one that fails on every
attempt, and someone else's endpoint created between eic-guard's gather and its write (docs/architecture.md §13)."""

from __future__ import annotations

from eic_guard.aws.clients import AwsClients
from eic_guard.fanout.local import run_scan

from tests.faults.conftest import entry, remediate_settings
from tests.faults.injector import FaultInjector


def private_instance(account, net) -> str:
    [instance_id] = account.launch(
        image_id=account.al2023_ami(), subnet_id=net.private_subnet_id, group_ids=[net.app_group_id], public_ip=False
    )
    return instance_id


def endpoint_scan(faults: FaultInjector, ranges):
    faults.clear()
    return run_scan(AwsClients(), remediate_settings(create_endpoints=True), ranges)


def endpoints(ec2) -> list[dict]:
    return ec2.describe_instance_connect_endpoints()["InstanceConnectEndpoints"]


def test_a_throttled_endpoint_creation_is_retried_and_makes_one_endpoint(
    faults: FaultInjector, account, ec2, ranges_2026, no_backoff
):
    # Given a private instance in a VPC without an endpoint, and EC2 throttling the first two creation attempts
    net = account.network()
    instance = private_instance(account, net)
    throttled = faults.respond("CreateInstanceConnectEndpoint", "RequestLimitExceeded", times=2)

    # When a remediate scan with CreateEndpoints runs
    report = endpoint_scan(faults, ranges_2026)

    # Then the one call took three attempts (the same ClientToken each time) and made one endpoint
    assert len(throttled.hits) == 2
    assert faults.count("CreateInstanceConnectEndpoint") == 1
    assert len(endpoints(ec2)) == 1
    assert entry(report, instance).verdict == "fixed"

    # And a second run writes nothing
    again = endpoint_scan(faults, ranges_2026)
    assert faults.writes() == []
    assert entry(again, instance).verdict == "compliant"


def test_an_endpoint_creation_that_fails_on_every_attempt_is_reported_and_the_next_run_makes_it(
    faults: FaultInjector, account, ec2, ranges_2026, no_backoff
):
    # Given a private instance, and EC2 failing every attempt to create the endpoint
    net = account.network()
    instance = private_instance(account, net)
    faults.respond("CreateInstanceConnectEndpoint", "InternalError", status=500)

    # When a remediate scan with CreateEndpoints runs
    report = endpoint_scan(faults, ranges_2026)

    # Then no endpoint exists, and the instance is an error naming the failed creation (after botocore's retries)
    assert endpoints(ec2) == []
    found = entry(report, instance)
    assert found.verdict == "error"
    check = found.checks["endpoint-present"]
    assert (check.status, check.reason.endswith("fix failed: InternalError")) == ("error", True), check.reason
    [create] = [a for a in found.actions if a.action == "create-instance-connect-endpoint"]
    assert create.status == "failed" and "InternalError" in create.detail

    # And once EC2 answers again, the next run makes exactly one endpoint
    faults.rules.clear()
    again = endpoint_scan(faults, ranges_2026)
    assert faults.count("CreateInstanceConnectEndpoint") == 1
    assert len(endpoints(ec2)) == 1
    assert entry(again, instance).verdict == "fixed"


def test_their_endpoint_created_between_gather_and_write_is_not_duplicated(
    faults: FaultInjector, account, ec2, ranges_2026, no_backoff
):
    # Given a private instance, and the network team creating the VPC's endpoint while eic-guard is between its
    # gather (no endpoint) and its write
    net = account.network()
    instance = private_instance(account, net)

    def network_team_creates_theirs(region, snapshot):
        account.instance_connect_endpoint(net.public_subnet_id)

    faults.after_gather(network_team_creates_theirs)

    # When a remediate scan with CreateEndpoints runs
    report = endpoint_scan(faults, ranges_2026)

    # Then the VPC still has one endpoint, theirs (AWS allows one per VPC), and the instance fails naming the quota
    [theirs] = endpoints(ec2)
    assert {"Key": "ManagedBy", "Value": "eic-guard"} not in theirs.get("Tags", [])
    found = entry(report, instance)
    assert found.verdict == "noncompliant"
    assert found.checks["endpoint-present"].status == "fail"
    assert "quota is reached" in found.checks["endpoint-present"].reason

    # And the next run sees their endpoint and creates none
    endpoint_scan(faults, ranges_2026)
    assert faults.count("CreateInstanceConnectEndpoint") == 0
    assert len(endpoints(ec2)) == 1
