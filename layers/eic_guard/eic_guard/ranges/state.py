"""What eic-guard remembers between runs about ip-ranges.json: last synctoken, EIC prefixes, when each was seen.

Deployed, the state is one DynamoDB item written with a conditional put; the CLI keeps the same document in a file.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from ..errors import ConfigurationError
from ..local_files import replace_file
from ..models import EicPrefixes
from .ip_ranges import IpRanges

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock; a concurrent save still fails with StateConflict
    fcntl = None  # type: ignore[assignment]

STATE_ITEM_ID = "ip-ranges#state"


class StateConflict(Exception):
    """Another run advanced the state between our read and our write."""


class RangesState(BaseModel):
    """The remembered ip-ranges: identity, current EIC prefixes per region, when each prefix was last seen and
    since when a prefix that disappeared has been absent (its grace period runs from then)."""

    model_config = ConfigDict(extra="ignore", defer_build=True)  # validators built on first use: the worker uses none

    sync_token: str | None = None
    create_date: str | None = None
    md5: str | None = None
    current: dict[str, list[str]] = Field(default_factory=dict)  # region -> prefixes in the last applied file
    last_seen: dict[str, dict[str, datetime]] = Field(default_factory=dict)  # region -> prefix -> last seen
    absent_since: dict[str, dict[str, datetime]] = Field(default_factory=dict)  # region -> prefix -> first missed
    updated_at: datetime | None = None
    # Set by DynamoDbStateStore.load when the stored item was not a valid state: this state is then empty, and its
    # next save replaces that very item (docs/architecture.md §9, failure paths). Never serialized.
    _corrupt: CorruptItem | None = PrivateAttr(default=None)

    @field_validator("sync_token")
    @classmethod
    def _numeric_sync_token(cls, value: str | None) -> str | None:
        # is_newer compares synctokens as numbers: refuse at the read rather than fail in the middle of a run
        if value is not None and not (value.isascii() and value.isdigit()):
            raise ValueError(f"{value[:40]!r} is not a number")
        return value

    @field_validator("current")
    @classmethod
    def _current_networks(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for prefixes in value.values():
            for prefix in prefixes:
                _network(prefix)
        return value

    @field_validator("last_seen", "absent_since")
    @classmethod
    def _clock_networks(cls, value: dict[str, dict[str, datetime]]) -> dict[str, dict[str, datetime]]:
        for clocks in value.values():
            for prefix in clocks:
                _network(prefix)
        return value

    @property
    def corrupt(self) -> CorruptItem | None:
        """What was wrong with the stored item this (empty) state stands for; None for a state read as it was."""
        return self._corrupt

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


def _network(prefix: str) -> None:
    try:
        ipaddress.ip_network(prefix)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{prefix!r} is not a CIDR prefix: {exc}") from None


@dataclass(frozen=True)
class CorruptItem:
    """A state item that is not a valid state (not JSON, the wrong shape, a bad CIDR, no document): the reason, and
    the document as stored (None when there is none) so that only that item is replaced."""

    reason: str
    document: str | None


class StateStore(Protocol):
    def load(self) -> RangesState: ...

    def save(self, state: RangesState, previous_token: str | None) -> None: ...


class StateFileError(ConfigurationError):
    """The CLI's state file or its directory cannot be used; the message names the path and what is wrong."""


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


class FileStateStore:
    """The CLI's state: a JSON file replaced atomically, and a sibling `<file>.lock` that serializes refreshes.

    Every problem with the file or its directory is a StateFileError (a ConfigurationError) naming the path, so the
    CLI can say it in one line; `check` lets the CLI find such a problem before it touches AWS, because a refresh that
    only fails at `save` has already changed EC2 without recording it.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def _problem(self, what: str) -> StateFileError:
        return StateFileError(f"state file {self.path} {what}")

    def check(self) -> None:
        """Fail now rather than after EC2 was changed: the state must be readable and its directory writable."""
        self.load()
        self._check_directory()

    def load(self) -> RangesState:
        """The stored state. A missing file is a fresh state; an empty, unreadable or malformed one is an error,
        never silently a fresh state (that would forget when each prefix was last seen and restart grace periods)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return RangesState()
        except IsADirectoryError:
            raise self._problem("is a directory, not a state file") from None
        except NotADirectoryError:
            self._check_directory()  # names the file in the way
            raise self._problem("cannot be read: a parent is not a directory") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise self._problem(f"cannot be read: {_reason(exc)}") from None
        if not text.strip():
            raise self._problem("is empty (a missing file is a fresh state: delete it to start over)")
        try:
            state = RangesState.model_validate_json(text)
        except ValidationError as exc:
            raise self._problem(f"is not an eic-guard state document: {_first_problem(exc)}") from None
        return state

    def _check_directory(self) -> None:
        """The directory must exist and take a new file, or be creatable under its nearest existing ancestor."""
        directory = self.path.parent
        existing = directory
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise self._problem(f"cannot be written: {existing} is not a directory")
        if existing != directory:
            if not os.access(existing, os.W_OK | os.X_OK):
                raise self._problem(f"cannot be written: cannot create {directory} in {existing}")
            return
        try:  # os.access can be wrong (read-only file systems, ACLs): create and remove a real file
            handle, probe = tempfile.mkstemp(dir=directory, prefix=".state-probe-")
        except OSError as exc:
            raise self._problem(f"cannot be written: {directory}: {_reason(exc)}") from None
        os.close(handle)
        os.unlink(probe)

    @contextmanager
    def locked(self, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold an exclusive lock for a whole load → apply → save; `on_wait` is called if another holder is there.

        Two CLI refreshes on one state file would otherwise read the same state, and the second would fail its save
        with StateConflict after changing EC2. With the lock the second waits, then reads the first's state and
        replays it. The lock is an advisory flock on a separate file, never replaced or deleted, because the state
        file itself is replaced by a rename at every save; the kernel releases it when its holder exits or dies.
        """
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise self._problem(f"cannot be locked: {self.lock_path}: {_reason(exc)}") from None
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if on_wait is not None:
                        on_wait()
                    fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # releases the lock

    def save(self, state: RangesState, previous_token: str | None) -> None:
        """Replace the file atomically, unless another run advanced it since `previous_token` was read."""
        if self.load().sync_token != previous_token:
            raise StateConflict(f"{self.path} changed during the run")
        try:
            replace_file(self.path, state.model_dump_json(indent=2).encode("utf-8"))
        except OSError as exc:
            raise self._problem(f"cannot be written: {_reason(exc)}") from None


class DynamoDbStateStore:
    """The deployed state: one item in the state table, replaced only if nobody else advanced it meanwhile."""

    def __init__(self, dynamodb: Any, table_name: str):
        self.dynamodb = dynamodb
        self.table_name = table_name

    def load(self) -> RangesState:
        """The stored state. An item that is not a valid state is read as no state, marked `corrupt`: the state is a
        cache of a verified file, so the run rebuilds it from a verified download and its save replaces the item."""
        item = self.dynamodb.get_item(
            TableName=self.table_name, Key={"id": {"S": STATE_ITEM_ID}}, ConsistentRead=True
        ).get("Item")
        if not item:
            return RangesState()
        document = item.get("document", {}).get("S")
        if document is None:
            return _corrupt_state("the item has no document", None)
        try:
            return RangesState.model_validate_json(document)
        except ValidationError as exc:
            return _corrupt_state(_first_problem(exc), document)

    def save(self, state: RangesState, previous_token: str | None) -> None:
        # Without a token, the item must be absent or hold no file yet (sync_token "": written for an empty state).
        condition = "attribute_not_exists(id) OR sync_token = :none"
        values: dict[str, Any] = {":none": {"S": ""}}
        if state.corrupt is not None:  # replace the corrupt item read, and only it (not one repaired meanwhile)
            if state.corrupt.document is None:
                condition, values = (
                    "attribute_not_exists(document) OR NOT attribute_type(document, :s)",
                    {":s": {"S": "S"}},
                )
            else:
                condition, values = "document = :corrupt", {":corrupt": {"S": state.corrupt.document}}
        elif previous_token is not None:
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
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise StateConflict("the ip-ranges state was advanced by another run") from None
            raise
        state._corrupt = None  # the item is valid from now on


def _corrupt_state(reason: str, document: str | None) -> RangesState:
    state = RangesState()
    state._corrupt = CorruptItem(reason, document)
    return state


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def state_summary(state: RangesState) -> dict[str, Any]:
    return json.loads(state.model_dump_json(include={"sync_token", "create_date", "updated_at"}))
