"""The fan-out state machine: statemachine/eic_guard.asl.json as template.yaml deploys it, its role and schedule.

cfn-lint's Step Functions rule (E3601) validates a definition written inline in a template, not one read from
DefinitionUri: the definition is checked here by substituting it the way CloudFormation does and linting it inline,
then against the States Language's structural rules (tests/template/asl.py), its shape (Plan → Distributed Map →
optional revoke Map → Aggregate), and by running it with fake steps in a small interpreter of the language.
"""

from __future__ import annotations

import json

import pytest
from cfnlint import api as cfnlint_api
from eic_guard.permissions import STATE_MACHINE_LOG_DELIVERY, STATE_MACHINE_TRACES

from benchmarks import sfn_cost
from tests.template.asl import (
    ASL_PATH,
    LAMBDA_INVOKE,
    STATE_MACHINE_ID,
    Execution,
    StateFailed,
    load_definition,
    placeholders,
    scope_problems,
    structural_problems,
    substitutions,
)
from tests.template.cfn import (
    ROOT,
    allowed_actions,
    as_list,
    parameter_values,
    physical,
    render,
    resources,
    template,
)
from tests.template.event_patterns import matches

LAMBDA_ERRORS = {
    "Lambda.TooManyRequestsException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.ClientExecutionTimeoutException",
}
WORKER_INPUT_KEYS = {"run_id", "bucket", "manifest_key", "target", "phase", "round"}
BUCKET = "eic-guard-reportsbucket-1a2b3c4d"


def definition(**overrides: str) -> dict:
    return load_definition(render(parameter_values(**overrides)))


def function_arn(function_id: str) -> str:
    return physical(function_id, "Arn")


# ---------------------------------------------------------------- the file and its substitutions


def test_every_placeholder_is_a_substitution_and_every_substitution_is_used():
    # Given the placeholders of the definition file and the substitutions template.yaml passes
    used = placeholders()
    passed = set(resources()[STATE_MACHINE_ID]["Properties"]["DefinitionSubstitutions"])

    # Then they are the same names, and the rendered definition is JSON with no placeholder left
    assert (
        used
        == passed
        == {
            "PlanFunctionArn",
            "ScanTargetFunctionArn",
            "AggregateFunctionArn",
            "ReportsBucket",
            "MaxConcurrency",
            "MaxRounds",
            "MaxItemsPerBatch",
        }
    )
    assert "${" not in json.dumps(definition())


def test_the_state_machine_is_standard_and_reads_the_definition_file():
    # Given the state machine resource
    properties = resources()[STATE_MACHINE_ID]["Properties"]

    # Then it is a Standard state machine (runs may take hours; every step is in its history) defined by the file
    assert resources()[STATE_MACHINE_ID]["Type"] == "AWS::Serverless::StateMachine"
    assert properties["Type"] == "STANDARD"
    assert properties["DefinitionUri"] == str(ASL_PATH.relative_to(ASL_PATH.parents[1]))
    assert "Definition" not in properties


@pytest.mark.parametrize("overrides", [{}, {"MaxConcurrency": "1000", "MaxRounds": "1"}], ids=["defaults", "other"])
def test_cfn_lint_step_functions_checks_pass_on_the_substituted_definition(overrides):
    # Given the definition as deployed, inlined in a minimal template (cfn-lint checks only inline definitions)
    document = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {
            "StateMachine": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {
                    "RoleArn": "arn:aws:iam::123456789012:role/eic-guard-EicGuardStateMachineRole-1A2B3C4D",
                    "StateMachineType": "STANDARD",
                    "Definition": definition(**overrides),
                },
            }
        },
    }

    # When cfn-lint checks it with every rule
    matches = cfnlint_api.lint_all(json.dumps(document))

    # Then nothing is an error or a warning
    assert [str(m) for m in matches if m.rule.id[0] in "EW"] == []


def test_the_definition_follows_the_states_language_structure_rules():
    # Given the deployed definition
    document = definition()

    # When the structural rules are checked for the top level and every map's item processor
    problems = structural_problems(document)

    # Then none is broken
    assert problems == []


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ({"StartAt": "A", "States": {"B": {"Type": "Succeed"}}}, "StartAt 'A' is not a state"),
        ({"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "Z"}}}, "goes to 'Z'"),
        ({"StartAt": "A", "States": {"A": {"Type": "Pass"}}}, "exactly one of Next and End"),
        (
            {"StartAt": "A", "States": {"A": {"Type": "Succeed"}, "B": {"Type": "Succeed"}}},
            "B: unreachable from StartAt",
        ),
        ({"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "A"}}}, "a loop without a Choice"),
    ],
    ids=["start", "next", "next-or-end", "unreachable", "endless-loop"],
)
def test_the_structure_check_reports_each_kind_of_mistake(scope, expected):
    # Given a scope with one mistake

    # When its structure is checked
    problems = scope_problems("test/", scope)

    # Then that mistake is reported
    assert any(expected in p for p in problems), problems


# ---------------------------------------------------------------- shape


def _retry_covers_lambda_errors(state: dict, backoff: bool) -> None:
    (retrier,) = state["Retry"]
    assert set(retrier["ErrorEquals"]) == LAMBDA_ERRORS
    assert retrier["MaxAttempts"] >= 3
    if backoff:
        assert retrier["BackoffRate"] > 1 and retrier["JitterStrategy"] == "FULL" and retrier["MaxDelaySeconds"] > 0


def test_plan_then_apply_map_then_revoke_choice_then_aggregate():
    # Given the deployed definition
    states = definition()["States"]

    # When the top-level states are followed from StartAt
    plan, apply, choice, revoke, aggregate = (
        states["Plan"],
        states["ApplyTargets"],
        states["AnythingToRevoke"],
        states["RevokeTargets"],
        states["Aggregate"],
    )

    # Then Plan (its Payload is the output) goes to the apply map, then a choice on $.revoke goes to the revoke map or
    # straight to Aggregate, the revoke map to Aggregate, and Aggregate (given the Plan output) ends the execution
    assert definition()["StartAt"] == "Plan"
    assert set(states) == {
        "Plan",
        "ApplyTargets",
        "AnythingToRevoke",
        "RevokeTargets",
        "Aggregate",
        "ReportRunFailure",
        "AggregateFailed",
    }
    for state, function_id in ((plan, "PlanFunction"), (aggregate, "AggregateFunction")):
        assert (state["Type"], state["Resource"]) == ("Task", LAMBDA_INVOKE)
        assert state["Parameters"] == {"FunctionName": function_arn(function_id), "Payload.$": "$"}
        assert state["OutputPath"] == "$.Payload"
        _retry_covers_lambda_errors(state, backoff=True)
    assert plan["Next"] == "ApplyTargets" and apply["Next"] == "AnythingToRevoke"
    assert choice["Choices"] == [{"Variable": "$.revoke", "BooleanEquals": True, "Next": "RevokeTargets"}]
    assert choice["Default"] == "Aggregate" and revoke["Next"] == "Aggregate"
    assert aggregate["End"] is True
    # a map that fails as a whole skips the revoke phase (no revoke without every addition) but not the report;
    # only a failed ResultWriter export (which nothing reads) goes on as success does
    for state in (apply, revoke):
        assert state["Catch"][-1] == {"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": "Aggregate"}
        assert state["Catch"][0] == {
            "ErrorEquals": ["States.ResultWriterFailed"],
            "ResultPath": None,
            "Next": state["Next"],
        }
    # and a failed Aggregate still reports: the Aggregate function again, given the Plan output and the failure at
    # $.failure (its fallback path), then the execution fails with Aggregate's error, even if the fallback failed
    fallback, failed = states["ReportRunFailure"], states["AggregateFailed"]
    assert aggregate["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "ReportRunFailure"}
    ]
    assert (fallback["Type"], fallback["Resource"]) == ("Task", LAMBDA_INVOKE)
    assert fallback["Parameters"] == {"FunctionName": function_arn("AggregateFunction"), "Payload.$": "$"}
    assert fallback["ResultPath"] is None and fallback["Next"] == "AggregateFailed"
    assert fallback["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": "AggregateFailed"}]
    _retry_covers_lambda_errors(fallback, backoff=True)
    assert failed == {
        "Type": "Fail",
        "Comment": failed["Comment"],
        "ErrorPath": "$.failure.Error",
        "CausePath": "$.failure.Cause",
    }


@pytest.mark.parametrize(("map_name", "phase"), [("ApplyTargets", "apply"), ("RevokeTargets", "revoke")])
@pytest.mark.parametrize(("max_concurrency", "batch"), [("40", "25"), ("7", "1")])
def test_each_map_is_distributed_over_the_s3_target_list_in_batches(map_name, phase, max_concurrency, batch):
    # Given a map of the definition deployed with a MaxConcurrency and a MaxItemsPerBatch
    state = definition(MaxConcurrency=max_concurrency, MaxItemsPerBatch=batch)["States"][map_name]

    # Then it is a Distributed Map of Standard child executions reading Plan's target list from S3, each child
    # execution taking up to MaxItemsPerBatch targets with what they share (the run's objects, the phase, round 1),
    # at most MaxConcurrency at once, tolerating every failure (each target records its own), exporting the child
    # executions' outputs under runs/<run id>/map/<phase>/ of the reports bucket (so that they never become the
    # state's result, bounded by the 256 KiB payload quota), and keeping the Plan output as the state's output
    assert state["Type"] == "Map"
    assert state["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert state["ItemReader"] == {
        "Resource": "arn:aws:states:::s3:getObject",
        "ReaderConfig": {"InputType": "JSON"},
        "Parameters": {"Bucket.$": "$.bucket", "Key.$": "$.targets_key"},
    }
    assert "ItemSelector" not in state  # the items are Plan's targets as they are
    assert state["ItemBatcher"] == {
        "MaxItemsPerBatch": int(batch),
        "BatchInput": {
            "run_id.$": "$.run_id",
            "bucket.$": "$.bucket",
            "manifest_key.$": "$.manifest_key",
            "phase": phase,
            "round": 1,
        },
    }
    assert state["MaxConcurrency"] == int(max_concurrency)
    assert state["ToleratedFailurePercentage"] == 100
    assert state["ResultWriter"] == {
        "Resource": "arn:aws:states:::s3:putObject",
        "Parameters": {
            "Bucket": physical("ReportsBucket"),
            "Prefix.$": f"States.Format('runs/{{}}/map/{phase}', $.run_id)",
        },
    }
    assert state["ResultPath"] is None
    # And a failed export is harmless: nothing reads it (Aggregate reads the workers' own result objects), so
    # States.ResultWriterFailed, caught before States.ALL, goes on exactly as success does (ResultPath null, the
    # same Next); any other failure of the map still skips to Aggregate
    after = state["Next"]
    assert state["Catch"] == [
        {"ErrorEquals": ["States.ResultWriterFailed"], "ResultPath": None, "Next": after},
        {"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": "Aggregate"},
    ]


BATCH_INPUT_KEYS = {"run_id", "bucket", "manifest_key", "phase", "round"}


@pytest.mark.parametrize(("map_name", "prefix"), [("ApplyTargets", "Apply"), ("RevokeTargets", "Revoke")])
@pytest.mark.parametrize("max_rounds", ["1", "3", "10"])
def test_a_batch_loops_for_its_incomplete_targets_at_most_max_rounds_and_falls_back_to_one_invocation_each(
    map_name, prefix, max_rounds
):
    # Given the item processor of a map, deployed with a MaxRounds
    processor = definition(MaxRounds=max_rounds)["States"][map_name]["ItemProcessor"]
    states = processor["States"]
    worker = states[processor["StartAt"]]
    choice = states[worker["Next"]]

    # Then the batch's worker is the target worker function given the batch, retried on Lambda's errors with backoff
    # and jitter; a choice runs it again for the batch's incomplete targets (Items = incomplete_targets, round + 1)
    # only while some target is incomplete and round < MaxRounds, and otherwise the batch succeeds
    assert processor["StartAt"] == f"{prefix}Batch"
    assert worker["Resource"] == LAMBDA_INVOKE
    assert worker["Parameters"] == {"FunctionName": function_arn("ScanTargetFunction"), "Payload.$": "$"}
    assert worker["OutputPath"] == "$.Payload"
    _retry_covers_lambda_errors(worker, backoff=True)
    (rule,) = choice["Choices"]
    assert rule["And"] == [
        {"Variable": "$.status", "StringEquals": "incomplete"},
        {"Variable": "$.BatchInput.round", "NumericLessThan": int(max_rounds)},
    ]
    again = states[rule["Next"]]
    assert again["Type"] == "Pass" and again["Next"] == processor["StartAt"]
    assert again["Parameters"]["Items.$"] == "$.incomplete_targets"
    assert again["Parameters"]["BatchInput"]["round.$"] == "States.MathAdd($.BatchInput.round, 1)"
    assert {k.removesuffix(".$") for k in again["Parameters"]["BatchInput"]} == BATCH_INPUT_KEYS
    assert states[choice["Default"]]["Type"] == "Succeed"

    # And a batched invocation that fails (after its retries) is caught into an inline Map over the batch's Items,
    # one invocation at a time with each target's single input at the batch's round, each target looping on its
    # own rounds; a target's failure ends its iteration in a Pass (an inline Map would fail whole), and the batch's
    # child execution then fails with the batched invocation's error
    (catcher,) = worker["Catch"]
    assert catcher == {"ErrorEquals": ["States.ALL"], "ResultPath": "$.batch_error", "Next": f"{prefix}EachTarget"}
    each = states[f"{prefix}EachTarget"]
    assert each["Type"] == "Map" and each["ItemProcessor"]["ProcessorConfig"] == {"Mode": "INLINE"}
    assert each["ItemsPath"] == "$.Items" and each["MaxConcurrency"] == 1 and each["ResultPath"] is None
    assert {k.removesuffix(".$") for k in each["ItemSelector"]} == WORKER_INPUT_KEYS | {"skip_if_done"}
    assert each["ItemSelector"]["skip_if_done"] is True  # what the batch already wrote is not run again
    assert each["ItemSelector"]["target.$"] == "$$.Map.Item.Value"
    assert each["ItemSelector"]["round.$"] == "$.BatchInput.round"
    failed = states[each["Next"]]
    assert failed == {
        "Type": "Fail",
        "Comment": failed["Comment"],
        "ErrorPath": "$.batch_error.Error",
        "CausePath": "$.batch_error.Cause",
    }
    inner = each["ItemProcessor"]["States"]
    single = inner[each["ItemProcessor"]["StartAt"]]
    assert single["Parameters"] == {"FunctionName": function_arn("ScanTargetFunction"), "Payload.$": "$"}
    _retry_covers_lambda_errors(single, backoff=True)
    (caught,) = single["Catch"]
    assert caught["ErrorEquals"] == ["States.ALL"]
    assert inner[caught["Next"]]["Type"] == "Pass" and inner[caught["Next"]]["End"] is True
    (single_rule,) = inner[single["Next"]]["Choices"]
    assert single_rule["And"] == [
        {"Variable": "$.status", "StringEquals": "incomplete"},
        {"Variable": "$.round", "NumericLessThan": int(max_rounds)},
    ]
    single_again = inner[single_rule["Next"]]
    assert single_again["Parameters"]["round.$"] == "States.MathAdd($.round, 1)"
    assert {k.removesuffix(".$") for k in single_again["Parameters"]} == WORKER_INPUT_KEYS


# ---------------------------------------------------------------- behaviour (the definition run with fake steps)


class FakeSteps:
    """The three functions as fakes following the contract of functions/plan, scan_target and aggregate. The worker
    takes a batch as fanout/batch.py does (each target in turn; a target's exception is its own error, a Lambda error
    such as throttling fails the invocation) or one target's input; `worker(single input)` says each target's status,
    `batch_fails(batch)` makes a batched invocation fail as a whole (killed, out of memory)."""

    def __init__(self, targets: list[dict], revoke: bool = False, worker=None, batch_fails=None):
        self.targets, self.revoke = targets, revoke
        self.worker = worker or (lambda payload: "ok")
        self.batch_fails = batch_fails or (lambda batch: False)
        self.calls: list[tuple[str, dict]] = []
        self.results: list[tuple[str, str, int, str]] = []  # (account/region, phase, round, status) written

    def plan_output(self) -> dict:
        return {
            "run_id": "run-1",
            "job": "scan",
            "bucket": BUCKET,
            "manifest_key": "runs/run-1/manifest.json",
            "targets_key": "runs/run-1/targets.json",
            "targets": len(self.targets),
            "revoke": self.revoke,
        }

    def invoke(self, function: str, payload: dict) -> dict:
        self.calls.append((function, payload))
        if function == function_arn("PlanFunction"):
            return self.plan_output()
        if function == function_arn("AggregateFunction"):
            return {"run_id": payload["run_id"], "summary": {}}
        assert function == function_arn("ScanTargetFunction"), function
        if "Items" in payload:
            return self._batch(payload)
        assert set(payload) - {"skip_if_done"} == WORKER_INPUT_KEYS, payload
        status = self._target(payload)
        return {**payload, "status": status, "instances": 1}

    def _target(self, single: dict) -> str:
        status = self.worker(single)
        target = f"{single['target']['account_id']}/{single['target']['region']}"
        self.results.append((target, single["phase"], single["round"], status))
        return status

    def _batch(self, batch: dict) -> dict:
        assert set(batch) == {"Items", "BatchInput"} and set(batch["BatchInput"]) == BATCH_INPUT_KEYS, batch
        if self.batch_fails(batch):
            raise MemoryError("batch invocation killed")
        statuses, incomplete = [], []
        for item in batch["Items"]:
            single = {**batch["BatchInput"], "target": item}
            try:
                status = self._target(single)
            except Throttled:
                raise
            except Exception:  # noqa: BLE001 - fanout/batch.py: the target's error, written as its result
                status = "error"
                self.results.append(
                    (f"{item['account_id']}/{item['region']}", single["phase"], single["round"], status)
                )
            statuses.append(status)
            if status == "incomplete":
                incomplete.append(item)
        overall = "incomplete" if incomplete else "error" if "error" in statuses else "ok"
        return {"BatchInput": batch["BatchInput"], "status": overall, "incomplete_targets": incomplete}

    def worker_calls(self) -> list[dict]:
        """Every target's worker run, as its single input (a batch's targets one by one)."""
        singles = []
        for function, payload in self.calls:
            if function != function_arn("ScanTargetFunction"):
                continue
            if "Items" in payload:
                singles += [{**payload["BatchInput"], "target": item} for item in payload["Items"]]
            else:
                singles.append(payload)
        return singles

    def invocations(self) -> list[dict]:
        return [p for f, p in self.calls if f == function_arn("ScanTargetFunction")]


class FakeS3:
    """The ItemReader's and ResultWriter's S3 (the targets object Plan wrote, the map results)."""

    def __init__(self, targets: list[dict] | None):
        self.objects = {} if targets is None else {"runs/run-1/targets.json": json.dumps(targets).encode()}

    def get_object(self, Bucket: str, Key: str) -> dict:  # boto3's parameter names
        assert Bucket == BUCKET
        return {"Body": _Body(self.objects[Key])}

    def put_object(self, Bucket: str, Key: str, Body: bytes) -> dict:
        assert Bucket == BUCKET
        self.objects[Key] = Body
        return {}


class _Body:
    def __init__(self, data: bytes):
        self.data = data

    def read(self) -> bytes:
        return self.data


TARGETS = [
    {"account_id": "111111111111", "region": "us-east-1"},
    {"account_id": "111111111111", "region": "eu-west-1"},
    {"account_id": "222222222222", "region": "us-east-1"},
]


def execute(steps: FakeSteps, targets: list[dict] | None = TARGETS, **overrides: str) -> tuple[Execution, dict]:
    execution = Execution(definition(**overrides), steps.invoke, FakeS3(targets))
    return execution, execution.run({"job": "scan"})


@pytest.mark.parametrize(("batch", "sizes"), [("25", [3]), ("2", [2, 1]), ("1", [1, 1, 1])])
def test_each_batch_of_targets_gets_one_worker_with_the_contract_input_and_aggregate_gets_the_plan_output(batch, sizes):
    # Given three targets, all finishing in one round, nothing to revoke
    steps = FakeSteps(TARGETS)

    # When the definition runs with a MaxItemsPerBatch
    _, output = execute(steps, MaxItemsPerBatch=batch)

    # Then Plan got the execution input, each batch of at most MaxItemsPerBatch targets one apply worker invocation
    # (Items and the BatchInput they share), Aggregate the Plan output (the maps' results do not replace it), and the
    # execution's output is Aggregate's
    functions = [f for f, _ in steps.calls]
    assert steps.calls[0] == (function_arn("PlanFunction"), {"job": "scan"})
    assert [len(b["Items"]) for b in steps.invocations()] == sizes
    shared = {"run_id": "run-1", "bucket": BUCKET, "manifest_key": "runs/run-1/manifest.json"}
    assert all(b["BatchInput"] == {**shared, "phase": "apply", "round": 1} for b in steps.invocations())
    assert steps.worker_calls() == [
        {
            "run_id": "run-1",
            "bucket": BUCKET,
            "manifest_key": "runs/run-1/manifest.json",
            "target": target,
            "phase": "apply",
            "round": 1,
        }
        for target in TARGETS
    ]
    assert functions[-1] == function_arn("AggregateFunction")
    assert steps.calls[-1][1] == steps.plan_output()
    assert output == {"run_id": "run-1", "summary": {}}


@pytest.mark.parametrize("max_rounds", [1, 3])
def test_an_incomplete_target_runs_again_with_the_next_round_until_max_rounds(max_rounds):
    # Given a worker that always runs out of time for the first target, and finishes the others at once
    steps = FakeSteps(TARGETS, worker=lambda p: "incomplete" if p["target"] == TARGETS[0] else "ok")

    # When the definition runs with MaxRounds (the three targets in one batch)
    execute(steps, MaxRounds=str(max_rounds))

    # Then the first target was run in rounds 1..MaxRounds (then left incomplete, as its result says), the others
    # once: the batch's next rounds carry only its incomplete target
    rounds = [(tuple(p["target"].values()), p["round"]) for p in steps.worker_calls()]
    first = tuple(TARGETS[0].values())
    assert [r for t, r in rounds if t == first] == list(range(1, max_rounds + 1))
    assert [r for t, r in rounds if t != first] == [1, 1]
    assert [b["Items"] for b in steps.invocations()] == [TARGETS] + [[TARGETS[0]]] * (max_rounds - 1)


def test_a_target_finishing_in_round_two_stops_there():
    # Given a worker that needs two rounds for every target
    steps = FakeSteps(TARGETS, worker=lambda p: "incomplete" if p["round"] == 1 else "ok")

    # When the definition runs with the default MaxRounds (3)
    execute(steps)

    # Then every target ran exactly rounds 1 and 2
    assert sorted(p["round"] for p in steps.worker_calls()) == [1, 1, 1, 2, 2, 2]


def test_state_transitions_per_batch_are_four_and_three_per_extra_round():
    # Given six targets in batches of three, the first batch needing a second round for one target
    targets = TARGETS + [{"account_id": "333333333333", "region": r} for r in ("us-east-1", "eu-west-1", "sa-east-1")]
    steps = FakeSteps(targets, worker=lambda p: "incomplete" if p["target"] == TARGETS[0] and p["round"] == 1 else "ok")

    # When the definition runs
    execution, _ = execute(steps, targets=targets, MaxItemsPerBatch="3")

    # Then each child execution entered its batch worker, the round choice and the success (3 states), the first one
    # 3 more for its second round (Pass, worker, choice): what benchmarks/sfn_cost.py counts from the definition
    entered = [e[1] for e in execution.events if e[0] == "enter"]
    assert entered.count("ApplyBatch") == 3 and entered.count("ApplyRoundCheck") == 3
    assert entered.count("ApplyNextRound") == 1 and entered.count("ApplyDone") == 2
    children = [e for e in execution.events if e[0] == "child"]
    assert len(children) == 2
    # And the cost benchmark's walk of the definition counts exactly these entries (+1 per child execution's start)
    counted = sfn_cost.count_map("ApplyTargets", definition(MaxItemsPerBatch="3")["States"]["ApplyTargets"])
    batch_states = {"ApplyBatch", "ApplyRoundCheck", "ApplyNextRound", "ApplyDone"}
    in_children = sum(1 for e in execution.events if e[0] == "enter" and e[1] in batch_states)
    assert len(children) * counted.per_child_one_round + counted.per_extra_round == len(children) + in_children
    assert (counted.items_per_child, counted.per_child_one_round, counted.per_extra_round) == (3, 4, 3)


def test_every_addition_happens_before_any_revoke_and_only_when_plan_says_so():
    # Given a plan with expired prefixes to revoke
    steps = FakeSteps(TARGETS, revoke=True)

    # When the definition runs
    execute(steps)

    # Then every target's apply phase ran before the first revoke phase, each target had one of each, and Aggregate
    # came last
    phases = [p["phase"] for p in steps.worker_calls()]
    assert phases == ["apply"] * 3 + ["revoke"] * 3
    assert [p["target"] for p in steps.worker_calls() if p["phase"] == "revoke"] == TARGETS
    assert steps.calls[-1][0] == function_arn("AggregateFunction")
    # ... and without expired prefixes there is no revoke phase at all
    quiet = FakeSteps(TARGETS, revoke=False)
    execute(quiet)
    assert {p["phase"] for p in quiet.worker_calls()} == {"apply"}


class Throttled(Exception):
    error = "Lambda.TooManyRequestsException"


def test_a_throttled_batch_is_retried_and_a_target_that_raises_is_only_its_own_error():
    # Given a worker throttled once for the batch and raising for the third target
    seen: dict[str, int] = {}

    def worker(payload: dict) -> str:
        key = json.dumps(payload["target"])
        seen[key] = seen.get(key, 0) + 1
        if payload["target"] == TARGETS[1] and seen[key] == 1:
            raise Throttled("Rate exceeded")
        if payload["target"] == TARGETS[2]:
            raise RuntimeError("bad item")
        return "ok"

    steps = FakeSteps(TARGETS, revoke=True, worker=worker)

    # When the definition runs
    execution, output = execute(steps)

    # Then the throttled invocation was retried, the raising target is its own error (its result written), the
    # others ok, the batch succeeded without the fallback, the revoke phase and Aggregate still ran
    assert ("retry", "ApplyBatch", "Lambda.TooManyRequestsException") in execution.events
    last = {target: status for target, phase, _, status in steps.results if phase == "apply"}
    assert last == {"111111111111/us-east-1": "ok", "111111111111/eu-west-1": "ok", "222222222222/us-east-1": "error"}
    assert ("enter", "ApplyEachTarget") not in execution.events
    assert ("map-done", "ApplyTargets", 1, 0) in execution.events
    assert [p["phase"] for p in steps.worker_calls()].count("revoke") == 3
    assert output == {"run_id": "run-1", "summary": {}}


def test_a_batch_invocation_that_fails_runs_its_targets_one_by_one_each_with_its_own_result_or_error():
    # Given a batched invocation killed as a whole, and a worker that crashes for the third target on its own too
    def worker(payload: dict) -> str:
        if payload["target"] == TARGETS[2]:
            raise RuntimeError("killed")
        return "incomplete" if payload["target"] == TARGETS[0] and payload["round"] == 1 else "ok"

    steps = FakeSteps(
        TARGETS, revoke=True, worker=worker, batch_fails=lambda batch: batch["BatchInput"]["phase"] == "apply"
    )

    # When the definition runs
    execution, output = execute(steps)

    # Then each target of the failed batch ran in its own invocation (the single input, the batch's round), one
    # after the other: the first continued into its round 2, the second finished, the third's failure ended only
    # its iteration; the batch's child execution failed (tolerated) with the batch's error, the revoke phase and
    # Aggregate still ran
    singles = [p for p in steps.invocations() if "Items" not in p and p["phase"] == "apply"]
    assert [(p["target"], p["round"]) for p in singles] == [
        (TARGETS[0], 1),
        (TARGETS[0], 2),
        (TARGETS[1], 1),
        (TARGETS[2], 1),
    ]
    assert ("caught", "ApplyBatch", "MemoryError") in execution.events
    assert ("caught", "ApplyTarget", "RuntimeError") in execution.events
    assert ("child-failed", "ApplyTargets", 0, "MemoryError") in execution.events
    assert ("map-done", "ApplyTargets", 1, 1) in execution.events
    revoked = [p["target"] for p in steps.worker_calls() if p["phase"] == "revoke" and p["round"] == 1]
    assert revoked == TARGETS
    assert output == {"run_id": "run-1", "summary": {}}


def test_an_unreadable_target_list_skips_the_revoke_but_still_aggregates():
    # Given a plan asking for a revoke, and a target list the map cannot read
    steps = FakeSteps(TARGETS, revoke=True)

    # When the definition runs
    execution, output = execute(steps, targets=None)

    # Then no worker ran, the revoke map was skipped (no revoke without every addition), Aggregate got the Plan output
    assert steps.worker_calls() == []
    assert ("caught", "ApplyTargets", "States.ItemReaderFailed") in execution.events
    assert ("enter", "RevokeTargets") not in execution.events
    assert steps.calls[-1] == (function_arn("AggregateFunction"), steps.plan_output())
    assert output["run_id"] == "run-1"


class RefusingMapResults(FakeS3):
    """An S3 that refuses every object under runs/<run id>/map/ (a bucket policy or a throttled prefix, say)."""

    def put_object(self, Bucket: str, Key: str, Body: bytes) -> dict:
        if "/map/" in Key:
            raise RuntimeError("AccessDenied: PutObject")
        return super().put_object(Bucket, Key, Body)


def test_each_map_exports_its_results_under_the_runs_own_map_prefix():
    # Given a plan with expired prefixes to revoke
    steps, s3 = FakeSteps(TARGETS, revoke=True), FakeS3(TARGETS)

    # When the definition runs
    execution = Execution(definition(), steps.invoke, s3)
    execution.run({"job": "scan"})

    # Then each map wrote its children's outputs (one batch of 3 each) and a manifest under runs/run-1/map/<phase>/,
    # resolved from the state input (the run id Plan returned), and not into the state's payload
    for phase in ("apply", "revoke"):
        keys = [k for k in s3.objects if k.startswith(f"runs/run-1/map/{phase}/")]
        assert sorted(k.rsplit("/", 1)[1] for k in keys) == ["FAILED_0.json", "SUCCEEDED_0.json", "manifest.json"]
        (succeeded,) = [k for k in keys if k.endswith("SUCCEEDED_0.json")]
        assert len(json.loads(s3.objects[succeeded])) == 1
    assert steps.calls[-1] == (function_arn("AggregateFunction"), steps.plan_output())


def test_a_failed_result_export_is_harmless_the_revoke_and_aggregate_run_as_on_success():
    # Given a plan with expired prefixes to revoke, and an S3 refusing the map results
    steps = FakeSteps(TARGETS, revoke=True)

    # When the definition runs
    execution = Execution(definition(), steps.invoke, RefusingMapResults(TARGETS))
    output = execution.run({"job": "scan"})

    # Then both maps' exports failed with States.ResultWriterFailed, each was caught and went on as success does:
    # every target's revoke phase still ran after every apply phase, and Aggregate got the Plan output
    assert ("caught", "ApplyTargets", "States.ResultWriterFailed") in execution.events
    assert ("caught", "RevokeTargets", "States.ResultWriterFailed") in execution.events
    assert [p["phase"] for p in steps.worker_calls()] == ["apply"] * 3 + ["revoke"] * 3
    assert steps.calls[-1] == (function_arn("AggregateFunction"), steps.plan_output())
    assert output == {"run_id": "run-1", "summary": {}}


def test_a_failed_plan_fails_the_execution():
    # Given a plan step that fails
    def invoke(function: str, payload: dict) -> dict:
        raise RuntimeError("no plan")

    # When the definition runs, Then the execution fails (ExecutionsFailed: ErrorsAlarm)
    with pytest.raises(StateFailed, match="RuntimeError"):
        Execution(definition(), invoke, FakeS3(TARGETS)).run({"job": "scan"})


# ---------------------------------------------------------------- its role and its schedule


def state_machine_statements(**overrides: str) -> list[dict]:
    return render(parameter_values(**overrides)).role_statements(f"{STATE_MACHINE_ID}Role")


def test_the_state_machine_role_invokes_the_three_steps_and_touches_only_the_runs_objects():
    # Given the role SAM renders for the state machine (its own Policies and the Distributed Map's RolePolicy)
    statements = state_machine_statements()
    stack = render(parameter_values())
    name = stack.physical(STATE_MACHINE_ID, "Name")
    arn = stack.physical(STATE_MACHINE_ID)
    runs = f"{physical('ReportsBucket', 'Arn')}/runs/*"
    map_results = f"{physical('ReportsBucket', 'Arn')}/runs/*/map/*"

    # When each action is mapped to the resources it is granted on
    granted: dict[str, set[str]] = {}
    for statement in statements:
        assert statement["Effect"] == "Allow" and "Condition" not in statement
        for action in as_list(statement["Action"]):
            granted.setdefault(action, set()).update(as_list(statement["Resource"]))

    # Then it may invoke exactly the three functions; read the target list under runs/ only; write the map results
    # (with the multipart-upload actions AWS documents for ResultWriter) under runs/*/map/ only; start child
    # executions of itself
    # and describe/stop them (AWS's documented Distributed Map policy); deliver its ERROR log and write traces (the
    # vended-logs and X-Ray actions, which accept no resource); and nothing else
    functions = {function_arn(f) for f in ("PlanFunction", "ScanTargetFunction", "AggregateFunction")}
    delivery = {a for a in granted if a.startswith(("logs:", "xray:"))}
    assert {a: granted.pop(a) for a in delivery} == {a: {"*"} for a in delivery}
    assert delivery == {*STATE_MACHINE_LOG_DELIVERY, *STATE_MACHINE_TRACES}
    assert granted == {
        "lambda:InvokeFunction": functions,
        "s3:GetObject": {runs},
        "s3:PutObject": {map_results},
        "s3:AbortMultipartUpload": {map_results},
        "s3:ListMultipartUploadParts": {map_results},
        "states:StartExecution": {arn},
        "states:DescribeExecution": {f"arn:aws:states:eu-west-3:123456789012:execution:{name}/*"},
        "states:StopExecution": {f"arn:aws:states:eu-west-3:123456789012:execution:{name}/*"},
    }
    assert allowed_actions(statements) == set(granted) | delivery


def test_the_state_machine_logs_its_errors_without_execution_data_traces_and_times_out():
    # Given the state machine as rendered, and its definition
    stack = render(parameter_values())
    properties = stack.resources[STATE_MACHINE_ID]["Properties"]
    definition = load_definition(stack)

    # Then failures go to CloudWatch Logs (ERROR level, no execution input or output: they name every account and
    # instance) in a log group that expires, X-Ray traces every execution, and a run ends after 20 hours at most
    # (before the next night's; ExecutionsTimedOut is in the errors alarm)
    assert properties["LoggingConfiguration"]["Level"] == "ERROR"
    assert properties["LoggingConfiguration"]["IncludeExecutionData"] is False
    [destination] = properties["LoggingConfiguration"]["Destinations"]
    assert destination["CloudWatchLogsLogGroup"]["LogGroupArn"] == stack.physical("EicGuardStateMachineLogGroup", "Arn")
    assert stack.resources["EicGuardStateMachineLogGroup"]["Properties"]["RetentionInDays"] == "30"
    assert properties["TracingConfiguration"] == {"Enabled": True}
    assert definition["TimeoutSeconds"] == 72000


@pytest.mark.parametrize("concurrency", ["1", "40", "250"])
def test_the_worker_reserves_exactly_the_maps_concurrency(concurrency):
    # Given a MaxConcurrency
    stack = render(parameter_values(MaxConcurrency=concurrency))

    # Then the worker's reserved concurrency is that number: the map never runs more workers at once, and a busy
    # account cannot starve the fan-out
    assert stack.resources["ScanTargetFunction"]["Properties"]["ReservedConcurrentExecutions"] == concurrency
    assert str(load_definition(stack)["States"]["ApplyTargets"]["MaxConcurrency"]) == concurrency


def test_the_substitutions_name_this_stacks_functions_bucket_and_numbers():
    # Given the substitutions as rendered for some parameter values
    values = substitutions(render(parameter_values(MaxConcurrency="250", MaxRounds="5", MaxItemsPerBatch="10")))

    # Then they name this stack's three functions and reports bucket, and the three numbers
    assert values == {
        "PlanFunctionArn": function_arn("PlanFunction"),
        "ScanTargetFunctionArn": function_arn("ScanTargetFunction"),
        "AggregateFunctionArn": function_arn("AggregateFunction"),
        "ReportsBucket": physical("ReportsBucket"),
        "MaxConcurrency": "250",
        "MaxRounds": "5",
        "MaxItemsPerBatch": "10",
    }


@pytest.mark.parametrize(
    ("parameter", "minimum", "maximum", "default"),
    [("MaxConcurrency", 1, 10000, 40), ("MaxRounds", 1, 10, 3), ("MaxItemsPerBatch", 1, 100, 25)],
)
def test_fan_out_parameters_are_bounded_numbers(parameter, minimum, maximum, default):
    # Given the parameter
    spec = template()["Parameters"][parameter]

    # Then it is a number within the Distributed Map's limits (MaxConcurrency) or a small bound (MaxRounds)
    assert (spec["Type"], spec["MinValue"], spec["MaxValue"], spec["Default"]) == ("Number", minimum, maximum, default)


def test_the_nightly_schedule_starts_the_state_machine_with_the_scan_job():
    # Given the state machine's events, and the schedule and its role as SAM renders them
    events = resources()[STATE_MACHINE_ID]["Properties"]["Events"]
    stack = render(parameter_values())
    schedule = stack.resources[f"{STATE_MACHINE_ID}Nightly"]["Properties"]
    scheduler_role = stack.role_statements("NightlyScheduleRole")
    trust = stack.resources["NightlyScheduleRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]

    # Then one ScheduleV2 event, driven by the schedule parameters (nightly by default), with retries, starts the
    # state machine with {"job": "scan"}; the scheduler's role may only start this state machine
    (event,) = events.values()
    assert event["Type"] == "ScheduleV2"
    properties = event["Properties"]
    assert properties["ScheduleExpression"] == {"Ref": "ScheduleExpression"}
    assert properties["ScheduleExpressionTimezone"] == {"Ref": "ScheduleExpressionTimezone"}
    assert properties["State"] == {"Ref": "ScheduleState"}
    assert json.loads(properties["Input"]) == {"job": "scan"}
    assert properties["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    assert template()["Parameters"]["ScheduleExpression"]["Default"] == "cron(0 3 * * ? *)"
    assert schedule["Target"]["Arn"] == stack.physical(STATE_MACHINE_ID)
    assert json.loads(schedule["Target"]["Input"]) == {"job": "scan"}
    # ... with its own role, which only this account's scheduler may assume for this schedule, and which may only
    # start this state machine and hand an undeliverable start to the event delivery dead-letter queue
    dead_letters = stack.physical("EventDeliveryDeadLetterQueue", "Arn")
    assert schedule["Target"]["RoleArn"] == stack.physical("NightlyScheduleRole", "Arn")
    assert schedule["Target"]["DeadLetterConfig"] == {"Arn": dead_letters}
    account, region = stack.pseudo["AWS::AccountId"], stack.pseudo["AWS::Region"]
    assert [s["Condition"] for s in trust] == [
        {
            "StringEquals": {"aws:SourceAccount": account},
            "ArnEquals": {
                "aws:SourceArn": f"arn:aws:scheduler:{region}:{account}:schedule/default/eic-guard-nightly-scan"
            },
        }
    ]
    assert {a: r for s in scheduler_role for a in as_list(s["Action"]) for r in as_list(s["Resource"])} == {
        "states:StartExecution": stack.physical(STATE_MACHINE_ID),
        "sqs:SendMessage": dead_letters,
    }
    assert schedule["Name"] == "eic-guard-nightly-scan"


def test_the_stack_scans_once_when_it_is_created_and_not_at_an_update():
    # Given the first-run rule, and CloudFormation's stack status events of this stack
    stack = render(parameter_values())
    rule = stack.resources["FirstRunRule"]["Properties"]
    created = json.loads((ROOT / "events" / "cloudformation-stack-create-complete.json").read_text())
    updated = {**created, "detail": {**created["detail"], "status-details": {"status": "UPDATE_COMPLETE"}}}
    other_stack = {**created, "detail": {**created["detail"], "stack-id": created["detail"]["stack-id"] + "x"}}

    # Then the rule takes this stack's CREATE_COMPLETE only and starts the scan job with its own role, retrying, and
    # dead-letters a start it cannot make
    assert matches(rule["EventPattern"], created)
    assert not matches(rule["EventPattern"], updated)
    assert not matches(rule["EventPattern"], other_stack)
    [target] = rule["Targets"]
    assert target["Arn"] == stack.physical(STATE_MACHINE_ID)
    assert json.loads(target["Input"]) == {"job": "scan"}
    assert target["RoleArn"] == stack.physical("FirstRunRuleRole", "Arn")
    assert target["DeadLetterConfig"] == {"Arn": stack.physical("EventDeliveryDeadLetterQueue", "Arn")}
    assert stack.role_statements("FirstRunRuleRole") == [
        {
            "Sid": "StartScanJob",
            "Effect": "Allow",
            "Action": "states:StartExecution",
            "Resource": stack.physical(STATE_MACHINE_ID),
        }
    ]
