"""How much the CLI says on stderr (standard output is the report): -q errors only, -v each AWS call with its
timing, --debug that and the engine's debug logs."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError

QUIET, NORMAL, VERBOSE, DEBUG = -1, 0, 1, 2
LOG_LEVELS = {QUIET: "ERROR", VERBOSE: "INFO", DEBUG: "DEBUG"}  # NORMAL: $POWERTOOLS_LOG_LEVEL, else WARNING


def add_verbosity_arguments(command: argparse.ArgumentParser) -> None:
    group = command.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", help="errors only on stderr: no progress, note or alert")
    group.add_argument("-v", "--verbose", action="store_true", help="also each AWS call on stderr, with its timing")
    group.add_argument("--debug", action="store_true", help="-v and the engine's debug logs")


@dataclass(frozen=True)
class Verbosity:
    level: int = NORMAL

    @classmethod
    def of(cls, args: argparse.Namespace) -> Verbosity:
        if getattr(args, "quiet", False):
            return cls(QUIET)
        if getattr(args, "debug", False):
            return cls(DEBUG)
        return cls(VERBOSE if getattr(args, "verbose", False) else NORMAL)

    @property
    def quiet(self) -> bool:
        return self.level == QUIET

    def say(self, line: str) -> None:
        """A line for the person running the command (a note, a progress line, an alert): not with -q."""
        if not self.quiet:
            print(line, file=sys.stderr, flush=True)

    def call_log(self) -> AwsCallLog | None:
        return AwsCallLog() if self.level >= VERBOSE else None


class _CurrentStderr:
    """Whatever sys.stderr is when a line is written (tests and the demo swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logs(verbosity: Verbosity) -> None:
    """Structured logs on stderr: warnings and up unless asked ($POWERTOOLS_LOG_LEVEL, -q, -v, --debug).

    The first import of eic-guard's runtime happens here. It builds no AWS client (the X-Ray SDK, which would, is
    imported by the Lambda handlers only: tracing.py); a ValueError from a bad AWS setting is still turned into a
    configuration error, as configuration.aws_problems does for botocore's.
    """
    try:
        from ..observability import logger
    except ValueError as exc:
        raise ConfigurationError(f"AWS configuration problem: {exc}") from None

    logger.registered_handler.setStream(_CurrentStderr())
    logger.setLevel(LOG_LEVELS.get(verbosity.level) or os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"))


class AwsCallLog:
    """One stderr line per AWS call (retries included in its time): service, operation, region, account, outcome."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self._clock = clock
        self._lock = threading.Lock()

    def attach(self, client: Any, account: Callable[[], str | None]) -> None:
        region = client.meta.region_name or "-"

        def started(context: dict, **_: Any) -> None:
            context["eic_guard_started"] = self._clock()

        def answered(http_response: Any, model: Any, context: dict, **_: Any) -> None:
            self._line(model.service_model.service_name, model.name, region, account(), context, http_response)

        def failed(exception: Exception, context: dict, event_name: str = "", **_: Any) -> None:
            service, operation = event_name.split(".")[1:3]
            self._line(service, operation, region, account(), context, None, exception)

        client.meta.events.register("before-call", started)
        client.meta.events.register("after-call", answered)
        client.meta.events.register("after-call-error", failed)

    def _line(
        self,
        service: str,
        operation: str,
        region: str,
        account: str | None,
        context: dict,
        response: Any,
        exception: Exception | None = None,
    ) -> None:
        seconds = self._clock() - context.get("eic_guard_started", self._clock())
        outcome = type(exception).__name__ if exception is not None else str(getattr(response, "status_code", "?"))
        where = f"{region} {account}" if account else region
        with self._lock:
            print(f"eic-guard: aws {service}.{operation} {where} {outcome} {seconds * 1000:.0f} ms", file=sys.stderr)
