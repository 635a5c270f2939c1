"""Uninstall: take back what eic-guard put in the accounts (docs/architecture.md §4, §12).

For every (account, region): eic-guard's security groups (named `eic-guard-ssh` AND tagged `ManagedBy=eic-guard`) are
detached from every network interface, keeping the interface's other groups, then deleted; eic-guard's Elastic IPs
(tagged `ManagedBy=eic-guard`) are disassociated and released. Nothing else is read for writing: an untagged group
that happens to carry the name, a user's group or an untagged address is never touched.

Every outcome is one `CleanupAction` (status done, planned, failed or kept); an error on one resource is recorded and
the run goes on. A second cleanup finds nothing and makes no write.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError

from .aws.credentials import AccountClients, AccountUnreachable
from .fanout.targets import ORGANIZATION, Target, plan_accounts, plan_targets
from .settings import MANAGED_BY_TAG, MANAGED_GROUP_NAME

DONE, PLANNED, FAILED, KEPT = "done", "planned", "failed", "kept"
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
        try:
            groups = self.managed_groups()
        except (ClientError, BotoCoreError) as exc:
            self.record("list-groups", MANAGED_GROUP_NAME, FAILED, _error(exc))
            groups = []
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

    # ---- security groups ----------------------------------------------------------------------------------------
    def managed_groups(self) -> list[dict]:
        key, value = MANAGED_BY_TAG
        filters = [
            {"Name": "group-name", "Values": [MANAGED_GROUP_NAME]},
            {"Name": f"tag:{key}", "Values": [value]},
        ]
        found = []
        for page in self.ec2.get_paginator("describe_security_groups").paginate(Filters=filters):
            for group in page.get("SecurityGroups", ()):
                # the filters again, here: never a look-alike, whatever an endpoint does with a filter
                if group.get("GroupName") == MANAGED_GROUP_NAME and _managed(group.get("Tags")):
                    found.append(group)
        return sorted(found, key=lambda g: g["GroupId"])

    def interfaces_with(self, group_id: str) -> list[str]:
        filters = [{"Name": "group-id", "Values": [group_id]}]
        enis = []
        for page in self.ec2.get_paginator("describe_network_interfaces").paginate(Filters=filters):
            for eni in page.get("NetworkInterfaces", ()):
                if any(g.get("GroupId") == group_id for g in eni.get("Groups", ())):
                    enis.append(eni["NetworkInterfaceId"])
        return sorted(enis)

    def clean_group(self, group: dict) -> None:
        group_id = group["GroupId"]
        where = f"{MANAGED_GROUP_NAME} in {group.get('VpcId', '?')}"
        try:
            enis = self.interfaces_with(group_id)
        except (ClientError, BotoCoreError) as exc:
            self.record("delete-group", group_id, FAILED, f"{where}: cannot list its network interfaces: {_error(exc)}")
            return
        outcomes = [self.detach(group_id, eni) for eni in enis]
        still = [eni for eni, status in zip(enis, outcomes, strict=True) if status not in (DONE, PLANNED)]
        if still:
            self.record("delete-group", group_id, KEPT, f"{where}: still attached to {', '.join(still)}")
            return
        if self.dry_run:
            self.record("delete-group", group_id, PLANNED, f"delete {where}")
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
        if on_target is not None:
            on_target(target)
        return actions

    targets = plan_targets(plan.accounts, tuple(settings.regions))
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(targets)))) as pool:
        return [action for actions in pool.map(one, targets) for action in actions]


def exit_status(actions: Iterable[CleanupAction]) -> int:
    """0 when everything was done (or planned), 1 when something failed or was kept."""
    return 1 if any(a.status in (FAILED, KEPT) for a in actions) else 0


def render_table(actions: list[CleanupAction], stream: TextIO, dry_run: bool = False) -> None:
    """A plain text table and a one-line summary."""
    if not actions:
        stream.write("nothing to clean up: no ManagedBy=eic-guard security group or Elastic IP found\n")
        return
    rows = [COLUMNS] + [tuple(getattr(a, c) for c in COLUMNS) for a in actions]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    for row in rows:
        stream.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)))
        stream.write(f"  {row[-1]}\n")
    counts = {status: sum(a.status == status for a in actions) for status in STATUSES}
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    stream.write(f"{'dry run: nothing changed; ' if dry_run else ''}{len(actions)} actions: {summary}\n")
