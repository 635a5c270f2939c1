"""Turn the fixes checks asked for into gateway writes, once per VPC for the managed group."""

from __future__ import annotations

from botocore.exceptions import ClientError

from .aws.gateway import Ec2Gateway, RemediationRefused, error_code, vanished
from .aws.inventory import FILTER_VALUES_PER_CALL
from .checks.base import CheckContext
from .models import ActionRecord, SecurityGroup
from .ranges.managed_group import current_rules, desired_rules
from .settings import ENDPOINT_GROUP_NAME, ENDPOINT_INSTANCE_GROUP_NAME, MANAGED_BY_TAG, MANAGED_GROUP_NAME

__all__ = ["RemediationRefused", "Remediator"]


class Remediator:
    """What check modules' `remediate` functions act through: the gateway plus the per-VPC managed group."""

    def __init__(self, gateway: Ec2Gateway, ctx: CheckContext):
        self.gateway = gateway
        self.ctx = ctx
        self._groups: dict[str, str | Exception] = {}
        self._pending_enis: list[str] = []  # ENIs the plan attaches the managed group to, in write order
        self._current_groups: dict[str, tuple[str, ...] | None] = {}  # re-read just before their writes
        self._endpoint_path: dict[tuple[str, str], str | Exception] = {}  # what the endpoint path made, per VPC
        self._attached: dict[str, tuple[str, ...]] = {}  # ENI -> its groups after an attach of this run
        self._recorded: set[tuple[str, str]] = set()  # (ENI, group) whose attach (or no-op) this run recorded

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

    # ---- the endpoint path (docs/architecture.md §13) -------------------------------------------------------------
    def _once(self, key: tuple[str, str], make) -> str:
        """`make()` once per key in this run; its failure is remembered and raised again for every later instance."""
        known = self._endpoint_path.get(key)
        if isinstance(known, Exception):
            raise known
        if known is not None:
            return known
        try:
            self._endpoint_path[key] = made = make()
        except Exception as exc:
            self._endpoint_path[key] = exc
            raise
        return made

    def _owned_or_new(
        self, vpc_id: str, name: str, found: SecurityGroup | None, description: str, actions: list[ActionRecord]
    ) -> tuple[str, bool]:
        """An eic-guard group of the endpoint path: the one there (tagged ours), else a new one; never someone
        else's group of that name."""
        if found is not None:
            return found.group_id, False
        if (vpc_id, name) in self.ctx.snapshot.unowned_group_names:
            raise RemediationRefused(
                f"a group named {name} exists in {vpc_id} without the ManagedBy=eic-guard tag; eic-guard will not use "
                "or change it"
            )
        try:
            group_id, record = self.gateway.create_group(vpc_id, name, description)
        except ClientError as exc:
            if error_code(exc) != "InvalidGroup.Duplicate":
                raise
            # A racing run created it first: use theirs when it is tagged as ours (their run adds its rules too).
            raced = self.gateway.find_group_named(vpc_id, name)
            if raced is None or raced.tag(MANAGED_BY_TAG[0]) != MANAGED_BY_TAG[1]:
                raise RemediationRefused(
                    f"a group named {name} appeared in {vpc_id} without the ManagedBy=eic-guard tag"
                ) from None
            return raced.group_id, False
        actions.append(record)
        return group_id, True

    def endpoint_group(self, vpc_id: str, actions: list[ActionRecord]) -> str:
        """eic-guard-eice, the group of the endpoints eic-guard creates: no ingress, egress TCP 22 to
        eic-guard-eice-ssh only (its default allow-all egress removed)."""

        def make() -> str:
            found = self.ctx.snapshot.endpoint_groups.get(vpc_id)
            group_id, new = self._owned_or_new(
                vpc_id, ENDPOINT_GROUP_NAME, found, "eic-guard: EC2 Instance Connect Endpoint, TCP 22 out only", actions
            )
            if new:
                actions.append(self.gateway.revoke_default_egress(group_id))
            return group_id

        return self._once(("endpoint-group", vpc_id), make)

    def endpoint_instance_group(self, vpc_id: str, actions: list[ActionRecord]) -> str:
        """eic-guard-eice-ssh, attached to instances: TCP 22 in from the VPC's endpoint's group by reference (the
        group of the endpoint eic-guard creates when there is none yet), nothing else."""

        def make() -> str:
            snapshot = self.ctx.snapshot
            found = snapshot.endpoint_instance_groups.get(vpc_id)
            group_id, _ = self._owned_or_new(
                vpc_id,
                ENDPOINT_INSTANCE_GROUP_NAME,
                found,
                "eic-guard: SSH from the VPC's EC2 Instance Connect Endpoint only",
                actions,
            )
            endpoint = snapshot.endpoint_for(vpc_id)
            if endpoint is not None and endpoint.group_ids:
                sources = endpoint.group_ids
            else:  # no endpoint yet (or its creation failed before): the one eic-guard creates carries eic-guard-eice
                sources = (self.endpoint_group(vpc_id, actions),)
            # The rule as authorize_ssh_from_group writes it (TCP 22, UserIdGroupPairs GroupId=<source>), read back.
            referenced = {
                ref for p in (found.ingress if found else ()) if p.allows_tcp_port(22) for ref in p.group_refs
            }
            if referenced & set(sources):
                return group_id
            own = snapshot.endpoint_groups.get(vpc_id)
            source = own.group_id if own is not None and own.group_id in sources else sorted(sources)[0]
            actions.append(self.gateway.authorize_ssh_from_group(group_id, source))
            return group_id

        return self._once(("endpoint-instance-group", vpc_id), make)

    def endpoint_egress(self, vpc_id: str, actions: list[ActionRecord]) -> str:
        """eic-guard-eice allows TCP 22 out to eic-guard-eice-ssh (added once; an existing rule is left as it is)."""

        def make() -> str:
            group_id = self.endpoint_group(vpc_id, actions)
            target = self.endpoint_instance_group(vpc_id, actions)
            found = self.ctx.snapshot.endpoint_groups.get(vpc_id)
            if found is not None and any(p.allows_tcp_port(22) and target in p.group_refs for p in found.egress):
                return group_id
            actions.append(self.gateway.authorize_ssh_egress_to_group(group_id, target))
            return group_id

        return self._once(("endpoint-egress", vpc_id), make)

    def created_endpoint(self, vpc_id: str, subnet_id: str, client_token: str, actions: list[ActionRecord]) -> str:
        """The VPC's new endpoint (CreateEndpoints=true), with its groups and their rules made first."""

        def make() -> str:
            group_id = self.endpoint_group(vpc_id, actions)
            self.endpoint_instance_group(vpc_id, actions)
            self.endpoint_egress(vpc_id, actions)
            endpoint_id, record = self.gateway.create_instance_connect_endpoint(subnet_id, group_id, client_token)
            actions.append(record)
            return endpoint_id

        return self._once(("endpoint", vpc_id), make)

    def attach(self, eni_id: str, gathered: tuple[str, ...], group_id: str, actions: list[ActionRecord]) -> None:
        """Add `group_id` to the ENI, keeping the groups it has now (a no-op record when it is there). Recorded once
        per (ENI, group) in a run: endpoint-ssh-ingress and endpoint-ssh-egress both attach eic-guard-eice-ssh to the
        same ENI, and the second has nothing to add to the first's record."""
        if (eni_id, group_id) in self._recorded:
            return
        groups = self._attached.get(eni_id) or self.current_groups(eni_id, gathered)
        if group_id in groups:
            actions.append(self.note("attach-security-group", eni_id, f"{group_id} already attached"))
        else:
            actions.append(self.gateway.set_interface_groups(eni_id, groups, group_id))
            self._attached[eni_id] = (*groups, group_id)  # what the ENI carries now (or will, in report mode)
        self._recorded.add((eni_id, group_id))

    def note(self, action: str, resource: str, detail: str) -> ActionRecord:
        """A record for a fix that needed no write (already in the goal state)."""
        return ActionRecord(action, resource, "planned" if self.dry_run else "done", detail)
