"""The ip-ranges side of a run's plan: which EIC prefixes the run applies, which it revokes, and the state.

The nightly scan catches up on ip-ranges.json (notifications can be late, missed or out of order). The catch-up
never keeps the scan from running: a file that cannot be used, a state item that cannot be read or a concurrent
refresh is reported (alert, RefreshRejected metric with its reason) and the scan goes on with the best prefixes
there are: the stored ones, else the freshly downloaded ones, else none (the SSH-rule check then says `error`).

The state is advanced once per run, here, before any target is touched (docs/architecture.md §9); the targets' writes
are computed from their groups' actual rules, so a target that fails is caught up by the next run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from ..budget import Deadline
from ..errors import IpRangesError
from ..observability import logger, record_rejection
from ..settings import Settings
from .ip_ranges import IpRanges
from .refresh import newer_or_stored, require_eic, track_absence
from .state import DynamoDbStateStore, RangesState, StateConflict, StateStore

# What a state item that cannot be read raises: not JSON, not the document's shape, no document attribute.
UNREADABLE_STATE = (ValidationError, ValueError, KeyError, TypeError)


@dataclass
class CatchUp:
    """What the ip-ranges part of a run's plan met: nothing (reason None), or the problem it worked around."""

    reason: str | None = None  # the problem's token (metric dimension)
    error: str | None = None
    alerts: list[str] = field(default_factory=list)

    def failed(self, reason: str, error: str) -> None:
        logger.error("ip-ranges catch-up failed; the scan goes on", extra={"reason": reason, "error": error})
        record_rejection(reason)
        self.reason, self.error = reason, error
        self.alerts.append(f"nightly ip-ranges catch-up failed ({reason}): {error}")

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "error": self.error, "alerts": self.alerts}


@dataclass
class RangesDecision:
    """The prefixes a run applies (and whether it may write them), what it revokes, and what it met on the way."""

    ranges: IpRanges
    apply: bool  # bring the managed groups to `ranges` (a report-mode scan plans it)
    expired: dict[str, list[str]] = field(default_factory=dict)  # region -> prefixes whose rules go
    in_grace: dict[str, list[str]] = field(default_factory=dict)
    catch_up: CatchUp = field(default_factory=CatchUp)


def state_store(clients: Any, settings: Settings) -> StateStore | None:
    """The state table, in the function's own region (where the stack put it), whatever regions it scans."""
    if not settings.state_table:
        return None
    return DynamoDbStateStore(clients.client("dynamodb"), settings.state_table)


def decide_scan_ranges(
    store: StateStore | None, settings: Settings, now: datetime, deadline: Deadline | None = None
) -> RangesDecision:
    """The nightly catch-up: the newest verified file (or the stored copy); in remediate mode the state advances."""
    catch_up = CatchUp()
    state = _load_state(store, catch_up)
    corrupt = state.corrupt if state is not None else None
    if corrupt is not None and store is not None and not settings.remediate:
        _reset_corrupt(store, state, catch_up)
    stored = state.as_ip_ranges() if state is not None else None
    try:
        ranges = newer_or_stored(state or RangesState(), settings, deadline=deadline)
        if stored is None or ranges.md5 != stored.md5:
            # the stored copy was checked when it was applied, and may rightly be empty (every region vanished)
            require_eic(ranges)
    except IpRangesError as exc:
        catch_up.failed(exc.reason, str(exc))
        if stored is None:
            return RangesDecision(IpRanges.none_available(f"{exc.reason}: {exc}"), apply=False, catch_up=catch_up)
        logger.warning("scanning with the stored prefixes", extra={"sync_token": stored.sync_token})
        return RangesDecision(stored, apply=False, catch_up=catch_up)
    if state is None or store is None:
        # nothing to track absences against: the scan uses the fresh file, the refresh keeps the state
        return RangesDecision(ranges, apply=False, catch_up=catch_up)
    decision = _advance(store, state, ranges, settings, now, save=settings.remediate, catch_up=catch_up)
    if decision is not None and corrupt is not None and settings.remediate:
        catch_up.alerts.append(
            f"the stored ip-ranges state was corrupt ({corrupt.reason}): rebuilt from a verified download of "
            f"ip-ranges.json (synctoken {decision.ranges.sync_token}); absence clocks of vanished prefixes restart"
        )
    return decision or RangesDecision(ranges, apply=False, catch_up=catch_up)


def decide_refresh_ranges(store: StateStore, settings: Settings, now: datetime) -> RangesDecision:
    """The refresh job: the state the refresh function verified and advanced; every mode writes (docs/architecture.md
    §4)."""
    state = store.load()
    ranges = state.as_ip_ranges()
    if ranges is None:
        raise IpRangesError("no-state", "no ip-ranges file has been applied yet: nothing to refresh")
    expired, in_grace = absences(state, settings, now)
    return RangesDecision(ranges, apply=True, expired=expired, in_grace=in_grace)


def advance_state(state: RangesState, ranges: IpRanges, settings: Settings, now: datetime) -> None:
    """Record `ranges` in `state`: current prefixes per region, when each was last seen, absence clocks."""
    for region in settings.regions:
        current = {str(p) for p in ranges.for_region(region).all}
        if not current:
            # a region that vanished from the file keeps its rules; no absence clock starts while it has none
            state.current[region] = []
            continue
        track_absence(region, [], current, state, now, timedelta(0))
        state.current[region] = sorted(current)
    state.sync_token, state.create_date, state.md5 = ranges.sync_token, ranges.create_date, ranges.md5
    state.updated_at = now


def absences(state: RangesState, settings: Settings, now: datetime) -> tuple[dict[str, list[str]], dict]:
    """Per region: the prefixes absent longer than the grace period (revoked) and those still in grace.

    A region with no current prefix revokes nothing (it may have vanished from the file for a while).
    """
    grace = timedelta(hours=settings.stale_prefix_grace_hours)
    expired, in_grace = {}, {}
    for region in settings.regions:
        absent = state.absent_since.get(region, {})
        if not state.current.get(region) or not absent:
            continue
        expired[region] = sorted(p for p, since in absent.items() if now - since >= grace)
        in_grace[region] = sorted(p for p, since in absent.items() if now - since < grace)
    return expired, in_grace


def _advance(
    store: StateStore,
    state: RangesState,
    ranges: IpRanges,
    settings: Settings,
    now: datetime,
    *,
    save: bool,
    catch_up: CatchUp,
) -> RangesDecision | None:
    """Advance the state with `ranges` (saved when `save`; one retry on a concurrent refresh); None on failure."""
    for attempt in (1, 2):
        if attempt == 2:
            state = _load_state(store, catch_up)
            if state is None:
                return None
        previous = state.sync_token
        if previous is not None and not state.is_newer(ranges.sync_token) and ranges.sync_token != previous:
            ranges = state.as_ip_ranges() or ranges  # a concurrent refresh went further: never go back
        advance_state(state, ranges, settings, now)
        expired, in_grace = absences(state, settings, now)
        if not save:
            return RangesDecision(ranges, apply=True, expired=expired, in_grace=in_grace, catch_up=catch_up)
        try:
            store.save(state, previous)
            return RangesDecision(ranges, apply=True, expired=expired, in_grace=in_grace, catch_up=catch_up)
        except StateConflict as exc:
            if attempt == 2:
                catch_up.failed("state-conflict", f"{exc} (twice)")
            else:
                logger.info("ip-ranges state advanced meanwhile: deciding again on the new state")
        except (ClientError, BotoCoreError) as exc:
            catch_up.failed("state-unwritable", f"the ip-ranges state could not be saved: {exc}")
            return None
    return None


def _reset_corrupt(store: StateStore, state: RangesState, catch_up: CatchUp) -> None:
    """Report mode applies no file: a corrupt item becomes "no file applied yet" (the refresh function applies and
    records the next one), so that it is alerted once, not every night."""
    assert state.corrupt is not None
    reason = state.corrupt.reason
    try:
        store.save(state, None)
    except (StateConflict, ClientError, BotoCoreError) as exc:
        logger.warning("corrupt ip-ranges state not reset", extra={"error": str(exc)})
        return
    catch_up.alerts.append(
        f"the stored ip-ranges state was corrupt ({reason}): reset to no file applied; the next AmazonIpSpaceChanged "
        "notification records the applied file"
    )


def _load_state(store: StateStore | None, catch_up: CatchUp) -> RangesState | None:
    """The stored state; None when it cannot be read. A corrupt item reads as an empty state marked `corrupt`
    (the state is a cache of a verified file: the run rebuilds it from a verified download)."""
    if store is None:
        return None
    try:
        state = store.load()
    except UNREADABLE_STATE as exc:
        catch_up.failed("state-unreadable", f"the stored ip-ranges state cannot be read: {exc}")
    except (ClientError, BotoCoreError) as exc:
        catch_up.failed("state-unreadable", f"the ip-ranges state table cannot be read: {exc}")
        return None
    if state.corrupt is not None:
        logger.error("the stored ip-ranges state is corrupt: rebuilt", extra={"reason": state.corrupt.reason})
        record_rejection("state-corrupt")
    return state
