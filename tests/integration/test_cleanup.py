"""`eic-guard cleanup` (docs/architecture.md §12) against moto: what a remediate scan left is taken back, nothing else
is touched."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from eic_guard import simulated_eice
from eic_guard.aws.clients import AwsClients
from eic_guard.cli import main
from eic_guard.fanout.local import run_scan
from eic_guard.settings import (
    CONNECT_PATH_TAG,
    ENDPOINT_GROUP_NAME,
    ENDPOINT_INSTANCE_GROUP_NAME,
    Settings,
)

from tests.aws_views import eni_groups, primary_eni_id
from tests.conftest import IP_RANGES, REGION
from tests.faults.injector import FaultInjector
from tests.integration.org_fixtures import (
    create_organization,
    drifted_instance,
    managed_groups,
    role_arn,
    share_botocore_loader,
)

MANAGED_NAME = "eic-guard-ssh"
SNAPSHOT = str(IP_RANGES / "ip-ranges-2026-08-22.json")


@dataclass
class Fleet:
    """The state a remediate scan leaves, plus the user's own resources that cleanup must not touch."""

    managed_group: str
    app_group: str
    user_group: str
    lookalike_group: str
    lookalike_instance: str
    with_public_ip: str  # got the managed group
    with_elastic_ip: str  # got the managed group and an eic-guard Elastic IP
    managed_allocation: str
    untagged_allocation: str
    groups_before: dict[str, list[str]]


def remediated_fleet(account, ec2, ranges) -> Fleet:
    net = account.network()
    user_group = account.security_group(net, "team-bastion", [])
    image = account.al2023_ami()
    # drifted: no SSH rule for EIC, the metadata endpoint off; one with a public IP, one without (public subnet)
    [with_public_ip] = account.launch(
        image_id=image,
        subnet_id=net.public_subnet_id,
        group_ids=[net.app_group_id, user_group],
        public_ip=True,
        imds="disabled",
    )
    [with_elastic_ip] = account.launch(
        image_id=image,
        subnet_id=net.public_subnet_id,
        group_ids=[net.app_group_id],
        public_ip=False,
        tags={"eic-guard:public-ip": "allowed"},
    )
    # a look-alike: a user's own untagged group named eic-guard-ssh in another VPC, in use by a user's instance
    other = account.network(cidr="10.1.0.0/16", name="other")
    lookalike = account.security_group(other, MANAGED_NAME, [])
    [lookalike_instance] = account.launch(
        image_id=image, subnet_id=other.public_subnet_id, group_ids=[other.app_group_id, lookalike], opted_in=False
    )
    # an untagged Elastic IP of the user's, associated with the user's instance
    untagged = ec2.allocate_address(Domain="vpc")["AllocationId"]
    ec2.associate_address(AllocationId=untagged, NetworkInterfaceId=primary_eni_id(ec2, lookalike_instance))

    settings = Settings.build(regions=(REGION,), mode="remediate", remediate_public_ip=True)
    report = run_scan(AwsClients(), settings, ranges)
    assert {e.instance_id: e.verdict for e in report.instances} == {with_public_ip: "fixed", with_elastic_ip: "fixed"}

    [managed] = ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [net.vpc_id]}, {"Name": "group-name", "Values": [MANAGED_NAME]}]
    )["SecurityGroups"]
    [managed_address] = ec2.describe_addresses(Filters=[{"Name": "tag:ManagedBy", "Values": ["eic-guard"]}])[
        "Addresses"
    ]
    instances = (with_public_ip, with_elastic_ip, lookalike_instance)
    return Fleet(
        managed_group=managed["GroupId"],
        app_group=net.app_group_id,
        user_group=user_group,
        lookalike_group=lookalike,
        lookalike_instance=lookalike_instance,
        with_public_ip=with_public_ip,
        with_elastic_ip=with_elastic_ip,
        managed_allocation=managed_address["AllocationId"],
        untagged_allocation=untagged,
        groups_before={i: eni_groups(ec2, i) for i in instances},
    )


def cleanup(capsys, *extra: str) -> tuple[int, list[dict]]:
    code = main(["cleanup", "--region", REGION, "--format", "json", *extra])
    return code, json.loads(capsys.readouterr().out)


def group_ids(ec2) -> set[str]:
    return {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}


def allocations(ec2) -> set[str]:
    return {a["AllocationId"] for a in ec2.describe_addresses()["Addresses"]}


@pytest.fixture
def fleet(account, ec2, ranges_2026) -> Fleet:
    return remediated_fleet(account, ec2, ranges_2026)


def test_cleanup_takes_back_only_what_eic_guard_owns(fleet, ec2, api_calls, capsys):
    # Given the state a remediate scan left (checked: the managed group on both ENIs, after their own groups)
    assert fleet.groups_before[fleet.with_public_ip] == [fleet.app_group, fleet.user_group, fleet.managed_group]
    assert fleet.groups_before[fleet.with_elastic_ip] == [fleet.app_group, fleet.managed_group]
    api_calls.clear()

    # When cleanup runs
    code, actions = cleanup(capsys)

    # Then everything was done
    assert code == 0
    assert {a["status"] for a in actions} == {"done"}
    assert {(a["action"], a["resource"]) for a in actions} == {
        ("detach-group", primary_eni_id(ec2, fleet.with_public_ip)),
        ("detach-group", primary_eni_id(ec2, fleet.with_elastic_ip)),
        ("delete-group", fleet.managed_group),
        ("release-elastic-ip", fleet.managed_allocation),
    }
    assert all(a["account_id"] == "123456789012" and a["region"] == REGION for a in actions)
    # And the ENIs keep exactly their other groups, in order; the look-alike's user keeps it
    assert eni_groups(ec2, fleet.with_public_ip) == [fleet.app_group, fleet.user_group]
    assert eni_groups(ec2, fleet.with_elastic_ip) == [fleet.app_group]
    assert eni_groups(ec2, fleet.lookalike_instance) == fleet.groups_before[fleet.lookalike_instance]
    # And the managed group is gone, the user's group and the untagged look-alike are still there
    remaining = group_ids(ec2)
    assert fleet.managed_group not in remaining
    assert {fleet.app_group, fleet.user_group, fleet.lookalike_group} <= remaining
    # And eic-guard's address is released, the untagged one still associated
    assert allocations(ec2) == {fleet.untagged_allocation}
    [untagged] = ec2.describe_addresses(AllocationIds=[fleet.untagged_allocation])["Addresses"]
    assert untagged.get("AssociationId")
    # And the writes were exactly these
    assert sorted(api_calls.writes()) == sorted(
        [
            "ModifyNetworkInterfaceAttribute",
            "ModifyNetworkInterfaceAttribute",
            "DeleteSecurityGroup",
            "DisassociateAddress",
            "ReleaseAddress",
        ]
    )

    # When cleanup runs a second time
    api_calls.clear()
    code, again = cleanup(capsys)

    # Then it finds nothing and writes nothing
    assert (code, again) == (0, [])
    assert api_calls.writes() == []


def test_dry_run_writes_nothing_and_plans_the_same_actions(fleet, ec2, api_calls, capsys):
    # Given the state a remediate scan left
    api_calls.clear()

    # When cleanup runs with --dry-run
    code, planned = cleanup(capsys, "--dry-run")

    # Then nothing is written and every action is planned
    assert code == 0
    assert api_calls.writes() == []
    assert {a["status"] for a in planned} == {"planned"}
    assert eni_groups(ec2, fleet.with_public_ip) == fleet.groups_before[fleet.with_public_ip]
    assert fleet.managed_group in group_ids(ec2)
    assert fleet.managed_allocation in allocations(ec2)

    # When cleanup then runs for real
    code, done = cleanup(capsys)

    # Then it does exactly what was planned
    assert code == 0
    strip = [(a["account_id"], a["region"], a["action"], a["resource"], a["detail"]) for a in planned]
    assert strip == [(a["account_id"], a["region"], a["action"], a["resource"], a["detail"]) for a in done]
    assert {a["status"] for a in done} == {"done"}


def test_dry_run_table(fleet, capsys):
    # Given the state a remediate scan left
    # When cleanup --dry-run prints its table
    code = main(["cleanup", "--region", REGION, "--dry-run"])
    out = capsys.readouterr().out

    # Then it has a header, one row per action and a summary that says nothing changed
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["account_id", "region", "action", "resource", "status", "detail"]
    assert sum(" planned " in line for line in lines) == 4
    assert lines[-1] == "dry run: nothing changed; 4 actions: 4 planned"
    print(out)  # shown with -s: the output of `eic-guard cleanup --dry-run`


def test_an_interface_whose_only_group_is_the_managed_one_is_kept(fleet, ec2, api_calls, capsys):
    # Given someone left the managed group as the only group of an ENI
    lonely = primary_eni_id(ec2, fleet.with_elastic_ip)
    ec2.modify_network_interface_attribute(NetworkInterfaceId=lonely, Groups=[fleet.managed_group])
    api_calls.clear()

    # When cleanup runs
    code, actions = cleanup(capsys)

    # Then that ENI is kept with the reason, so the group is kept too, and the run exits 1
    assert code == 1
    by_resource = {(a["action"], a["resource"]): a for a in actions}
    kept = by_resource[("detach-group", lonely)]
    assert kept["status"] == "kept"
    assert "only security group" in kept["detail"]
    assert by_resource[("delete-group", fleet.managed_group)]["status"] == "kept"
    assert lonely in by_resource[("delete-group", fleet.managed_group)]["detail"]
    assert eni_groups(ec2, fleet.with_elastic_ip) == [fleet.managed_group]
    assert fleet.managed_group in group_ids(ec2)
    # And the rest is still done: the other ENI is detached and the address released
    assert by_resource[("detach-group", primary_eni_id(ec2, fleet.with_public_ip))]["status"] == "done"
    assert by_resource[("release-elastic-ip", fleet.managed_allocation)]["status"] == "done"
    assert "DeleteSecurityGroup" not in api_calls.writes()

    # When a person gives the ENI another group and runs cleanup again
    ec2.modify_network_interface_attribute(NetworkInterfaceId=lonely, Groups=[fleet.managed_group, fleet.app_group])
    code, actions = cleanup(capsys)

    # Then the group is detached and deleted
    assert code == 0
    assert [(a["action"], a["status"]) for a in actions] == [("detach-group", "done"), ("delete-group", "done")]
    assert eni_groups(ec2, fleet.with_elastic_ip) == [fleet.app_group]


def test_a_refused_delete_is_reported_not_raised(fleet, ec2, monkeypatch, capsys):
    # Given EC2 refuses to delete the managed group (e.g. a user's group references it; moto does not check that)
    faults = FaultInjector().install(monkeypatch)
    faults.error("DeleteSecurityGroup", "DependencyViolation", message="resource sg-x has a dependent object")

    # When cleanup runs
    code, actions = cleanup(capsys)

    # Then the delete is a failed action with EC2's reason, and the run went on (the address is released): exit 1
    by_action = {a["action"]: a for a in actions}
    assert code == 1
    assert by_action["delete-group"]["status"] == "failed"
    assert "DependencyViolation" in by_action["delete-group"]["detail"]
    assert by_action["release-elastic-ip"]["status"] == "done"
    assert fleet.managed_group in group_ids(ec2)


def test_usage_errors_exit_2(aws, capsys):
    # Given conflicting account flags
    # When cleanup runs
    code = main(["cleanup", "--region", REGION, "--organization", "--account", "123456789012"])

    # Then it is one line on stderr and exit 2
    assert code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_organization_cleanup_enters_every_account_and_reports_one_it_cannot(aws, monkeypatch, capsys):
    # Given an organization whose member A was remediated by a scan, and a member B whose role cannot be assumed
    share_botocore_loader(monkeypatch)
    org = create_organization()
    member_a, member_b = org.members
    net, instance = drifted_instance(org, member_a)
    scan = ["scan", "--organization", "--remediate", "--region", REGION, "--ip-ranges", SNAPSHOT, "--format", "json"]
    assert main(scan) == 0
    capsys.readouterr()
    [managed] = managed_groups(org.ec2(member_a))
    faults = FaultInjector().install(monkeypatch)
    faults.error("AssumeRole", "AccessDenied", service="sts", when=lambda p: p["RoleArn"] == role_arn(member_b))

    # When cleanup runs for the organization
    code, actions = cleanup(capsys, "--organization")

    # Then member A's group is detached and deleted, member B is one failed action, and the run exits 1
    assert code == 1
    assert sorted((a["account_id"], a["action"], a["status"]) for a in actions) == sorted(
        [(member_a, "detach-group", "done"), (member_a, "delete-group", "done"), (member_b, "enter-account", "failed")]
    )
    [refused] = [a for a in actions if a["account_id"] == member_b]
    assert "AccessDenied" in refused["detail"]
    assert managed_groups(org.ec2(member_a)) == []
    eni = org.ec2(member_a).describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
    assert [g["GroupId"] for g in eni["NetworkInterfaces"][0]["Groups"]] == [net.app_group_id]
    assert managed["GroupId"] not in group_ids(org.ec2(member_a))


# ---- the endpoint path (docs/architecture.md §13) ------------------------------------------------------------------
@dataclass
class EndpointFleet:
    """What a remediate scan with CreateEndpoints=true leaves, and the user's endpoint-path resources beside it."""

    own_endpoint: str  # created by eic-guard in VPC x (tagged ManagedBy=eic-guard, with eic-guard-eice)
    user_endpoint: str  # the user's, in VPC y, with the user's group
    user_endpoint_group: str
    lookalike_group: str  # the user's untagged group named eic-guard-eice
    owned_groups: set[str]  # eic-guard-eice (x), eic-guard-eice-ssh (x and y)
    instances: dict[str, str]  # private instance of x and of y -> its primary ENI


def endpoint_fleet(account, ec2, ranges) -> EndpointFleet:
    image = account.al2023_ami()
    x = account.network("10.4.0.0/16", name="x")
    y = account.network("10.5.0.0/16", name="y")
    user_endpoint_group = account.security_group(y, "team-endpoint", [])
    user_endpoint = account.instance_connect_endpoint(y.private_subnet_id, [user_endpoint_group], tags={"Owner": "net"})
    lookalike = account.security_group(y, ENDPOINT_GROUP_NAME, [])
    private = {}
    for net, path_tag in ((x, {CONNECT_PATH_TAG: "endpoint"}), (y, {})):
        [instance] = account.launch(
            image_id=image,
            subnet_id=net.private_subnet_id,
            group_ids=[net.app_group_id],
            public_ip=False,
            tags=path_tag,
        )
        private[instance] = net
    settings = Settings.build(regions=(REGION,), mode="remediate", create_endpoints=True)
    report = run_scan(AwsClients(), settings, ranges)
    assert {e.instance_id: (e.connect_path, e.verdict) for e in report.instances} == dict.fromkeys(
        private, ("endpoint", "fixed")
    )
    owned = ec2.describe_instance_connect_endpoints(Filters=[{"Name": "tag:ManagedBy", "Values": ["eic-guard"]}])
    [own_endpoint] = owned["InstanceConnectEndpoints"]
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [ENDPOINT_GROUP_NAME, ENDPOINT_INSTANCE_GROUP_NAME]}]
    )["SecurityGroups"]
    owned_groups = {g["GroupId"] for g in groups if {"Key": "ManagedBy", "Value": "eic-guard"} in g.get("Tags", [])}
    assert len(owned_groups) == 3
    return EndpointFleet(
        own_endpoint=own_endpoint["InstanceConnectEndpointId"],
        user_endpoint=user_endpoint["InstanceConnectEndpointId"],
        user_endpoint_group=user_endpoint_group,
        lookalike_group=lookalike,
        owned_groups=owned_groups,
        instances={i: primary_eni_id(ec2, i) for i in private},
    )


def endpoint_states(ec2) -> dict[str, str]:
    return {
        e["InstanceConnectEndpointId"]: e["State"]
        for e in ec2.describe_instance_connect_endpoints()["InstanceConnectEndpoints"]
    }


@pytest.fixture
def endpoints(account, ec2, ranges_2026, monkeypatch) -> EndpointFleet:
    monkeypatch.setattr("eic_guard.cleanup.ENDPOINT_POLL_SECONDS", 0)
    return endpoint_fleet(account, ec2, ranges_2026)


def test_cleanup_deletes_only_the_endpoint_and_groups_eic_guard_created(endpoints, ec2, api_calls, capsys):
    # Given the endpoint eic-guard created (x) and its groups, eic-guard-eice-ssh on the private instances of x and of
    # y (where the user's own endpoint is), the user's endpoint, its group, and an untagged look-alike eic-guard-eice
    assert endpoint_states(ec2) == {
        endpoints.own_endpoint: "create-complete",
        endpoints.user_endpoint: "create-complete",
    }
    api_calls.clear()

    # When cleanup runs
    code, actions = cleanup(capsys)

    # Then eic-guard's endpoint is deleted first, and its groups are detached and deleted once it is gone
    assert code == 0, actions
    assert {a["status"] for a in actions} == {"done"}
    assert actions[0]["action"] == "delete-endpoint" and actions[0]["resource"] == endpoints.own_endpoint
    deleted = {a["resource"] for a in actions if a["action"] == "delete-group"}
    assert deleted == endpoints.owned_groups
    assert {a["resource"] for a in actions if a["action"] == "detach-group"} == set(endpoints.instances.values())
    assert endpoint_states(ec2) == {
        endpoints.own_endpoint: "delete-complete",
        endpoints.user_endpoint: "create-complete",
    }
    # And the user's endpoint keeps its group, the instances keep their own groups, the look-alike survives
    [user] = ec2.describe_instance_connect_endpoints(InstanceConnectEndpointIds=[endpoints.user_endpoint])[
        "InstanceConnectEndpoints"
    ]
    assert user["SecurityGroupIds"] == [endpoints.user_endpoint_group]
    remaining = group_ids(ec2)
    assert endpoints.owned_groups.isdisjoint(remaining)
    assert {endpoints.user_endpoint_group, endpoints.lookalike_group} <= remaining
    for eni in endpoints.instances.values():
        [interface] = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"]
        assert endpoints.owned_groups.isdisjoint(g["GroupId"] for g in interface["Groups"])
    assert api_calls.count("DeleteInstanceConnectEndpoint") == 1

    # When cleanup runs a second time
    api_calls.clear()
    code, again = cleanup(capsys)

    # Then it finds nothing and writes nothing
    assert (code, again) == (0, [])
    assert api_calls.writes() == []


def test_cleanup_dry_run_lists_the_created_endpoint_and_writes_nothing(endpoints, ec2, api_calls, capsys):
    # Given the state a remediate scan with CreateEndpoints=true left
    api_calls.clear()

    # When cleanup --dry-run prints its table
    code = main(["cleanup", "--region", REGION, "--dry-run"])
    out = capsys.readouterr().out
    print(out)  # shown with -s: the output of `eic-guard cleanup --dry-run` (the closing note's)

    # Then the endpoint eic-guard created is listed to delete, with its group after it; nothing is written
    assert code == 0
    assert api_calls.writes() == []
    rows = [line.split() for line in out.splitlines()[1:-1]]
    assert [r[3] for r in rows if r[2] == "delete-endpoint"] == [endpoints.own_endpoint]
    assert {r[3] for r in rows if r[2] == "delete-group"} == endpoints.owned_groups
    assert endpoints.user_endpoint not in out and endpoints.lookalike_group not in out
    assert "once its endpoint is deleted" in out
    assert out.splitlines()[-1].startswith("dry run: nothing changed; ")
    assert endpoint_states(ec2)[endpoints.own_endpoint] == "create-complete"


def test_an_endpoint_still_being_deleted_keeps_its_group_until_the_next_cleanup(endpoints, ec2, monkeypatch, capsys):
    # Given AWS takes longer to delete the endpoint than cleanup waits
    monkeypatch.setattr("eic_guard.cleanup.ENDPOINT_DELETE_WAIT_SECONDS", 0)
    monkeypatch.setattr(simulated_eice, "TRANSITION_SECONDS", 3600.0)

    # When cleanup runs
    code, actions = cleanup(capsys)

    # Then the endpoint's deletion is under way, its group is kept with the reason, the instances' groups are gone
    assert code == 1
    kept = [a for a in actions if a["status"] == "kept"]
    assert [a["action"] for a in kept] == ["delete-group"]
    assert kept[0]["detail"].startswith(f"{ENDPOINT_GROUP_NAME} in ")
    assert "run cleanup again in a few minutes" in kept[0]["detail"]
    assert endpoint_states(ec2)[endpoints.own_endpoint] == "delete-in-progress"

    # When the deletion completes and cleanup runs again
    monkeypatch.setattr(simulated_eice, "TRANSITION_SECONDS", 0.0)
    code, again = cleanup(capsys)

    # Then the group goes too, and nothing is left
    assert code == 0
    assert [(a["action"], a["status"]) for a in again] == [("delete-group", "done")]
    assert endpoints.owned_groups.isdisjoint(group_ids(ec2))
