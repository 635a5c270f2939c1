"""Typed models of the events the handlers accept (Powertools parser models, adjusted to what AWS really sends)."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.parser import ValidationError, parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import field_validator

from .errors import EicGuardError


class InvalidEvent(EicGuardError):
    """The invocation event is not what the handler accepts."""


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
