"""After a run: status tags on the instances, the report in S3 (JSON + HTML), one alert if a person is needed."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..aws.gateway import error_code
from ..observability import logger
from ..settings import Settings
from .html import render_html
from .report import Report

STATUS_TAG = "eic-guard:status"
CHECKED_AT_TAG = "eic-guard:checked-at"
TAG_BATCH = 1000  # CreateTags accepts up to 1000 resource ids per call
ALERT_LINES = 25
_GONE = ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed")
_INSTANCE_ID = re.compile(r"\bi-[0-9a-f]{8,17}\b")


def report_key(kind: str, run_id: str, started: datetime) -> str:
    """reports/<scan|refresh>/YYYY/MM/DD/<run id>: dated, so lifecycle rules and humans can find runs."""
    return f"reports/{kind}/{started:%Y/%m/%d}/{run_id}"


def store_scan_report(s3: Any, bucket: str, report: Report) -> str:
    """Put the JSON report and its HTML page; returns the key prefix."""
    key = report_key("scan", report.run_id, report.started_at)
    s3.put_object(
        Bucket=bucket,
        Key=f"{key}.json",
        Body=json.dumps(report.to_dict(), indent=2).encode(),
        ContentType="application/json",
    )
    s3.put_object(
        Bucket=bucket, Key=f"{key}.html", Body=render_html(report).encode(), ContentType="text/html; charset=utf-8"
    )
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


def alert_message(report: Report | None, refresh_alerts: list[str], report_location: str | None = None) -> str | None:
    """One concise message when something stays non-compliant, errors, or a refresh alerts; else None."""
    lines: list[str] = []
    if report is not None and (report.summary.noncompliant or report.summary.errors):
        s = report.summary
        several = len(report.accounts) > 1
        scope = f"{len(report.accounts)} accounts" if several else f"account {report.account_id}"
        lines.append(
            f"eic-guard {report.mode} run {report.run_id}, {scope} "
            f"({', '.join(report.regions)}): {s.noncompliant} non-compliant, {s.errors} errors, "
            f"{s.fixed} fixed, {s.compliant} compliant of {s.instances}."
        )
        problems = [e for e in report.instances if e.verdict in ("noncompliant", "error")]
        for entry in problems[:ALERT_LINES]:
            failing = "; ".join(
                f"{cid}: {c.reason}" for cid, c in entry.checks.items() if c.status in ("fail", "would-fix", "error")
            )
            where = f"{entry.account_id}/{entry.region}" if several else entry.region
            lines.append(f"- {entry.instance_id} ({where}) {entry.verdict}: {failing}")
        if len(problems) > ALERT_LINES:
            lines.append(f"- … and {len(problems) - ALERT_LINES} more")
        lines.extend(
            f"- {f'account {e.account_id} ' if several else ''}region {e.region} could not be scanned: {e.error}"
            for e in report.target_errors
        )
    if refresh_alerts:
        lines.append("ip-ranges refresh:")
        lines.extend(f"- {alert}" for alert in refresh_alerts)
    if not lines:
        return None
    if report_location:
        lines.append(f"Report: {report_location}")
    return "\n".join(lines)


def send_alert(sns: Any, topic_arn: str, subject: str, message: str) -> None:
    sns.publish(TopicArn=topic_arn, Subject=subject[:100], Message=message)


def publish_scan(clients: Any, settings: Settings, report: Report, refresh_alerts: list[str]) -> dict:
    """S3 report and alert for a finished scan; a publishing failure is logged, never loses the run.

    (Status tags are written by each target's worker, which holds that account's credentials.)
    """
    outcome: dict[str, Any] = {"report_key": None, "alerted": False}
    location = None
    if settings.reports_bucket:
        try:
            outcome["report_key"] = store_scan_report(clients.client("s3"), settings.reports_bucket, report)
            location = f"s3://{settings.reports_bucket}/{outcome['report_key']}.html"
        except (ClientError, BotoCoreError) as exc:
            logger.error("report not stored", extra={"error": str(exc)})
    message = alert_message(report, refresh_alerts, location)
    if message and settings.alerts_topic_arn:
        try:
            problems = report.summary.noncompliant + report.summary.errors
            subject = (
                f"eic-guard: {problems} instance(s) need attention"
                if problems
                else "eic-guard: the ip-ranges refresh needs attention"
            )
            send_alert(
                clients.client("sns", _topic_region(settings.alerts_topic_arn)),
                settings.alerts_topic_arn,
                subject,
                message,
            )
            outcome["alerted"] = True
        except (ClientError, BotoCoreError) as exc:
            logger.error("alert not sent", extra={"error": str(exc)})
    return outcome


def _topic_region(topic_arn: str) -> str | None:
    parts = topic_arn.split(":")
    return parts[3] if len(parts) > 3 else None


def publish_refresh(
    clients: Any, settings: Settings, run_id: str, started: datetime, document: dict, alerts: list[str]
) -> dict:
    """Store a refresh's report and send one alert if it raised any (rejections and vanished regions)."""
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
