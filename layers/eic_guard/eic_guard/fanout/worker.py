"""The target worker: one (account, region) of a run (docs/architecture.md §9).

Apply phase: enter the account, bring its managed groups to the run's EIC prefixes (a report-mode scan plans it),
then, for a scan, gather → decide → act within the time budget and tag the instances' status. Revoke phase (after
every target's apply phase): revoke eic-guard's rules for expired prefixes. Either way the result is one JSON
document, persisted by the caller as soon as the target ends, so no change made is ever lost to a later failure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from ..aws.credentials import AccountUnreachable
from ..aws.gateway import error_code
from ..aws.retries import ThrottledOutOfTime
from ..budget import FINISH_RESERVE, Deadline
from ..engine import HELD, InstanceProgress, TargetResult, scan_target
from ..observability import logger
from ..outputs.publish import tag_entries
from ..outputs.report import instance_entry
from ..ranges.refresh import RegionRefresh, add_to_groups, revoke_from_groups
from ..settings import Settings
from .plan import RunPlan
from .targets import Target

Phase = Literal["apply", "revoke"]
# What EC2 answers in a region the account has not enabled (an opt-in region). AuthFailure and friends can mean
# that too, but also bad or expired credentials in an enabled region: they are reported as they are.
REGION_NOT_ENABLED = frozenset({"OptInRequired"})


def run_target(
    plan: RunPlan,
    target: Target,
    phase: Phase,
    clients_for: Callable[[str], Any],
    settings: Settings,
    *,
    round_: int = 1,
    deadline: Deadline | None = None,
    progress: InstanceProgress | None = None,
) -> dict[str, Any]:
    """Run one phase of one target; never raises for the target's own failures (they are its `error`)."""
    result = TargetResult(target.region, account_id=target.account_id)
    refresh: RegionRefresh | None = None
    alias = None
    unscanned: ThrottledOutOfTime | None = None
    try:
        clients = clients_for(target.account_id)
        ec2 = clients.ec2(target.region)
        dry_run = not plan.writes_ranges
        if phase == "revoke":
            expired = set(plan.expired.get(target.region, ()))
            refresh = revoke_from_groups(ec2, target.region, plan.ranges, settings, expired, dry_run)
        else:
            if plan.apply_ranges:
                refresh = add_to_groups(ec2, target.region, plan.ranges, settings, dry_run)
            if plan.job == "scan":
                result = scan_target(
                    ec2,
                    target.account_id,
                    target.region,
                    settings,
                    plan.ranges,
                    plan.started_at.date(),
                    deadline,
                    progress=progress,
                )
        if refresh is not None:
            result.actions[:0] = refresh.actions
            result.notes.extend(refresh.notes)
        if phase == "apply" and plan.job == "scan":
            alias = clients.account_alias()
    except ThrottledOutOfTime as exc:
        # Out of its time (in a batch, its share) while AWS throttled a read: not failed, the next round continues it
        # (engine.HELD). Nothing was scanned: no findings are imported (none would mean every instance gone).
        unscanned = exc
        logger.warning("target out of its time while throttled: the next round continues it", extra={"error": str(exc)})
        result.incomplete = True
        result.notes.append(f"not finished: {HELD[exc.held]} ({exc})")
        if refresh is not None:  # the managed groups' changes made before the scan stay recorded
            result.actions[:0] = refresh.actions
            result.notes.extend(refresh.notes)
    except Exception as exc:  # noqa: BLE001 - one target's failure is its error, never the others' loss
        result.error = target_error(target, exc)
    security_hub = None
    findings = settings.security_hub_findings == "enabled" and not result.error and unscanned is None
    if phase == "apply" and plan.job == "scan" and findings:
        from ..outputs.security_hub import publish_target_findings  # only when enabled: a cold start pays for it then

        # In both modes (a finding reports a state), and within the work budget: the finishing reserve stays for
        # the result object; what the deadline refuses is imported by the next round or run.
        entries = [instance_entry(o) for o in result.outcomes]
        security_hub = publish_target_findings(
            clients_for,
            plan.own_account,
            target.account_id,
            target.region,
            settings,
            entries,
            run_id=plan.run_id,
            deadline=deadline,
        )
    if deadline is not None:
        deadline.finishing(FINISH_RESERVE)  # the status tags, then the result object, may use the last reserve
    document = to_document(result, phase, round_, refresh, security_hub, alias)
    if phase == "apply" and plan.job == "scan" and settings.remediate and settings.tag_instances and not result.error:
        tag_entries(lambda region: clients_for(target.account_id).ec2(region), document["instances"], _stamp(plan))
    logger.info(
        "target done",
        extra={"target": target.key, "phase": phase, "round": round_, "status": document["status"]},
    )
    return document


def target_error(target: Target, exc: Exception) -> str:
    """What a target that failed says in the report: the account it could not enter, the region the account has
    not enabled, the AWS error, or (a bug, logged with its traceback) the exception."""
    if isinstance(exc, AccountUnreachable):
        return f"cannot enter account {target.account_id}: {exc}"
    if not isinstance(exc, (ClientError, BotoCoreError)):
        logger.exception("target failed", extra={"target": target.key})
        return f"{type(exc).__name__}: {exc}"
    code = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
    if code in REGION_NOT_ENABLED:
        return f"region {target.region} is not enabled in account {target.account_id} ({code})"
    logger.warning("target failed", extra={"target": target.key, "error": str(exc)})
    return f"{code}: {exc}"


def _stamp(plan: RunPlan) -> str:
    return plan.started_at.strftime("%Y-%m-%dT%H:%MZ")


def to_document(
    result: TargetResult,
    phase: Phase,
    round_: int,
    refresh: RegionRefresh | None,
    security_hub: dict[str, Any] | None = None,
    account_alias: str | None = None,
) -> dict[str, Any]:
    """The persisted result of one phase of one target (what Aggregate reads); `security_hub`: what the findings
    import did (outputs.security_hub.SyncOutcome), None when findings are disabled or the target was not scanned."""
    status = result.status
    if refresh is not None and refresh.error and status == "ok":
        status = "error"
    error = result.error or (refresh.error if refresh is not None else None)
    return {
        "account_id": result.account_id,
        "region": result.region,
        "phase": phase,
        "round": round_,
        "status": status,
        "error": error,
        "account_alias": account_alias,
        "notes": list(dict.fromkeys(result.notes)),
        "instances": [instance_entry(o) for o in result.outcomes],
        "actions": [dict(vars(a)) for a in result.actions],
        "refresh": _refresh_document(refresh) if refresh is not None else None,
        "security_hub": security_hub,
        "finished_at": datetime.now().astimezone().isoformat(),
    }


def _refresh_document(refresh: RegionRefresh) -> dict[str, Any]:
    document = asdict(refresh)
    document.pop("actions")  # they are the target's actions
    return document
