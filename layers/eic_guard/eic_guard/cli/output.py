"""The report on standard output or in a file, in the format asked for."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..outputs.report import Report


def write_report(report: Report, fmt: str, output: str | None) -> None:
    from ..outputs.table import account_lines, render

    stream = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    try:
        if fmt == "json":
            json.dump(report.to_dict(), stream, indent=2)
            stream.write("\n")
        elif fmt == "csv":
            from ..outputs.csv_rows import write_csv

            write_csv(report, stream)
        else:
            render(report, stream, color=False if output else None)
            for line in account_lines(report):
                stream.write(line + "\n")
    finally:
        if output:
            stream.close()


def require_writable(path: str | None) -> None:
    """Refuse a report destination that cannot be written before the scan runs (and, with --remediate, changes)."""
    if path and not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
        raise ConfigurationError(f"cannot write {path}: its directory does not exist or is not writable")
