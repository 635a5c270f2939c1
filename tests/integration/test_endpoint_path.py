"""The endpoint connect path against moto and the simulated EC2 Instance Connect Endpoint API: the AWS state after a
remediation, a second run that changes nothing, report mode and CreateEndpoints off writing nothing, one endpoint
for racing runs, the endpoint quota as a per-instance error (docs/architecture.md §13)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from eic_guard import engine, simulated_eice
from eic_guard.aws import gateway, inventory
from eic_guard.aws.clients import AwsClients
from eic_guard.fanout.local import run_scan
from eic_guard.settings import Settings
from eic_guard.simulated import Network, SimulatedAccount, ssh_from

from tests.aws_views import eni_groups, primary_eni_id
from tests.conftest import REGION

ACCOUNT = "123456789012"

EICE_SSH, EICE = "eic-guard-eice-ssh", "eic-guard-eice"
ENDPOINT_WRITES = {"CreateInstanceConnectEndpoint", "CreateSecurityGroup", "AuthorizeSecurityGroupEgress"}


def scan(ranges, mode="remediate", **settings):
    return run_scan(AwsClients(), Settings.build(regions=(REGION,), mode=mode, **settings), ranges)


def entry(report, instance_id):
    [found] = [e for e in report.instances if e.instance_id == instance_id]
    return found


def named(ec2, vpc_id: str, name: str) -> list[dict]:
    return ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": [name]}]
    )["SecurityGroups"]


def endpoints(ec2) -> list[dict]:
    return ec2.describe_instance_connect_endpoints()["InstanceConnectEndpoints"]


def private_instance(account: SimulatedAccount, network: Network, **kwargs) -> str:
    [instance_id] = account.launch(
        image_id=account.al2023_ami(),
        subnet_id=kwargs.pop("subnet_id", network.private_subnet_id),
        group_ids=[network.app_group_id],
        public_ip=False,
        **kwargs,
    )
    return instance_id


def their_endpoint(account: SimulatedAccount, network: Network, **kwargs) -> dict:
    """Someone else's endpoint in the public subnet: its own group, TCP 22 out to the VPC's range."""
    group = account.egress_group(network, "their-eice", [ssh_from("10.0.0.0/16")])
    return account.instance_connect_endpoint(network.public_subnet_id, [group], **kwargs)


def aws_state(ec2) -> tuple[list[dict], list[dict]]:
    """What a run may change on this path: every security group (rules, tags) and every endpoint."""
    return ec2.describe_security_groups()["SecurityGroups"], endpoints(ec2)


def actions(found) -> list[tuple[str, str, str, str]]:
    return [(a.action, a.resource, a.status, a.detail) for a in found.actions]


def assert_second_run_changes_nothing(ec2, ranges, api_calls, instance_ids, **settings):
    before = aws_state(ec2)
    api_calls.clear()
    report = scan(ranges, **settings)
    assert api_calls.writes() == []
    for instance_id in instance_ids:
        found = entry(report, instance_id)
        assert found.verdict == "compliant", found.checks
        assert found.actions == []
    assert aws_state(ec2) == before
    return report


def test_a_private_instance_behind_their_endpoint_gets_eic_guard_eice_ssh_and_nothing_else(
    account, ec2, api_calls, ranges_2026
):
    # Given a private instance with only its application group, and someone else's endpoint in another subnet
    network = account.network()
    endpoint = their_endpoint(account, network)
    instance_id = private_instance(account, network, imds="disabled")
    # When
    report = scan(ranges_2026)
    # Then the instance takes the endpoint path and is fixed
    found = entry(report, instance_id)
    assert (found.connect_path, found.verdict) == ("endpoint", "fixed")
    assert report.summary.connect_paths == {"endpoint": 1}
    assert {c: v.status for c, v in found.checks.items()} == {
        "public-ipv4": "not-applicable",
        "eic-ssh-ingress": "not-applicable",
        "endpoint-present": "pass",
        "endpoint-ssh-ingress": "fixed",
        "endpoint-ssh-egress": "pass",
        "al2023-ami": "pass",
        "imds-enabled": "fixed",
        "internet-route": "not-applicable",
        "network-acl": "pass",
    }
    # And AWS: eic-guard-eice-ssh allows TCP 22 from the endpoint's group by reference, nothing else, owned
    [group] = named(ec2, network.vpc_id, EICE_SSH)
    assert {"Key": "ManagedBy", "Value": "eic-guard"} in group["Tags"]
    [permission] = group["IpPermissions"]
    assert (permission["IpProtocol"], permission["FromPort"], permission["ToPort"]) == ("tcp", 22, 22)
    assert [p["GroupId"] for p in permission["UserIdGroupPairs"]] == endpoint["SecurityGroupIds"]
    assert permission.get("IpRanges", []) == []
    # ... attached to the primary ENI beside the application group; their endpoint and group untouched
    assert eni_groups(ec2, instance_id) == [network.app_group_id, group["GroupId"]]
    [theirs] = endpoints(ec2)
    assert (theirs["SecurityGroupIds"], theirs.get("Tags", [])) == (endpoint["SecurityGroupIds"], [])
    assert "CreateInstanceConnectEndpoint" not in api_calls.names()
    assert_second_run_changes_nothing(ec2, ranges_2026, api_calls, [instance_id])


def test_create_endpoints_makes_one_endpoint_per_vpc_with_its_own_group(account, ec2, api_calls, ranges_2026):
    # Given two private instances of one VPC and no endpoint
    network = account.network()
    instances = sorted(private_instance(account, network) for _ in range(2))
    # When
    report = scan(ranges_2026, create_endpoints=True)
    # Then one endpoint, in the first instance's subnet, eic-guard's, not preserving client IPs, in creation
    assert [e.verdict for e in report.instances] == ["fixed", "fixed"]
    [endpoint] = endpoints(ec2)
    assert endpoint["SubnetId"] == network.private_subnet_id
    assert (endpoint["PreserveClientIp"], endpoint["IpAddressType"]) == (False, "ipv4")
    assert {"Key": "ManagedBy", "Value": "eic-guard"} in endpoint["Tags"]
    assert api_calls.count("CreateInstanceConnectEndpoint") == 1
    # And its group eic-guard-eice: no ingress, egress TCP 22 to eic-guard-eice-ssh only
    [eice], [eice_ssh] = named(ec2, network.vpc_id, EICE), named(ec2, network.vpc_id, EICE_SSH)
    assert endpoint["SecurityGroupIds"] == [eice["GroupId"]]
    assert eice["IpPermissions"] == []
    [out] = eice["IpPermissionsEgress"]
    assert (out["IpProtocol"], out["FromPort"], out["ToPort"]) == ("tcp", 22, 22)
    assert [p["GroupId"] for p in out["UserIdGroupPairs"]] == [eice_ssh["GroupId"]]
    [into] = eice_ssh["IpPermissions"]
    assert [p["GroupId"] for p in into["UserIdGroupPairs"]] == [eice["GroupId"]]
    for instance_id in instances:
        assert eni_groups(ec2, instance_id) == [network.app_group_id, eice_ssh["GroupId"]]
    # And the report says each change once: the VPC's on its first instance, each ENI's attach once (both
    # endpoint-ssh-ingress and endpoint-ssh-egress attach eic-guard-eice-ssh, the second has nothing to add)
    eice_id, eice_ssh_id, endpoint_id = eice["GroupId"], eice_ssh["GroupId"], endpoint["InstanceConnectEndpointId"]
    first, second = report.instances  # in the order they were acted on (EC2's, not always id order)
    assert actions(first) == [
        ("create-security-group", eice_id, "done", f"create {EICE} in {network.vpc_id} tagged ManagedBy=eic-guard"),
        ("revoke-egress", eice_id, "done", "revoke the default egress rule (all traffic to 0.0.0.0/0)"),
        (
            "create-security-group",
            eice_ssh_id,
            "done",
            f"create {EICE_SSH} in {network.vpc_id} tagged ManagedBy=eic-guard",
        ),
        ("authorize-ingress", eice_ssh_id, "done", f"allow TCP 22 from {eice_id} (by reference)"),
        ("authorize-egress", eice_id, "done", f"allow TCP 22 out to {eice_ssh_id} (by reference)"),
        (
            "create-instance-connect-endpoint",
            endpoint_id,
            "done",
            f"create an EC2 Instance Connect Endpoint in {network.private_subnet_id} with {eice_id}, "
            "PreserveClientIp=false, tagged ManagedBy=eic-guard (create-in-progress, ready in minutes)",
        ),
        attached(ec2, first.instance_id, eice_ssh_id, network.app_group_id),
    ]
    assert actions(second) == [attached(ec2, second.instance_id, eice_ssh_id, network.app_group_id)]
    assert_second_run_changes_nothing(ec2, ranges_2026, api_calls, instances, create_endpoints=True)


def attached(ec2, instance_id: str, group_id: str, kept: str) -> tuple[str, str, str, str]:
    eni = primary_eni_id(ec2, instance_id)
    return ("attach-security-group", eni, "done", f"attach {group_id} to {eni}, keeping {kept}")


def test_an_endpoint_eic_guard_made_that_failed_is_replaced_without_re_authorizing_the_rules_that_are_there(
    account, ec2, api_calls, ranges_2026
):
    # Given a VPC set up by an earlier run (eic-guard-eice, eic-guard-eice-ssh and their rules, the group attached),
    # whose endpoint then failed: no endpoint is live, but every rule eic-guard writes is there
    network = account.network()
    instance_id = private_instance(account, network)
    scan(ranges_2026, create_endpoints=True)
    [failed] = endpoints(ec2)
    simulated_eice.set_state(ACCOUNT, REGION, failed["InstanceConnectEndpointId"], "create-failed")
    groups_before = ec2.describe_security_groups()["SecurityGroups"]
    [eice], [eice_ssh] = named(ec2, network.vpc_id, EICE), named(ec2, network.vpc_id, EICE_SSH)
    # When a remediate scan runs
    api_calls.clear()
    report = scan(ranges_2026, create_endpoints=True)
    # Then it creates the new endpoint and nothing else: the rule TCP 22 from eic-guard-eice (a reference,
    # UserIdGroupPairs) is read back as the rule it writes, not authorized again
    assert api_calls.writes() == ["CreateInstanceConnectEndpoint"]
    assert ec2.describe_security_groups()["SecurityGroups"] == groups_before
    [new] = [e for e in endpoints(ec2) if e["InstanceConnectEndpointId"] != failed["InstanceConnectEndpointId"]]
    assert (new["State"], new["SecurityGroupIds"]) == ("create-complete", [eice["GroupId"]])
    [into] = eice_ssh["IpPermissions"]
    assert [p["GroupId"] for p in into["UserIdGroupPairs"]] == [eice["GroupId"]]
    found = entry(report, instance_id)
    assert found.verdict == "fixed"
    eni = primary_eni_id(ec2, instance_id)
    assert actions(found) == [
        (
            "create-instance-connect-endpoint",
            new["InstanceConnectEndpointId"],
            "done",
            f"create an EC2 Instance Connect Endpoint in {network.private_subnet_id} with {eice['GroupId']}, "
            "PreserveClientIp=false, tagged ManagedBy=eic-guard (create-in-progress, ready in minutes)",
        ),
        ("attach-security-group", eni, "done", f"{eice_ssh['GroupId']} already attached"),
    ]
    # And the next run writes nothing
    assert_second_run_changes_nothing(ec2, ranges_2026, api_calls, [instance_id], create_endpoints=True)


@pytest.mark.parametrize(
    ("state", "message"), [("delete-in-progress", None), ("delete-failed", "The network interface is in use")]
)
def test_an_endpoint_being_deleted_is_reported_and_no_creation_is_tried_until_it_is_gone(
    account, ec2, api_calls, ranges_2026, state, message
):
    # Given a private instance whose VPC's only endpoint (theirs) is being deleted, or failed to be: not usable, but
    # it holds the VPC's endpoint quota (one per VPC), so a CreateInstanceConnectEndpoint would be refused
    network = account.network()
    theirs = their_endpoint(account, network)["InstanceConnectEndpointId"]
    ec2.delete_instance_connect_endpoint(InstanceConnectEndpointId=theirs)
    simulated_eice.set_state(ACCOUNT, REGION, theirs, state, message)
    instance_id = private_instance(account, network)
    before = aws_state(ec2)
    # When a remediate scan with CreateEndpoints runs, twice
    for _ in range(2):
        api_calls.clear()
        report = scan(ranges_2026, create_endpoints=True)
        # Then nothing is written (no creation that the quota refuses, no group for an endpoint that is not coming)
        assert api_calls.writes() == []
        assert aws_state(ec2) == before
        # ... and the report names the endpoint and its state
        found = entry(report, instance_id)
        assert (found.verdict, found.actions) == ("noncompliant", [])
        doing = "is being deleted" if state == "delete-in-progress" else "could not be deleted"
        said = f"{state}: {message}" if message else state
        assert {c: (r.status, r.reason) for c, r in found.checks.items() if r.status != "not-applicable"} == {
            "endpoint-present": (
                "fail",
                f"{theirs} in {network.vpc_id} {doing} ({said}): it serves no connection but holds the VPC's endpoint "
                "quota (one per VPC), so no endpoint can be created until it is gone",
            ),
            "endpoint-ssh-ingress": (
                "fail",
                f"no EC2 Instance Connect Endpoint in {network.vpc_id} to allow TCP 22 from (endpoint-present)",
            ),
            "endpoint-ssh-egress": (
                "fail",
                f"no EC2 Instance Connect Endpoint in {network.vpc_id} to allow TCP 22 out of (endpoint-present)",
            ),
            "al2023-ami": ("pass", "al2023-ami-2023.12.20260930.0-kernel-6.18-x86_64"),
            "imds-enabled": ("pass", "metadata endpoint enabled (HttpTokens=required)"),
            "network-acl": (
                "fail",
                f"no EC2 Instance Connect Endpoint in {network.vpc_id}: the network ACLs are checked once it exists",
            ),
        }
        wait = "wait for the deletion" if state == "delete-in-progress" else "delete it by hand"
        assert wait in found.checks["endpoint-present"].guidance
    # When the deletion finishes (a delete-failed one deleted by hand), the next run creates eic-guard's endpoint
    if state == "delete-in-progress":
        simulated_eice.release(ACCOUNT, REGION, theirs)
    else:
        ec2.delete_instance_connect_endpoint(InstanceConnectEndpointId=theirs)
    api_calls.clear()
    report = scan(ranges_2026, create_endpoints=True)
    assert api_calls.count("CreateInstanceConnectEndpoint") == 1
    assert entry(report, instance_id).verdict == "fixed"
    [new] = [e for e in endpoints(ec2) if e["InstanceConnectEndpointId"] != theirs]
    assert {"Key": "ManagedBy", "Value": "eic-guard"} in new["Tags"]
    # And the run after that changes nothing
    assert_second_run_changes_nothing(ec2, ranges_2026, api_calls, [instance_id], create_endpoints=True)


def test_report_mode_writes_nothing_and_plans_the_endpoint(account, ec2, api_calls, ranges_2026):
    network = account.network()
    instance_id = private_instance(account, network)
    report = scan(ranges_2026, mode="report", create_endpoints=True)
    assert api_calls.writes() == []
    found = entry(report, instance_id)
    assert found.checks["endpoint-present"].status == "would-fix"
    assert "create-instance-connect-endpoint" in [a.action for a in found.actions]
    assert {a.status for a in found.actions} == {"planned"}
    assert endpoints(ec2) == []


def test_create_endpoints_off_never_creates_and_blocks_the_fixes(account, ec2, api_calls, ranges_2026):
    # Given a private instance told to take the endpoint path in a VPC without an endpoint
    network = account.network()
    instance_id = private_instance(account, network, imds="disabled", tags={"eic-guard:connect-path": "endpoint"})
    # When
    report = scan(ranges_2026)
    # Then nothing is written at all; endpoint-present fails and holds the other fixes
    assert api_calls.writes() == []
    found = entry(report, instance_id)
    assert found.verdict == "noncompliant"
    assert found.checks["endpoint-present"].status == "fail"
    assert found.checks["imds-enabled"].reason.endswith(
        "not fixed: blocked by network-acl, endpoint-present, endpoint-ssh-egress"
    )
    assert endpoints(ec2) == []


def test_auto_keeps_a_private_instance_on_the_public_path_without_endpoint_or_create_endpoints(
    account, ec2, api_calls, ranges_2026
):
    network = account.network()
    instance_id = private_instance(account, network)
    found = entry(scan(ranges_2026), instance_id)
    assert found.connect_path == "public"
    assert found.checks["public-ipv4"].status == "fail"
    assert "endpoint-present" not in found.checks


def test_racing_runs_create_one_endpoint(account, ec2, api_calls, ranges_2026, monkeypatch):
    # Given two runs that both gathered the VPC before either wrote (the second sees the state of the first's start)
    network = account.network()
    instance_id = private_instance(account, network)
    settings = Settings.build(regions=(REGION,), create_endpoints=True)
    stale = inventory.gather(ec2, "123456789012", REGION, settings)
    monkeypatch.setattr(engine, "gather", lambda *args, **kwargs: stale)
    # When both remediate
    first, second = scan(ranges_2026, create_endpoints=True), scan(ranges_2026, create_endpoints=True)
    # Then one endpoint and one of each group: the second run's requests found the first's (ClientToken, duplicate)
    assert len(endpoints(ec2)) == 1
    assert len(named(ec2, network.vpc_id, EICE)) == len(named(ec2, network.vpc_id, EICE_SSH)) == 1
    assert entry(first, instance_id).verdict == entry(second, instance_id).verdict == "fixed"
    # ... and its records say that the rules and the endpoint it asked for were there already, not that it made them
    [eice], [eice_ssh] = named(ec2, network.vpc_id, EICE), named(ec2, network.vpc_id, EICE_SSH)
    [endpoint] = endpoints(ec2)
    endpoint_id = endpoint["InstanceConnectEndpointId"]
    created = [a for a in actions(entry(first, instance_id)) if a[0] == "create-instance-connect-endpoint"]
    assert created == [
        (
            "create-instance-connect-endpoint",
            endpoint_id,
            "done",
            f"create an EC2 Instance Connect Endpoint in {network.private_subnet_id} with {eice['GroupId']}, "
            "PreserveClientIp=false, tagged ManagedBy=eic-guard (create-in-progress, ready in minutes)",
        )
    ]
    raced = [a for a in actions(entry(second, instance_id)) if a[0] == "create-instance-connect-endpoint"]
    assert raced == [
        (
            "create-instance-connect-endpoint",
            endpoint_id,
            "done",
            f"EC2 Instance Connect Endpoint {endpoint_id} in {network.private_subnet_id} already created by a "
            "concurrent run (create-complete)",
        )
    ]
    rules = [a for a in actions(entry(second, instance_id)) if a[0] in ("authorize-ingress", "authorize-egress")]
    assert rules == [
        (
            "authorize-ingress",
            eice_ssh["GroupId"],
            "done",
            f"TCP 22 from {eice['GroupId']} (by reference) already allowed (added meanwhile)",
        ),
        (
            "authorize-egress",
            eice["GroupId"],
            "done",
            f"TCP 22 out to {eice_ssh['GroupId']} (by reference) already allowed (added meanwhile)",
        ),
    ]


def test_a_racing_runs_endpoint_still_being_created_is_recorded_as_theirs(
    account, ec2, api_calls, ranges_2026, monkeypatch
):
    # Given two runs that both gathered the VPC before either wrote; the first creates the endpoint, which is still
    # being created (create-in-progress) when the second sends its request, a minute later
    network = account.network()
    instance_id = private_instance(account, network)
    stale = inventory.gather(ec2, ACCOUNT, REGION, Settings.build(regions=(REGION,), create_endpoints=True))
    real_gather = engine.gather
    monkeypatch.setattr(engine, "gather", lambda *args, **kwargs: stale)
    first = scan(ranges_2026, create_endpoints=True)
    [endpoint] = endpoints(ec2)
    endpoint_id = endpoint["InstanceConnectEndpointId"]
    simulated_eice.set_state(ACCOUNT, REGION, endpoint_id, "create-in-progress")
    real_now = gateway.now
    monkeypatch.setattr(gateway, "now", lambda: real_now() + timedelta(minutes=1))
    # When the second run remediates: its CreateInstanceConnectEndpoint (the same ClientToken) returns that endpoint
    api_calls.clear()
    second = scan(ranges_2026, create_endpoints=True)
    # Then one endpoint; the first run says it created it, the second that a concurrent run did
    assert api_calls.count("CreateInstanceConnectEndpoint") == 1
    assert [e["InstanceConnectEndpointId"] for e in endpoints(ec2)] == [endpoint_id]
    records = {
        run: [a[3] for a in actions(entry(report, instance_id)) if a[0] == "create-instance-connect-endpoint"]
        for run, report in (("first", first), ("second", second))
    }
    eice_id = named(ec2, network.vpc_id, EICE)[0]["GroupId"]
    assert records == {
        "first": [
            f"create an EC2 Instance Connect Endpoint in {network.private_subnet_id} with {eice_id}, "
            "PreserveClientIp=false, tagged ManagedBy=eic-guard (create-in-progress, ready in minutes)"
        ],
        "second": [
            f"EC2 Instance Connect Endpoint {endpoint_id} in {network.private_subnet_id} already created by a "
            "concurrent run (create-in-progress)"
        ],
    }
    assert entry(second, instance_id).checks["endpoint-present"].status == "fixed"
    # And once it is ready, a run that gathers afresh changes nothing
    monkeypatch.setattr(engine, "gather", real_gather)
    monkeypatch.setattr(gateway, "now", real_now)
    simulated_eice.release(ACCOUNT, REGION, endpoint_id)
    assert_second_run_changes_nothing(ec2, ranges_2026, api_calls, [instance_id], create_endpoints=True)


def test_the_endpoint_quota_is_an_error_of_that_vpcs_instances_and_the_run_goes_on(
    account, ec2, api_calls, ranges_2026
):
    # Given the Region's five endpoints in use elsewhere, and two VPCs: one with an endpoint, one without
    for index in range(4):
        other = account.network(cidr=f"10.{10 + index}.0.0/16", name=f"other{index}")
        account.instance_connect_endpoint(other.private_subnet_id)
    served, unserved = account.network(name="served"), account.network(cidr="10.1.0.0/16", name="unserved")
    their_endpoint(account, served)
    ok = private_instance(account, served)
    stuck = private_instance(account, unserved)
    # When
    report = scan(ranges_2026, create_endpoints=True)
    # Then the instance of the VPC without an endpoint fails naming the quota; the other is fixed
    check = entry(report, stuck).checks["endpoint-present"]
    assert check.status == "fail"
    assert "the EC2 Instance Connect Endpoint quota is reached" in check.reason
    assert "ResourceLimitExceeded" in check.reason
    assert entry(report, ok).verdict == "fixed"
    assert len(endpoints(ec2)) == 5


def test_a_nacl_between_their_endpoint_and_the_instance_blocks_every_fix(account, ec2, api_calls, ranges_2026):
    network = account.network()
    their_endpoint(account, network)
    instance_id = private_instance(account, network, imds="disabled")
    account.block_ssh_in_nacl(network.vpc_id, network.private_subnet_id)
    report = scan(ranges_2026)
    found = entry(report, instance_id)
    assert found.checks["network-acl"].status == "fail"
    assert found.checks["endpoint-ssh-ingress"].reason.endswith("not fixed: blocked by network-acl")
    assert api_calls.writes() == []


def test_a_bad_connect_path_tag_is_an_error_and_changes_nothing(account, ec2, api_calls, ranges_2026):
    network = account.network()
    instance_id = private_instance(account, network, imds="disabled", tags={"eic-guard:connect-path": "vpn"})
    report = scan(ranges_2026, create_endpoints=True)
    found = entry(report, instance_id)
    assert (found.verdict, found.checks) == ("error", {})
    assert found.error.startswith("eic-guard:connect-path='vpn' is not a connect path")
    assert api_calls.writes() == []
    assert report.summary.errors == 1


@pytest.mark.parametrize("preserve", [False, True])
def test_an_instance_allowing_the_endpoints_address_range_passes_only_without_preserve_client_ip(
    account, ec2, api_calls, ranges_2026, preserve
):
    # Given their endpoint and an instance whose group allows TCP 22 from the endpoint's subnet
    network = account.network()
    their_endpoint(account, network, preserve_client_ip=preserve)
    ssh = account.security_group(network, "from-public-subnet", [ssh_from("10.0.1.0/24")])
    [instance_id] = account.launch(
        image_id=account.al2023_ami(), subnet_id=network.private_subnet_id, group_ids=[ssh], public_ip=False
    )
    found = entry(scan(ranges_2026, mode="report"), instance_id)
    assert found.checks["endpoint-ssh-ingress"].status == ("would-fix" if preserve else "pass")
