"""`make bench-org` / `python -m benchmarks.org [--quick] [--cli-rss]`: the organization fan-out, measured (issue 9).

On a moto server in its own process (127.0.0.1 only) that answers every request after an injected delay
(`benchmarks/latency.py`, modelling AWS round trips), it seeds an AWS Organization of A accounts (the management
account and A-1 members created with Organizations CreateAccount), each populated through its member role's
assumed-role credentials (moto maps them to the role's account) with a few instances in each of R regions. Then,
each in a fresh client process (`benchmarks/org_client.py`):

0. the command itself, `eic-guard scan --organization` at 0 ms, over a tenth of the accounts (the organization is
   grown to them first) with 1 and 8 workers, then over all of them with 8: its peak RSS (`--cli-rss`: only this);
1. the local fan-out (`run_job`, as `eic-guard scan --organization --max-workers N`) over the A x R targets at
   max_workers 1, 8, 32 and a latency of 0 and 100 ms: wall time, targets/s, API calls per target;
2. the deployed target worker (`functions/scan_target/app.py`'s handler) invoked target after target in one
   process, as one warm Lambda container runs map items: a first remediate night (drift to fix) and a steady one,
   at 100 ms (duration and calls per invocation: the inputs of the 500 x 17 estimate), then many invocations at
   0 ms (does a warm container's memory grow?), and the Aggregate handler over N targets' result objects;
3. one target of 5,000 instances (a second server, `benchmarks/fleet.py`'s drift mix in one region): the
   worker's cold import and peak RSS for a report and a remediate invocation; the handler's import as deployed
   (`sam build`, `benchmarks/coldstart.py`'s method) when python3.13 and sam are there.

Writes benchmarks/ORG_RESULTS.md (tables and the worked 500 x 17 estimate) and benchmarks/org_results.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LAYER_SRC = ROOT / "layers" / "eic_guard"
if str(LAYER_SRC) not in sys.path:
    sys.path.insert(0, str(LAYER_SRC))

import boto3  # noqa: E402
import botocore.session  # noqa: E402
from eic_guard.ranges import ip_ranges  # noqa: E402
from eic_guard.simulated import SimulatedAccount, ssh_from  # noqa: E402

from benchmarks import coldstart, fleet, org_scale, sfn_cost  # noqa: E402
from benchmarks.org_client import Control  # noqa: E402
from benchmarks.run import IP_RANGES, ServerProcess, child_env, log  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "ORG_RESULTS.md"
ISSUE20 = Path(__file__).resolve().parent / "ISSUE20.md"
RAW = Path(__file__).resolve().parent / "org_results.json"
MANAGEMENT = "123456789012"  # moto's default account: the caller, the organization's management account
ROLE = "eic-guard-member"
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2")
BUCKET = "eic-guard-bench-reports"
# Lambda gives a function CPU in proportion to its memory: one full vCPU at 1,769 MB.
FULL_VCPU_MB = 1769

# Prices (us-east-1, on demand), as given in the brief / the AWS price pages.
PRICE_GB_S_ARM = 0.0000133334
PRICE_REQUEST = 0.20 / 1_000_000
PRICE_TRANSITION = 0.025 / 1000
PRICE_S3_PUT = 0.005 / 1000  # PUT, COPY, POST, LIST
PRICE_S3_GET = 0.0004 / 1000
PRICE_METRIC_MONTH = 0.30  # CloudWatch custom metric, first 10,000 per month
PRICE_LOG_GB = 0.50  # CloudWatch Logs ingestion (standard class)


# ---- the server ---------------------------------------------------------------------------------------------------
class LatencyServer(ServerProcess):
    """`python -m benchmarks.latency` in its own process, with a control channel for its added latency."""

    name = "latency server"
    stop_timeout = 30

    def __init__(self, amis_regions: tuple[str, ...] = REGIONS):
        self.amis_regions = amis_regions

    def argv(self) -> list[str]:
        return ["benchmarks.latency", "--amis", ",".join(self.amis_regions)]

    def __enter__(self) -> LatencyServer:
        super().__enter__()
        self.control = Control(self.endpoint)
        return self


def lambda_env(function: str, spec: dict) -> dict[str, str]:
    """What the Lambda runtime and the template set for a function (tracing off: no X-Ray daemon here)."""
    env = {k: v for k, v in coldstart.LAMBDA_ENV.items() if not k.startswith(("AWS_ACCESS", "AWS_SECRET"))}
    env.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": f"eic-guard-{function}",
            "LAMBDA_TASK_ROOT": str(ROOT / "functions" / function),
            "POWERTOOLS_TRACE_DISABLED": "true",
            "EIC_GUARD_REGIONS": ",".join(spec["regions"]),
            "EIC_GUARD_MODE": spec["mode"],
            "EIC_GUARD_ACCOUNTS": spec.get("accounts", ""),
            "EIC_GUARD_MEMBER_ROLE_NAME": ROLE,
            "EIC_GUARD_TAG_INSTANCES": "true" if spec.get("tag_instances") else "false",
            "EIC_GUARD_REMEDIATE_PUBLIC_IP": "false",
            "EIC_GUARD_REPORTS_BUCKET": BUCKET,
        }
    )
    return env


def measure(server: LatencyServer, spec: dict, workdir: Path, label: str, latency_ms: float | None = None) -> dict:
    """One client run in a fresh process (stdout, the handlers' logs, kept to count its bytes)."""
    if latency_ms is not None:
        server.control.latency(latency_ms)
    spec = {"ip_ranges": str(IP_RANGES), "role_name": ROLE, "bucket": BUCKET, **spec}
    spec_path, out_path = workdir / f"{label}.spec.json", workdir / f"{label}.out.json"
    log_path = workdir / f"{label}.stdout"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    env = child_env(server.endpoint)
    if spec["kind"] in ("worker", "aggregate"):
        env.update(lambda_env("scan_target" if spec["kind"] == "worker" else "aggregate", spec))
    if spec["kind"] == "cli":
        env.pop("LAMBDA_TASK_ROOT", None)  # a person's shell, not Lambda
    server_before, started, load_before = server.cpu_seconds(), time.perf_counter(), os.getloadavg()[0]
    with open(log_path, "wb") as stdout:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.org_client", str(spec_path), str(out_path)],
            cwd=ROOT,
            env=env,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=1800,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"{label} failed:\n{done.stderr[-4000:]}")
    result = json.loads(out_path.read_text(encoding="utf-8"))
    result.update(
        label=label,
        latency_ms=latency_ms,
        server_cpu_s=server.cpu_seconds() - server_before,
        process_wall_s=time.perf_counter() - started,
        stdout_bytes=log_path.stat().st_size,
        load=(load_before, os.getloadavg()[0]),
    )
    return result


# ---- seeding ------------------------------------------------------------------------------------------------------
def _session(endpoint: str, loader: Any, region: str, credentials: dict | None = None) -> boto3.Session:
    """A session sharing one parsed copy of botocore's models (clients are built per thread, not shared)."""
    core = botocore.session.Session()
    core.register_component("data_loader", loader)
    keys = credentials or {"AccessKeyId": "bench", "SecretAccessKey": "bench", "SessionToken": None}
    return boto3.Session(
        aws_access_key_id=keys["AccessKeyId"],
        aws_secret_access_key=keys["SecretAccessKey"],
        aws_session_token=keys.get("SessionToken"),
        botocore_session=core,
        region_name=region,
    )


def seed_organization(
    endpoint: str, n_accounts: int, regions: tuple[str, ...], per_target: int, grow: dict | None = None
) -> dict:
    """The organization, and `per_target` opted-in instances (one of them drifted) in every (account, region).
    With `grow` (what an earlier call returned), the accounts it lacks are added to that organization and seeded."""
    started = time.perf_counter()
    loader = botocore.session.Session().get_component("data_loader")
    management = _session(endpoint, loader, "us-east-1")
    organizations = management.client("organizations", endpoint_url=endpoint)
    if grow is None:
        organizations.create_organization(FeatureSet="ALL")
    accounts = list(grow["accounts"]) if grow else [MANAGEMENT]
    seeded = len(accounts) if grow else 0
    for k in range(len(accounts) - 1, n_accounts - 1):
        status = organizations.create_account(AccountName=f"bench-{k:03d}", Email=f"bench-{k:03d}@example.com")
        accounts.append(status["CreateAccountStatus"]["AccountId"])
    sts = management.client("sts", endpoint_url=endpoint)
    credentials: dict[str, dict | None] = {MANAGEMENT: None}
    for account in accounts[max(1, seeded) :]:  # what the member role gives: moto maps these keys to `account`
        arn = f"arn:aws:iam::{account}:role/{ROLE}"
        credentials[account] = sts.assume_role(RoleArn=arn, RoleSessionName="bench-seed")["Credentials"]
    images = {}
    for region in regions:
        ec2 = management.client("ec2", region_name=region, endpoint_url=endpoint)
        ssm = management.client("ssm", region_name=region, endpoint_url=endpoint)
        images[region] = SimulatedAccount(ec2, ssm).al2023_ami()  # moto's public AMIs: same ids in every account
    ranges = ip_ranges.load(str(IP_RANGES))

    def seed_account(account: str) -> int:
        launched = 0
        session = _session(endpoint, loader, "us-east-1", credentials[account])
        for region in regions:
            ec2 = session.client("ec2", region_name=region, endpoint_url=endpoint, config=fleet.CLIENT_CONFIG)
            launched += _seed_target(ec2, images[region], [str(p) for p in ranges.for_region(region).ipv4], per_target)
        return launched

    with ThreadPoolExecutor(max_workers=4) as pool:
        instances = sum(pool.map(seed_account, accounts[seeded:]))
    return {
        "accounts": accounts,
        "regions": list(regions),
        "instances": instances + (grow["instances"] if grow else 0),
        "per_target": per_target,
        "seconds": time.perf_counter() - started + (grow["seconds"] if grow else 0),
    }


def _seed_target(ec2: Any, image_id: str, eic_cidrs: list[str], per_target: int) -> int:
    """The default VPC routed to an internet gateway, an SSH group for the EIC prefixes, per_target-1 compliant
    instances and one that lacks the SSH rule and has IMDS disabled (a fix for each of two checks)."""
    vpc_id = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnet_id = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"][0]["SubnetId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)
    tables = ec2.describe_route_tables(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "association.main", "Values": ["true"]}]
    )["RouteTables"]
    ec2.create_route(RouteTableId=tables[0]["RouteTableId"], DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    default_group = ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": ["default"]}]
    )["SecurityGroups"][0]["GroupId"]
    ssh_group = ec2.create_security_group(GroupName="bench-eic-ssh", Description="eic", VpcId=vpc_id)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=ssh_group, IpPermissions=[ssh_from(*eic_cidrs)])
    profiles = {p.name: p for p in fleet.PROFILES}
    launched = fleet._launch(ec2, profiles["compliant"], per_target - 1, image_id, subnet_id, [ssh_group], 1)
    launched += fleet._launch(ec2, profiles["missing-ssh+imds"], 1, image_id, subnet_id, [default_group], 2)
    return len(launched)


# ---- the runs -----------------------------------------------------------------------------------------------------
CLI_WORKERS = 8


def run_cli(server: LatencyServer, org: dict, workdir: Path, workers: int = CLI_WORKERS) -> dict:
    """`eic-guard scan --organization --max-workers N` over the whole organization as seeded so far, at 0 ms: the
    command's peak RSS (issue 20 item 6: ≤ 300 MiB at 1,000 targets with 8) and RSS as the targets are done."""
    targets = len(org["accounts"]) * len(org["regions"])
    label = f"cli-{targets}-w{workers}"
    spec = {
        "kind": "cli",
        "mode": "report",
        "regions": org["regions"],
        "workers": workers,
        "report_path": str(workdir / f"{label}.report.json"),
    }
    log(f"{label}: eic-guard scan --organization over {len(org['accounts'])} accounts x {len(org['regions'])} regions")
    result = measure(server, spec, workdir, label, latency_ms=0)
    log(
        f"  exit {result['exit_code']}, {result['targets']} targets {result['statuses']} in {result['wall_s']:.1f}s, "
        f"peak RSS {result['maxrss_kb'] / 1024:.0f} MiB (before the command {result['rss_before_kb'] / 1024:.0f} MiB)"
    )
    return result


def run_matrix(server: LatencyServer, org: dict, workdir: Path, subset_accounts: int) -> list:
    """Every (latency, workers); one worker covers a tenth of the accounts (1,000 targets x 1 worker x 100 ms
    alone would take about 15 minutes)."""
    regions = org["regions"]
    rows = []
    for latency in (0, 100):
        for workers in (1, 8, 32):
            spec: dict[str, Any] = {"kind": "fanout", "mode": "report", "regions": regions, "workers": workers}
            if workers == 1:
                spec["accounts"] = ",".join(org["accounts"][:subset_accounts])
            else:
                spec["accounts"] = "organization"
            label = f"fanout-{latency}ms-w{workers}"
            log(f"{label}: {spec['accounts'] if spec['accounts'] == 'organization' else 'subset'}")
            result = measure(server, spec, workdir, label, latency_ms=latency)
            log(
                f"  {result['targets']} targets in {result['wall_s']:.1f}s = "
                f"{result['targets'] / result['wall_s']:.1f} targets/s; statuses {result['statuses']}; "
                f"{sum(result['calls'].values()) / result['targets']:.2f} calls/target"
            )
            rows.append(result)
    return rows


def run_worker_nights(server: LatencyServer, org: dict, workdir: Path, accounts: int, pad_to: int) -> dict:
    """The deployed worker, one warm container, at 100 ms: the first remediate night, then a steady one."""
    spec = {
        "kind": "worker",
        "mode": "remediate",
        "tag_instances": True,  # the template's default
        "regions": org["regions"],
        "accounts": ",".join(org["accounts"][1 : 1 + accounts]),
        "manifest_targets": pad_to,
        "apply_ranges": True,
    }
    nights = {}
    for night in ("first", "steady"):
        label = f"worker-{night}-100ms"
        log(f"{label}: {accounts * len(org['regions'])} invocations")
        nights[night] = measure(server, {**spec, "run_id": f"bench-{night}"}, workdir, label, latency_ms=100)
        walls = [i["wall_s"] for i in nights[night]["invocations"]]
        log(f"  median {statistics.median(walls):.2f}s per invocation; import {nights[night]['import_s']:.2f}s")
    return nights


def run_warm_container(server: LatencyServer, org: dict, workdir: Path, accounts: int) -> dict:
    """Many invocations in one process at 0 ms: does a warm container's memory grow from target to target?"""
    spec = {
        "kind": "worker",
        "mode": "remediate",
        "tag_instances": True,
        "regions": org["regions"],
        "accounts": ",".join(org["accounts"][-accounts:]),
        "apply_ranges": True,
        "run_id": "bench-warm",
    }
    log(f"worker-warm-0ms: {accounts * len(org['regions'])} invocations in one process")
    result = measure(server, spec, workdir, "worker-warm-0ms", latency_ms=0)
    rss = [i["rss_after_kb"] for i in result["invocations"]]
    log(f"  RSS after invocation 1: {rss[0] / 1024:.0f} MiB, after {len(rss)}: {rss[-1] / 1024:.0f} MiB")
    return result


def run_aggregate(server: LatencyServer, org: dict, workdir: Path, accounts: int, latency: float, label: str) -> dict:
    spec = {
        "kind": "aggregate",
        "mode": "remediate",
        "regions": org["regions"],
        "accounts": ",".join(org["accounts"][:accounts]),
        "sample_run_id": "bench-steady",
        "run_id": f"bench-{label}",
        "latency_ms": latency,
    }
    log(f"{label}: aggregate over {accounts * len(org['regions'])} result objects at {latency:g} ms")
    result = measure(server, spec, workdir, label)
    log(f"  {result['wall_s']:.1f}s, CPU {result['cpu_s']:.1f}s, peak RSS {result['maxrss_kb'] / 1024:.0f} MiB")
    return result


def run_big_target(workdir: Path, n: int) -> dict:
    """One (account, region) of n opted-in instances: the worker's cold import and peak RSS, report and remediate."""
    ranges = ip_ranges.load(str(IP_RANGES))
    out: dict[str, Any] = {"n": n}
    with LatencyServer() as server:
        started = time.perf_counter()
        seeded = fleet.seed(server.endpoint, n, ranges, regions=("us-east-1",))
        out["seeded"] = len(seeded.instances)
        out["seed_s"] = time.perf_counter() - started
        log(f"big target: {len(seeded.instances)} instances seeded in {out['seed_s']:.0f}s")
        for mode in ("report", "remediate"):
            spec = {
                "kind": "worker",
                "mode": mode,
                "tag_instances": True,
                "regions": ["us-east-1"],
                "accounts": "",
                "manifest_targets": 8500,
                "apply_ranges": mode == "remediate",
                "run_id": f"bench-big-{mode}",
            }
            result = measure(server, spec, workdir, f"big-{mode}", latency_ms=0)
            one = result["invocations"][0]
            log(
                f"  {mode}: import {result['import_s'] * 1000:.0f} ms, invocation {one['wall_s']:.1f}s, "
                f"peak RSS {result['maxrss_kb'] / 1024:.0f} MiB, status {one['status']}, {one['instances']} instances"
            )
            out[mode] = result
        # Aggregate over 5 copies of that result: 25,000 instances at 5,000 (500 x 17 targets of 3 are 25,500).
        spec = {
            "kind": "aggregate",
            "mode": "remediate",
            "regions": list(REGIONS),
            "accounts": "",
            "sample_run_id": "bench-big-remediate",
            "run_id": "bench-big-aggregate",
            "latency_ms": 0,
        }
        out["aggregate"] = result = measure(server, spec, workdir, "big-aggregate")
        log(
            f"  aggregate of {result['instances']} instances: {result['wall_s']:.1f}s, CPU {result['cpu_s']:.1f}s, "
            f"peak RSS {result['maxrss_kb'] / 1024:.0f} MiB"
        )
    return out


def deployed_import(workdir: Path) -> dict:
    """`import app` of ScanTargetFunction as deployed (sam build; benchmarks/coldstart.py's method), if possible."""
    python = coldstart.python313()
    if python is None or coldstart.sam_binary() is None:
        return {"error": "python3.13 or the sam CLI not found"}
    coldstart.BUILD_DIR = Path(tempfile.gettempdir()) / "eic-bench-build-org"  # not make bench's build
    coldstart.FUNCTIONS = ("ScanTargetFunction",)
    try:
        error = coldstart.build(python, log)
        if error:
            return {"error": error}
        overlay, _ = coldstart.native_overlay(python, coldstart.BUILD_DIR / coldstart.LAYER / "python", log)
        sdk, _ = coldstart.runtime_sdk(python, log)
        imports = coldstart._handler_imports(python, overlay, sdk, log)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return {"error": str(exc)}
    return {
        "python": python,
        "imports": imports,
        "size": coldstart.tree_size(coldstart.BUILD_DIR / "ScanTargetFunction"),
    }


# ---- the estimate -------------------------------------------------------------------------------------------------
def template_memory(function: str, template: Path = ROOT / "template.yaml") -> int:
    """A function's MemorySize in template.yaml (its own, else the Globals one, else Lambda's 128)."""
    lines = template.read_text(encoding="utf-8").splitlines()
    memory = {"Globals": None, function: None}
    top = section = None
    for line in lines:
        heading = re.match(r"^(  )?([A-Za-z0-9]+):\s*$", line)
        if heading and not heading.group(1):
            top = section = heading.group(2)
        elif heading:
            section = "Globals" if top == "Globals" else heading.group(2)
        found = re.match(r"^\s+MemorySize:\s*(\d+)", line)
        if found and section in memory and memory[section] is None:
            memory[section] = int(found.group(1))
    return memory[function] or memory["Globals"] or 128


def estimate(results: dict, accounts: int = 500, regions: int = 17, concurrency: int = 40) -> dict:
    """Wall time and cost of one nightly run of `accounts` x `regions` targets at MaxConcurrency `concurrency`."""
    n = accounts * regions
    worker_mb, aggregate_mb = template_memory("ScanTargetFunction"), template_memory("AggregateFunction")
    worker_vcpu, aggregate_vcpu = worker_mb / FULL_VCPU_MB, aggregate_mb / FULL_VCPU_MB
    steady = results["worker"]["steady"]["invocations"]
    first = results["worker"]["first"]["invocations"]
    per_call = 0.1
    calls = statistics.median(sum(i["http_requests"].values()) for i in steady)
    wall = statistics.median(i["wall_s"] for i in steady)
    cpu = statistics.median(i["cpu_s"] for i in steady)
    # In Lambda at 512 MB the CPU part runs on ~0.29 vCPU: stretch it, keep the waiting as measured.
    duration = (wall - cpu) + cpu / worker_vcpu
    first_duration = statistics.median((i["wall_s"] - i["cpu_s"]) + i["cpu_s"] / worker_vcpu for i in first)
    import_s = results["big"]["report"]["import_s"]
    cold_init = import_s / worker_vcpu
    item_overhead = 0.15  # Distributed Map child start + Lambda invoke + the Choice/Succeed states, per item
    # Step Functions Standard: counted from the definition as deployed (benchmarks.sfn_cost: the ItemBatcher's batches,
    # each child execution's start and states per round). A child execution runs its batch's targets one after the
    # other in one invocation: MaxConcurrency batches at a time.
    sfn = sfn_cost.estimate(sfn_cost.load(sfn_cost.definition_at(None)), "now", n)
    children, batch = sfn.child_executions, sfn.items_per_child
    waves = math.ceil(children / concurrency)
    map_wall = waves * (batch * duration + item_overhead) + cold_init
    map_wall_by_latency = {
        ms: waves * (batch * (duration + calls * (ms / 1000 - per_call)) + item_overhead) + cold_init
        for ms in (50, 200)
    }
    # Aggregate: one LIST per 1,000 keys, then one GET per result object, `readers` at a time (fanout/steps.py),
    # streaming the report (outputs/stream.py): CPU in proportion to the instances, memory flat (benchmarks.org_scale
    # measured both at 10,000 to 1,000,000 instances; the older in-process runs below only if it has not run).
    from eic_guard.fanout import steps

    readers = getattr(steps, "RESULT_READERS", 1)
    instances = n * results["org"]["per_target"]
    scale = org_scale.rows()
    largest = max(scale, key=lambda r: r["instances"]) if scale else None
    if largest:
        agg_cpu_per_instance = largest["cpu_s"] / largest["instances"]
    else:
        agg_cpu_per_instance = results["big"]["aggregate"]["cpu_s"] / results["big"]["aggregate"]["instances"]
    aggregate_wall = {
        ms: (math.ceil(n / 1000) + math.ceil(n / readers) + 4) * ms / 1000
        + instances * agg_cpu_per_instance / aggregate_vcpu
        for ms in (20, 30, 100)
    }
    plan_wall = (math.ceil(accounts / 20) + 4) * per_call + 1.0  # ListAccounts pages (20 per page), STS, 2 PUTs
    total_wall = plan_wall + map_wall + aggregate_wall[30]
    # Lambda
    worker_gb_s = (n * duration + concurrency * cold_init) * worker_mb / 1024
    other_gb_s = plan_wall * template_memory("PlanFunction") / 1024 + aggregate_wall[30] * aggregate_mb / 1024
    requests = children + 2
    transitions = sfn.one_round
    # S3: Plan PUTs manifest + targets; each batch GETs the manifest, each target PUTs its result; the map's
    # ItemReader GETs the targets and its ResultWriter PUTs a manifest and a results file (the child executions'
    # outputs, kept out of the state's 256 KiB payload); Aggregate LISTs and GETs every result and PUTs the report.
    s3_put = 2 + n + 2 + math.ceil(n / 1000) + 3
    s3_get = children + 1 + n
    manifest_bytes = results["big"]["report"]["manifest_bytes"]
    log_bytes = results["worker"]["steady"]["stdout_bytes"] / max(1, len(steady))
    cost = {
        "lambda_compute": (worker_gb_s + other_gb_s) * PRICE_GB_S_ARM,
        "lambda_requests": requests * PRICE_REQUEST,
        "step_functions": transitions * PRICE_TRANSITION,
        "s3_requests": s3_put * PRICE_S3_PUT + s3_get * PRICE_S3_GET,
        "logs": n * (log_bytes + 400) / 1e9 * PRICE_LOG_GB,  # + the runtime's START/END/REPORT lines
    }
    cost["total"] = sum(cost.values())
    # TargetInstancesNoncompliant + TargetErrors per AccountId: only with PerAccountMetrics=true (default false)
    metrics_month = 2 * accounts * PRICE_METRIC_MONTH
    aggregate_rss = largest["peak_rss_mib"] if largest else None
    # A warm worker container's growth per invocation (the warm run at 0 ms): invocations before 512 MB.
    warm = [i["rss_after_kb"] / 1024 for i in results["warm"]["invocations"]]
    growth = (warm[-1] - warm[0]) / max(1, len(warm) - 1)
    peak_first = max(i["peak_rss_kb"] for i in results["warm"]["invocations"][:1]) / 1024
    invocations_to_512 = (worker_mb - peak_first) / growth + 1 if growth > 0.5 else None
    return {
        "targets": n,
        "concurrency": concurrency,
        "per_call_s": per_call,
        "calls_per_target": calls,
        "calls_first_night": statistics.median(sum(i["http_requests"].values()) for i in first),
        "worker_wall_s": wall,
        "worker_cpu_s": cpu,
        "worker_duration_s": duration,
        "worker_first_night_s": first_duration,
        "cold_init_s": cold_init,
        "item_overhead_s": item_overhead,
        "waves": waves,
        "map_wall_s": map_wall,
        "map_wall_by_latency": map_wall_by_latency,
        "plan_wall_s": plan_wall,
        "aggregate_wall_s": aggregate_wall,
        "aggregate_readers": readers,
        "aggregate_cpu_per_instance_s": agg_cpu_per_instance,
        "instances": instances,
        "total_wall_s": total_wall,
        "worker_gb_s": worker_gb_s,
        "other_gb_s": other_gb_s,
        "requests": requests,
        "transitions": transitions,
        "s3_put": s3_put,
        "s3_get": s3_get,
        "manifest_bytes": manifest_bytes,
        "log_bytes_per_invocation": log_bytes,
        "cost": cost,
        "metrics_month": metrics_month,
        "aggregate_rss_mib": aggregate_rss,
        "aggregate_measured": largest["instances"] if largest else None,
        "batches": children,
        "items_per_child": sfn.items_per_child,
        "transitions_second_round": sfn.with_second_round,
        "worker_mb": worker_mb,
        "aggregate_mb": aggregate_mb,
        "warm_growth_mib": growth,
        "invocations_per_container": children / concurrency,
        "invocations_to_512": invocations_to_512,
    }


# ---- the report ---------------------------------------------------------------------------------------------------
def _calls_per_target(row: dict) -> float:
    return sum(row["calls"].values()) / row["targets"]


def _ops(calls: dict[str, int], per: int) -> str:
    def rate(n: int) -> str:
        return f"{n / per:.2f}" if n / per >= 0.1 else f"{n / per:.3f}"

    return ", ".join(f"{op.split(':', 1)[1]} {rate(n)}" for op, n in sorted(calls.items(), key=lambda kv: -kv[1]))


def render(results: dict) -> str:
    org, est = results["org"], results["estimate"]
    lines = [
        "# eic-guard organization benchmark",
        "",
        f"Produced by `python -m benchmarks.org{' --quick' if results['quick'] else ''}` (what `make bench-org` "
        f"runs) on {results['date']}, {results['machine']}; total run time {results['total_s'] / 60:.1f} min.",
        "",
        f"Organization on one moto server (127.0.0.1, its own process, quadratic lookups patched; "
        f"`benchmarks/latency.py` sleeps the injected latency before answering each request): {len(org['accounts'])} "
        f"accounts (the management account and {len(org['accounts']) - 1} members made with Organizations "
        f"CreateAccount) x {len(org['regions'])} regions ({', '.join(org['regions'])}) = "
        f"{len(org['accounts']) * len(org['regions'])} targets, each with {org['per_target']} opted-in instances "
        f"({org['per_target'] - 1} compliant, 1 missing the SSH rule with IMDS disabled), populated through the "
        f"member role (moto maps assumed-role credentials to the role's account); {org['instances']} instances "
        f"seeded in {org['seconds']:.0f}s. Every client figure comes from a fresh client process "
        "(`benchmarks/org_client.py`); API calls are counted there on every botocore client (the assumed-role "
        "sessions included).",
        "",
        "## Local fan-out: targets per second by workers and latency",
        "",
        "`run_job('scan', ...)` in report mode with `ranges=` (what `eic-guard scan --organization --max-workers N "
        "--ip-ranges FILE` runs): plan (GetCallerIdentity, Organizations ListAccounts) → one worker per target in "
        "the bounded thread pool (AssumeRole once per member account, then the target's describes) → the report.",
        "",
        "| latency | max_workers | targets | wall s | targets/s | calls/target | client CPU s | moto CPU s | "
        "peak RSS MiB | target statuses | load avg |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in results["matrix"]:
        lines.append(
            f"| {row['latency_ms']:g} ms | {row['workers']} | {row['targets']}"
            f"{' (subset)' if row['targets'] < len(org['accounts']) * len(org['regions']) else ''} | "
            f"{row['wall_s']:.1f} | {row['targets'] / row['wall_s']:.1f} | {_calls_per_target(row):.2f} | "
            f"{row['cpu_s']:.1f} | {row['server_cpu_s']:.1f} | {row['maxrss_kb'] / 1024:.0f} | "
            f"{', '.join(f'{k} {v}' for k, v in sorted(row['statuses'].items()))} | "
            f"{row['load'][0]:.1f} → {row['load'][1]:.1f} |"
        )
    full = next(r for r in results["matrix"] if r["workers"] == 32 and r["latency_ms"] == 100)
    small = results["matrix"][0]
    per_target_mib = (full["maxrss_kb"] - small["maxrss_kb"]) / 1024 / max(1, full["targets"] - small["targets"])
    ideal = {
        row["workers"]: row["targets"] * _calls_per_target(row) * 0.1 / row["workers"]
        for row in results["matrix"]
        if row["latency_ms"] == 100
    }
    lines += [
        "",
        f"Calls per target (1,000-target run, 32 workers, 100 ms): {_ops(full['calls'], full['targets'])}.",
        "",
        "At 100 ms the pure-latency floor (calls x 100 ms / workers) is "
        + ", ".join(f"{ideal[w]:.0f}s for {w} worker(s)" for w in sorted(ideal))
        + " for the targets each run covered; the rest is client and server CPU on this 2-core machine (the moto "
        "server and the client share it, and other work ran meanwhile: see the load average).",
        "",
        f"The fan-out's peak RSS: {full['maxrss_kb'] / 1024:,.0f} MiB for {full['targets']:,} targets "
        f"({per_target_mib:.2f} MiB per target between the {small['targets']}- and the {full['targets']:,}-target "
        "runs).",
        "",
    ]
    lines += _cli_section(results)
    lines += _worker_section(results)
    lines += _big_section(results)
    lines += _estimate_section(est)
    lines += [*org_scale.section().splitlines(), ""]  # the streamed Aggregate at 10,000 to 1,000,000 instances
    if ISSUE20.exists():  # the dated before/after table of issue 20, kept as written
        lines += [*ISSUE20.read_text(encoding="utf-8").splitlines(), ""]
    lines += [
        "## How measured",
        "",
        "- `make bench-org` (or `.venv/bin/python -m benchmarks.org [--quick]`); raw figures in "
        "`benchmarks/org_results.json`.",
        "- Latency: a WSGI middleware in the moto server process sleeps before handing each request to moto, in "
        "that request's own thread (werkzeug's threaded server), so concurrent requests wait concurrently, as "
        "against AWS. The server also counts HTTP requests by service and operation (retries included).",
        "- Client CPU is the client process's user+sys (getrusage), so the server's work is never counted; peak RSS "
        "is the client's VmHWM, reset (clear_refs) before each Lambda invocation so that each figure is that "
        "invocation's own.",
        "- Deployed worker and aggregate: the real handlers of `functions/scan_target` and `functions/aggregate` "
        "with a stand-in Lambda context (900 s / 300 s), the environment the template sets (Mode remediate, "
        "TagInstances true, RemediatePublicIp false), tracing disabled (no X-Ray daemon here), the run's manifest "
        "and result objects in moto's S3. The manifest is padded to 8,500 targets, its size at 500 x 17.",
        "",
    ]
    return "\n".join(lines)


def _shown(argv: list[str]) -> list[str]:
    """The command as the report shows it: paths in the repository relative, the temporary report file named so."""
    shown = []
    for arg in argv:
        if arg.endswith(".report.json"):
            arg = "REPORT.json"
        elif arg.startswith(str(ROOT)):
            arg = os.path.relpath(arg, ROOT)
        shown.append(arg)
    return ["N" if before == "--max-workers" else arg for before, arg in zip(["", *shown], shown, strict=False)]


def _cli_section(results: dict) -> list[str]:
    """The command's own memory (`--cli-rss`), when measured."""
    rows = results.get("cli")
    if not rows:
        return []
    eight = [row for row in rows if row["workers"] == CLI_WORKERS]
    small, full = eight[0], eight[-1]
    per_target = (full["maxrss_kb"] - small["maxrss_kb"]) / max(1, full["targets"] - small["targets"])
    lines = [
        "## The command line's memory: `eic-guard scan --organization`",
        "",
        f"`{' '.join(['eic-guard', *_shown(full['argv'])])}` in a fresh process (`benchmarks/org_client.py` kind "
        "`cli`; `python -m benchmarks.org --cli-rss` alone takes a few minutes) over the organization seeded to "
        f"{small['accounts']}, then {full['accounts']} accounts x 5 regions, at 0 ms"
        f"{' on ' + results['cli_date'] if results.get('cli_date') else ''}. RSS is sampled every 0.2 s.",
        "",
        "| targets | accounts | --max-workers | exit | statuses | wall s | CPU s | RSS before the command MiB | RSS at "
        "25/50/75 % of the run MiB | peak RSS MiB |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---|---:|",
    ]
    for row in rows:
        samples = [kb for _, kb in row["rss_samples"]] or [row["maxrss_kb"]]
        quarters = "/".join(f"{samples[len(samples) * q // 4] / 1024:.0f}" for q in (1, 2, 3))
        lines.append(
            f"| {row['targets']:,} | {row['accounts']} | {row['workers']} | {row['exit_code']} | "
            f"{', '.join(f'{k} {v}' for k, v in sorted(row['statuses'].items()))} | {row['wall_s']:.1f} | "
            f"{row['cpu_s']:.1f} | {row['rss_before_kb'] / 1024:.0f} | {quarters} | {row['maxrss_kb'] / 1024:.0f} |"
        )
    lines += [
        "",
        f"With {CLI_WORKERS} workers, peak RSS grows {per_target:,.0f} KiB per target between the "
        f"{small['targets']:,}- and the {full['targets']:,}-target runs (target: ≤ 300 MiB at 1,000 targets).",
        "",
    ]
    return lines


def _worker_section(results: dict) -> list[str]:
    nights = results["worker"]
    lines = [
        "## Deployed target worker (one warm container, 100 ms per call)",
        "",
        "`functions/scan_target/app.py`'s handler invoked once per target in one process, as one warm Lambda "
        "container runs map items (the first invocation includes the cold import). Remediate mode, status tags on, "
        "the nightly catch-up applying the prefixes to the managed groups.",
        "",
        "| night | invocations | median wall s | min-max wall s | median CPU s | HTTP requests per invocation | "
        "peak RSS MiB (max) |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for night, result in nights.items():
        inv = result["invocations"]
        requests = Counter()
        for i in inv:
            requests.update(i["http_requests"])
        lines.append(
            f"| {night} | {len(inv)} | {statistics.median(i['wall_s'] for i in inv):.2f} | "
            f"{min(i['wall_s'] for i in inv):.2f}-{max(i['wall_s'] for i in inv):.2f} | "
            f"{statistics.median(i['cpu_s'] for i in inv):.2f} | {sum(requests.values()) / len(inv):.1f}: "
            f"{_ops(requests, len(inv))} | {max(i['peak_rss_kb'] for i in inv) / 1024:.0f} |"
        )
    warm = results["warm"]
    rss = [i["rss_after_kb"] / 1024 for i in warm["invocations"]]
    marks = sorted({0, 9, len(rss) // 2, len(rss) - 1})
    agg0, agg100 = results["aggregate"]["at_0ms"], results["aggregate"]["at_100ms"]
    lines += [
        "",
        f"Warm container at 0 ms, {len(rss)} invocations in one process: RSS after invocation "
        + ", ".join(f"{k + 1}: {rss[k]:.0f} MiB" for k in marks)
        + f" (growth {(rss[-1] - rss[0]) / max(1, len(rss) - 1) * 1024:.0f} KiB per invocation; median wall "
        f"{statistics.median(i['wall_s'] for i in warm['invocations']) * 1000:.0f} ms, median CPU "
        f"{statistics.median(i['cpu_s'] for i in warm['invocations']) * 1000:.0f} ms per invocation).",
        "",
        "Aggregate handler (`functions/aggregate/app.py`) over copies of the steady night's result objects:",
        "",
        "| latency | targets | instances | wall s | CPU s | HTTP requests | peak RSS MiB |",
        "|---:|---:|---:|---:|---:|---|---:|",
    ]
    for agg in (agg0, agg100):
        lines.append(
            f"| {agg['latency_ms_spec']:g} ms | {agg['targets']} | {agg['instances']} | {agg['wall_s']:.1f} | "
            f"{agg['cpu_s']:.1f} | {sum(agg['http_requests'].values())}: {_ops(agg['http_requests'], 1)} | "
            f"{agg['maxrss_kb'] / 1024:.0f} |"
        )
    lines.append("")
    return lines


def _big_section(results: dict) -> list[str]:
    big = results["big"]
    lines = [
        f"## One target of {big['n']:,} instances (the worker's import and memory)",
        "",
        f"`benchmarks/fleet.py`'s drift mix, {big['seeded']:,} instances ({big['n']:,} opted in + 10% untagged) in "
        "one (account, region), 0 ms latency; the handler imported cold in a fresh process (Python "
        f"{platform.python_version()}, the layer's source and this venv), then invoked once.",
        "",
        "| mode | cold import ms | invocation wall s | CPU s | instances | status | HTTP requests | peak RSS MiB | "
        "fits 512 MB |",
        "|---|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for mode in ("report", "remediate"):
        result = big[mode]
        one = result["invocations"][0]
        peak = max(result["maxrss_kb"], one["peak_rss_kb"]) / 1024
        lines.append(
            f"| {mode} | {result['import_s'] * 1000:.0f} | {one['wall_s']:.1f} | {one['cpu_s']:.1f} | "
            f"{one['instances']} | {one['status']} | {sum(one['http_requests'].values())} | {peak:.0f} | "
            f"{'yes' if peak < 512 else 'NO'} ({512 - peak:.0f} MiB spare) |"
        )
    agg = big["aggregate"]
    lines += [
        "",
        f"Aggregate over {agg['targets']} copies of the remediate invocation's result object ({agg['instances']:,} "
        f"instances; 500 x 17 targets of 3 are 25,500): {agg['wall_s']:.1f}s wall, {agg['cpu_s']:.1f}s CPU, "
        f"peak RSS **{agg['maxrss_kb'] / 1024:.0f} MiB** (AggregateFunction: {template_memory('AggregateFunction')} "
        f"MB in template.yaml; {'fits' if agg['maxrss_kb'] / 1024 < 512 else 'would not fit'} 512 MB).",
    ]
    deployed = results.get("deployed_import") or {}
    if "imports" in deployed:
        imp = deployed["imports"]["ScanTargetFunction"]
        parts = [
            f"{variant.replace('_', ' ')} {imp[variant]['median_ms']:.0f} ms"
            for variant in ("as_deployed", "precompiled")
            if "median_ms" in imp.get(variant, {})
        ]
        heavy = imp.get("as_deployed", {}).get("heaviest", [])
        lines += [
            "",
            f"As deployed (`sam build`, python3.13, `benchmarks/coldstart.py`'s method: the zip round trip, the "
            f"runtime's SDK precompiled, median of {coldstart.IMPORT_RUNS} fresh processes): `import app` of "
            f"ScanTargetFunction {', '.join(parts)}; heaviest: "
            + ", ".join(f"{name} {ms:.0f} ms" for name, ms in heavy[:5])
            + ".",
        ]
    else:
        lines += ["", f"As deployed: not measured ({deployed.get('error', 'skipped')})."]
    lines.append("")
    return lines


def _estimate_section(est: dict) -> list[str]:
    cost = est["cost"]
    agg = est["aggregate_wall_s"]
    return [
        f"## Estimate: 500 accounts x 17 regions = {est['targets']:,} targets at MaxConcurrency {est['concurrency']}",
        "",
        f"- Per target (steady night, measured above): {est['calls_per_target']:.0f} requests "
        f"({est['calls_first_night']:.0f} on a night with fixes), {est['worker_wall_s']:.2f}s wall of which "
        f"{est['worker_cpu_s']:.2f}s CPU here; in Lambda at {est['worker_mb']} MB "
        f"(~{est['worker_mb'] / FULL_VCPU_MB:.2f} vCPU) the CPU part "
        f"stretches: **{est['worker_duration_s']:.2f}s** per invocation ({est['worker_first_night_s']:.2f}s with "
        "fixes). Assumes AWS answers each call in 100 ms on average, as the benchmark models.",
        f"- Map: {est['batches']:,} batches of {est['items_per_child']} / {est['concurrency']} = {est['waves']} "
        f"waves x ({est['items_per_child']} x {est['worker_duration_s']:.2f}s"
        f" + {est['item_overhead_s']:.2f}s child start, invoke and states per batch) + one cold start "
        f"({est['cold_init_s']:.1f}s) = **{est['map_wall_s'] / 60:.1f} min**; "
        + ", ".join(f"{est['map_wall_by_latency'][ms] / 60:.1f} min if AWS answers in {ms} ms" for ms in (50, 200))
        + ".",
        f"- Plan ~{est['plan_wall_s']:.0f}s; Aggregate: {est['targets']:,} GETs, {est['aggregate_readers']} at a "
        f"time, then the report over {est['instances']:,} instances "
        f"({est['aggregate_cpu_per_instance_s'] * 1000:.2f} ms CPU each here, stretched to its "
        f"{est['aggregate_mb']} MB): "
        f"{agg[20]:.0f}s at 20 ms per GET, {agg[30]:.0f}s at 30 ms, {agg[100]:.0f}s at 100 ms (its Timeout is 900 s).",
        (
            f"- Aggregate streams the report (docs/architecture.md §15): peak RSS {est['aggregate_rss_mib']:.0f} MiB "
            f"at {est['aggregate_measured']:,} instances (benchmarks.org_scale, below), whatever the fleet; its "
            f"{est['aggregate_mb']} MB leave room to spare."
            if est["aggregate_rss_mib"]
            else "- Aggregate streams the report: run `python -m benchmarks.org_scale` for its memory."
        ),
        f"- **Wall time per nightly run: ~{est['total_wall_s'] / 60:.1f} min** (30 ms S3 GETs).",
        (
            f"- Warm worker containers: each runs ~{est['invocations_per_container']:.0f} map items in turn; memory "
            f"grows {est['warm_growth_mib']:.0f} MiB per invocation (measured above), so a container reaches "
            f"{est['worker_mb']} MB "
            f"after ~{est['invocations_to_512']:.0f} invocations and is killed: as measured, that target becomes a "
            "failed map item (a target error), and the next container starts cold."
            if est["invocations_to_512"]
            else "- Warm worker containers: no memory growth from invocation to invocation."
        ),
        f"- Lambda: {est['worker_gb_s']:,.0f} GB-s for the workers + {est['other_gb_s']:,.0f} GB-s Plan and "
        f"Aggregate = ${cost['lambda_compute']:.3f}; {est['requests']:,} requests = ${cost['lambda_requests']:.4f}.",
        f"- Step Functions Standard: {est['transitions']:,} transitions ({est['batches']:,} child executions of "
        f"{est['items_per_child']} targets (ItemBatcher), each its start + ApplyBatch, ApplyRoundCheck, ApplyDone; "
        f"counted from the definition by benchmarks.sfn_cost; {est['transitions_second_round']:,} when 10% of the "
        f"targets need a second round) = ${cost['step_functions']:.3f}.",
        f"- S3: {est['s3_put']:,} PUT/LIST + {est['s3_get']:,} GET = ${cost['s3_requests']:.3f} (each batch GETs "
        f"the whole {est['manifest_bytes'] / 1024:.0f} KiB manifest once).",
        f"- CloudWatch Logs: ~{est['log_bytes_per_invocation'] / 1024:.1f} KiB per invocation = ${cost['logs']:.3f}.",
        f"- **Per nightly run: ${cost['total']:.2f}; per month (30 runs): ${cost['total'] * 30:.2f}**, of which "
        f"Step Functions ${cost['step_functions'] * 30:.2f}.",
        "- Not per run but per month: the custom metrics do not grow with the organization by default; with "
        "PerAccountMetrics=true, TargetInstancesNoncompliant and TargetErrors per AccountId are 2 custom metrics = "
        f"${2 * PRICE_METRIC_MONTH:.2f}/month for each account that had a non-compliant instance or a target error "
        f"that month: up to ${est['metrics_month']:.0f}/month if all 500 do.",
        "",
    ]


# ---- main ---------------------------------------------------------------------------------------------------------
def cli_rows(server: LatencyServer, workdir: Path, sizes: tuple[int, ...]) -> tuple[dict, list[dict]]:
    """The organization grown to each size in turn (accounts), the command run over all of it at each with 8
    workers, and at the first size with 1 too (one target after the other: the other way the run keeps memory)."""
    org: dict | None = None
    rows = []
    for n_accounts in sizes:
        log(f"moto at {server.endpoint}; seeding up to {n_accounts} accounts x {len(REGIONS)} regions")
        org = seed_organization(server.endpoint, n_accounts, REGIONS, per_target=3, grow=org)
        log(f"seeded {org['instances']} instances in {org['seconds']:.0f}s; server RSS {server.rss_mib():.0f} MiB")
        if not rows:
            rows.append(run_cli(server, org, workdir, workers=1))
        rows.append(run_cli(server, org, workdir))
    return org, rows


def _save_cli_rows(results: dict, started: float) -> int:
    """--cli-rss: its rows into org_results.json, the other figures kept (`--render` then puts them in
    ORG_RESULTS.md)."""
    saved = json.loads(RAW.read_text(encoding="utf-8")) if RAW.exists() else {}
    saved["cli"] = results["cli"]
    saved["cli_date"] = results["date"]
    RAW.write_text(json.dumps(saved, indent=1, default=str), encoding="utf-8")
    log(f"CLI rows written to {RAW.relative_to(ROOT)} in {(time.perf_counter() - started) / 60:.1f} min")
    for row in results["cli"]:
        log(f"  {row['targets']} targets: peak RSS {row['maxrss_kb'] / 1024:.0f} MiB, wall {row['wall_s']:.1f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 accounts, small runs (a smoke test)")
    parser.add_argument("--accounts", type=int, default=None)
    parser.add_argument("--big", type=int, default=None, help="instances in the one big target (default 5000)")
    parser.add_argument(
        "--render", action="store_true", help="only redo the estimate and ORG_RESULTS.md from org_results.json"
    )
    parser.add_argument(
        "--cli-rss",
        action="store_true",
        help="only the command's peak RSS: `eic-guard scan --organization` at 0 ms over a tenth of the accounts "
        "(1 and 8 workers), then all of them (8 workers): 100 and 1,000 targets by default, a few minutes; writes its "
        "rows into org_results.json (then --render)",
    )
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads(RAW.read_text(encoding="utf-8"))
        results["estimate"] = estimate(results)
        RAW.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
        RESULTS.write_text(render(results), encoding="utf-8")
        log(f"re-rendered {RESULTS.relative_to(ROOT)} from {RAW.relative_to(ROOT)}")
        return 0
    n_accounts = args.accounts or (20 if args.quick else 200)
    big_n = args.big or (1000 if args.quick else 5000)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "quick": args.quick,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": coldstart.machine(),
    }
    with tempfile.TemporaryDirectory(prefix="eic-bench-org-") as tmp:
        workdir = Path(tmp)
        with LatencyServer() as server:
            subset = max(1, n_accounts // 10)
            results["org"], results["cli"] = cli_rows(server, workdir, (subset, n_accounts))
            if args.cli_rss:
                return _save_cli_rows(results, started)
            results["matrix"] = run_matrix(server, results["org"], workdir, subset)
            results["worker"] = run_worker_nights(server, results["org"], workdir, accounts=2, pad_to=8500)
            results["warm"] = run_warm_container(server, results["org"], workdir, accounts=min(8, n_accounts - 4))
            aggregate = {}
            for label, accounts, latency in (("at_0ms", n_accounts, 0), ("at_100ms", subset, 100)):
                aggregate[label] = run_aggregate(server, results["org"], workdir, accounts, latency, label)
                aggregate[label]["latency_ms_spec"] = latency
            results["aggregate"] = aggregate
            results["server_rss_mib"] = server.rss_mib()
        results["big"] = run_big_target(workdir, big_n)
    results["deployed_import"] = deployed_import(Path(tempfile.gettempdir()))
    results["estimate"] = estimate(results)
    results["total_s"] = time.perf_counter() - started
    RAW.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    RESULTS.write_text(render(results), encoding="utf-8")
    log(f"wrote {RESULTS.relative_to(ROOT)} and {RAW.relative_to(ROOT)} in {results['total_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
