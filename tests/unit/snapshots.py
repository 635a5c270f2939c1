"""Small builders for frozen snapshots: every default describes a compliant instance, so a test states only
what it changes."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network

from eic_guard.checks import CheckContext
from eic_guard.models import (
    EicPrefixes,
    Image,
    IngressPermission,
    Instance,
    NaclEntry,
    NetworkAcl,
    NetworkInterface,
    Route,
    RouteTable,
    SecurityGroup,
    TargetSnapshot,
)
from eic_guard.settings import Settings

REGION = "us-east-1"
ACCOUNT = "123456789012"
AMAZON = "137112412989"
EIC_V4 = IPv4Network("18.206.107.24/29")
EIC_V6 = IPv6Network("2600:1f18:6fe3:8c00::/56")
VPC = "vpc-0aaa"
SUBNET = "subnet-0aaa"
INSTANCE_ID = "i-0123456789abcdef0"
PRIMARY_ENI = "eni-0primary"
SSH_GROUP = "sg-0ssh"  # the default group: TCP 22 from the EIC IPv4 and IPv6 prefixes
AMI = "ami-0006118602dfc1c09"
AL2023 = "al2023-ami-2023.12.20260727.0-kernel-6.1-x86_64"  # real us-east-1 name (tests/fixtures/ami)
PUBLIC_IP = "54.210.10.20"


def eic_prefixes(ipv4=(EIC_V4,), ipv6=(EIC_V6,), region: str = REGION) -> EicPrefixes:
    return EicPrefixes(region, tuple(ipv4), tuple(ipv6))


def rule(
    *cidrs: str,
    protocol: str = "tcp",
    ports: tuple[int, int] | None = (22, 22),
    prefix_lists: tuple[str, ...] = (),
    group_refs: tuple[str, ...] = (),
    descriptions: tuple[str, ...] = (),
) -> IngressPermission:
    """One ingress permission; `cidrs` may mix IPv4 and IPv6."""
    from_port, to_port = ports if ports else (None, None)
    return IngressPermission(
        protocol=protocol,
        from_port=from_port,
        to_port=to_port,
        ipv4_ranges=tuple(c for c in cidrs if ":" not in c),
        ipv6_ranges=tuple(c for c in cidrs if ":" in c),
        prefix_list_ids=prefix_lists,
        group_refs=group_refs,
        descriptions=descriptions,
    )


def group(
    group_id: str,
    *ingress: IngressPermission,
    vpc_id: str = VPC,
    name: str | None = None,
    tags: tuple[tuple[str, str], ...] = (),
) -> SecurityGroup:
    return SecurityGroup(group_id, name or group_id, vpc_id, tags, tuple(ingress))


def eni(
    eni_id: str = PRIMARY_ENI,
    device_index: int = 0,
    groups: tuple[str, ...] = (SSH_GROUP,),
    public_ip: str | None = None,
    ipv6: tuple[str, ...] = (),
    subnet_id: str = SUBNET,
) -> NetworkInterface:
    return NetworkInterface(eni_id, device_index, subnet_id, tuple(groups), public_ip, tuple(ipv6))


_DEFAULT = object()


def instance(
    *,
    instance_id: str = INSTANCE_ID,
    state: str = "running",
    public_ip: str | None = PUBLIC_IP,
    enis=_DEFAULT,
    groups: tuple[str, ...] = (SSH_GROUP,),
    ipv6: tuple[str, ...] = (),
    image_id: str | None = AMI,
    tags: dict[str, str] | None = None,
    http_endpoint: str | None = "enabled",
    http_tokens: str | None = "required",
    vpc_id: str | None = VPC,
    subnet_id: str | None = SUBNET,
) -> Instance:
    """An instance; without `enis`, one primary ENI carrying `public_ip`, `groups` and `ipv6`."""
    if enis is _DEFAULT:
        enis = (eni(groups=groups, public_ip=public_ip, ipv6=ipv6),)
    return Instance(
        instance_id=instance_id,
        state=state,
        vpc_id=vpc_id,
        subnet_id=subnet_id,
        image_id=image_id,
        tags=tuple((tags or {}).items()),
        public_ip=public_ip,
        instance_group_ids=tuple(groups),
        network_interfaces=tuple(enis),
        http_endpoint=http_endpoint,
        http_tokens=http_tokens,
    )


def image(name: str = AL2023, *, image_id: str = AMI, owner: str = AMAZON, state: str = "available") -> Image:
    return Image(image_id, name, owner, state)


def route(destination: str = "0.0.0.0/0", target: str | None = "igw-0aaa", state: str = "active") -> Route:
    return Route(destination, target, state)


LOCAL = Route("10.0.0.0/16", "local", "active")


def route_table(
    table_id: str, *routes: Route, main: bool = False, subnets: tuple[str, ...] = (), vpc_id: str = VPC
) -> RouteTable:
    return RouteTable(table_id, vpc_id, main, tuple(subnets), (LOCAL, *routes))


def nacl_entry(
    number: int,
    *,
    egress: bool = False,
    allow: bool = True,
    cidr: str = "0.0.0.0/0",
    protocol: str = "-1",
    ports: tuple[int, int] | None = None,
) -> NaclEntry:
    port_from, port_to = ports if ports else (None, None)
    return NaclEntry(number, egress, protocol, allow, cidr, port_from, port_to)


def default_nacl_entries() -> tuple[NaclEntry, ...]:
    """What AWS puts in a VPC's default NACL (IPv4 and IPv6): allow everything, then the `*` deny."""
    return tuple(
        entry
        for egress in (False, True)
        for entry in (
            nacl_entry(100, egress=egress),
            nacl_entry(101, egress=egress, cidr="::/0"),
            nacl_entry(32767, egress=egress, allow=False),
            nacl_entry(32768, egress=egress, allow=False, cidr="::/0"),
        )
    )


def network_acl(
    *entries: NaclEntry, nacl_id: str = "acl-0aaa", subnets: tuple[str, ...] = (SUBNET,), vpc_id: str = VPC
) -> NetworkAcl:
    return NetworkAcl(nacl_id, vpc_id, False, tuple(subnets), tuple(entries))


def snapshot(
    *instances: Instance,
    groups=None,
    images=None,
    route_tables=None,
    network_acls=None,
    prefix_lists: dict[str, tuple[str, ...]] | None = None,
    region: str = REGION,
) -> TargetSnapshot:
    """A target snapshot; every omitted part is the compliant default (SSH group, AL2023, IGW route, open NACL)."""
    if groups is None:
        groups = (group(SSH_GROUP, rule(str(EIC_V4), str(EIC_V6))),)
    if images is None:
        images = (image(),)
    if route_tables is None:
        route_tables = (route_table("rtb-0main", route(), main=True),)
    if network_acls is None:
        network_acls = (network_acl(*default_nacl_entries()),)
    return TargetSnapshot(
        account_id=ACCOUNT,
        region=region,
        instances=tuple(instances),
        security_groups={g.group_id: g for g in groups},
        images={i.image_id: i for i in images},
        route_tables=tuple(route_tables),
        network_acls=tuple(network_acls),
        prefix_lists=dict(prefix_lists or {}),
        managed_groups={},
    )


def context(snap: TargetSnapshot | None = None, eic: EicPrefixes | None = None, **settings) -> CheckContext:
    """A CheckContext for us-east-1 with the real EIC prefixes unless told otherwise."""
    return CheckContext(snap or snapshot(), eic or eic_prefixes(), Settings.build(regions=(REGION,), **settings))
