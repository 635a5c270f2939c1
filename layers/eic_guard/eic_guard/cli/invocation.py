"""What every subcommand is given besides its flags."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .interrupts import Interrupts
from .verbosity import Verbosity


@dataclass(frozen=True)
class Invocation:
    """One run of the `eic-guard` command.

    `run_cli` is the command itself: the demo drives it in-process, and is handed it rather than importing it, so
    the arrows between the CLI's modules point one way (docs/architecture.md §6). `interrupts` says whether Ctrl-C
    or SIGTERM asked the run to stop; `verbosity` how much to say on stderr.
    """

    run_cli: Callable[[Sequence[str] | None], int]
    verbosity: Verbosity = field(default_factory=Verbosity)
    interrupts: Interrupts = field(default_factory=Interrupts)
