"""One measured client process of the organization benchmark: `python -m benchmarks.org_client SPEC.json OUT.json`.

Four kinds, each in a fresh process (so peak RSS and the handler's first import are this run's own):

- `cli`: the command itself, `eic_guard.cli.main(["scan", "--organization", ...])`, its JSON report written to a
  file: wall, CPU, peak RSS, and RSS sampled every 0.2 s (does memory grow with the targets done?).

- `fanout`: `eic_guard.fanout.local.run_job("scan", ...)` — plan → target workers in the bounded thread pool →
  aggregate, as `eic-guard scan --organization --max-workers N` runs it — timed as a whole, the report document
  built too.
- `worker`: the deployed target worker, `functions/scan_target/app.py`'s `lambda_handler`, imported cold (timed),
  then invoked once per target in turn in this one process, as one warm Lambda container runs map items: the run's
  manifest in (moto) S3, the result object written back. Per invocation: wall, CPU, peak RSS, HTTP requests.
- `aggregate`: `functions/aggregate/app.py`'s handler over a run of N targets whose result objects are copies of
  a worker run's real ones (relabelled per target), at the server's latency.

API calls are counted in this process by wrapping botocore's `BaseClient._make_api_call` (every session, the member
accounts' assumed-role sessions included); the server's count of HTTP requests (retries included) comes from the
latency server (`benchmarks/latency.py`).
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import os
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.measure import cpu_seconds, peak_rss_kb, rss_kb

ROOT = Path(__file__).resolve().parents[1]


class ApiCalls:
    """Counts every botocore API call made in this process, by "service:Operation" (thread-safe)."""

    def __init__(self):
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def install(self) -> None:
        from botocore.client import BaseClient

        original = BaseClient._make_api_call
        calls = self

        def counted(client, operation_name, api_params):
            with calls._lock:
                calls.counts[f"{client.meta.service_model.service_name}:{operation_name}"] += 1
            return original(client, operation_name, api_params)

        BaseClient._make_api_call = counted

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)


class Control:
    """The latency server's control endpoint (never through a proxy)."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _get(self, path: str) -> Any:
        with self._opener.open(f"{self.endpoint}/_bench/{path}", timeout=30) as response:
            return json.loads(response.read())

    def latency(self, ms: float) -> None:
        self._get(f"latency?ms={ms}")

    def counts(self, reset: bool = False) -> dict[str, int]:
        return self._get("counts?reset=1" if reset else "counts")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs), so the next peak is one step's own."""
    try:
        with open("/proc/self/clear_refs", "w") as stream:
            stream.write("5")
        return True
    except OSError:
        return False


class LambdaContext:
    """What the Lambda runtime hands the handler (the attributes Powertools and the Deadline read)."""

    def __init__(self, name: str, timeout_s: int = 900, memory_mb: int = 512):
        self.function_name = name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_mb
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        self.aws_request_id = f"bench-{time.monotonic_ns()}"
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "bench"
        self._ends = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._ends - time.monotonic()) * 1000))


def import_handler(function: str, module_name: str) -> Any:
    """Import functions/<function>/app.py as Lambda does (its directory first on sys.path)."""
    directory = ROOT / "functions" / function
    sys.path.insert(0, str(directory))
    spec = importlib.util.spec_from_file_location(module_name, directory / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _settings(spec: dict):
    from eic_guard.settings import Settings

    return Settings.build(
        regions=tuple(spec["regions"]),
        mode=spec["mode"],
        accounts=spec.get("accounts", ""),
        member_role_name=spec.get("role_name", "eic-guard-member"),
        tag_instances=spec.get("tag_instances", False),
        reports_bucket=spec.get("bucket"),
    )


# ---- fanout -------------------------------------------------------------------------------------------------------
def fanout(spec: dict, calls: ApiCalls, control: Control) -> dict:
    import boto3
    from eic_guard.aws.clients import AwsClients
    from eic_guard.fanout.local import RunWatch, run_job
    from eic_guard.ranges import ip_ranges

    calls.install()
    ranges = ip_ranges.load(spec["ip_ranges"])
    settings = _settings(spec)
    clients = AwsClients(boto3.Session(region_name="us-east-1"))
    finished: list[float] = []
    control.counts(reset=True)
    calls_before = calls.snapshot()
    cpu_before, started = cpu_seconds(), time.perf_counter()
    outcome = run_job(
        "scan",
        settings,
        clients,
        ranges=ranges,
        max_workers=spec["workers"],
        watch=RunWatch(on_target=lambda _t: finished.append(time.perf_counter())),
    )
    document = outcome.report.to_dict()  # the CLI always builds it (table, JSON, HTML come from it)
    wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    statuses = Counter(t["status"] for t in document["targets"])
    return {
        "kind": "fanout",
        "workers": spec["workers"],
        "targets": len(outcome.plan.targets),
        "accounts": len(document["accounts"]),
        "statuses": dict(statuses),
        "errors": sorted({t["error"] for t in document["targets"] if t["error"]})[:5],
        "instances": document["summary"]["instances"],
        "summary": document["summary"],
        "wall_s": wall,
        "cpu_s": cpu,
        "first_target_s": (finished[0] - started) if finished else None,
        "last_target_s": (finished[-1] - started) if finished else None,
        "maxrss_kb": peak_rss_kb(),
        "calls": dict(calls.snapshot() - calls_before),
        "http_requests": control.counts(),
    }


# ---- the command line ---------------------------------------------------------------------------------------------
class RssSampler:
    """RSS every `interval` seconds in a daemon thread, from start to stop: (seconds since start, KiB)."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        started = time.perf_counter()
        while not self._stop.wait(self.interval):
            self.samples.append((time.perf_counter() - started, rss_kb()))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()


def cli(spec: dict, calls: ApiCalls, control: Control) -> dict:
    """`eic-guard scan --organization --max-workers N` as a person runs it, the JSON report to a file."""
    from eic_guard.cli import main as eic_guard

    calls.install()
    report_path = spec["report_path"]
    argv = ["scan", "--organization", "--role-name", spec["role_name"], "--region", ",".join(spec["regions"])]
    argv += ["--ip-ranges", spec["ip_ranges"], "--max-workers", str(spec["workers"]), "--quiet"]
    argv += ["--format", "json", "--output", report_path, "--allow-empty", "--fail-on", "none"]
    control.counts(reset=True)
    rss_before = rss_kb()
    cpu_before, started = cpu_seconds(), time.perf_counter()
    with RssSampler() as sampler:
        code = eic_guard(argv)
    wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    with open(report_path, encoding="utf-8") as stream:
        document = json.load(stream)
    return {
        "kind": "cli",
        "argv": argv,
        "exit_code": code,
        "workers": spec["workers"],
        "targets": len(document["targets"]),
        "accounts": len(document["accounts"]),
        "statuses": dict(Counter(t["status"] for t in document["targets"])),
        "instances": document["summary"]["instances"],
        "report_bytes": os.path.getsize(report_path),
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_before_kb": rss_before,
        "rss_samples": sampler.samples,
        "maxrss_kb": peak_rss_kb(),
        "calls": dict(calls.snapshot()),
        "http_requests": control.counts(),
    }


# ---- the deployed worker ------------------------------------------------------------------------------------------
def _write_manifest(spec: dict, pad_to: int = 0) -> tuple[dict, list[dict]]:
    """The run's manifest in S3 as Plan writes it (untimed, before the invocations); returns (event base, targets)."""
    import boto3
    from eic_guard.aws.clients import AwsClients
    from eic_guard.fanout.plan import plan_run
    from eic_guard.fanout.steps import RunObjects
    from eic_guard.fanout.targets import Target
    from eic_guard.ranges import ip_ranges

    session = boto3.Session(region_name="us-east-1")
    ranges = ip_ranges.load(spec["ip_ranges"])
    plan = plan_run("scan", _settings(spec), AwsClients(session), ranges=ranges, run_id=spec["run_id"])
    # The nightly scan as deployed: the catch-up decided to bring the managed groups to `ranges` (docs/architecture.md
    # §4).
    plan.apply_ranges = spec.get("apply_ranges", True)
    targets = [t.to_dict() for t in plan.targets]
    if pad_to > len(plan.targets):  # every worker reads the whole manifest: make it as long as the real one
        plan.targets += [Target(f"{900000000000 + k:012d}", "us-east-1") for k in range(pad_to - len(plan.targets))]
    s3 = session.client("s3")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=spec["bucket"])
    objects = RunObjects(s3, spec["bucket"], plan.run_id)
    manifest_key = objects.put("manifest.json", plan.to_dict())
    objects.put("targets.json", targets)
    base = {"run_id": plan.run_id, "bucket": spec["bucket"], "manifest_key": manifest_key, "job": plan.job}
    return base, targets


def worker(spec: dict, calls: ApiCalls, control: Control) -> dict:
    rss_start = rss_kb()
    started = time.perf_counter()
    app = import_handler("scan_target", "scan_target_app")
    import_s = time.perf_counter() - started
    rss_imported = rss_kb()
    calls.install()
    base, targets = _write_manifest(spec, spec.get("manifest_targets", 0))
    manifest_bytes = _object_size(spec["bucket"], base["manifest_key"])
    limit = spec.get("invocations") or len(targets)
    invocations = []
    for target in targets[:limit]:
        event = {**base, "target": target, "phase": "apply", "round": 1}
        control.counts(reset=True)
        calls_before = calls.snapshot()
        reset_peak_rss()
        cpu_before, wall_before = cpu_seconds(), time.perf_counter()
        out = app.lambda_handler(event, LambdaContext("eic-guard-ScanTargetFunction"))
        wall, cpu = time.perf_counter() - wall_before, cpu_seconds() - cpu_before
        invocations.append(
            {
                "target": target,
                "status": out["status"],
                "instances": out["instances"],
                "wall_s": wall,
                "cpu_s": cpu,
                "peak_rss_kb": peak_rss_kb(),
                "rss_after_kb": rss_kb(),
                "calls": dict(calls.snapshot() - calls_before),
                "http_requests": control.counts(),
            }
        )
    return {
        "kind": "worker",
        "import_s": import_s,
        "rss_start_kb": rss_start,
        "rss_imported_kb": rss_imported,
        "manifest_bytes": manifest_bytes,
        "run_id": base["run_id"],
        "invocations": invocations,
        "maxrss_kb": peak_rss_kb(),
    }


def _object_size(bucket: str, key: str) -> int:
    import boto3

    return boto3.client("s3", region_name="us-east-1").head_object(Bucket=bucket, Key=key)["ContentLength"]


# ---- aggregate ----------------------------------------------------------------------------------------------------
def aggregate(spec: dict, calls: ApiCalls, control: Control) -> dict:
    import boto3
    from eic_guard.fanout.steps import RunObjects

    app = import_handler("aggregate", "aggregate_app")
    calls.install()
    control.latency(0)
    base, targets = _write_manifest({**spec, "apply_ranges": False})
    s3 = boto3.client("s3", region_name="us-east-1")
    samples, _ = RunObjects(s3, spec["bucket"], spec["sample_run_id"]).results()
    objects = RunObjects(s3, spec["bucket"], base["run_id"])
    for k, target in enumerate(targets):  # copies of real worker results, one per target of this run
        document = json.loads(json.dumps(samples[k % len(samples)]))
        document.update(target)
        for entry in document["instances"]:
            entry["account_id"], entry["region"] = target["account_id"], target["region"]
            entry["instance_id"] = f"{entry['instance_id']}-{k}"
        objects.put(f"results/{target['account_id']}/{target['region']}/apply-r1.json", document)
    del samples, document  # the copies are in S3: only the handler's own memory from here on
    gc.collect()
    event = {**base, "targets_key": objects.key("targets.json"), "targets": len(targets), "revoke": False}
    control.latency(spec["latency_ms"])
    control.counts(reset=True)
    calls_before = calls.snapshot()
    reset_peak_rss()
    cpu_before, started = cpu_seconds(), time.perf_counter()
    out = app.lambda_handler(event, LambdaContext("eic-guard-AggregateFunction", timeout_s=300))
    wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    return {
        "kind": "aggregate",
        "targets": len(targets),
        "instances": out["summary"]["instances"],
        "wall_s": wall,
        "cpu_s": cpu,
        "maxrss_kb": peak_rss_kb(),
        "calls": dict(calls.snapshot() - calls_before),
        "http_requests": control.counts(),
        "report_key": out.get("report_key"),
    }


KINDS = {"cli": cli, "fanout": fanout, "worker": worker, "aggregate": aggregate}


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as stream:
        spec = json.load(stream)
    calls = ApiCalls()  # installed by each kind, after the imports it times
    result = KINDS[spec["kind"]](spec, calls, Control(os.environ["AWS_ENDPOINT_URL"]))
    result["startup_s"] = time.perf_counter() - _STARTED
    with open(argv[2], "w", encoding="utf-8") as stream:
        json.dump(result, stream)
    return 0


_STARTED = time.perf_counter()

if __name__ == "__main__":
    sys.exit(main(sys.argv))
