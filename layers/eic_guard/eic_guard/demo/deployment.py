"""The demo's last act: `eic-guard verify` on a simulated deployment of the stack (docs/architecture.md §16), in the
organization of the previous acts - once healthy, once with a member role missing a permission and the alerts mail
not confirmed."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from ..simulated_stack import Simulation, deploy
from .environment import REGION, patched_environ
from .transcript import Cli, heading, redirect_stdout_and_capture

if TYPE_CHECKING:
    from .organization import OrganizationFleet

VERIFY_HEADINGS = (
    "9. after deploying: eic-guard verify (a simulated deployment of the stack, Accounts=organization)",
    "10. eic-guard verify again: payments' member role lacks ec2:ModifyInstanceMetadataOptions, the alerts mail is "
    "not confirmed",
)
ALERT_EMAIL = "security@example.com"
REFUSED = "ModifyInstanceMetadataOptions"


def verify_act(cli: Cli, fleet: OrganizationFleet) -> list[str]:
    """Deploy the simulated stack in the management account, verify it (exit 0), then break two things and verify
    again (exit 1, both named)."""
    organization_id = fleet.session.client("organizations").describe_organization()["Organization"]["Id"]
    simulation = Simulation()
    problems = []
    with simulation.installed():
        stack = deploy(fleet.session, Accounts="organization", OrganizationId=organization_id, AlertEmail=ALERT_EMAIL)
        with patched_environ(stack.function_environment()):
            heading(VERIFY_HEADINGS[0])
            code, out = _verify(cli)
            if code != 0 or "all good" not in out:
                problems.append(f"verify of the healthy deployment exited {code}, expected 0")
            payments = fleet.accounts["payments"]
            simulation.refuse(REFUSED, fleet.instances[payments])
            simulation.pending.add(ALERT_EMAIL)
            heading(VERIFY_HEADINGS[1])
            code, out = _verify(cli)
            expected = (
                f"member role ec2:{REFUSED}",
                f"denied in 1 target: {payments}/{REGION}",
                f"email:{ALERT_EMAIL}",
            )
            words = " ".join(out.split())  # the table wraps its columns
            if code != 1 or not all(text in words for text in expected):
                problems.append(f"verify of the broken deployment exited {code} without naming {expected}")
    for problem in problems:
        print(f"  UNEXPECTED: {problem}")
    return problems


def _verify(cli: Cli) -> tuple[int, str]:
    print("  eic-guard verify")
    out = io.StringIO()
    with redirect_stdout_and_capture(out):
        code = cli(["verify"])
    print(out.getvalue(), end="")
    print(f"  (eic-guard verify exit code {code})")
    return code, out.getvalue()
