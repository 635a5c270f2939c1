"""The event-driven check of one SQS batch (docs/architecture.md §10): each record's EventBridge event → the affected
instances, coalesced per (account, region) into ONE `scan_target(..., instance_ids=...)`, with the nightly run's
engine, mode and safety rules; then the quiet publishing (changes.publish).

Each record ends in one of three ways:
- checked: its instances were checked (an instance that no longer exists, or is not opted in, is simply absent);
- ignored (success, nothing to do): made by eic-guard itself (no loops), a failed API call, a state or a tag that needs
  no check, a region or the own account outside the configured scope;
- failed (a batch item failure, so SQS delivers it again and, after maxReceiveCount, to the dead-letter queue):
  a malformed event, an event from a foreign account, or its (account, region) could not be checked (the account
  cannot be entered, AWS refused a read, the ip-ranges state cannot be read, or the time budget ran out).
Each bad record is one clear log line; the good records of the same batch are processed all the same.

Member accounts' events reach this function through the central event bus (member/template.yaml forwards them; the
bus admits only the organization or the listed accounts). An event is admitted from this account, from an account
EIC_GUARD_ACCOUNTS lists, or, with EIC_GUARD_ACCOUNTS=organization, from an ACTIVE account of the organization
(Organizations ListAccounts, cached for ORGANIZATION_CACHE_SECONDS per warm container): a forged or misrouted event from
anywhere else fails. Every call that opted an instance in is announced (changes/opt_in.py).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..aws.credentials import AccountClients
from ..budget import FINISH_RESERVE, Deadline
from ..engine import TargetResult, scan_target
from ..events import InvalidEvent
from ..fanout.targets import ORGANIZATION, Target, organization_accounts, parse_accounts
from ..fanout.worker import target_error, to_document
from ..observability import logger
from ..outputs.publish import tag_entries
from ..outputs.report import build_report, instance_entry
from ..outputs.security_hub import findings_enabled, publish_target_findings
from ..ranges.catch_up import UNREADABLE_STATE, state_store
from ..ranges.ip_ranges import IpRanges
from ..settings import Settings
from .actors import OwnRoles
from .events import ChangeEvent, parse_change
from .opt_in import announce_opt_ins
from .publish import publish_check, record_check, record_events
from .resolve import affected_instances

# Seconds of the invocation kept when the check stops sending work calls (template Timeout: 120 s suggested): one
# call hanging until its timeouts (25 s) plus the report, the alert and the status tags. A batch out of time fails
# its records, which SQS delivers again (every fix is idempotent).
ON_CHANGE_RESERVE = 40.0
# How long a warm container trusts its copy of the organization's ACTIVE accounts (events from a new account fail and
# are delivered again until then; a removed account's events are refused by the bus policy and the member role first).
ORGANIZATION_CACHE_SECONDS = 300.0
_ORGANIZATION: tuple[float, frozenset[str]] | None = None  # (when read, the ACTIVE account ids)


class RecordFailed(Exception):
    """Raised by `ChangeBatch.settle` for a record that failed: Powertools lists it in batchItemFailures."""


@dataclass
class ChangeBatch:
    """What became of each record of one batch (by SQS message id), and what the check published."""

    run_id: str
    failed: dict[str, str] = field(default_factory=dict)  # message id -> reason
    ignored: dict[str, str] = field(default_factory=dict)  # message id -> why nothing was to be done
    checked: dict[str, list[str]] = field(default_factory=dict)  # message id -> opted-in instances checked
    opt_ins: dict[str, int] = field(default_factory=dict)  # what changes.opt_in announced
    summary: dict[str, int] | None = None
    report_key: str | None = None
    alerted: bool = False

    def fail(self, message_id: str, reason: str, change: ChangeEvent | None = None) -> None:
        self.failed[message_id] = reason
        logger.warning("change event failed", extra={"message_id": message_id, "reason": reason, **_about(change)})

    def ignore(self, message_id: str, why: str, change: ChangeEvent) -> None:
        self.ignored[message_id] = why
        logger.info("change event ignored", extra={"message_id": message_id, "why": why, **_about(change)})

    def settle(self, record: Any) -> None:
        """Powertools' record handler (the work is done for the whole batch before): raise for a failed record."""
        reason = self.failed.get(record.message_id)
        if reason is not None:
            raise RecordFailed(reason)


def _about(change: ChangeEvent | None) -> dict[str, str]:
    if change is None:
        return {}
    return {"event_id": change.event_id, "event": change.name, "account_id": change.account_id, "region": change.region}


def check_changes(
    event: Any,
    settings: Settings,
    clients: Any,
    run_id: str,
    *,
    deadline: Deadline | None = None,
    own_roles: OwnRoles | None = None,
    ip_ranges: IpRanges | None = None,
    now: datetime | None = None,
) -> ChangeBatch:
    """Check the instances an SQS batch of EC2 change events affects; never raises for one record's problem.

    `ip_ranges` defaults to the stored state's prefixes (never downloaded per event).
    """
    started = now or datetime.now(UTC)
    own_roles = own_roles or OwnRoles.from_env(settings.member_role_name)
    batch = ChangeBatch(run_id)
    records = _records(event)
    accounts = AccountClients(clients, batch.run_id, settings.member_role_name)
    admitted: list[ChangeEvent] = []
    pending = _admit(records, settings, own_roles, clients, batch, admitted)
    if pending:
        ranges = ip_ranges or _stored_ranges(clients, settings, pending, batch)
        if ranges is not None:
            _check(pending, settings, clients, accounts, ranges, started, deadline, batch)
    batch.opt_ins = announce_opt_ins(clients, accounts.for_account, settings, admitted, started)
    record_events(len(records), len(batch.ignored), len(batch.failed))
    logger.info(
        "on-change batch done",
        extra={
            "records": len(records),
            "checked": batch.checked,
            "ignored": len(batch.ignored),
            "failed": len(batch.failed),
            "summary": batch.summary,
            "report_key": batch.report_key,
        },
    )
    return batch


def _records(event: Any) -> list[tuple[str, Any]]:
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) and r.get("messageId") for r in records):
        raise InvalidEvent("not an SQS event: Records[].messageId missing")
    return [(r["messageId"], r.get("body")) for r in records]


Pending = dict[Target, list[tuple[str, ChangeEvent]]]


def _admit(
    records: list[tuple[str, Any]],
    settings: Settings,
    own_roles: OwnRoles,
    clients: Any,
    batch: ChangeBatch,
    admitted: list[ChangeEvent],
) -> Pending:
    """Parse every record; the ones to check, grouped by (account, region). The others are failed or ignored.
    `admitted` receives every change from an admitted account that eic-guard did not make itself (for opt_in)."""
    pending: Pending = defaultdict(list)
    accounts = parse_accounts(settings.accounts)
    own_account = clients.account_id()
    for message_id, body in records:
        try:
            change = parse_change(body, settings.tag_key, settings.tag_value)
        except InvalidEvent as exc:
            batch.fail(message_id, f"malformed event: {exc}")
            continue
        refused = None if change.account_id == own_account else _foreign(change.account_id, accounts, clients)
        if refused:
            batch.fail(message_id, refused, change)
            continue
        if not own_roles.made(change.actor):
            admitted.append(change)
        why = _why_ignored(change, settings, own_roles, accounts)
        if why:
            batch.ignore(message_id, why, change)
            continue
        pending[Target(change.account_id, change.region)].append((message_id, change))
    return pending


def _foreign(account_id: str, accounts: Any, clients: Any) -> str | None:
    """Why an event from another account is not admitted (None: it is one of the run's accounts)."""
    if isinstance(accounts, tuple):
        return None if account_id in accounts else f"foreign account {account_id}: not in EIC_GUARD_ACCOUNTS"
    if accounts != ORGANIZATION:
        return f"foreign account {account_id}: not in EIC_GUARD_ACCOUNTS"
    try:
        members = organization_members(clients)
    except (ClientError, BotoCoreError) as exc:
        return f"the organization's accounts cannot be listed to admit {account_id}: {exc}"
    return None if account_id in members else f"foreign account {account_id}: not an ACTIVE account of the organization"


def organization_members(clients: Any, now: float | None = None) -> frozenset[str]:
    """The organization's ACTIVE accounts, read at most once per ORGANIZATION_CACHE_SECONDS in a warm container."""
    global _ORGANIZATION
    moment = time.monotonic() if now is None else now
    if _ORGANIZATION is None or moment - _ORGANIZATION[0] >= ORGANIZATION_CACHE_SECONDS:
        plan = organization_accounts(clients.client("organizations"))
        _ORGANIZATION = (moment, frozenset(plan.accounts))
    return _ORGANIZATION[1]


def _why_ignored(change: ChangeEvent, settings: Settings, own_roles: OwnRoles, accounts: Any) -> str | None:
    if own_roles.made(change.actor):
        return f"made by eic-guard ({change.actor.arn})"
    if change.skip:
        return change.skip
    if change.region not in settings.regions:
        return f"region {change.region} is not in EIC_GUARD_REGIONS"
    if isinstance(accounts, tuple) and change.account_id not in accounts:
        return f"account {change.account_id} (this one) is not in EIC_GUARD_ACCOUNTS"
    return None


def _stored_ranges(clients: Any, settings: Settings, pending: Pending, batch: ChangeBatch) -> IpRanges | None:
    """The EIC prefixes of the stored ip-ranges state; None (every pending record failed) when it cannot be read."""
    try:
        store = state_store(clients, settings)
        state = store.load() if store is not None else None
    except (ClientError, BotoCoreError, *UNREADABLE_STATE) as exc:
        problem = f"the ip-ranges state cannot be read: {exc}"
    else:
        if state is None or state.corrupt is None:
            stored = state.as_ip_ranges() if state is not None else None
            return stored or IpRanges.none_available(
                "no ip-ranges state stored yet (the nightly run or a refresh stores it)"
            )
        # read only here: the nightly run or the next notification rebuilds it; the records are retried until then
        problem = f"the ip-ranges state is corrupt ({state.corrupt.reason}): the nightly run or a refresh rebuilds it"
    for records in pending.values():
        for message_id, change in records:
            batch.fail(message_id, problem, change)
    return None


def _check(
    pending: Pending,
    settings: Settings,
    clients: Any,
    accounts: AccountClients,
    ranges: IpRanges,
    started: datetime,
    deadline: Deadline | None,
    batch: ChangeBatch,
) -> None:
    documents = [
        _check_target(target, pending[target], accounts, settings, ranges, started, deadline, batch)
        for target in sorted(pending)
    ]
    if deadline is not None:
        deadline.finishing(FINISH_RESERVE)
    checked = [d for d in documents if d is not None]
    if not checked:
        return
    finished = datetime.now(UTC)
    report = build_report(
        run_id=batch.run_id,
        mode=settings.mode,
        account_id=clients.account_id(),
        regions=sorted({d["region"] for d in checked}),
        started=started,
        finished=finished,
        ip_ranges=ranges,
        targets=checked,
    )
    record_check(report, finished)
    published = publish_check(clients, settings, report)
    batch.summary = report.summary.model_dump()
    batch.report_key, batch.alerted = published["report_key"], published["alerted"]


def _check_target(
    target: Target,
    records: list[tuple[str, ChangeEvent]],
    accounts: AccountClients,
    settings: Settings,
    ranges: IpRanges,
    started: datetime,
    deadline: Deadline | None,
    batch: ChangeBatch,
) -> dict | None:
    """Resolve and check one (account, region); its document, or None when there is nothing to report (no instance
    to check, or the target could not be checked)."""
    changes = [change for _, change in records]
    result, affected = _scan(target, changes, accounts, settings, ranges, started, deadline)
    instance_ids = sorted(set().union(*affected))
    security_hub = None
    if findings_enabled(settings) and result.error is None and instance_ids:
        # Only these instances' findings: the others were not checked (an id asked about and absent, i.e. gone or
        # no longer opted in, has its findings archived).
        entries = [instance_entry(o) for o in result.outcomes]
        security_hub = publish_target_findings(
            accounts.for_account,
            accounts.own.account_id(),
            target.account_id,
            target.region,
            settings,
            entries,
            run_id=batch.run_id,
            instance_ids=instance_ids,
            deadline=deadline,
        )
    document = to_document(result, "apply", 1, None, security_hub)
    _settle_records(records, affected, result, document, batch)
    if result.error is not None or not instance_ids:
        # A target that could not be checked is its records' failure: SQS delivers them again and, in the end, the
        # dead-letter queue keeps them (its alarm is the alert), rather than one alert per delivery.
        return None
    if settings.remediate and settings.tag_instances and document["instances"]:
        member = accounts.for_account(target.account_id)
        tag_entries(member.ec2, document["instances"], started.strftime("%Y-%m-%dT%H:%MZ"))
    return document


def _scan(
    target: Target,
    changes: list[ChangeEvent],
    accounts: AccountClients,
    settings: Settings,
    ranges: IpRanges,
    started: datetime,
    deadline: Deadline | None,
) -> tuple[TargetResult, list[set[str]]]:
    """The instances each change affects, then ONE scan of them all; a target that fails is the result's error."""
    result = TargetResult(target.region, account_id=target.account_id)
    affected: list[set[str]] = [set() for _ in changes]
    try:
        ec2 = accounts.for_account(target.account_id).ec2(target.region)
        affected = affected_instances(ec2, changes, settings)
        instance_ids = sorted(set().union(*affected))
        if instance_ids:
            today = started.date()
            result = scan_target(ec2, target.account_id, target.region, settings, ranges, today, deadline, instance_ids)
    except Exception as exc:  # noqa: BLE001 - one target's failure must not lose the batch's other records
        result.error = target_error(target, exc)
    return result, affected


def _settle_records(
    records: list[tuple[str, ChangeEvent]],
    affected: list[set[str]],
    result: TargetResult,
    document: dict,
    batch: ChangeBatch,
) -> None:
    if result.error or result.incomplete:
        reason = result.error or "out of time before every fix was made (delivered again: every fix is idempotent)"
        for message_id, change in records:
            batch.fail(message_id, f"{result.account_id}/{result.region} not checked: {reason}", change)
        return
    opted_in = {entry["instance_id"] for entry in document["instances"]}
    for (message_id, change), ids in zip(records, affected, strict=True):
        batch.checked[message_id] = sorted(ids & opted_in)
        logger.info(
            "change event checked",
            extra={"message_id": message_id, "instances": batch.checked[message_id], **_about(change)},
        )
