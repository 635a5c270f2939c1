"""Seed a moto server with a large fleet whose drift, and so every verdict, is known in advance.

Instances come from a few *profiles* (compliant, missing SSH rule, IMDS disabled, ...), launched in batches with
RunInstances MinCount/MaxCount so that 10,000 instances take a few dozen calls. Each profile states the verdict
eic-guard must give in report mode, in the first remediate run and in the second one, the verdict of the floor's
three checks, and the writes remediation needs (so "writes == changes needed" can be checked exactly).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from eic_guard.ranges.ip_ranges import IpRanges
from eic_guard.settings import EXCLUDE_TAG, MANAGED_GROUP_NAME
from eic_guard.simulated import DEFAULT_TAG, SimulatedAccount, ssh_from

REGIONS = ("us-east-1", "eu-west-1")
VPCS_PER_REGION = 3
OPEN_SUBNETS_PER_VPC = 2  # plus one subnet per VPC whose NACL denies TCP 22
BATCH = 250  # instances per RunInstances call
UNTAGGED_SHARE = 0.10  # instances without the opt-in tag, on top of N: never read into the report, never modified
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, read_timeout=600, connect_timeout=10)

MNIA = "ModifyNetworkInterfaceAttribute"
MIMO = "ModifyInstanceMetadataOptions"


@dataclass(frozen=True)
class Profile:
    """A kind of instance: how it is launched and what eic-guard (and the floor) must say about it."""

    name: str
    share: float  # of the N opted-in instances
    report: str  # expected verdict, report mode
    remediate: str  # expected verdict, first remediate run
    second: str  # expected verdict, second remediate run (nothing left to write)
    floor: str  # expected verdict of the floor's three checks
    writes: tuple[str, ...] = ()  # the writes remediation needs for one such instance
    image: str = "al2023"
    subnet: str = "open"  # "open" or "blocked" (NACL denies TCP 22)
    groups: tuple[str, ...] = ("eic-ssh", "app")
    public_ip: bool = True
    imds: str = "enabled"
    tags: tuple[tuple[str, str], ...] = ()
    stopped: bool = False
    opted_in: bool = True


PROFILES = (
    Profile("compliant", 0.45, "compliant", "compliant", "compliant", "compliant"),
    Profile("missing-ssh", 0.15, "noncompliant", "fixed", "compliant", "noncompliant", (MNIA,), groups=("app",)),
    Profile("imds-disabled", 0.10, "noncompliant", "fixed", "compliant", "compliant", (MIMO,), imds="disabled"),
    Profile(
        "missing-ssh+imds",
        0.05,
        "noncompliant",
        "fixed",
        "compliant",
        "noncompliant",
        (MNIA, MIMO),
        groups=("app",),
        imds="disabled",
    ),
    Profile(
        "stopped-missing-ssh",
        0.05,
        "noncompliant",
        "fixed",
        "compliant",
        "noncompliant",
        (MNIA,),
        groups=("app",),
        stopped=True,
    ),
    Profile("wrong-ami", 0.05, "noncompliant", "noncompliant", "noncompliant", "noncompliant", image="al2"),
    Profile("nacl-blocked", 0.05, "noncompliant", "noncompliant", "noncompliant", "compliant", subnet="blocked"),
    Profile("no-public-ip", 0.05, "noncompliant", "noncompliant", "noncompliant", "noncompliant", public_ip=False),
    Profile(
        "excluded",
        0.05,
        "excluded",
        "excluded",
        "excluded",
        "noncompliant",
        groups=("app",),
        imds="disabled",
        tags=((EXCLUDE_TAG, "benchmark: change freeze"),),
    ),
)
UNTAGGED = Profile("untagged", UNTAGGED_SHARE, "", "", "", "", groups=("app",), imds="disabled", opted_in=False)
PHASES = ("report", "remediate", "second", "floor")


def ec2_client(endpoint: str, region: str) -> Any:
    session = boto3.Session(aws_access_key_id="bench", aws_secret_access_key="bench", region_name=region)
    return session.client("ec2", endpoint_url=endpoint, config=CLIENT_CONFIG)


def ssm_client(endpoint: str, region: str) -> Any:
    session = boto3.Session(aws_access_key_id="bench", aws_secret_access_key="bench", region_name=region)
    return session.client("ssm", endpoint_url=endpoint, config=CLIENT_CONFIG)


def profile_counts(n: int) -> dict[str, int]:
    """How many instances of each profile make N opted-in ones (largest-remainder rounding, exact total)."""
    raw = {p.name: p.share * n for p in PROFILES}
    counts = {name: math.floor(v) for name, v in raw.items()}
    for name in sorted(raw, key=lambda k: raw[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[name] += 1
    counts[UNTAGGED.name] = round(UNTAGGED_SHARE * n)
    return counts


@dataclass
class SeededInstance:
    instance_id: str
    region: str
    profile: str
    eni_id: str
    groups: list[str]


@dataclass
class Fleet:
    """What was seeded: every instance with its profile, and the networks (for the undo between remediate runs)."""

    n: int
    regions: tuple[str, ...]
    instances: list[SeededInstance] = field(default_factory=list)
    vpcs: dict[str, list[str]] = field(default_factory=dict)  # region -> VPC ids
    group_vpcs: dict[str, str] = field(default_factory=dict)  # seeded security group id -> its VPC id

    @property
    def profiles(self) -> dict[str, Profile]:
        return {p.name: p for p in (*PROFILES, UNTAGGED)}

    def expected(self, phase: str) -> dict[str, str]:
        """instance id -> expected verdict for `phase`; instances that must not appear are left out."""
        profiles = self.profiles
        return {
            i.instance_id: getattr(profiles[i.profile], phase) for i in self.instances if profiles[i.profile].opted_in
        }

    def expected_writes(self) -> dict[str, Counter]:
        """region -> operation -> writes the first remediate run needs (changes needed, nothing more)."""
        profiles = self.profiles
        writes: dict[str, Counter] = {r: Counter() for r in self.regions}
        vpcs_needing_group: dict[str, set[str]] = {r: set() for r in self.regions}
        for i in self.instances:
            for op in profiles[i.profile].writes:
                writes[i.region][op] += 1
            if MNIA in profiles[i.profile].writes:
                vpcs_needing_group[i.region].add(self.group_vpcs[i.groups[0]])
        for region, vpcs in vpcs_needing_group.items():
            writes[region]["CreateSecurityGroup"] += len(vpcs)
            writes[region]["AuthorizeSecurityGroupIngress"] += len(vpcs)
        return writes

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)), encoding="utf-8")


# ---- seeding ------------------------------------------------------------------------------------------------------
@dataclass
class RegionNetwork:
    vpc_id: str
    open_subnets: list[str]
    blocked_subnet: str
    groups: dict[str, str]  # "app", "eic-ssh" -> group id


def _network(ec2: Any, index: int, eic_cidrs: list[str]) -> RegionNetwork:
    """A /16 VPC with an internet gateway, open /20 subnets routed to it and one whose NACL denies TCP 22."""
    vpc_id = ec2.create_vpc(CidrBlock=f"10.{index}.0.0/16")["Vpc"]["VpcId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)
    table = ec2.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    subnets = []
    for s in range(OPEN_SUBNETS_PER_VPC + 1):
        subnet = ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.{index}.{s * 16}.0/20")["Subnet"]["SubnetId"]
        ec2.associate_route_table(RouteTableId=table, SubnetId=subnet)
        subnets.append(subnet)
    blocked = subnets.pop()
    SimulatedAccount(ec2).block_ssh_in_nacl(vpc_id, blocked)
    groups = {}
    for name, rules in (
        ("app", [ssh_from("0.0.0.0/0", port_from=443, port_to=443)]),
        ("eic-ssh", [ssh_from(*eic_cidrs)]),
    ):
        groups[name] = ec2.create_security_group(GroupName=f"bench-{index}-{name}", Description=name, VpcId=vpc_id)[
            "GroupId"
        ]
        ec2.authorize_security_group_ingress(GroupId=groups[name], IpPermissions=rules)
    return RegionNetwork(vpc_id, subnets, blocked, groups)


def _images(endpoint: str, region: str) -> dict[str, str]:
    account = SimulatedAccount(
        ec2_client(endpoint, region), ssm_client(endpoint, region) if region == "us-east-1" else None
    )
    return {"al2023": account.al2023_ami(), "al2": account.amazon_image("amzn2-ami-hvm-*")}


def _launch(
    ec2: Any, profile: Profile, count: int, image_id: str, subnet_id: str, group_ids: list[str], serial: int
) -> list[tuple[str, str, list[str]]]:
    tags = dict(profile.tags)
    if profile.opted_in:
        tags[DEFAULT_TAG[0]] = DEFAULT_TAG[1]
    tags.update({"Name": f"bench-{profile.name}-{serial}", "bench:profile": profile.name})
    response = ec2.run_instances(
        ImageId=image_id,
        MinCount=count,
        MaxCount=count,
        InstanceType="t3.micro",
        MetadataOptions={"HttpEndpoint": profile.imds, "HttpTokens": "required"},
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
        NetworkInterfaces=[
            {
                "DeviceIndex": 0,
                "SubnetId": subnet_id,
                "Groups": group_ids,
                "AssociatePublicIpAddress": profile.public_ip,
            }
        ],
    )
    launched = []
    for instance in response["Instances"]:
        eni = instance["NetworkInterfaces"][0]
        launched.append((instance["InstanceId"], eni["NetworkInterfaceId"], [g["GroupId"] for g in eni["Groups"]]))
    return launched


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


def seed(endpoint: str, n: int, ranges: IpRanges, regions: tuple[str, ...] = REGIONS) -> Fleet:
    """Create the networks and the N (+10% untagged) instances over `regions`; return what was made."""
    fleet = Fleet(n=n, regions=regions)
    counts = profile_counts(n)
    with ThreadPoolExecutor(max_workers=len(regions)) as pool:  # one backend per region: no shared state
        for region_fleet in pool.map(
            lambda r: _seed_region(endpoint, r, counts, ranges, len(regions), regions.index(r)), regions
        ):
            fleet.instances.extend(region_fleet.instances)
            fleet.vpcs.update(region_fleet.vpcs)
            fleet.group_vpcs.update(region_fleet.group_vpcs)
    return fleet


def _seed_region(
    endpoint: str, region: str, counts: dict[str, int], ranges: IpRanges, n_regions: int, region_index: int
) -> Fleet:
    ec2 = ec2_client(endpoint, region)
    eic = [str(p) for p in ranges.for_region(region).ipv4]
    networks = [_network(ec2, v, eic) for v in range(VPCS_PER_REGION)]
    images = _images(endpoint, region)
    fleet = Fleet(n=0, regions=(region,), vpcs={region: [net.vpc_id for net in networks]})
    for net in networks:
        fleet.group_vpcs.update({g: net.vpc_id for g in net.groups.values()})
    serial = 0
    for profile in (*PROFILES, UNTAGGED):
        in_region = _split(counts[profile.name], n_regions)[region_index]
        launched: list[tuple[str, str, list[str]]] = []
        placements = [
            (net, subnet)
            for net in networks
            for subnet in (net.open_subnets if profile.subnet == "open" else [net.blocked_subnet])
        ]
        for (net, subnet), share in zip(placements, _split(in_region, len(placements)), strict=True):
            for batch in _split(share, max(1, math.ceil(share / BATCH))) if share else ():
                serial += 1
                launched += _launch(
                    ec2, profile, batch, images[profile.image], subnet, [net.groups[g] for g in profile.groups], serial
                )
        if profile.stopped and launched:
            ids = [i for i, _, _ in launched]
            for start in range(0, len(ids), 1000):
                ec2.stop_instances(InstanceIds=ids[start : start + 1000])
        fleet.instances += [SeededInstance(i, region, profile.name, eni, groups) for i, eni, groups in launched]
    return fleet


# ---- undo between remediate runs --------------------------------------------------------------------------------
def undo_remediation(endpoint: str, fleet: Fleet) -> int:
    """Put the seeded drift back (ENI groups, IMDS) and delete the managed groups; returns the writes made."""
    profiles = fleet.profiles
    jobs = []
    for i in fleet.instances:
        writes = profiles[i.profile].writes
        if MNIA in writes:
            jobs.append((i.region, MNIA, {"NetworkInterfaceId": i.eni_id, "Groups": i.groups}))
        if MIMO in writes:
            # HttpTokens restated as seeded: moto stores exactly what a request carries, and eic-guard refuses to
            # guess a token setting it cannot read (an undo without it made the next run's IMDS fixes "cannot fix")
            jobs.append(
                (i.region, MIMO, {"InstanceId": i.instance_id, "HttpEndpoint": "disabled", "HttpTokens": "required"})
            )
    clients = {r: ec2_client(endpoint, r) for r in fleet.regions}

    def run(job: tuple[str, str, dict]) -> None:
        region, op, params = job
        ec2 = clients[region]
        if op == MNIA:
            ec2.modify_network_interface_attribute(**params)
        else:
            ec2.modify_instance_metadata_options(**params)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(run, jobs))
    deleted = 0
    for ec2 in clients.values():
        groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [MANAGED_GROUP_NAME]}])
        for group in groups["SecurityGroups"]:
            ec2.delete_security_group(GroupId=group["GroupId"])
            deleted += 1
    return len(jobs) + deleted
