"""Plan: what one run does (docs/architecture.md §9) — its job, the EIC prefixes it applies and revokes, its targets.

The plan is written once (the run manifest in S3, or kept in memory by the CLI) and read by every target worker,
so that every (account, region) of a run works from the same prefixes and the same decision.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from ..budget import Deadline
from ..observability import logger
from ..ranges.ip_ranges import IpRanges
from ..ranges.state import StateStore
from ..settings import Settings
from .targets import ORGANIZATION, Target, plan_accounts, plan_targets

Job = Literal["scan", "refresh"]
JOBS = ("scan", "refresh")


@dataclass
class RunPlan:
    """One run: the job, the prefixes, what to revoke, the targets. JSON round-trips through `to_dict`."""

    run_id: str
    job: Job
    mode: Literal["report", "remediate"]
    started_at: datetime
    own_account: str
    ranges: IpRanges
    apply_ranges: bool  # the workers bring the managed groups to `ranges` (a report-mode scan plans it)
    targets: list[Target]
    expired: dict[str, list[str]] = field(default_factory=dict)  # region -> prefixes whose rules are revoked
    in_grace: dict[str, list[str]] = field(default_factory=dict)
    skipped_accounts: list[str] = field(default_factory=list)  # listed by Organizations but not ACTIVE
    catch_up: dict[str, Any] | None = None  # the nightly catch-up's problem, when it met one
    alerts: list[str] = field(default_factory=list)

    @property
    def revoke(self) -> bool:
        """Whether the run has a revoke phase (after every target's apply phase: adds before revokes)."""
        return self.apply_ranges and any(self.expired.values())

    @property
    def writes_ranges(self) -> bool:
        """Whether the workers write the managed groups' rules (the refresh writes in every mode)."""
        return self.apply_ranges and (self.job == "refresh" or self.mode == "remediate")

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "job": self.job,
            "mode": self.mode,
            "started_at": self.started_at.isoformat(),
            "own_account": self.own_account,
            "ranges": self.ranges.to_dict(),
            "apply_ranges": self.apply_ranges,
            "targets": [t.to_dict() for t in self.targets],
            "expired": self.expired,
            "in_grace": self.in_grace,
            "skipped_accounts": self.skipped_accounts,
            "catch_up": self.catch_up,
            "alerts": self.alerts,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunPlan:
        return cls(
            run_id=raw["run_id"],
            job=raw["job"],
            mode=raw["mode"],
            started_at=datetime.fromisoformat(raw["started_at"]),
            own_account=raw["own_account"],
            ranges=IpRanges.from_dict(raw["ranges"]),
            apply_ranges=raw["apply_ranges"],
            targets=[Target.from_dict(t) for t in raw["targets"]],
            expired=raw.get("expired", {}),
            in_grace=raw.get("in_grace", {}),
            skipped_accounts=raw.get("skipped_accounts", []),
            catch_up=raw.get("catch_up"),
            alerts=raw.get("alerts", []),
        )


def plan_run(
    job: Job,
    settings: Settings,
    clients: Any,
    *,
    store: StateStore | None = None,
    ranges: IpRanges | None = None,
    run_id: str | None = None,
    now: datetime | None = None,
    deadline: Deadline | None = None,
) -> RunPlan:
    """Decide one run. `ranges` given (the CLI's --ip-ranges) means: scan with them, no state, no refresh."""
    # The catch-up decides the prefixes: Plan's only (the target worker imports this module for RunPlan).
    from ..ranges.catch_up import RangesDecision, decide_refresh_ranges, decide_scan_ranges

    started = now or datetime.now(UTC)
    own = clients.account_id()
    # any region of the caller's partition: botocore resolves Organizations' one endpoint of that partition
    region = settings.regions[0]
    organizations = clients.client("organizations", region) if settings.accounts == ORGANIZATION else None
    accounts = plan_accounts(settings.accounts, own, organizations)
    if ranges is not None:
        decision = RangesDecision(ranges, apply=False)
    elif job == "refresh":
        assert store is not None, "the refresh job needs the ip-ranges state"
        decision = decide_refresh_ranges(store, settings, started)
    else:
        decision = decide_scan_ranges(store, settings, started, deadline)
    plan = RunPlan(
        run_id=run_id or str(uuid.uuid4()),
        job=job,
        mode=settings.mode,
        started_at=started,
        own_account=own,
        ranges=decision.ranges,
        apply_ranges=decision.apply,
        targets=plan_targets(accounts.accounts, settings.regions),
        expired={r: p for r, p in decision.expired.items() if p},
        in_grace={r: p for r, p in decision.in_grace.items() if p},
        skipped_accounts=list(accounts.skipped),
        catch_up=decision.catch_up.to_dict() if decision.catch_up.reason else None,
        alerts=list(decision.catch_up.alerts),
    )
    logger.info(
        "run planned",
        extra={
            "run_id": plan.run_id,
            "job": job,
            "targets": len(plan.targets),
            "accounts": len(accounts.accounts),
            "skipped_accounts": plan.skipped_accounts,
            "sync_token": plan.ranges.sync_token,
            "revoke": plan.revoke,
        },
    )
    return plan
