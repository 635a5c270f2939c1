"""What the Lambda runtime hands a handler, and what the tests read back from it: a fake context, the handlers
imported by path (as Lambda does), the sample events, and the JSON lines (EMF metrics, structured logs) on stdout."""

from __future__ import annotations

import copy
import importlib.util
import json
from dataclasses import dataclass

from tests.conftest import EVENTS, REGION, ROOT

SCAN_ARN = f"arn:aws:lambda:{REGION}:123456789012:function:eic-guard-scan"
REFRESH_ARN = f"arn:aws:lambda:{REGION}:123456789012:function:eic-guard-refresh"


@dataclass
class FakeLambdaContext:
    """The attributes of the Lambda context object that eic-guard and Powertools read (the scan function's, unless
    told otherwise)."""

    function_name: str = "eic-guard-scan"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = SCAN_ARN
    aws_request_id: str = "6f1d2c3b-0a9e-4e8f-b7d6-5c4b3a291807"
    function_version: str = "$LATEST"
    log_stream_name: str = "2026/08/22/[$LATEST]0123456789abcdef"
    remaining_ms: int = 900_000  # the scan function's timeout: a run starts with all of it

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def load_handler(name: str, module_alias: str | None = None):
    """Import functions/<name>/app.py by path, as Lambda does (the folder is not a package), and return its
    lambda_handler. Each call executes the file again: a fresh module, under `module_alias` if given."""
    alias = module_alias or f"eic_guard_{name}_app"
    spec = importlib.util.spec_from_file_location(alias, ROOT / "functions" / name / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lambda_handler


def event(name: str) -> dict:
    """A sample event of events/."""
    return json.loads((EVENTS / name).read_text())


def with_message(message, base: str = "sns-ip-space-changed-current.json") -> dict:
    """The real SNS envelope `base` with another Message (a dict is serialized, a str is used as is)."""
    envelope = copy.deepcopy(event(base))
    envelope["Records"][0]["Sns"]["Message"] = message if isinstance(message, str) else json.dumps(message)
    return envelope


def json_lines(text: str) -> list[dict]:
    """Every line of `text` that is a JSON object, in order; other lines are skipped."""
    lines = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            lines.append(value)
    return lines


def emf_blobs(text: str) -> list[dict]:
    """The CloudWatch embedded-metric-format documents among the JSON lines of `text`."""
    return [line for line in json_lines(text) if "_aws" in line]
