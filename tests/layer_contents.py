"""What the layer leaves out of its dependencies (layers/eic_guard/pruned.txt), made unimportable in the tests for
eic-guard and the layer's packages: a change that needs one of those modules fails here, not in Lambda. Test-only
tools that use one themselves (samtranslator imports pydantic.v1) still may."""

from __future__ import annotations

import importlib.abc
import sys
from pathlib import Path

PRUNED = Path(__file__).resolve().parents[1] / "layers" / "eic_guard" / "pruned.txt"
# Packages of the test environment, not of the layer, that import a pruned module of their own accord.
TEST_TOOLS = frozenset({"samtranslator", "cfnlint"})


def pruned_modules() -> tuple[str, ...]:
    lines = (line.strip() for line in PRUNED.read_text(encoding="utf-8").splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


def _importer() -> str:
    """The module whose code asked for the import (past importlib's own frames)."""
    frame = sys._getframe(2)
    while frame is not None and (
        frame.f_code.co_filename.startswith("<frozen") or frame.f_globals.get("__name__", "").startswith("importlib")
    ):
        frame = frame.f_back
    return frame.f_globals.get("__name__", "") if frame is not None else ""


class PrunedModules(importlib.abc.MetaPathFinder):
    """Refuses the pruned modules and everything under them, as the layer would, unless a test tool asks (or the
    module is already being loaded for one)."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names

    def find_spec(self, fullname: str, path=None, target=None):
        pruned = next((n for n in self.names if fullname == n or fullname.startswith(f"{n}.")), None)
        if pruned is None or (fullname != pruned and pruned in sys.modules):  # a tool's copy loading its parts
            return None
        if _importer().partition(".")[0] in TEST_TOOLS:
            return None
        raise ModuleNotFoundError(f"{fullname} is not in the Lambda layer (layers/eic_guard/pruned.txt)", name=fullname)


def block_pruned_modules() -> None:
    if not any(isinstance(finder, PrunedModules) for finder in sys.meta_path):
        sys.meta_path.insert(0, PrunedModules(pruned_modules()))
