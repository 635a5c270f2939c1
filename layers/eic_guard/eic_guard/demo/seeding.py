"""Seed the simulated account with the scenarios (demo/scenarios.py): images, networks, groups, instances."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..models import EicPrefixes
from ..simulated import Network, SimulatedAccount, ssh_from
from .scenarios import RETIRED_NAME, SCENARIOS, UBUNTU_NAME, Scenario


@dataclass
class DemoFleet:
    """What the seeding created: instance ids by scenario, VPCs, and ENI groups that must never change."""

    instances: dict[str, Scenario] = field(default_factory=dict)
    vpcs: dict[str, str] = field(default_factory=dict)  # the public path's VPCs (each gets eic-guard-ssh)
    private_vpcs: dict[str, str] = field(default_factory=dict)  # the endpoint path's (docs/architecture.md §13)
    endpoints: dict[str, str] = field(default_factory=dict)  # VPC label -> the endpoint seeded there (not eic-guard's)
    route_tables: dict[str, str] = field(default_factory=dict)  # each VPC's public route table
    untouched_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    imds_fixed: list[str] = field(default_factory=list)

    def name(self, instance_id: str) -> str:
        scenario = self.instances.get(instance_id)
        return scenario.name if scenario else "not created by the demo"


def security_group_rules(eic: EicPrefixes) -> dict[str, list[dict]]:
    """The application groups the scenarios refer to, by name ("app" is the network's own, rule-less group)."""
    prefixes = [str(p) for p in eic.ipv4]
    half = str(next(eic.ipv4[0].subnets(prefixlen_diff=1)))
    return {
        "eic-ssh": [ssh_from(*prefixes)],
        "open-ssh": [ssh_from("0.0.0.0/0")],
        "ssh-2222": [ssh_from(*prefixes, port_from=2222, port_to=2222)],
        "udp-22": [ssh_from(*prefixes, protocol="udp")],
        "narrow-ssh": [ssh_from(half)],
        "web": [ssh_from("0.0.0.0/0", port_from=443, port_to=443)],
    }


def demo_images(account: SimulatedAccount) -> dict[str, str]:
    """Real Amazon AMIs from moto's public data, plus two images of this account (one to be deregistered)."""
    return {
        "al2023": account.al2023_ami(),
        "al2": account.amazon_image("amzn2-ami-hvm-*"),
        "minimal": account.amazon_image("al2023-ami-minimal-2023*-x86_64"),
        "ubuntu": account.own_image(UBUNTU_NAME, "Canonical, Ubuntu, 22.04 LTS (copied into this account)"),
        "retired": account.own_image(RETIRED_NAME, "a golden image built from AL2023, deregistered since"),
    }


def locked_subnet(account: SimulatedAccount, network: Network, cidr: str) -> str:
    """A third, public subnet whose NACL denies TCP 22: every other prerequisite holds there."""
    ec2 = account.ec2
    tags = [{"ResourceType": "subnet", "Tags": [{"Key": "Name", "Value": "prod-locked"}]}]
    subnet = ec2.create_subnet(VpcId=network.vpc_id, CidrBlock=cidr, TagSpecifications=tags)["Subnet"]["SubnetId"]
    ec2.modify_subnet_attribute(SubnetId=subnet, MapPublicIpOnLaunch={"Value": True})
    ec2.associate_route_table(RouteTableId=network.public_route_table_id, SubnetId=subnet)
    account.block_ssh_in_nacl(network.vpc_id, subnet)
    return subnet


@dataclass(frozen=True)
class DemoNetwork:
    """A VPC of the demo with its subnets and security groups by the names scenarios use."""

    vpc_id: str
    subnets: dict[str, str]
    groups: dict[str, str]
    public_route_table_id: str


def demo_networks(account: SimulatedAccount, eic: EicPrefixes) -> dict[str, DemoNetwork]:
    """Two VPCs ("prod" with public, private and NACL-locked subnets; "staging"), each with the demo's groups."""
    networks = {"prod": account.network("10.0.0.0/16", "prod"), "staging": account.network("10.1.0.0/16", "staging")}
    result = {}
    for label, network in networks.items():
        subnets = {"public": network.public_subnet_id, "private": network.private_subnet_id}
        if label == "prod":
            subnets["locked"] = locked_subnet(account, network, "10.0.3.0/24")
        groups = {"app": network.app_group_id}
        for name, rules in security_group_rules(eic).items():
            groups[name] = account.security_group(network, f"{label}-{name}", rules)
        result[label] = DemoNetwork(network.vpc_id, subnets, groups, network.public_route_table_id)
    return result


def private_networks(account: SimulatedAccount) -> tuple[dict[str, DemoNetwork], dict[str, str]]:
    """The endpoint path's VPCs (docs/architecture.md §13): "dev" with the network team's EC2 Instance Connect
    Endpoint (its own group, in the public subnet; not eic-guard's), a group allowing TCP 22 from that group, and a
    subnet whose NACL denies TCP 22; "lab" without an endpoint. Returns the networks and the endpoint ids."""
    dev, lab = account.network("10.2.0.0/16", "dev"), account.network("10.3.0.0/16", "lab")
    endpoint_group = account.security_group(dev, "dev-endpoint", [])
    endpoint = account.instance_connect_endpoint(dev.public_subnet_id, [endpoint_group], tags={"Team": "network"})
    from_endpoint = {
        "IpProtocol": "tcp",
        "FromPort": 22,
        "ToPort": 22,
        "UserIdGroupPairs": [{"GroupId": endpoint_group}],
    }
    groups = {
        "app": dev.app_group_id,
        "eice-ssh": account.security_group(dev, "dev-ssh-from-endpoint", [from_endpoint]),
    }
    subnets = {"public": dev.public_subnet_id, "private": dev.private_subnet_id}
    subnets["locked"] = locked_subnet(account, dev, "10.2.3.0/24")
    networks = {
        "dev": DemoNetwork(dev.vpc_id, subnets, groups, dev.public_route_table_id),
        "lab": DemoNetwork(
            lab.vpc_id,
            {"public": lab.public_subnet_id, "private": lab.private_subnet_id},
            {"app": lab.app_group_id},
            lab.public_route_table_id,
        ),
    }
    return networks, {"dev": endpoint["InstanceConnectEndpointId"]}


def seed(account: SimulatedAccount, eic: EicPrefixes) -> DemoFleet:
    """Create the demo account: images, networks, every scenario's instance; then stop and deregister."""
    images = demo_images(account)
    networks = demo_networks(account, eic)
    private, endpoints = private_networks(account)
    fleet = DemoFleet(
        vpcs={label: network.vpc_id for label, network in networks.items()},
        route_tables={label: network.public_route_table_id for label, network in networks.items()},
        private_vpcs={label: network.vpc_id for label, network in private.items()},
        endpoints=endpoints,
    )
    networks = {**networks, **private}
    for scenario in SCENARIOS:
        fleet.instances[launch(account, scenario, networks[scenario.vpc], images)] = scenario
    stopped = [i for i, s in fleet.instances.items() if s.stopped]
    account.ec2.stop_instances(InstanceIds=stopped)
    account.ec2.deregister_image(ImageId=images["retired"])
    never_touched = [i for i, s in fleet.instances.items() if s.final in ("", "excluded")]
    fleet.untouched_groups = interface_groups(account.ec2, never_touched)
    fleet.imds_fixed = [i for i, s in fleet.instances.items() if s.opted_in and s.imds == "disabled"]
    return fleet


def launch(account: SimulatedAccount, scenario: Scenario, network: DemoNetwork, images: dict[str, str]) -> str:
    """Launch one scenario's instance, named after it."""
    (instance_id,) = account.launch(
        image_id=images[scenario.image],
        subnet_id=network.subnets[scenario.subnet],
        group_ids=[network.groups[g] for g in scenario.groups],
        tags={**scenario.owners, **dict(scenario.tags)},
        public_ip=scenario.public_ip,
        imds=scenario.imds,
        opted_in=scenario.opted_in,
        name=scenario.name,
    )
    return instance_id


def interface_groups(ec2, instance_ids: list[str]) -> dict[str, tuple[str, ...]]:
    """Each instance's security groups, read from its ENIs (moto does not update the instance-level list)."""
    found = {}
    for reservation in ec2.describe_instances(InstanceIds=instance_ids)["Reservations"]:
        for instance in reservation["Instances"]:
            found[instance["InstanceId"]] = tuple(
                sorted(g["GroupId"] for eni in instance["NetworkInterfaces"] for g in eni["Groups"])
            )
    return found
