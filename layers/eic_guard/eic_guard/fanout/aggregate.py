"""Aggregate: every target's persisted results → one report, one refresh summary, the state's last touches.

A target's rounds are merged so that the report lists every change any round made (a later round re-gathers and
finds an instance fixed by an earlier one already compliant: it is reported `fixed`, with the earlier actions).
A target without any result (its worker crashed or was killed) is a target error, never silently skipped; so is a
target whose result object cannot be read (fanout.results), and the other targets are reported as usual.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from ..observability import logger
from ..outputs.report import Report, build_report
from ..ranges.refresh import forget
from ..ranges.state import StateConflict, StateStore
from ..settings import Settings
from .plan import RunPlan
from .results import LostResult, UnreadableResult
from .targets import Target

if TYPE_CHECKING:  # imported where used: the target worker, which imports merge_rounds, never builds a report
    from ..outputs.alerts import ProblemTally
    from ..outputs.stream import ReportStream

NO_RESULT = "no result from the target worker (it failed, was throttled past its retries, or timed out)"


def merge_targets(
    plan: RunPlan,
    documents: list[dict],
    unreadable: Sequence[UnreadableResult | LostResult] = (),
    targets: Sequence[Target] | None = None,
) -> list[dict]:
    """One document per planned target (or per one of `targets`, a part of the plan's): its apply rounds merged,
    its revoke phase's actions and errors added; a result object that could not be read, or not written (its
    changes listed), is its target's error (what the target's other objects say is kept)."""
    phases: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for document in documents:
        phases[(document["account_id"], document["region"])][document["phase"]].append(document)
    broken: dict[tuple[str, str], list[UnreadableResult | LostResult]] = defaultdict(list)
    for problem in sorted(unreadable, key=lambda p: (p.phase, p.round)):
        broken[(problem.account_id, problem.region)].append(problem)
    merged = []
    for target in plan.targets if targets is None else targets:
        found = phases.get((target.account_id, target.region), {})
        lost = broken.get((target.account_id, target.region), [])
        applies = sorted(found.get("apply", []), key=lambda d: d["round"])
        if not applies:
            document = unscanned_target(target.account_id, target.region, lost[0].error if lost else NO_RESULT)
            document["actions"] = [dict(a) for problem in lost for a in problem.listed]
            merged.append(document)
            continue
        document = merge_rounds(applies)
        for revoke in sorted(found.get("revoke", []), key=lambda d: d["round"])[-1:]:
            document["actions"].extend(revoke["actions"])
            document["revoke"] = revoke["refresh"]
            if revoke["error"]:
                document["status"], document["error"] = "error", document["error"] or revoke["error"]
                if document["revoke"] is None:  # the account was not entered: nothing was revoked
                    document["revoke"] = _failed_revoke(revoke["error"])
        if lost:
            document["status"], document["error"] = "error", document["error"] or lost[0].error
            document["actions"].extend(dict(a) for problem in lost for a in problem.listed)
        if plan.revoke and "revoke" not in found and target.region in plan.expired:
            failed = next((p.error for p in lost if p.phase == "revoke"), f"revoke phase: {NO_RESULT}")
            document["status"], document["error"] = "error", document["error"] or failed
            document["revoke"] = _failed_revoke(failed)
        merged.append(document)
    return merged


def _failed_revoke(error: str) -> dict:
    """The revoke part of a target whose revoke phase failed before revoking anything (its worker raised, timed out
    or never ran; its account could not be entered): its error is the refresh's, never hidden behind the apply."""
    return {"revoked": [], "error": error}


def unscanned_target(account_id: str, region: str, error: str = NO_RESULT) -> dict:
    """The document of a target that has no result to merge: its error, no instance, no action."""
    return {
        "account_id": account_id,
        "region": region,
        "phase": "apply",
        "round": 0,
        "status": "error",
        "error": error,
        "instances": [],
        "actions": [],
        "refresh": None,
    }


def merge_rounds(rounds: list[dict]) -> dict:
    """The last round's view of every instance, plus what earlier rounds did to it (and instances only they saw)."""
    if len(rounds) == 1:  # nearly always: a shallow copy (merge_targets adds the revoke phase's actions)
        return {**rounds[0], "actions": list(rounds[0]["actions"])}
    last = copy.deepcopy(rounds[-1])
    earlier: dict[str, list[dict]] = defaultdict(list)
    for document in rounds[:-1]:
        for entry in document["instances"]:
            earlier[entry["instance_id"]].append(entry)
    seen = set()
    for entry in last["instances"]:
        seen.add(entry["instance_id"])
        _carry_over(entry, earlier.get(entry["instance_id"], []))
    for instance_id, entries in earlier.items():
        if instance_id not in seen:  # gone (or no longer opted in) by the last round: keep what was done to it
            last["instances"].append(copy.deepcopy(entries[-1]))
    last["actions"] = [a for d in rounds[:-1] for a in d["actions"]] + last["actions"]
    last["refresh"] = _merge_refresh([d["refresh"] for d in rounds if d.get("refresh")])
    return last


def _carry_over(entry: dict, earlier: list[dict]) -> None:
    done = [a for e in earlier for a in e["actions"] if a["status"] in ("done", "failed")]
    entry["actions"] = done + entry["actions"]
    for before in earlier:
        for check_id, check in before["checks"].items():
            now = entry["checks"].get(check_id)
            if check["status"] == "fixed" and now is not None and now["status"] == "pass":
                entry["checks"][check_id] = dict(check)
    if entry["verdict"] == "compliant" and any(c["status"] == "fixed" for c in entry["checks"].values()):
        entry["verdict"] = "fixed"


def _merge_refresh(parts: list[dict]) -> dict | None:
    if not parts:
        return None
    merged = copy.deepcopy(parts[-1])
    merged["added"] = sorted({p for part in parts for p in part["added"]})
    return merged


def refresh_summary(plan: RunPlan, targets: list[dict]) -> dict[str, Any] | None:
    """The run's ip-ranges outcome, in the shape the single-account refresh always had."""
    if plan.catch_up:
        return {"status": "failed", **plan.catch_up}
    if not plan.apply_ranges:
        return None
    applied = [t["refresh"] for t in targets if t.get("refresh")]
    revoked = [t["revoke"] for t in targets if t.get("revoke")]
    errors = [
        f"{t['account_id']}/{t['region']}: {part['error']}"
        for t in targets
        for part in (t.get("refresh"), t.get("revoke"))
        if part and part["error"]
    ]
    errors += [f"{t['account_id']}/{t['region']}: {t['error']}" for t in targets if t["error"] and not t.get("refresh")]
    alerts = list(dict.fromkeys(a for part in applied for a in part["alerts"]))
    status = "planned" if not plan.writes_ranges else "incomplete" if errors else "applied"
    return {
        "status": status,
        "sync_token": plan.ranges.sync_token,
        "create_date": plan.ranges.create_date,
        "prefixes_added": sum(len(p["added"]) for p in applied),
        "prefixes_revoked": sum(len(p["revoked"]) for p in revoked),
        "prefixes_in_grace": sum(len(p) for p in plan.in_grace.values()),
        "groups": sum(p["groups"] for p in applied),
        "accounts": sorted({t["account_id"] for t in targets}),
        "errors": errors,
        "alerts": plan.alerts + alerts + errors,
    }


def aggregate_run(
    plan: RunPlan,
    documents: list[dict],
    settings: Settings,
    finished: datetime,
    unreadable: Sequence[UnreadableResult | LostResult] = (),
) -> tuple:
    """(report, refresh summary, merged target documents) of a run; logs one line per check not passing."""
    from ..outputs.stream import log_entry  # here: the target worker imports this module and never reports

    targets = merge_targets(plan, documents, unreadable)
    report: Report = build_report(**_run_header(plan, settings, finished), targets=targets)
    for entry in report.instances:
        log_entry(entry, report.account_label(entry.account_id))
    return report, refresh_summary(plan, targets), targets


def _run_header(plan: RunPlan, settings: Settings, finished: datetime) -> dict[str, Any]:
    """What a run's report says of the run itself (outputs.report.build_report's and ReportStream's arguments)."""
    return {
        "run_id": plan.run_id,
        "mode": plan.mode,
        "account_id": plan.own_account,
        "regions": list(settings.regions),
        "started": plan.started_at,
        "finished": finished,
        "ip_ranges": plan.ranges,
    }


def stream_run(
    plan: RunPlan,
    targets: Iterable[dict],
    settings: Settings,
    finished: datetime,
    tally: ProblemTally | None = None,
) -> tuple[ReportStream, Report, dict[str, Any] | None, list[dict]]:
    """A run's report streamed (outputs.stream): `targets` are the merged target documents, one at a time, in the
    plan's order; each one's instances are encoded and dropped. Returns the stream (to store the report), the
    report without its instances, the refresh summary, and the targets' documents without their instances."""
    from ..outputs.stream import ReportStream

    stream = ReportStream(**_run_header(plan, settings, finished), tally=tally)
    light = []
    try:
        for target in targets:
            stream.add_target(target)
            light.append({**target, "instances": []})
        report = stream.finish()
    except BaseException:
        stream.close()
        raise
    return stream, report, refresh_summary(plan, light), light


def finish_state(store: StateStore | None, plan: RunPlan, targets: list[dict], now: datetime) -> None:
    """After the writes: start absence clocks for prefixes only our rules knew (state lost, older install) and
    forget the prefixes revoked everywhere. Nothing when the run wrote nothing or a newer file was applied since."""
    if store is None or not plan.writes_ranges:
        return
    unknown = defaultdict(set)
    for target in targets:
        for prefix in (target.get("refresh") or {}).get("unknown_owned", ()):
            unknown[target["region"]].add(prefix)
    failed_regions = {t["region"] for t in targets if t.get("revoke") and t["revoke"]["error"]}
    if plan.revoke:  # a target with nothing to revoke reports no revoke phase only when its region expired nothing
        failed_regions |= {t["region"] for t in targets if t["region"] in plan.expired and not t.get("revoke")}
    for attempt in (1, 2):
        try:
            state = store.load()
            if state.sync_token != plan.ranges.sync_token:
                return
            before = state.model_dump_json()
            for region, prefixes in unknown.items():
                current = set(state.current.get(region, ()))
                known = set(state.last_seen.get(region, {})) | set(state.absent_since.get(region, {}))
                for prefix in prefixes - current - known:
                    state.absent_since.setdefault(region, {})[prefix] = now
            for region, expired in plan.expired.items():
                if region not in failed_regions:
                    forget(region, set(expired), state)
            if state.model_dump_json() != before:
                store.save(state, state.sync_token)
            return
        except StateConflict:
            if attempt == 2:
                logger.warning("ip-ranges state changed twice while the run finished: left for the next run")
        except (ClientError, BotoCoreError) as exc:
            logger.error("ip-ranges state not updated after the run", extra={"error": str(exc)})
            return
