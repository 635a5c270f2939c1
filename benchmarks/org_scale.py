"""Organization scale without a simulator's fleet (issue 20): the deployed Aggregate handler over synthetic worker
results (benchmarks/synthetic.py: real report entries, real guidance) at 10,000 and 100,000 instances, and the HTML
page at 100,000. Each size runs in a fresh process; peak RSS is that process's VmHWM, reset just before the
invocation (the result objects sit in moto's in-process S3 meanwhile: the baseline column).

    .venv/bin/python -m benchmarks.org_scale [--instances 10000,100000] [--per-target 100]

Results: printed as a Markdown table and written to benchmarks/org_scale_results.json.
"""

from __future__ import annotations

import argparse
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
BUCKET = "eic-guard-bench-scale"
REGION = "us-east-1"


def _status(field: str) -> int:
    """A /proc/self/status figure in KiB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def child(instances: int, per_target: int) -> dict:
    """Seed the result objects, then invoke the real Aggregate handler once; its figures."""
    os.environ.update(
        {
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "EicGuard",
            "POWERTOOLS_SERVICE_NAME": "eic-guard",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "EIC_GUARD_REPORTS_BUCKET": BUCKET,
            "EIC_GUARD_MODE": "remediate",
        }
    )
    import boto3
    from eic_guard.fanout.plan import RunPlan
    from eic_guard.fanout.steps import RunObjects
    from eic_guard.fanout.targets import Target
    from eic_guard.ranges import ip_ranges
    from moto import mock_aws

    from benchmarks import synthetic
    from benchmarks.org_client import LambdaContext, import_handler, reset_peak_rss

    accounts = max(1, instances // (per_target * len(synthetic.REGIONS)))
    os.environ["EIC_GUARD_REGIONS"] = ",".join(synthetic.REGIONS)
    with mock_aws():
        s3 = boto3.client("s3", REGION)
        s3.create_bucket(Bucket=BUCKET)
        targets = [Target(a, r) for a, r, _ in synthetic.organization(instances, accounts)]
        plan = RunPlan(
            run_id=f"scale-{instances}",
            job="scan",
            mode="remediate",
            started_at=datetime(2026, 12, 7, 3, 0, tzinfo=UTC),
            own_account=synthetic.account_ids(1)[0],
            ranges=ip_ranges.load(str(ROOT / "tests" / "fixtures" / "ip-ranges" / "ip-ranges-2026-08-22.json")),
            apply_ranges=False,
            targets=targets,
        )
        objects = RunObjects(s3, BUCKET, plan.run_id)
        manifest_key = objects.put("manifest.json", plan.to_dict())
        seeded = time.perf_counter()
        result_bytes = 0
        for document in synthetic.documents(instances, accounts):
            body = json.dumps(document).encode()
            result_bytes += len(body)
            key = objects.key(f"results/{document['account_id']}/{document['region']}/apply-r1.json")
            s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        seed_s = time.perf_counter() - seeded
        handler = import_handler("aggregate", "eic_guard_aggregate_app_scale").lambda_handler
        event = {
            "run_id": plan.run_id,
            "job": "scan",
            "bucket": BUCKET,
            "manifest_key": manifest_key,
            "targets_key": objects.key("targets.json"),
            "targets": len(targets),
            "revoke": False,
        }
        reset_peak_rss()
        baseline = _status("VmRSS")
        cpu, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        output = handler(event, LambdaContext("eic-guard-aggregate", timeout_s=900, memory_mb=1024))
        wall = time.perf_counter() - wall
        after = resource.getrusage(resource.RUSAGE_SELF)
        peak = _status("VmHWM")
        stored = {
            o["Key"]: o["Size"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="reports/")
            for o in page.get("Contents", ())
        }
    return {
        "instances": instances,
        "targets": len(targets),
        "accounts": accounts,
        "result_objects_bytes": result_bytes,
        "seed_s": seed_s,
        "wall_s": wall,
        "cpu_s": (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime),
        "baseline_rss_mib": baseline / 1024,
        "peak_rss_mib": peak / 1024,
        "output_bytes": len(json.dumps(output, separators=(",", ":")).encode()),
        "report_json_bytes": sum(size for key, size in stored.items() if key.endswith(".json")),
        "report_html_bytes": sum(size for key, size in stored.items() if key.endswith(".html")),
        "summary": output["summary"],
    }


def run(sizes: list[int], per_target: int) -> list[dict]:
    rows = []
    for size in sizes:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.org_scale", "--child", str(size), "--per-target", str(per_target)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{size} instances failed:\n{done.stderr[-4000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["process_s"] = time.perf_counter() - started
        rows.append(row)
        print(f"{size} instances: {json.dumps(row)}", file=sys.stderr)
    return rows


def render(rows: list[dict]) -> str:
    lines = [
        "| instances | targets | wall s | CPU s | peak RSS MiB | of which before the call (moto's S3) | output bytes | "
        "report JSON MB | report HTML MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['instances']:,} | {r['targets']:,} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
            f"{r['peak_rss_mib']:.0f} | {r['baseline_rss_mib']:.0f} | {r['output_bytes']:,} | "
            f"{r['report_json_bytes'] / 1e6:.1f} | {r['report_html_bytes'] / 1e6:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", default="10000,100000")
    parser.add_argument("--per-target", type=int, default=100)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.per_target)))
        return 0
    rows = run([int(n) for n in args.instances.split(",")], args.per_target)
    RAW.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
