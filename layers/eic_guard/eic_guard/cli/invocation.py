"""What every subcommand is given besides its flags."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Invocation:
    """One run of the `eic-guard` command.

    `run_cli` is the command itself: the demo drives it in-process, and is handed it rather than importing it, so
    the arrows between the CLI's modules point one way (docs/architecture.md §6).
    """

    run_cli: Callable[[Sequence[str] | None], int]
