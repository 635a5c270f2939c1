"""What eic-guard remembers between runs about ip-ranges.json: last synctoken, EIC prefixes, when each was seen.

Deployed, the state is one DynamoDB item written with a conditional put; the CLI keeps the same document in a file.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field

from .ip_ranges import IpRanges
from .models import EicPrefixes

STATE_ITEM_ID = "ip-ranges#state"


class StateConflict(Exception):
    """Another run advanced the state between our read and our write."""


class RangesState(BaseModel):
    """The remembered ip-ranges: identity, current EIC prefixes per region, when each prefix was last seen and
    since when a prefix that disappeared has been absent (its grace period runs from then)."""

    model_config = ConfigDict(extra="ignore")

    sync_token: str | None = None
    create_date: str | None = None
    md5: str | None = None
    current: dict[str, list[str]] = Field(default_factory=dict)  # region -> prefixes in the last applied file
    last_seen: dict[str, dict[str, datetime]] = Field(default_factory=dict)  # region -> prefix -> last seen
    absent_since: dict[str, dict[str, datetime]] = Field(default_factory=dict)  # region -> prefix -> first missed
    updated_at: datetime | None = None

    def is_newer(self, sync_token: str) -> bool:
        """True when `sync_token` is newer than the remembered one (synctokens are epoch seconds)."""
        return self.sync_token is None or int(sync_token) > int(self.sync_token)

    def as_ip_ranges(self) -> IpRanges | None:
        """The remembered EIC prefixes as an IpRanges (the nightly run reuses them when the file is unchanged)."""
        if self.sync_token is None:
            return None
        eic = {}
        for region, prefixes in self.current.items():
            networks = [ipaddress.ip_network(p) for p in prefixes]
            eic[region] = EicPrefixes(
                region,
                tuple(sorted(n for n in networks if n.version == 4)),
                tuple(sorted(n for n in networks if n.version == 6)),
            )
        return IpRanges(self.sync_token, self.create_date or "", self.md5 or "", eic)


class StateStore(Protocol):
    def load(self) -> RangesState: ...

    def save(self, state: RangesState, previous_token: str | None) -> None: ...


class FileStateStore:
    """The CLI's state: a JSON file replaced atomically."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> RangesState:
        if not self.path.exists():
            return RangesState()
        return RangesState.model_validate_json(self.path.read_text(encoding="utf-8"))

    def save(self, state: RangesState, previous_token: str | None) -> None:
        if self.load().sync_token != previous_token:
            raise StateConflict(f"{self.path} changed during the run")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".state-")
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(state.model_dump_json(indent=2))
        os.replace(temporary, self.path)


class DynamoDbStateStore:
    """The deployed state: one item in the state table, replaced only if nobody else advanced it meanwhile."""

    def __init__(self, dynamodb: Any, table_name: str):
        self.dynamodb = dynamodb
        self.table_name = table_name

    def load(self) -> RangesState:
        item = self.dynamodb.get_item(
            TableName=self.table_name, Key={"id": {"S": STATE_ITEM_ID}}, ConsistentRead=True
        ).get("Item")
        if not item:
            return RangesState()
        return RangesState.model_validate_json(item["document"]["S"])

    def save(self, state: RangesState, previous_token: str | None) -> None:
        condition, values = "attribute_not_exists(id)", {}
        if previous_token is not None:
            condition, values = "sync_token = :previous", {":previous": {"S": previous_token}}
        try:
            self.dynamodb.put_item(
                TableName=self.table_name,
                Item={
                    "id": {"S": STATE_ITEM_ID},
                    "sync_token": {"S": state.sync_token or ""},
                    "document": {"S": state.model_dump_json()},
                },
                ConditionExpression=condition,
                **({"ExpressionAttributeValues": values} if values else {}),
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise StateConflict("the ip-ranges state was advanced by another run") from None
            raise


def state_summary(state: RangesState) -> dict[str, Any]:
    return json.loads(state.model_dump_json(include={"sync_token", "create_date", "updated_at"}))
