"""Bounded state payloads (docs/architecture.md §15): what a Lambda step returns to Step Functions is counts, object
keys and short samples, never a list that grows with the fleet or its failures. Step Functions refuses a state
output over 256 KiB (the run would fail at its last step, after the report is written); eic-guard keeps each under
PAYLOAD_LIMIT whatever the number of targets, accounts or failures. The whole lists are in the run's S3 objects
(the report, the refresh report)."""

from __future__ import annotations

import json
from typing import Any

PAYLOAD_LIMIT = 16 * 1024  # bytes of JSON, far below Step Functions' 256 KiB
SAMPLE = 5  # items a list keeps in a payload: the first ones (the lists come worst or most recent first)
TEXT_LIMIT = 240  # characters of one sampled text (an AWS error can carry kilobytes of encoded detail)


def clip(text: Any, limit: int = TEXT_LIMIT) -> Any:
    return text[: limit - 1] + "…" if isinstance(text, str) and len(text) > limit else text


def sampled(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with each list cut to its first SAMPLE items (texts clipped) beside `<key>_total`, its length."""
    out: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, list):
            out[key] = [clip(item) for item in value[:SAMPLE]]
            out[f"{key}_total"] = len(value)
        else:
            out[key] = clip(value)
    return out


def size_of(payload: Any) -> int:
    """The payload's size as Step Functions counts it: its JSON text in UTF-8."""
    return len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
