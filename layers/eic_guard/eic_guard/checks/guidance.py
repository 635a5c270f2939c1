"""What a person should do about a check that does not pass (DESIGN §5b `guidance`)."""

from __future__ import annotations

from ..models import CheckResult

SILENT = ("pass", "not-applicable")


def guidance_for(check_id: str, result: CheckResult) -> str | None:
    """One or two sentences with an AWS documentation URL, for every status other than pass and not-applicable."""
    if result.status in SILENT:
        return None
    return None
