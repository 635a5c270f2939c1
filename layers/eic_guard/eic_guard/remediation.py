"""Turn the fixes checks asked for into gateway writes, once per VPC for the managed group."""

from __future__ import annotations

from botocore.exceptions import ClientError

from .aws.gateway import Ec2Gateway, RemediationRefused, error_code, vanished
from .aws.inventory import FILTER_VALUES_PER_CALL
from .checks.base import CheckContext
from .models import ActionRecord, SecurityGroup
from .ranges.managed_group import current_rules, desired_rules
from .settings import MANAGED_BY_TAG, MANAGED_GROUP_NAME

__all__ = ["RemediationRefused", "Remediator"]


class Remediator:
    """What check modules' `remediate` functions act through: the gateway plus the per-VPC managed group."""

    def __init__(self, gateway: Ec2Gateway, ctx: CheckContext):
        self.gateway = gateway
        self.ctx = ctx
        self._groups: dict[str, str | Exception] = {}
        self._pending_enis: list[str] = []  # ENIs the plan attaches the managed group to, in write order
        self._current_groups: dict[str, tuple[str, ...] | None] = {}  # re-read just before their writes

    @property
    def dry_run(self) -> bool:
        return self.gateway.dry_run

    def managed_group(self, vpc_id: str, actions: list[ActionRecord]) -> str:
        """The id of the VPC's eic-guard-ssh group, created and topped up to the current prefixes on first use.

        The actions taken are appended to `actions` of the first instance that needed the group.
        """
        known = self._groups.get(vpc_id)
        if isinstance(known, Exception):
            raise known
        if known is not None:
            return known
        try:
            group_id = self._ensure(vpc_id, actions)
        except Exception as exc:
            self._groups[vpc_id] = exc
            raise
        self._groups[vpc_id] = group_id
        return group_id

    def _ensure(self, vpc_id: str, actions: list[ActionRecord]) -> str:
        snapshot = self.ctx.snapshot
        existing = snapshot.managed_groups.get(vpc_id)
        if existing is None:
            if vpc_id in snapshot.vpcs_with_unowned_managed_name:
                raise RemediationRefused(self._unowned(vpc_id))
            existing = self._create(vpc_id, actions)
        wanted = desired_rules(
            self.ctx.eic,
            self.ctx.settings.ingress_source,
            snapshot.eic_prefix_list_id,
            snapshot.eic_ipv6_prefix_list_id,
        )
        missing = wanted - current_rules(existing)
        if missing:
            actions.append(self.gateway.authorize(existing.group_id, missing)[0])
        return existing.group_id

    def _create(self, vpc_id: str, actions: list[ActionRecord]) -> SecurityGroup:
        """Create the VPC's group; if a racing run created it first, use theirs when it is tagged as ours."""
        try:
            group_id, record = self.gateway.create_managed_group(vpc_id)
        except ClientError as exc:
            if error_code(exc) != "InvalidGroup.Duplicate":
                raise
            found = self.gateway.find_group_named_managed(vpc_id)
            if found is None or found.tag(MANAGED_BY_TAG[0]) != MANAGED_BY_TAG[1]:
                raise RemediationRefused(self._unowned(vpc_id)) from None
            return found
        actions.append(record)
        return SecurityGroup(group_id, MANAGED_GROUP_NAME, vpc_id, (MANAGED_BY_TAG,), ())

    def expect_attachments(self, eni_ids: list[str]) -> None:
        """The ENIs the plan will attach the managed group to, in the order the writes will come."""
        self._pending_enis = list(dict.fromkeys(eni_ids))

    def current_groups(self, eni_id: str, gathered: tuple[str, ...]) -> tuple[str, ...]:
        """The ENI's groups as they are now: EC2 replaces an ENI's whole group set, so a set read at the start of
        the run would undo a group added or detached meanwhile. Read in one call per chunk of pending ENIs, right
        before that chunk's writes. Report mode writes nothing, so it keeps the gathered set."""
        if self.dry_run:
            return gathered
        if eni_id not in self._current_groups:
            self._read_chunk_from(eni_id)
        groups = self._current_groups.get(eni_id)
        if groups is None:
            raise vanished(eni_id, "DescribeNetworkInterfaces")
        return groups

    def _read_chunk_from(self, eni_id: str) -> None:
        pending = [e for e in self._pending_enis if e not in self._current_groups]
        start = pending.index(eni_id) if eni_id in pending else 0
        chunk = ([eni_id] + [e for e in pending[start:] if e != eni_id])[:FILTER_VALUES_PER_CALL]
        found = self.gateway.interface_groups(chunk)
        self._current_groups.update({e: found.get(e) for e in chunk})

    @staticmethod
    def _unowned(vpc_id: str) -> str:
        return (
            f"a group named {MANAGED_GROUP_NAME} exists in {vpc_id} without the ManagedBy=eic-guard tag; "
            "eic-guard will not use or change it"
        )

    def note(self, action: str, resource: str, detail: str) -> ActionRecord:
        """A record for a fix that needed no write (already in the goal state)."""
        return ActionRecord(action, resource, "planned" if self.dry_run else "done", detail)
