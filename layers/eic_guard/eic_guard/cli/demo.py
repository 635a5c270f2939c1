"""`eic-guard demo`: the embedded end-to-end demo against a local simulated AWS (docs/architecture.md §8)."""

from __future__ import annotations

import argparse

from .invocation import Invocation

NAME = "demo"


def add_parser(commands: argparse._SubParsersAction) -> None:
    commands.add_parser(NAME, help="run the embedded end-to-end demo against a local simulated AWS")


def run(args: argparse.Namespace, invocation: Invocation) -> int:
    from ..demo import main as run_demo  # moto is a dev dependency: imported only for the demo

    return run_demo(invocation.run_cli)
