"""What a handler imports at its cold start, and what the layer leaves out (issue 20 item 7; docs/architecture.md §6):
each module a handler imports is paid by every cold start, so the target worker imports none of what only other
paths need, nothing imports the X-Ray SDK but the handlers, and the layer's pruned modules stay out of reach."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.layer_contents import PrunedModules, pruned_modules

LAMBDA_ENV = {  # what the Lambda runtime sets before it imports a handler: tracing on, as deployed
    "AWS_LAMBDA_FUNCTION_NAME": "eic-guard-worker",
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
    "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
    "POWERTOOLS_SERVICE_NAME": "eic-guard",
}
# Imported by other paths only (the aggregate's report validators, a download, event parsing, the CLI), or by the
# X-Ray SDK's patchers for modules eic-guard makes no traced call with.
NOT_ON_THE_WORKER_PATH = (
    "requests",
    "sqlite3",
    "aws_xray_sdk.ext.requests",
    "aws_xray_sdk.ext.sqlite3",
    "aws_xray_sdk.ext.httplib",
    "aws_lambda_powertools.utilities.parser.models",
    "eic_guard.events",
    "eic_guard.cli",
    "eic_guard.outputs.html",
    # Plan's and Aggregate's: the alert tally, the ip-ranges catch-up, the verify job (fanout/steps.py, plan.py)
    "eic_guard.outputs.alerts",
    "eic_guard.outputs.stream",
    "eic_guard.ranges.catch_up",
    "eic_guard.verify.job",
)

_PROBE = """
import json, sys
import app
from aws_xray_sdk.core import patcher
from eic_guard.fanout.steps import PlanOutput, RunRequest
from eic_guard.outputs.report import Report
from eic_guard.ranges.state import RangesState
print(json.dumps({
    "modules": sorted(sys.modules),
    "patched": sorted(patcher._PATCHED_MODULES),
    "built": [m.__name__ for m in (Report, RangesState, PlanOutput, RunRequest)
              if type(m.__pydantic_validator__).__name__ != "MockValSer"],
}))
"""


def _fresh_interpreter(code: str, cwd, env: dict[str, str]) -> dict:
    path = os.pathsep.join([str(cwd), str(ROOT / "layers" / "eic_guard"), str(ROOT)])
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "LAMBDA_", "EIC_GUARD"))}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**clean, **env, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_target_worker_imports_nothing_only_other_paths_need():
    # Given the worker's handler module and the Lambda environment, tracing on
    function = ROOT / "functions" / "scan_target"

    # When a fresh interpreter imports it, as Lambda's cold start does
    seen = _fresh_interpreter(_PROBE, function, {**LAMBDA_ENV, "LAMBDA_TASK_ROOT": str(function)})

    # Then none of what only the other paths need is loaded, X-Ray patches botocore alone (every AWS call traced),
    # and the validators only Plan and Aggregate use (the report, the ranges state, their events) are not built yet
    loaded = set(seen["modules"])
    assert [m for m in NOT_ON_THE_WORKER_PATH if m in loaded] == []
    assert seen["patched"] == ["botocore"]
    assert seen["built"] == []


def test_the_engine_and_the_cli_never_import_the_xray_sdk():
    # Given a fresh interpreter outside Lambda (the CLI): the X-Ray SDK would build two botocore clients on import
    code = "import json, sys, eic_guard.observability, eic_guard.fanout.local, eic_guard.cli.scan; "
    code += "print(json.dumps({'modules': [m for m in sys.modules if m.startswith('aws_xray_sdk')]}))"

    # When the logger, the local fan-out and the scan subcommand are imported
    seen = _fresh_interpreter(code, ROOT, {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull})

    # Then no X-Ray module is: only the handlers trace (eic_guard/tracing.py)
    assert seen["modules"] == []


@pytest.mark.parametrize("module", pruned_modules())
def test_what_the_layer_prunes_cannot_be_imported_in_the_tests(module):
    # Given a module the layer's Makefile leaves out (layers/eic_guard/pruned.txt), and the test suite's finder
    finder = next(f for f in sys.meta_path if isinstance(f, PrunedModules))

    # When code that is not a test tool's (here, this test) asks for it
    # Then it is refused as Lambda would, naming the list
    with pytest.raises(ModuleNotFoundError, match=r"pruned\.txt"):
        finder.find_spec(module)


def test_an_import_of_a_pruned_module_fails_in_a_test_process():
    # Given a fresh interpreter with the test suite's finder (tests/conftest.py installs it)
    code = "import json; from tests.layer_contents import block_pruned_modules; block_pruned_modules()\n"
    code += (
        "try:\n    import pydantic.v1\nexcept ModuleNotFoundError as exc:\n    print(json.dumps({'error': str(exc)}))"
    )

    # When pydantic 1's compatibility copy is imported
    seen = _fresh_interpreter(code, ROOT, {})

    # Then the import fails, naming the list
    assert seen == {"error": "pydantic.v1 is not in the Lambda layer (layers/eic_guard/pruned.txt)"}


def test_the_layer_makefile_removes_what_pruned_txt_lists():
    # Given the layer's build and the list of pruned modules
    makefile = (ROOT / "layers" / "eic_guard" / "Makefile").read_text(encoding="utf-8")

    # Then the build reads that list, and the list names only modules of packages the layer installs
    assert "grep -v '^#' pruned.txt" in makefile
    installed = {
        line.split("==")[0].lower().replace("-", "_")
        for line in (ROOT / "layers" / "eic_guard" / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if "==" in line
    }
    assert {m.split(".")[0] for m in pruned_modules()} <= installed
