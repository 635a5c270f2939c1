"""Importing one target's findings into Security Hub (docs/architecture.md §11): one ASFF finding per (instance, check)
that does not pass, into the instance's own account and region with BatchImportFindings.

Who imports: AWS requires the caller of BatchImportFindings, with the default product ARN, to be the finding's
account ("the identifier of the account that you are calling BatchImportFindings from needs to be the same as the
AwsAccountId attribute"), so each target's worker imports with that target's clients (a member account's role).

What it imports, per target and run (both modes: a finding describes the instance's state, and report mode is how
an auditing deployment runs; the import writes to Security Hub only, never to EC2):
- FAILED (Workflow NEW, RecordState ACTIVE) for each check that fails, would be fixed, or errs;
- WARNING (Workflow NEW) for each warning code an instance has (docs/architecture.md §5b, §11: "Warnings become
  INFORMATIONAL/LOW findings"), Id `eic-guard/<account>/<region>/<instance>/warning:<code>`: the check passes, so not
  FAILED, but it passes through a rule wider than EC2 Instance Connect needs. Compliance WARNING is one of ASFF's four
  values (PASSED | WARNING | FAILED | NOT_AVAILABLE); Severity LOW for SSH open to the whole internet, INFORMATIONAL for
  a range merely wider than the EIC prefix (the most eic-guard allows for the real exposure, less for the lesser one).
  It is kept in the ledger like a check's finding, resolved once the instance is scanned without it, and archived with
  the instance. An instance one of whose checks errs keeps its open warning findings;
- the closing imports of resolve.py (PASSED, then Workflow RESOLVED; ARCHIVED).

Change of state: an open finding whose content is unchanged is not imported again, so a second identical scan makes
no BatchImportFindings call at all (each import is an ingestion event, billed and sent to EventBridge). It is
refreshed once REFRESH_AFTER has passed since its last import, because Security Hub deletes an active finding 90
days after its last UpdatedAt (https://docs.aws.amazon.com/securityhub/latest/userguide/securityhub-findings.html).

A failed import or resolution (an API error, or a finding in FailedFindings/UnprocessedFindings) never fails the
scan: it is counted, logged and kept out of the ledger's changes, so the next run tries it again.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from ...aws.gateway import error_code
from ...budget import Deadline
from ...observability import logger, metrics
from ...settings import Settings
from ..report import WARNING_CHECKS, split_warning
from .build import (
    FINDING_BYTES,
    NOT_PASSING,
    OPEN_STATES,
    WARNING_PREFIX,
    FindingScope,
    PlannedFinding,
    asff_time,
    batches,
    build_finding,
    describe,
    finding_bytes,
)
from .ledger import Ledger, LedgerChanges, LedgerUnavailable, ledger_for
from .resolve import archived, mark_resolved, resolved_check, resolved_warnings

REFRESH_AFTER = timedelta(days=30)  # well inside Security Hub's 90 days, with room for missed runs
IMPORT_FAILURES_METRIC = "SecurityHubImportFailures"
MAX_ERRORS = 10  # distinct error messages kept in a target's document
# IAM, for the role acting in the target's account (central worker role for its own account, member role otherwise),
# on arn:<partition>:securityhub:<region>:<account>:product/<account>/default.
IMPORT_PERMISSIONS = ("securityhub:BatchImportFindings",)


# ---- deciding what to import (pure) -------------------------------------------------------------------------------
@dataclass
class FindingsPlan:
    findings: list[PlannedFinding] = field(default_factory=list)
    unchanged: int = 0  # open findings whose content is unchanged and fresh: not imported again


def plan_findings(
    scope: FindingScope,
    entries: Iterable[dict],
    open_findings: dict[str, dict],
    *,
    now: datetime,
    run_id: str,
    instance_ids: Collection[str] | None = None,
    resolve: bool = True,
) -> FindingsPlan:
    """The imports one scan calls for, from its report instance entries and the ledger's open findings.

    `instance_ids`: the scan covered only these instances (an event-driven check), so only their findings may be
    resolved or archived. `resolve=False`: the ledger could not be read, so only the failing checks are imported.
    """
    plan = FindingsPlan()
    stamp = asff_time(now)
    scanned: dict[str, dict] = {}
    open_warnings: dict[str, list[str]] = {}  # instance id -> the warning codes of its open findings
    for known in open_findings.values():
        if known["check_id"].startswith(WARNING_PREFIX):
            open_warnings.setdefault(known["instance_id"], []).append(known["check_id"].removeprefix(WARNING_PREFIX))
    for entry in entries:
        scanned[entry["instance_id"]] = entry
        if entry["verdict"] == "excluded":
            continue  # never checked: its open findings are archived below
        for check_id, check in entry["checks"].items():
            _plan_check(plan, scope, entry, check_id, check, open_findings, stamp, now, run_id)
        _plan_warnings(
            plan, scope, entry, open_findings, open_warnings.get(entry["instance_id"], []), stamp, now, run_id
        )
    if resolve:
        plan.findings.extend(archived(scope, scanned, open_findings, stamp, run_id, instance_ids))
    return plan


def _plan_check(
    plan: FindingsPlan,
    scope: FindingScope,
    entry: dict,
    check_id: str,
    check: dict,
    open_findings: dict[str, dict],
    stamp: str,
    now: datetime,
    run_id: str,
) -> None:
    instance_id = entry["instance_id"]
    known = open_findings.get(scope.finding_id(instance_id, check_id))
    status, reason = check["status"], check.get("reason")
    if status not in NOT_PASSING:
        if known is not None:  # passes now, was fixed, or no longer applies: resolve
            plan.findings.append(resolved_check(scope, entry, check_id, check, known, stamp, run_id))
        return
    planned = build_finding(
        scope,
        instance_id,
        check_id,
        "FAILED",
        status=status,
        description=describe(status, reason),
        created_at=known["created_at"] if known else stamp,
        updated_at=stamp,
        run_id=run_id,
        guidance=check.get("guidance"),
        name=entry.get("name"),
        tags=entry.get("tags"),
        connect_path=entry.get("connect_path"),
    )
    _add_unless_unchanged(plan, planned, known, now)


def _add_unless_unchanged(plan: FindingsPlan, planned: PlannedFinding, known: dict | None, now: datetime) -> None:
    """An open finding imported with the same content less than REFRESH_AFTER ago is not imported again."""
    if known is not None and known.get("fingerprint") == planned.fingerprint and not _due(known, now):
        plan.unchanged += 1
        return
    plan.findings.append(planned)


def _due(known: dict, now: datetime) -> bool:
    """An open finding last imported REFRESH_AFTER ago (or at an unreadable time) is imported again."""
    try:
        imported = datetime.fromisoformat(known["imported_at"].replace("Z", "+00:00"))
    except (KeyError, TypeError, ValueError):
        return True
    return now - imported >= REFRESH_AFTER


def _plan_warnings(
    plan: FindingsPlan,
    scope: FindingScope,
    entry: dict,
    open_findings: dict[str, dict],
    open_codes: list[str],
    stamp: str,
    now: datetime,
    run_id: str,
) -> None:
    """One WARNING finding per warning code of the instance (two groups open to the world are one finding naming
    both), and PASSED for each code it had an open finding for and no longer has, unless one of its checks erred."""
    instance_id = entry["instance_id"]
    who = {"name": entry.get("name"), "tags": entry.get("tags"), "connect_path": entry.get("connect_path")}
    by_code: dict[str, list[str]] = {}
    for warning in entry.get("warnings") or ():
        code, text = split_warning(warning)
        by_code.setdefault(code or "unknown", []).append(text)
    for code, texts in by_code.items():
        check = entry["checks"].get(WARNING_CHECKS.get(code, ""), {})
        known = open_findings.get(scope.finding_id(instance_id, WARNING_PREFIX + code))
        planned = build_finding(
            scope,
            instance_id,
            WARNING_PREFIX + code,
            "WARNING",
            status=check.get("status", "warning"),
            description="; ".join(texts),
            created_at=known["created_at"] if known else stamp,
            updated_at=stamp,
            run_id=run_id,
            **who,
        )
        _add_unless_unchanged(plan, planned, known, now)
    gone = set(open_codes) - set(by_code)
    plan.findings.extend(resolved_warnings(scope, entry, open_findings, gone, stamp, run_id))


# ---- importing ----------------------------------------------------------------------------------------------------
@dataclass
class SyncOutcome:
    """What one target's sync did: the `security_hub` entry of its result document."""

    imported: int = 0  # FAILED and WARNING findings imported: new, changed, or refreshed
    resolved: int = 0  # PASSED findings imported and marked RESOLVED (BatchUpdateFindings)
    archived: int = 0  # ARCHIVED findings imported
    unchanged: int = 0  # open findings not imported again: same content, imported less than REFRESH_AFTER ago
    failed: int = 0  # findings whose import failed (tried again next run)
    calls: int = 0  # BatchImportFindings and BatchUpdateFindings calls
    errors: list[str] = field(default_factory=list)
    ledger: str | None = None

    def error(self, message: str) -> None:
        if message not in self.errors and len(self.errors) < MAX_ERRORS:
            self.errors.append(message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "imported": self.imported,
            "resolved": self.resolved,
            "archived": self.archived,
            "unchanged": self.unchanged,
            "failed": self.failed,
            "calls": self.calls,
            "errors": list(self.errors),
            "ledger": self.ledger,
        }


def _message(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return f"{error_code(exc)}: {exc.response.get('Error', {}).get('Message', exc)}"
    return f"{type(exc).__name__}: {exc}"


def import_findings(securityhub: Any, planned: list[PlannedFinding], outcome: SyncOutcome) -> list[PlannedFinding]:
    """BatchImportFindings in batches within Security Hub's limits (BATCH_LIMIT findings, BATCH_BYTES); a finding
    over FINDING_BYTES is refused here, named, never sent. Returns the findings Security Hub accepted."""
    accepted: list[PlannedFinding] = []
    sizes = {id(p): finding_bytes(p.finding) for p in planned}
    for oversized in [p for p in planned if sizes[id(p)] > FINDING_BYTES]:
        outcome.failed += 1
        outcome.error(f"finding of {sizes[id(oversized)]} bytes is over Security Hub's 240 KB ({oversized.finding_id})")
    sendable = [p for p in planned if sizes[id(p)] <= FINDING_BYTES]
    for batch in batches(sendable, weight=lambda p: sizes[id(p)]):
        outcome.calls += 1
        try:
            answer = securityhub.batch_import_findings(Findings=[p.finding for p in batch])
        except (ClientError, BotoCoreError) as exc:
            outcome.failed += len(batch)
            outcome.error(_message(exc))
            continue
        refused = {f.get("Id"): f for f in answer.get("FailedFindings") or ()}
        if answer.get("FailedCount", 0) > len(refused):  # refused without saying which: none counts as imported
            outcome.failed += len(batch)
            outcome.error(f"{answer['FailedCount']} of {len(batch)} findings refused without their ids")
            continue
        for planned_finding in batch:
            failure = refused.get(planned_finding.finding_id)
            if failure is None:
                accepted.append(planned_finding)
                continue
            outcome.failed += 1
            outcome.error(f"{failure.get('ErrorCode')}: {failure.get('ErrorMessage')} ({planned_finding.finding_id})")
    return accepted


def sync_findings(
    securityhub: Any,
    ledger: Ledger,
    scope: FindingScope,
    entries: Iterable[dict],
    *,
    run_id: str,
    now: datetime | None = None,
    instance_ids: Collection[str] | None = None,
) -> SyncOutcome:
    """Import one target's findings and record the open ones; AWS failures are counted in the outcome, not raised.

    `entries`: the scan's report instance entries (outputs.report.instance_entry). `instance_ids`: the scan covered
    only these instances (an event-driven check), so the other instances' findings are left as they are.
    """
    now = now or datetime.now(UTC)
    outcome = SyncOutcome(ledger=ledger.location)
    try:
        open_findings, resolve = ledger.load(), True
    except LedgerUnavailable as exc:
        open_findings, resolve = {}, False
        outcome.error(f"{exc}: failing checks imported, but no finding resolved or archived in this run")
    plan = plan_findings(
        scope, entries, open_findings, now=now, run_id=run_id, instance_ids=instance_ids, resolve=resolve
    )
    outcome.unchanged = plan.unchanged
    changes = LedgerChanges()
    accepted = import_findings(securityhub, plan.findings, outcome)
    for planned in accepted:
        if planned.state in OPEN_STATES:
            outcome.imported += 1
            changes.opened[planned.finding_id] = {
                "instance_id": planned.instance_id,
                "check_id": planned.check_id,
                "created_at": planned.finding["CreatedAt"],
                "imported_at": planned.finding["UpdatedAt"],
                "fingerprint": planned.fingerprint,
            }
        elif planned.state == "ARCHIVED":
            outcome.archived += 1
            changes.closed.add(planned.finding_id)
    passed = [p for p in accepted if p.state == "PASSED"]
    if passed:
        outcome.calls += len(list(batches(passed)))
        resolved, errors = mark_resolved(securityhub, passed)
        outcome.resolved += len(resolved)
        outcome.failed += len(passed) - len(resolved)
        for message in errors:
            outcome.error(message)
        changes.closed.update(p.finding_id for p in resolved)  # the others stay open: imported again next run
    if resolve:
        try:
            ledger.save(changes, now)
        except LedgerUnavailable as exc:
            outcome.error(str(exc))
    return outcome


def findings_enabled(settings: Settings) -> bool:
    return settings.security_hub_findings == "enabled"


def publish_target_findings(
    clients_for: Callable[[str], Any],
    own_account: str,
    account_id: str,
    region: str,
    settings: Settings,
    entries: list[dict],
    *,
    run_id: str,
    instance_ids: Collection[str] | None = None,
    now: datetime | None = None,
    deadline: Deadline | None = None,
) -> dict[str, Any]:
    """After a target's scan: import its findings with the target's own clients, keep the ledger with the central
    ones (`clients_for(own_account)`). Never raises: the findings never fail the scan they describe.

    A worker whose time is already inside its reserve (the scan ran out of time) imports nothing this round: the
    next round, or the next run, does (nothing is lost, the ledger is unchanged), and it is not a failure.
    """
    scope = FindingScope(account_id, region)
    if deadline is not None and deadline.remaining() <= 0:
        outcome = SyncOutcome()
        outcome.error("not imported: out of time in this round (the next round or run imports them)")
        _record(outcome, scope)
        return outcome.to_dict()
    try:
        securityhub = clients_for(account_id).client("securityhub", region)
        ledger = ledger_for(clients_for(own_account), settings, account_id, region)
        outcome = sync_findings(securityhub, ledger, scope, entries, run_id=run_id, now=now, instance_ids=instance_ids)
    except Exception as exc:  # noqa: BLE001 - a bug here must not cost the target its result
        logger.exception("security hub findings failed", extra={"account_id": account_id, "region": region})
        outcome = SyncOutcome()
        outcome.failed = sum(
            sum(1 for c in e["checks"].values() if c["status"] in NOT_PASSING) + len(e.get("warnings") or ())
            for e in entries
        )
        outcome.error(_message(exc))
    _record(outcome, scope)
    return outcome.to_dict()


def _record(outcome: SyncOutcome, scope: FindingScope) -> None:
    """One log line per target; the SecurityHubImportFailures metric when some import failed."""
    extra = {"account_id": scope.account_id, "region": scope.region, **outcome.to_dict()}
    if outcome.failed or outcome.errors:
        logger.warning("security hub findings not all imported", extra=extra)
    else:
        logger.info("security hub findings imported", extra=extra)
    if outcome.failed:
        count_import_failures(outcome.failed)


def count_import_failures(count: int) -> None:
    """EMF metric SecurityHubImportFailures (flushed by the worker handler's log_metrics)."""
    metrics.add_metric(name=IMPORT_FAILURES_METRIC, unit=MetricUnit.Count, value=count)
