"""The endpoint path's own calls under faults: a throttled CreateInstanceConnectEndpoint, one that fails on every
attempt (and what the report then says of the checks that need the endpoint), and someone else's endpoint created
between eic-guard's gather and its write (docs/architecture.md §13)."""

from __future__ import annotations

from eic_guard.aws.clients import AwsClients
from eic_guard.fanout.local import run_scan

from tests.aws_views import eni_groups, primary_eni_id
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
    # ... and the checks that pass only through an endpoint of eic-guard's are not claimed fixed
    for check in ("endpoint-ssh-ingress", "endpoint-ssh-egress"):
        assert found.checks[check].status == "fail"
        assert found.checks[check].reason.endswith(
            "; not fixed: its change was made (see the actions), but endpoint-present is fail"
        )
    # ... nor does network-acl pass on the endpoint eic-guard was to create
    assert (found.checks["network-acl"].status, found.checks["network-acl"].reason) == (
        "fail",
        f"no EC2 Instance Connect Endpoint in {net.vpc_id}: the one eic-guard was to create in {net.private_subnet_id} "
        "was not created (endpoint-present is fail); the network ACLs are checked once it exists",
    )

    # And the next run sees their endpoint and creates none
    endpoint_scan(faults, ranges_2026)
    assert faults.count("CreateInstanceConnectEndpoint") == 0
    assert len(endpoints(ec2)) == 1


def test_a_failed_endpoint_creation_leaves_the_checks_that_need_the_endpoint_failing_and_the_next_run_adds_only_it(
    faults: FaultInjector, account, ec2, ranges_2026, no_backoff
):
    # Given a private instance in a VPC without an endpoint, and EC2 failing every attempt to create one
    net = account.network()
    instance = private_instance(account, net)
    eni = primary_eni_id(ec2, instance)
    faults.respond("CreateInstanceConnectEndpoint", "InternalError", status=500)

    # When a remediate scan with CreateEndpoints runs
    report = endpoint_scan(faults, ranges_2026)

    # Then AWS has eic-guard's two groups and their rules, the ENI carries eic-guard-eice-ssh, and no endpoint
    assert endpoints(ec2) == []
    [eice], [eice_ssh] = named(ec2, net.vpc_id, "eic-guard-eice"), named(ec2, net.vpc_id, "eic-guard-eice-ssh")
    eice_id, eice_ssh_id = eice["GroupId"], eice_ssh["GroupId"]
    assert [references(p) for p in eice["IpPermissionsEgress"]] == [("tcp", 22, 22, [eice_ssh_id])]
    assert [references(p) for p in eice_ssh["IpPermissions"]] == [("tcp", 22, 22, [eice_id])]
    assert eni_groups(ec2, instance) == [net.app_group_id, eice_ssh_id]

    # And the report says what happened: the endpoint's creation failed (error); the rules and the attach that were
    # made are done actions, but the checks that pass only through the endpoint stay `fail`, never `fixed`, and
    # network-acl does not pass on the strength of the endpoint that was not created
    found = entry(report, instance)
    assert found.verdict == "error"
    not_fixed = "not fixed: its change was made (see the actions), but endpoint-present is error"
    endpoint_path = "the instance takes the endpoint connect path"
    assert {check: (r.status, r.reason) for check, r in found.checks.items()} == {
        "public-ipv4": ("not-applicable", endpoint_path),
        "eic-ssh-ingress": ("not-applicable", endpoint_path),
        "endpoint-present": ("error", f"no EC2 Instance Connect Endpoint in {net.vpc_id}; fix failed: InternalError"),
        "endpoint-ssh-ingress": (
            "fail",
            f"TCP 22 not allowed from the endpoint eic-guard creates in {net.vpc_id}; {not_fixed}",
        ),
        "endpoint-ssh-egress": (
            "fail",
            f"no EC2 Instance Connect Endpoint in {net.vpc_id} yet (endpoint-present creates it); {not_fixed}",
        ),
        "al2023-ami": ("pass", "al2023-ami-2023.12.20260930.0-kernel-6.18-x86_64"),
        "imds-enabled": ("pass", "metadata endpoint enabled (HttpTokens=required)"),
        "internet-route": ("not-applicable", endpoint_path),
        # no endpoint was created: network-acl does not pass on the strength of the planned one
        "network-acl": (
            "fail",
            f"no EC2 Instance Connect Endpoint in {net.vpc_id}: the one eic-guard was to create in "
            f"{net.private_subnet_id} was not created (endpoint-present is error); the network ACLs are checked once "
            "it exists",
        ),
    }
    assert actions(found) == [
        ("create-security-group", eice_id, "done", f"create eic-guard-eice in {net.vpc_id} tagged ManagedBy=eic-guard"),
        ("revoke-egress", eice_id, "done", "revoke the default egress rule (all traffic to 0.0.0.0/0)"),
        (
            "create-security-group",
            eice_ssh_id,
            "done",
            f"create eic-guard-eice-ssh in {net.vpc_id} tagged ManagedBy=eic-guard",
        ),
        ("authorize-ingress", eice_ssh_id, "done", f"allow TCP 22 from {eice_id} (by reference)"),
        ("authorize-egress", eice_id, "done", f"allow TCP 22 out to {eice_ssh_id} (by reference)"),
        (
            "create-instance-connect-endpoint",
            net.vpc_id,
            "failed",
            "InternalError: An error occurred (InternalError) when calling the CreateInstanceConnectEndpoint "
            "operation (reached max retries: 3): injected InternalError",
        ),
        ("attach-security-group", eni, "done", f"attach {eice_ssh_id} to {eni}, keeping {net.app_group_id}"),
    ]
    assert found.checks["endpoint-ssh-ingress"].guidance == (
        f"eic-guard attached its eic-guard-eice-ssh group (TCP 22 from the endpoint's security group by reference) "
        f"to {eni}, but this passes only once endpoint-present does: fix endpoint-present first (see its guidance); "
        "nothing else to do here. See "
        "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/connect-with-ec2-instance-connect-endpoint.html"
    )

    # When EC2 answers again, the next run creates the endpoint and nothing else: the rules the first run added
    # are read back as the rules it writes (no AuthorizeSecurityGroupIngress again), the ENI's attach is said once
    groups = ec2.describe_security_groups()["SecurityGroups"]
    faults.rules.clear()
    again = endpoint_scan(faults, ranges_2026)
    assert faults.writes() == ["CreateInstanceConnectEndpoint"]
    assert ec2.describe_security_groups()["SecurityGroups"] == groups
    [endpoint] = endpoints(ec2)
    assert (endpoint["SecurityGroupIds"], endpoint["SubnetId"]) == ([eice_id], net.private_subnet_id)
    found = entry(again, instance)
    assert found.verdict == "fixed"
    assert {check: r.status for check, r in found.checks.items() if check.startswith("endpoint-")} == {
        "endpoint-present": "fixed",
        "endpoint-ssh-ingress": "fixed",
        "endpoint-ssh-egress": "fixed",
    }
    assert (found.checks["network-acl"].status, found.checks["network-acl"].reason) == (
        "pass",
        f"the endpoint eic-guard creates will be in {net.private_subnet_id}: no network ACL between them",
    )
    assert actions(found) == [
        (
            "create-instance-connect-endpoint",
            endpoint["InstanceConnectEndpointId"],
            "done",
            f"create an EC2 Instance Connect Endpoint in {net.private_subnet_id} with {eice_id}, "
            "PreserveClientIp=false, tagged ManagedBy=eic-guard (create-in-progress, ready in minutes)",
        ),
        ("attach-security-group", eni, "done", f"{eice_ssh_id} already attached"),
    ]

    # And the run after that writes nothing and changes nothing
    state = ec2.describe_security_groups()["SecurityGroups"], endpoints(ec2)
    third = endpoint_scan(faults, ranges_2026)
    assert faults.writes() == []
    assert (ec2.describe_security_groups()["SecurityGroups"], endpoints(ec2)) == state
    assert (entry(third, instance).verdict, entry(third, instance).actions) == ("compliant", [])


def named(ec2, vpc_id: str, name: str) -> list[dict]:
    filters = [{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": [name]}]
    return ec2.describe_security_groups(Filters=filters)["SecurityGroups"]


def references(permission: dict) -> tuple:
    """A rule by group reference as EC2 returns it: protocol, ports and the referenced groups (nothing else)."""
    assert not (permission.get("IpRanges") or permission.get("Ipv6Ranges") or permission.get("PrefixListIds"))
    groups = [p["GroupId"] for p in permission.get("UserIdGroupPairs", [])]
    return permission["IpProtocol"], permission.get("FromPort"), permission.get("ToPort"), groups


def actions(found) -> list[tuple[str, str, str, str]]:
    return [(a.action, a.resource, a.status, a.detail) for a in found.actions]
