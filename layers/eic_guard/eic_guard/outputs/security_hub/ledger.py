"""Which findings are open, per (account, region) (docs/architecture.md §11).

The import role has no read permission on Security Hub (IAM: securityhub:BatchImportFindings on the default product
ARN only), so a small ledger per (account, region) remembers the open findings: the reports bucket's
`findings/<account>/<region>.json` when deployed (written with the central clients, conditionally, so two writers
never lose each other's entries), else `~/.eic-guard/findings/<account>/<region>.json` for the CLI. The ledger also
keeps each open finding's CreatedAt, which therefore stays the same for as long as the check keeps failing (a check
that fails again after it passed opens a new occurrence: a new CreatedAt, the same Id).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from ...aws.gateway import error_code
from ...local_files import replace_file
from ...settings import Settings
from .build import asff_time

LEDGER_PREFIX = "findings"
LEDGER_SCHEMA = "eic-guard/findings-ledger/v1"
# IAM, for the central roles that keep it: on <reports bucket ARN>/findings/*.
LEDGER_PERMISSIONS = ("s3:GetObject", "s3:PutObject")


class LedgerUnavailable(Exception):
    """The ledger could not be read or written."""


@dataclass
class LedgerChanges:
    """What one sync changes in the ledger: findings now open (upserted) and findings closed (removed)."""

    opened: dict[str, dict] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.opened or self.closed)

    def apply(self, open_findings: dict[str, dict]) -> dict[str, dict]:
        merged = {k: v for k, v in open_findings.items() if k not in self.closed}
        merged.update(self.opened)
        return merged


class Ledger(Protocol):
    location: str

    def load(self) -> dict[str, dict]: ...

    def save(self, changes: LedgerChanges, now: datetime) -> None: ...


def _document(account_id: str, region: str, open_findings: dict[str, dict], now: datetime) -> bytes:
    body = {
        "schema": LEDGER_SCHEMA,
        "account_id": account_id,
        "region": region,
        "updated_at": asff_time(now),
        "open": dict(sorted(open_findings.items())),
    }
    return json.dumps(body, indent=1).encode()


def _parse(raw: bytes, location: str) -> dict[str, dict]:
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise LedgerUnavailable(f"{location} is not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("schema") != LEDGER_SCHEMA:
        raise LedgerUnavailable(f"{location} is not an eic-guard findings ledger ({LEDGER_SCHEMA})")
    open_findings = document.get("open")
    if not isinstance(open_findings, dict) or not all(_is_record(r) for r in open_findings.values()):
        raise LedgerUnavailable(f"{location} has no valid 'open' object")
    return open_findings


def _is_record(record: Any) -> bool:
    """An open finding as `sync_findings` records it (the fingerprint and import time may be missing: then the
    finding is simply imported again)."""
    return isinstance(record, dict) and all(
        isinstance(record.get(key), str) for key in ("instance_id", "check_id", "created_at")
    )


class S3Ledger:
    """`findings/<account>/<region>.json` in the reports bucket, written only if it did not change since it was read
    (If-Match, or If-None-Match for a new one); on a conflict the changes are applied again to the newer copy."""

    ATTEMPTS = 3
    CONFLICTS = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})

    def __init__(self, s3: Any, bucket: str, account_id: str, region: str):
        self.s3, self.bucket, self.account_id, self.region = s3, bucket, account_id, region
        self.key = f"{LEDGER_PREFIX}/{account_id}/{region}.json"
        self.location = f"s3://{bucket}/{self.key}"
        self._etag: str | None = None
        self._denied = False
        self._base: dict[str, dict] = {}

    def load(self) -> dict[str, dict]:
        self._etag, self._base = None, {}
        try:
            answer = self.s3.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            code = error_code(exc)
            if code in ("NoSuchKey", "404", "NotFound"):
                return {}
            if code in ("AccessDenied", "403"):
                # S3 answers 403, not 404, for a missing key to a role without s3:ListBucket: taken as absent; the
                # conditional create in `save` then refuses to replace a ledger that exists but cannot be read.
                self._denied = True
                return {}
            raise LedgerUnavailable(f"{self.location} cannot be read: {code}: {exc}") from None
        except BotoCoreError as exc:
            raise LedgerUnavailable(f"{self.location} cannot be read: {exc}") from None
        self._base = _parse(answer["Body"].read(), self.location)
        self._etag = answer.get("ETag")
        return dict(self._base)

    def save(self, changes: LedgerChanges, now: datetime) -> None:
        if not changes:
            return
        for attempt in range(self.ATTEMPTS):
            if attempt:
                self.load()  # written by someone else since it was read: apply the changes to the newer copy
            condition = {"IfMatch": self._etag} if self._etag else {"IfNoneMatch": "*"}
            body = _document(self.account_id, self.region, changes.apply(self._base), now)
            try:
                self.s3.put_object(
                    Bucket=self.bucket, Key=self.key, Body=body, ContentType="application/json", **condition
                )
                return
            except ClientError as exc:
                code = error_code(exc)
                if code not in self.CONFLICTS:
                    raise LedgerUnavailable(f"{self.location} not written: {code}: {exc}") from None
                if self._denied:
                    raise LedgerUnavailable(f"{self.location} exists but cannot be read (AccessDenied)") from None
            except BotoCoreError as exc:
                raise LedgerUnavailable(f"{self.location} not written: {exc}") from None
        raise LedgerUnavailable(f"{self.location} not written: it changed under each of {self.ATTEMPTS} attempts")


class FileLedger:
    """The CLI's ledger: a JSON file replaced atomically (one file per target, one writer per target)."""

    def __init__(self, directory: Path, account_id: str, region: str):
        self.account_id, self.region = account_id, region
        self.path = directory / account_id / f"{region}.json"
        self.location = str(self.path)
        self._base: dict[str, dict] = {}

    def load(self) -> dict[str, dict]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self._base = {}
            return {}
        except OSError as exc:
            raise LedgerUnavailable(f"{self.location} cannot be read: {exc.strerror or exc}") from None
        self._base = _parse(raw, self.location)
        return dict(self._base)

    def save(self, changes: LedgerChanges, now: datetime) -> None:
        if not changes:
            return
        body = _document(self.account_id, self.region, changes.apply(self._base), now)
        try:
            replace_file(self.path, body)
        except OSError as exc:
            raise LedgerUnavailable(f"{self.location} not written: {exc.strerror or exc}") from None


def local_ledger_directory() -> Path:
    """Where the CLI keeps its ledgers when no reports bucket is set."""
    return Path.home() / ".eic-guard" / LEDGER_PREFIX


def ledger_for(central: Any, settings: Settings, account_id: str, region: str) -> S3Ledger | FileLedger:
    """The reports bucket's ledger (written with the central clients) when there is a bucket, else the local file."""
    if settings.reports_bucket:
        return S3Ledger(central.client("s3"), settings.reports_bucket, account_id, region)
    return FileLedger(local_ledger_directory(), account_id, region)
