"""The opt-in tag is an access boundary (README "Threat model"): whoever puts it on an instance makes it reachable over
SSH for every holder of the ConnectPolicy. So every CreateTags or RunInstances that opts an instance in (the opt-in key
in any letter case, with the opt-in value: IAM compares condition key names case-insensitively) is announced, naming
who made the call (CloudTrail's userIdentity), whatever the check of the instance then finds:

- one alert per batch on the alerts topic, listing each instance, its account and region, the tag, the caller and when;
- with SecurityHubFindings=enabled, one LOW finding per instance in that instance's own account and region (imported
  with that account's clients, like the check findings), for a security team to review and close.

Both are best effort: a failure is logged and counted, never a reason to fail the batch (the change itself was
checked and, in remediate mode, fixed).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from ..observability import logger, metrics
from ..outputs.alerts import send_alert
from ..outputs.security_hub import FindingScope, batches, findings_enabled
from ..outputs.security_hub.build import opt_in_finding
from ..settings import Settings
from .events import ChangeEvent

OPT_IN_METRIC = "OptInTagAdded"


@dataclass(frozen=True)
class OptIn:
    """One instance an API call opted in."""

    account_id: str
    region: str
    instance_id: str
    tag: tuple[str, str]
    actor: str
    event_name: str
    event_id: str
    event_time: str | None


def opt_ins(changes: list[ChangeEvent]) -> list[OptIn]:
    """The instances the batch's calls opted in (eic-guard's own calls were left out before)."""
    return [
        OptIn(
            c.account_id,
            c.region,
            instance_id,
            c.opt_in_tag,
            c.actor.arn or c.actor.issuer_arn or "an unknown caller",
            c.name,
            c.trail_event_id or c.event_id,
            c.event_time,
        )
        for c in changes
        if c.opt_in_tag is not None
        for instance_id in c.opted_in
    ]


def alert_text(found: list[OptIn]) -> tuple[str, str]:
    """(subject, message) of the alert."""
    subject = f"eic-guard: the opt-in tag was added to {len(found)} instance(s)"
    lines = [
        f"{o.instance_id} ({o.account_id} {o.region}): {o.tag[0]}={o.tag[1]} added by {o.actor} "
        f"at {o.event_time or 'an unknown time'} ({o.event_name})"
        for o in found
    ]
    message = "\n".join(
        [
            "eic-guard saw the opt-in tag added to these instances:",
            "",
            *lines,
            "",
            "Every holder of eic-guard's ConnectPolicy may now connect to them as ec2-user, and eic-guard opens TCP 22 "
            "from the EC2 Instance Connect range on them. If this was not intended, remove the tag and review who may "
            "tag instances (policies/README.md in the eic-guard repository).",
        ]
    )
    return subject, message


def announce_opt_ins(
    clients: Any, clients_for: Any, settings: Settings, changes: list[ChangeEvent], now: datetime | None = None
) -> dict[str, int]:
    """Alert on (and, when enabled, import a finding for) every instance the batch's calls opted in; never raises.

    `clients`: the central clients (the alerts topic); `clients_for(account_id)`: the clients acting in an account.
    """
    found = opt_ins(changes)
    outcome = {"opted_in": len(found), "alerted": 0, "findings": 0, "failed": 0}
    if not found:
        return outcome
    metrics.add_metric(name=OPT_IN_METRIC, unit=MetricUnit.Count, value=len(found))
    logger.warning("opt-in tag added", extra={"instances": [o.__dict__ for o in found]})
    if settings.alerts_topic_arn:
        subject, message = alert_text(found)
        try:
            region = settings.alerts_topic_arn.split(":")[3]
            send_alert(clients.client("sns", region), settings.alerts_topic_arn, subject, message)
            outcome["alerted"] = 1
        except (ClientError, BotoCoreError, IndexError) as exc:
            outcome["failed"] += 1
            logger.error("opt-in alert not sent", extra={"error": str(exc)})
    if findings_enabled(settings):
        imported, failed = _import_findings(clients_for, found, now or datetime.now(UTC))
        outcome["findings"], outcome["failed"] = imported, outcome["failed"] + failed
    return outcome


def _import_findings(clients_for: Any, found: list[OptIn], now: datetime) -> tuple[int, int]:
    by_target: dict[tuple[str, str], list[OptIn]] = defaultdict(list)
    for o in found:
        by_target[(o.account_id, o.region)].append(o)
    imported = failed = 0
    for (account_id, region), items in sorted(by_target.items()):
        scope = FindingScope(account_id, region)
        findings = [
            opt_in_finding(
                scope,
                o.instance_id,
                tag=o.tag,
                actor=o.actor,
                event_name=o.event_name,
                event_id=o.event_id,
                event_time=o.event_time,
                now=now,
            )
            for o in items
        ]
        try:
            securityhub = clients_for(account_id).client("securityhub", region)
            for batch in batches(findings):
                answer = securityhub.batch_import_findings(Findings=batch)
                refused = answer.get("FailedCount", 0)
                imported += len(batch) - refused
                failed += refused
        except Exception as exc:  # noqa: BLE001 - the announcement never fails the batch it describes
            failed += len(findings)
            logger.error("opt-in findings not imported", extra={"account_id": account_id, "error": str(exc)})
    return imported, failed
