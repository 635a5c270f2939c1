"""Frozen snapshots of the AWS state one scan reads, and the results checks return.

Snapshots are plain frozen dataclasses (not pydantic): they are built for every instance on the hot path.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CheckStatus = Literal["pass", "fail", "fixed", "would-fix", "error", "not-applicable"]
Verdict = Literal["compliant", "fixed", "noncompliant", "excluded", "error"]


@dataclass(frozen=True)
class EicPrefixes:
    """The EC2_INSTANCE_CONNECT prefixes AWS publishes for one region."""

    region: str
    ipv4: tuple[ipaddress.IPv4Network, ...] = ()
    ipv6: tuple[ipaddress.IPv6Network, ...] = ()
    unavailable: str | None = None  # set when no ip-ranges.json could be read at all (not: none published)

    @property
    def all(self) -> tuple[IPNetwork, ...]:
        return self.ipv4 + self.ipv6


@dataclass(frozen=True)
class IngressPermission:
    """One IpPermissions entry of a security group."""

    protocol: str  # "-1", "tcp", "udp", "icmp" or a protocol number
    from_port: int | None
    to_port: int | None
    ipv4_ranges: tuple[str, ...] = ()
    ipv6_ranges: tuple[str, ...] = ()
    prefix_list_ids: tuple[str, ...] = ()
    group_refs: tuple[str, ...] = ()
    descriptions: tuple[str, ...] = ()

    def allows_tcp_port(self, port: int) -> bool:
        if self.protocol == "-1":
            return True
        if self.protocol not in ("tcp", "6"):
            return False
        if self.from_port is None or self.to_port is None:
            return True
        return self.from_port <= port <= self.to_port


@dataclass(frozen=True)
class SecurityGroup:
    group_id: str
    group_name: str
    vpc_id: str | None
    tags: tuple[tuple[str, str], ...]
    ingress: tuple[IngressPermission, ...]
    egress: tuple[IngressPermission, ...] = ()  # the same shape: IpPermissionsEgress (ranges are destinations)

    def tag(self, key: str) -> str | None:
        return dict(self.tags).get(key)


@dataclass(frozen=True)
class NetworkInterface:
    eni_id: str
    device_index: int
    subnet_id: str | None
    group_ids: tuple[str, ...]
    public_ip: str | None
    ipv6_addresses: tuple[str, ...]


@dataclass(frozen=True)
class Instance:
    instance_id: str
    state: str
    vpc_id: str | None
    subnet_id: str | None
    image_id: str | None
    tags: tuple[tuple[str, str], ...]
    public_ip: str | None
    instance_group_ids: tuple[str, ...]
    network_interfaces: tuple[NetworkInterface, ...]
    http_endpoint: str | None
    http_tokens: str | None
    private_ip: str | None = None  # the primary private IPv4 address

    def tag(self, key: str) -> str | None:
        return dict(self.tags).get(key)

    @property
    def primary_eni(self) -> NetworkInterface | None:
        return min(self.network_interfaces, key=lambda n: n.device_index, default=None)

    @property
    def has_ipv6(self) -> bool:
        return any(n.ipv6_addresses for n in self.network_interfaces)

    @property
    def public_ipv4(self) -> str | None:
        return self.public_ip or next((n.public_ip for n in self.network_interfaces if n.public_ip), None)

    @property
    def connect_subnet_id(self) -> str | None:
        """The subnet EIC's traffic enters through: the connect ENI's, else the instance's."""
        eni = self.connect_eni()
        return (eni.subnet_id if eni else None) or self.subnet_id

    @property
    def connect_has_ipv6(self) -> bool:
        eni = self.connect_eni()
        return bool(eni and eni.ipv6_addresses)

    def connect_eni(self) -> NetworkInterface | None:
        """The ENI EIC reaches: the one holding the public address, else the primary one."""
        with_public = [n for n in self.network_interfaces if n.public_ip]
        if with_public:
            return min(with_public, key=lambda n: n.device_index)
        return self.primary_eni


@dataclass(frozen=True)
class Image:
    image_id: str
    name: str
    owner_id: str
    state: str
    description: str = ""


@dataclass(frozen=True)
class Route:
    destination: str
    gateway_id: str | None
    state: str


@dataclass(frozen=True)
class RouteTable:
    route_table_id: str
    vpc_id: str
    main: bool
    subnet_ids: tuple[str, ...]
    routes: tuple[Route, ...]


@dataclass(frozen=True)
class NaclEntry:
    rule_number: int
    egress: bool
    protocol: str
    allow: bool
    cidr: str | None
    port_from: int | None
    port_to: int | None


@dataclass(frozen=True)
class NetworkAcl:
    nacl_id: str
    vpc_id: str
    default: bool
    subnet_ids: tuple[str, ...]
    entries: tuple[NaclEntry, ...]


@dataclass(frozen=True)
class ManagedAddress:
    """An Elastic IP eic-guard allocated (tag ManagedBy=eic-guard)."""

    allocation_id: str
    public_ip: str
    association_id: str | None
    instance_id: str | None
    network_interface_id: str | None


# Endpoint states in which an endpoint still exists in its VPC (docs/architecture.md §13); the others are gone or
# going: a VPC whose only endpoint is in one of them has no endpoint.
LIVE_ENDPOINT_STATES = frozenset(
    {"create-in-progress", "create-complete", "update-in-progress", "update-complete", "update-failed"}
)
USABLE_ENDPOINT_STATES = frozenset({"create-complete", "update-in-progress", "update-complete", "update-failed"})


@dataclass(frozen=True)
class InstanceConnectEndpoint:
    """An EC2 Instance Connect Endpoint (DescribeInstanceConnectEndpoints) and its network interface's address."""

    endpoint_id: str
    vpc_id: str
    subnet_id: str
    state: str
    state_message: str | None
    group_ids: tuple[str, ...]
    preserve_client_ip: bool
    ip_address_type: str
    network_interface_ids: tuple[str, ...]
    tags: tuple[tuple[str, str], ...]
    address: str | None = None  # the private IPv4 of its network interface (None until it has one)

    def tag(self, key: str) -> str | None:
        return dict(self.tags).get(key)

    @property
    def live(self) -> bool:
        return self.state in LIVE_ENDPOINT_STATES

    @property
    def usable(self) -> bool:
        return self.state in USABLE_ENDPOINT_STATES

    @property
    def serves_ipv4(self) -> bool:
        return self.ip_address_type in ("ipv4", "dualstack")


@dataclass(frozen=True)
class TargetSnapshot:
    """Everything one (account, region) scan needs, read with a constant number of batched calls."""

    account_id: str
    region: str
    instances: tuple[Instance, ...]
    security_groups: dict[str, SecurityGroup]
    images: dict[str, Image]
    route_tables: tuple[RouteTable, ...]
    network_acls: tuple[NetworkAcl, ...]
    prefix_lists: dict[str, tuple[str, ...]]
    managed_groups: dict[str, SecurityGroup]  # vpc_id -> eic-guard-ssh group
    vpcs_with_unowned_managed_name: frozenset[str] = frozenset()  # an untagged eic-guard-ssh exists there
    eic_prefix_list_id: str | None = None  # com.amazonaws.<region>.ec2-instance-connect
    eic_ipv6_prefix_list_id: str | None = None  # com.amazonaws.<region>.ipv6.ec2-instance-connect
    managed_addresses: tuple[ManagedAddress, ...] = ()
    notes: tuple[str, ...] = ()  # what a person should know about the target, e.g. near-miss opt-in tags
    # The endpoint path (docs/architecture.md §13): the instances' VPCs' endpoints, eic-guard's groups of that path by
    # VPC, the (vpc, name) pairs whose group of an eic-guard name is someone else's, and why endpoints could not be
    # read (None: they were).
    endpoints: tuple[InstanceConnectEndpoint, ...] = ()
    endpoint_instance_groups: dict[str, SecurityGroup] = field(default_factory=dict)  # vpc_id -> eic-guard-eice-ssh
    endpoint_groups: dict[str, SecurityGroup] = field(default_factory=dict)  # vpc_id -> eic-guard-eice
    unowned_group_names: frozenset[tuple[str, str]] = frozenset()
    endpoints_unreadable: str | None = None

    @cached_property
    def _route_table_index(self) -> dict[str, RouteTable]:
        index = {f"main:{t.vpc_id}": t for t in self.route_tables if t.main}
        index.update({subnet: t for t in self.route_tables for subnet in t.subnet_ids})
        return index

    @cached_property
    def _network_acl_index(self) -> dict[str, NetworkAcl]:
        return {subnet: a for a in self.network_acls for subnet in a.subnet_ids}

    def route_table_for(self, vpc_id: str | None, subnet_id: str | None) -> RouteTable | None:
        """The subnet's explicitly associated table, else the VPC's main table."""
        index = self._route_table_index
        return index.get(subnet_id or "") or index.get(f"main:{vpc_id}")

    def network_acl_for(self, subnet_id: str | None) -> NetworkAcl | None:
        return self._network_acl_index.get(subnet_id or "")

    @cached_property
    def _endpoints_by_vpc(self) -> dict[str, tuple[InstanceConnectEndpoint, ...]]:
        index: dict[str, list[InstanceConnectEndpoint]] = {}
        for endpoint in self.endpoints:
            index.setdefault(endpoint.vpc_id, []).append(endpoint)
        return {vpc: tuple(found) for vpc, found in index.items()}

    def endpoints_in(self, vpc_id: str | None) -> tuple[InstanceConnectEndpoint, ...]:
        """The VPC's endpoints, whatever their state, in the order EC2 listed them."""
        return self._endpoints_by_vpc.get(vpc_id or "", ())

    def endpoint_for(self, vpc_id: str | None) -> InstanceConnectEndpoint | None:
        """The VPC's endpoint that serves it: a usable one, else one being created, else None (AWS allows one per
        VPC; should there be more, the usable one wins)."""
        found = self.endpoints_in(vpc_id)
        return next((e for e in found if e.usable), None) or next((e for e in found if e.live), None)


@dataclass(frozen=True)
class Fix:
    """A remediation a check wants: what to do and to which resource (executed by the gateway)."""

    action: str
    resource: str
    detail: str
    params: tuple[tuple[str, str], ...] = ()

    def param(self, key: str) -> str:
        return dict(self.params)[key]


@dataclass(frozen=True)
class CheckResult:
    """A check's verdict on one instance.

    `kind` names the failure kind (a short stable slug) and `facts` the values found, so the guidance
    (checks/guidance.py) can say exactly what to do; `warnings` ("<code>: <text>") flag a risk on any status, e.g. a
    pass that lets TCP 22 in from the whole internet.
    """

    status: CheckStatus
    reason: str | None = None
    fix: Fix | None = None
    kind: str | None = None
    facts: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()

    def fact(self, key: str) -> str | None:
        return dict(self.facts).get(key)

    def with_facts(self, **facts: str) -> tuple[tuple[str, str], ...]:
        """These facts plus the given ones (a given key replaces the old value)."""
        return tuple({**dict(self.facts), **facts}.items())


@dataclass
class ActionRecord:
    action: str
    resource: str
    status: Literal["done", "planned", "failed"]
    detail: str


@dataclass
class InstanceOutcome:
    """The mutable per-instance record the engine fills in, turned into the report at the end."""

    instance_id: str
    region: str
    vpc_id: str | None
    checks: dict[str, CheckResult] = field(default_factory=dict)
    actions: list[ActionRecord] = field(default_factory=list)
    excluded_reason: str | None = None
    error: str | None = None
    account_id: str = ""
    name: str | None = None  # the Name tag
    tags: dict[str, str] = field(default_factory=dict)  # the configured owner tags the instance carries
    warnings: list[str] = field(default_factory=list)  # every check's warnings, in check order
    connect_path: str | None = None  # "public" | "endpoint" (docs/architecture.md §13)
