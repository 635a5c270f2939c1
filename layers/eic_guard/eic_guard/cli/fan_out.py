"""The fan-out engine in this process (plan → one worker per (account, region) in a bounded pool → aggregate), as
scan and refresh run it: progress on stderr, stopped at the next instance by Ctrl-C, and an organization that
cannot be listed as one line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import progress
from .arguments import ORGANIZATION, FanOut
from .configuration import organization_problems
from .invocation import Invocation

if TYPE_CHECKING:
    from ..aws.clients import AwsClients
    from ..fanout.local import RunOutcome
    from ..ranges.ip_ranges import IpRanges
    from ..ranges.state import FileStateStore
    from ..settings import Settings


def target_count(settings: Settings) -> int | None:
    """How many (account, region) targets the run has, when known before it is planned (not for an organization)."""
    if settings.accounts == ORGANIZATION:
        return None
    accounts = len(settings.accounts.split(",")) if settings.accounts else 1
    return accounts * len(settings.regions)


def run_fan_out(
    job: str,
    settings: Settings,
    clients: AwsClients,
    fan_out: FanOut,
    invocation: Invocation,
    *,
    ranges: IpRanges | None = None,
    store: FileStateStore | None = None,
) -> RunOutcome:
    """One run of `job` over every target; an organization without an ACTIVE account is refused by the plan, so it
    is never a green empty run. Interrupted, it returns what was done: the report is marked so."""
    from ..fanout.local import RunWatch, run_job

    with (
        organization_problems(settings, fan_out.source),
        progress.following(target_count(settings), job, invocation.verbosity) as shown,
    ):
        watch = RunWatch(on_target=shown.target_done if shown else None, progress=shown, deadline=clients.deadline)
        options = {"ranges": ranges, "store": store, "max_workers": fan_out.max_workers, "watch": watch}
        outcome = run_job(job, settings, clients, **options)
    if invocation.interrupts.requested:
        outcome.report = outcome.report.model_copy(update={"interrupted": True})
    return outcome
