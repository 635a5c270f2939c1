"""The layer ships eic-guard's modules the Lambda handlers import, and no other (layers/eic_guard/cli_only.txt).

What a handler imports is read from the sources: every import statement of functions/*/app.py and, transitively, of
each eic-guard module they reach, wherever it stands (a function's late import included), so the closure is what a
handler may ever import, not what one test run happened to."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "eic_guard"
CLI_ONLY = LAYER / "cli_only.txt"


def own_modules() -> dict[str, Path]:
    modules = {}
    for path in (LAYER / "eic_guard").rglob("*.py"):
        parts = list(path.relative_to(LAYER).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_by(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The eic-guard modules (and their parent packages) one module's import statements name."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    named: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *([node.module] if node.module else [])])
            named.add(base)
            named.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import x`: x may be a module
    found = set()
    for module in named:
        while module not in modules and "." in module:
            module = module.rsplit(".", 1)[0]
        if module in modules:
            parts = module.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found & set(modules)


def handler_closure() -> set[str]:
    modules = own_modules()
    todo = [m for app in (ROOT / "functions").glob("*/app.py") for m in imported_by("app", app, modules)]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += imported_by(module, modules[module], modules)
    return seen


def cli_only() -> set[str]:
    lines = (line.strip() for line in CLI_ONLY.read_text(encoding="utf-8").splitlines())
    return {line for line in lines if line and not line.startswith("#")}


def _covered(module: str, listed: set[str]) -> bool:
    return any(module == name or module.startswith(f"{name}.") for name in listed)


def test_the_layer_leaves_out_only_modules_no_handler_imports():
    # Given what the handlers may import
    closure = handler_closure()

    # Then no module the layer leaves out (nor any under a package it leaves out) is among them
    assert {m for m in closure if _covered(m, cli_only())} == set()
    assert {"eic_guard.engine", "eic_guard.fanout.steps", "eic_guard.outputs.stream"} <= closure  # the closure is real


def test_every_module_no_handler_imports_is_left_out():
    # Given eic-guard's modules outside the handlers' imports
    unused = set(own_modules()) - handler_closure()

    # Then the layer leaves each of them out
    assert {m for m in unused if not _covered(m, cli_only())} == set()


def test_the_closure_follows_late_and_relative_imports(tmp_path):
    # Given a module whose function imports a sibling late, relatively
    package = tmp_path / "eic_guard"
    (package / "outputs").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "outputs" / "__init__.py").write_text("")
    (package / "outputs" / "a.py").write_text("def f():\n    from . import b\n    from ..c import g\n")
    (package / "outputs" / "b.py").write_text("")
    (package / "c.py").write_text("def g(): ...\n")
    modules = {
        "eic_guard": package / "__init__.py",
        "eic_guard.outputs": package / "outputs" / "__init__.py",
        "eic_guard.outputs.a": package / "outputs" / "a.py",
        "eic_guard.outputs.b": package / "outputs" / "b.py",
        "eic_guard.c": package / "c.py",
    }

    # Then both are found, with their packages
    assert imported_by("eic_guard.outputs.a", modules["eic_guard.outputs.a"], modules) == {
        "eic_guard",
        "eic_guard.outputs",
        "eic_guard.outputs.b",
        "eic_guard.c",
    }
