"""From the resources the changes of one (account, region) name to the instances they may have broken.

An instance id is its own answer; a network interface → its instance; a security group → the instances whose network
interfaces use it; a route table → the instances in its subnets (the VPC's main table: in the subnets without an
explicit association); a network ACL → the instances in its subnets; a VPC (its internet gateway detached) → its
instances; a change that names nothing left to follow (an association that no longer exists) → every opted-in
instance of the region. The lookups are coalesced for the whole batch:
one call per kind of lookup (and per 200 filter values), never one per event. Instance lookups by subnet or VPC keep
only opted-in instances in the scanned states (the same filters as the scan), so a busy subnet costs nothing extra.
Ids that no longer exist are simply absent (filters, never id lists that fail on an unknown id).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..aws.inventory import FILTER_VALUES_PER_CALL, SCANNED_STATES, paginate
from ..settings import Settings
from .events import ChangeEvent


def affected_instances(ec2: Any, changes: Sequence[ChangeEvent], settings: Settings) -> list[set[str]]:
    """Per change (in order), the ids of the instances to check (not yet filtered by the opt-in tag for id-named ones:
    the scan's own tag filter does that)."""
    lookups = _Lookups(ec2, settings)
    groups_by_name = lookups.groups_named(_union(c.group_names for c in changes))
    group_ids = _union(c.group_ids for c in changes) | _union(groups_by_name.values())
    by_group = lookups.instances_by_group(group_ids)
    by_interface = lookups.instances_by_interface(_union(c.interface_ids for c in changes))
    tables = lookups.route_tables(_union(c.route_table_ids for c in changes))
    acls = lookups.network_acls(_union(c.network_acl_ids for c in changes))
    subnets_of = [_subnets(c, tables, acls) for c in changes]
    main_vpcs = {tables[t].main_vpc for c in changes for t in c.route_table_ids if t in tables and tables[t].main_vpc}
    by_subnet = lookups.instances_by_subnet(_union(subnets_of))
    by_main_vpc = lookups.instances_by_main_table(main_vpcs)
    by_vpc = lookups.instances_by_vpc(_union(c.vpc_ids for c in changes))
    region = lookups.instances_in_region() if any(c.whole_region for c in changes) else set()
    affected = []
    for change, subnets in zip(changes, subnets_of, strict=True):
        ids = set(change.instance_ids) | (region if change.whole_region else set())
        ids.update(i for vpc in change.vpc_ids for i in by_vpc.get(vpc, ()))
        ids.update(i for eni in change.interface_ids for i in by_interface.get(eni, ()))
        named = [g for n in change.group_names for g in groups_by_name.get(n, ())]
        ids.update(i for g in (*change.group_ids, *named) for i in by_group.get(g, ()))
        ids.update(i for s in subnets for i in by_subnet.get(s, ()))
        for table in change.route_table_ids:
            vpc = tables[table].main_vpc if table in tables else None
            ids.update(by_main_vpc.get(vpc, ()) if vpc else ())
        affected.append(ids)
    return affected


@dataclass(frozen=True)
class _RouteTable:
    subnets: frozenset[str]  # explicitly associated
    main_vpc: str | None  # the VPC whose main table it is


@dataclass(frozen=True)
class _NetworkAcl:
    subnets_by_association: dict[str, str]


def _subnets(change: ChangeEvent, tables: dict[str, _RouteTable], acls: dict[str, _NetworkAcl]) -> set[str]:
    """The subnets whose route or network ACL the change touched (a main table's are added by VPC)."""
    subnets = set(change.subnet_ids)
    for table in change.route_table_ids:
        subnets |= tables[table].subnets if table in tables else set()
    for acl_id in change.network_acl_ids:
        acl = acls.get(acl_id)
        if acl is None:
            continue
        made = [acl.subnets_by_association[a] for a in change.acl_association_ids if a in acl.subnets_by_association]
        # A new association names its one subnet; without it (or once replaced again) every subnet of the ACL.
        subnets.update(made or acl.subnets_by_association.values())
    return subnets


def _union(sets: Iterable[Iterable[str]]) -> set[str]:
    return {value for values in sets for value in values}


def _chunks(values: set[str]) -> Iterable[list[str]]:
    ordered = sorted(values)
    for start in range(0, len(ordered), FILTER_VALUES_PER_CALL):
        yield ordered[start : start + FILTER_VALUES_PER_CALL]


class _Lookups:
    """The batched describes; each returns an empty answer without a call when asked about nothing."""

    def __init__(self, ec2: Any, settings: Settings):
        self.ec2 = ec2
        self.opted_in = [
            {"Name": f"tag:{settings.tag_key}", "Values": [settings.tag_value]},
            {"Name": "instance-state-name", "Values": list(SCANNED_STATES)},
        ]

    def _each(self, operation: str, key: str, name: str, values: set[str], *extra: dict) -> Iterable[dict]:
        for chunk in _chunks(values):
            yield from paginate(self.ec2, operation, key, Filters=[*extra, {"Name": name, "Values": chunk}])

    def groups_named(self, names: set[str]) -> dict[str, list[str]]:
        found = defaultdict(list)
        for group in self._each("describe_security_groups", "SecurityGroups", "group-name", names):
            found[group["GroupName"]].append(group["GroupId"])
        return found

    def instances_by_group(self, group_ids: set[str]) -> dict[str, set[str]]:
        found = defaultdict(set)
        for eni in self._each("describe_network_interfaces", "NetworkInterfaces", "group-id", group_ids):
            instance_id = (eni.get("Attachment") or {}).get("InstanceId")
            for group in eni.get("Groups", ()):
                if instance_id and group["GroupId"] in group_ids:
                    found[group["GroupId"]].add(instance_id)
        return found

    def instances_by_interface(self, eni_ids: set[str]) -> dict[str, set[str]]:
        found = defaultdict(set)
        for eni in self._each("describe_network_interfaces", "NetworkInterfaces", "network-interface-id", eni_ids):
            instance_id = (eni.get("Attachment") or {}).get("InstanceId")
            if instance_id:
                found[eni["NetworkInterfaceId"]].add(instance_id)
        return found

    def route_tables(self, table_ids: set[str]) -> dict[str, _RouteTable]:
        tables = {}
        for table in self._each("describe_route_tables", "RouteTables", "route-table-id", table_ids):
            associations = table.get("Associations", ())
            subnets = {a["SubnetId"] for a in associations if a.get("SubnetId")}
            main = any(a.get("Main") for a in associations)
            tables[table["RouteTableId"]] = _RouteTable(frozenset(subnets), table.get("VpcId") if main else None)
        return tables

    def network_acls(self, acl_ids: set[str]) -> dict[str, _NetworkAcl]:
        # association.network-acl-id, not network-acl-id: moto knows only the former, and an ACL without an
        # association (the only one the former leaves out) has no subnet to check anyway.
        acls = {}
        for acl in self._each("describe_network_acls", "NetworkAcls", "association.network-acl-id", acl_ids):
            associations = acl.get("Associations", ())
            subnets = {a["NetworkAclAssociationId"]: a["SubnetId"] for a in associations if a.get("SubnetId")}
            acls[acl["NetworkAclId"]] = _NetworkAcl(subnets)
        return acls

    def instances_by_subnet(self, subnet_ids: set[str]) -> dict[str, set[str]]:
        found = defaultdict(set)
        for instance in self._instances("subnet-id", subnet_ids):
            found[instance.get("SubnetId")].add(instance["InstanceId"])
        return found

    def instances_by_main_table(self, vpc_ids: set[str]) -> dict[str, set[str]]:
        """Per VPC, the opted-in instances in subnets that follow the main route table (no explicit association)."""
        if not vpc_ids:
            return {}
        explicit = {
            a["SubnetId"]
            for table in self._each("describe_route_tables", "RouteTables", "vpc-id", vpc_ids)
            for a in table.get("Associations", ())
            if a.get("SubnetId")
        }
        found = defaultdict(set)
        for instance in self._instances("vpc-id", vpc_ids):
            if instance.get("SubnetId") not in explicit:
                found[instance.get("VpcId")].add(instance["InstanceId"])
        return found

    def instances_by_vpc(self, vpc_ids: set[str]) -> dict[str, set[str]]:
        found = defaultdict(set)
        for instance in self._instances("vpc-id", vpc_ids):
            found[instance.get("VpcId")].add(instance["InstanceId"])
        return found

    def instances_in_region(self) -> set[str]:
        """Every opted-in instance of the region, in the scanned states."""
        pages = paginate(self.ec2, "describe_instances", "Reservations", Filters=self.opted_in)
        return {i["InstanceId"] for reservation in pages for i in reservation.get("Instances", ())}

    def _instances(self, name: str, values: set[str]) -> Iterable[dict]:
        for reservation in self._each("describe_instances", "Reservations", name, values, *self.opted_in):
            yield from reservation.get("Instances", ())
