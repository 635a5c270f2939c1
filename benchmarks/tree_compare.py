"""`python -m benchmarks.tree_compare [--n N] [--runs K] TREE...`: the floor and eic-guard's report run of each source
tree (a checkout, e.g. `git worktree add /tmp/before main`) on one moto fleet, runs interleaved.

For before/after figures on a shared machine: the same fleet, server and load for every tree, each run a fresh
`benchmarks.measure` process (as `make bench` runs it) with that tree's layer source first on its path. Prints the
medians: whole-process CPU (imports included), client CPU around the scan, GC, peak RSS, and each as a ratio to the
floor (run with the first tree's benchmarks/floor.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from eic_guard.ranges import ip_ranges

from benchmarks import fleet
from benchmarks.run import IP_RANGES, MotoServer, child_env, compare_verdicts, log

FIGURES = (("cpu_total_s", "whole-process CPU s"), ("cpu_s", "client CPU s"), ("gc_s", "GC s"))


def _run(server: MotoServer, tree: Path, spec: dict, workdir: Path, label: str) -> dict:
    spec_path, out_path = workdir / f"{label}.spec.json", workdir / f"{label}.out.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    env = child_env(server.endpoint)
    env["PYTHONPATH"] = os.pathsep.join([str(tree / "layers" / "eic_guard"), str(tree)])
    argv = [sys.executable, "-m", "benchmarks.measure", str(spec_path), str(out_path)]
    subprocess.run(argv, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return json.loads(out_path.read_text(encoding="utf-8"))


def compare(trees: list[Path], n: int, runs: int, workdir: Path) -> dict[str, list[dict]]:
    ranges = ip_ranges.load(str(IP_RANGES))
    base = {"endpoint": None, "regions": list(fleet.REGIONS), "ip_ranges": str(IP_RANGES)}
    results: dict[str, list[dict]] = {"floor": [], **{str(t): [] for t in trees}}
    with MotoServer() as server:
        seeded = fleet.seed(server.endpoint, n, ranges)
        log(f"N={n}: seeded")
        for k in range(runs):
            kinds = [("floor", trees[0], {"kind": "floor"})]
            kinds += [(str(t), t, {"kind": "scan", "mode": "report"}) for t in trees]
            for label, tree, spec in kinds:
                result = _run(server, tree, {**base, **spec}, workdir, f"{k}-{len(results[label])}-{Path(label).name}")
                expected = seeded.expected("floor" if label == "floor" else "report")
                result["verdicts_ok"] = compare_verdicts(result.pop("verdicts"), expected)["ok"]
                results[label].append(result)
                log(f"{label} run {k + 1}: CPU {result['cpu_total_s']:.2f}s, RSS {result['maxrss_kb'] / 1024:.0f} MiB")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tree_compare", description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", type=Path, help="source trees (checkouts) to compare")
    parser.add_argument("--n", type=int, default=5000, help="opted-in instances (default 5000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each (default 3)")
    args = parser.parse_args(argv)
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / "eic-bench-tree-compare"
    workdir.mkdir(exist_ok=True)
    results = compare([t.resolve() for t in args.trees], args.n, args.runs, workdir)
    # A run whose verdicts are wrong did not scan (on a loaded machine moto can answer after the read timeout): it is
    # left out of the medians and counted.
    valid = {label: [r for r in runs if r["verdicts_ok"]] for label, runs in results.items()}
    if not all(valid.values()):
        print("no run with the right verdicts for: " + ", ".join(k for k, v in valid.items() if not v))
        return 1
    floor = {key: statistics.median(r[key] for r in valid["floor"]) for key, _ in FIGURES}
    floor_rss = statistics.median(r["maxrss_kb"] for r in valid["floor"])
    for label, runs in valid.items():
        figures = {key: statistics.median(r[key] for r in runs) for key, _ in FIGURES}
        rss = statistics.median(r["maxrss_kb"] for r in runs)
        text = ", ".join(f"{name} {figures[key]:.2f} ({figures[key] / floor[key]:.2f}x)" for key, name in FIGURES)
        left_out = len(results[label]) - len(runs)
        note = f"; {left_out} run(s) with wrong verdicts left out" if left_out else ""
        print(f"{label}: {text}, peak RSS {rss / 1024:.0f} MiB ({rss / floor_rss:.2f}x); median of {len(runs)}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
