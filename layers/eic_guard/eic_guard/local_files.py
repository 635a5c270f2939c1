"""The CLI's local files (ip-ranges state, alert state, Security Hub ledgers): each is replaced whole, atomically."""

from __future__ import annotations

import os
import tempfile
from contextlib import suppress
from pathlib import Path


def replace_file(path: Path, body: bytes) -> None:
    """Write `body` beside `path`, flush it to disk, then rename it over `path`: a reader (or a crash) sees the old
    file or the new one, never half of one. Raises OSError, with the temporary file removed."""
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(handle, "wb") as stream:
            stream.write(body)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError:
        if temporary is not None:
            with suppress(OSError):
                os.unlink(temporary)
        raise
