"""Render the benchmark results as RESULTS.md: targets first, then one section per N, then cold start and size."""

from __future__ import annotations

import statistics
from collections import Counter

READ_PREFIXES = ("Describe", "Get", "List")
PHASES = (
    ("floor", "floor"),
    ("report", "eic-guard report"),
    ("remediate", "eic-guard remediate"),
    ("second", "eic-guard 2nd remediate"),
    ("refresh", "refresh (new prefix)"),
    ("refresh_replay", "refresh replay"),
)
# Issue 20 item 7: the whole process (imports included) at most the floor's CPU and RSS; import app <= 150 ms; layer
# <= 8 MB unzipped.
CPU_TARGET, RSS_TARGET, IMPORT_TARGET_MS, LAYER_TARGET_MB = 1.0, 1.0, 150, 8
TARGET_N = 5000
MiB = 1024 * 1024


def med(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def _is_write(op: str) -> bool:
    return not op.startswith(READ_PREFIXES)


def _region_calls(result: dict, region: str) -> Counter:
    return Counter(result["calls"].get(region, {}))


def _writes(result: dict) -> dict[str, Counter]:
    return {r: Counter({op: n for op, n in ops.items() if _is_write(op)}) for r, ops in result["calls"].items()}


def _total_writes(result: dict) -> int:
    return sum(sum(c.values()) for c in _writes(result).values())


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def _calls_table(size: dict) -> list[str]:
    regions = size["regions"]
    phases = [(k, label) for k, label in PHASES if size["phases"].get(k)]
    ops = sorted(
        {op for k, _ in phases for r in size["phases"][k] for ops in r["calls"].values() for op in ops},
        key=lambda op: (_is_write(op), op != "DescribeInstances", op),
    )
    lines = [
        f"API calls per region ({' / '.join(regions)}; first run of each kind; `global` = STS):",
        "",
        "| operation | " + " | ".join(label for _, label in phases) + " | expected writes |",
        "|---|" + "---:|" * (len(phases) + 1),
    ]
    for op in ops:
        cells = []
        for k, _ in phases:
            first = size["phases"][k][0]
            per_region = [str(first["calls"].get(r, {}).get(op, 0)) for r in regions]
            glob = first["calls"].get("global", {}).get(op, 0)
            cells.append(f"{glob} (global)" if glob and not any(int(c) for c in per_region) else " / ".join(per_region))
        expected = (
            " / ".join(str(size["expected_writes"].get(r, {}).get(op, 0)) for r in regions) if _is_write(op) else ""
        )
        lines.append(f"| {'**' + op + '**' if _is_write(op) else op} | " + " | ".join(cells) + f" | {expected} |")
    return lines


def _figures_table(size: dict) -> list[str]:
    floor = size["phases"]["floor"]
    floor_cpu, floor_rss = med(r["cpu_s"] for r in floor), med(r["maxrss_kb"] for r in floor)
    runs = (
        f"{size['runs']}"
        if size["runs"] == size["write_runs"]
        else (f"{size['runs']} for floor/report, {size['write_runs']} for the others")
    )
    lines = [
        f"Figures (median of {runs} run(s); client CPU = user+sys of the client process around the scan call, "
        f"imports excluded; total = whole process; load average {size['load'][0]:.1f} -> {size['load'][-1]:.1f}):",
        "",
        "| run | wall s | client CPU s | x floor | of which GC s (full passes) | CPU total s | peak RSS MiB | x floor "
        "| RSS growth MiB | moto CPU s | writes | verdicts |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, label in PHASES:
        runs = size["phases"].get(key) or []
        if not runs:
            continue
        cpu, rss = med(r["cpu_s"] for r in runs), med(r["maxrss_kb"] for r in runs)
        growth = med((r["maxrss_kb"] - r["rss_before_kb"]) / 1024 for r in runs)
        checks = size["checks"].get(key) or []
        if checks:
            verdicts = (
                "yes"
                if all(c["ok"] for c in checks)
                else "**no** "
                + "; ".join(
                    f"{c['wrong']} wrong {c['examples']}, {c['missing']} missing, {c['extra']} extra"
                    for c in checks
                    if not c["ok"]
                )
            )
            verdicts += f" ({checks[0]['checked']})"
        else:
            verdicts = "—"
        write_counts = sorted({_total_writes(r) for r in runs})
        scan = not key.startswith("refresh")
        lines.append(
            f"| {label} | {_fmt(med(r['wall_s'] for r in runs))} | {_fmt(cpu)} | "
            f"{_fmt(cpu / floor_cpu) if scan else '—'} "
            f"| {_fmt(med(r.get('gc_s', float('nan')) for r in runs))} ({med(r.get('gc_full', 0) for r in runs):.0f}) "
            f"| {_fmt(med(r['cpu_total_s'] for r in runs))} | {_fmt(rss / 1024, 0)} | "
            f"{_fmt(rss / floor_rss) if scan else '—'} "
            f"| {_fmt(growth, 0)} | {_fmt(med(r['server_cpu_s'] for r in runs))} "
            f"| {'/'.join(str(w) for w in write_counts)} | {verdicts} |"
        )
    return lines


def _profiles(size: dict) -> list[str]:
    """Own CPU time by package and top functions of one extra floor and report run under cProfile."""
    profiles = size["profiles"]
    lines = [
        f"Where the client CPU goes at N={size['n']}: one extra floor and one extra report run under cProfile "
        "(CPU clock; not counted above, and cProfile inflates small calls). Own time by package:",
        "",
        "| package | floor s | report s |",
        "|---|---:|---:|",
    ]
    floor, report = dict(profiles["floor"]["packages"]), dict(profiles["report"]["packages"])
    for package in sorted(floor.keys() | report.keys(), key=lambda k: -max(floor.get(k, 0), report.get(k, 0))):
        lines.append(f"| {package} | {floor.get(package, 0):.2f} | {report.get(package, 0):.2f} |")
    lines.append(f"| **total** | {profiles['floor']['total']:.2f} | {profiles['report']['total']:.2f} |")
    share = {k: dict(profiles[k]["packages"]).get("dateutil", 0) / profiles[k]["total"] for k in ("floor", "report")}
    lines += ["", f"dateutil is botocore parsing the response timestamps (LaunchTime, AttachTime, ...), which neither "
              f"the floor nor eic-guard reads: {share['floor']:.0%} of the floor's and {share['report']:.0%} of the "
              "report run's profiled time. A client built with botocore's identity timestamp parser (as the AWS CLI "
              "does) would skip that work."]  # fmt: skip
    lines += ["", "Top functions of the report run by own time:", "", "| function | calls | own s | cumulative s |",
              "|---|---:|---:|---:|"]  # fmt: skip
    lines += [
        f"| `{name}` | {calls} | {own:.2f} | {cum:.2f} |" for name, calls, own, cum in profiles["report"]["functions"]
    ]
    return lines


# Reads that scale with pages, not with nothing: the instance pages, and the re-read of the interfaces a remediate run
# attaches eic-guard-ssh to, one filtered DescribeNetworkInterfaces per 200 (EC2 replaces the whole group set).
ENI_REREAD, ENI_REREAD_PAGE = "DescribeNetworkInterfaces", 200
PAGED_READS = ("DescribeInstances", ENI_REREAD)


def _call_targets(sizes: list[dict]) -> tuple[bool, str]:
    """DescribeInstances pages + the same other reads at every N (nothing per instance)."""
    shapes = {}
    pages = {}
    rereads = {}
    for size in sizes:
        for key in ("report", "remediate", "second"):
            for region in size["regions"]:
                calls = _region_calls(size["phases"][key][0], region)
                reads = {op: n for op, n in calls.items() if not _is_write(op) and op not in PAGED_READS}
                shapes.setdefault(key, set()).add(tuple(sorted(reads.items())))
                pages.setdefault(size["n"], set()).add(calls.get("DescribeInstances", 0))
                if key == "remediate":
                    rereads.setdefault(size["n"], set()).add(calls.get(ENI_REREAD, 0))
    constant = all(len(v) == 1 for v in shapes.values())
    report_reads = dict(next(iter(shapes.get("report", {()}))))
    figure = (
        f"per region: DescribeInstances {', '.join(f'N={n}: {sorted(p)}' for n, p in pages.items())} page(s) "
        f"+ {sum(report_reads.values())} other reads ({', '.join(f'{k} {v}' for k, v in report_reads.items())}) "
        f"at every N; remediate re-reads the interfaces it attaches to in pages of {ENI_REREAD_PAGE} "
        f"({ENI_REREAD} {', '.join(f'N={n}: {sorted(p)}' for n, p in rereads.items())})"
        + ("" if constant else " — **other reads vary with N**")
    )
    return constant, figure


def render(results: dict) -> str:
    sizes = results["sizes"]
    out = [
        "# eic-guard benchmarks",
        "",
        f"Produced by `{results['command']}` (what `make bench` runs) on {results['date']}, {results['machine']}; "
        f"total run time {results['total_s'] / 60:.1f} min.",
        "",
        "Fleet: N opted-in instances (+10% untagged, which must never appear or be touched) over 2 regions x 3 "
        "VPCs x 3 subnets, launched from profiles with a known drift mix (see `benchmarks/fleet.py`). The "
        "moto server runs in its own process with its quadratic tag/instance lookups patched in that process "
        "only (`benchmarks/moto_launcher.py`); every client figure comes from a fresh client process and "
        "excludes the server. Writes are every API call that is not Describe*/Get*/List*.",
        "",
    ]
    out += ["## Targets", "", "| target | figure | met |", "|---|---|---|"]
    out += _targets(results)
    for size in sizes:
        out += [
            "",
            f"## N = {size['n']}",
            "",
            f"{size['instances_seeded']} instances seeded in {size['seed_s']:.0f}s "
            f"({', '.join(f'{k} {v}' for k, v in size['profile_counts'].items())}); "
            f"excluded and untagged instances untouched after remediation: "
            f"{'yes' if size.get('untouched_ok') else '**no**'}.",
            "",
        ]
        out += _figures_table(size)
        out += [""]
        out += _calls_table(size)
        refresh = size["phases"].get("refresh")
        if refresh:
            summary = refresh[0]["summary"]
            out += [
                "",
                f"Refresh (the ip-ranges fixture plus one new EIC prefix per region, applied to the managed groups the "
                f"remediate run created): status {summary['status']}, {summary['groups']} groups, "
                f"{summary['prefixes_added']} prefix rules added, {summary['prefixes_revoked']} revoked, "
                f"{len(summary['alerts'])} alerts; the replays of the same file wrote nothing.",
            ]
        if size.get("profiles"):
            out += ["", *_profiles(size)]
    check = results.get("moto_check")
    if check:
        out += [
            "",
            "## moto's quadratic tag lookup, patched or not",
            "",
            f"The same {check['n']}-instance fleet on a patched and on a stock moto server (one run each): the "
            "client's CPU stays the same within run-to-run noise (the server shares the 2 cores), the server's "
            "grows with N squared without the patch.",
            "",
            "| server | seeding s | floor client CPU s | floor moto CPU s | report client CPU s | report moto CPU s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for label in ("patched", "stock"):
            floor, report = check[f"{label}_floor"], check[f"{label}_report"]
            out.append(
                f"| {label} | {check[f'{label}_seed_s']:.0f} | {floor['cpu_s']:.2f} | {floor['server_cpu_s']:.2f} "
                f"| {report['cpu_s']:.2f} | {report['server_cpu_s']:.2f} |"
            )
    out += ["", "## Cold start and size", ""]
    out += _coldstart(results.get("coldstart"))
    out += [
        "",
        "## Method",
        "",
        "- Each measured run is `python -m benchmarks.measure` in a fresh process with `AWS_ENDPOINT_URL` at the "
        "moto server, fake credentials and the Lambda environment that matters here (`LAMBDA_TASK_ROOT` set, so "
        "the X-Ray SDK picks its local sampler as in Lambda; `POWERTOOLS_LOG_LEVEL=INFO` as deployed, one JSON "
        "line per failing check, to /dev/null; tracing disabled, so X-Ray's per-call subsegments are not "
        "counted). eic-guard runs `run_scan(...)` then `report.to_dict()` (what the scan handler does); the "
        "refresh runs `apply_ranges(..., replay_same=True)`; the floor runs `benchmarks/floor.py`. "
        "ip-ranges.json is parsed before the measured section in both.",
        "- Client CPU is `getrusage(RUSAGE_SELF)` user+sys around that call, so the moto server (another "
        "process) is never counted; peak RSS is the client's VmHWM (ru_maxrss would carry the harness's "
        "high-water mark across exec). API calls are counted with a botocore `before-call` hook on the session "
        "the clients come from; STS is listed as `global`.",
        "- Remediate runs: the seeded drift is put back between runs (ENI groups, IMDS, managed groups deleted), "
        "so every run makes the same changes; the 2nd remediate runs follow the last one.",
        "- moto pages DescribeInstances by reservation (100 per page) and the fleet is launched 250 instances "
        "per reservation, so one page holds a whole region here; on AWS the page count grows with N/1000 at "
        "most. moto CPU is the server process's user+sys during the run (informational). These machines are "
        "shared: wall times move with the load average shown; CPU figures are steadier.",
        "- Cold start: `sam build --no-cached` into /tmp/eic-bench-build (reused while newer than every source); each "
        "artifact goes through the zip round trip of `sam package` (files dated 1980-01-01), then "
        "`python3.13 -X importtime -c 'import app'` runs in the function's directory with the Lambda sys.path "
        "order (function, layer, runtime SDK) and environment, no bytecode writes, median of 5 fresh processes.",
    ]
    return "\n".join(out) + "\n"


def _aws_powertools_layer(weighed: dict | None) -> list[str]:
    """benchmarks/coldstart.py aws_powertools_layer: AWS's Powertools layer beneath a small eic-guard layer."""
    if not weighed:
        return []
    if weighed.get("error"):
        return ["", f"AWS's Powertools layer: not weighed ({weighed['error']})."]
    lines = [
        "",
        f"AWS's published Powertools layer beneath a small eic-guard layer (`python -m benchmarks.coldstart "
        f"--aws-powertools-layer`): eic-guard's own layer would be {weighed['own_layer_bytes'] / 1e6:.1f} MB; AWS's "
        f"layer ships {', '.join(weighed['pins'])} (with its other extras' dependencies) as sources without bytecode, "
        f"which every cold start compiles. `import app` CPU, median (min) of {weighed['runs']} interleaved runs:",
        "",
        "| function | EicGuardLayer as built | AWS's Powertools layer + eic-guard's own |",
        "|---|---:|---:|",
    ]
    for function, variants in weighed.get("imports", {}).items():
        if "error" in variants:
            lines.append(f"| {function} | {variants['error']} | |")
            continue
        cells = [f"{v['cpu_median_ms']:.0f} ms ({v['cpu_min_ms']:.0f})" for v in variants.values()]
        lines.append(f"| {function} | {' | '.join(cells)} |")
    return lines


def _coldstart(cold: dict | None) -> list[str]:
    if not cold:
        return ["Not measured in this run (`--quick` or `--no-coldstart`)."]
    if cold.get("error"):
        return [f"Not measured: {cold['error']}."]
    lines = [
        "| artifact | import `app` as deployed, ms (median of 5) | CPU of that import, ms | all precompiled, ms "
        "| heaviest packages as deployed (self ms) | unzipped size |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for name in ("ScanTargetFunction", "RefreshFunction", "boto3 alone"):
        imports = cold.get("imports", {}).get(name, {})
        built, warm = imports.get("as_deployed", {}), imports.get("precompiled", {})
        heavy = ", ".join(f"{k} {v:.0f}" for k, v in built.get("heaviest", [])[:5]) or built.get("error", "")
        size = cold["sizes"].get(name)
        label = name if name != "boto3 alone" else "`import boto3` alone (runtime SDK, precompiled)"
        lines.append(
            f"| {label} | {_fmt(built.get('median_ms', float('nan')), 0)} "
            f"| {_fmt(built.get('cpu_ms', float('nan')), 0)} "
            f"| {_fmt(warm.get('median_ms', float('nan')), 0) if warm else '—'} | {heavy} "
            f"| {'' if size is None else f'{size / 1024:.1f} KiB'} |"
        )
    layer = cold["sizes"]["EicGuardLayer"]
    provided = cold["layer"]["runtime_provided"]
    lines += [
        "",
        f"EicGuardLayer: **{layer / MiB:.1f} MiB** unzipped ({layer / 1e6:.1f} MB). Largest: "
        + ", ".join(f"{k} {v / MiB:.1f}" for k, v in cold["layer"]["top"])
        + " MiB.",
    ]
    if provided:
        lines[-1] += (
            f" The python3.13 runtime already ships boto3, botocore, s3transfer, jmespath, python-dateutil, "
            f"six and urllib3 ({provided / MiB:.1f} MiB of this layer); without them the layer would be "
            f"{(layer - provided) / MiB:.1f} MiB."
        )
    else:
        lines[-1] += " The layer carries none of the SDK the python3.13 runtime provides (boto3, botocore, ...)."
    lines += _aws_powertools_layer(cold.get("aws_powertools_layer"))
    notes = []
    if cold.get("runtime_sdk"):
        notes.append(f"runtime SDK stand-in (precompiled): {', '.join(cold['runtime_sdk'])}")
    if cold.get("overlay"):
        notes.append(f"host builds replacing the layer's aarch64 extensions: {', '.join(cold['overlay'])}")
    if notes:
        lines += ["", "Import measurement used " + "; ".join(notes) + "."]
    if cold.get("imports_error"):
        lines += ["", f"Import times not measured: {cold['imports_error']}"]
    scan = cold.get("imports", {}).get("ScanTargetFunction", {})
    deployed, warm = scan.get("as_deployed", {}), scan.get("precompiled", {})
    if deployed.get("median_ms") and warm.get("median_ms") and deployed["median_ms"] - warm["median_ms"] > 10:
        own = {k: (dict(deployed.get("heaviest", [])).get(k), dict(warm.get("heaviest", [])).get(k))
               for k in ("eic_guard", "pydantic", "aws_lambda_powertools")}  # fmt: skip
        slower = ", ".join(f"{k} {a:.0f} ms against {b:.0f} ms" for k, (a, b) in own.items() if a and b and a - b > 5)
        lines += [
            "",
            f"As deployed the handler imports in {deployed['median_ms']:.0f} ms, {warm['median_ms']:.0f} ms with "
            "every module precompiled. The difference is compiled at every cold start (/opt and /var/task are "
            "read-only): modules shipped as source, and timestamp-checked `__pycache__` files, which cannot match "
            "once `sam package` has dated every file 1980-01-01"
            + (f" (own time {slower})" if slower else "")
            + ". `compileall --invalidation-mode unchecked-hash` would make those .pyc valid in Lambda.",
        ]
    return lines


def _targets(results: dict) -> list[str]:
    sizes = results["sizes"]
    rows = []
    constant, figure = _call_targets(sizes)
    rows.append(
        ("Scan API calls per region = DescribeInstances pages + a constant number of other describes", figure, constant)
    )
    exact = all(
        _writes(r).get(region, Counter()) == Counter(size["expected_writes"].get(region, {}))
        for size in sizes
        for r in size["phases"]["remediate"]
        for region in size["regions"]
    )
    writes = ", ".join(f"N={s['n']}: {sorted({_total_writes(r) for r in s['phases']['remediate']})}" for s in sizes)
    rows.append(
        (
            "Remediation writes equal the changes needed",
            f"writes per remediate run {writes}, each equal to the expected count by operation and region",
            exact,
        )
    )
    second = [
        _total_writes(r) for s in sizes for k in ("second", "refresh_replay", "report", "floor") for r in s["phases"][k]
    ]
    rows.append(
        (
            "A second run writes nothing",
            f"writes in 2nd remediate / refresh replay / report runs: max {max(second) if second else 'n/a'}",
            bool(second) and max(second) == 0,
        )
    )
    target = next((s for s in sizes if s["n"] == TARGET_N), sizes[-1])
    floor_cpu = med(r["cpu_s"] for r in target["phases"]["floor"])
    floor_rss = med(r["maxrss_kb"] for r in target["phases"]["floor"])
    cpu = {k: med(r["cpu_s"] for r in target["phases"][k]) for k in ("report", "second", "remediate")}
    rss = {k: med(r["maxrss_kb"] for r in target["phases"][k]) for k in ("report", "second", "remediate")}
    floor_total = med(r["cpu_total_s"] for r in target["phases"]["floor"])
    total = {k: med(r["cpu_total_s"] for r in target["phases"][k]) for k in ("report", "second")}
    n = target["n"]
    rows.append(
        (
            f"Whole-process CPU at N={n} (imports included) ≤ {CPU_TARGET}x floor (all six checks)",
            f"report {total['report']:.2f}s = **{total['report'] / floor_total:.2f}x** floor {floor_total:.2f}s; "
            f"2nd remediate {total['second'] / floor_total:.2f}x; client CPU around the scan alone: report "
            f"{cpu['report'] / floor_cpu:.2f}x, remediate (with its writes) {cpu['remediate'] / floor_cpu:.2f}x",
            max(total.values()) <= CPU_TARGET * floor_total,
        )
    )
    rows.append(
        (
            f"Peak RSS at N={n} ≤ {RSS_TARGET}x floor",
            f"report {rss['report'] / 1024:.0f} MiB = **{rss['report'] / floor_rss:.2f}x** floor "
            f"{floor_rss / 1024:.0f} MiB; 2nd remediate {rss['second'] / floor_rss:.2f}x; remediate "
            f"{rss['remediate'] / floor_rss:.2f}x",
            max(rss["report"], rss["second"]) <= RSS_TARGET * floor_rss,
        )
    )
    cold = results.get("coldstart") or {}
    imports = cold.get("imports", {})
    if imports and not cold.get("error"):
        built = {
            f: imports.get(f, {}).get("as_deployed", {}).get("median_ms", float("nan"))
            for f in ("ScanTargetFunction", "RefreshFunction")
        }
        warm = {
            f: imports.get(f, {}).get("precompiled", {}).get("median_ms", float("nan"))
            for f in ("ScanTargetFunction", "RefreshFunction")
        }
        boto3 = imports.get("boto3 alone", {}).get("as_deployed", {})
        rows.append(
            (
                f"Worker `import app` as deployed ≤ {IMPORT_TARGET_MS} ms",
                "as deployed: "
                + ", ".join(f"{k} {v:.0f} ms" for k, v in built.items())
                + "; all precompiled: "
                + ", ".join(f"{k} {v:.0f} ms" for k, v in warm.items())
                + (
                    f"; `import boto3` alone {boto3['median_ms']:.0f} ms in the same run"
                    if "median_ms" in boto3
                    else ""
                ),
                built["ScanTargetFunction"] <= IMPORT_TARGET_MS,
            )
        )
        layer = cold["sizes"]["EicGuardLayer"]
        provided = cold["layer"]["runtime_provided"]
        rows.append(
            (
                f"Layer ≤ {LAYER_TARGET_MB} MB unzipped",
                f"{layer / 1e6:.1f} MB ({layer / MiB:.1f} MiB)"
                + (f"; {(layer - provided) / 1e6:.1f} MB without the runtime-provided SDK" if provided else ""),
                layer <= LAYER_TARGET_MB * 1e6,
            )
        )
    else:
        rows.append(
            (
                f"Worker import ≤ {IMPORT_TARGET_MS} ms; layer ≤ {LAYER_TARGET_MB} MB",
                cold.get("error", "not measured in this run"),
                None,
            )
        )
    verdicts_ok = all(c["ok"] for s in sizes for cs in s["checks"].values() for c in cs)
    untouched = all(s.get("untouched_ok") for s in sizes)
    rows.append(
        (
            "All verdicts match the expected ones at every N",
            f"N = {', '.join(str(s['n']) for s in sizes)}: every run of every kind"
            + ("" if untouched else "; **excluded/untagged instances were modified**"),
            verdicts_ok and untouched,
        )
    )
    rows.append(("`make bench` < 15 min", f"{results['total_s'] / 60:.1f} min", results["total_s"] < 15 * 60))
    return [f"| {t} | {f} | {'n/a' if ok is None else ('met' if ok else '**missed**')} |" for t, f, ok in rows]
