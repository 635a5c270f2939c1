"""Where the CLI's logs go: standard output is the report, so structured logs go to stderr."""

from __future__ import annotations

import os
import sys

from ..errors import ConfigurationError


class _CurrentStderr:
    """Whatever sys.stderr is when a line is written (tests and the demo swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def quiet_logs() -> None:
    """Structured logs on stderr, warnings and up unless asked (POWERTOOLS_LOG_LEVEL).

    The first import of eic-guard's runtime happens here. Its tracer builds an X-Ray client when imported, so a
    bad AWS setting can fail this import: botocore's errors are handled by configuration.aws_problems, its
    ValueErrors here.
    """
    try:
        from ..observability import logger
    except ValueError as exc:
        raise ConfigurationError(f"AWS configuration problem: {exc}") from None

    logger.registered_handler.setStream(_CurrentStderr())
    logger.setLevel(os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"))
