"""The deployed state machine, executed: statemachine/eic_guard.asl.json rendered with template.yaml's
DefinitionSubstitutions, created in moto's Step Functions engine (a port of LocalStack's ASL interpreter, enabled by
`mock_aws(config={"stepfunctions": {"execute_state_machine": True}})`), its Lambda tasks routed to the real handlers
in-process, each with its function's template environment and a Lambda context of its template Timeout.

How it hooks into moto 5.2.5 (moto/stepfunctions/parser/...), each in ONE place below:

- Lambda tasks: the engine calls `lambda_eval_utils._invoke_lambda_function(parameters, region, credentials)` for
  `arn:aws:states:::lambda:invoke`; `StateMachine._invoke` replaces it. The function ARN names the template function
  (PlanFunction, ScanTargetFunction, AggregateFunction); its handler (functions/<CodeUri>/app.py) is loaded once per
  test, as a warm container would be. A handler that raises answers as Lambda does (`FunctionError: Unhandled`,
  `{"errorType", "errorMessage"}`), which the engine maps to the error name Retry/Catch match; `throttle()` makes the
  Invoke API itself refuse (TooManyRequestsException -> `Lambda.TooManyRequestsException`).
  Invocations are serialized (one lock): the engine runs Map items in threads, the handlers share this process's
  os.environ (each invocation sees exactly its function's variables) and Powertools' globals.
- Waits: the engine's Retry sleeps `IntervalSeconds` with `time.sleep`; the harness records each interval in
  `waits` instead of sleeping (the definition has no Wait state).
- Completion: `StartExecution` runs the execution in a thread (as the service runs it asynchronously); the harness
  keeps each execution's thread and joins it (`wait`), so a test never polls or sleeps.

Where moto's interpreter departs from the service (the ONLY place the definition and the engine are adapted:
`_for_moto` and `_for_moto_engine`, next to each other at the end of this file):

- An integer `ToleratedFailurePercentage` (ours is 100) is rejected at creation by moto's grammar (it wants a
  decimal number). The service takes "a number from zero to 100" (Step Functions Developer Guide, "Distributed Map
  state ... failure threshold",
  https://docs.aws.amazon.com/step-functions/latest/dg/state-map-distributed.html#maprun-fail-threshold): the
  harness writes 100 as 100.0.
- moto never enforces the threshold (a failed item never fails its map run). The service fails the map run only
  above the threshold, which at 100 % never happens: the harness asserts every Map's value is 100, so that the
  departure cannot change an outcome unnoticed.
- moto resolves a ResultWriter's Parameters paths (our `Prefix.$`, from `$.run_id`) against the map's results
  instead of the state input, and reports a failed write as `States.Runtime`. The service resolves them against the
  state input, as every other field of the state, and names a failed export `States.ResultWriterFailed` (Step
  Functions Developer Guide, "ResultWriter (Map)",
  https://docs.aws.amazon.com/step-functions/latest/dg/input-output-resultwriter.html, and "Distributed Map
  state", https://docs.aws.amazon.com/step-functions/latest/dg/state-map-distributed.html). `_for_moto_engine`
  evaluates moto's ResultWriter with the state input on its stack and re-raises a failed write as
  `States.ResultWriterFailed`; the definition itself is not changed for it, so the real prefix is what is written.

- moto 5.2.5's States Language grammar has no `ItemBatcher` (it rejects the definition at creation). The service
  groups a Distributed Map's items into batches of at most `MaxItemsPerBatch` and starts one child execution per
  batch with the input `{"BatchInput": <BatchInput, its paths resolved against the state input>, "Items": [...]}`
  (Step Functions Developer Guide, "ItemBatcher (Map)",
  https://docs.aws.amazon.com/step-functions/latest/dg/input-output-itembatcher.html). `_for_moto` takes each
  Map's ItemBatcher out of the definition it creates in moto (keeping it by state name), and `_for_moto_engine`
  groups the items the map's ItemReader read into exactly those batch inputs before moto starts the child
  executions; the definition's own ItemBatcher is what is applied.

Parsing the definition costs ~0.05 s per CreateStateMachine/StartExecution, so nothing is cached.
"""

from __future__ import annotations

import json
import os
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ClientError
from moto.core.config import default_user_config
from moto.stepfunctions.parser.api import HistoryEventType, MapRunFailedEventDetails
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEvent, FailureEventException
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import StatesErrorNameType
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.distributed_iteration_component import (
    DistributedIterationComponent,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.result_writer.result_writer_decl import ResultWriter
from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

from tests.conftest import REGION
from tests.lambda_runtime import FakeLambdaContext, load_handler
from tests.template import asl, cfn

STATE_MACHINE_ID = asl.STATE_MACHINE_ID
# The functions the definition invokes, by the substitution that names them.
TASK_FUNCTIONS = {
    "PlanFunctionArn": "PlanFunction",
    "ScanTargetFunctionArn": "ScanTargetFunction",
    "AggregateFunctionArn": "AggregateFunction",
}
# Variables of the test's own process (moto's fake credentials, region, Powertools switches) every invocation keeps.
RUNTIME_PREFIXES = ("AWS_", "POWERTOOLS_TRACE_DISABLED", "POWERTOOLS_DEV")
SERVICE_TOLERATED_FAILURE_PERCENTAGE = 100
EXECUTION_TIMEOUT = 120  # seconds a test waits for an execution's thread before it fails, never silently


@dataclass
class Invocation:
    """One Lambda invocation the engine (or the test) made: the function's logical id, its event, and what it
    returned or raised."""

    function: str
    event: Any
    output: Any = None
    error: BaseException | None = None


@dataclass
class Run:
    """A finished execution as DescribeExecution reports it."""

    arn: str
    status: str
    output: Any
    error: str | None
    cause: str | None


@dataclass
class StateMachine:
    """The stack's state machine in moto; `context_for(function, event)` may return the Lambda context of an
    invocation (None: the template's own, with a fresh request id)."""

    parameters: dict[str, str] = field(default_factory=dict)
    context_for: Callable[[str, Any], FakeLambdaContext | None] | None = None
    invocations: list[Invocation] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)

    def __post_init__(self):
        self.stack = cfn.render(cfn.parameter_values(**self.parameters), region=REGION)
        self.arn = self.stack.physical(STATE_MACHINE_ID)
        substitutions = asl.substitutions(self.stack)
        self.functions = {substitutions[key]: logical_id for key, logical_id in TASK_FUNCTIONS.items()}
        self._handlers: dict[str, Callable] = {}
        self._throttled: dict[str, int] = {}
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._plan_request_id: str | None = None
        self.batchers: dict[str, dict] = {}  # the definition's ItemBatcher of each Distributed Map (_for_moto)
        # The harness's own calls (deploy, start, describe, reading alerts and reports) go through a plain botocore
        # session: boto3's sessions are the handlers', which the suite's api_calls recorder watches.
        self._botocore = botocore.session.get_session()

    def client(self, service: str, region: str = REGION) -> Any:
        return self._botocore.create_client(service, region_name=region)

    # ---- deploy ------------------------------------------------------------------------------------------------
    def deploy(self) -> StateMachine:
        """Create the state machine, and the stack's bucket, table and topic the test has not bound itself (a test
        binds a resource by setting its EIC_GUARD_* variable, as it would pass a parameter)."""
        bound = {k for k in os.environ if k.startswith("EIC_GUARD_")}
        defaults = {**self.environment("PlanFunction", bound=False), **self.environment("RefreshFunction", bound=False)}
        if "EIC_GUARD_REPORTS_BUCKET" not in bound:
            self.client("s3").create_bucket(Bucket=defaults["EIC_GUARD_REPORTS_BUCKET"])
        if "EIC_GUARD_STATE_TABLE" not in bound:
            self.client("dynamodb").create_table(
                TableName=defaults["EIC_GUARD_STATE_TABLE"],
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        if "EIC_GUARD_ALERTS_TOPIC_ARN" not in bound:
            self.client("sns").create_topic(Name=defaults["EIC_GUARD_ALERTS_TOPIC_ARN"].rsplit(":", 1)[1])
        try:
            self._alerts_queue = self._subscribe_queue(self.alerts_topic_arn)
        except self.client("sns").exceptions.NotFoundException:  # a test that removed its topic: no alerts to read
            self._alerts_queue = None
        self.client("stepfunctions").create_state_machine(
            name=self.arn.rsplit(":", 1)[1],
            definition=json.dumps(_for_moto(asl.load_definition(self.stack), self.batchers)),
            roleArn=self.stack.physical("EicGuardStateMachineRole", "Arn"),
            type="STANDARD",
        )
        return self

    def environment(self, function: str, bound: bool = True) -> dict[str, str]:
        """The function's template environment; with `bound`, the test's own EIC_GUARD_* values (read when the
        function is invoked) of the variables the template gives that function (a variable the template does not
        give it, it never sees)."""
        variables = self.stack.environment(function)
        if bound:
            settings = {k: v for k, v in os.environ.items() if k.startswith("EIC_GUARD_")}
            variables = {name: settings.get(name, value) for name, value in variables.items()}
        return variables

    @property
    def reports_bucket(self) -> str:
        return self.environment("AggregateFunction")["EIC_GUARD_REPORTS_BUCKET"]

    @property
    def alerts_topic_arn(self) -> str:
        return self.environment("AggregateFunction")["EIC_GUARD_ALERTS_TOPIC_ARN"]

    @property
    def state_table(self) -> str:
        return self.environment("AggregateFunction")["EIC_GUARD_STATE_TABLE"]

    # ---- run ---------------------------------------------------------------------------------------------------
    def start(self, execution_input: Any = None, name: str | None = None) -> str:
        """StartExecution (as the schedule does); returns the execution ARN. None starts without input (`{}`)."""
        kwargs = {"stateMachineArn": self.arn, "name": name or str(uuid.uuid4())}
        if execution_input is not None:
            kwargs["input"] = json.dumps(execution_input)
        return self.client("stepfunctions").start_execution(**kwargs)["executionArn"]

    def wait(self, arn: str) -> Run:
        thread = self._threads.get(arn)
        if thread is not None:
            thread.join(EXECUTION_TIMEOUT)
            assert not thread.is_alive(), f"execution {arn} still running after {EXECUTION_TIMEOUT} s"
        described = self.client("stepfunctions").describe_execution(executionArn=arn)
        return Run(
            arn=arn,
            status=described["status"],
            output=json.loads(described["output"]) if described.get("output") else None,
            error=described.get("error"),
            cause=described.get("cause"),
        )

    def run(self, execution_input: Any = None, name: str | None = None, plan_request_id: str | None = None) -> Run:
        """Start an execution and wait for its end; `plan_request_id`: Plan's request id (the run id)."""
        self._plan_request_id = plan_request_id
        return self.wait(self.start(execution_input, name))

    def executions(self) -> list[str]:
        """Every execution ARN of the state machine, oldest first."""
        listed = self.client("stepfunctions").list_executions(stateMachineArn=self.arn)["executions"]
        return [e["executionArn"] for e in sorted(listed, key=lambda e: e["startDate"])]

    def wait_all(self) -> list[Run]:
        return [self.wait(arn) for arn in self.executions()]

    def alerts(self) -> list[str]:
        """The alerts published to the stack's topic since the last call (read through an SQS subscription)."""
        assert self._alerts_queue, "the alerts topic did not exist when the state machine was deployed"
        sqs = self.client("sqs", self.alerts_topic_arn.split(":")[3])
        messages = sqs.receive_message(QueueUrl=self._alerts_queue, MaxNumberOfMessages=10).get("Messages", [])
        for message in messages:
            sqs.delete_message(QueueUrl=self._alerts_queue, ReceiptHandle=message["ReceiptHandle"])
        return [m["Body"] for m in messages]

    def report(self, run: Run) -> dict:
        """The JSON report a run stored in the reports bucket (the key its summary names)."""
        key = run.output["report_key"]
        body = self.client("s3").get_object(Bucket=self.reports_bucket, Key=f"{key}.json")["Body"].read()
        return json.loads(body)

    def throttle(self, function: str, times: int) -> None:
        """The next `times` Invoke calls of `function` are refused by Lambda (429 TooManyRequestsException)."""
        self._throttled[function] = times

    def outputs(self, function: str) -> list[Any]:
        return [i.output for i in self.invocations if i.function == function and i.error is None]

    def worker_rounds(self) -> list[tuple[int, str]]:
        """(round, status) of each target worker invocation that returned: a batch's (its BatchInput's round, the
        batch's status: `incomplete` while one of its targets is) or one target's."""
        return [(shared(o)["round"], o["status"]) for o in self.outputs("ScanTargetFunction")]

    def failures(self, function: str) -> list[BaseException]:
        return [i.error for i in self.invocations if i.function == function and i.error is not None]

    # ---- Lambda ------------------------------------------------------------------------------------------------
    def invoke(self, function: str, event: Any, context: FakeLambdaContext | None = None) -> Any:
        """Run a template function's handler as Lambda would (its environment, its context); raises what it raises.
        The tests call it for functions no state invokes (the refresh function's SNS event)."""
        with self._lock, self._function_environment(function):
            handler = self._handlers.get(function)
            if handler is None:
                folder = cfn.resources()[function]["Properties"]["CodeUri"].strip("/").split("/")[-1]
                handler = self._handlers[function] = load_handler(folder, f"eic_guard_{folder}_app_sfn")
            invocation = Invocation(function, json.loads(json.dumps(event)))
            self.invocations.append(invocation)
            try:
                invocation.output = handler(event, context or self._context(function, event))
            except BaseException as exc:
                invocation.error = exc
                raise
            return invocation.output

    def _context(self, function: str, event: Any) -> FakeLambdaContext:
        chosen = self.context_for(function, event) if self.context_for else None
        if chosen is not None:
            return chosen
        properties = self.stack.resources[function]["Properties"]
        request_id = str(uuid.uuid4())
        if function == "PlanFunction" and self._plan_request_id:
            request_id, self._plan_request_id = self._plan_request_id, None
        return FakeLambdaContext(
            function_name=self.stack.physical(function),
            memory_limit_in_mb=int(properties["MemorySize"]),
            invoked_function_arn=self.stack.physical(function, "Arn"),
            aws_request_id=request_id,
            remaining_ms=int(properties["Timeout"]) * 1000,
        )

    @contextmanager
    def _function_environment(self, function: str) -> Iterator[None]:
        saved = dict(os.environ)
        runtime = {k: v for k, v in saved.items() if k.startswith(RUNTIME_PREFIXES)}
        variables = self.environment(function)
        os.environ.clear()
        os.environ.update({**runtime, **variables})
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def _invoke(self, parameters: dict, region: str, state_credentials: Any) -> dict:
        """moto's `_invoke_lambda_function`: the Invoke API's response for the engine."""
        function = self.functions[parameters["FunctionName"]]
        if self._throttled.get(function):
            self._throttled[function] -= 1
            raise ClientError(
                {
                    "Error": {"Code": "TooManyRequestsException", "Message": "Rate Exceeded."},
                    "ResponseMetadata": {"HTTPStatusCode": 429, "RequestId": str(uuid.uuid4())},
                },
                "Invoke",
            )
        event = json.loads(parameters.get("Payload") or b"{}")
        try:
            output = self.invoke(function, event)
        except Exception as exc:  # noqa: BLE001 - Lambda reports the handler's exception as the function's error
            payload = {
                "errorType": type(exc).__name__,
                "errorMessage": str(exc),
                "stackTrace": traceback.format_exception(exc)[-3:],
            }
            return {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": payload}
        return {"StatusCode": 200, "Payload": json.loads(json.dumps(output)), "ExecutedVersion": "$LATEST"}

    def _subscribe_queue(self, topic_arn: str) -> str:
        sns, sqs = self.client("sns", topic_arn.split(":")[3]), self.client("sqs", topic_arn.split(":")[3])
        queue_url = sqs.create_queue(QueueName=f"alerts-read-by-the-test-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
        sns.subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=attributes["QueueArn"],
            Attributes={"RawMessageDelivery": "true"},
        )
        return queue_url

    # ---- moto hooks --------------------------------------------------------------------------------------------
    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(lambda_eval_utils, "_invoke_lambda_function", self._invoke)
        monkeypatch.setattr(retrier_decl, "time", _RecordedWaits(self.waits))
        harness = self

        def start(worker: ExecutionWorker) -> None:  # ExecutionWorker.start, keeping the thread to join
            thread = threading.Thread(target=worker._execution_logic, daemon=True)
            harness._threads[worker._evaluation_details.execution_details.arn] = thread
            thread.start()

        monkeypatch.setattr(ExecutionWorker, "start", start)
        # What mock_aws(config={"stepfunctions": {"execute_state_machine": True}}) patches, inside the test's own
        # mock (the `aws` fixture), so that the account and fleet fixtures stay as they are.
        monkeypatch.setitem(default_user_config, "stepfunctions", {"execute_state_machine": True})
        _for_moto_engine(monkeypatch, self.batchers)


def shared(event: Any) -> dict:
    """What a target worker event (or output) names for all its targets: a batch's BatchInput, or the single target's
    input itself (run_id, phase, round...)."""
    return event["BatchInput"] if isinstance(event, dict) and "BatchInput" in event else event


class _RecordedWaits:
    """Stands for the `time` module in moto's retrier: the Retry interval is recorded, not slept."""

    def __init__(self, waits: list[float]):
        self.waits = waits

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


def _for_moto(definition: dict, batchers: dict[str, dict]) -> dict:
    """The documented departures above, and nothing else (`batchers` gets each Map's ItemBatcher by state name)."""
    for _, scope in asl.scopes(definition):
        for name, state in scope["States"].items():
            if state["Type"] == "Map" and "ItemBatcher" in state:
                batchers[name] = state.pop("ItemBatcher")
            if state["Type"] != "Map" or "ToleratedFailurePercentage" not in state:
                continue
            assert state["ToleratedFailurePercentage"] == SERVICE_TOLERATED_FAILURE_PERCENTAGE, (
                f"{name}: moto does not enforce ToleratedFailurePercentage; below 100 these executions would differ"
            )
            state["ToleratedFailurePercentage"] = float(state["ToleratedFailurePercentage"])
    return definition


def _for_moto_engine(monkeypatch: pytest.MonkeyPatch, batchers: dict[str, dict]) -> None:
    """The documented ResultWriter and ItemBatcher departures above, and nothing else: moto's ResultWriter evaluates
    its Parameters against the state input (as the service does), and a failed write is `States.ResultWriterFailed`;
    a Map with an ItemBatcher (in `batchers`) runs one child execution per batch of the items its reader read."""
    map_run = DistributedIterationComponent._map_run

    def batched_map_run(component: DistributedIterationComponent, env: Any, eval_input: Any) -> None:
        batcher = batchers.get(eval_input.state_name)
        if batcher is not None:
            items = env.stack.pop()
            shared = asl.build(batcher.get("BatchInput", {}), env.states.get_input(), None)
            size = batcher["MaxItemsPerBatch"]
            env.stack.append(
                [
                    {"BatchInput": dict(shared), "Items": items[start : start + size]}
                    for start in range(0, len(items), size)
                ]
            )
        map_run(component, env=env, eval_input=eval_input)

    monkeypatch.setattr(DistributedIterationComponent, "_map_run", batched_map_run)

    def evaluate(writer: ResultWriter, env: Any) -> None:
        results = env.stack.pop()  # moto leaves the map's results on top, where its paths would look
        env.stack.append(env.states.get_input())
        writer.parargs.eval(env=env)
        parameters = env.stack.pop()
        env.stack.pop()  # the state input
        env.stack.extend([results, parameters])  # what moto's S3 resource pops: parameters, then the results
        try:
            writer.resource_eval.eval_resource(env=env)
        except FailureEventException:
            raise
        except Exception as exc:  # the write itself failed (AccessDenied, say)
            error = StatesErrorName(typ=StatesErrorNameType.StatesResultWriterFailed)
            details = EventDetails(
                mapRunFailedEventDetails=MapRunFailedEventDetails(error=error.error_name, cause=str(exc))
            )
            raise FailureEventException(FailureEvent(env, error, HistoryEventType.TaskFailed, details)) from exc

    monkeypatch.setattr(ResultWriter, "_eval_body", evaluate)
