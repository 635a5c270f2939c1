"""The fan-out engine in this process (plan → one worker per (account, region) in a bounded pool → aggregate), as
scan and refresh run it: with the progress on stderr and an organization that cannot be listed as one line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import progress
from .arguments import ORGANIZATION, FanOut
from .configuration import organization_problems

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
    *,
    ranges: IpRanges | None = None,
    store: FileStateStore | None = None,
) -> RunOutcome:
    """One run of `job` over every target; an organization without an ACTIVE account is refused by the plan, so it
    is never a green empty run."""
    from ..fanout.local import run_job

    verb = "scanned" if job == "scan" else "refreshed"
    with (
        organization_problems(settings, fan_out.source),
        progress.progress(target_count(settings), verb) as advance,
    ):
        return run_job(
            job, settings, clients, ranges=ranges, store=store, max_workers=fan_out.max_workers, on_target=advance
        )
