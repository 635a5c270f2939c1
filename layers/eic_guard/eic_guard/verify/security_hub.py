"""Security Hub where the findings go (SecurityHubFindings=enabled): enabled in every target, as the verify job's
`securityhub:DescribeHub` in each target says (verify/probes.py)."""

from __future__ import annotations

from .checklist import FAIL, PASS, SKIP, Item

DESCRIBE_HUB = "securityhub:DescribeHub"
SETTING_UP = "https://docs.aws.amazon.com/securityhub/latest/userguide/securityhub-settingup.html"


def not_enabled(problem: dict) -> bool:
    """A DescribeHub problem that says the hub is off (InvalidAccessException: not subscribed)."""
    return problem["action"] == DESCRIBE_HUB and "not enabled" in problem.get("reason", "")


def not_enabled_item(problem: dict, targets: str, where: str) -> Item:
    return Item(
        "security-hub",
        FAIL,
        targets,
        f"Security Hub is not enabled where findings go: {where}",
        fix="enable Security Hub in those accounts and regions (or set SecurityHubFindings=disabled)",
        url=SETTING_UP,
    )


def summary_item(findings_on: bool, problems: list[dict]) -> Item | None:
    """The line for every target at once: skipped when findings are off, passing when no target said otherwise
    (a target that did has its own failing line)."""
    if not findings_on:
        return Item("security-hub", SKIP, "every target", "SecurityHubFindings=disabled")
    if any(p["action"] == DESCRIBE_HUB and p["outcome"] != "untested" for p in problems):
        return None
    return Item("security-hub", PASS, "every target", "Security Hub is enabled where findings go")
