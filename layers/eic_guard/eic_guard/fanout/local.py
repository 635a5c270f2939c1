"""The fan-out in one process: plan → target workers in a bounded thread pool → aggregate (the CLI, the tests, a
stack without a state machine). The deployed path runs the same three steps on Step Functions (fanout.steps)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..aws.credentials import AccountClients
from ..budget import Deadline
from ..engine import InstanceProgress
from ..observability import logger
from ..outputs.report import Report
from ..ranges.ip_ranges import IpRanges
from ..ranges.state import StateStore
from ..settings import Settings
from .aggregate import aggregate_run, finish_state
from .plan import Job, RunPlan, plan_run
from .targets import Target
from .worker import Phase, run_target

DEFAULT_MAX_WORKERS = 8


@dataclass(frozen=True)
class RunWatch:
    """Who follows a run in this process and may stop it: `on_target` hears of each target done, `progress` of
    each instance, and `deadline` (the CLI's: it passes when the run is interrupted) stops it at the next instance,
    the fixes not made held (engine.scan_target)."""

    on_target: Callable[[Target], None] | None = None
    progress: InstanceProgress | None = None
    deadline: Deadline | None = None


@dataclass
class RunOutcome:
    """What a run produced: its plan, the one report, the ip-ranges summary (None when nothing was applied)."""

    plan: RunPlan
    report: Report
    refresh: dict[str, Any] | None

    @property
    def alerts(self) -> list[str]:
        return list((self.refresh or {}).get("alerts", ()))


def run_job(
    job: Job,
    settings: Settings,
    clients: Any,
    *,
    store: StateStore | None = None,
    ranges: IpRanges | None = None,
    run_id: str | None = None,
    max_workers: int = DEFAULT_MAX_WORKERS,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    watch: RunWatch | None = None,
) -> RunOutcome:
    """One whole run in this process: every target's apply phase, then (if any) every target's revoke phase."""
    plan = plan_run(job, settings, clients, store=store, ranges=ranges, run_id=run_id, now=now())
    logger.append_keys(run_id=plan.run_id)
    accounts = AccountClients(clients, plan.run_id, settings.member_role_name)
    watch = watch or RunWatch()
    with _collector_skips_kept_objects() as keep:
        documents = _phase(plan, "apply", accounts, settings, max_workers, watch, keep)
        if plan.revoke:
            documents += _phase(plan, "revoke", accounts, settings, max_workers, watch, keep)
        report, refresh, targets = aggregate_run(plan, documents, settings, now())
        keep()
    finish_state(store, plan, targets, now())
    return RunOutcome(plan, report, refresh)


def run_scan(
    clients: Any,
    settings: Settings,
    ip_ranges: IpRanges,
    *,
    run_id: str | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    watch: RunWatch | None = None,
    max_workers: int = DEFAULT_MAX_WORKERS,
) -> Report:
    """Scan every configured target with the given prefixes (no ip-ranges state, no refresh)."""
    options = {"run_id": run_id, "now": now, "watch": watch, "max_workers": max_workers}
    return run_job("scan", settings, clients, ranges=ip_ranges, **options).report


def _phase(
    plan: RunPlan,
    phase: Phase,
    accounts: AccountClients,
    settings: Settings,
    max_workers: int,
    watch: RunWatch,
    keep: Callable[..., None],
) -> list[dict]:
    # Each account's clients are released once its last target of the phase is done (its credentials kept when the
    # revoke phase comes back to it): the run holds the clients of the accounts in progress, not of the organization.
    done = accounts.countdown((t.account_id for t in plan.targets), again=phase == "apply" and plan.revoke)

    def one(target: Target) -> dict:
        options = {"deadline": watch.deadline, "progress": watch.progress}
        try:
            document = run_target(plan, target, phase, accounts.for_account, settings, **options)
        finally:
            done(target.account_id)
        if watch.on_target:
            watch.on_target(target)
        return document

    if max_workers <= 1 or len(plan.targets) <= 1:
        documents, held = [], frozenset[str]()
        for target in plan.targets:
            documents.append(one(target))
            # Never while a member account's clients are held: frozen, they would outlive their release until the
            # run ends. Once released, their cycles are collected first (only what the last freeze left is walked).
            now_held = accounts.entered
            if not now_held:
                keep(bool(held))
            held = now_held
        return documents
    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="eic-guard-target") as pool:
        documents = list(pool.map(one, plan.targets))
    keep(any(t.account_id != plan.own_account for t in plan.targets))  # released members: collected, not frozen
    return documents


@contextmanager
def _collector_skips_kept_objects() -> Iterator[Callable[..., None]]:
    """Leave the objects a run keeps out of the garbage collector's passes while it runs; yields `keep(collect)`.

    Parsing a large DescribeInstances page grows the heap enough to trigger several full collections, and each one
    walks every live object again: the modules and clients that were there before the run, the targets already
    done, the report. `keep()` freezes what is alive at that point (those results live until the report is built);
    the collector gets it all back when the run ends, so cyclic garbage among it, if any, is collected then rather
    than during the run. `keep(True)` first collects what was created since the last freeze, when something the run
    let go of (released clients: botocore's are full of reference cycles) is among it. Nothing else changes. Saves
    about a quarter of the CPU of a 5,000-instance scan.
    """

    def keep(collect: bool = False) -> None:
        if collect:
            gc.collect()
        gc.freeze()

    gc.freeze()
    try:
        yield keep
    finally:
        gc.unfreeze()
