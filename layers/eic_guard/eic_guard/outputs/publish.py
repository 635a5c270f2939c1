"""After a run: status tags on the instances, the report in S3 (JSON + HTML), one alert with what is new."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from ..aws.gateway import error_code
from ..observability import logger
from ..settings import Settings
from .report import Report

if TYPE_CHECKING:
    from .alerts import PreviousAlert, ProblemTally
    from .stream import ReportStream

# outputs.alerts and outputs.html are imported where they are used: the target worker imports this module for its
# status tags only, and its cold start should not pay for the alert and HTML code it never runs.

STATUS_TAG = "eic-guard:status"
CHECKED_AT_TAG = "eic-guard:checked-at"
TAG_BATCH = 1000  # CreateTags accepts up to 1000 resource ids per call
_GONE = ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed")
_INSTANCE_ID = re.compile(r"\bi-[0-9a-f]{8,17}\b")


def report_key(kind: str, run_id: str, started: datetime) -> str:
    """reports/<scan|refresh>/YYYY/MM/DD/<run id>: dated, so lifecycle rules and humans can find runs."""
    return f"reports/{kind}/{started:%Y/%m/%d}/{run_id}"


def store_scan_report(s3: Any, bucket: str, report: Report, stream: ReportStream | None = None) -> str:
    """Put the JSON report and its HTML page (beyond outputs.html.PAGE_INSTANCES instances, also one page per
    account, under `<run id>.accounts/`, linked from the page); returns the key prefix. The JSON is encoded from the
    model straight into bytes (Report.to_json_bytes): no dict or str copy of the report. A streamed report (the
    Aggregate's: `report` without its instances) is written from its `stream`, in parts (outputs.stream)."""
    from .html import render_pages

    key = report_key("scan", report.run_id, report.started_at)
    if stream is not None:
        stream.store(s3, bucket, key)
        return key
    s3.put_object(Bucket=bucket, Key=f"{key}.json", Body=report.to_json_bytes(), ContentType="application/json")
    folder = key.rsplit("/", 1)[0]
    for name, page in render_pages(report, stem=report.run_id).items():
        s3.put_object(Bucket=bucket, Key=f"{folder}/{name}", Body=page.encode(), ContentType="text/html; charset=utf-8")
    return key


def store_refresh_report(s3: Any, bucket: str, run_id: str, started: datetime, document: dict) -> str:
    key = report_key("refresh", run_id, started)
    body = {"schema": "eic-guard/refresh/v1", "run_id": run_id, "started_at": started.isoformat(), **document}
    s3.put_object(
        Bucket=bucket,
        Key=f"{key}.json",
        Body=json.dumps(body, indent=2, default=str).encode(),
        ContentType="application/json",
    )
    return key


def status_tag_batches(entries: Iterable[dict], checked_at: str) -> dict[tuple[str, str], list[str]]:
    """Report instance entries grouped by (region, verdict): one CreateTags call per distinct value set (and per
    1000 ids)."""
    batches: dict[tuple[str, str], list[str]] = defaultdict(list)
    for entry in entries:
        if entry["verdict"] in ("excluded", "error"):
            continue  # excluded instances are never modified; an errored one may be gone
        batches[(entry["region"], entry["verdict"])].append(entry["instance_id"])
    return dict(batches)


def tag_instances(clients: Any, report: Report, checked_at: str) -> int:
    """Write eic-guard:status and eic-guard:checked-at on a report's instances; returns the CreateTags calls."""
    return tag_entries(clients.ec2, [e.model_dump() for e in report.instances], checked_at)


def tag_entries(ec2_for: Callable[[str], Any], entries: Iterable[dict], checked_at: str) -> int:
    """Status tags for report instance entries (one target's, in the fan-out), `ec2_for(region)` the client."""
    calls = 0
    for (region, verdict), instance_ids in sorted(status_tag_batches(entries, checked_at).items()):
        tags = [{"Key": STATUS_TAG, "Value": verdict}, {"Key": CHECKED_AT_TAG, "Value": checked_at}]
        for start in range(0, len(instance_ids), TAG_BATCH):
            calls += _tag_batch(ec2_for(region), instance_ids[start : start + TAG_BATCH], tags, region)
    return calls


def _tag_batch(ec2: Any, instance_ids: list[str], tags: list[dict], region: str) -> int:
    """One CreateTags call; EC2 refuses the whole batch when one instance is gone (terminated since the scan), so
    the ids it names are dropped and the rest tagged again (bounded: each retry drops at least one id)."""
    calls, remaining = 0, list(instance_ids)
    while remaining:
        calls += 1
        try:
            ec2.create_tags(Resources=remaining, Tags=tags)
            return calls
        except ClientError as exc:
            gone = set(_INSTANCE_ID.findall(str(exc))) & set(remaining) if error_code(exc) in _GONE else set()
            if not gone:
                logger.warning("status tags not written", extra={"region": region, "error": str(exc)})
                return calls
            logger.info("instances gone since the scan: not tagged", extra={"instance_ids": sorted(gone)})
            remaining = [i for i in remaining if i not in gone]
        except BotoCoreError as exc:
            logger.warning("status tags not written", extra={"region": region, "error": str(exc)})
            return calls
    return calls


def alert_state_store(clients: Any, settings: Settings) -> Any:
    """Where the deployed scan's alert state is kept: an item of the state table (None without one)."""
    from .alerts import DynamoDbAlertState

    return DynamoDbAlertState(clients.client("dynamodb"), settings.state_table) if settings.state_table else None


def publish_scan(
    clients: Any,
    settings: Settings,
    report: Report,
    refresh_alerts: list[str],
    *,
    stream: ReportStream | None = None,
    tally: ProblemTally | None = None,
    previous: PreviousAlert | None = None,
) -> dict:
    """S3 report and alert for a finished scan; a publishing failure is logged, never loses the run.

    The alert says only what is new since the last run (and once a week what persists), remembered in the state
    table; the state is written once the alert is out. (Status tags are written by each target's worker, which
    holds that account's credentials.) A streamed run gives its `stream` (the report to write) and the alert
    `tally` it fed against the `previous` state (outputs.alerts.quiet_alert).
    """
    from .alerts import partition_of, quiet_alert, report_link, send_alert

    outcome: dict[str, Any] = {"report_key": None, "alerted": False}
    location = None
    if settings.reports_bucket:
        try:
            s3 = clients.client("s3")
            outcome["report_key"] = store_scan_report(s3, settings.reports_bucket, report, stream)
            location = report_link(
                settings.reports_bucket,
                f"{outcome['report_key']}.html",
                s3.meta.region_name,
                partition_of(s3.meta.region_name or "", settings.alerts_topic_arn),
            )
        except (ClientError, BotoCoreError) as exc:
            logger.error("report not stored", extra={"error": str(exc)})
    if not settings.alerts_topic_arn:
        return outcome
    store = alert_state_store(clients, settings)
    alert = quiet_alert(
        report,
        store,
        now=report.finished_at,
        location=location,
        refresh_alerts=refresh_alerts,
        tally=tally,
        previous=previous,
    )
    outcome["alert"] = alert.summary()
    if alert.subject and alert.message:
        try:
            send_alert(
                clients.client("sns", _topic_region(settings.alerts_topic_arn)),
                settings.alerts_topic_arn,
                alert.subject,
                alert.message,
            )
            outcome["alerted"] = True
        except (ClientError, BotoCoreError) as exc:
            # The state stays as it was: the next run finds these problems new again and alerts them.
            logger.error("alert not sent", extra={"error": str(exc)})
            return outcome
    alert.remember()
    return outcome


def _topic_region(topic_arn: str) -> str | None:
    parts = topic_arn.split(":")
    return parts[3] if len(parts) > 3 else None


def publish_refresh(
    clients: Any, settings: Settings, run_id: str, started: datetime, document: dict, alerts: list[str]
) -> dict:
    """Store a refresh's report and send one alert if it raised any (rejections and vanished regions)."""
    from .alerts import alert_message, send_alert

    outcome: dict[str, Any] = {"report_key": None, "alerted": False}
    if settings.reports_bucket:
        try:
            key = store_refresh_report(clients.client("s3"), settings.reports_bucket, run_id, started, document)
            outcome["report_key"] = key
        except (ClientError, BotoCoreError) as exc:
            logger.error("refresh report not stored", extra={"error": str(exc)})
    message = alert_message(None, alerts)
    if message and settings.alerts_topic_arn:
        try:
            send_alert(
                clients.client("sns", _topic_region(settings.alerts_topic_arn)),
                settings.alerts_topic_arn,
                "eic-guard: the ip-ranges refresh needs attention",
                message,
            )
            outcome["alerted"] = True
        except (ClientError, BotoCoreError) as exc:
            logger.error("alert not sent", extra={"error": str(exc)})
    return outcome
