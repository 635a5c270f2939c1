"""The deployed state machine (statemachine/eic_guard.asl.json) run in-process for the tests: the three Lambda
handlers, imported by path as Lambda does, called in the order and with the inputs Step Functions gives them —
Plan, then each Distributed Map item (its worker re-invoked with round + 1 while it says `incomplete`, up to
MaxRounds; a worker that raises is caught, as the map's Catch does), the revoke map when Plan says so, Aggregate."""

from __future__ import annotations

import copy
import json

import boto3

from tests.conftest import REGION
from tests.lambda_runtime import FakeLambdaContext, load_handler

MAX_ROUNDS = 3  # template.yaml's MaxRounds default


class Execution:
    """One execution: what each step returned, for the tests' assertions."""

    def __init__(self, max_rounds: int = MAX_ROUNDS, worker_context=None):
        """`worker_context(request)`, if given, is the Lambda context of each worker invocation (its time left)."""
        self.max_rounds = max_rounds
        self.worker_context = worker_context
        self.plan = load_handler("plan", "eic_guard_plan_app")
        self.worker = load_handler("scan_target", "eic_guard_scan_target_app")
        self.aggregate = load_handler("aggregate", "eic_guard_aggregate_app")
        self.plan_output: dict | None = None
        self.worker_outputs: list[dict] = []
        self.worker_failures: list[Exception] = []

    def run(self, execution_input: dict, context: FakeLambdaContext | None = None) -> dict:
        context = context or FakeLambdaContext()
        plan = self.plan_output = self.plan(copy.deepcopy(execution_input), context)
        items = json.loads(
            boto3.client("s3", REGION).get_object(Bucket=plan["bucket"], Key=plan["targets_key"])["Body"].read()
        )
        for phase in ("apply", "revoke") if plan["revoke"] else ("apply",):
            for item in items:
                self._item(plan, item, phase, context)
        return self.aggregate(copy.deepcopy(plan), context)

    def _item(self, plan: dict, item: dict, phase: str, context: FakeLambdaContext) -> None:
        request = {
            "run_id": plan["run_id"],
            "bucket": plan["bucket"],
            "manifest_key": plan["manifest_key"],
            "target": item,
            "phase": phase,
            "round": 1,
        }
        while True:
            try:
                worker_context = self.worker_context(request) if self.worker_context else context
                output = self.worker(copy.deepcopy(request), worker_context)
            except Exception as exc:  # noqa: BLE001 - the map's Catch: the item ends, the run goes on
                self.worker_failures.append(exc)
                return
            self.worker_outputs.append(output)
            if output["status"] != "incomplete" or output["round"] >= self.max_rounds:
                return
            request = {**request, "round": output["round"] + 1}


def run_nightly(context: FakeLambdaContext | None = None, **options) -> dict:
    """The nightly schedule's execution (input {"job": "scan"}); returns Aggregate's summary."""
    return Execution(**options).run({"job": "scan"}, context)
