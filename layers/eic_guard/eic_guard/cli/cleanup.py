"""`eic-guard cleanup`: uninstall what eic-guard put in the accounts (docs/architecture.md §12)."""

from __future__ import annotations

import argparse
import json
import sys

from .arguments import EPILOG, add_target_arguments, resolve_fan_out
from .configuration import configure, connect, organization_problems
from .invocation import Invocation

NAME = "cleanup"


def add_parser(commands: argparse._SubParsersAction) -> None:
    cleanup = commands.add_parser(
        NAME,
        help="uninstall: detach and delete eic-guard's groups, release its Elastic IPs (run before sam delete)",
        description="Detach the eic-guard-ssh groups tagged ManagedBy=eic-guard from every network interface "
        "(keeping its other groups), delete them, and release the Elastic IPs tagged ManagedBy=eic-guard. Nothing "
        "without that tag is touched. Exit 0 when everything was done (or planned), 1 when something failed or "
        "was kept (an interface whose only group is eic-guard-ssh), 2 on a usage or configuration error.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_arguments(
        cleanup, "clean up", role_note="; it needs ec2:DeleteSecurityGroup, which the member role does not grant"
    )
    cleanup.add_argument("--dry-run", action="store_true", help="list what would be done, change nothing")
    cleanup.add_argument("--format", choices=("table", "json"), default="table")


def run(args: argparse.Namespace, invocation: Invocation) -> int:
    from ..cleanup import exit_status, render_table, run_cleanup

    fan_out = resolve_fan_out(args)
    session, settings = configure(args, "report", fan_out)
    clients = connect(session, settings)
    with organization_problems(settings, fan_out.source):
        actions = run_cleanup(clients, settings, dry_run=args.dry_run, max_workers=fan_out.max_workers)
    if args.format == "json":
        json.dump([action.to_dict() for action in actions], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render_table(actions, sys.stdout, dry_run=args.dry_run)
    return exit_status(actions)
