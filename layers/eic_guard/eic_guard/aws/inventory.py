"""Gather: read one (account, region) target with paginated, batched describes into a frozen TargetSnapshot.

The number of calls grows with DescribeInstances pages and with the number of distinct ids / 200 for the other
describes, never with the number of instances. Looking for near-misses of the opt-in tag (a mistyped tag leaves an
instance unwatched, whether or not others are opted in) costs one more bounded DescribeTags per region (and, only
when it finds one, one DescribeInstances for at most 200 ids).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from ..models import (
    Image,
    IngressPermission,
    Instance,
    InstanceConnectEndpoint,
    ManagedAddress,
    NaclEntry,
    NetworkAcl,
    NetworkInterface,
    Route,
    RouteTable,
    SecurityGroup,
    TargetSnapshot,
)
from ..observability import logger
from ..ranges.managed_group import EIC_IPV6_PREFIX_LIST, EIC_PREFIX_LIST, prefix_list_fallback_note
from ..settings import (
    ENDPOINT_GROUP_NAME,
    ENDPOINT_INSTANCE_GROUP_NAME,
    MANAGED_BY_TAG,
    MANAGED_GROUP_NAME,
    Settings,
)
from .clients import PERMISSION_DENIED, OneLargeParseAtATime

SCANNED_STATES = ("pending", "running", "stopping", "stopped")
FILTER_VALUES_PER_CALL = 200  # EC2 accepts at most 200 values in one filter
# The near-miss look-up reads at most one DescribeTags page (MaxResults caps at 1,000) of the tags whose key looks
# like the opt-in key: enough to name the mistyped ones, bounded whatever the fleet's size.
NEAR_MISS_TAGS_READ = 1000
NEAR_MISS_INSTANCES_NAMED = 5
# Values people write when they mean "true" (only when the configured value is `true` in some case).
TRUE_SPELLINGS = frozenset({"true", "yes", "1", "on"})
# EC2 filter values are case-sensitive; `?` matches exactly one character and `\` escapes `*`, `?` and itself.
FILTER_WILDCARDS = frozenset("*?\\")
EIC_GUARD_GROUP_NAMES = (MANAGED_GROUP_NAME, ENDPOINT_INSTANCE_GROUP_NAME, ENDPOINT_GROUP_NAME)


def gather(
    ec2: Any, account_id: str, region: str, settings: Settings, instance_ids: Sequence[str] | None = None
) -> TargetSnapshot:
    """Read everything the checks need for the opted-in instances of one region (only `instance_ids`, when given:
    an event-driven check; one DescribeInstances per 200 ids, still filtered by the opt-in tag)."""
    with OneLargeParseAtATime.reading_large_answers():  # a page's turn lasts until its records are made
        instances = tuple(_instances(ec2, settings, instance_ids))
    notes: list[str] = []
    if instance_ids is None:  # an event-driven check of given instances has nothing to say about the others
        notes.extend(_opt_in_near_misses_if_allowed(ec2, account_id, region, settings, len(instances)))
    vpc_ids = sorted({i.vpc_id for i in instances if i.vpc_id})
    endpoints, endpoints_unreadable = _endpoints_if_allowed(ec2, account_id, region, vpc_ids)
    group_ids = sorted({g for i in instances for g in _all_group_ids(i)} | {g for e in endpoints for g in e.group_ids})
    security_groups = {g.group_id: g for g in _security_groups(ec2, group_ids)} if group_ids else {}
    named = _groups_named_eic_guard(ec2, vpc_ids) if vpc_ids else NamedGroups()
    managed_groups = named.owned.get(MANAGED_GROUP_NAME, {})
    foreign_vpcs = frozenset(vpc for vpc, name in named.unowned if name == MANAGED_GROUP_NAME)
    for by_vpc in named.owned.values():
        security_groups.update({g.group_id: g for g in by_vpc.values()})
    eic_lists = _eic_prefix_list_ids(ec2, region)
    list_ids = {pl for g in security_groups.values() for p in g.ingress for pl in p.prefix_list_ids}
    list_ids.update(pl for pl in eic_lists if pl)
    if settings.ingress_source == "prefix-list" and (instances or managed_groups):
        # The managed groups (those there, those a fix would create) reference the AWS-managed list, or fall back
        # to CIDRs where it does not exist (ranges/managed_group.desired_rules); the refresh says the same.
        notes.extend(prefix_list_fallback_note(region, ipv6) for ipv6, pl in enumerate(eic_lists) if not pl)
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
        notes=tuple(notes) + ((endpoints_unreadable,) if endpoints_unreadable else ()),
        endpoints=endpoints,
        endpoint_instance_groups=named.owned.get(ENDPOINT_INSTANCE_GROUP_NAME, {}),
        endpoint_groups=named.owned.get(ENDPOINT_GROUP_NAME, {}),
        unowned_group_names=named.unowned,
        endpoints_unreadable=endpoints_unreadable,
    )


@dataclass(frozen=True)
class NamedGroups:
    """The VPCs' groups named as eic-guard names its own: those tagged ManagedBy=eic-guard by name and VPC, and the
    (vpc, name) pairs whose group of that name is someone else's (eic-guard neither uses nor changes it)."""

    owned: dict[str, dict[str, SecurityGroup]] = field(default_factory=dict)  # name -> vpc_id -> group
    unowned: frozenset[tuple[str, str]] = frozenset()


def _endpoints_if_allowed(
    ec2: Any, account_id: str, region: str, vpc_ids: list[str]
) -> tuple[tuple[InstanceConnectEndpoint, ...], str | None]:
    """The EC2 Instance Connect Endpoints of the instances' VPCs (docs/architecture.md §13), and why they could not
    be read: a role that predates the endpoint path (a member stack not updated) may not grant the describe; the
    region is still scanned, its endpoint-path instances get an error naming it."""
    if not vpc_ids:
        return (), None
    try:
        return instance_connect_endpoints(ec2, set(vpc_ids)), None
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in PERMISSION_DENIED:
            raise
        logger.warning(
            "EC2 Instance Connect Endpoints not described: ec2:DescribeInstanceConnectEndpoints denied",
            extra={"account": account_id, "region": region, "error": str(exc)},
        )
        return (
            (),
            "EC2 Instance Connect Endpoints not read: ec2:DescribeInstanceConnectEndpoints denied "
            "(update the member stack)",
        )


def instance_connect_endpoints(ec2: Any, vpc_ids: set[str] | None = None) -> tuple[InstanceConnectEndpoint, ...]:
    """The region's endpoints (of `vpc_ids` only, when given): one paginated describe (AWS allows 5 per Region and
    one per VPC by default, so one page of 50), then their network interfaces' addresses, one call per 200."""
    raw = [
        e
        for e in paginate(ec2, "describe_instance_connect_endpoints", "InstanceConnectEndpoints", MaxResults=50)
        if vpc_ids is None or e.get("VpcId") in vpc_ids
    ]
    eni_ids = sorted({n for e in raw for n in e.get("NetworkInterfaceIds", ())})
    addresses = (
        {
            n["NetworkInterfaceId"]: n.get("PrivateIpAddress")
            for n in _by_filter(
                ec2, "describe_network_interfaces", "NetworkInterfaces", "network-interface-id", eni_ids
            )
        }
        if eni_ids
        else {}
    )
    return tuple(
        InstanceConnectEndpoint(
            endpoint_id=e["InstanceConnectEndpointId"],
            vpc_id=e.get("VpcId", ""),
            subnet_id=e.get("SubnetId", ""),
            state=e.get("State", "unknown"),
            state_message=e.get("StateMessage"),
            group_ids=tuple(e.get("SecurityGroupIds", ())),
            preserve_client_ip=bool(e.get("PreserveClientIp", False)),
            ip_address_type=e.get("IpAddressType", "ipv4"),
            network_interface_ids=tuple(e.get("NetworkInterfaceIds", ())),
            tags=_tags(e.get("Tags")),
            address=next((addresses[n] for n in e.get("NetworkInterfaceIds", ()) if addresses.get(n)), None),
        )
        for e in raw
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


def _opt_in_near_misses_if_allowed(
    ec2: Any, account_id: str, region: str, settings: Settings, opted_in: int
) -> list[str]:
    """The near-miss notes; none when the role predates the look-up (a member stack not updated yet may not grant
    ec2:DescribeTags): the look-up is advice, so the region is still scanned."""
    try:
        return _opt_in_near_misses(ec2, settings, opted_in)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in PERMISSION_DENIED:
            raise
        logger.warning(
            "near-miss opt-in tags not looked for: ec2:DescribeTags denied (update the member stack)",
            extra={"account": account_id, "region": region, "error": str(exc)},
        )
        return []


def _opt_in_near_misses(ec2: Any, settings: Settings, opted_in: int) -> list[str]:
    """Target notes naming (at most NEAR_MISS_INSTANCES_NAMED) live instances that carry a near-miss of the opt-in
    tag: its key in another case, or its value misspelt (`True`, `yes`, ` true`...).

    One DescribeTags page of instance tags whose key is the opt-in key or has its shape in any case, then one
    DescribeInstances for the state and Name of what was found (a terminated instance keeps its tags for a while).
    """
    keys = sorted({settings.tag_key, _any_case_pattern(settings.tag_key)})
    filters = [{"Name": "resource-type", "Values": ["instance"]}, {"Name": "key", "Values": keys}]
    pages = ec2.get_paginator("describe_tags").paginate(
        Filters=filters, PaginationConfig={"MaxItems": NEAR_MISS_TAGS_READ, "PageSize": NEAR_MISS_TAGS_READ}
    )
    misses: dict[str, tuple[str, str, str]] = {}
    for page in pages:
        for tag in page.get("Tags", ()):
            problem = _near_miss(tag["Key"], tag.get("Value", ""), settings)
            if problem:
                misses.setdefault(tag["ResourceId"], (tag["Key"], tag.get("Value", ""), problem))
    if not misses:
        return []
    live = _live_instance_names(ec2, sorted(misses)[:FILTER_VALUES_PER_CALL])
    notes = []
    for instance_id in sorted(live)[:NEAR_MISS_INSTANCES_NAMED]:
        key, value, problem = misses[instance_id]
        name = f" ({live[instance_id]})" if live[instance_id] else ""
        shown = value if value == value.strip() else repr(value)
        notes.append(
            f"{opted_in} instance{'' if opted_in == 1 else 's'} opted in here, but {instance_id}{name} is tagged "
            f"{key}={shown}: {problem}"
        )
    if len(live) > NEAR_MISS_INSTANCES_NAMED:
        notes.append(f"... and {len(live) - NEAR_MISS_INSTANCES_NAMED} more instance(s) with a near-miss opt-in tag")
    return notes


def _any_case_pattern(key: str) -> str:
    """A DescribeTags key filter matching `key` in any case: each cased character becomes `?` (one character)."""
    return "".join("?" if c.lower() != c.upper() else "\\" + c if c in FILTER_WILDCARDS else c for c in key)


def _near_miss(key: str, value: str, settings: Settings) -> str | None:
    """What is wrong with a tag that was surely meant as the opt-in tag; None for the tag itself or another tag."""
    wanted_key, wanted_value = settings.tag_key, settings.tag_value
    meant = value.strip().casefold()
    value_close = meant == wanted_value.casefold() or (wanted_value.casefold() == "true" and meant in TRUE_SPELLINGS)
    if key.casefold() != wanted_key.casefold() or not value_close or (key, value) == (wanted_key, wanted_value):
        return None
    problems = []
    if key != wanted_key:
        problems.append(f"the key must be exactly `{wanted_key}` (tag keys are case-sensitive)")
    if value != wanted_value:
        problems.append(f"the value {'exactly' if problems else 'must be exactly'} `{wanted_value}`")
    return " and ".join(problems)


def _live_instance_names(ec2: Any, instance_ids: list[str]) -> dict[str, str]:
    """Instance id -> Name tag ("" when none) of those in a state eic-guard scans."""
    filters = [
        {"Name": "instance-id", "Values": instance_ids},
        {"Name": "instance-state-name", "Values": list(SCANNED_STATES)},
    ]
    return {
        raw["InstanceId"]: dict(_tags(raw.get("Tags"))).get("Name", "")
        for reservation in paginate(ec2, "describe_instances", "Reservations", Filters=filters)
        for raw in reservation.get("Instances", ())
    }


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
        private_ip=raw.get("PrivateIpAddress"),
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
        egress=tuple(_permission(p) for p in raw.get("IpPermissionsEgress", ())),
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


def _groups_named_eic_guard(ec2: Any, vpc_ids: list[str]) -> NamedGroups:
    """The VPCs' groups named eic-guard-ssh, eic-guard-eice-ssh or eic-guard-eice, one call per 200 VPCs (read here,
    so that report mode and remediate mode both refuse before any write to a group someone else named so)."""
    key, value = MANAGED_BY_TAG
    owned: dict[str, dict[str, SecurityGroup]] = {}
    unowned: set[tuple[str, str]] = set()
    for chunk in _chunks(vpc_ids):
        filters = [
            {"Name": "vpc-id", "Values": chunk},
            {"Name": "group-name", "Values": list(EIC_GUARD_GROUP_NAMES)},
        ]
        for raw in paginate(ec2, "describe_security_groups", "SecurityGroups", Filters=filters):
            group = parse_security_group(raw)
            if group.tag(key) == value:
                owned.setdefault(group.group_name, {})[group.vpc_id or ""] = group
            else:
                unowned.add((group.vpc_id or "", group.group_name))
    return NamedGroups(owned, frozenset(unowned))


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
