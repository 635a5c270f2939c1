"""Gather: read one (account, region) target with paginated, batched describes into a frozen TargetSnapshot.

The number of calls grows with DescribeInstances pages and with the number of distinct ids / 200 for the other
describes, never with the number of instances.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ..models import (
    Image,
    IngressPermission,
    Instance,
    ManagedAddress,
    NaclEntry,
    NetworkAcl,
    NetworkInterface,
    Route,
    RouteTable,
    SecurityGroup,
    TargetSnapshot,
)
from ..settings import MANAGED_BY_TAG, MANAGED_GROUP_NAME, Settings

SCANNED_STATES = ("pending", "running", "stopping", "stopped")
FILTER_VALUES_PER_CALL = 200  # EC2 accepts at most 200 values in one filter
EIC_PREFIX_LIST = "com.amazonaws.{region}.ec2-instance-connect"
EIC_IPV6_PREFIX_LIST = "com.amazonaws.{region}.ipv6.ec2-instance-connect"


def gather(
    ec2: Any, account_id: str, region: str, settings: Settings, instance_ids: Sequence[str] | None = None
) -> TargetSnapshot:
    """Read everything the checks need for the opted-in instances of one region (only `instance_ids`, when given:
    an event-driven check; one DescribeInstances per 200 ids, still filtered by the opt-in tag)."""
    instances = tuple(_instances(ec2, settings, instance_ids))
    vpc_ids = sorted({i.vpc_id for i in instances if i.vpc_id})
    group_ids = sorted({g for i in instances for g in _all_group_ids(i)})
    security_groups = {g.group_id: g for g in _security_groups(ec2, group_ids)} if group_ids else {}
    managed_groups, foreign_vpcs = _groups_named_managed(ec2, vpc_ids) if vpc_ids else ({}, frozenset())
    security_groups.update({g.group_id: g for g in managed_groups.values()})
    eic_lists = _eic_prefix_list_ids(ec2, region)
    list_ids = {pl for g in security_groups.values() for p in g.ingress for pl in p.prefix_list_ids}
    list_ids.update(pl for pl in eic_lists if pl)
    return TargetSnapshot(
        account_id=account_id,
        region=region,
        instances=instances,
        security_groups=security_groups,
        images=_images(ec2, sorted({i.image_id for i in instances if i.image_id})),
        route_tables=tuple(_route_tables(ec2, vpc_ids)) if vpc_ids else (),
        network_acls=tuple(_network_acls(ec2, vpc_ids)) if vpc_ids else (),
        prefix_lists={pl: prefix_list_entries(ec2, pl) for pl in sorted(list_ids)},
        managed_groups=managed_groups,
        vpcs_with_unowned_managed_name=foreign_vpcs,
        eic_prefix_list_id=eic_lists[0],
        eic_ipv6_prefix_list_id=eic_lists[1],
        managed_addresses=tuple(_managed_addresses(ec2)) if settings.remediate_public_ip else (),
    )


def _chunks(values: list[str], size: int = FILTER_VALUES_PER_CALL) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def paginate(ec2: Any, operation: str, key: str, **kwargs) -> Iterator[dict]:
    for page in ec2.get_paginator(operation).paginate(**kwargs):
        yield from page.get(key, ())


def _by_filter(ec2: Any, operation: str, key: str, name: str, values: list[str], **kwargs) -> Iterator[dict]:
    for chunk in _chunks(values):
        yield from paginate(ec2, operation, key, Filters=[{"Name": name, "Values": chunk}], **kwargs)


def _tags(raw: Iterable[dict] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((t["Key"], t.get("Value", "")) for t in raw or ()))


def _instances(ec2: Any, settings: Settings, instance_ids: Sequence[str] | None = None) -> Iterator[Instance]:
    filters = [
        {"Name": f"tag:{settings.tag_key}", "Values": [settings.tag_value]},
        {"Name": "instance-state-name", "Values": list(SCANNED_STATES)},
    ]
    if instance_ids is None:
        batches: Iterable[list[dict]] = [filters]
    else:  # a filter, not InstanceIds: an id that vanished is simply absent instead of failing the call
        ids = sorted(set(instance_ids))
        batches = [[*filters, {"Name": "instance-id", "Values": chunk}] for chunk in _chunks(ids)]
    for batch in batches:
        for reservation in paginate(ec2, "describe_instances", "Reservations", Filters=batch):
            for raw in reservation.get("Instances", ()):
                yield _instance(raw)


def _instance(raw: dict) -> Instance:
    enis = tuple(
        NetworkInterface(
            eni_id=n["NetworkInterfaceId"],
            device_index=n.get("Attachment", {}).get("DeviceIndex", 0),
            subnet_id=n.get("SubnetId"),
            group_ids=tuple(g["GroupId"] for g in n.get("Groups", ())),
            public_ip=(n.get("Association") or {}).get("PublicIp"),
            ipv6_addresses=tuple(a["Ipv6Address"] for a in n.get("Ipv6Addresses", ())),
        )
        for n in raw.get("NetworkInterfaces", ())
    )
    metadata = raw.get("MetadataOptions") or {}
    return Instance(
        instance_id=raw["InstanceId"],
        state=raw.get("State", {}).get("Name", "unknown"),
        vpc_id=raw.get("VpcId"),
        subnet_id=raw.get("SubnetId"),
        image_id=raw.get("ImageId"),
        tags=_tags(raw.get("Tags")),
        public_ip=raw.get("PublicIpAddress"),
        instance_group_ids=tuple(g["GroupId"] for g in raw.get("SecurityGroups", ())),
        network_interfaces=enis,
        http_endpoint=metadata.get("HttpEndpoint"),
        http_tokens=metadata.get("HttpTokens"),
    )


def _all_group_ids(instance: Instance) -> set[str]:
    return set(instance.instance_group_ids) | {g for n in instance.network_interfaces for g in n.group_ids}


def parse_security_group(raw: dict) -> SecurityGroup:
    return SecurityGroup(
        group_id=raw["GroupId"],
        group_name=raw.get("GroupName", ""),
        vpc_id=raw.get("VpcId"),
        tags=_tags(raw.get("Tags")),
        ingress=tuple(_permission(p) for p in raw.get("IpPermissions", ())),
    )


def _permission(raw: dict) -> IngressPermission:
    ranges = raw.get("IpRanges", ())
    ranges6 = raw.get("Ipv6Ranges", ())
    lists = raw.get("PrefixListIds", ())
    return IngressPermission(
        protocol=str(raw.get("IpProtocol", "-1")),
        from_port=raw.get("FromPort"),
        to_port=raw.get("ToPort"),
        ipv4_ranges=tuple(r["CidrIp"] for r in ranges),
        ipv6_ranges=tuple(r["CidrIpv6"] for r in ranges6),
        prefix_list_ids=tuple(p["PrefixListId"] for p in lists),
        group_refs=tuple(g["GroupId"] for g in raw.get("UserIdGroupPairs", ()) if "GroupId" in g),
        descriptions=tuple(r.get("Description", "") for r in (*ranges, *ranges6, *lists)),
    )


def _security_groups(ec2: Any, group_ids: list[str]) -> Iterator[SecurityGroup]:
    for raw in _by_filter(ec2, "describe_security_groups", "SecurityGroups", "group-id", group_ids):
        yield parse_security_group(raw)


def _groups_named_managed(ec2: Any, vpc_ids: list[str]) -> tuple[dict[str, SecurityGroup], frozenset[str]]:
    """The VPCs' eic-guard-ssh groups: those tagged ManagedBy=eic-guard by VPC, and the VPCs whose group of that
    name is someone else's (read here, so that report mode and remediate mode both refuse before any write)."""
    key, value = MANAGED_BY_TAG
    found: dict[str, SecurityGroup] = {}
    unowned: set[str] = set()
    for chunk in _chunks(vpc_ids):
        filters = [
            {"Name": "vpc-id", "Values": chunk},
            {"Name": "group-name", "Values": [MANAGED_GROUP_NAME]},
        ]
        for raw in paginate(ec2, "describe_security_groups", "SecurityGroups", Filters=filters):
            group = parse_security_group(raw)
            if group.tag(key) == value:
                found[group.vpc_id or ""] = group
            else:
                unowned.add(group.vpc_id or "")
    return found, frozenset(unowned)


def _images(ec2: Any, image_ids: list[str]) -> dict[str, Image]:
    # A filter (not ImageIds) so that a deregistered AMI is simply absent instead of failing the whole call.
    images: dict[str, Image] = {}
    for chunk in _chunks(image_ids):
        response = ec2.describe_images(Filters=[{"Name": "image-id", "Values": chunk}], IncludeDeprecated=True)
        for raw in response.get("Images", ()):
            images[raw["ImageId"]] = Image(
                image_id=raw["ImageId"],
                name=raw.get("Name", ""),
                owner_id=raw.get("OwnerId", ""),
                state=raw.get("State", "available"),
                description=raw.get("Description", ""),
            )
    return images


def _route_tables(ec2: Any, vpc_ids: list[str]) -> Iterator[RouteTable]:
    for raw in _by_filter(ec2, "describe_route_tables", "RouteTables", "vpc-id", vpc_ids):
        associations = raw.get("Associations", ())
        yield RouteTable(
            route_table_id=raw["RouteTableId"],
            vpc_id=raw["VpcId"],
            main=any(a.get("Main") for a in associations),
            subnet_ids=tuple(a["SubnetId"] for a in associations if a.get("SubnetId")),
            routes=tuple(
                Route(
                    destination=r.get("DestinationCidrBlock") or r.get("DestinationIpv6CidrBlock") or "",
                    gateway_id=r.get("GatewayId") or r.get("NatGatewayId") or r.get("TransitGatewayId"),
                    state=r.get("State", "active"),
                )
                for r in raw.get("Routes", ())
            ),
        )


def _network_acls(ec2: Any, vpc_ids: list[str]) -> Iterator[NetworkAcl]:
    for raw in _by_filter(ec2, "describe_network_acls", "NetworkAcls", "vpc-id", vpc_ids):
        yield NetworkAcl(
            nacl_id=raw["NetworkAclId"],
            vpc_id=raw["VpcId"],
            default=bool(raw.get("IsDefault")),
            subnet_ids=tuple(a["SubnetId"] for a in raw.get("Associations", ()) if a.get("SubnetId")),
            entries=tuple(
                NaclEntry(
                    rule_number=int(e["RuleNumber"]),
                    egress=bool(e["Egress"]),
                    protocol=str(e["Protocol"]),
                    allow=e["RuleAction"] == "allow",
                    cidr=e.get("CidrBlock") or e.get("Ipv6CidrBlock"),
                    port_from=(e.get("PortRange") or {}).get("From"),
                    port_to=(e.get("PortRange") or {}).get("To"),
                )
                for e in raw.get("Entries", ())
            ),
        )


def _eic_prefix_list_ids(ec2: Any, region: str) -> tuple[str | None, str | None]:
    """The AWS-managed EIC lists of the region (IPv4, IPv6), one call for both; None where a list does not exist."""
    names = (EIC_PREFIX_LIST.format(region=region), EIC_IPV6_PREFIX_LIST.format(region=region))
    lists = ec2.describe_managed_prefix_lists(Filters=[{"Name": "prefix-list-name", "Values": list(names)}])
    ids = {p["PrefixListName"]: p["PrefixListId"] for p in lists.get("PrefixLists", ())}
    return ids.get(names[0]), ids.get(names[1])


def prefix_list_entries(ec2: Any, list_id: str) -> tuple[str, ...]:
    entries = paginate(ec2, "get_managed_prefix_list_entries", "Entries", PrefixListId=list_id)
    return tuple(e["Cidr"] for e in entries)


def _managed_addresses(ec2: Any) -> Iterator[ManagedAddress]:
    key, value = MANAGED_BY_TAG
    response = ec2.describe_addresses(Filters=[{"Name": f"tag:{key}", "Values": [value]}])
    for raw in response.get("Addresses", ()):
        yield ManagedAddress(
            allocation_id=raw["AllocationId"],
            public_ip=raw["PublicIp"],
            association_id=raw.get("AssociationId"),
            instance_id=raw.get("InstanceId"),
            network_interface_id=raw.get("NetworkInterfaceId"),
        )
