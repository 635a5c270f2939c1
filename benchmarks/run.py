"""`make bench` / `python -m benchmarks.run [--quick]`: eic-guard on large simulated fleets, against a floor.

For each N it starts a fresh moto server (separate process, 127.0.0.1, quadratic lookups patched in that process
only), seeds N opted-in instances (+10% untagged) with a known drift mix, then runs, each in a fresh client
process: the floor and eic-guard's report scan (interleaved), the remediate scan (the drift is put back between
runs), the second remediate scan, and a refresh of the managed groups with a newer ip-ranges file. It checks every
verdict and every write against the expected ones, measures cold start and package sizes, and writes RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYER_SRC = ROOT / "layers" / "eic_guard"
if str(LAYER_SRC) not in sys.path:
    sys.path.insert(0, str(LAYER_SRC))

from eic_guard.ranges import ip_ranges  # noqa: E402

from benchmarks import coldstart, fleet, report  # noqa: E402

IP_RANGES = ROOT / "tests" / "fixtures" / "ip-ranges" / "ip-ranges-2026-08-22.json"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
RAW = Path(__file__).resolve().parent / "results.json"
READ_PREFIXES = ("Describe", "Get", "List")
# Synthetic new EIC prefixes (documentation ranges) the refresh must add to every managed group.
NEW_PREFIXES = {"us-east-1": "198.51.100.0/29", "eu-west-1": "198.51.100.8/29"}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def child_env(endpoint: str | None = None) -> dict[str, str]:
    """Fake credentials, no profile or config files, the layer source importable; nothing from a real account."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EIC_GUARD_", "POWERTOOLS_"))}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(LAYER_SRC), str(ROOT)]),
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1,localhost",
            # As deployed (template LogLevel default INFO): one log line per failing check goes to stdout (/dev/null).
            "POWERTOOLS_LOG_LEVEL": "INFO",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_SERVICE_NAME": "eic-guard",
            "POWERTOOLS_METRICS_NAMESPACE": "EicGuard",
            # As in Lambda. Without it the X-Ray SDK (imported by Powertools' Tracer even when tracing is disabled)
            # builds its centralized sampler: its own botocore session and two X-Ray clients, +8 MiB and +0.1-0.2 s
            # CPU in the client process. Lambda gets the local sampler instead.
            "LAMBDA_TASK_ROOT": str(ROOT / "functions" / "scan_target"),
        }
    )
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    return env


class ServerProcess:
    """`python -m <module> [args]` in its own process, which prints `PORT <n>` once it listens; stopped by closing
    its stdin. Its CPU and RSS are read from /proc, apart from the client's."""

    name = "server"
    stop_timeout = 20

    def argv(self) -> list[str]:
        raise NotImplementedError

    def __enter__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-m", *self.argv()],
            cwd=ROOT,
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline().split()
        if not line or line[0] != "PORT":
            self.process.kill()
            raise RuntimeError(f"{self.name} did not start")
        self.endpoint = f"http://127.0.0.1:{line[1]}"
        return self

    def __exit__(self, *_) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as stream:
            fields = stream.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as stream:
            for line in stream:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")


class MotoServer(ServerProcess):
    """`python -m benchmarks.moto_launcher` in its own process."""

    name = "moto server"

    def __init__(self, stock: bool = False):
        self.stock = stock

    def argv(self) -> list[str]:
        return ["benchmarks.moto_launcher", *(["--stock"] if self.stock else [])]


def measure(server: MotoServer, spec: dict, workdir: Path, label: str) -> dict:
    """One client run in a fresh process; adds the server's CPU during the run."""
    spec_path, out_path = workdir / f"{label}.spec.json", workdir / f"{label}.out.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    server_before, started = server.cpu_seconds(), time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.measure", str(spec_path), str(out_path)],
        cwd=ROOT,
        env=child_env(server.endpoint),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{label} failed:\n{done.stderr[-4000:]}")
    result = json.loads(out_path.read_text(encoding="utf-8"))
    result["server_cpu_s"] = server.cpu_seconds() - server_before
    result["process_wall_s"] = time.perf_counter() - started
    return result


def _package(filename: str) -> tuple[str, str]:
    """(package, short path) of a profiled code location: site-packages, the layer, the stdlib or a builtin."""
    if filename == "~":
        return "builtins (C)", ""
    for marker in ("site-packages/", "/layers/eic_guard/", "/benchmarks/"):
        if marker in filename:
            short = (
                filename.split(marker, 1)[1] if marker != "/benchmarks/" else "benchmarks/" + filename.split(marker)[1]
            )
            return short.split("/")[0].removesuffix(".py"), short
    short = re.sub(r"^.*/lib/python3\.\d+/", "", filename)
    return "stdlib " + short.split("/")[0].removesuffix(".py"), short


def top_functions(path: Path, count: int = 10) -> dict:
    """From a cProfile dump: own CPU time by package, and the functions with the most own time."""
    stats = pstats.Stats(str(path))
    rows, packages = [], Counter()
    for (filename, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        package, short = _package(filename)
        packages[package] += own
        rows.append((f"{short}:{line}({name})" if short else name, calls, own, cumulative))
    return {"functions": sorted(rows, key=lambda r: -r[2])[:count],
            "packages": packages.most_common(8), "total": sum(packages.values())}  # fmt: skip


def writes(result: dict) -> dict[str, Counter]:
    return {
        region: Counter({op: n for op, n in ops.items() if not op.startswith(READ_PREFIXES)})
        for region, ops in result["calls"].items()
    }


def total_writes(result: dict) -> int:
    return sum(sum(c.values()) for c in writes(result).values())


def compare_verdicts(got: dict[str, str] | None, expected: dict[str, str]) -> dict:
    got = got or {}
    wrong = sorted(i for i in expected.keys() & got.keys() if got[i] != expected[i])
    missing = sorted(expected.keys() - got.keys())
    extra = sorted(got.keys() - expected.keys())
    problems = Counter(f"{expected[i]}->{got[i]}" for i in wrong)
    return {
        "ok": not (wrong or missing or extra),
        "checked": len(expected),
        "wrong": len(wrong),
        "missing": len(missing),
        "extra": len(extra),
        "examples": dict(problems.most_common(5)),
    }


def newer_ip_ranges(workdir: Path) -> Path:
    """The fixture with a newer syncToken and one more EIC prefix per benchmark region (what a refresh adds)."""
    document = json.loads(IP_RANGES.read_text(encoding="utf-8"))
    document["syncToken"] = str(int(document["syncToken"]) + 3600)
    for region, prefix in NEW_PREFIXES.items():
        document["prefixes"].append(
            {"ip_prefix": prefix, "region": region, "service": "EC2_INSTANCE_CONNECT", "network_border_group": region}
        )
    path = workdir / "ip-ranges-newer.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def untouched(endpoint: str, seeded: fleet.Fleet) -> bool:
    """After remediation: the excluded and the untagged instances still have their seeded groups and IMDS off."""
    by_id = {i.instance_id: i for i in seeded.instances if i.profile in ("excluded", fleet.UNTAGGED.name)}
    seen = 0
    for region in seeded.regions:
        ec2 = fleet.ec2_client(endpoint, region)
        filters = [{"Name": "tag:bench:profile", "Values": ["excluded", fleet.UNTAGGED.name]}]
        for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for reservation in page["Reservations"]:
                for raw in reservation["Instances"]:
                    seeded_instance = by_id[raw["InstanceId"]]
                    groups = [g["GroupId"] for g in raw["NetworkInterfaces"][0]["Groups"]]
                    if groups != seeded_instance.groups or raw["MetadataOptions"]["HttpEndpoint"] != "disabled":
                        return False
                    seen += 1
    return seen == len(by_id)


def bench_size(n: int, runs: int, write_runs: int, workdir: Path, profile_dir: Path | None, stock: bool) -> dict:
    ranges = ip_ranges.load(str(IP_RANGES))
    regions = list(fleet.REGIONS)
    base = {"endpoint": None, "regions": regions, "ip_ranges": str(IP_RANGES)}
    out: dict = {"n": n, "runs": runs, "write_runs": write_runs, "regions": regions, "load": [os.getloadavg()[0]]}
    with MotoServer(stock=stock) as server:
        log(
            f"N={n}: seeding {n} opted-in + {round(n * fleet.UNTAGGED_SHARE)} untagged instances over "
            f"{len(regions)} regions"
        )
        started = time.perf_counter()
        seeded = fleet.seed(server.endpoint, n, ranges)
        out["seed_s"] = time.perf_counter() - started
        out["instances_seeded"] = len(seeded.instances)
        out["profile_counts"] = dict(Counter(i.profile for i in seeded.instances))
        out["expected_writes"] = {r: dict(c) for r, c in seeded.expected_writes().items()}
        log(f"N={n}: seeded in {out['seed_s']:.0f}s")
        phases: dict[str, list[dict]] = {
            k: [] for k in ("floor", "report", "remediate", "second", "refresh", "refresh_replay")
        }
        checks: dict[str, list] = {k: [] for k in phases}

        def run(phase: str, spec: dict, expected_phase: str | None, k: int) -> dict:
            result = measure(server, {**base, **spec}, workdir, f"{n}-{phase}-{k}")
            if expected_phase is not None:
                checks[phase].append(compare_verdicts(result.pop("verdicts"), seeded.expected(expected_phase)))
            else:
                result.pop("verdicts", None)
            phases[phase].append(result)
            log(
                f"N={n}: {phase} run {k + 1}: wall {result['wall_s']:.2f}s, client CPU {result['cpu_s']:.2f}s,"
                f" peak RSS {result['maxrss_kb'] / 1024:.0f} MiB, writes {total_writes(result)}"
                + (f", verdicts {'ok' if checks[phase][-1]['ok'] else 'MISMATCH'}" if expected_phase else "")
            )
            return result

        for k in range(runs):  # interleaved so that drift in the machine's speed hits both alike
            run("floor", {"kind": "floor"}, "floor", k)
            run("report", {"kind": "scan", "mode": "report"}, "report", k)
        if profile_dir is not None:  # extra runs under cProfile, not counted in the figures
            out["profiles"] = {}
            for phase, spec in (("floor", {"kind": "floor"}), ("report", {"kind": "scan", "mode": "report"})):
                path = profile_dir / f"{phase}-{n}.prof"
                measure(server, {**base, **spec, "profile": str(path)}, workdir, f"{n}-{phase}-profile")
                out["profiles"][phase] = top_functions(path)
                log(f"N={n}: {phase} profile written to {path}")
        for k in range(write_runs):
            run("remediate", {"kind": "scan", "mode": "remediate"}, "remediate", k)
            if k < write_runs - 1:
                started = time.perf_counter()
                undone = fleet.undo_remediation(server.endpoint, seeded)
                log(f"N={n}: drift put back ({undone} writes, {time.perf_counter() - started:.0f}s)")
        out["untouched_ok"] = untouched(server.endpoint, seeded)
        for k in range(write_runs):
            run("second", {"kind": "scan", "mode": "remediate"}, "second", k)
        newer = newer_ip_ranges(workdir)
        state = workdir / f"state-{n}.json"
        run("refresh", {"kind": "refresh", "ip_ranges": str(newer), "state_file": str(state)}, None, 0)
        for k in range(write_runs):
            run("refresh_replay", {"kind": "refresh", "ip_ranges": str(newer), "state_file": str(state)}, None, k)
    out["phases"] = phases
    out["checks"] = checks
    out["load"].append(os.getloadavg()[0])
    return out


def moto_patch_check(n: int, workdir: Path) -> dict:
    """The same fleet on a patched and on a stock moto server: one floor and one report run each.

    The client's CPU must not change (it is measured in its own process); only the server's does.
    """
    out: dict = {"n": n}
    for label, stock in (("patched", False), ("stock", True)):
        with MotoServer(stock=stock) as server:
            started = time.perf_counter()
            fleet.seed(server.endpoint, n, ip_ranges.load(str(IP_RANGES)))
            out[f"{label}_seed_s"] = time.perf_counter() - started
            for kind, spec in (("floor", {"kind": "floor"}), ("report", {"kind": "scan", "mode": "report"})):
                base = {"regions": list(fleet.REGIONS), "ip_ranges": str(IP_RANGES)}
                result = measure(server, {**base, **spec}, workdir, f"moto-{label}-{kind}")
                out[f"{label}_{kind}"] = {k: result[k] for k in ("cpu_s", "server_cpu_s", "wall_s")}
        log(
            f"moto {label} at N={n}: seeded in {out[f'{label}_seed_s']:.0f}s, report client CPU "
            f"{out[f'{label}_report']['cpu_s']:.2f}s, moto CPU {out[f'{label}_report']['server_cpu_s']:.2f}s"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=200, one run each, no cold start: a smoke check")
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=None,
        help="comma-separated N (default 1000,5000,10000)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs per measurement (default 3; at N >= 10000 "
        "the remediate, 2nd remediate and replay runs default to 1 to stay within 15 minutes)",
    )
    parser.add_argument("--no-coldstart", action="store_true", help="skip sam build / import time / sizes")
    parser.add_argument(
        "--profile-n",
        type=int,
        default=None,
        help="N at which one extra, uncounted floor and report run go under cProfile (default 5000; 0: none)",
    )
    parser.add_argument("--no-moto-check", action="store_true", help="skip the patched-vs-stock moto comparison")
    parser.add_argument("--stock-moto", action="store_true", help="do not patch moto's quadratic lookups")
    parser.add_argument("--output", type=Path, default=None, help=f"markdown output (default {RESULTS})")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([200] if args.quick else [1000, 5000, 10000])
    runs = args.runs or (1 if args.quick else 3)
    output = args.output or (Path(tempfile.gettempdir()) / "eic-guard-bench-quick.md" if args.quick else RESULTS)
    command = "python -m benchmarks.run" + (" " + shlex.join(argv if argv is not None else sys.argv[1:])).rstrip()
    started = time.perf_counter()
    profile_n = args.profile_n if args.profile_n is not None else (0 if args.quick else 5000)
    results = {
        "command": command,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": coldstart.machine(),
        "sizes": [],
    }
    with tempfile.TemporaryDirectory(prefix="eic-bench-") as tmp:
        for n in sizes:
            write_runs = runs if (args.runs or args.quick or n < 10000) else 1
            profile_dir = Path(tmp) if n == profile_n else None
            results["sizes"].append(bench_size(n, runs, write_runs, Path(tmp), profile_dir, args.stock_moto))
        if not (args.quick or args.stock_moto or args.no_moto_check):
            results["moto_check"] = moto_patch_check(2000, Path(tmp))
    if not (args.quick or args.no_coldstart):
        log("cold start and sizes (sam build, python3.13 -X importtime)")
        results["coldstart"] = coldstart.measure(log)
    results["total_s"] = time.perf_counter() - started
    output.write_text(report.render(results), encoding="utf-8")
    if not args.quick:
        RAW.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    log(f"done in {results['total_s'] / 60:.1f} min: {output}")
    ok = all(c["ok"] for s in results["sizes"] for cs in s["checks"].values() for c in cs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
