"""The EIC prerequisites of both connect paths (docs/architecture.md §2, §13), one module each, in the order they are
reported. A check may name its connect paths (`PATHS`, default both): the endpoint checks are reported only for
endpoint-path instances; the public path's own checks are `not-applicable` on the endpoint path
(checks/connect_path.py).

Every check module has the same interface: `ID`, `TITLE` (what it asks, in a line: SARIF rules), `PERMISSIONS`
(reads), `REMEDIATION_PERMISSIONS` (writes) and a pure `evaluate(instance, ctx) -> CheckResult`; a failing result
may carry a `Fix` the gateway executes. A check that passes only with another one names it in `NEEDS`: its fix does
not make it `fixed` while that one is neither passing nor fixed, and a pass on the strength of that one's planned fix
(fact `planned`) becomes the check's `unplanned(result, waiting)` failure (engine.py).
"""

from . import (
    al2023_ami,
    eic_ssh_ingress,
    endpoint_present,
    endpoint_ssh_egress,
    endpoint_ssh_ingress,
    imds_enabled,
    internet_route,
    network_acl,
    public_ipv4,
)
from .base import INVENTORY_PERMISSIONS, CheckContext

ALL_CHECKS = (
    public_ipv4,
    eic_ssh_ingress,
    endpoint_present,
    endpoint_ssh_ingress,
    endpoint_ssh_egress,
    al2023_ami,
    imds_enabled,
    internet_route,
    network_acl,
)
CHECK_IDS = tuple(check.ID for check in ALL_CHECKS)


def check_ids_for(path: str) -> tuple[str, ...]:
    """The checks an instance of this connect path is reported with, in report order."""
    return tuple(check.ID for check in ALL_CHECKS if path in getattr(check, "PATHS", ("public", "endpoint")))


def required_actions(remediate: bool = True) -> set[str]:
    """Every IAM action a scan may call (reads, plus writes when it remediates)."""
    actions = set(INVENTORY_PERMISSIONS)
    for check in ALL_CHECKS:
        actions.update(check.PERMISSIONS)
        if remediate:
            actions.update(check.REMEDIATION_PERMISSIONS)
    return actions


__all__ = ["ALL_CHECKS", "CHECK_IDS", "CheckContext", "check_ids_for", "required_actions"]
