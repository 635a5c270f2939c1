"""`eic-guard cleanup`: uninstall what eic-guard put in the accounts (docs/architecture.md §12)."""

from __future__ import annotations

import argparse
import json
import sys

from . import exit_codes
from .arguments import EPILOG, add_target_arguments, resolve_fan_out
from .configuration import configure, connect, organization_problems
from .invocation import Invocation
from .verbosity import add_verbosity_arguments

NAME = "cleanup"


def add_parser(commands: argparse._SubParsersAction) -> None:
    cleanup = commands.add_parser(
        NAME,
        help="uninstall: delete eic-guard's endpoints and groups, release its Elastic IPs (run before sam delete)",
        description="Delete the EC2 Instance Connect Endpoints tagged ManagedBy=eic-guard (and wait, boundedly, for "
        "their deletion), detach the eic-guard-ssh, eic-guard-eice-ssh and eic-guard-eice groups tagged "
        "ManagedBy=eic-guard from every instance's network interface (keeping its other groups), delete them, and "
        "release the Elastic IPs tagged ManagedBy=eic-guard. Nothing without that tag is touched. On a terminal it "
        "shows the plan and asks before changing anything.",
        epilog=EPILOG + exit_codes.help_text(exit_codes.CLEANUP),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_arguments(
        cleanup,
        "clean up",
        role_note="; it needs ec2:DeleteSecurityGroup and ec2:DeleteInstanceConnectEndpoint, which the member role "
        "does not grant",
    )
    cleanup.add_argument("--dry-run", action="store_true", help="list what would be done, change nothing")
    cleanup.add_argument(
        "-y", "--yes", action="store_true", help="do not ask on a terminal (without a terminal it never asks)"
    )
    cleanup.add_argument("--format", choices=("table", "json"), default="table")
    add_verbosity_arguments(cleanup)


def run(args: argparse.Namespace, invocation: Invocation) -> int:
    from ..cleanup import exit_status, run_cleanup

    fan_out = resolve_fan_out(args)
    session, settings = configure(args, "report", fan_out)
    clients = connect(session, settings, invocation)

    def cleanup(dry_run: bool) -> list:
        with organization_problems(settings, fan_out.source):
            return run_cleanup(clients, settings, dry_run=dry_run, max_workers=fan_out.max_workers)

    if not args.dry_run and not args.yes and sys.stdin.isatty():
        plan = cleanup(dry_run=True)
        if not plan:
            _show(plan, args.format, dry_run=True)
            return exit_codes.OK
        if not _confirmed(plan):
            print("eic-guard: cleanup declined: nothing changed", file=sys.stderr)
            return exit_codes.USAGE
    actions = cleanup(dry_run=args.dry_run)
    _show(actions, args.format, dry_run=args.dry_run)
    if invocation.interrupts.requested:
        print(f"eic-guard: {invocation.interrupts.signal_name}: cleanup interrupted", file=sys.stderr)
        return exit_codes.INTERRUPTED
    return exit_status(actions)


def _show(actions: list, fmt: str, dry_run: bool) -> None:
    from ..cleanup import render_table

    if fmt == "json":
        json.dump([action.to_dict() for action in actions], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render_table(actions, sys.stdout, dry_run=dry_run)


def _confirmed(plan: list) -> bool:
    """The plan on stderr (standard output stays the result), then one question; anything but yes is a no."""
    from ..cleanup import render_table

    render_table(plan, sys.stderr, dry_run=True)
    sys.stderr.write(f"Remove these {len(plan)} eic-guard resources? [y/N] ")
    sys.stderr.flush()
    try:
        answer = input()
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")
