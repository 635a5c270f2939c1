"""The CLI's local files (reports, ip-ranges state, alert state, Security Hub ledgers): each is replaced whole,
atomically."""

from __future__ import annotations

import os
import tempfile
from contextlib import suppress
from pathlib import Path

# Temporary files being written right now: a second Ctrl-C exits with os._exit, which runs no `finally`, so the
# interrupt handler removes them (remove_unfinished) before it exits.
_UNFINISHED: set[str] = set()


def replace_file(path: Path, body: bytes, *, create_folders: bool = True, mode: int | None = None) -> None:
    """Write `body` beside `path`, flush it to disk, then rename it over `path`: a reader (or a crash) sees the old
    file or the new one, never half of one. Raises OSError, with the temporary file removed. `create_folders`:
    the folders of eic-guard's own files (~/.eic-guard/...) are made; a report's folder is the user's to give.
    `mode`: the file's permissions (else the temporary file's, 0600: eic-guard's own files are private)."""
    temporary = None
    try:
        if create_folders:
            path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        _UNFINISHED.add(temporary)
        with os.fdopen(handle, "wb") as stream:
            stream.write(body)
            if mode is not None:
                os.fchmod(stream.fileno(), mode)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:  # a full disk, or Ctrl-C twice: never leave the temporary file behind
        if temporary is not None:
            with suppress(OSError):
                os.unlink(temporary)
        raise
    finally:
        _UNFINISHED.discard(temporary)


def remove_unfinished() -> None:
    """Remove the temporary files of writes still under way (the process is about to exit without finishing them):
    the files they would have replaced keep their previous content."""
    for temporary in list(_UNFINISHED):
        with suppress(OSError):
            os.unlink(temporary)
        _UNFINISHED.discard(temporary)
