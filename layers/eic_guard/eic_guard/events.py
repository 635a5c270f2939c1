"""Typed models of the events the handlers accept (Powertools parser models, adjusted to what AWS really sends)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from aws_lambda_powertools.utilities.parser import ValidationError, parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel, SnsModel
from pydantic import BaseModel, ConfigDict, Field, field_validator

# InvalidEvent lives in errors.py: a handler that parses no event (the target worker) skips Powertools' parser models.
from .errors import InvalidEvent


class ScheduledEvent(EventBridgeModel):
    """An EventBridge rule or EventBridge Scheduler event.

    Scheduler (SAM ScheduleV2) sends `detail` as the *string* "{}", which the stock model rejects.
    """

    detail: dict[str, Any]

    @field_validator("detail", mode="before")
    @classmethod
    def _detail_may_be_json_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value or "{}")
            except ValueError:
                raise ValueError("detail is neither an object nor JSON text") from None
        return value


def parse_scheduled_event(event: Any) -> ScheduledEvent:
    try:
        return parse(event=event, model=ScheduledEvent)
    except (ValidationError, ValueError, TypeError) as exc:
        raise InvalidEvent(f"not a scheduled event: {exc}") from None


class IpSpaceChange(BaseModel):
    """The Message of an AmazonIpSpaceChanged notification. Its `url` is recorded but never followed."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    create_time: str = Field(alias="create-time")
    synctoken: str = Field(pattern=r"^\d{1,20}$")
    md5: str = Field(pattern=r"^[0-9a-fA-F]{32}$")
    url: str | None = None

    @field_validator("create_time")
    @classmethod
    def _known_time_format(cls, value: str) -> str:
        if _AWS_CREATE_TIME.match(value):
            try:  # the pattern alone would take 2026-99-99-99-99-99
                datetime.strptime(value, "%Y-%m-%d-%H-%M-%S")
            except ValueError:
                raise ValueError("create-time YYYY-MM-DD-hh-mm-ss is not a real date and time") from None
            return value
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("create-time is neither YYYY-MM-DD-hh-mm-ss nor ISO 8601") from None
        return value


_AWS_CREATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}$")


def parse_ip_space_notification(event: Any, allowed_topics: tuple[str, ...]) -> IpSpaceChange:
    """The verified change announced by an SNS → Lambda event; InvalidEvent (with a reason) otherwise."""
    try:
        envelope = SnsModel.model_validate(event)
    except (ValidationError, ValueError, TypeError) as exc:
        raise InvalidEvent(f"not an SNS event: {_first_error(exc)}", reason="malformed-event") from None
    if len(envelope.Records) != 1:
        raise InvalidEvent(f"expected one SNS record, got {len(envelope.Records)}", reason="malformed-event")
    notification = envelope.Records[0].Sns
    if notification.TopicArn not in allowed_topics:
        raise InvalidEvent(
            f"notification from {notification.TopicArn}, not from {', '.join(allowed_topics)}", reason="foreign-topic"
        )
    try:
        return IpSpaceChange.model_validate_json(notification.Message)
    except (ValidationError, ValueError) as exc:
        raise InvalidEvent(
            f"malformed AmazonIpSpaceChanged message: {_first_error(exc)}", reason="malformed-message"
        ) from None


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc']) or 'event'}: {first['msg']}"
    return str(exc)
