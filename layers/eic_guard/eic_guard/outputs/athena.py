"""Findings you can query (docs/architecture.md §15): each target's per-instance results as JSON Lines in the reports
bucket, the data of the Glue table `<FindingsDatabaseName>.findings` (template.yaml, partition projection, no
crawler), so `SELECT … FROM eic_guard.findings` works in Athena the morning after deploy.

    tables/findings/run_date=YYYY-MM-DD/account=<account id>/<region>-<run id>.json.gz

Written by each target's worker for its own target (no component needs the fleet in memory), gzip-compressed
(Athena reads `.gz` by its extension). A later round of the same target rewrites the same object with every round
merged, so a run has exactly one row per instance. Rows carry every column of the table (null when unknown); the
partition column `run_date` comes from the key, the account is also the `account_id` column (the `account=` level is
only a folder: Athena projects `run_date` and reads every object under it).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

TABLE_PREFIX = "tables/findings"
NOT_PASSING = ("fail", "would-fix", "error")
# Every column of the table, in its order (template.yaml FindingsTable: a test holds the two together).
COLUMNS = (
    "run_id",
    "run_started_at",
    "mode",
    "account_id",
    "account_alias",
    "region",
    "target_status",
    "instance_id",
    "name",
    "vpc_id",
    "verdict",
    "excluded_reason",
    "tags",
    "checks",
    "failing_checks",
    "warnings",
    "actions",
    "fixes",
)


def findings_key(started_at: datetime, account_id: str, region: str, run_id: str) -> str:
    """The object of one target of one run (run_date is the run's UTC start date, the date it is queried by)."""
    return f"{TABLE_PREFIX}/run_date={started_at:%Y-%m-%d}/account={account_id}/{region}-{run_id}.json.gz"


def hive_timestamp(moment: datetime) -> str:
    """`yyyy-MM-dd HH:mm:ss.SSS` (UTC): the form Athena's JSON SerDes read as a timestamp."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment
    return utc.strftime("%Y-%m-%d %H:%M:%S.") + f"{utc.microsecond // 1000:03d}"


def finding_rows(document: dict[str, Any], run_id: str, started_at: datetime, mode: str) -> Iterator[dict]:
    """One row per instance of a target's (merged) worker result."""
    common = {
        "run_id": run_id,
        "run_started_at": hive_timestamp(started_at),
        "mode": mode,
        "account_alias": document.get("account_alias"),
        "target_status": document["status"],
    }
    for entry in document["instances"]:
        checks = {
            check_id: {"status": c["status"], "reason": c.get("reason"), "guidance": c.get("guidance")}
            for check_id, c in entry["checks"].items()
        }
        actions = [
            {"action": a["action"], "resource": a["resource"], "status": a["status"], "detail": a["detail"]}
            for a in entry["actions"]
        ]
        row = {
            **common,
            "account_id": entry["account_id"],
            "region": entry["region"],
            "instance_id": entry["instance_id"],
            "name": entry.get("name"),
            "vpc_id": entry.get("vpc_id"),
            "verdict": entry["verdict"],
            "excluded_reason": entry.get("excluded_reason"),
            "tags": dict(entry.get("tags") or {}),
            "checks": checks,
            "failing_checks": [cid for cid, c in checks.items() if c["status"] in NOT_PASSING],
            "warnings": list(entry.get("warnings") or []),
            "actions": actions,
            "fixes": sum(1 for a in actions if a["status"] == "done"),
        }
        yield {column: row[column] for column in COLUMNS}


def json_lines(rows: Iterator[dict]) -> bytes:
    """The rows as gzip-compressed JSON Lines (mtime 0: the same rows give the same bytes)."""
    text = "".join(json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n" for row in rows)
    return gzip.compress(text.encode("utf-8"), mtime=0)


def write_findings(
    s3: Any, bucket: str, document: dict[str, Any], run_id: str, started_at: datetime, mode: str
) -> str | None:
    """Put one target's rows; None (nothing written) when the target has no instance. Returns the key."""
    if not document["instances"]:
        return None
    key = findings_key(started_at, document["account_id"], document["region"], run_id)
    body = json_lines(finding_rows(document, run_id, started_at, mode))
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/x-ndjson")
    return key
