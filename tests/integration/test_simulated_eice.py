"""The simulator's EC2 Instance Connect Endpoint API (eic_guard/simulated_eice.py) answers as the EC2 API reference
says: the checks and remediation are only as right as the endpoints they are tested against."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.exceptions import ClientError
from eic_guard import simulated_eice
from eic_guard.simulated import Network, SimulatedAccount
from moto.server import ThreadedMotoServer

from tests.conftest import REGION

ACCOUNT = "123456789012"
MANAGED = {"ManagedBy": "eic-guard"}


@pytest.fixture
def network(account: SimulatedAccount) -> Network:
    return account.network()


def _code(excinfo: pytest.ExceptionInfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def _describe(ec2, **kwargs) -> list[dict]:
    return ec2.describe_instance_connect_endpoints(**kwargs)["InstanceConnectEndpoints"]


def test_create_answers_in_progress_then_describe_shows_complete_with_a_real_interface(ec2, account, network):
    # When
    created = account.instance_connect_endpoint(network.private_subnet_id, [network.app_group_id], tags=MANAGED)
    # Then: the create answer is the API reference's shape, in progress
    assert created["State"] == "create-in-progress"
    assert created["InstanceConnectEndpointId"].startswith("eice-")
    assert created["VpcId"] == network.vpc_id and created["SubnetId"] == network.private_subnet_id
    assert created["PreserveClientIp"] is False and created["IpAddressType"] == "ipv4"
    assert created["SecurityGroupIds"] == [network.app_group_id]
    assert created["Tags"] == [{"Key": "ManagedBy", "Value": "eic-guard"}]
    assert created["InstanceConnectEndpointArn"] == (
        f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance-connect-endpoint/{created['InstanceConnectEndpointId']}"
    )
    # ... and the next describe sees it done
    [described] = _describe(ec2)
    assert described["State"] == "create-complete"
    # ... with a network interface in the subnet, carrying the endpoint's groups
    [eni_id] = described["NetworkInterfaceIds"]
    [eni] = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"]
    assert eni["SubnetId"] == network.private_subnet_id
    assert [g["GroupId"] for g in eni["Groups"]] == [network.app_group_id]
    assert eni["InterfaceType"] == "ec2_instance_connect_endpoint" and eni["RequesterManaged"] is True
    assert eni["PrivateIpAddress"].startswith("10.0.2.")


def test_no_group_given_means_the_vpc_default_group(ec2, account, network):
    created = account.instance_connect_endpoint(network.private_subnet_id)
    default = ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [network.vpc_id]}, {"Name": "group-name", "Values": ["default"]}]
    )["SecurityGroups"][0]["GroupId"]
    assert created["SecurityGroupIds"] == [default]


def test_one_endpoint_per_vpc_and_five_per_region(ec2, account, network):
    # Given
    account.instance_connect_endpoint(network.private_subnet_id)
    # When / Then: a second one in the same VPC, even in another subnet
    with pytest.raises(ClientError) as excinfo:
        account.instance_connect_endpoint(network.public_subnet_id)
    assert _code(excinfo) == "ResourceLimitExceeded"
    assert "for this VPC" in excinfo.value.response["Error"]["Message"]
    # ... and a sixth in the Region
    for index in range(4):
        other = account.network(cidr=f"10.{10 + index}.0.0/16", name=f"n{index}")
        account.instance_connect_endpoint(other.private_subnet_id)
    sixth = account.network(cidr="10.20.0.0/16", name="sixth")
    with pytest.raises(ClientError) as excinfo:
        account.instance_connect_endpoint(sixth.private_subnet_id)
    assert _code(excinfo) == "ResourceLimitExceeded"
    assert "in this Region (5)" in excinfo.value.response["Error"]["Message"]


def test_a_deleted_or_failed_endpoint_no_longer_counts(ec2, account, network):
    first = account.instance_connect_endpoint(network.private_subnet_id)["InstanceConnectEndpointId"]
    simulated_eice.set_state(ACCOUNT, REGION, first, "create-failed", "Subnet has no free address")
    second = account.instance_connect_endpoint(network.private_subnet_id)["InstanceConnectEndpointId"]
    ec2.delete_instance_connect_endpoint(InstanceConnectEndpointId=second)
    third = account.instance_connect_endpoint(network.private_subnet_id)["InstanceConnectEndpointId"]
    states = {e["InstanceConnectEndpointId"]: (e["State"], e.get("StateMessage")) for e in _describe(ec2)}
    assert states == {
        first: ("create-failed", "Subnet has no free address"),
        second: ("delete-complete", None),
        third: ("create-complete", None),
    }


def test_delete_answers_in_progress_and_removes_the_interface(ec2, account, network):
    created = account.instance_connect_endpoint(network.private_subnet_id)
    endpoint_id, [eni_id] = created["InstanceConnectEndpointId"], created["NetworkInterfaceIds"]
    # When (the deletion held in progress, as it is for minutes in AWS)
    answer = ec2.delete_instance_connect_endpoint(InstanceConnectEndpointId=endpoint_id)["InstanceConnectEndpoint"]
    simulated_eice.set_state(ACCOUNT, REGION, endpoint_id, "delete-in-progress")
    # Then the interface stays while the deletion is in progress
    assert answer["State"] == "delete-in-progress"
    assert ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"]
    # ... and is gone at delete-complete
    simulated_eice.release(ACCOUNT, REGION, endpoint_id)
    [described] = _describe(ec2, InstanceConnectEndpointIds=[endpoint_id])
    assert described["State"] == "delete-complete" and described["NetworkInterfaceIds"] == []
    found = ec2.describe_network_interfaces(Filters=[{"Name": "network-interface-id", "Values": [eni_id]}])
    assert found["NetworkInterfaces"] == []


def test_unknown_and_malformed_ids(ec2):
    with pytest.raises(ClientError) as excinfo:
        ec2.delete_instance_connect_endpoint(InstanceConnectEndpointId="eice-0123456789abcdef0")
    assert _code(excinfo) == "InvalidInstanceConnectEndpointId.NotFound"
    with pytest.raises(ClientError) as excinfo:
        ec2.delete_instance_connect_endpoint(InstanceConnectEndpointId="sg-0123")
    assert _code(excinfo) == "InvalidInstanceConnectEndpointId.Malformed"
    with pytest.raises(ClientError) as excinfo:
        ec2.describe_instance_connect_endpoints(InstanceConnectEndpointIds=["eice-0123456789abcdef0"])
    assert _code(excinfo) == "InvalidInstanceConnectEndpointId.NotFound"


def test_dry_run_checks_and_changes_nothing(ec2, account, network):
    for call in (
        lambda: ec2.create_instance_connect_endpoint(SubnetId=network.private_subnet_id, DryRun=True),
        lambda: ec2.describe_instance_connect_endpoints(DryRun=True),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        assert _code(excinfo) == "DryRunOperation"
    assert _describe(ec2) == []
    endpoint_id = account.instance_connect_endpoint(network.private_subnet_id)["InstanceConnectEndpointId"]
    with pytest.raises(ClientError) as excinfo:
        ec2.delete_instance_connect_endpoint(InstanceConnectEndpointId=endpoint_id, DryRun=True)
    assert _code(excinfo) == "DryRunOperation"
    assert [e["State"] for e in _describe(ec2)] == ["create-complete"]


def test_client_token_returns_the_same_endpoint_and_refuses_another_request(ec2, network):
    kwargs = {"SubnetId": network.private_subnet_id, "PreserveClientIp": False, "ClientToken": "eic-guard-vpc-1"}
    first = ec2.create_instance_connect_endpoint(**kwargs)
    again = ec2.create_instance_connect_endpoint(**kwargs)
    assert again["ClientToken"] == "eic-guard-vpc-1"
    assert (
        again["InstanceConnectEndpoint"]["InstanceConnectEndpointId"]
        == (first["InstanceConnectEndpoint"]["InstanceConnectEndpointId"])
    )
    assert again["InstanceConnectEndpoint"]["State"] == "create-complete"
    with pytest.raises(ClientError) as excinfo:
        ec2.create_instance_connect_endpoint(**{**kwargs, "SubnetId": network.public_subnet_id})
    assert _code(excinfo) == "IdempotentParameterMismatch"
    assert len(_describe(ec2)) == 1


def test_ip_address_type_follows_the_subnet_and_preserve_client_ip_needs_ipv4(ec2, account, network):
    # An IPv4-only subnet cannot take a dualstack endpoint
    with pytest.raises(ClientError) as excinfo:
        account.instance_connect_endpoint(network.private_subnet_id, ip_address_type="dualstack")
    assert _code(excinfo) == "InvalidParameterCombination"
    # A dual-stack subnet gives dualstack by default, which cannot preserve the client IP
    ec2.associate_vpc_cidr_block(VpcId=network.vpc_id, AmazonProvidedIpv6CidrBlock=True)
    vpc_v6 = ec2.describe_vpcs(VpcIds=[network.vpc_id])["Vpcs"][0]["Ipv6CidrBlockAssociationSet"][0]["Ipv6CidrBlock"]
    subnet = ec2.create_subnet(
        VpcId=network.vpc_id, CidrBlock="10.0.3.0/24", Ipv6CidrBlock=vpc_v6.replace("/56", "/64")
    )["Subnet"]["SubnetId"]
    with pytest.raises(ClientError) as excinfo:
        account.instance_connect_endpoint(subnet, preserve_client_ip=True)
    assert _code(excinfo) == "InvalidParameterCombination"
    created = account.instance_connect_endpoint(subnet)
    assert created["IpAddressType"] == "dualstack"
    assert set(created["PublicDnsNames"]) == {"Ipv4", "Dualstack"}


def test_groups_must_exist_in_the_subnets_vpc(ec2, account, network):
    other = account.network(cidr="10.1.0.0/16", name="other")
    with pytest.raises(ClientError) as excinfo:
        account.instance_connect_endpoint(network.private_subnet_id, [other.app_group_id])
    assert _code(excinfo) == "InvalidParameter"
    with pytest.raises(ClientError) as excinfo:
        account.instance_connect_endpoint(network.private_subnet_id, ["sg-0123456789abcdef0"])
    assert _code(excinfo) == "InvalidGroup.NotFound"
    with pytest.raises(ClientError) as excinfo:
        ec2.create_instance_connect_endpoint(SubnetId="subnet-0123456789abcdef0")
    assert _code(excinfo) == "InvalidSubnetID.NotFound"


def test_filters_by_vpc_state_id_subnet_and_tags(ec2, account, network):
    other = account.network(cidr="10.1.0.0/16", name="other")
    ours = account.instance_connect_endpoint(network.private_subnet_id, tags={**MANAGED, "Team": "a"})
    theirs = account.instance_connect_endpoint(other.public_subnet_id, tags={"Team": "b"})
    simulated_eice.set_state(ACCOUNT, REGION, theirs["InstanceConnectEndpointId"], "create-in-progress")
    ours_id, theirs_id = ours["InstanceConnectEndpointId"], theirs["InstanceConnectEndpointId"]

    def ids(*filters: tuple[str, list[str]]) -> list[str]:
        found = _describe(ec2, Filters=[{"Name": n, "Values": v} for n, v in filters])
        return [e["InstanceConnectEndpointId"] for e in found]

    assert ids(("vpc-id", [network.vpc_id])) == [ours_id]
    assert ids(("vpc-id", [network.vpc_id, other.vpc_id])) == [ours_id, theirs_id]
    assert ids(("state", ["create-in-progress"])) == [theirs_id]
    assert ids(("instance-connect-endpoint-id", [theirs_id])) == [theirs_id]
    assert ids(("subnet-id", [network.private_subnet_id])) == [ours_id]
    assert ids(("tag:ManagedBy", ["eic-guard"])) == [ours_id]
    assert ids(("tag:Team", ["?"])) == [ours_id, theirs_id]
    assert ids(("tag-key", ["ManagedBy"])) == [ours_id]
    assert ids(("tag-value", ["b"])) == [theirs_id]
    assert ids(("vpc-id", [other.vpc_id]), ("state", ["create-complete"])) == []
    with pytest.raises(ClientError) as excinfo:
        ids(("owner-id", [ACCOUNT]))
    assert _code(excinfo) == "InvalidParameterValue"


def test_pages_of_max_results_with_next_token(ec2, account):
    created = []
    for index in range(5):
        network = account.network(cidr=f"10.{index}.0.0/16", name=f"n{index}")
        created.append(account.instance_connect_endpoint(network.private_subnet_id)["InstanceConnectEndpointId"])
    pages = list(ec2.get_paginator("describe_instance_connect_endpoints").paginate(PaginationConfig={"PageSize": 2}))
    assert [len(p["InstanceConnectEndpoints"]) for p in pages] == [2, 2, 1]
    assert [e["InstanceConnectEndpointId"] for p in pages for e in p["InstanceConnectEndpoints"]] == created
    with pytest.raises(ClientError) as excinfo:  # botocore itself refuses 0
        ec2.describe_instance_connect_endpoints(MaxResults=51)
    assert _code(excinfo) == "InvalidParameterValue"
    with pytest.raises(ClientError) as excinfo:
        ec2.describe_instance_connect_endpoints(NextToken="not-a-token")
    assert _code(excinfo) == "InvalidPaginationToken"


def test_modify_replaces_the_groups_of_the_endpoint_and_its_interface(ec2, account, network):
    created = account.instance_connect_endpoint(network.private_subnet_id)
    endpoint_id = created["InstanceConnectEndpointId"]
    group = account.security_group(network, "eice", [])
    _describe(ec2)  # create-complete
    assert ec2.modify_instance_connect_endpoint(InstanceConnectEndpointId=endpoint_id, SecurityGroupIds=[group])[
        "Return"
    ]
    [described] = _describe(ec2)
    assert described["SecurityGroupIds"] == [group] and described["State"] == "update-complete"
    [eni] = ec2.describe_network_interfaces(NetworkInterfaceIds=created["NetworkInterfaceIds"])["NetworkInterfaces"]
    assert [g["GroupId"] for g in eni["Groups"]] == [group]


def test_concurrent_creates_with_one_client_token_make_one_endpoint(network):
    # Given: the same simulated account reached over HTTP by eight clients at once (the threaded server)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        ec2 = boto3.client("ec2", REGION, endpoint_url=f"http://{host}:{port}")
        subnet = ec2.create_subnet(
            VpcId=ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"], CidrBlock="10.9.1.0/24"
        )["Subnet"]["SubnetId"]

        def create(_: int) -> str:
            answer = ec2.create_instance_connect_endpoint(SubnetId=subnet, PreserveClientIp=False, ClientToken="t")
            return answer["InstanceConnectEndpoint"]["InstanceConnectEndpointId"]

        # When
        with ThreadPoolExecutor(8) as pool:
            ids = set(pool.map(create, range(8)))
        # Then
        assert len(ids) == 1
        assert len(ec2.describe_instance_connect_endpoints()["InstanceConnectEndpoints"]) == 1
    finally:
        server.stop()
