"""The engine: scan one (account, region) target — gather, decide, act — and run a whole scan."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from .aws.gateway import QUOTA_CODES, VANISHED_CODES, Ec2Gateway, error_code
from .aws.inventory import gather
from .budget import Deadline, DeadlineExceeded
from .checks import ALL_CHECKS, CheckContext, eic_ssh_ingress, endpoint_ssh_egress, endpoint_ssh_ingress
from .checks.connect_path import ENDPOINT, PUBLIC, connect_path, tag_error
from .checks.public_ipv4 import public_ip_allowed
from .models import ActionRecord, CheckResult, Instance, InstanceOutcome
from .observability import logger
from .ranges.ip_ranges import IpRanges
from .remediation import RemediationRefused, Remediator
from .settings import EXCLUDE_TAG, EXCLUDE_UNTIL_TAG, Settings

CHECKS_BY_ID = {check.ID: check for check in ALL_CHECKS}
ATTACH_CHECKS = (eic_ssh_ingress.ID, endpoint_ssh_ingress.ID, endpoint_ssh_egress.ID)  # fixes that attach a group
# Network prerequisites eic-guard cannot fix (public-ipv4 only without the Elastic IP opt-in, i.e. without a fix).
# While one fails, no other fix can make EIC work, so none is made (docs/architecture.md §4: it changes only what makes
# EIC work).
# On the endpoint path: no endpoint (without CreateEndpoints), an endpoint group eic-guard does not own that lets no
# TCP 22 out, or a NACL between the endpoint and the instance (docs/architecture.md §13).
BLOCKING_CHECKS = ("internet-route", "network-acl", "public-ipv4", "endpoint-present", "endpoint-ssh-egress")
QUOTA_REASONS = {
    "SecurityGroupsPerInterfaceLimitExceeded": "the network interface is at its security-group quota",
    "RulesPerSecurityGroupLimitExceeded": "the eic-guard-ssh group is at its rules quota",
    "ResourceLimitExceeded": "the EC2 Instance Connect Endpoint quota is reached (one per VPC; 5 per account and "
    "Region by default, see Service Quotas)",
}
QUOTA_KINDS = {"ResourceLimitExceeded": "endpoint-quota"}
NEEDS_MET = ("pass", "fixed", "would-fix")  # a check another one NEEDS lets it be fixed (or planned) in these
# Why fixes were held, by the `held` of the Deadline (or DeadlineExceeded) that stopped them; "throttled": a call
# throttled until the target's time ran out (aws/retries.ThrottledOutOfTime).
HELD = {
    "out-of-time": "out of time in this round",
    "interrupted": "the run was interrupted",
    "throttled": "throttled by AWS until its time in this round ran out",
}
# Only the documented form: date.fromisoformat also takes 20260101 or 2026-W01-1, which must keep the exclusion.
_YYYY_MM_DD = re.compile(r"\d{4}-\d{2}-\d{2}")


class InstanceProgress(Protocol):
    """Who follows a scan instance by instance (the CLI's progress bar)."""

    def found(self, instances: int) -> None:
        """A target's opted-in instances were gathered."""

    def checked(self) -> None:
        """One instance was decided and, in remediate mode, acted on."""


@dataclass
class TargetResult:
    """What one (account, region) scan produced: per-instance outcomes and target-level actions or error.

    `incomplete`: the time budget ran out before every fix was made; the fixes not made are held (reported as
    `fail`, "out of time") and the next round of the worker re-gathers and continues.
    """

    region: str
    outcomes: list[InstanceOutcome] = field(default_factory=list)
    actions: list[ActionRecord] = field(default_factory=list)
    error: str | None = None
    account_id: str = ""
    incomplete: bool = False
    notes: list[str] = field(default_factory=list)  # what a person should know about the target (not an error)

    @property
    def status(self) -> str:
        return "error" if self.error else "incomplete" if self.incomplete else "ok"


def exclusion(instance: Instance, today: date) -> str | None:
    """Why the instance is excluded today, or None. An unreadable end date keeps the exclusion (safe side)."""
    reason = instance.tag(EXCLUDE_TAG)
    until = instance.tag(EXCLUDE_UNTIL_TAG)
    if reason is None and until is None:
        return None
    reason = reason or "excluded (no reason given)"
    if until is None:
        return reason
    try:
        end = date.fromisoformat(until) if _YYYY_MM_DD.fullmatch(until) else None
    except ValueError:
        end = None
    if end is None:
        return f"{reason}; {EXCLUDE_UNTIL_TAG}={until!r} is not a YYYY-MM-DD date, so the exclusion stands"
    return None if today > end else f"{reason} (until {end.isoformat()})"


def evaluate_instance(instance: Instance, ctx: CheckContext, today: date) -> InstanceOutcome:
    """Decide: run every check (pure) on one instance."""
    outcome = InstanceOutcome(
        instance.instance_id,
        ctx.snapshot.region,
        instance.vpc_id,
        account_id=ctx.snapshot.account_id,
        name=instance.tag("Name"),
        tags={key: value for key in ctx.settings.owner_tags if (value := instance.tag(key)) is not None},
    )
    outcome.connect_path = connect_path(instance, ctx)
    outcome.excluded_reason = exclusion(instance, today)
    if outcome.excluded_reason:
        return outcome
    outcome.error = tag_error(instance)
    if outcome.error:  # a connect-path tag eic-guard cannot read: nothing is checked, nothing changed
        return outcome
    for check in ALL_CHECKS:
        if outcome.connect_path not in getattr(check, "PATHS", (PUBLIC, ENDPOINT)):
            continue
        try:
            result = outcome.checks[check.ID] = check.evaluate(instance, ctx)
        except Exception as exc:  # noqa: BLE001 - a check bug must not hide the other checks
            logger.exception("check failed", extra={"instance_id": instance.instance_id, "check": check.ID})
            result = outcome.checks[check.ID] = CheckResult("error", f"{type(exc).__name__}: {exc}", kind="check-bug")
        outcome.warnings.extend(result.warnings)
    return outcome


def blocking_checks(outcome: InstanceOutcome) -> list[str]:
    """The unfixable network prerequisites that fail (or could not be read) for this instance."""
    return [
        check_id
        for check_id in BLOCKING_CHECKS
        if (result := outcome.checks.get(check_id)) is not None
        and result.status in ("fail", "error")
        and result.fix is None
    ]


def hold_blocked_fixes(outcome: InstanceOutcome) -> None:
    """Drop every fix of an instance whose network path eic-guard cannot fix: its fixable checks stay `fail`."""
    blocking = blocking_checks(outcome)
    if not blocking:
        return
    _hold_fixes(outcome, f"not fixed: blocked by {', '.join(blocking)}", blocked_by=",".join(blocking))


def _hold_fixes(outcome: InstanceOutcome, note: str, **facts: str) -> None:
    """Make none of the instance's fixes: each fixable check stays `fail`, its reason and facts saying why."""
    for check_id, result in outcome.checks.items():
        if result.status == "fail" and result.fix is not None:
            outcome.checks[check_id] = replace(
                result, reason=f"{result.reason}; {note}", fix=None, facts=result.with_facts(**facts)
            )


def remediate_instance(instance: Instance, outcome: InstanceOutcome, remediator: Remediator) -> bool:
    """Act: run the fixes of the failing checks in check order; a failure is recorded, never raised.

    Returns False when the invocation's time ran out on the way: the fixes not made are held for the next round.
    """
    finished = _run_fixes(instance, outcome, remediator)
    _unfixed_while_needs_fail(outcome)
    return finished


def _unfixed_while_needs_fail(outcome: InstanceOutcome) -> None:
    """A check that passes only with another (`NEEDS`: endpoint-ssh-ingress and endpoint-ssh-egress need the VPC's
    endpoint, endpoint-present) is not fixed by its own change while that one is neither passing nor fixed, e.g. the
    endpoint's creation failed: its change was made (the actions say so) but no endpoint reaches the instance, so it
    stays `fail` (docs/architecture.md §13). Likewise a pass on the strength of that planned change (fact `planned`:
    network-acl on the endpoint eic-guard creates) becomes the check's `unplanned` failure."""
    for check_id, result in list(outcome.checks.items()):
        planned = result.status == "pass" and result.fact("planned") == "true"
        if result.status not in ("fixed", "would-fix") and not planned:
            continue
        unmet = {
            needed: found.status
            for needed in getattr(CHECKS_BY_ID[check_id], "NEEDS", ())
            if (found := outcome.checks.get(needed)) is not None and found.status not in NEEDS_MET
        }
        if not unmet:
            continue
        waiting = ", ".join(f"{needed} is {status}" for needed, status in unmet.items())
        if planned:
            outcome.checks[check_id] = CHECKS_BY_ID[check_id].unplanned(result, waiting)
            continue
        change = "was made" if result.status == "fixed" else "is planned"
        outcome.checks[check_id] = replace(
            result,
            status="fail",
            reason=f"{result.reason}; not fixed: its change {change} (see the actions), but {waiting}",
            facts=result.with_facts(waiting_for=",".join(unmet), change=change.split()[-1]),
        )


def _run_fixes(instance: Instance, outcome: InstanceOutcome, remediator: Remediator) -> bool:
    for check_id, result in list(outcome.checks.items()):
        if result.status != "fail" or result.fix is None:
            continue
        try:
            CHECKS_BY_ID[check_id].remediate(result.fix, instance, remediator, outcome.actions)
        except DeadlineExceeded as exc:
            hold_for_next_round(outcome, exc.held)
            return False
        except Exception as exc:  # noqa: BLE001 - one instance's failure never aborts the run
            code = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
            detail = f"{code}: {exc}" if isinstance(exc, ClientError) else str(exc)
            outcome.actions.append(ActionRecord(result.fix.action, result.fix.resource, "failed", detail))
            outcome.checks[check_id] = _after_failed_fix(result, exc, code)
            logger.warning(
                "remediation failed", extra={"instance_id": instance.instance_id, "check": check_id, "error_code": code}
            )
            if code in VANISHED_CODES:
                outcome.error = outcome.checks[check_id].reason
                return True  # nothing else can be done to an instance that is gone
            continue
        outcome.checks[check_id] = replace(result, status="would-fix" if remediator.dry_run else "fixed", fix=None)
    return True


def _after_failed_fix(result: CheckResult, exc: Exception, code: str) -> CheckResult:
    """What a check says once its fix failed: `fail` when eic-guard may not or cannot fix it, else `error`."""
    if isinstance(exc, RemediationRefused):
        return replace(
            result, reason=f"{result.reason}; cannot fix: {exc}", fix=None, facts=result.with_facts(refused=str(exc))
        )
    if code in VANISHED_CODES:
        return CheckResult("error", f"instance vanished during the run ({code})", kind="instance-vanished")
    if code in QUOTA_CODES:
        return replace(
            result,
            reason=f"{result.reason}; cannot fix: {QUOTA_REASONS.get(code, 'an EC2 quota is reached')} ({code})",
            fix=None,
            kind=QUOTA_KINDS.get(code, "sg-quota"),
            facts=result.with_facts(error_code=code),
        )
    return replace(
        result,
        status="error",
        reason=f"{result.reason}; fix failed: {code}",
        fix=None,
        facts=result.with_facts(fix_failed=code),
    )


def hold_for_next_round(outcome: InstanceOutcome, held: str = DeadlineExceeded.held) -> None:
    """Out of time (or interrupted): keep the fixes for the next round or run, which re-gathers and makes them (all
    fixes are idempotent)."""
    _hold_fixes(outcome, f"not fixed: {HELD[held]}", held=held)


def scan_target(
    ec2: Any,
    account_id: str,
    region: str,
    settings: Settings,
    ip_ranges: IpRanges,
    today: date,
    deadline: Deadline | None = None,
    instance_ids: Sequence[str] | None = None,
    progress: InstanceProgress | None = None,
) -> TargetResult:
    """Scan one (account, region): gather once, evaluate every instance, then remediate or plan.

    With a `deadline`, no new fix starts once the worker's time is inside its reserve (or the CLI run was
    interrupted): the result is `incomplete`. `progress` hears of every instance once it is done.
    """
    snapshot = gather(ec2, account_id, region, settings, instance_ids)
    if progress is not None:
        progress.found(len(snapshot.instances))
    ctx = CheckContext(snapshot, ip_ranges.for_region(region), settings)
    remediator = Remediator(Ec2Gateway(ec2, region, dry_run=not settings.remediate), ctx)
    result = TargetResult(region, account_id=account_id, notes=list(snapshot.notes))
    for instance in snapshot.instances:
        outcome = evaluate_instance(instance, ctx, today)
        if not outcome.excluded_reason:
            hold_blocked_fixes(outcome)
        result.outcomes.append(outcome)
    remediator.expect_attachments(
        [
            check.fix.resource
            for outcome in result.outcomes
            for check_id in ATTACH_CHECKS
            if (check := outcome.checks.get(check_id)) is not None and check.status == "fail" and check.fix is not None
        ]
    )
    for instance, outcome in zip(snapshot.instances, result.outcomes, strict=True):
        if not outcome.excluded_reason:
            _act(instance, outcome, remediator, deadline, result)
        if progress is not None:
            progress.checked()
    if settings.remediate_public_ip and not result.incomplete:  # out of time: the next round releases them
        result.actions.extend(_release_orphan_addresses(snapshot, remediator, instance_ids))
    return result


def _act(
    instance: Instance,
    outcome: InstanceOutcome,
    remediator: Remediator,
    deadline: Deadline | None,
    result: TargetResult,
) -> None:
    """Make (or plan) one instance's fixes, unless the time is up: then they are held for the next round."""
    if deadline is not None and not remediator.dry_run and deadline.remaining() <= 0:
        result.incomplete = True
        hold_for_next_round(outcome, deadline.held)
    elif not remediate_instance(instance, outcome, remediator):
        result.incomplete = True


def _release_orphan_addresses(
    snapshot, remediator: Remediator, instance_ids: Sequence[str] | None = None
) -> list[ActionRecord]:
    """Release eic-guard's Elastic IPs whose instance is gone, no longer opted in, or no longer carries the admin's
    eic-guard:public-ip=allowed tag (the address was only ever given because of it).

    A scan of given instances (an event-driven check) judges only the addresses of those instances: the others'
    instances were not read, which says nothing about them.
    """
    keeping = [i for i in snapshot.instances if public_ip_allowed(i)]
    scanned = {i.instance_id for i in keeping}
    scanned_enis = {n.eni_id for i in keeping for n in i.network_interfaces}
    asked = set(instance_ids) if instance_ids is not None else None
    records = []
    for address in snapshot.managed_addresses:
        if address.instance_id in scanned or address.network_interface_id in scanned_enis:
            continue
        if asked is not None and address.instance_id not in asked:
            continue
        try:
            records.append(remediator.gateway.release_address(address))
        except (ClientError, BotoCoreError) as exc:
            code = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
            records.append(ActionRecord("release-elastic-ip", address.allocation_id, "failed", code))
    return records
