"""The nightly run: catch up on ip-ranges.json (notifications can be late, missed or out of order), then scan."""

from __future__ import annotations

from typing import Any

from . import ip_ranges
from .engine import run_scan
from .errors import IpRangesError
from .observability import logger, record_rejection
from .refresh import RefreshResult, apply_ranges, nightly_ranges
from .report import Report
from .settings import Settings
from .state import DynamoDbStateStore, StateStore


def state_store(clients: Any, settings: Settings) -> StateStore | None:
    if not settings.state_table:
        return None
    return DynamoDbStateStore(clients.client("dynamodb", settings.regions[0]), settings.state_table)


def nightly_run(
    clients: Any, settings: Settings, *, run_id: str | None = None, store: StateStore | None = None
) -> tuple[Report, RefreshResult | None]:
    """Refresh the managed groups from the newest verified file (or the stored copy), then scan every region."""
    if store is None:
        return run_scan(clients, settings, ip_ranges.load(), run_id=run_id), None
    try:
        ranges = nightly_ranges(store, settings)
    except IpRangesError as exc:
        stored = store.load().as_ip_ranges()
        record_rejection(exc.reason)
        if stored is None:
            raise
        logger.error("ip-ranges.json unusable; scanning with the stored prefixes", extra={"error": str(exc)})
        ranges = stored
    refresh = apply_ranges(clients, settings, store, ranges, replay_same=True)
    return run_scan(clients, settings, ranges, run_id=run_id), refresh
