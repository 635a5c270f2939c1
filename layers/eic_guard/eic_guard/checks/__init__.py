"""The six EIC prerequisites, one module each, in the order they are reported.

Every check module has the same interface: `ID`, `TITLE` (what it asks, in a line: SARIF rules), `PERMISSIONS`
(reads), `REMEDIATION_PERMISSIONS` (writes) and a pure `evaluate(instance, ctx) -> CheckResult`; a failing result
may carry a `Fix` the gateway executes.
"""

from . import al2023_ami, eic_ssh_ingress, imds_enabled, internet_route, network_acl, public_ipv4
from .base import INVENTORY_PERMISSIONS, CheckContext

ALL_CHECKS = (public_ipv4, eic_ssh_ingress, al2023_ami, imds_enabled, internet_route, network_acl)
CHECK_IDS = tuple(check.ID for check in ALL_CHECKS)


def required_actions(remediate: bool = True) -> set[str]:
    """Every IAM action a scan may call (reads, plus writes when it remediates)."""
    actions = set(INVENTORY_PERMISSIONS)
    for check in ALL_CHECKS:
        actions.update(check.PERMISSIONS)
        if remediate:
            actions.update(check.REMEDIATION_PERMISSIONS)
    return actions


__all__ = ["ALL_CHECKS", "CHECK_IDS", "CheckContext", "required_actions"]
