"""Step Functions cost of the nightly run, counted from the real state machine definition.

statemachine/eic_guard.asl.json is read as template.yaml deploys it (its placeholders substituted with the template's
default parameter values) and walked, state by state, the way an execution goes through it:

- the top level, from StartAt: every state entered until the end, Choices taking their Default (a night without
  expired prefixes: no revoke map), plus 1 for the execution's start;
- each Distributed Map's child execution (one per batch of `ItemBatcher.MaxItemsPerBatch` items, one per item
  without an ItemBatcher): 1 for its start plus the states a batch enters when every target finishes in one round
  (the round Choice takes its Default), and, per extra round, the states of the loop the Choice's rule starts (back
  to that Choice);
- the fallback after a failed batch invocation (its Catch), per failed batch: the states entered, an inline Map's
  processor counted once per item.

Standard workflows bill each state transition ($0.025 per 1,000 in us-east-1, https://aws.amazon.com/step-functions/pricing/;
the 4,000 free a month are left out). A child execution's start is counted as one transition, as the organization
estimate always did (benchmarks/ORG_RESULTS.md), so before and after compare like for like.

Scenarios at 500 accounts x 17 regions (8,500 targets), 30 nights a month: every target done in one round, and 10%
of the targets needing a second round, placed in as many batches as possible (the worst case: min(batches,
incomplete targets) batches run a second round; spread at random it is batches x (1 - 0.9^size), also shown).

    python -m benchmarks.sfn_cost                       # the current definition
    python -m benchmarks.sfn_cost --before 03ffa87      # and the definition at a commit, for a before/after table
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASL = "statemachine/eic_guard.asl.json"
PRICE_TRANSITION = 0.025 / 1000
NIGHTS = 30
EXECUTION_START = 1  # a transition counted for each execution's (and each child execution's) start
PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


def template_defaults() -> dict[str, str]:
    """The default value of each template.yaml parameter (what `sam deploy` uses unless told otherwise)."""
    from cfnlint.decode import decode_str  # the dev tool the template tests parse it with

    parsed, problems = decode_str((ROOT / "template.yaml").read_text(encoding="utf-8"))
    if problems:
        raise SystemExit(f"template.yaml does not parse: {problems[0]}")
    return {name: str(spec.get("Default", "")) for name, spec in parsed["Parameters"].items()}


def load(text: str, defaults: dict[str, str] | None = None) -> dict:
    """The definition with its placeholders substituted: parameters by their default, resources by a stand-in."""
    defaults = template_defaults() if defaults is None else defaults
    return json.loads(PLACEHOLDER.sub(lambda m: defaults.get(m.group(1)) or f"stand-in-{m.group(1)}", text))


def definition_at(rev: str | None) -> str:
    if rev is None:
        return (ROOT / ASL).read_text(encoding="utf-8")
    return subprocess.run(["git", "show", f"{rev}:{ASL}"], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def walk(scope: dict, start: str, stop: str | None = None) -> list[str]:
    """The states entered from `start` (Task/Pass/Map: Next; Choice: Default) until an end, or until `stop`."""
    entered, name = [], start
    while name is not None:
        entered.append(name)
        state = scope["States"][name]
        if state.get("End") or state["Type"] in ("Succeed", "Fail"):
            break
        name = state.get("Default") if state["Type"] == "Choice" else state.get("Next")
        if name == stop:
            entered.append(name)
            break
    return entered


@dataclass
class MapCount:
    """Transitions of one Distributed Map's child executions."""

    state: str
    items_per_child: int
    per_child_one_round: int  # the child execution's start + the states entered
    per_extra_round: int
    per_failed_batch: int  # the fallback's states after the batch invocation failed (0: none)
    one_round_states: list[str]
    extra_round_states: list[str]


def count_map(name: str, state: dict) -> MapCount:
    processor = state["ItemProcessor"]
    size = state.get("ItemBatcher", {}).get("MaxItemsPerBatch", 1)
    one_round = walk(processor, processor["StartAt"])
    choice = next(n for n in one_round if processor["States"][n]["Type"] == "Choice")
    loop_start = processor["States"][choice]["Choices"][0]["Next"]
    extra = walk(processor, loop_start, stop=choice)
    failed = 0
    worker = processor["States"][processor["StartAt"]]
    catch = next((c for c in worker.get("Catch", ()) if "States.ALL" in c["ErrorEquals"]), None)
    if catch is not None and processor["States"][catch["Next"]]["Type"] == "Map":
        fallback = processor["States"][catch["Next"]]
        inner = fallback["ItemProcessor"]
        per_item = len(walk(inner, inner["StartAt"]))
        after = walk(processor, fallback["Next"]) if "Next" in fallback else []
        failed = 1 + size * per_item + len(after)  # the inline Map state, its iterations, what follows it
    return MapCount(name, size, EXECUTION_START + len(one_round), len(extra), failed, one_round, extra)


@dataclass
class Estimate:
    label: str
    targets: int
    items_per_child: int
    child_executions: int
    top_level: int
    per_child_one_round: int
    per_extra_round: int
    per_failed_batch: int
    one_round: int
    second_round_share: float
    second_round_batches_worst: int
    second_round_batches_random: float
    with_second_round: int

    def dollars(self, transitions: float) -> float:
        return transitions * PRICE_TRANSITION


def estimate(definition: dict, label: str, targets: int, second_round_share: float = 0.10) -> Estimate:
    """Transitions of one nightly run (apply phase, no revoke) over `targets` targets."""
    top = walk(definition, definition["StartAt"])
    apply = count_map("ApplyTargets", definition["States"]["ApplyTargets"])
    children = math.ceil(targets / apply.items_per_child)
    top_level = EXECUTION_START + len(top)
    one_round = top_level + children * apply.per_child_one_round
    incomplete = math.ceil(targets * second_round_share)
    worst = min(children, incomplete)
    spread = children * (1 - (1 - second_round_share) ** apply.items_per_child)
    return Estimate(
        label=label,
        targets=targets,
        items_per_child=apply.items_per_child,
        child_executions=children,
        top_level=top_level,
        per_child_one_round=apply.per_child_one_round,
        per_extra_round=apply.per_extra_round,
        per_failed_batch=apply.per_failed_batch,
        one_round=one_round,
        second_round_share=second_round_share,
        second_round_batches_worst=worst,
        second_round_batches_random=round(spread, 1),
        with_second_round=one_round + worst * apply.per_extra_round,
    )


def table(estimates: list[Estimate]) -> str:
    lines = [
        "| definition | targets per child | child executions | transitions per child (1 round) | per extra round "
        "| per night, 1 round | $ per month, 1 round | per night, 10% need round 2 | $ per month, 10% round 2 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in estimates:
        lines.append(
            f"| {e.label} | {e.items_per_child} | {e.child_executions:,} | {e.per_child_one_round} "
            f"| {e.per_extra_round} "
            f"| {e.one_round:,} | ${e.dollars(e.one_round) * NIGHTS:.2f} | {e.with_second_round:,} "
            f"| ${e.dollars(e.with_second_round) * NIGHTS:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--regions", type=int, default=17)
    parser.add_argument("--before", metavar="REV", help="also count the definition at this git revision")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "sfn_cost_results.json")
    args = parser.parse_args(argv)
    targets = args.accounts * args.regions
    defaults = template_defaults()
    estimates = []
    if args.before:
        estimates.append(estimate(load(definition_at(args.before), defaults), f"before ({args.before})", targets))
    estimates.append(estimate(load(definition_at(None), defaults), "now", targets))
    print(
        f"Step Functions Standard transitions, {args.accounts} accounts x {args.regions} regions = {targets:,} "
        f"targets, ${PRICE_TRANSITION * 1000:.3f} per 1,000, {NIGHTS} nights a month:\n"
    )
    print(table(estimates))
    now = estimates[-1]
    apply = count_map("ApplyTargets", load(definition_at(None), defaults)["States"]["ApplyTargets"])
    print(
        f"\nnow: a child execution enters {apply.one_round_states} (+1 for its start), an extra round "
        f"{apply.extra_round_states}; a failed batch invocation adds {now.per_failed_batch} transitions (its targets "
        f"one by one); 10% needing round 2 at random: ~{now.second_round_batches_random} batches, worst case "
        f"{now.second_round_batches_worst}."
    )
    args.json.write_text(json.dumps([asdict(e) for e in estimates], indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
