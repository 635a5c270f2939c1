"""Turn the fixes checks asked for into gateway writes, once per VPC for the managed group."""

from __future__ import annotations

from botocore.exceptions import ClientError

from .checks.base import CheckContext
from .gateway import Ec2Gateway, error_code
from .managed_group import current_rules, desired_rules
from .models import ActionRecord
from .settings import MANAGED_GROUP_NAME


class RemediationRefused(Exception):
    """A fix eic-guard will not make because it would touch something it does not own."""


class Remediator:
    """What check modules' `remediate` functions act through: the gateway plus the per-VPC managed group."""

    def __init__(self, gateway: Ec2Gateway, ctx: CheckContext):
        self.gateway = gateway
        self.ctx = ctx
        self._groups: dict[str, str | Exception] = {}

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
            try:
                group_id, record = self.gateway.create_managed_group(vpc_id)
            except ClientError as exc:
                if error_code(exc) == "InvalidGroup.Duplicate":  # created by someone else since the gather
                    raise RemediationRefused(self._unowned(vpc_id)) from None
                raise
            actions.append(record)
        else:
            group_id = existing.group_id
        wanted = desired_rules(
            self.ctx.eic,
            self.ctx.settings.ingress_source,
            snapshot.eic_prefix_list_id,
            snapshot.eic_ipv6_prefix_list_id,
        )
        missing = wanted - current_rules(existing)
        if missing:
            actions.append(self.gateway.authorize(group_id, missing))
        return group_id

    @staticmethod
    def _unowned(vpc_id: str) -> str:
        return (
            f"a group named {MANAGED_GROUP_NAME} exists in {vpc_id} without the ManagedBy=eic-guard tag; "
            "eic-guard will not use or change it"
        )

    def note(self, action: str, resource: str, detail: str) -> ActionRecord:
        """A record for a fix that needed no write (already in the goal state)."""
        return ActionRecord(action, resource, "planned" if self.dry_run else "done", detail)
