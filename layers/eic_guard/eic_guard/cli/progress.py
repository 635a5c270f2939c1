"""What a person watching the run sees on stderr while it works."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..fanout.targets import Target


@contextmanager
def progress(targets: int | None, verb: str = "scanned") -> Iterator[Callable[[Target], None] | None]:
    """A progress bar on stderr counting (account, region) targets, only when a person is watching a terminal and
    there is more than one target (an organization's count is known once it is listed: shown as ?)."""
    if (targets is not None and targets < 2) or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("targets"))
    with Progress(*columns, TimeElapsedColumn(), transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("scanning targets" if verb == "scanned" else "refreshing targets", total=targets)
        yield lambda target: bar.update(task, advance=1, description=f"{verb} {target.key}")
