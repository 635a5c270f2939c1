"""Throttling follows the deadline: a throttled call is retried while its invocation has time, not a fixed number
of times (docs/architecture.md §9, failure paths).

botocore's standard mode gives every call MAX_ATTEMPTS attempts (clients.RETRY_CONFIG): right for a hung or failing
endpoint, whose failure should be reported while there is time to report it, but wrong for throttling, which only
asks the caller to slow down: a 30 s throttling storm made a target give up after 4 s with 896 s of its budget left.
`ThrottleRetries` is a `needs-retry` handler registered ahead of botocore's own on every client built with a
deadline: a throttled answer is retried after a capped exponential backoff with full jitter (botocore standard mode's
formula) for as long as the backoff ends within the deadline's time (the invocation's work time; in a batch, the
target's share: fanout/batch.TargetShare), and up to MAX_THROTTLED_ATTEMPTS in all.

A call still throttled when that time is used up raises `ThrottledOutOfTime`, a `DeadlineExceeded`: its target ran
out of time, it did not fail, so it takes the out-of-time path (docs/architecture.md §9): a fix is held for the next
round, a gather leaves the target `incomplete` (engine.scan_target), and the next round continues it. Throttling past
the MAX_THROTTLED_ATTEMPTS backstop with time left stays the call's ClientError. Every other error, and every call
without a finite deadline (the CLI, the tests' plain clients), is left to botocore's standard mode. The backoff
sleeps through `backoff_sleep`, which the tests replace with a fake clock.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Any

from ..budget import Deadline, DeadlineExceeded

# The error codes botocore's standard mode treats as throttling (retries.standard.ThrottledRetryableChecker).
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
MAX_BACKOFF = 20.0  # seconds, botocore standard mode's cap
# A backstop, never the binding limit in Lambda: 100 attempts at the 10 s mean capped backoff are ~17 min, longer
# than the longest function timeout (900 s). It bounds a caller whose clock does not advance.
MAX_THROTTLED_ATTEMPTS = 100

backoff_sleep: Callable[[float], None] = time.sleep


class ThrottledOutOfTime(DeadlineExceeded):
    """A throttled call given up because its deadline leaves no time for the next backoff: its target is out of time
    in this round (engine.HELD), not in error."""

    fmt = (
        "{operation} throttled ({code}) {attempts} time(s) until its time in this round ran out: {remaining:.0f} s "
        "left, not enough for the next backoff ({delay:.0f} s)"
    )
    held = "throttled"


class ThrottleRetries:
    """The `needs-retry` handler: returns 0 (retry now: it has slept the backoff itself), False (stop: the backstop
    of attempts is reached), or None (not throttling, or no finite deadline: botocore decides); raises
    ThrottledOutOfTime when the deadline leaves no time for the backoff."""

    def __init__(self, deadline: Callable[[], Deadline | None], jitter: Callable[[], float] | None = None):
        self._deadline = deadline
        self._jitter = jitter

    def __call__(self, attempts: int, response: Any = None, operation: Any = None, **_: Any) -> int | bool | None:
        code = _throttled(response)
        if code is None:
            return None
        deadline = self._deadline()
        remaining = deadline.remaining() if deadline is not None else math.inf
        if math.isinf(remaining):
            return None
        delay = (self._jitter or random.random)() * min(2 ** (attempts - 1), MAX_BACKOFF)
        if delay >= remaining:  # out of time, not failed: the target's next round continues (module docstring)
            name = getattr(operation, "name", None) or "AWS call"
            raise ThrottledOutOfTime(
                operation=name, code=code, attempts=attempts, remaining=max(remaining, 0.0), delay=delay
            )
        if attempts >= MAX_THROTTLED_ATTEMPTS:
            return False  # the call's error is reported now, while the invocation can still report it
        backoff_sleep(delay)
        return 0


def _throttled(response: Any) -> str | None:
    """The throttling error code of a needs-retry `response` ((http response, parsed) or None after an exception),
    None when it is no throttling error."""
    if not response:
        return None
    parsed = response[1] if isinstance(response, tuple) and len(response) == 2 else None
    if not isinstance(parsed, dict):
        return None
    code = parsed.get("Error", {}).get("Code")
    return code if code in THROTTLING_CODES else None
