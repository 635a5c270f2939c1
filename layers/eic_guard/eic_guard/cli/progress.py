"""What a person (or a CI log) sees on stderr while a run works: instances checked, targets done.

On a terminal, a rich progress bar counting instances as the workers finish them (the total grows as each target's
instances are gathered). On any other stderr (a CI log, a file), a line every INTERVAL seconds once the run has
lasted DELAY seconds, so a short run prints nothing and a long one is never silent. Nothing with -q.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .verbosity import Verbosity

if TYPE_CHECKING:
    from ..fanout.targets import Target

DELAY = 5.0
INTERVAL = 10.0


class RunProgress:
    """Counts shared by the worker threads (engine.InstanceProgress, and each target done)."""

    def __init__(self, targets: int | None, job: str, on_change: Callable[[], None] = lambda: None):
        self.targets = targets
        self.job = job  # a scan counts instances; a refresh, targets only
        self.found_instances = 0
        self.checked_instances = 0
        self.targets_done = 0
        self._lock = threading.Lock()
        self._on_change = on_change
        self._started = time.monotonic()

    def found(self, instances: int) -> None:
        with self._lock:
            self.found_instances += instances
        self._on_change()

    def checked(self) -> None:
        with self._lock:
            self.checked_instances += 1
        self._on_change()

    def target_done(self, target: Target) -> None:
        with self._lock:
            self.targets_done += 1
        self._on_change()

    def targets_text(self) -> str:
        return f"{self.targets_done} of {self.targets if self.targets is not None else '?'} targets done"

    def line(self) -> str:
        """The one-line state: `eic-guard: scan: 1,204 of 3,251 instances checked, 0 of 2 targets done (21 s)`."""
        seconds = time.monotonic() - self._started
        instances = f"{self.checked_instances:,} of {self.found_instances:,} instances checked, "
        counted = instances if self.job == "scan" else ""
        return f"eic-guard: {self.job}: {counted}{self.targets_text()} ({seconds:.0f} s)"


@contextmanager
def following(targets: int | None, job: str, verbosity: Verbosity) -> Iterator[RunProgress | None]:
    """The run's progress, shown as this stderr allows (see the module's docstring)."""
    if verbosity.quiet:
        yield None
    elif sys.stderr.isatty():
        with _bar(targets, job) as progress:
            yield progress
    else:
        with _periodic_lines(targets, job) as progress:
            yield progress


@contextmanager
def _bar(targets: int | None, job: str) -> Iterator[RunProgress]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    counted = (MofNCompleteColumn(), TextColumn("instances ·")) if job == "scan" else ()
    columns = (TextColumn(job), BarColumn(), *counted, TextColumn("{task.fields[targets]}"), TimeElapsedColumn())
    with Progress(*columns, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(job, total=None, targets="")

        def show() -> None:
            if job == "scan":
                total, completed = progress.found_instances or None, progress.checked_instances
            else:
                total, completed = progress.targets, progress.targets_done
            bar.update(task, total=total, completed=completed, targets=progress.targets_text())

        progress = RunProgress(targets, job, show)
        show()
        yield progress


@contextmanager
def _periodic_lines(targets: int | None, job: str) -> Iterator[RunProgress]:
    """A line every INTERVAL once the run has lasted DELAY, and a last one with the totals when it ends."""
    progress = RunProgress(targets, job)
    started = time.monotonic()
    done = threading.Event()

    def tick() -> None:
        if done.wait(DELAY):
            return
        while not done.is_set():
            print(progress.line(), file=sys.stderr, flush=True)
            done.wait(INTERVAL)

    ticker = threading.Thread(target=tick, name="eic-guard-progress", daemon=True)
    ticker.start()
    try:
        yield progress
    finally:
        done.set()
        ticker.join()
        if time.monotonic() - started >= DELAY:
            print(progress.line(), file=sys.stderr, flush=True)
