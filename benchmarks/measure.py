"""One measured client run, in a fresh process: `python -m benchmarks.measure SPEC.json OUT.json`.

A fresh process per run makes peak RSS (VmHWM) a per-run figure and the imports comparable between eic-guard
and the floor. CPU is this process's user+sys only (getrusage RUSAGE_SELF), so the moto server's work, which runs in
another process, is never counted. API calls are counted by operation and region with a botocore `before-call`
hook registered on the session every client is built from.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
from collections import defaultdict

_STARTED = time.perf_counter()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_kb() -> int:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_rss_kb() -> int:
    """This process's peak RSS. Not ru_maxrss: Linux carries that across execve from the forking parent."""
    with open("/proc/self/status") as stream:
        for line in stream:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class GcTimer:
    """gc callback: CPU seconds spent in the cyclic collector, and how many full (oldest generation) passes."""

    def __init__(self):
        self.seconds, self.full, self._started = 0.0, 0, 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.process_time()
            return
        self.seconds += time.process_time() - self._started
        self.full += info["generation"] == 2


class CallCounter:
    """before-call hook: EC2 operation counts by region, other services' under "global" (once per API call)."""

    def __init__(self):
        self.calls: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def __call__(self, model, request_signer=None, **_):
        region = getattr(request_signer, "region_name", None) or "global"
        if model.service_model.service_name != "ec2":
            region = "global"
        self.calls[region][model.name] += 1


def _session(counter: CallCounter):
    import boto3

    session = boto3.Session()
    session.events.register("before-call", counter)
    return session


def _eic_by_region(path: str, regions: list[str]) -> dict:
    """The floor reads the EIC IPv4 prefixes straight from ip-ranges.json (outside the measured section)."""
    import ipaddress

    with open(path, encoding="utf-8") as stream:
        document = json.load(stream)
    return {
        r: sorted(
            {
                ipaddress.ip_network(p["ip_prefix"])
                for p in document["prefixes"]
                if p["service"] == "EC2_INSTANCE_CONNECT" and p["region"] == r
            }
        )
        for r in regions
    }


def run(spec: dict) -> dict:
    counter = CallCounter()
    kind = spec["kind"]
    regions = spec["regions"]
    imports_started = time.perf_counter()
    if kind == "floor":
        import boto3  # noqa: F401

        from benchmarks import floor

        imported = time.perf_counter()
        eic = _eic_by_region(spec["ip_ranges"], regions)
        session = _session(counter)

        def work():
            return floor.scan(session, regions, eic), None
    else:
        from eic_guard.aws.clients import AwsClients
        from eic_guard.ranges import ip_ranges
        from eic_guard.settings import Settings

        if kind == "scan":
            from eic_guard.fanout.local import run_scan
        else:
            from eic_guard.ranges.refresh import apply_ranges
            from eic_guard.ranges.state import FileStateStore

        imported = time.perf_counter()
        ranges = ip_ranges.load(spec["ip_ranges"])
        clients = AwsClients(_session(counter))
        if kind == "scan":
            settings = Settings.build(regions=tuple(regions), mode=spec["mode"])

            def work():
                document = run_scan(clients, settings, ranges).to_dict()  # the handler always builds the document
                return {i["instance_id"]: i["verdict"] for i in document["instances"]}, document["summary"]
        elif kind == "refresh":
            settings = Settings.build(regions=tuple(regions), mode="remediate")
            store = FileStateStore(spec["state_file"])

            def work():
                result = apply_ranges(clients, settings, store, ranges, replay_same=True)
                return None, result.summary()
        else:
            raise SystemExit(f"unknown kind {kind}")

    profiler = None
    if spec.get("profile"):
        import cProfile

        profiler = cProfile.Profile(time.process_time)  # CPU, not time spent waiting for the server
    collections = GcTimer()
    rss_before = rss_kb()
    cpu_before, wall_before = cpu_seconds(), time.perf_counter()
    gc.callbacks.append(collections)
    if profiler:
        profiler.enable()
    verdicts, summary = work()
    if profiler:
        profiler.disable()
    gc.callbacks.remove(collections)
    wall, cpu = time.perf_counter() - wall_before, cpu_seconds() - cpu_before
    maxrss = peak_rss_kb()
    if profiler:
        profiler.dump_stats(spec["profile"])
    return {
        "kind": kind,
        "mode": spec.get("mode"),
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_total_s": cpu_seconds(),
        "import_s": imported - imports_started,
        "startup_s": imports_started - _STARTED,
        "gc_s": collections.seconds,
        "gc_full": collections.full,
        "rss_before_kb": rss_before,
        "maxrss_kb": maxrss,
        "calls": {region: dict(ops) for region, ops in counter.calls.items()},
        "verdicts": verdicts,
        "summary": summary,
    }


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as stream:
        spec = json.load(stream)
    result = run(spec)
    with open(argv[2], "w", encoding="utf-8") as stream:
        json.dump(result, stream)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
