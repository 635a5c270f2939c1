"""SIGINT and SIGTERM (docs/architecture.md §5): the first stops the run at the next instance, the second exits.

The first signal is remembered, said on stderr, and turns the run's deadline (budget.Deadline) into one that has
passed: no instance starts its fixes any more (they are held and reported), the clients send no further AWS call,
and the targets not begun fail at once as "interrupted". The command then writes what was done (the report marked
"interrupted": true) and exits 130. A second signal exits at once: a report file being written is left as it was
(files are replaced by a rename: never half-written) and the temporary file of that write is removed.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..errors import EicGuardError
from ..local_files import remove_unfinished
from . import exit_codes

if TYPE_CHECKING:
    from ..budget import Deadline

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(EicGuardError):
    """The run stopped on a signal before it began."""


class Interrupts:
    """Whether the run was asked to stop, and by which signal."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def request(self, signal_name: str) -> None:
        """The first signal: stop at the next instance boundary. A second: exit now."""
        if self.requested:
            sys.stderr.write(f"\neic-guard: {signal_name} again: exiting now\n")
            sys.stderr.flush()
            remove_unfinished()
            os._exit(exit_codes.INTERRUPTED)
        self.signal_name = signal_name
        sys.stderr.write(
            f"\neic-guard: {signal_name}: stopping at the next instance (the report will say what was done; "
            "press Ctrl-C again to exit at once)\n"
        )
        sys.stderr.flush()

    @contextmanager
    def handled(self) -> Iterator[Interrupts]:
        """SIGINT and SIGTERM handled for the duration (in the main thread only: Python delivers signals there)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {number: signal.getsignal(number) for number in SIGNALS}
        for number in SIGNALS:
            signal.signal(number, lambda received, _frame: self.request(signal.Signals(received).name))
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def stop_if_requested(self) -> None:
        """Between the steps before the run (reading the ip-ranges file...): stop there, nothing read or changed."""
        if self.requested:
            raise Interrupted("before any AWS call: nothing was read or changed")

    def deadline(self) -> Deadline:
        """A deadline that passes when a signal arrives (the run's clients and workers honour it)."""
        from ..budget import UntilInterrupted

        return UntilInterrupted(lambda: self.signal_name)
