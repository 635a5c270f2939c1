"""What every check receives: the target's snapshot, its EIC prefixes and the settings."""

from __future__ import annotations

from dataclasses import dataclass

from ..models import CheckResult, EicPrefixes, Fix, Instance, TargetSnapshot
from ..settings import Settings

# Read actions every scan needs whatever the checks: the inventory's DescribeInstances.
INVENTORY_PERMISSIONS = ("ec2:DescribeInstances",)


@dataclass(frozen=True)
class CheckContext:
    snapshot: TargetSnapshot
    eic: EicPrefixes
    settings: Settings


def passed(reason: str | None = None) -> CheckResult:
    return CheckResult("pass", reason)


def failed(reason: str, fix: Fix | None = None) -> CheckResult:
    return CheckResult("fail", reason, fix)


def not_applicable(reason: str) -> CheckResult:
    return CheckResult("not-applicable", reason)


__all__ = ["CheckContext", "CheckResult", "Instance", "INVENTORY_PERMISSIONS", "passed", "failed", "not_applicable"]
