"""Uninstall: take back what eic-guard put in the accounts (docs/architecture.md §4, §12).

For every (account, region): the EC2 Instance Connect Endpoints eic-guard created (tagged `ManagedBy=eic-guard`,
docs/architecture.md §13) are deleted first, and their deletion is awaited (a bounded wait: it takes AWS minutes)
because the endpoint's own network interface holds the group `eic-guard-eice` until it is gone; eic-guard's security
groups (named `eic-guard-ssh`, `eic-guard-eice-ssh` or `eic-guard-eice`, AND tagged `ManagedBy=eic-guard`) lose
their rules that reference another group (EC2 refuses to delete a group another group's rule names, and the two
endpoint-path groups name each other), are detached from every instance's network interface, keeping the
interface's other groups, then deleted; eic-guard's Elastic IPs (tagged `ManagedBy=eic-guard`) are disassociated and
released. Nothing else is read for writing: an untagged group or endpoint that happens to carry the name, a user's
group or endpoint, or an untagged address is never touched. (Deleting an endpoint: EC2 API reference,
https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DeleteInstanceConnectEndpoint.html.)

Every outcome is one `CleanupAction` (status done, planned, failed or kept); an error on one resource is recorded and
the run goes on. A second cleanup finds nothing and makes no write.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError

from .aws.credentials import AccountClients, AccountUnreachable
from .fanout.targets import ORGANIZATION, Target, plan_accounts, plan_targets
from .settings import ENDPOINT_GROUP_NAME, ENDPOINT_INSTANCE_GROUP_NAME, MANAGED_BY_TAG, MANAGED_GROUP_NAME

DONE, PLANNED, FAILED, KEPT = "done", "planned", "failed", "kept"
GROUP_NAMES = (MANAGED_GROUP_NAME, ENDPOINT_INSTANCE_GROUP_NAME, ENDPOINT_GROUP_NAME)
# An endpoint's deletion takes AWS minutes; until it is delete-complete its interface holds eic-guard-eice.
ENDPOINT_DELETE_WAIT_SECONDS = 600
ENDPOINT_POLL_SECONDS = 15
GONE = ("delete-complete",)
ENDPOINT_INTERFACE = "ec2_instance_connect_endpoint"  # NetworkInterface.InterfaceType of an endpoint's interface
DELETING = ("delete-in-progress",)
STATUSES = (DONE, PLANNED, FAILED, KEPT)
COLUMNS = ("account_id", "region", "action", "resource", "status", "detail")


@dataclass(frozen=True)
class CleanupAction:
    """One thing cleanup did (or, with --dry-run, would do), or could not do and why."""

    account_id: str
    region: str
    action: str
    resource: str
    status: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _error(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'Error')}: {error.get('Message', '')}".strip()
    return " ".join(str(exc).split())


def _managed(tags: Iterable[dict] | None) -> bool:
    key, value = MANAGED_BY_TAG
    return any(t.get("Key") == key and t.get("Value") == value for t in tags or ())


class _TargetCleanup:
    """The cleanup of one region of one account."""

    def __init__(self, ec2: Any, target: Target, dry_run: bool):
        self.ec2 = ec2
        self.target = target
        self.dry_run = dry_run
        self.actions: list[CleanupAction] = []

    def record(self, action: str, resource: str, status: str, detail: str) -> str:
        self.actions.append(CleanupAction(self.target.account_id, self.target.region, action, resource, status, detail))
        return status

    def run(self) -> list[CleanupAction]:
        self.deleting: set[str] = set()  # the endpoints whose deletion is under way (ids)
        try:
            endpoints = self.managed_endpoints()
        except (ClientError, BotoCoreError) as exc:
            self.record("list-endpoints", "ManagedBy=eic-guard", FAILED, _error(exc))
            endpoints = []
        for endpoint in endpoints:
            self.delete_endpoint(endpoint)
        self.await_endpoints()
        try:
            groups = self.managed_groups()
        except (ClientError, BotoCoreError) as exc:
            self.record("list-groups", ", ".join(GROUP_NAMES), FAILED, _error(exc))
            groups = []
        for group in groups:
            self.unreference(group)
        for group in groups:
            self.clean_group(group)
        try:
            addresses = self.managed_addresses()
        except (ClientError, BotoCoreError) as exc:
            self.record("list-elastic-ips", "ManagedBy=eic-guard", FAILED, _error(exc))
            addresses = []
        for address in addresses:
            self.release(address)
        return self.actions

    # ---- EC2 Instance Connect Endpoints -------------------------------------------------------------------------
    def managed_endpoints(self) -> list[dict]:
        key, value = MANAGED_BY_TAG
        filters = [{"Name": f"tag:{key}", "Values": [value]}]
        found = []
        for page in self.ec2.get_paginator("describe_instance_connect_endpoints").paginate(Filters=filters):
            for endpoint in page.get("InstanceConnectEndpoints", ()):
                # the filter again, here: never an endpoint eic-guard did not create
                if _managed(endpoint.get("Tags")) and endpoint.get("State") not in GONE:
                    found.append(endpoint)
        return sorted(found, key=lambda e: e["InstanceConnectEndpointId"])

    def delete_endpoint(self, endpoint: dict) -> None:
        endpoint_id = endpoint["InstanceConnectEndpointId"]
        detail = f"delete the EC2 Instance Connect Endpoint of {endpoint.get('VpcId', '?')} ({endpoint.get('State')})"
        if endpoint.get("State") in DELETING:
            self.deleting.add(endpoint_id)
            self.record("delete-endpoint", endpoint_id, DONE, f"{detail}: already being deleted")
            return
        if self.dry_run:
            self.record("delete-endpoint", endpoint_id, PLANNED, detail)
            return
        try:
            self.ec2.delete_instance_connect_endpoint(InstanceConnectEndpointId=endpoint_id)
        except (ClientError, BotoCoreError) as exc:
            self.record("delete-endpoint", endpoint_id, FAILED, f"{detail}: {_error(exc)}")
            return
        self.deleting.add(endpoint_id)
        self.record("delete-endpoint", endpoint_id, DONE, detail)

    def await_endpoints(self) -> None:
        """Until the endpoints being deleted are delete-complete (their interfaces gone), at most the wait's bound;
        one still deleting then keeps its group (`clean_group` says so), and the next cleanup finishes."""
        deadline = time.monotonic() + ENDPOINT_DELETE_WAIT_SECONDS
        while self.deleting:
            try:
                pages = self.ec2.get_paginator("describe_instance_connect_endpoints").paginate(
                    InstanceConnectEndpointIds=sorted(self.deleting)
                )
                states = {
                    e["InstanceConnectEndpointId"]: e.get("State")
                    for p in pages
                    for e in p.get("InstanceConnectEndpoints", ())
                }
            except (ClientError, BotoCoreError):
                return
            self.deleting = {e for e in self.deleting if states.get(e, GONE[0]) not in GONE}
            if not self.deleting or time.monotonic() >= deadline:
                return
            time.sleep(ENDPOINT_POLL_SECONDS)

    # ---- security groups ----------------------------------------------------------------------------------------
    def managed_groups(self) -> list[dict]:
        key, value = MANAGED_BY_TAG
        filters = [
            {"Name": "group-name", "Values": list(GROUP_NAMES)},
            {"Name": f"tag:{key}", "Values": [value]},
        ]
        found = []
        for page in self.ec2.get_paginator("describe_security_groups").paginate(Filters=filters):
            for group in page.get("SecurityGroups", ()):
                # the filters again, here: never a look-alike, whatever an endpoint does with a filter
                if group.get("GroupName") in GROUP_NAMES and _managed(group.get("Tags")):
                    found.append(group)
        return sorted(found, key=lambda g: (GROUP_NAMES.index(g["GroupName"]), g["GroupId"]))

    def unreference(self, group: dict) -> None:
        """Revoke the group's own rules that name another group: the endpoint path's two groups name each other
        (eic-guard-eice-ssh lets the endpoint's group in, eic-guard-eice lets TCP 22 out to it), and EC2 refuses to
        delete a group another group's rule references. Only eic-guard's own groups are written."""
        for direction, key in (("ingress", "IpPermissions"), ("egress", "IpPermissionsEgress")):
            referencing = [
                {k: v for k, v in permission.items() if k in ("IpProtocol", "FromPort", "ToPort", "UserIdGroupPairs")}
                for permission in group.get(key, ())
                if permission.get("UserIdGroupPairs")
            ]
            if not referencing:
                continue
            names = ", ".join(p["GroupId"] for r in referencing for p in r["UserIdGroupPairs"] if "GroupId" in p)
            detail = f"revoke {group['GroupName']}'s {direction} rules naming {names}"
            if self.dry_run:
                self.record(f"revoke-{direction}", group["GroupId"], PLANNED, detail)
                continue
            revoke = getattr(self.ec2, f"revoke_security_group_{direction}")
            try:
                revoke(GroupId=group["GroupId"], IpPermissions=referencing)
            except (ClientError, BotoCoreError) as exc:
                self.record(f"revoke-{direction}", group["GroupId"], FAILED, f"{detail}: {_error(exc)}")
                continue
            self.record(f"revoke-{direction}", group["GroupId"], DONE, detail)

    def interfaces_with(self, group_id: str) -> list[dict]:
        filters = [{"Name": "group-id", "Values": [group_id]}]
        enis = []
        for page in self.ec2.get_paginator("describe_network_interfaces").paginate(Filters=filters):
            for eni in page.get("NetworkInterfaces", ()):
                if any(g.get("GroupId") == group_id for g in eni.get("Groups", ())):
                    enis.append(eni)
        return sorted(enis, key=lambda e: e["NetworkInterfaceId"])

    def clean_group(self, group: dict) -> None:
        group_id = group["GroupId"]
        where = f"{group['GroupName']} in {group.get('VpcId', '?')}"
        try:
            interfaces = self.interfaces_with(group_id)
        except (ClientError, BotoCoreError) as exc:
            self.record("delete-group", group_id, FAILED, f"{where}: cannot list its network interfaces: {_error(exc)}")
            return
        # An endpoint's interface belongs to the endpoint (requester-managed): it goes with the endpoint, never edited.
        held = [e["NetworkInterfaceId"] for e in interfaces if e.get("InterfaceType") == ENDPOINT_INTERFACE]
        if held and not self.dry_run:
            self.record(
                "delete-group",
                group_id,
                KEPT,
                f"{where}: still held by an EC2 Instance Connect Endpoint's interface ({', '.join(held)}) being "
                "deleted: run cleanup again in a few minutes",
            )
            return
        enis = [e["NetworkInterfaceId"] for e in interfaces if e.get("InterfaceType") != ENDPOINT_INTERFACE]
        outcomes = [self.detach(group_id, eni) for eni in enis]
        still = [eni for eni, status in zip(enis, outcomes, strict=True) if status not in (DONE, PLANNED)]
        if still:
            self.record("delete-group", group_id, KEPT, f"{where}: still attached to {', '.join(still)}")
            return
        if self.dry_run:
            after = " once its endpoint is deleted" if held else ""
            self.record("delete-group", group_id, PLANNED, f"delete {where}{after}")
            return
        try:
            self.ec2.delete_security_group(GroupId=group_id)
        except (ClientError, BotoCoreError) as exc:  # DependencyViolation: e.g. another group's rule references it
            self.record("delete-group", group_id, FAILED, f"{where}: {_error(exc)}")
            return
        self.record("delete-group", group_id, DONE, f"delete {where}")

    def detach(self, group_id: str, eni_id: str) -> str:
        try:
            # EC2 replaces the interface's whole set: its groups are read right before the write
            found = self.ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"]
            current = [g["GroupId"] for g in (found[0].get("Groups", ()) if found else ())]
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code", "").endswith(".NotFound"):
                return self.record("detach-group", eni_id, DONE, f"{group_id}: the interface is gone")
            return self.record("detach-group", eni_id, FAILED, f"{group_id}: cannot read its groups: {_error(exc)}")
        if group_id not in current:
            return self.record("detach-group", eni_id, DONE, f"{group_id} is no longer attached")
        others = [g for g in current if g != group_id]
        if not others:
            return self.record(
                "detach-group",
                eni_id,
                KEPT,
                f"{group_id} is its only security group: attach the group it should have, then run cleanup again",
            )
        detail = f"remove {group_id}, keep {', '.join(others)}"
        if self.dry_run:
            return self.record("detach-group", eni_id, PLANNED, detail)
        try:
            self.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni_id, Groups=others)
        except (ClientError, BotoCoreError) as exc:
            return self.record("detach-group", eni_id, FAILED, f"{detail}: {_error(exc)}")
        return self.record("detach-group", eni_id, DONE, detail)

    # ---- Elastic IPs --------------------------------------------------------------------------------------------
    def managed_addresses(self) -> list[dict]:
        key, value = MANAGED_BY_TAG
        found = self.ec2.describe_addresses(Filters=[{"Name": f"tag:{key}", "Values": [value]}]).get("Addresses", ())
        return sorted((a for a in found if _managed(a.get("Tags"))), key=lambda a: a.get("AllocationId", ""))

    def release(self, address: dict) -> None:
        allocation = address.get("AllocationId", address.get("PublicIp", "?"))
        association = address.get("AssociationId")
        attached = address.get("NetworkInterfaceId") or address.get("InstanceId")
        detail = f"release {address.get('PublicIp', '?')}"
        if association:
            detail = f"disassociate {address.get('PublicIp', '?')} from {attached or association}, release it"
        if self.dry_run:
            self.record("release-elastic-ip", allocation, PLANNED, detail)
            return
        try:
            if association:
                self.ec2.disassociate_address(AssociationId=association)
            self.ec2.release_address(AllocationId=allocation)
        except (ClientError, BotoCoreError) as exc:
            self.record("release-elastic-ip", allocation, FAILED, f"{detail}: {_error(exc)}")
            return
        self.record("release-elastic-ip", allocation, DONE, detail)


def clean_target(ec2: Any, target: Target, dry_run: bool) -> list[CleanupAction]:
    """Clean one (account, region) with its EC2 client."""
    return _TargetCleanup(ec2, target, dry_run).run()


def run_cleanup(
    clients: Any,
    settings: Any,
    *,
    dry_run: bool = False,
    max_workers: int = 8,
    on_target: Callable[[Target], None] | None = None,
) -> list[CleanupAction]:
    """Every (account, region) of the settings (EIC_GUARD_ACCOUNTS' meaning, the member role to enter the others),
    in target order. An account that cannot be entered is a failed action; the others go on."""
    own = clients.account_id()
    organizations = None
    if settings.accounts == ORGANIZATION:
        organizations = clients.client("organizations", settings.regions[0])
    plan = plan_accounts(settings.accounts, own, organizations)
    accounts = AccountClients(clients, f"cleanup-{uuid.uuid4()}", settings.member_role_name)
    targets = plan_targets(plan.accounts, tuple(settings.regions))
    done = accounts.countdown(t.account_id for t in targets)  # an organization's clients: those in progress only

    def one(target: Target) -> list[CleanupAction]:
        try:
            ec2 = accounts.for_account(target.account_id).ec2(target.region)
            actions = clean_target(ec2, target, dry_run)
        except AccountUnreachable as exc:
            actions = [
                CleanupAction(target.account_id, target.region, "enter-account", target.account_id, FAILED, _error(exc))
            ]
        except (ClientError, BotoCoreError) as exc:
            actions = [CleanupAction(target.account_id, target.region, "clean", target.key, FAILED, _error(exc))]
        finally:
            done(target.account_id)
        if on_target is not None:
            on_target(target)
        return actions

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(targets)))) as pool:
        return [action for actions in pool.map(one, targets) for action in actions]


def exit_status(actions: Iterable[CleanupAction]) -> int:
    """0 when everything was done (or planned), 1 when something failed or was kept."""
    return 1 if any(a.status in (FAILED, KEPT) for a in actions) else 0


def render_table(actions: list[CleanupAction], stream: TextIO, dry_run: bool = False) -> None:
    """A plain text table and a one-line summary."""
    if not actions:
        stream.write(
            "nothing to clean up: no ManagedBy=eic-guard EC2 Instance Connect Endpoint, security group or Elastic IP "
            "found\n"
        )
        return
    rows = [COLUMNS] + [tuple(getattr(a, c) for c in COLUMNS) for a in actions]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    for row in rows:
        stream.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)))
        stream.write(f"  {row[-1]}\n")
    counts = {status: sum(a.status == status for a in actions) for status in STATUSES}
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    stream.write(f"{'dry run: nothing changed; ' if dry_run else ''}{len(actions)} actions: {summary}\n")
