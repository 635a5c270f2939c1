"""Cold start and size: `sam build`, then `python3.13 -X importtime -c "import app"` per function, and sizes.

The Lambda python3.13 runtime puts the function (/var/task) first on sys.path, then the layer (/opt/python), then
its own SDK (/var/runtime: boto3, botocore, s3transfer, jmespath, python-dateutil, six, urllib3), which the layer
leaves out. Here the runtime's SDK is the pinned versions of requirements-dev.txt installed for the host and
precompiled (the runtime ships bytecode for it, as for the standard library).

Two figures per handler: *as deployed* — the built artifacts after the zip round trip `sam package` and Lambda put
them through (every file dated 1980-01-01; /opt and /var/task are read-only, so whatever is not valid bytecode is
compiled at every cold start); and *precompiled* — the same files with every module compiled ahead, the floor of
what shipping bytecode can give.

The layer is built for arm64, so its compiled extensions are aarch64: for the import measurement only, the same
versions of those packages are installed for the host into an overlay placed just before the layer.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = Path(os.environ.get("EIC_BENCH_BUILD_DIR", "/tmp/eic-bench-build"))
FUNCTIONS = ("ScanTargetFunction", "RefreshFunction")
LAYER = "EicGuardLayer"
IMPORT_RUNS = 5
# What the python3.13 managed runtime provides (distribution names as pinned in requirements-dev.txt).
RUNTIME_SDK = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3")
# What AWS's published Powertools layer (AWSLambdaPowertoolsPythonV3-python313-arm64) would provide in place of the
# same packages in EicGuardLayer. It is `aws-lambda-powertools[all]` installed with pip, its extras' dependencies
# (cryptography, aws-encryption-sdk, jsonpath-ng, fastjsonschema: 15 MB eic-guard never imports) included, and its
# build's clean-up deletes every `__pycache__` and `.pyc` (aws-powertools/powertools-lambda-layer-cdk,
# layer/Pythonv3/Dockerfile): it ships sources, which Lambda compiles at every cold start (/opt is read-only).
AWS_LAYER_PROVIDES = frozenset({"aws-lambda-powertools", "aws-xray-sdk", "wrapt", "pydantic", "pydantic-core",
                                "annotated-types", "typing-extensions", "typing-inspection"})  # fmt: skip
RUNTIME_TOP_LEVEL = frozenset({"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "python_dateutil", "six",
                               "urllib3"})  # fmt: skip
LAMBDA_ENV = {  # what the Lambda runtime sets before it imports the handler module
    "AWS_LAMBDA_FUNCTION_NAME": "eic-guard-bench",
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
    "POWERTOOLS_SERVICE_NAME": "eic-guard",
    "POWERTOOLS_METRICS_NAMESPACE": "EicGuard",
    "POWERTOOLS_LOG_LEVEL": "INFO",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "_HANDLER": "app.lambda_handler",
    "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000",
    "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
}


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def python313() -> str | None:
    """A real python3.13 (not a pyenv shim, which sam's validation rejects): pyenv's, else the one on PATH."""
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
        candidates = sorted(Path(root, "versions").glob("3.13*/bin/python3.13"))
        if candidates:
            return str(candidates[-1])
    except (OSError, subprocess.CalledProcessError):
        pass
    found = shutil.which("python3.13")
    return found if found and "shims" not in found else None


def sam_binary() -> str | None:
    for candidate in (ROOT / ".venv-sam" / "bin" / "sam", Path("/tmp/venvsam/bin/sam")):
        if candidate.exists():
            return str(candidate)
    return shutil.which("sam")


def _sources() -> list[Path]:
    return [
        ROOT / "template.yaml",
        *(p for d in ("layers", "functions") for p in (ROOT / d).rglob("*")
          if p.is_file() and "__pycache__" not in p.parts),
    ]  # fmt: skip


def build(python: str, log: Callable[[str], None]) -> str | None:
    """`sam build` into BUILD_DIR unless a build newer than every source is there; returns an error or None."""
    marker = BUILD_DIR / "template.yaml"
    fresh = marker.exists() and all((BUILD_DIR / f).is_dir() for f in (*FUNCTIONS, LAYER))
    if fresh and marker.stat().st_mtime >= max(p.stat().st_mtime for p in _sources()):
        log(f"reusing {BUILD_DIR} (newer than the sources)")
        return None
    sam = sam_binary()
    if sam is None:
        return "sam CLI not found"
    env = {**os.environ, "PATH": f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "SAM_CLI_TELEMETRY": "0"}  # fmt: skip
    argv = [sam, "build", "--build-dir", str(BUILD_DIR), "--no-cached"]  # no cache under the project's .aws-sam
    log(f"sam build --build-dir {BUILD_DIR} --no-cached")
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["?"]
        return "sam build failed: " + lines[-1]
    marker.touch()
    return None


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def layer_breakdown(layer: Path) -> dict:
    """The biggest packages of the layer, and how much of it the Lambda runtime would provide anyway."""
    sizes: dict[str, int] = {}
    provided = 0
    for entry in (layer / "python").iterdir():
        size = tree_size(entry) if entry.is_dir() else entry.stat().st_size
        if entry.name.split("-")[0].removesuffix(".py").lower() in RUNTIME_TOP_LEVEL:
            provided += size
        if not entry.name.endswith((".dist-info", ".data")):
            sizes[entry.name] = size
    return {"top": sorted(sizes.items(), key=lambda kv: -kv[1])[:8], "runtime_provided": provided}


def _pip_target(python: str, pins: list[str], label: str, compile_: bool, log: Callable[[str], None]) -> Path:
    """Install `pins` for this host into a cached directory (PyPI through pip, nothing else)."""
    key = hashlib.sha256(("|".join(pins) + python + platform.machine() + str(compile_)).encode()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"eic-bench-{label}-{key}"
    if (target / ".complete").exists():
        return target
    log(f"installing {', '.join(pins)} for the host into {target}")
    shutil.rmtree(target, ignore_errors=True)
    argv = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
            "--only-binary=:all:", "--no-compile", "--target", str(target), *pins]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pip install of {label} failed: " + done.stderr.strip()[-300:])
    if compile_:
        subprocess.run([python, "-m", "compileall", "-q", str(target)], capture_output=True, timeout=600, check=True)
    (target / ".complete").touch()
    return target


def _dist_pins(site: Path, wanted: set[str] | None = None, top_levels: set[str] | None = None) -> list[str]:
    pins = []
    for dist in site.glob("*.dist-info"):
        name, version = dist.name.removesuffix(".dist-info").rsplit("-", 1)
        top = dist / "top_level.txt"
        tops = set(top.read_text().split()) if top.exists() else {name.replace("-", "_").lower()}
        if (wanted and name.lower().replace("_", "-") in wanted) or (top_levels and tops & top_levels):
            pins.append(f"{name}=={version}")
    return sorted(pins)


def native_overlay(python: str, layer_site: Path, log: Callable[[str], None]) -> tuple[Path | None, list[str]]:
    """Host builds (same versions, no .pyc, like the layer) of the layer's packages with foreign extensions."""
    host = platform.machine()
    foreign = {p.relative_to(layer_site).parts[0] for p in layer_site.rglob("*.so") if host not in p.name}
    if not foreign:
        return None, []
    pins = _dist_pins(layer_site, top_levels=foreign)
    return _pip_target(python, pins, "native", compile_=False, log=log), pins


def runtime_sdk(python: str, log: Callable[[str], None]) -> tuple[Path, list[str]]:
    """The runtime's SDK stand-in: the pins of requirements-dev.txt, precompiled."""
    pins = []
    for line in (ROOT / "requirements-dev.txt").read_text().splitlines():
        name = line.split("==")[0].strip().lower()
        if "==" in line and name in RUNTIME_SDK:
            pins.append(line.strip())
    return _pip_target(python, sorted(pins), "runtime-sdk", compile_=True, log=log), sorted(pins)


_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


def import_times(python: str, cwd: Path, path: list[Path], module: str = "app", runs: int = IMPORT_RUNS) -> dict:
    """Median over `runs` fresh processes of `import <module>` (cumulative, from -X importtime), in ms, and of
    the CPU time it took (process_time around the import: steadier than the wall time on a shared machine).

    `-S`: the host interpreter's site-packages stay out, with any `.pth` hook there (this machine's imports certifi,
    and with it importlib.resources, pathlib, tempfile and inspect, which the handler would then find loaded)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "POWERTOOLS_", "EIC_GUARD_", "PYTHON", "LAMBDA_", "_X_AMZN"))}  # fmt: skip
    env.update(LAMBDA_ENV, LAMBDA_TASK_ROOT=str(cwd), PYTHONPATH=os.pathsep.join(str(p) for p in path),
               PYTHONDONTWRITEBYTECODE="1")  # fmt: skip
    totals, packages, cpu = [], [], []
    code = f"import time; _cpu = time.process_time(); import {module}; print((time.process_time() - _cpu) * 1000)"
    for _ in range(runs):
        done = subprocess.run([python, "-S", "-X", "importtime", "-c", code], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["?"])[-1]
            raise RuntimeError(f"import {module} failed in {cwd.name}: {last}")
        total, by_package = float("nan"), {}
        for line in done.stderr.splitlines():
            match = _IMPORT_LINE.match(line)
            if not match:
                continue
            name = match.group(4)
            if len(match.group(3)) == 1 and name == module:
                total = int(match.group(2)) / 1000
            root = name.split(".")[0]
            by_package[root] = by_package.get(root, 0) + int(match.group(1)) / 1000
        totals.append(total)
        packages.append(by_package)
        cpu.append(float(done.stdout.split()[-1]))
    median_run = packages[totals.index(statistics.median_low(totals))]
    ignore = {"site", "encodings", "_frozen_importlib_external", "zipimport", "io", module}
    heaviest = sorted(((k, v) for k, v in median_run.items() if k not in ignore), key=lambda kv: -kv[1])[:6]
    return {"median_ms": statistics.median(totals), "runs_ms": totals, "cpu_ms": statistics.median(cpu),
            "heaviest": heaviest}  # fmt: skip


def _as_deployed(source: Path, target: Path) -> None:
    """What Lambda unpacks: `sam package` zips each file as `ZipInfo(name)` without a date (so 1980-01-01) and the
    files come out with that mtime: a timestamp-checked .pyc built before can never match its source there."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                archive.writestr(zipfile.ZipInfo(str(path.relative_to(source))), path.read_bytes())
    with zipfile.ZipFile(buffer) as archive:
        for info in archive.infolist():
            extracted = archive.extract(info, target)
            stamp = time.mktime((*info.date_time, 0, 0, -1))
            os.utime(extracted, (stamp, stamp))


_SHIP_LIKE_LAYER = """
import pathlib, py_compile, sys
overlay, layer = map(pathlib.Path, sys.argv[1:3])
for source in overlay.rglob("*.py"):
    twin = layer / source.relative_to(overlay)
    if not twin.exists() and twin.with_suffix(".pyc").exists():  # the layer ships this module as bytecode only
        py_compile.compile(str(source), cfile=str(source.with_suffix(".pyc")), doraise=True)
        source.unlink()
"""


def _ship_overlay(python: str, overlay: Path | None, root: Path) -> list[Path]:
    """The host builds `overlay` copied into `root`, shipped the way root's layer ships those packages (as bytecode
    where the layer has bytecode only); the sys.path entries that go before the layer (none without an overlay)."""
    if overlay is None:
        return []
    shutil.copytree(overlay, root / "overlay")
    run = [python, "-c", _SHIP_LIKE_LAYER, str(root / "overlay"), str(root / LAYER / "python")]
    subprocess.run(run, capture_output=True, timeout=600, check=True)
    return [root / "overlay"]


def _handler_imports(python: str, overlay: Path | None, sdk: Path, log: Callable[[str], None]) -> dict:
    """Per handler: import time as deployed (sam's zip round trip) and with every module precompiled."""
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="eic-bench-deployed-") as tmp:
        deployed, compiled = Path(tmp, "deployed"), Path(tmp, "compiled")
        for name in (LAYER, *FUNCTIONS):
            _as_deployed(BUILD_DIR / name, deployed / name)
        _ship_overlay(python, overlay, deployed)
        shutil.copytree(deployed, compiled)
        subprocess.run([python, "-m", "compileall", "-q", str(compiled)], capture_output=True, timeout=600, check=True)
        for function in FUNCTIONS:
            results[function] = {}
            for variant, root in (("as_deployed", deployed), ("precompiled", compiled)):
                path = [root / function, *([root / "overlay"] if overlay else []), root / LAYER / "python", sdk]
                try:
                    results[function][variant] = import_times(python, path[0], path)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    results[function][variant] = {"error": str(exc)}
            log(f"import app in {function}: {results[function]['as_deployed'].get('median_ms', 'n/a')} ms as "
                f"deployed, {results[function]['precompiled'].get('median_ms', 'n/a')} ms precompiled")  # fmt: skip
    try:
        results["boto3 alone"] = {"as_deployed": import_times(python, sdk, [sdk], module="boto3")}
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        results["boto3 alone"] = {"as_deployed": {"error": str(exc)}}
    return results


def aws_powertools_layer(python: str, sdk: Path, log: Callable[[str], None], runs: int = 9) -> dict:
    """Weigh AWS's Powertools layer beneath a small eic-guard layer: the size eic-guard's own layer would have, and
    `import app` as deployed when Powertools, pydantic and the X-Ray SDK come as AWS ships them (the same pinned
    versions, installed for this host, sources without bytecode) and the rest of EicGuardLayer as built; against
    EicGuardLayer as built, the runs interleaved (CPU and wall: min and median of `runs` fresh processes each).
    Lambda extracts every layer into /opt, so both layers go into one directory."""
    layer_site = BUILD_DIR / LAYER / "python"
    pins = _dist_pins(layer_site, wanted=set(AWS_LAYER_PROVIDES))
    aws = _pip_target(python, pins, "aws-powertools-layer", compile_=False, log=log)
    overlay, _ = native_overlay(python, layer_site, log)
    provided = {p.name.removesuffix(".py") for p in aws.iterdir() if not p.name.startswith(".")}
    result: dict = {"pins": pins, "runs": runs, "imports": {}}
    with tempfile.TemporaryDirectory(prefix="eic-bench-aws-layer-") as tmp:
        deployed, opt = Path(tmp, "deployed"), Path(tmp, "opt", "python")
        for name in (LAYER, *FUNCTIONS):
            _as_deployed(BUILD_DIR / name, deployed / name)
        host_builds = _ship_overlay(
            python, overlay, deployed
        )  # EicGuardLayer as built, its aarch64 extensions replaced
        opt.mkdir(parents=True)
        for entry in (deployed / LAYER / "python").iterdir():  # eic-guard's own layer: the rest of EicGuardLayer
            if entry.name.removesuffix(".pyc") not in provided:
                (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, opt / entry.name)
        result["own_layer_bytes"] = tree_size(opt)
        result["provided_bytes"] = tree_size(aws)
        shutil.copytree(aws, opt, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".complete"))
        for function in FUNCTIONS:
            task = deployed / function
            variants = {
                "EicGuardLayer as built": [task, *host_builds, deployed / LAYER / "python", sdk],
                "AWS's Powertools layer + eic-guard's own": [task, opt, sdk],
            }
            times: dict[str, dict[str, list[float]]] = {v: {"cpu": [], "wall": []} for v in variants}
            try:
                for _ in range(runs):
                    for variant, path in variants.items():
                        one = import_times(python, task, path, runs=1)
                        times[variant]["cpu"].append(one["cpu_ms"])
                        times[variant]["wall"].append(one["median_ms"])
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                result["imports"][function] = {"error": str(exc)}
                continue
            result["imports"][function] = {
                variant: {f"{kind}_{stat.__name__}_ms": stat(values) for kind, values in t.items()
                          for stat in (min, statistics.median)}
                for variant, t in times.items()
            }  # fmt: skip
            log(f"import app in {function}: {result['imports'][function]}")
    return result


def measure(log: Callable[[str], None]) -> dict:
    python = python313()
    if python is None:
        return {"error": "python3.13 not found (needed by sam build and for the import times)"}
    error = build(python, log)
    if error:
        return {"error": error}
    result: dict = {"build_dir": str(BUILD_DIR), "python": python, "sizes": {}, "imports": {}}
    for name in (*FUNCTIONS, LAYER):
        result["sizes"][name] = tree_size(BUILD_DIR / name)
    result["layer"] = layer_breakdown(BUILD_DIR / LAYER)
    try:
        overlay, result["overlay"] = native_overlay(python, BUILD_DIR / LAYER / "python", log)
        sdk, result["runtime_sdk"] = runtime_sdk(python, log)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        result["imports_error"] = str(exc)
        return result
    result["imports"] = _handler_imports(python, overlay, sdk, log)
    try:
        result["aws_powertools_layer"] = aws_powertools_layer(python, sdk, log)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        result["aws_powertools_layer"] = {"error": str(exc)}
    return result


def _deployed_tree(
    python: str, build: Path, function: str, sdk: Path, target: Path, log: Callable[[str], None]
) -> list:
    """`function` and the layer of `build` through the zip round trip into `target`: the Lambda sys.path over it."""
    for name in (LAYER, function):
        _as_deployed(build / name, target / name)
    overlay, _ = native_overlay(python, build / LAYER / "python", log)
    return [target / function, *_ship_overlay(python, overlay, target), target / LAYER / "python", sdk]


def compare(builds: list[Path], function: str, runs: int, log: Callable[[str], None]) -> dict:
    """CPU of `import app` as deployed for each of several existing `sam build` outputs (no build here), and of
    `import boto3` alone, the runs interleaved so that the machine's load hits all alike: min and median of `runs`
    fresh processes each. For before/after figures on a shared machine, where wall times move with the load."""
    python = python313()
    if python is None:
        raise SystemExit("python3.13 not found")
    sdk, _ = runtime_sdk(python, log)
    cpu: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="eic-bench-compare-") as tmp:
        paths = {str(b): _deployed_tree(python, b, function, sdk, Path(tmp, str(i)), log) for i, b in enumerate(builds)}
        paths["import boto3 alone"] = [sdk]
        for _ in range(runs):
            for label, path in paths.items():
                module = "boto3" if label == "import boto3 alone" else "app"
                cpu.setdefault(label, []).append(import_times(python, path[0], path, module=module, runs=1)["cpu_ms"])
    return {label: {"min_ms": min(v), "median_ms": statistics.median(v), "runs": len(v)} for label, v in cpu.items()}


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m benchmarks.coldstart", description=__doc__.splitlines()[0])
    parser.add_argument("--compare", nargs="+", type=Path, metavar="BUILD_DIR", help="CPU of import app per build")
    parser.add_argument("--function", default="ScanTargetFunction", help="with --compare (default the worker)")
    parser.add_argument("--runs", type=int, default=15, help="with --compare: processes per build (default 15)")
    parser.add_argument(
        "--aws-powertools-layer",
        action="store_true",
        help="only weigh AWS's Powertools layer beneath a small eic-guard layer (see AWS_LAYER_PROVIDES)",
    )
    args = parser.parse_args()
    quiet = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.aws_powertools_layer:
        py = python313()
        if py is None or build(py, quiet) is not None:
            raise SystemExit("python3.13 and a sam build are needed")
        print(json.dumps(aws_powertools_layer(py, runtime_sdk(py, quiet)[0], quiet), indent=1))
    elif args.compare:
        print(json.dumps(compare(args.compare, args.function, args.runs, quiet), indent=1))
    else:
        print(json.dumps(measure(quiet), indent=1))
