"""Time budgets: every network call is bounded so that a failure is reported by eic-guard, never by Lambda
killing the invocation (which leaves no report, no alert and no record of the changes already made).

A `Deadline` knows how much of the invocation remains. AWS calls attempted inside its reserve are refused before
they are sent (`DeadlineExceeded`, a BotoCoreError, so every place that records a failed call records this one),
and the ip-ranges download shortens its timeouts to what remains. The reserve is what the run needs after its
work to finish cleanly: one call that hangs until its read timeout, plus publishing the report and the alert.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError


class DeadlineExceeded(BotoCoreError):
    """An AWS call not sent because the invocation's remaining time is inside the reserve."""

    fmt = "{operation} not sent: {remaining:.0f} s of the invocation remain, inside the {reserve:.0f} s reserve"
    held = "out-of-time"  # why the fixes not made were held (engine.HELD)


class Deadline:
    """How much of the invocation remains for work, after `reserve` seconds kept for finishing the run."""

    held = DeadlineExceeded.held

    def __init__(self, remaining_seconds: Callable[[], float], reserve: float):
        self._remaining_seconds = remaining_seconds
        self.reserve = reserve

    @classmethod
    def from_context(cls, context: Any, reserve: float) -> Deadline:
        """The Lambda context's clock (get_remaining_time_in_millis)."""
        return cls(lambda: context.get_remaining_time_in_millis() / 1000, reserve)

    @classmethod
    def after(cls, seconds: float, reserve: float = 0.0) -> Deadline:
        """A deadline `seconds` from now (the CLI and tests)."""
        end = time.monotonic() + seconds
        return cls(lambda: end - time.monotonic(), reserve)

    def remaining(self) -> float:
        """Seconds left for work (negative once inside the reserve)."""
        return self._remaining_seconds() - self.reserve

    def finishing(self, reserve: float) -> None:
        """Enter the last phase (storing the report, alerting): only `reserve` seconds are kept from now on."""
        self.reserve = min(self.reserve, reserve)

    def timeout(self, wanted: float) -> float:
        """`wanted`, or less when less time remains (never below a tenth of a second)."""
        return max(0.1, min(wanted, self.remaining()))

    def check(self, operation: str) -> None:
        remaining = self._remaining_seconds()
        if remaining - self.reserve <= 0:
            raise DeadlineExceeded(operation=operation, remaining=max(remaining, 0.0), reserve=self.reserve)


class RunInterrupted(DeadlineExceeded):
    """An AWS call not sent because the run was interrupted (the CLI's Ctrl-C or SIGTERM)."""

    fmt = "{operation} not sent: the run was interrupted ({signal})"
    held = "interrupted"


class UntilInterrupted(Deadline):
    """No time limit until `interrupted()` names a signal; from then on no fix starts and no call is sent."""

    held = RunInterrupted.held

    def __init__(self, interrupted: Callable[[], str | None]):
        super().__init__(lambda: -1.0 if interrupted() else math.inf, reserve=0.0)
        self._interrupted = interrupted

    def check(self, operation: str) -> None:
        signal = self._interrupted()
        if signal:
            raise RunInterrupted(operation=operation, signal=signal)


# Seconds each function keeps in reserve (template.yaml Timeout: ScanTargetFunction 900 s, PlanFunction,
# AggregateFunction and RefreshFunction 300 s). Work stops sending AWS calls at *_RESERVE; what must still happen
# (the worker's result object, the report and the alert) may go on until FINISH_RESERVE. Each reserve covers one
# call hanging until its timeouts (clients.CONNECT_TIMEOUT + READ_TIMEOUT = 25 s) and the work after it.
WORKER_RESERVE = 60.0  # stops starting fixes: the map item's next round continues (docs/architecture.md §9)
PLAN_RESERVE = 60.0
REFRESH_RESERVE = 60.0
FINISH_RESERVE = 30.0
