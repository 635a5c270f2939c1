"""The nightly run: catch up on ip-ranges.json (notifications can be late, missed or out of order), then scan.

The catch-up never keeps the scan from running: a file that cannot be used, a state item that cannot be read or a
concurrent refresh is reported (alert, RefreshRejected metric with its reason) and the scan goes on with the best
prefixes there are: the stored ones, else the freshly downloaded ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from ..budget import Deadline
from ..engine import run_scan
from ..errors import IpRangesError
from ..observability import logger, record_rejection
from ..outputs.report import Report
from ..settings import Settings
from .ip_ranges import IpRanges
from .refresh import RefreshResult, apply_ranges, newer_or_stored, require_eic
from .state import DynamoDbStateStore, RangesState, StateConflict, StateStore

# What a state item that cannot be read raises: not JSON, not the document's shape, no document attribute.
_UNREADABLE_STATE = (ValidationError, ValueError, KeyError, TypeError)


@dataclass
class CatchUp:
    """What the nightly ip-ranges catch-up did: the refresh it applied (or planned), or the problem it met."""

    refresh: RefreshResult | None = None
    reason: str | None = None  # the problem's token (metric dimension), None when all went well
    error: str | None = None
    alerts: list[str] = field(default_factory=list)

    def failed(self, reason: str, error: str) -> None:
        logger.error("ip-ranges catch-up failed; the scan goes on", extra={"reason": reason, "error": error})
        record_rejection(reason)
        self.reason, self.error = reason, error
        self.alerts.append(f"nightly ip-ranges catch-up failed ({reason}): {error}")

    def summary(self) -> dict[str, Any] | None:
        """The handler's `refresh` entry: None when there was nothing to apply against (no state table)."""
        if self.reason is not None:
            return {"status": "failed", "reason": self.reason, "error": self.error, "alerts": self.alerts}
        return self.refresh.summary() if self.refresh is not None else None

    @property
    def all_alerts(self) -> list[str]:
        return self.alerts + (self.refresh.alerts if self.refresh is not None else [])


def state_store(clients: Any, settings: Settings) -> StateStore | None:
    """The state table, in the function's own region (where the stack put it), whatever regions it scans."""
    if not settings.state_table:
        return None
    return DynamoDbStateStore(clients.client("dynamodb"), settings.state_table)


def nightly_run(
    clients: Any,
    settings: Settings,
    *,
    run_id: str | None = None,
    store: StateStore | None = None,
    deadline: Deadline | None = None,
) -> tuple[Report, CatchUp]:
    """Refresh the managed groups from the newest verified file (report mode: plan it), then scan every region."""
    catch_up = CatchUp()
    ranges = _catch_up(clients, settings, store, catch_up, deadline)
    planned = {r.region: r.actions for r in catch_up.refresh.regions} if catch_up.refresh is not None else {}
    report = run_scan(clients, settings, ranges, run_id=run_id, target_actions=planned)
    return report, catch_up


def _catch_up(
    clients: Any, settings: Settings, store: StateStore | None, catch_up: CatchUp, deadline: Deadline | None
) -> IpRanges:
    state = _load_state(store, catch_up)
    stored = state.as_ip_ranges() if state is not None else None
    try:
        ranges = newer_or_stored(state or RangesState(), settings, deadline=deadline)
        if stored is None or ranges.md5 != stored.md5:
            # the stored copy was checked when it was applied, and may rightly be empty (every region vanished)
            require_eic(ranges)
    except IpRangesError as exc:
        catch_up.failed(exc.reason, str(exc))
        if stored is None:
            return IpRanges.none_available(f"{exc.reason}: {exc}")
        logger.warning("scanning with the stored prefixes", extra={"sync_token": stored.sync_token})
        return stored
    if state is None or store is None:
        return ranges  # nothing to apply against: the scan uses the fresh file, the refresh function keeps state
    catch_up.refresh = _apply(clients, settings, store, ranges, catch_up)
    return ranges


def _load_state(store: StateStore | None, catch_up: CatchUp) -> RangesState | None:
    if store is None:
        return None
    try:
        return store.load()
    except _UNREADABLE_STATE as exc:
        catch_up.failed("state-unreadable", f"the stored ip-ranges state cannot be read: {exc}")
    except (ClientError, BotoCoreError) as exc:
        catch_up.failed("state-unreadable", f"the ip-ranges state table cannot be read: {exc}")
    return None


def _apply(
    clients: Any, settings: Settings, store: StateStore, ranges: IpRanges, catch_up: CatchUp
) -> RefreshResult | None:
    """Apply (remediate) or plan (report mode) the file; a concurrent refresh is retried once on the new state."""
    for attempt in (1, 2):
        try:
            return apply_ranges(clients, settings, store, ranges, replay_same=True, dry_run=not settings.remediate)
        except StateConflict as exc:
            if attempt == 2:
                catch_up.failed("state-conflict", f"{exc} (twice)")
            else:
                logger.info("ip-ranges state advanced meanwhile: applying again on the new state")
        except _UNREADABLE_STATE as exc:
            catch_up.failed("state-unreadable", f"the stored ip-ranges state cannot be read: {exc}")
            return None
        except (ClientError, BotoCoreError) as exc:
            catch_up.failed("state-unwritable", f"the ip-ranges state could not be saved: {exc}")
            return None
    return None
