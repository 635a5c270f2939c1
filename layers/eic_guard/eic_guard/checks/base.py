"""What every check receives: the target's snapshot, its EIC prefixes and the settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..models import CheckResult, EicPrefixes, Fix, Instance, TargetSnapshot
from ..settings import Settings

# The inventory's look-up of near-miss opt-in tags (aws/inventory.py): every whole-region scan, never a scan of
# given instances (an event-driven check).
NEAR_MISS_PERMISSIONS = ("ec2:DescribeTags",)
# Read actions every scan needs whatever the checks: the inventory's DescribeInstances, and the near-miss look-up.
INVENTORY_PERMISSIONS = ("ec2:DescribeInstances", *NEAR_MISS_PERMISSIONS)


@dataclass(frozen=True)
class CheckContext:
    snapshot: TargetSnapshot
    eic: EicPrefixes
    settings: Settings
    # What a check worked out for one combination of its inputs (a subnet, a set of groups), reused for every
    # instance that shares it: a fleet has few of them. Lives as long as this context, i.e. one target's scan.
    memo: dict = field(default_factory=dict, compare=False, repr=False)


def passed(reason: str | None = None) -> CheckResult:
    return CheckResult("pass", reason)


def failed(reason: str, fix: Fix | None = None) -> CheckResult:
    return CheckResult("fail", reason, fix)


def not_applicable(reason: str) -> CheckResult:
    return CheckResult("not-applicable", reason)


# The kind of every check that needs the EIC ranges when there are none to judge by (no verified file and no stored
# state yet, e.g. a fresh deployment's first event): an error that says why, never a failure.
RANGES_UNAVAILABLE = "ranges-unavailable"


def ranges_unavailable(eic: EicPrefixes, warnings: tuple[str, ...] = ()) -> CheckResult:
    return CheckResult(
        "error",
        f"the EC2_INSTANCE_CONNECT ranges are unavailable ({eic.unavailable})",
        kind=RANGES_UNAVAILABLE,
        facts=(("region", eic.region), ("error", eic.unavailable or "")),
        warnings=warnings,
    )


__all__ = [
    "INVENTORY_PERMISSIONS",
    "RANGES_UNAVAILABLE",
    "CheckContext",
    "CheckResult",
    "Instance",
    "failed",
    "not_applicable",
    "passed",
    "ranges_unavailable",
]
