"""`eic-guard refresh`: apply the current EIC ranges to eic-guard's managed groups (the SNS path's rules)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from ..errors import ConfigurationError
from . import exit_codes
from .arguments import (
    EPILOG,
    FanOut,
    add_ip_ranges_argument,
    add_state_file_argument,
    add_target_arguments,
    resolve_fan_out,
    state_file,
)
from .configuration import configure, connect
from .fan_out import run_fan_out
from .invocation import Invocation
from .verbosity import add_verbosity_arguments

if TYPE_CHECKING:
    from ..aws.clients import AwsClients
    from ..ranges.ip_ranges import IpRanges
    from ..ranges.state import FileStateStore
    from ..settings import Settings

NAME = "refresh"


def add_parser(commands: argparse._SubParsersAction) -> None:
    refresh = commands.add_parser(
        NAME,
        help="apply the current EIC ranges to eic-guard's managed groups",
        description="Apply the current EIC ranges to eic-guard's ManagedBy=eic-guard security groups (the SNS "
        "path's rules; the same synctoken is re-applied). Concurrent refreshes on one state file take turns.",
        epilog=EPILOG + exit_codes.help_text(exit_codes.REFRESH),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_arguments(refresh, "refresh")
    add_ip_ranges_argument(refresh)
    refresh.add_argument("--md5", metavar="HEX", help="expected md5 of the file (as in the SNS message)")
    add_state_file_argument(refresh, "FILE.lock serializes runs")
    add_verbosity_arguments(refresh)


def run(args: argparse.Namespace, invocation: Invocation) -> int:
    from ..ranges import ip_ranges
    from ..ranges.refresh import apply_ranges, require_eic
    from ..ranges.state import FileStateStore, StateConflict

    fan_out = resolve_fan_out(args)
    path = state_file(args)
    session, settings = configure(args, "remediate", fan_out)
    ranges = ip_ranges.load(args.ip_ranges, expected_md5=args.md5)
    require_eic(ranges)
    store = FileStateStore(path)
    store.check()  # a corrupt state or an unwritable directory is found now, not after EC2 was changed
    clients = connect(session, settings, invocation)

    def waiting() -> None:
        invocation.verbosity.say(f"eic-guard: waiting for {store.lock_path}: another refresh is running")

    try:
        with store.locked(on_wait=waiting):
            if settings.accounts:
                summary = _refresh_accounts(settings, clients, store, ranges, fan_out, invocation)
            else:  # the caller's own account, as always: the state advances only once every region is done
                summary = apply_ranges(clients, settings, store, ranges, replay_same=True).summary()
    except StateConflict as exc:  # another writer that does not take the lock (e.g. an older eic-guard)
        raise ConfigurationError(f"{exc}: another run updated the state meanwhile; run the refresh again") from None
    print(json.dumps(summary, indent=2))
    for alert in summary.get("alerts", ()):
        print(f"eic-guard: alert: {alert}", file=sys.stderr)
    if invocation.interrupts.requested:  # what was applied is above; the next refresh or nightly run completes it
        print(f"eic-guard: {invocation.interrupts.signal_name}: refresh interrupted", file=sys.stderr)
        return exit_codes.INTERRUPTED
    return exit_codes.FINDINGS if summary.get("alerts") else exit_codes.OK


def _refresh_accounts(
    settings: Settings,
    clients: AwsClients,
    store: FileStateStore,
    ranges: IpRanges,
    fan_out: FanOut,
    invocation: Invocation,
) -> dict:
    """The refresh of several accounts (the SNS path's fan-out, docs/architecture.md §9): the state file advances
    once with the verified file, then every (account, region) brings its managed groups to it, adds before revokes.
    A target that fails is an alert; the next refresh or nightly run computes its writes from its groups' actual
    rules. An older synctoken than the state's is a stale no-op; the same one is re-applied (repairs drift by
    hand)."""
    from datetime import UTC, datetime

    from ..ranges.catch_up import advance_state

    state = store.load()
    previous = state.sync_token
    if previous is not None and not state.is_newer(ranges.sync_token) and int(ranges.sync_token) != int(previous):
        return {"status": "stale", "sync_token": ranges.sync_token, "stored_sync_token": previous, "alerts": []}
    advance_state(state, ranges, settings, datetime.now(UTC))
    store.save(state, previous)
    outcome = run_fan_out("refresh", settings, clients, fan_out, invocation, store=store)
    return {**(outcome.refresh or {}), "targets": [t.model_dump(mode="json") for t in outcome.report.targets]}
