"""The report in the format asked for, on standard output or in files that are never half-written.

A file is written to a temporary file beside it and renamed over it (local_files.replace_file): a reader, an
interruption or a full disk leaves the previous file or the new one, never part of one. A destination that cannot
be written (a directory, a missing or read-only folder, a full disk) is refused before any AWS call; one that fails
after the run (the disk filled up meanwhile) gets the report written to a fallback file instead, named on stderr,
so what the run did (the fixes it made) is never lost.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..outputs.report import Report

MIN_FREE_BYTES = 1 << 20  # less than this free beside a destination is a full disk (a report is 2 kB per instance)


def _json(report: Report, warnings_fail: bool = False) -> bytes:
    """The report's JSON as it always was (`json.dumps(report.to_dict(), indent=2)`, ASCII), encoded by pydantic-core
    from the model: at 5,000 instances 0.3 s of CPU and a dict, a str and their bytes less."""
    return report.to_json_bytes(ensure_ascii=True) + b"\n"


def _table(report: Report, warnings_fail: bool = False) -> str:
    """The table for a file: no colour, the table's default width unless $COLUMNS says otherwise."""
    buffer = io.StringIO()
    _table_to(report, buffer, color=False)
    return buffer.getvalue()


def _table_to(report: Report, stream, color: bool | None) -> None:
    from ..outputs.table import account_lines, render

    render(report, stream, color=color)
    for line in account_lines(report):
        stream.write(line + "\n")


def _csv(report: Report, warnings_fail: bool = False) -> str:
    from ..outputs.csv_rows import write_csv

    buffer = io.StringIO()
    write_csv(report, buffer)
    return buffer.getvalue()


def _html(report: Report, warnings_fail: bool = False) -> str:
    from ..outputs.html import render_html

    return render_html(report)


def _sarif(report: Report, warnings_fail: bool = False) -> str:
    from ..outputs.sarif import render_sarif

    return json.dumps(render_sarif(report), indent=2) + "\n"


def _junit(report: Report, warnings_fail: bool = False) -> str:
    from ..outputs.junit import render_junit

    return render_junit(report, warnings_fail=warnings_fail)


@dataclass(frozen=True)
class Format:
    # (report, warnings_fail) -> text (or its UTF-8); warnings_fail: a warning fails the build (--fail-on warning), so
    # the formats that have a failure of their own (JUnit) show it as one
    render: Callable[[Report, bool], str | bytes]
    suffix: str  # the fallback file's
    help: str


FORMATS = {
    "table": Format(_table, ".txt", "a table for people (default)"),
    "json": Format(_json, ".json", "the JSON report (docs/architecture.md §5)"),
    "csv": Format(_csv, ".csv", "one row per (instance, check)"),
    "html": Format(_html, ".html", "the self-contained HTML page (as --html writes it)"),
    "sarif": Format(_sarif, ".sarif", "SARIF 2.1.0: a rule per check, a result per failing (instance, check)"),
    "junit": Format(_junit, ".xml", "JUnit XML: a test case per (instance, check)"),
}


def check_destination(path: str | None, flag: str) -> None:
    """Refuse, before any AWS call, a file the report could not be written to; ConfigurationError (exit 2)."""
    if not path:
        return
    target = Path(path)
    if target.is_dir():
        raise ConfigurationError(f"{flag} {path}: is a directory; give a file name, e.g. {target / 'report.json'}")
    folder = target.absolute().parent
    if not folder.is_dir():
        raise ConfigurationError(f"{flag} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigurationError(f"{flag} {path}: the folder {folder} is not writable")
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise ConfigurationError(f"{flag} {path}: the disk is full ({free} bytes free in {folder})")


def check_distinct(*paths: str | None) -> None:
    """Two outputs to one file would leave only the last."""
    given = [os.path.realpath(p) for p in paths if p]
    if len(set(given)) < len(given):
        raise ConfigurationError("--output and --html name the same file: give each its own")


def fallback_path(run_id: str, suffix: str) -> Path:
    return Path(tempfile.gettempdir()) / f"eic-guard-{run_id}{suffix}"


def _shared_mode() -> int:
    """What a file created with open() would get (0666 less the umask): a report is meant to be passed around."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def save(text: str | bytes, path: str, fallback: Path) -> str | None:
    """Write `text` (or its UTF-8) to `path` atomically; if that fails, to `fallback`. None when `path` was written,
    else one line saying what went wrong and where the text is."""
    from ..local_files import replace_file

    body = text if isinstance(text, bytes) else text.encode("utf-8")
    try:
        replace_file(Path(path), body, create_folders=False, mode=_shared_mode())
        return None
    except OSError as exc:
        reason = exc.strerror or str(exc)
    try:
        replace_file(fallback, body, create_folders=False)  # private: it may sit in a shared /tmp
    except OSError as again:
        return f"cannot write {path} ({reason}), nor the fallback {fallback} ({again.strerror or again})"
    return f"cannot write {path} ({reason}): written to {fallback} instead"


def emit(report: Report, fmt: str, output: str | None, *, warnings_fail: bool = False) -> str | None:
    """The report in `fmt` on standard output, or in the file `output` (see save)."""
    if output is None:
        if fmt == "table":
            _table_to(report, sys.stdout, color=None)
        else:
            text = FORMATS[fmt].render(report, warnings_fail)
            sys.stdout.write(text.decode("utf-8") if isinstance(text, bytes) else text)
        sys.stdout.flush()
        return None
    return save(FORMATS[fmt].render(report, warnings_fail), output, fallback_path(report.run_id, FORMATS[fmt].suffix))
