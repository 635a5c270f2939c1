"""Alerts: what a run tells a person, and only what is new to them (issue 11, quiet alerts).

A scan's problems are its non-passing checks (of non-compliant and errored instances), its instances' warnings
and its targets that could not be scanned. Each problem has a fingerprint; the set of the last run's fingerprints
is remembered (deployed: an item of the state table; the CLI: `alerts-state.json` beside its state file). A run
alerts only on the problems whose fingerprint is new: a new problem, or a known instance now failing differently.
What persists is counted, and listed once a week (the digest). A run with nothing new sends nothing.

The state never costs a run its alert: a state that cannot be read is a run with nothing remembered (every problem
is alerted), and the state is written only once the alert is out, so an alert that could not be sent, or a state
that could not be written, means the next run alerts the same problems again rather than never.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError

from ..local_files import replace_file
from ..observability import logger
from ..settings import partition_of as region_partition
from .report import RESULT_LOST, Report

ALERT_LINES = 25  # problem lines in one alert; the rest is "… and N more" (the report has them all)
LOST_CHANGES_SHOWN = 5  # the changes of a target whose result was lost, named on its alert line
LINE_LIMIT = 1_000  # characters of one line (an AWS error can carry kilobytes of encoded detail)
MESSAGE_LIMIT = 256 * 1024 - 1024  # bytes: SNS Publish takes up to 256 KB (262,144 bytes); a margin for the rest
DIGEST_PERIOD = timedelta(days=7)  # what persists is listed again at most this often
# A fingerprint is 3 bytes naming its (account, region) target and 5 naming the problem in it: a target that
# cannot be scanned keeps its earlier problems remembered (they are not "resolved", and not new when it is back).
TARGET_BYTES, PROBLEM_BYTES = 3, 5
FINGERPRINT_BYTES = TARGET_BYTES + PROBLEM_BYTES
# 50,000 x 8 bytes = 400,000 bytes of binary attribute: DynamoDB's item limit is 400 KB (409,600 bytes, attribute
# names included), which leaves room for the item's other attributes. More problems than that are all alerted.
MAX_FINGERPRINTS = 50_000
ALERT_STATE_ITEM_ID = "alerts#scan"
ALERT_STATE_FILE = "alerts-state.json"
ALERT_STATE_SCHEMA = "eic-guard/alert-state/v1"
MAX_SCOPES = 32  # the CLI's file keeps the last run of this many (account, accounts, regions) scopes
SUBJECT_LIMIT = 99  # SNS Publish: ASCII, no line breaks or control characters, less than 100 characters
FAILING = ("fail", "would-fix", "error")
REFRESH_SUBJECT = "eic-guard: the ip-ranges refresh needs attention"
# Parts of an AWS error text that differ at every call for the same problem.
_VOLATILE = (
    re.compile(r"Encoded authorization failure message:\s*\S+", re.IGNORECASE),
    re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE),  # request ids
)
# Console hosts per partition; a partition without one (the isolated ones) gets the s3:// location.
CONSOLE_HOSTS = {
    "aws": "https://{region}.console.aws.amazon.com",
    "aws-cn": "https://console.amazonaws.cn",
    "aws-us-gov": "https://console.amazonaws-us-gov.com",
}


# ---- problems and their fingerprints -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One thing a person should look at: a check that does not pass, a warning, a target that was not scanned."""

    account_id: str
    region: str
    instance_id: str | None  # None: the (account, region) target itself could not be scanned
    check: str  # the check id; "warning"; "target"; "instance" (an instance in error with no failing check)
    status: str  # fail, would-fix, error, warning
    reason: str
    name: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def fingerprint(self) -> bytes:
        """Who and what fails, and how: the same instance failing differently is a different fingerprint. The Name
        and owner tags are not part of it (renaming an instance changes nothing about its compliance)."""
        what = "\x1f".join(
            (self.account_id, self.region, self.instance_id or "", self.check, self.status, stable(self.reason))
        )
        return target_prefix(self.account_id, self.region) + blake2b(what.encode(), digest_size=PROBLEM_BYTES).digest()


def stable(reason: str) -> str:
    """The reason without what changes at every call for the same failure (request ids, encoded messages)."""
    for pattern in _VOLATILE:
        reason = pattern.sub("", reason)
    return " ".join(reason.split())


def target_prefix(account_id: str, region: str) -> bytes:
    return blake2b(f"{account_id}/{region}".encode(), digest_size=TARGET_BYTES).digest()


def entry_problems(entry: Any) -> list[Problem]:
    """An instance entry's problems (InstanceEntry): its non-passing checks (or its verdict when none names the
    problem) and its warnings; none for an excluded instance."""
    if entry.verdict == "excluded":
        return []
    who: dict[str, Any] = {
        "account_id": entry.account_id,
        "region": entry.region,
        "instance_id": entry.instance_id,
        "name": entry.name,
        "tags": tuple(entry.tags.items()),
    }
    listed: list[Problem] = []
    if entry.verdict in ("noncompliant", "error"):
        listed = [
            Problem(**who, check=cid, status=c.status, reason=c.reason or "")
            for cid, c in entry.checks.items()
            if c.status in FAILING
        ] or [Problem(**who, check="instance", status=entry.verdict, reason="")]
    listed += [Problem(**who, check="warning", status="warning", reason=text) for text in entry.warnings]
    return listed


def target_problem(account_id: str, region: str, error: str) -> Problem:
    """The problem of a target that could not be scanned (or whose result was lost)."""
    return Problem(account_id, region, None, "target", "error", error)


def problems_of(report: Report) -> list[Problem]:
    """Every problem of a report, in the report's order, each once."""
    found: dict[bytes, Problem] = {}
    for entry in report.instances:
        for problem in entry_problems(entry):
            found.setdefault(problem.fingerprint, problem)
    for error in report.target_errors:
        problem = target_problem(error.account_id, error.region, error.error)
        found.setdefault(problem.fingerprint, problem)
    return list(found.values())


# ---- what to say: the decision -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AlertState:
    """What is remembered of the last run: its problems' fingerprints (None: more than could be kept) and when the
    last digest went out."""

    fingerprints: frozenset[bytes] | None = frozenset()
    last_digest_at: datetime | None = None


@dataclass(frozen=True)
class Listing:
    """What an alert lists of a kind of problems (the new ones, or every one in a digest), in bounded memory: how
    many there are, the first ALERT_LINES of them worst first (fanout at any size: docs/architecture.md §15), and
    the accounts, instances and targets they are about (the subject's words)."""

    count: int = 0
    first: tuple[Problem, ...] = ()
    accounts: frozenset[str] = frozenset()
    instances: int = 0
    targets: int = 0


@dataclass(frozen=True)
class AlertDecision:
    total: int  # every problem of this run
    new: tuple[Problem, ...]  # not in the last run (new, or an instance failing differently): the first, worst first
    new_count: int
    persisting: int
    resolved: int  # problems of the last run that are gone (fixed, changed, or no longer checked)
    digest: bool  # this alert lists what persists too
    state: AlertState  # what to remember once the alert is out
    notes: tuple[str, ...] = ()
    listing: Listing = Listing()  # what the alert lists: the new problems, or every problem in a digest
    marked: tuple[Problem, ...] = ()  # the listed problems that are new (flagged [new] in a digest)

    @property
    def listed(self) -> tuple[Problem, ...]:
        """What the alert lists, worst first, at most ALERT_LINES: the new problems, or in a digest every problem
        (within a target, the new ones first)."""
        return self.listing.first


class _Worst:
    """The ALERT_LINES worst targets' first ALERT_LINES problems of one kind (worst first: the targets that could
    not be scanned, then those with the most problems; within a target, its problems in order), kept as the
    targets come (a target's problems are all known once it is added), and the kind's counts."""

    def __init__(self) -> None:
        self.count = self.instances = self.targets = 0
        self.accounts: set[str] = set()
        self.kept: list[tuple[tuple, tuple[Problem, ...]]] = []

    def add(self, target: tuple[str, str], problems: list[Problem]) -> None:
        if not problems:
            return
        self.count += len(problems)
        self.accounts.add(target[0])
        self.instances += len({p.instance_id for p in problems if p.instance_id})
        unscanned = any(p.instance_id is None for p in problems)
        self.targets += sum(1 for p in problems if p.instance_id is None)
        self.kept.append(((not unscanned, -len(problems), target), tuple(problems[:ALERT_LINES])))
        if len(self.kept) > 2 * ALERT_LINES:
            self.kept = sorted(self.kept, key=lambda k: k[0])[:ALERT_LINES]

    def listing(self) -> Listing:
        first = [p for _, problems in sorted(self.kept, key=lambda k: k[0]) for p in problems][:ALERT_LINES]
        return Listing(self.count, tuple(first), frozenset(self.accounts), self.instances, self.targets)


class ProblemTally:
    """A run's problems against the last run's state, one target at a time, in memory bounded by the state's
    fingerprints (MAX_FINGERPRINTS) and ALERT_LINES, never by the fleet: what the Aggregate feeds as it streams
    the targets' results (docs/architecture.md §15), and what `decide` feeds from a report."""

    def __init__(self, previous: AlertState | None, notes: Sequence[str] = ()):
        self.previous = previous or AlertState()
        self.notes = list(notes)
        if self.previous.fingerprints is None:
            self.notes.append("the last run had more problems than eic-guard remembers: every problem is listed as new")
        self.known = self.previous.fingerprints or frozenset()
        self.current: set[bytes] | None = set()  # None once more than MAX_FINGERPRINTS: not remembered then
        self.matched: set[bytes] = set()  # the known fingerprints seen again
        self.total = 0
        self.new, self.every = _Worst(), _Worst()

    def add(self, problems: Iterable[Problem]) -> None:
        """Problems of targets (each target's problems together, in the report's order); duplicates ignored."""
        by_target: dict[tuple[str, str], dict[bytes, Problem]] = {}
        for problem in problems:
            by_target.setdefault((problem.account_id, problem.region), {}).setdefault(problem.fingerprint, problem)
        for target, found in by_target.items():
            self.add_target(target, found)

    def add_target(self, target: tuple[str, str], found: dict[bytes, Problem]) -> None:
        """One target's problems by fingerprint (all of them: a target is added once)."""
        new = [p for f, p in found.items() if f not in self.known]
        self.matched.update(f for f in found if f in self.known)
        self.total += len(found)
        if self.current is not None:
            self.current.update(found)
            if len(self.current) > MAX_FINGERPRINTS:
                self.current = None
        seen = {id(p) for p in new}
        self.new.add(target, new)
        self.every.add(target, new + [p for p in found.values() if id(p) not in seen])

    def decide(self, now: datetime, unscanned: Iterable[tuple[str, str]] = ()) -> AlertDecision:
        """New and persisting problems; `unscanned`: the (account, region) targets this run could not scan (or
        finish), whose remembered problems are kept as they were."""
        notes = list(self.notes)
        prefixes = {target_prefix(account, region) for account, region in unscanned}
        carried = {f for f in self.known if f not in self.matched and f[:TARGET_BYTES] in prefixes}
        resolved = len(self.known) - len(self.matched) - len(carried)
        previous = self.previous
        due = previous.last_digest_at is None or now - previous.last_digest_at >= DIGEST_PERIOD
        new_count = self.new.count
        remembered: frozenset[bytes] | None = None
        if self.current is not None and len(self.current | carried) <= MAX_FINGERPRINTS:
            remembered = frozenset(self.current | carried)
        else:
            kept = self.total + len(carried)
            notes.append(
                f"{kept} problems are more than the alert state keeps ({MAX_FINGERPRINTS}): "
                "every problem is listed as new at every run"
            )
        digest = due and self.total > new_count
        new = self.new.listing()
        listing = self.every.listing() if digest else new
        return AlertDecision(
            total=self.total,
            new=new.first,
            new_count=new_count,
            persisting=self.total - new_count,
            resolved=resolved,
            digest=digest,
            # Every problem is listed when a digest is due (or all are new): that alert is the digest.
            state=AlertState(remembered, now if due and self.total else previous.last_digest_at),
            notes=tuple(notes),
            listing=listing,
            marked=tuple(p for p in listing.first if p.fingerprint not in self.known),
        )


def decide(
    problems: Sequence[Problem],
    previous: AlertState | None,
    now: datetime,
    *,
    unscanned: Iterable[tuple[str, str]] = (),
    notes: Sequence[str] = (),
) -> AlertDecision:
    """New and persisting problems against the last run's state (a ProblemTally fed at once)."""
    tally = ProblemTally(previous, notes)
    tally.add(problems)
    return tally.decide(now, unscanned)


# ---- what it says: subject and message -----------------------------------------------------------------------------
def headline(report: Report) -> str:
    s = report.summary
    several = len(report.accounts) > 1
    scope = f"{len(report.accounts)} accounts" if several else f"account {report.account_label(report.account_id)}"
    warnings = f", {s.warnings} with warnings" if s.warnings else ""
    # Per connect path (docs/architecture.md §13) once some instance takes the endpoint path: a public-only fleet's
    # alert reads as it always did.
    paths = ""
    if s.connect_paths.get("endpoint"):
        paths = f" ({', '.join(f'{n} {path}' for path, n in s.connect_paths.items())})"
    return (
        f"eic-guard {report.mode} run {report.run_id}, {scope} ({', '.join(report.regions)}): "
        f"{s.noncompliant} non-compliant, {s.errors} errors, {s.fixed} fixed, {s.compliant} compliant of "
        f"{s.instances}{paths}{warnings}."
    )


def problem_line(report: Report, problem: Problem) -> str:
    """One line: the instance (Name, owner tags), its account and region, the check and why, or the warning."""
    where = f"{report.account_label(problem.account_id)} {problem.region}"
    if problem.instance_id is None and RESULT_LOST in problem.reason:
        return f"{where} {problem.reason}{_lost_changes(report, problem)}"
    if problem.instance_id is None:
        return f"{where} could not be scanned: {problem.reason}"
    details = ([problem.name] if problem.name else []) + [f"{key}={value}" for key, value in problem.tags]
    who = f"{problem.instance_id} ({', '.join(details)})" if details else problem.instance_id
    if problem.status == "warning":
        what = f"warning: {problem.reason}"
    else:
        what = f"{problem.check} {problem.status}: {problem.reason}" if problem.reason else problem.status
    return f"{who} in {where}: {what}"


def _lost_changes(report: Report, problem: Problem) -> str:
    """The changes a target whose result was lost made, as the report lists them (at most LOST_CHANGES_SHOWN)."""
    changes = [
        f"{a.action} {a.resource} ({a.status})"
        for a in report.target_actions
        if (a.account_id, a.region) == (problem.account_id, problem.region)
    ]
    if not changes:
        return ""
    more = (
        f", … and {len(changes) - LOST_CHANGES_SHOWN} more in the report" if len(changes) > LOST_CHANGES_SHOWN else ""
    )
    return f". Changes: {', '.join(changes[:LOST_CHANGES_SHOWN])}{more}"


def problem_lines(report: Report, listing: Listing, marked: Iterable[Problem] = ()) -> list[str]:
    """The listing's lines (at most ALERT_LINES, worst first), then how many more; `marked` problems are flagged
    [new] (in a digest). Each line is at most LINE_LIMIT characters."""
    marked = set(marked)
    lines = [
        clip_line(f"- {'[new] ' if problem in marked else ''}{problem_line(report, problem)}")
        for problem in listing.first[:ALERT_LINES]
    ]
    if listing.count > ALERT_LINES:
        lines.append(f"- … and {listing.count - ALERT_LINES} more")
    return lines


def refresh_lines(refresh_alerts: Sequence[str]) -> list[str]:
    """The ip-ranges refresh's alerts, at most ALERT_LINES of them, then how many more."""
    lines = ["ip-ranges refresh:", *(clip_line(f"- {alert}") for alert in refresh_alerts[:ALERT_LINES])]
    if len(refresh_alerts) > ALERT_LINES:
        lines.append(f"- … and {len(refresh_alerts) - ALERT_LINES} more")
    return lines


def clip_line(line: str) -> str:
    return line if len(line) <= LINE_LIMIT else line[: LINE_LIMIT - 1] + "…"


def fit_message(lines: list[str], location: str | None) -> str:
    """The message's lines and its report link within SNS's message size (the link is never cut off)."""
    tail = [f"Report: {location}"] if location else []
    text = "\n".join(lines + tail)
    if len(text.encode("utf-8")) <= MESSAGE_LIMIT:
        return text
    kept: list[str] = []
    budget = MESSAGE_LIMIT - len("\n".join(["- … and the rest in the report", *tail]).encode("utf-8")) - 1
    for line in lines:
        budget -= len(line.encode("utf-8")) + 1
        if budget < 0:
            break
        kept.append(line)
    return "\n".join([*kept, "- … and the rest in the report", *tail])


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def quiet_message(
    report: Report, decision: AlertDecision, location: str | None = None, refresh_alerts: Sequence[str] = ()
) -> str | None:
    """The alert's text, or None when there is nothing new, no digest due and no refresh alert."""
    lines: list[str] = []
    if decision.listed:
        lines.append(headline(report))
        if decision.digest:
            lines.append(f"Weekly digest: every open problem ({decision.total}), new or changed ones [new]:")
        else:
            lines.append(f"New or changed since the last run ({decision.new_count}):")
        lines += problem_lines(report, decision.listing, decision.marked if decision.digest else ())
        if not decision.digest and decision.persisting:
            lines.append(
                f"And {_plural(decision.persisting, 'persisting problem')}, listed in the weekly digest and the report."
            )
        if decision.resolved:
            lines.append(f"{decision.resolved} resolved since the last run.")
        lines += decision.notes
    if refresh_alerts:
        lines += refresh_lines(refresh_alerts)
    if not lines:
        return None
    return fit_message(lines, location)


def quiet_subject(report: Report, decision: AlertDecision) -> str:
    """`eic-guard: 2 new problems in prod-web (123456789012)`, `eic-guard weekly digest: 5 instances need attention
    in 3 accounts`; the ip-ranges refresh's subject when only the refresh has something to say."""
    if not decision.listed:
        return REFRESH_SUBJECT
    listing = decision.listing
    accounts = sorted(listing.accounts)
    if decision.digest:
        instances, targets = listing.instances, listing.targets
        parts = [_plural(count, word) for count, word in ((instances, "instance"), (targets, "target")) if count]
        who, verb = " and ".join(parts), "needs" if instances + targets == 1 else "need"
        new = f", {decision.new_count} new" if decision.new_count else ""
        template = f"eic-guard weekly digest: {who} {verb} attention in {{where}}{new}"
    else:
        count = decision.new_count
        template = f"eic-guard: {count} new problem{'' if count == 1 else 's'} in {{where}}"
    if len(accounts) != 1:
        return sns_subject(template.format(where=f"{len(accounts)} accounts"))
    for where in (report.account_label(accounts[0]), accounts[0]):  # the id alone when the alias makes it too long
        subject = sns_subject(template.format(where=where))
        if len(subject) < SUBJECT_LIMIT:
            return subject
    return subject


def sns_subject(text: str) -> str:
    """Printable ASCII on one line, at most SUBJECT_LIMIT characters (what SNS Publish accepts as a Subject)."""
    printable = "".join(c if " " <= c <= "~" else "?" for c in " ".join(text.split()))
    return printable if len(printable) <= SUBJECT_LIMIT else printable[: SUBJECT_LIMIT - 3] + "..."


def alert_message(report: Report | None, refresh_alerts: list[str], report_location: str | None = None) -> str | None:
    """Every problem, without memory (the event-driven checks and the refresh): a message when something stays
    non-compliant, errors, or a refresh alerts; else None."""
    lines: list[str] = []
    if report is not None and (report.summary.noncompliant or report.summary.errors):
        lines.append(headline(report))
        tally = ProblemTally(None)
        tally.add(problems_of(report))
        lines += problem_lines(report, tally.new.listing())
    if refresh_alerts:
        lines += refresh_lines(refresh_alerts)
    if not lines:
        return None
    return fit_message(lines, report_location)


def send_alert(sns: Any, topic_arn: str, subject: str, message: str) -> None:
    sns.publish(TopicArn=topic_arn, Subject=sns_subject(subject), Message=message)


# ---- the link to the report ----------------------------------------------------------------------------------------
def partition_of(region: str, arn: str | None = None) -> str:
    """The partition of an ARN when one is given (arn:<partition>:...), else of the region."""
    parts = (arn or "").split(":")
    if len(parts) > 1 and parts[0] == "arn" and parts[1]:
        return parts[1]
    return region_partition(region)


def report_link(bucket: str, key: str, region: str | None, partition: str | None = None) -> str:
    """The S3 console page of the report object (a person signed in to the console opens it); the s3:// location
    where the partition has no console host known here."""
    host = CONSOLE_HOSTS.get(partition or partition_of(region or "")) if region else None
    if host is None:
        return f"s3://{bucket}/{key}"
    return f"{host.format(region=region)}/s3/object/{bucket}?region={region}&prefix={quote(key, safe='/')}"


# ---- where the last run is remembered ------------------------------------------------------------------------------
class AlertStateUnavailable(Exception):
    """The alert state could not be read or written."""


class AlertStateStore(Protocol):
    location: str

    def load(self) -> AlertState | None: ...

    def save(self, state: AlertState) -> None: ...


def _unpack(blob: bytes, where: str) -> frozenset[bytes]:
    if len(blob) % FINGERPRINT_BYTES:
        raise AlertStateUnavailable(f"{where}: {len(blob)} bytes of fingerprints is not a multiple of 8")
    return frozenset(blob[i : i + FINGERPRINT_BYTES] for i in range(0, len(blob), FINGERPRINT_BYTES))


def _instant(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    try:
        instant = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise AlertStateUnavailable(f"{where}: last_digest_at {value!r} is not a time") from None
    if instant.tzinfo is None:
        raise AlertStateUnavailable(f"{where}: last_digest_at {value!r} has no time zone")
    return instant


class DynamoDbAlertState:
    """The deployed state: one item of the state table, `fingerprints` one binary attribute (8 bytes each)."""

    def __init__(self, dynamodb: Any, table_name: str, item_id: str = ALERT_STATE_ITEM_ID):
        self.dynamodb = dynamodb
        self.table_name = table_name
        self.item_id = item_id
        self.location = f"{table_name}/{item_id}"

    def load(self) -> AlertState | None:
        try:
            item = self.dynamodb.get_item(
                TableName=self.table_name, Key={"id": {"S": self.item_id}}, ConsistentRead=True
            ).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise AlertStateUnavailable(f"{self.location}: {exc}") from None
        if not item:
            return None
        if item.get("schema") != {"S": ALERT_STATE_SCHEMA}:
            raise AlertStateUnavailable(f"{self.location} is not an eic-guard alert state ({ALERT_STATE_SCHEMA})")
        if item.get("overflow") == {"BOOL": True}:
            fingerprints = None
        elif "fingerprints" not in item:
            fingerprints = frozenset()
        elif "B" in item["fingerprints"]:
            fingerprints = _unpack(bytes(item["fingerprints"]["B"]), self.location)
        else:
            raise AlertStateUnavailable(f"{self.location}: fingerprints is not a binary attribute")
        digest = item.get("last_digest_at")
        if digest is not None and "S" not in digest:
            raise AlertStateUnavailable(f"{self.location}: last_digest_at is not a string")
        return AlertState(fingerprints, _instant(digest["S"] if digest else None, self.location))

    def save(self, state: AlertState) -> None:
        item: dict[str, Any] = {
            "id": {"S": self.item_id},
            "schema": {"S": ALERT_STATE_SCHEMA},
            "overflow": {"BOOL": state.fingerprints is None},
        }
        if state.fingerprints:
            item["fingerprints"] = {"B": b"".join(sorted(state.fingerprints))}
        if state.last_digest_at is not None:
            item["last_digest_at"] = {"S": state.last_digest_at.isoformat()}
        try:
            self.dynamodb.put_item(TableName=self.table_name, Item=item)
        except (ClientError, BotoCoreError) as exc:
            raise AlertStateUnavailable(f"{self.location}: {exc}") from None


class FileAlertState:
    """The CLI's state: a JSON file holding the last run of each scope (the caller's account, the accounts and the
    regions scanned: scanning prod and then staging from one machine must not make each look new to the other),
    replaced atomically."""

    def __init__(self, path: str | Path, scope: str):
        self.path = Path(path)
        self.scope = scope
        self.location = str(self.path)

    def _document(self) -> dict[str, Any] | None:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AlertStateUnavailable(f"{self.path} cannot be read: {exc.strerror or exc}") from None
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError alike
            raise AlertStateUnavailable(f"{self.path} is not JSON: {exc}") from None
        if not isinstance(document, dict) or document.get("schema") != ALERT_STATE_SCHEMA:
            raise AlertStateUnavailable(f"{self.path} is not an eic-guard alert state ({ALERT_STATE_SCHEMA})")
        if not isinstance(document.get("scopes"), dict):
            raise AlertStateUnavailable(f"{self.path} has no 'scopes' object")
        return document

    def load(self) -> AlertState | None:
        document = self._document()
        entry = (document or {}).get("scopes", {}).get(self.scope)
        if entry is None:
            return None
        if not isinstance(entry, dict):
            raise AlertStateUnavailable(f"{self.path}: scope {self.scope!r} is not an object")
        fingerprints = None
        if not entry.get("overflow"):
            try:
                blob = base64.b64decode(entry.get("fingerprints", ""), validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise AlertStateUnavailable(f"{self.path}: fingerprints is not base64") from None
            fingerprints = _unpack(blob, self.location)
        return AlertState(fingerprints, _instant(entry.get("last_digest_at"), self.location))

    def save(self, state: AlertState) -> None:
        try:
            document = self._document() or {}
        except AlertStateUnavailable:
            document = {}  # an unreadable file was reported when it was loaded: replacing it is the repair
        scopes = dict(document.get("scopes", {}))
        scopes[self.scope] = {
            "fingerprints": base64.b64encode(b"".join(sorted(state.fingerprints or ()))).decode("ascii"),
            "overflow": state.fingerprints is None,
            "last_digest_at": state.last_digest_at.isoformat() if state.last_digest_at else None,
            "updated_at": datetime.now(UTC).isoformat(),
        }
        kept = sorted(scopes, key=lambda s: str(scopes[s].get("updated_at", "")) if isinstance(scopes[s], dict) else "")
        scopes = {scope: scopes[scope] for scope in kept[-MAX_SCOPES:]}
        try:
            replace_file(self.path, json.dumps({"schema": ALERT_STATE_SCHEMA, "scopes": scopes}, indent=1).encode())
        except OSError as exc:
            raise AlertStateUnavailable(f"{self.path} cannot be written: {exc.strerror or exc}") from None


def scan_scope(report: Report, organization: bool) -> str:
    """The CLI's scope of a scan: the caller's account, the accounts scanned (or the organization, whose accounts
    come and go) and the regions."""
    accounts = "organization" if organization else ",".join(report.accounts)
    return f"{report.account_id} {accounts} {','.join(sorted(report.regions))}"


# ---- one run's alert -----------------------------------------------------------------------------------------------
@dataclass
class QuietAlert:
    """A run's alert (subject and message, None when there is nothing to say) and the state to remember after it."""

    decision: AlertDecision
    subject: str | None
    message: str | None
    store: AlertStateStore | None
    changed: bool  # the state to remember differs from the stored one (or that could not be read)

    def remember(self) -> bool:
        """Write the state (once the alert is out); a failure is logged: the next run alerts these again."""
        if self.store is None or not self.changed:
            return True
        try:
            self.store.save(self.decision.state)
            return True
        except AlertStateUnavailable as exc:
            logger.error("alert state not written: the next run alerts these problems again", extra={"error": str(exc)})
            return False

    def summary(self) -> dict[str, Any]:
        d = self.decision
        return {"new": d.new_count, "persisting": d.persisting, "resolved": d.resolved, "digest": d.digest}


@dataclass(frozen=True)
class PreviousAlert:
    """The last run's alert state as read (None: nothing remembered), and what a person should know about it."""

    state: AlertState | None
    notes: tuple[str, ...] = ()
    unreadable: bool = False


def read_previous(store: AlertStateStore | None) -> PreviousAlert:
    """The last run's state; never raises (a state that cannot be read is a run with nothing remembered)."""
    if store is None:
        return PreviousAlert(None, ("No alert state is kept here (no state table): every run lists every problem.",))
    try:
        return PreviousAlert(store.load())
    except AlertStateUnavailable as exc:
        logger.error("alert state not read: every problem is alerted", extra={"error": str(exc)})
        note = f"The alert state could not be read ({exc}): every problem is listed as new."
        return PreviousAlert(None, (note,), unreadable=True)


def quiet_alert(
    report: Report,
    store: AlertStateStore | None,
    *,
    now: datetime,
    location: str | None = None,
    refresh_alerts: Sequence[str] = (),
    tally: ProblemTally | None = None,
    previous: PreviousAlert | None = None,
) -> QuietAlert:
    """Load the last run's state, decide what is new, compose the alert. Never raises for the state. A streamed
    run (fanout.stream) gives the `tally` it fed and the `previous` state it fed it against, and a `report` whose
    instances are not held (its summary, targets and target actions are)."""
    if tally is None:
        previous = read_previous(store)
        tally = ProblemTally(previous.state, previous.notes)
        tally.add(problems_of(report))
    assert previous is not None, "a tally is given with the state it was fed against"
    unscanned = [(t.account_id, t.region) for t in report.targets if t.status != "ok"]
    decision = tally.decide(now, unscanned)
    message = quiet_message(report, decision, location, refresh_alerts)
    subject = quiet_subject(report, decision) if message else None
    changed = previous.unreadable or decision.state != (previous.state or AlertState())
    return QuietAlert(decision, subject, message, store, changed)


__all__ = [
    "ALERT_LINES",
    "ALERT_STATE_FILE",
    "ALERT_STATE_ITEM_ID",
    "DIGEST_PERIOD",
    "AlertState",
    "DynamoDbAlertState",
    "FileAlertState",
    "PreviousAlert",
    "Problem",
    "ProblemTally",
    "QuietAlert",
    "alert_message",
    "decide",
    "problems_of",
    "quiet_alert",
    "read_previous",
    "report_link",
    "scan_scope",
    "send_alert",
]
