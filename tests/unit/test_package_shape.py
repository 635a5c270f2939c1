"""The package's shape (docs/architecture.md §6): no import cycle anywhere, and the CLI's subcommands use the core
and the engine, never each other."""

from __future__ import annotations

from eic_guard import cli

from tests.unit.import_graph import cycles, import_graph


def test_no_module_of_the_package_takes_part_in_an_import_cycle():
    # Given the import graph of every module of eic_guard, read from the source
    graph = import_graph()

    # When looking for strongly connected groups of modules
    found = cycles(graph)

    # Then there is none (cli.py and demo.py imported each other before the CLI became a package)
    assert found == []
    assert "eic_guard.cli.scan" in graph and "eic_guard.demo.scenarios" in graph


def test_the_cycle_finder_finds_a_cycle_through_several_modules():
    # Given a graph in which scan → output → progress → scan, beside an acyclic part
    graph = {"scan": {"output"}, "output": {"progress"}, "progress": {"scan"}, "demo": {"scan"}, "exit_codes": set()}

    # When / Then the three modules of the loop are named, and nothing else
    assert cycles(graph) == [["output", "progress", "scan"]]


def test_subcommands_never_import_each_other():
    # Given every subcommand module the CLI dispatches to
    graph = import_graph("eic_guard.cli")
    names = {subcommand.__name__ for subcommand in cli.SUBCOMMANDS}

    # When / Then none of them imports another (they share the core modules instead)
    assert {name: sorted(graph[name] & names) for name in names} == {name: [] for name in names}
    assert names == {f"eic_guard.cli.{s}" for s in ("scan", "refresh", "cleanup", "demo", "verify")}


def test_the_demo_never_imports_the_cli_it_drives():
    # Given the demo package's modules (it runs the real CLI in-process, handed to it by `eic-guard demo`)
    graph = import_graph("eic_guard.demo")

    # When / Then none of them imports anything from eic_guard.cli
    assert {name: sorted(t for t in targets if t.startswith("eic_guard.cli")) for name, targets in graph.items()} == {
        name: [] for name in graph
    }
