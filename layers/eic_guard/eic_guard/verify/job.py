"""The verify job (`{"job": "verify"}`, docs/architecture.md §16): the state machine's own Plan → target workers →
Aggregate, where each worker enters its account as the nightly run does and probes every call it may make there
(verify/probes.py), and Aggregate returns the bounded checklist data the CLI reads from the execution's output.

Nothing is changed: Plan reads the stored ip-ranges state (no download, no save), the workers make DryRun writes
and small reads, Aggregate writes no report and publishes no alert. The run's working objects (manifest, targets,
results under runs/) are written as for any run.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ..aws.credentials import AccountUnreachable
from ..fanout.plan import RunPlan
from ..fanout.targets import ORGANIZATION, Target, plan_accounts, plan_targets
from ..permissions import MEMBER, WORKER, Deployment, granted
from ..ranges.ip_ranges import IpRanges
from ..ranges.state import StateStore
from ..settings import Settings
from . import probes

JOB = "verify"
EXAMPLES = 5  # targets named per problem in the execution's output (the count says how many in all)


def deployment_of(settings: Settings) -> Deployment:
    """The parameters that decide what the roles may do, as the functions' settings carry them."""
    return Deployment(
        mode=settings.mode,
        remediate_public_ip=settings.remediate_public_ip,
        tag_instances=settings.tag_instances,
        security_hub=settings.security_hub_findings == "enabled",
        accounts=settings.accounts,
    )


def actions_to_probe(role: str, deployment: Deployment) -> set[str]:
    """What `role` calls inside a scanned account with these parameters (permissions.CALLS)."""
    return {a for a in granted(role, deployment) if a.split(":")[0] in probes.IN_ACCOUNT_SERVICES}


def plan_verify(settings: Settings, clients: Any, store: StateStore | None, run_id: str | None = None) -> RunPlan:
    """The verify run's plan: the nightly run's targets, the stored prefixes (read only), nothing to apply."""
    own = clients.account_id()
    organizations = clients.client("organizations", settings.regions[0]) if settings.accounts == ORGANIZATION else None
    accounts = plan_accounts(settings.accounts, own, organizations)
    return RunPlan(
        run_id=run_id or str(uuid.uuid4()),
        job=JOB,  # type: ignore[arg-type] - RunPlan.job names the jobs that write; verify reuses its shape
        mode=settings.mode,
        started_at=datetime.now(UTC),
        own_account=own,
        ranges=_stored_ranges(store),
        apply_ranges=False,
        targets=plan_targets(accounts.accounts, settings.regions),
        skipped_accounts=list(accounts.skipped),
    )


def _stored_ranges(store: StateStore | None) -> IpRanges:
    """The prefixes the last run stored (read only); none when there are none or they cannot be read: the probes
    then use a documentation range, and the state is the nightly run's to repair, not verify's."""
    try:
        state = store.load() if store is not None else None
    except Exception as exc:  # noqa: BLE001 - verify never fails on the state, and never writes it
        return IpRanges.none_available(f"stored state unreadable: {exc}")
    return (state.as_ip_ranges() if state is not None else None) or IpRanges.none_available("no stored state")


def verify_target(plan: Any, target: Target, clients_for: Any, settings: Settings) -> dict[str, Any]:
    """One target's probes, as the result document the worker persists (never raises for the target's failures)."""
    own = target.account_id == plan.own_account
    role = WORKER if own else MEMBER
    document: dict[str, Any] = {
        "account_id": target.account_id,
        "region": target.region,
        "phase": "apply",
        "round": 1,
        "job": JOB,
        "role": role,
        "status": "ok",
        "error": None,
        "probes": [],
        "instances": [],  # the shape every result object has (fanout/results.py): no instance, no action, no refresh
        "actions": [],
        "refresh": None,
    }
    try:
        clients = clients_for(target.account_id)
    except AccountUnreachable as exc:
        document["status"], document["error"] = "error", f"cannot enter account {target.account_id}: {exc}"
        return document
    prefixes = plan.ranges.for_region(target.region).ipv4
    context = probes.Target(
        ec2=clients.ec2(target.region),
        iam=clients.client("iam"),
        securityhub=clients.client("securityhub", target.region),
        region=target.region,
        settings=settings,
        eic_prefix=str(prefixes[0]) if prefixes else None,
    )
    results = [
        probes.run_probe(a, context) for a in probes.probe_order(actions_to_probe(role, deployment_of(settings)))
    ]
    document["probes"] = [p.to_dict() for p in results]
    if any(p.outcome in (probes.DENIED, probes.ERROR) for p in results):
        document["status"] = "error"
    return document


def summarize(plan: Any, documents: list[dict], unreadable: Sequence[Any] = ()) -> dict[str, Any]:
    """Aggregate's output for a verify job: counts, and each problem once with how many targets have it and a few
    of them by name (bounded whatever the number of targets). `unreadable`: the result objects that could not be
    read (fanout/results.py UnreadableResult), each its target's problem."""
    found = {(d.get("account_id"), d.get("region")): d for d in documents if d.get("job") == JOB}
    broken = {(u.account_id, u.region): u.reason for u in unreadable}
    grouped: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    roles: dict[tuple[str, str, str], str] = {}
    outcomes: dict[str, int] = defaultdict(int)
    unreachable = 0
    for target in plan.targets:
        document = found.get((target.account_id, target.region))
        where = f"{target.account_id}/{target.region}"
        if document is None:
            reason = broken.get((target.account_id, target.region))
            if reason is not None:
                grouped[("worker", "unreadable", "result object unreadable")].append(f"{where}: {reason}")
            else:
                grouped[("worker", "missing", "no result from the target worker")].append(where)
            continue
        if document.get("error"):
            unreachable += 1
            grouped[("sts:AssumeRole", probes.DENIED, _reason(document["error"]))].append(where)
            roles[("sts:AssumeRole", probes.DENIED, _reason(document["error"]))] = document.get("role", "")
        for probe in document.get("probes", ()):
            outcomes[probe["outcome"]] += 1
            if probe["outcome"] == probes.ALLOWED:
                continue
            key = (probe["action"], probe["outcome"], _reason(probe["detail"]))
            grouped[key].append(f"{where}: {probe['detail']}")
            roles[key] = document.get("role", "")
    problems = [
        {
            "action": action,
            "outcome": outcome,
            "reason": reason,
            "role": roles.get((action, outcome, reason), ""),
            "targets": len(where),
            "examples": where[:EXAMPLES],
        }
        for (action, outcome, reason), where in sorted(grouped.items())
    ]
    return {
        "run_id": plan.run_id,
        "job": JOB,
        "own_account": plan.own_account,
        "targets": len(plan.targets),
        "targets_with_result": len(found),
        "targets_unreachable": unreachable,
        "probes": dict(outcomes),
        "problems": problems,
    }


def _reason(detail: str) -> str:
    """What groups one problem across targets: the error code, or the reason without resource ids."""
    head = detail.split(":", 1)[0]
    return head if head and " " not in head else " ".join(w for w in detail.split() if not _is_id(w))[:160]


def _is_id(word: str) -> bool:
    word = word.strip("(),.")
    return (
        word[:4] in ("sg-", "vpc-", "eni-", "i-")
        or word.isdigit()
        or word.startswith(("eipalloc-", "eipassoc-", "arn:"))
    )
