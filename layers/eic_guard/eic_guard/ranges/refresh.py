"""Refresh: bring eic-guard's managed security groups in line with a verified ip-ranges.json.

Rules (docs/architecture.md §3): new prefixes are authorized at once; a prefix that disappeared is revoked only after
it has been absent for the grace period *and* its region still has a current prefix; a region that vanished keeps its
rules and raises an alert. Add before revoke. Only rules eic-guard created (its description) are ever revoked.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from ..aws.gateway import Ec2Gateway, RemediationRefused, error_code
from ..aws.inventory import paginate, parse_security_group, prefix_list_entries
from ..budget import Deadline
from ..errors import IpRangesError
from ..models import ActionRecord, SecurityGroup
from ..observability import logger
from ..settings import MANAGED_BY_TAG, MANAGED_GROUP_NAME, Settings
from . import ip_ranges
from .ip_ranges import IpRanges
from .managed_group import (
    EIC_IPV6_PREFIX_LIST,
    EIC_PREFIX_LIST,
    RuleSet,
    current_rules,
    owned_rules,
    prefix_list_fallback_note,
)
from .state import RangesState, StateStore

# applied: written and the state advanced; planned: report mode, nothing written; incomplete: some region or group
# failed, the state was not advanced (the next delivery or nightly run retries); stale/duplicate: nothing to do.
RefreshStatus = Literal["applied", "planned", "incomplete", "stale", "duplicate"]


class RefreshIncomplete(IpRangesError):
    """Some region could not be refreshed; the state stays where it was."""


@dataclass
class RegionRefresh:
    """What one region's refresh found and did."""

    region: str
    groups: int = 0
    added: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    in_grace: list[str] = field(default_factory=list)
    prefix_list_differences: list[str] = field(default_factory=list)
    actions: list[ActionRecord] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    failed_groups: list[str] = field(default_factory=list)  # "sg-…: Code" for each group a write failed on
    unknown_owned: list[str] = field(default_factory=list)  # our rules' prefixes the file no longer lists
    notes: list[str] = field(default_factory=list)  # for the target's report entry, e.g. the prefix-list fallback
    error: str | None = None


@dataclass
class RefreshResult:
    status: RefreshStatus
    sync_token: str
    create_date: str
    regions: list[RegionRefresh] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [f"{r.region}: {r.error}" for r in self.regions if r.error]

    @property
    def alerts(self) -> list[str]:
        return [a for r in self.regions for a in r.alerts] + self.errors

    def summary(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "sync_token": self.sync_token,
            "create_date": self.create_date,
            "prefixes_added": sum(len(r.added) for r in self.regions),
            "prefixes_revoked": sum(len(r.revoked) for r in self.regions),
            "prefixes_in_grace": sum(len(r.in_grace) for r in self.regions),
            "groups": sum(r.groups for r in self.regions),
            "errors": self.errors,
            "alerts": self.alerts,
        }


def require_eic(ranges: IpRanges) -> None:
    """Refuse a file with no EC2_INSTANCE_CONNECT prefix at all: applying it could only take access away."""
    if not any(p.ipv4 or p.ipv6 for p in ranges.eic.values()):
        raise IpRangesError("empty-eic-set", f"ip-ranges.json {ranges.sync_token} has no EC2_INSTANCE_CONNECT prefix")


def managed_groups(ec2: Any) -> list[SecurityGroup]:
    """Every eic-guard-ssh group tagged ManagedBy=eic-guard in the region (one filtered, paginated describe)."""
    key, value = MANAGED_BY_TAG
    filters = [{"Name": f"tag:{key}", "Values": [value]}, {"Name": "group-name", "Values": [MANAGED_GROUP_NAME]}]
    return [
        parse_security_group(raw)
        for raw in paginate(ec2, "describe_security_groups", "SecurityGroups", Filters=filters)
    ]


def track_absence(
    region: str, groups: list[SecurityGroup], current: set[str], state: RangesState, now: datetime, grace: timedelta
) -> tuple[set[str], list[str]]:
    """Update when each known prefix was last seen and since when it is absent; return (expired, in grace).

    A prefix is known if a past file listed it or one of our rules allows it (state lost, older install): its
    absence clock starts the first time a file without it is applied, so it must *stay* absent for the grace period.
    """
    seen = state.last_seen.setdefault(region, {})
    absent = state.absent_since.setdefault(region, {})
    seen.update(dict.fromkeys(current, now))
    owned = {cidr for group in groups for cidr in owned_rules(group, region).cidrs}
    for prefix in (set(seen) | owned) - current:
        absent.setdefault(prefix, now)
    for prefix in current:
        absent.pop(prefix, None)
    expired = {p for p, since in absent.items() if now - since >= grace}
    return expired, sorted(set(absent) - expired)


def forget(region: str, prefixes: set[str], state: RangesState) -> None:
    """Drop revoked prefixes from the state."""
    for prefix in prefixes:
        state.last_seen.get(region, {}).pop(prefix, None)
        state.absent_since.get(region, {}).pop(prefix, None)


def refresh_region(
    ec2: Any,
    region: str,
    ranges: IpRanges,
    state: RangesState,
    settings: Settings,
    now: datetime,
    dry_run: bool = False,
) -> RegionRefresh:
    """Authorize new prefixes, then revoke our rules for prefixes absent longer than the grace period."""
    result = RegionRefresh(region)
    groups = managed_groups(ec2)
    wanted = _wanted(ec2, region, ranges, settings, groups, result)
    if wanted is None:
        state.current[region] = []  # the stored copy must match the file it is stored as (no prefix)
        return result
    current = {str(p) for p in ranges.for_region(region).all}
    grace = timedelta(hours=settings.stale_prefix_grace_hours)
    expired, result.in_grace = track_absence(region, groups, current, state, now, grace)
    gateway = Ec2Gateway(ec2, region, dry_run=dry_run)
    complete = _add(gateway, groups, wanted, result)
    if _revoke(gateway, region, [g for g in groups if g.group_id in complete], expired, result):
        forget(region, expired, state)
    _summarize_failures(result, groups)
    state.current[region] = sorted(current)
    return result


def add_to_groups(ec2: Any, region: str, ranges: IpRanges, settings: Settings, dry_run: bool) -> RegionRefresh:
    """The fan-out's apply phase for one target: every managed group gets every current prefix (no revoke).

    Also reports the prefixes our rules allow that the file no longer lists (`unknown_owned`), so that the run's
    state can start their absence clocks even when it did not know them (state lost, older install).
    """
    result = RegionRefresh(region)
    groups = managed_groups(ec2)
    wanted = _wanted(ec2, region, ranges, settings, groups, result)
    if wanted is None:
        return result
    current = {str(p) for p in ranges.for_region(region).all}
    result.unknown_owned = sorted({c for g in groups for c in owned_rules(g, region).cidrs} - current)
    _add(Ec2Gateway(ec2, region, dry_run=dry_run), groups, wanted, result)
    _summarize_failures(result, groups)
    return result


def revoke_from_groups(
    ec2: Any, region: str, ranges: IpRanges, settings: Settings, expired: set[str], dry_run: bool
) -> RegionRefresh:
    """The fan-out's revoke phase, after every target's apply phase: our rules for expired prefixes go, but only
    from groups that hold every current prefix (add before revoke, read again now)."""
    result = RegionRefresh(region)
    groups = managed_groups(ec2)
    wanted = _wanted(ec2, region, ranges, settings, groups, result, compare_lists=False)
    if wanted is None or not expired:
        return result
    ready = [g for g in groups if not wanted - current_rules(g)]
    for group in groups:
        if group not in ready:
            result.actions.append(
                ActionRecord("revoke-ingress", group.group_id, "failed", "kept: the group lacks a current prefix")
            )
            result.failed_groups.append(f"{group.group_id}: MissingCurrentPrefix")
    _revoke(Ec2Gateway(ec2, region, dry_run=dry_run), region, ready, expired, result)
    _summarize_failures(result, groups)
    return result


def _wanted(
    ec2: Any,
    region: str,
    ranges: IpRanges,
    settings: Settings,
    groups: list[SecurityGroup],
    result: RegionRefresh,
    compare_lists: bool = True,
) -> RuleSet | None:
    """The CIDR rules every managed group of the region must hold; None (and an alert) when the file lists no
    prefix for the region: its groups keep their rules and no absence clock starts."""
    result.groups = len(groups)
    current = {str(p) for p in ranges.for_region(region).all}
    if not current:
        result.alerts.append(
            f"{region}: ip-ranges.json {ranges.sync_token} lists no EC2_INSTANCE_CONNECT prefix for "
            f"the region; its {len(groups)} managed group(s) keep their rules"
        )
        return None
    listed: set[int] = set()
    if settings.ingress_source == "prefix-list":
        listed = _compare_prefix_lists(ec2, region, current, result if compare_lists else RegionRefresh(region))
        families = {ipaddress.ip_network(p).version for p in current}
        if compare_lists and groups:
            result.notes.extend(prefix_list_fallback_note(region, family == 6) for family in sorted(families - listed))
    return RuleSet(cidrs=frozenset(p for p in current if ipaddress.ip_network(p).version not in listed))


def _add(gateway: Ec2Gateway, groups: list[SecurityGroup], wanted: RuleSet, result: RegionRefresh) -> set[str]:
    """Add what each group lacks; returns the ids of the groups that now hold every wanted rule.

    Each group stands alone: one group refusing a write does not keep the others from their new prefixes.
    """
    complete = set()
    for group in groups:
        missing = wanted - current_rules(group)
        try:
            if missing:
                record, added = gateway.authorize(group.group_id, missing)
                result.actions.append(record)
                result.added.extend(sorted(added.cidrs))
            complete.add(group.group_id)
        except (ClientError, BotoCoreError, RemediationRefused) as exc:
            _group_failed(result, "authorize-ingress", group.group_id, exc)
    return complete


def _revoke(
    gateway: Ec2Gateway, region: str, groups: list[SecurityGroup], expired: set[str], result: RegionRefresh
) -> bool:
    """Revoke our rules for expired prefixes from `groups` (those holding every current prefix); False on a
    failure."""
    all_revoked = True
    for group in groups:
        stale = RuleSet(cidrs=owned_rules(group, region).cidrs & expired)
        if not stale:
            continue
        try:
            result.actions.append(gateway.revoke(group.group_id, stale))
            result.revoked.extend(sorted(stale.cidrs))
        except (ClientError, BotoCoreError) as exc:
            all_revoked = False
            _group_failed(result, "revoke-ingress", group.group_id, exc)
    return all_revoked and not result.failed_groups


def _summarize_failures(result: RegionRefresh, groups: list[SecurityGroup]) -> None:
    if result.failed_groups:
        result.error = f"{len(result.failed_groups)} of {len(groups)} managed group(s) failed: " + "; ".join(
            result.failed_groups
        )


def _group_failed(result: RegionRefresh, action: str, group_id: str, exc: Exception) -> None:
    code = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
    logger.error("managed group refresh failed", extra={"group_id": group_id, "action": action, "error": str(exc)})
    result.actions.append(ActionRecord(action, group_id, "failed", f"{code}: {exc}"))
    result.failed_groups.append(f"{group_id}: {code}")


def _compare_prefix_lists(ec2: Any, region: str, current: set[str], result: RegionRefresh) -> set[int]:
    """Prefix-list mode: nothing to write for a family AWS publishes a managed list for (IPv4 and IPv6 are separate
    lists); report how each list differs from the file. Returns the address families that have a list."""
    names = [EIC_PREFIX_LIST.format(region=region), EIC_IPV6_PREFIX_LIST.format(region=region)]
    lists = ec2.describe_managed_prefix_lists(Filters=[{"Name": "prefix-list-name", "Values": names}])
    families = set()
    for found in lists.get("PrefixLists", ()):
        family = 6 if found.get("AddressFamily") == "IPv6" else 4
        families.add(family)
        list_id = found["PrefixListId"]
        expected = {p for p in current if ipaddress.ip_network(p).version == family}
        entries = set(prefix_list_entries(ec2, list_id))
        differences = [f"only in ip-ranges.json: {p}" for p in sorted(expected - entries)] + [
            f"only in {list_id}: {p}" for p in sorted(entries - expected)
        ]
        result.prefix_list_differences.extend(differences)
        if differences:
            result.alerts.append(f"{region}: {list_id} differs from ip-ranges.json: " + "; ".join(differences))
    return families


def apply_ranges(
    clients: Any,
    settings: Settings,
    store: StateStore,
    ranges: IpRanges,
    *,
    replay_same: bool,
    dry_run: bool = False,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RefreshResult:
    """Apply `ranges` to every configured region and advance the state.

    An older synctoken is a stale no-op; the same one is a no-op unless `replay_same` (the nightly catch-up and
    the CLI re-apply it so that drift and expired grace periods are handled even when no notification comes).
    `dry_run` (the scan in report mode) plans the writes and leaves the state alone, so that the SNS refresh,
    which does write, still sees the file as new.
    """
    state = store.load()
    if ranges.md5 != state.md5:
        # The stored copy the nightly run reuses (the file last applied, reduced to the configured regions) was
        # checked when it was applied, and is legitimately empty when every configured region vanished from it.
        require_eic(ranges)
    previous = state.sync_token
    result = RefreshResult("applied", ranges.sync_token, ranges.create_date)
    if previous is not None and not state.is_newer(ranges.sync_token):
        same = int(ranges.sync_token) == int(previous)
        if not (same and replay_same):
            result.status = "duplicate" if same else "stale"
            logger.info(
                f"ip-ranges {result.status}: nothing to do",
                extra={"sync_token": ranges.sync_token, "stored_sync_token": previous},
            )
            return result
    moment = now()
    for region in settings.regions:
        try:
            result.regions.append(
                refresh_region(clients.ec2(region), region, ranges, state, settings, moment, dry_run=dry_run)
            )
        except (ClientError, BotoCoreError) as exc:
            code = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
            logger.error("region refresh failed", extra={"region": region, "error": str(exc)})
            result.regions.append(RegionRefresh(region, error=f"{code}: {exc}"))
    if any(r.error for r in result.regions):
        # Leave the state where it was so the next delivery or the nightly run tries again.
        result.status = "incomplete"
        return result
    if dry_run:
        result.status = "planned"
        return result
    state.sync_token, state.create_date, state.md5 = ranges.sync_token, ranges.create_date, ranges.md5
    state.updated_at = moment
    store.save(state, previous)
    return result


def newer_or_stored(
    state: RangesState, settings: Settings, source: str | None = None, deadline: Deadline | None = None
) -> IpRanges:
    """The nightly catch-up's file: the stored copy when AWS says it is unchanged (ETag) or older, else the new one."""
    stored = state.as_ip_ranges()
    complete = stored is not None and all(r in state.current for r in settings.regions)
    raw = ip_ranges.fetch_bytes(source, if_none_match=state.md5 if complete else None, deadline=deadline)
    if raw is None:
        assert stored is not None
        logger.info("ip-ranges.json unchanged: reusing the stored prefixes", extra={"sync_token": stored.sync_token})
        return stored
    fetched = ip_ranges.parse(raw)
    if complete and stored is not None and not state.is_newer(fetched.sync_token):
        return stored  # never go back in time on an older (cached) file
    return fetched
