"""`eic-guard verify`: a read-only health check of a deployed stack (docs/architecture.md §16)."""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from . import exit_codes
from .interrupts import Interrupted
from .invocation import Invocation
from .verbosity import add_verbosity_arguments

NAME = "verify"
SAMCONFIG = "samconfig.toml"
DEFAULT_TIMEOUT = 600.0
WAIT_LINE_SECONDS = 10.0  # without a terminal: a line this often while the verify job runs

CALLER_PERMISSIONS = (
    "cloudformation:DescribeStacks, sns:ListSubscriptions (us-east-1), sns:ListSubscriptionsByTopic, "
    "scheduler:GetSchedule, states:ListExecutions, states:StartExecution, states:DescribeExecution, "
    "sqs:GetQueueAttributes"
)


def add_parser(commands: argparse._SubParsersAction) -> None:
    verify = commands.add_parser(
        NAME,
        help="check a deployed stack: status, subscriptions, schedule, runs, dead-letter queues, permissions",
        description="Check a deployed eic-guard stack without changing anything: its status and parameters, the "
        "AmazonIpSpaceChanged and alerts subscriptions, the nightly schedule, the last runs, the dead-letter "
        "queues, Security Hub, and a verify job in which every target's worker makes each call it may make with "
        "DryRun=True (docs/architecture.md §16). Run it after every sam deploy.",
        epilog=f"permissions of the caller: {CALLER_PERMISSIONS} (README 'After deploying, run eic-guard verify').\n"
        + exit_codes.help_text(exit_codes.VERIFY),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument(
        "--stack", metavar="NAME", help=f"the stack (default: stack_name of ./{SAMCONFIG}, else eic-guard)"
    )
    verify.add_argument("--region", metavar="R", help="the stack's region (default: $AWS_REGION, the profile's)")
    verify.add_argument("--format", choices=("table", "json"), default="table")
    verify.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the verify job (default {DEFAULT_TIMEOUT:.0f})",
    )
    verify.add_argument("--no-job", action="store_true", help="skip the verify job (no permission is probed)")
    add_verbosity_arguments(verify)


def default_stack(path: Path = Path(SAMCONFIG)) -> str:
    """stack_name from samconfig.toml's default environment (deploy, else global), else eic-guard."""
    if not path.exists():
        return "eic-guard"
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"{path}: cannot read the stack name: {exc}") from None
    default = config.get("default", {})
    for command in ("deploy", "global"):
        name = default.get(command, {}).get("parameters", {}).get("stack_name")
        if name:
            return str(name)
    return "eic-guard"


def run(args: argparse.Namespace, invocation: Invocation) -> int:
    from ..verify import STEPS, StackNotFound, verify_stack
    from ..verify.checklist import write_json, write_table
    from .configuration import session

    if args.timeout <= 0:
        raise ConfigurationError(f"--timeout: expected a positive number of seconds, got {args.timeout:g}")
    stack_name = args.stack or default_stack()
    aws = session(args.region)
    if not aws.region_name:
        raise ConfigurationError("no region: pass --region or set AWS_REGION (the stack's region)")
    with _progress(len(STEPS), invocation) as (show_step, show_wait):

        def on_step(name: str) -> None:
            _stop_if_interrupted(invocation)
            show_step(name)

        def on_tick(elapsed: float) -> None:
            _stop_if_interrupted(invocation)
            show_wait(elapsed)

        try:
            checklist = verify_stack(
                _Logged(aws, invocation.verbosity.call_log()),
                stack_name,
                timeout=args.timeout,
                with_job=not args.no_job,
                on_step=on_step,
                on_tick=on_tick,
            )
        except StackNotFound:
            raise ConfigurationError(
                f"no stack named {stack_name} in {aws.region_name} (name it with --stack, its region with --region)"
            ) from None
    if args.format == "json":
        write_json(checklist, sys.stdout)
    else:
        write_table(checklist, sys.stdout)
    return exit_codes.FINDINGS if checklist.failed else exit_codes.OK


def _stop_if_interrupted(invocation: Invocation) -> None:
    """Ctrl-C or SIGTERM between steps or while waiting: stop there (exit 130); verify has changed nothing."""
    if invocation.interrupts.requested:
        raise Interrupted("verify stopped; a verify job already started runs on, changing nothing")


class _Logged:
    """The session, its clients reporting each call with -v (as the other commands' clients do)."""

    def __init__(self, session: Any, call_log: Any):
        self.session, self.call_log = session, call_log
        self.region_name = session.region_name

    def client(self, *args: Any, **kwargs: Any) -> Any:
        client = self.session.client(*args, **kwargs)
        if self.call_log is not None:
            self.call_log.attach(client, lambda: None)
        return client


@contextmanager
def _progress(steps: int, invocation: Invocation) -> Iterator[tuple[Callable[[str], None], Callable[[float], None]]]:
    """On a terminal, a bar over the checklist's steps (the verify job's wait counted in seconds); elsewhere, a line
    while the job runs, every WAIT_LINE_SECONDS; nothing with -q."""
    if invocation.verbosity.quiet:
        yield (lambda _: None), (lambda _: None)
        return
    if not sys.stderr.isatty():
        said = [0.0]

        def tick(elapsed: float) -> None:
            if elapsed - said[0] >= WAIT_LINE_SECONDS:
                said[0] = elapsed
                print(f"eic-guard: verify: waiting for the verify job ({elapsed:.0f} s)", file=sys.stderr, flush=True)

        yield (lambda _: None), tick
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("verify"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("", total=steps)
        started = [False]

        def step(name: str) -> None:
            if started[0]:
                bar.advance(task)
            started[0] = True
            bar.update(task, description=name)

        def tick(elapsed: float) -> None:
            bar.update(task, description=f"verify job ({elapsed:.0f} s)")

        yield step, tick
        bar.update(task, completed=steps)
