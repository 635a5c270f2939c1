"""Organization scale without a simulator's fleet (issue 20): the deployed Aggregate handler over synthetic worker
results (benchmarks/synthetic.py: real report entries, real guidance) at 10,000 to 1,000,000 instances (100 per
target). Each size runs in a fresh process; peak RSS is that process's VmHWM, reset just before the invocation.

The result objects are files seeded once under /tmp/eic-guard-bench-scale/ and served by benchmarks/file_s3.py, which
stands in for S3 (GETs read a file, the report's uploads write files): the measured process holds only what the
Aggregate holds (an in-process moto would hold the whole fleet's results and report in the memory being measured).
The handler logs at INFO, as deployed (the template's LogLevel default), to a file. With `--compare` (sizes up to
100,000), the in-memory aggregation (fanout.aggregate.aggregate_run, Report.to_json_bytes, render_pages) runs on
the same results in another fresh process and the digests of its JSON report and pages are compared with what the
streamed handler wrote.

    .venv/bin/python -m benchmarks.org_scale [--instances 10000,100000,1000000] [--per-target 100] [--compare]

Results: printed as a Markdown table and written to benchmarks/org_scale_results.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAW = Path(__file__).resolve().parent / "org_scale_results.json"
CACHE = Path("/tmp/eic-guard-bench-scale")
BUCKET = "eic-guard-bench-scale"
REGION = "us-east-1"
FINISHED = datetime(2026, 12, 7, 3, 9, tzinfo=UTC)  # the report's finished_at in both paths, so they can be compared


def _status(field: str) -> int:
    """A /proc/self/status figure in KiB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def _environment() -> None:
    os.environ.update(
        {
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "EicGuard",
            "POWERTOOLS_SERVICE_NAME": "eic-guard",
            "POWERTOOLS_LOG_LEVEL": "INFO",
            "EIC_GUARD_REPORTS_BUCKET": BUCKET,
            "EIC_GUARD_MODE": "remediate",
        }
    )


def _fleet(instances: int, per_target: int):
    """(accounts, results directory, plan) of a size, its result files seeded once."""
    from eic_guard.fanout.targets import Target
    from eic_guard.ranges import ip_ranges

    from benchmarks import file_s3, synthetic

    accounts = max(1, instances // (per_target * len(synthetic.REGIONS)))
    os.environ["EIC_GUARD_REGIONS"] = ",".join(synthetic.REGIONS)
    directory = CACHE / f"{instances}-{per_target}"
    marker = directory / "seeded.json"
    if not marker.exists():
        started = time.perf_counter()
        size = file_s3.seed(directory / "results", synthetic.documents(instances, accounts))
        marker.write_text(json.dumps({"bytes": size, "seed_s": time.perf_counter() - started}))
    plan = synthetic.run_plan(
        f"scale-{instances}",
        [Target(a, r) for a, r, _ in synthetic.organization(instances, accounts)],
        ip_ranges.load(str(ROOT / "tests" / "fixtures" / "ip-ranges" / "ip-ranges-2026-08-22.json")),
    )
    return accounts, directory, plan, json.loads(marker.read_text())


def _digests(written: Path) -> dict[str, str]:
    """sha256 of every report object written, by name under its folder."""
    found = {}
    for path in sorted(written.rglob("*")):
        if path.is_file():
            digest = hashlib.sha256()
            with path.open("rb") as stream:
                while chunk := stream.read(8 * 1024 * 1024):
                    digest.update(chunk)
            found[str(path.relative_to(written)).split("/", 5)[-1]] = digest.hexdigest()
    return found


def child(instances: int, per_target: int) -> dict:
    """Seed the result files (once), then invoke the real Aggregate handler once; its figures."""
    _environment()
    from eic_guard.aws.clients import AwsClients
    from eic_guard.fanout import steps
    from eic_guard.fanout.steps import RunObjects

    from benchmarks.file_s3 import FileS3
    from benchmarks.org_client import LambdaContext, import_handler, reset_peak_rss

    accounts, directory, plan, seeded = _fleet(instances, per_target)
    written = directory / "written"
    if written.exists():
        subprocess.run(["rm", "-rf", str(written)], check=True)
    s3 = FileS3(f"runs/{plan.run_id}/", directory / "results", written, REGION)

    class _Clock(datetime):
        @classmethod
        def now(cls, tz=None):  # the run's end, fixed
            return FINISHED

    steps.datetime = _Clock
    real_client = AwsClients.client
    AwsClients.client = lambda self, service, region=None: s3 if service == "s3" else real_client(self, service, region)
    objects = RunObjects(s3, BUCKET, plan.run_id)
    manifest_key = objects.put("manifest.json", plan.to_dict())
    handler = import_handler("aggregate", "eic_guard_aggregate_app_scale").lambda_handler
    event = {
        "run_id": plan.run_id,
        "job": "scan",
        "bucket": BUCKET,
        "manifest_key": manifest_key,
        "targets_key": objects.key("targets.json"),
        "targets": len(plan.targets),
        "revoke": False,
    }
    log = directory / "handler.log"
    sys.stdout.flush()
    saved = os.dup(1)
    with log.open("wb") as out:
        os.dup2(out.fileno(), 1)  # the handler's log lines and metrics, as Lambda would send them to CloudWatch
        reset_peak_rss()
        baseline = _status("VmRSS")
        cpu, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        output = handler(event, LambdaContext("eic-guard-aggregate", timeout_s=900, memory_mb=1024))
        wall = time.perf_counter() - wall
        after = resource.getrusage(resource.RUSAGE_SELF)
        peak = _status("VmHWM")
        sys.stdout.flush()
        os.dup2(saved, 1)
    sizes = {str(p.relative_to(written)): p.stat().st_size for p in written.rglob("*") if p.is_file()}
    return {
        "instances": instances,
        "targets": len(plan.targets),
        "accounts": accounts,
        "result_objects_bytes": seeded["bytes"],
        "seed_s": seeded["seed_s"],
        "wall_s": wall,
        "cpu_s": (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime),
        "baseline_rss_mib": baseline / 1024,
        "peak_rss_mib": peak / 1024,
        "output_bytes": len(json.dumps(output, separators=(",", ":")).encode()),
        "report_json_bytes": sum(size for key, size in sizes.items() if key.endswith(".json")),
        "report_html_bytes": sum(size for key, size in sizes.items() if key.endswith(".html")),
        "report_pages": sum(1 for key in sizes if key.endswith(".html")),
        "log_bytes": log.stat().st_size,
        "digests": _digests(written),
        "summary": output["summary"],
    }


def in_memory(instances: int, per_target: int) -> dict:
    """The in-memory aggregation of the same results (what Aggregate did before streaming): its objects' digests."""
    _environment()
    import logging

    from eic_guard.fanout.aggregate import aggregate_run, merge_targets
    from eic_guard.fanout.steps import RunObjects
    from eic_guard.outputs.html import render_pages
    from eic_guard.settings import Settings

    from benchmarks.file_s3 import FileS3

    logging.disable(logging.INFO)
    _, directory, plan, _ = _fleet(instances, per_target)
    s3 = FileS3(f"runs/{plan.run_id}/", directory / "results", directory / "unused", REGION)
    documents, broken = RunObjects(s3, BUCKET, plan.run_id).results()
    settings = Settings.from_env()
    report, _, _ = aggregate_run(plan, documents, settings, FINISHED, broken)
    del documents, broken, merge_targets
    found = {f"{plan.run_id}.json": hashlib.sha256(report.to_json_bytes()).hexdigest()}
    for name, page in render_pages(report, stem=plan.run_id).items():
        found[name] = hashlib.sha256(page.encode()).hexdigest()
    return found


def _fresh(flag: str, size: int, per_target: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.org_scale", flag, str(size), "--per-target", str(per_target)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{size} instances ({flag}) failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(sizes: list[int], per_target: int, compare: bool = False) -> list[dict]:
    rows = []
    for size in sizes:
        started = time.perf_counter()
        row = _fresh("--child", size, per_target)
        row["process_s"] = time.perf_counter() - started
        if compare and size <= 100_000:
            expected = _fresh("--in-memory", size, per_target)
            row["equal_to_in_memory"] = {
                name: row["digests"].get(name) == digest for name, digest in sorted(expected.items())
            }
        rows.append(row)
        print(f"{size} instances: {json.dumps(row)}", file=sys.stderr)
    return rows


def render(rows: list[dict]) -> str:
    lines = [
        "| instances | targets | wall s | CPU s | peak RSS MiB | RSS before the call MiB | output bytes | "
        "report JSON MB | report HTML MB (pages) | INFO log MB | equal to the in-memory report |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        equal = r.get("equal_to_in_memory")
        same = "not compared" if equal is None else ("yes, every object" if all(equal.values()) else f"NO: {equal}")
        lines.append(
            f"| {r['instances']:,} | {r['targets']:,} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
            f"{r['peak_rss_mib']:.0f} | {r['baseline_rss_mib']:.0f} | {r['output_bytes']:,} | "
            f"{r['report_json_bytes'] / 1e6:.1f} | {r['report_html_bytes'] / 1e6:.1f} ({r['report_pages']}) | "
            f"{r['log_bytes'] / 1e6:.0f} | {same} |"
        )
    return "\n".join(lines)


def rows() -> list[dict]:
    """The last run's rows (benchmarks/org_scale_results.json), none if it has not run."""
    return json.loads(RAW.read_text(encoding="utf-8")) if RAW.exists() else []


def section(rows: list[dict] | None = None) -> str:
    """The Aggregate-at-scale section of benchmarks/ORG_RESULTS.md (benchmarks/org.py includes it), from `rows` or
    benchmarks/org_scale_results.json."""
    if rows is None:
        if not RAW.exists():
            return ""
        rows = json.loads(RAW.read_text(encoding="utf-8"))
    return f"""## Aggregate at organization scale (streamed)

`python -m benchmarks.org_scale --compare` (what `make bench-org` runs after `benchmarks.org`): the deployed Aggregate
handler (`functions/aggregate/app.py`) over synthetic worker results, 100 instances per target, 5 regions
(`benchmarks/synthetic.py`: real report entries and guidance; 55% compliant, 5% world-open warning, 14% missing SSH
rule, 9% IMDS disabled, 6% foreign AMI, 4% NACL blocks, 2% no public IPv4, 3% excluded, 2% error). Each size in a
fresh process; S3 is `benchmarks/file_s3.py` (result objects read from files, the report's uploads written to files:
nothing of the fleet sits in the measured process); the handler logs at INFO as deployed. Peak RSS is the process's
VmHWM reset just before the invocation; "RSS before the call" is the imported process. "Equal" compares the
SHA-256 of every object written with the in-memory path's (`aggregate_run`, `Report.to_json_bytes`, `render_pages`)
on the same results, in another process.

{render(rows)}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", default="10000,100000,1000000")
    parser.add_argument("--per-target", type=int, default=100)
    parser.add_argument("--compare", action="store_true", help="check the reports against the in-memory path")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--in-memory", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.per_target)))
        return 0
    if args.in_memory:
        print(json.dumps(in_memory(args.in_memory, args.per_target)))
        return 0
    rows = run([int(n) for n in args.instances.split(",")], args.per_target, args.compare)
    RAW.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
