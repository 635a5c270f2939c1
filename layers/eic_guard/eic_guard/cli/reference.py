"""The reference tables the README and `--help` show, generated: the settings (from the Settings model: each
field's variable, Source and description) and the exit codes of scan and verify (cli/exit_codes.py).

`python -m eic_guard.cli.reference README.md` rewrites the generated blocks of the README (`make docs`); with
`--check` it only says whether they are current (a test does the same).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import exit_codes
from .arguments import DEFAULT_STATE_FILE

BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) \(make docs\) -->\n)(.*?)(<!-- end generated -->)", re.S)


def _default(field: Any) -> str:
    from pydantic_core import PydanticUndefined

    value = field.default
    if value is PydanticUndefined or value in (None, ""):
        return ""
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class SettingRow:
    variable: str
    parameter: str  # the template parameter, "" when none
    stack: str  # what the stack sets it to when no parameter does, "" when nothing
    flag: str
    default: str
    meaning: str


def settings_rows() -> list[SettingRow]:
    """Every setting, in the model's order."""
    from ..settings import ENV_PREFIX, Settings, Source

    rows = []
    for name, field in Settings.model_fields.items():
        source = next((m for m in field.metadata if isinstance(m, Source)), Source())
        variable = f"{ENV_PREFIX}{name.upper()}"
        rows.append(
            SettingRow(variable, source.parameter, source.stack, source.flag, _default(field), field.description or "")
        )
    return rows


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def settings_table() -> str:
    rows = [
        (
            _code(r.variable),
            _code(r.parameter) or (f"*(the stack's {r.stack})*" if r.stack else ""),
            _code(r.flag),
            _code(r.default),
            r.meaning,
        )
        for r in settings_rows()
    ]
    return _markdown(("variable", "template parameter", "CLI flag (scan)", "default", "meaning"), rows)


def exit_codes_table() -> str:
    return _markdown(("exit code", "eic-guard scan"), [(f"`{code}`", meaning) for code, meaning in exit_codes.SCAN])


def verify_exit_codes_table() -> str:
    rows = [(f"`{code}`", meaning) for code, meaning in exit_codes.VERIFY]
    return _markdown(("exit code", "eic-guard verify"), rows)


BLOCKS = {"settings": settings_table, "scan-exit-codes": exit_codes_table, "verify-exit-codes": verify_exit_codes_table}


def settings_help() -> str:
    """The settings a CLI user sets, as `eic-guard scan --help` lists them (those the stack sets itself are left to
    the README): variable, flag, default."""
    lines = ["settings (environment variables; a flag overrides its variable; the README's settings reference says"]
    lines.append("  what each means):")
    for row in settings_rows():
        if not (row.parameter or row.flag):  # the stack's own (its table, bucket...), in the README
            continue
        extra = ", ".join(p for p in (row.flag, f"default {row.default}" if row.default else "") if p)
        lines.append(f"  {row.variable}{f' ({extra})' if extra else ''}")
    lines.append(f"  EIC_GUARD_STATE_FILE (--state-file, default {DEFAULT_STATE_FILE.replace(str(Path.home()), '~')})")
    return "\n".join(lines) + "\n\n"


class HelpWithSettings(argparse.Action):
    """-h/--help that lists the settings first: they are read from the Settings model (cli/reference.py), which is
    imported only when help is asked for, so other invocations do not pay for it."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace, values, option_string=None) -> None:
        parser.epilog = settings_help() + (parser.epilog or "")
        parser.print_help()
        parser.exit()


def rewritten(text: str) -> str:
    """`text` with every generated block replaced by what it is generated from now."""
    return BLOCK.sub(lambda m: m.group(1) + BLOCKS[m.group("name")]() + m.group(4), text)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    paths = [Path(a) for a in args if a != "--check"]
    stale = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        new = rewritten(text)
        if new != text:
            stale.append(str(path))
            if not check:
                path.write_text(new, encoding="utf-8")
    if check and stale:
        print(f"generated reference out of date in {', '.join(stale)}: run make docs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
