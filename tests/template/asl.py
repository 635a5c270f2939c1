"""statemachine/eic_guard.asl.json as CloudFormation deploys it, the Amazon States Language rules it must follow, and
a small interpreter of the States Language subset it uses, so that tests can run the real definition.

- `load_definition`: the file with template.yaml's DefinitionSubstitutions applied the way CloudFormation applies
  them (text substitution of ${Name}; the numeric placeholders are unquoted in the file), then parsed.
- `structural_problems`: the States Language's structural rules (a StartAt that exists, every Next/Default/Catch
  target in the same scope, exactly one of Next/End on non-terminal states, none on Choice/Succeed/Fail, every
  state reachable, a terminal state reachable from every state, every loop able to exit through a Choice,
  names of at most 80 characters), for the top level and every Map's ItemProcessor.
- `Execution`: runs a definition: Task (arn:aws:states:::lambda:invoke only; Retry and Catch), Pass, Choice
  (the comparison operators below, And/Or/Not), Succeed, Fail (Error/Cause and their *Path forms), Map with an S3
  JSON ItemReader or ItemsPath, ItemSelector, ItemBatcher (MaxItemsPerBatch and BatchInput: one child per batch,
  input {"BatchInput", "Items"}), ToleratedFailurePercentage (an inline Map tolerates none) and an S3 ResultWriter
  (a failed write is States.ResultWriterFailed). InputPath, Parameters,
  ResultSelector, ResultPath and OutputPath follow the specification for the reference paths the definition uses
  ($, $.a.b, $$.Map.Item.Value), and the intrinsic functions States.MathAdd, States.Format and
  States.StringToJson. Items run one after the other (a Distributed Map runs them concurrently: the tests do not
  rely on an order within a map, only on every item of one map finishing before the next state starts, which the
  service guarantees too). Retries do not wait.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.template.cfn import ROOT, RenderedStack

ASL_PATH = ROOT / "statemachine" / "eic_guard.asl.json"
STATE_MACHINE_ID = "EicGuardStateMachine"
PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
S3_GET_OBJECT = "arn:aws:states:::s3:getObject"
S3_PUT_OBJECT = "arn:aws:states:::s3:putObject"
STATE_TYPES = {"Task", "Pass", "Choice", "Wait", "Succeed", "Fail", "Parallel", "Map"}
TERMINAL_TYPES = {"Succeed", "Fail"}
MAX_STATE_NAME = 80


def substitutions(stack: RenderedStack) -> dict[str, str]:
    return stack.resources[STATE_MACHINE_ID]["Properties"]["DefinitionSubstitutions"]


def placeholders() -> set[str]:
    return set(PLACEHOLDER.findall(ASL_PATH.read_text(encoding="utf-8")))


def load_definition(stack: RenderedStack) -> dict:
    """The definition as deployed with the rendered stack's substitutions (an unknown placeholder is a KeyError)."""
    values = substitutions(stack)
    text = PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), ASL_PATH.read_text(encoding="utf-8"))
    return json.loads(text)


# ---------------------------------------------------------------- structure


def scopes(definition: dict, path: str = "") -> Iterator[tuple[str, dict]]:
    """(where, {StartAt, States}) for the definition and every nested state machine (Map and Parallel)."""
    yield path or "(top level)", definition
    for name, state in definition.get("States", {}).items():
        if state.get("Type") == "Map":
            processor = state.get("ItemProcessor") or state.get("Iterator") or {}
            yield from scopes(processor, f"{path}{name}/")
        for index, branch in enumerate(state.get("Branches", ())):
            yield from scopes(branch, f"{path}{name}[{index}]/")


def transitions(state: dict) -> list[str]:
    """Every state name a state may go to next."""
    targets = [state["Next"]] if "Next" in state else []
    targets += [choice["Next"] for choice in state.get("Choices", ())]
    targets += [state["Default"]] if "Default" in state else []
    targets += [catcher["Next"] for catcher in state.get("Catch", ())]
    return targets


def _can_end(state: dict) -> bool:
    return state.get("Type") in TERMINAL_TYPES or state.get("End") is True


def scope_problems(where: str, scope: dict) -> list[str]:
    states = scope.get("States", {})
    problems = []
    if scope.get("StartAt") not in states:
        problems.append(f"{where}: StartAt {scope.get('StartAt')!r} is not a state")
    for name, state in states.items():
        kind = state.get("Type")
        label = f"{where}{name}"
        if len(name) > MAX_STATE_NAME:
            problems.append(f"{label}: name longer than {MAX_STATE_NAME} characters")
        if kind not in STATE_TYPES:
            problems.append(f"{label}: unknown Type {kind!r}")
        if kind in TERMINAL_TYPES or kind == "Choice":
            if "Next" in state or "End" in state:
                problems.append(f"{label}: a {kind} state has neither Next nor End")
        elif ("Next" in state) == ("End" in state):
            problems.append(f"{label}: needs exactly one of Next and End")
        if kind == "Choice" and not state.get("Choices"):
            problems.append(f"{label}: a Choice state needs Choices")
        problems += [f"{label}: goes to {t!r}, not a state of its scope" for t in transitions(state) if t not in states]
    if problems:
        return problems
    reachable = _reachable(states, scope["StartAt"])
    problems += [f"{where}{name}: unreachable from StartAt" for name in states if name not in reachable]
    for name in states:
        if not any(_can_end(states[s]) for s in _reachable(states, name)):
            problems.append(f"{where}{name}: no terminal state is reachable from it")
    problems += [f"{where}: a loop without a Choice: {cycle}" for cycle in _cycles_without_choice(states)]
    return problems


def _reachable(states: dict, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += transitions(states[name])
    return seen


def _cycles_without_choice(states: dict) -> list[list[str]]:
    """Loops made only of non-Choice states (nothing could ever leave them but an error)."""
    plain = {n: [t for t in transitions(s) if states[t].get("Type") != "Choice"] for n, s in states.items()}
    plain = {n: ts for n, ts in plain.items() if states[n].get("Type") != "Choice"}
    return [[name] for name in plain if name in _reachable_in(plain, plain[name])]


def _reachable_in(graph: dict[str, list[str]], starts: list[str]) -> set[str]:
    seen, todo = set(), list(starts)
    while todo:
        name = todo.pop()
        if name in graph and name not in seen:
            seen.add(name)
            todo += graph[name]
    return seen


def structural_problems(definition: dict) -> list[str]:
    return [problem for where, scope in scopes(definition) for problem in scope_problems(where, scope)]


# ---------------------------------------------------------------- paths, payload templates, intrinsic functions


class StateFailed(Exception):
    """A state's error (the service's error name and cause)."""

    def __init__(self, error: str, cause: str = ""):
        super().__init__(f"{error}: {cause}")
        self.error, self.cause = error, cause


def select(data: Any, path: str, context: dict | None = None) -> Any:
    """A reference path: $, $.a.b or $$.a.b (the context object)."""
    root, rest = (context or {}, path[2:]) if path.startswith("$$") else (data, path[1:])
    if not path.startswith("$"):
        raise StateFailed("States.Runtime", f"not a reference path: {path!r}")
    value = root
    for part in [p for p in rest.split(".") if p]:
        if not isinstance(value, dict) or part not in value:
            raise StateFailed("States.Runtime", f"{path!r} selects nothing in {json.dumps(data)[:200]}")
        value = value[part]
    return copy.deepcopy(value)


_INTRINSIC = re.compile(r"^(States\.\w+)\((.*)\)$", re.DOTALL)
_ARGUMENT = re.compile(r"\s*('(?:[^'\\]|\\.)*'|[^,]+)\s*(?:,|$)")


def intrinsic(expression: str, data: Any, context: dict | None) -> Any:
    match = _INTRINSIC.match(expression.strip())
    if not match:
        return select(data, expression, context)
    name, raw = match.groups()
    args = [_argument(a, data, context) for a in _ARGUMENT.findall(raw) if a.strip()]
    if name == "States.MathAdd":
        return args[0] + args[1]
    if name == "States.Format":
        template, *values = args
        for value in values:
            template = template.replace("{}", value if isinstance(value, str) else json.dumps(value), 1)
        return template
    if name == "States.StringToJson":
        return json.loads(args[0])
    raise StateFailed("States.Runtime", f"intrinsic function {name} is not modelled")


def _argument(raw: str, data: Any, context: dict | None) -> Any:
    raw = raw.strip()
    if raw.startswith("'"):
        return raw[1:-1].replace("\\'", "'")
    if raw.startswith("$"):
        return select(data, raw, context)
    return json.loads(raw)


def build(template: Any, data: Any, context: dict | None) -> Any:
    """A payload template (Parameters, ItemSelector, ResultSelector): "key.$" fields are evaluated."""
    if isinstance(template, list):
        return [build(item, data, context) for item in template]
    if not isinstance(template, dict):
        return template
    built = {}
    for key, value in template.items():
        if key.endswith(".$"):
            built[key[:-2]] = intrinsic(value, data, context)
        else:
            built[key] = build(value, data, context)
    return built


def with_result(data: Any, path: str | None, result: Any) -> Any:
    """ResultPath: null keeps the input, $ replaces it, $.a.b puts the result there."""
    if path is None:
        return copy.deepcopy(data)
    if path == "$":
        return copy.deepcopy(result)
    output = copy.deepcopy(data) if isinstance(data, dict) else {}
    node = output
    *parents, last = path[2:].split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = copy.deepcopy(result)
    return output


# ---------------------------------------------------------------- the interpreter


@dataclass
class Execution:
    """One execution of a definition. `invoke(function_arn, payload)` runs a Lambda function (raise to fail it;
    an exception's `error` attribute, else its class name, is the error name Retry and Catch match). `s3` is the
    client the ItemReader and ResultWriter use (the state machine's role). `events` records what happened."""

    definition: dict
    invoke: Callable[[str, Any], Any]
    s3: Any = None
    events: list[tuple] = field(default_factory=list)
    max_transitions: int = 100_000

    def run(self, execution_input: Any) -> Any:
        self._transitions = 0
        return self._run_scope(self.definition, execution_input, {"Execution": {"Input": execution_input}})

    # ---- scopes ------------------------------------------------------------------------------------------------
    def _run_scope(self, scope: dict, data: Any, context: dict) -> Any:
        name = scope["StartAt"]
        while True:
            self._transitions += 1
            if self._transitions > self.max_transitions:
                raise AssertionError(f"more than {self.max_transitions} transitions: a loop that never ends?")
            state = scope["States"][name]
            self.events.append(("enter", name))
            try:
                if state["Type"] == "Choice":
                    name = self._choose(state, data)
                    continue
                output = self._state(name, state, data, context)
            except StateFailed as failure:
                catcher = next((c for c in state.get("Catch", ()) if _matches_error(c, failure.error)), None)
                if catcher is None:
                    raise
                self.events.append(("caught", name, failure.error))
                error_output = {"Error": failure.error, "Cause": failure.cause}
                data = with_result(data, catcher.get("ResultPath", "$"), error_output)
                name = catcher["Next"]
                continue
            if state["Type"] in TERMINAL_TYPES or state.get("End"):
                return output
            data, name = output, state["Next"]

    def _state(self, name: str, state: dict, data: Any, context: dict) -> Any:
        kind = state["Type"]
        if kind == "Succeed":
            return select(select(data, state.get("InputPath", "$")), state.get("OutputPath", "$"))
        if kind == "Fail":
            error = select(data, state["ErrorPath"]) if "ErrorPath" in state else state.get("Error", "States.Fail")
            cause = select(data, state["CausePath"]) if "CausePath" in state else state.get("Cause", "")
            self.events.append(("fail", name, error))
            raise StateFailed(str(error), str(cause))
        effective = select(data, state.get("InputPath", "$"), context)
        if kind == "Pass" and "Parameters" in state:
            result = build(state["Parameters"], effective, context)
        elif kind == "Pass":
            result = copy.deepcopy(state.get("Result", effective))
        elif kind == "Task":
            result = self._task(name, state, effective, context)
        elif kind == "Map":
            result = self._map(name, state, effective, context)
        else:
            raise StateFailed("States.Runtime", f"state type {kind} is not modelled")
        if "ResultSelector" in state:
            result = build(state["ResultSelector"], result, context)
        return select(with_result(effective, state.get("ResultPath", "$"), result), state.get("OutputPath", "$"))

    # ---- Task --------------------------------------------------------------------------------------------------
    def _task(self, name: str, state: dict, data: Any, context: dict) -> Any:
        if state["Resource"] != LAMBDA_INVOKE:
            raise StateFailed("States.Runtime", f"resource {state['Resource']} is not modelled")
        parameters = build(state["Parameters"], data, context)
        attempts: dict[int, int] = {}
        while True:
            self.events.append(("invoke", name, parameters["FunctionName"], copy.deepcopy(parameters.get("Payload"))))
            try:
                payload = self.invoke(parameters["FunctionName"], copy.deepcopy(parameters.get("Payload")))
            except StateFailed:
                raise
            except Exception as exc:  # a function error is the state's error, as in the service
                error = getattr(exc, "error", type(exc).__name__)
                retrier = next(
                    (i for i, r in enumerate(state.get("Retry", ())) if _matches_error(r, error)),
                    None,
                )
                if retrier is not None:
                    attempts[retrier] = attempts.get(retrier, 0) + 1
                    if attempts[retrier] <= state["Retry"][retrier].get("MaxAttempts", 3):
                        self.events.append(("retry", name, error))
                        continue
                raise StateFailed(error, str(exc)) from exc
            return {"ExecutedVersion": "$LATEST", "Payload": payload, "StatusCode": 200}

    # ---- Map ---------------------------------------------------------------------------------------------------
    def _map(self, name: str, state: dict, data: Any, context: dict) -> Any:
        items = self._items(state, data, context)
        processor = state["ItemProcessor"]
        outputs, failures = [], 0
        if "ItemSelector" in state:
            items = [
                build(state["ItemSelector"], data, {**context, "Map": {"Item": {"Index": i, "Value": item}}})
                for i, item in enumerate(items)
            ]
        if "ItemBatcher" in state:
            batcher = state["ItemBatcher"]
            shared = build(batcher.get("BatchInput", {}), data, context)
            size = batcher["MaxItemsPerBatch"]
            items = [
                {"BatchInput": copy.deepcopy(shared), "Items": items[i : i + size]} for i in range(0, len(items), size)
            ]
        for index, item in enumerate(items):
            child_input = copy.deepcopy(item)
            self.events.append(("child", name, index, copy.deepcopy(child_input)))
            try:
                outputs.append({"Status": "SUCCEEDED", "Output": self._run_scope(processor, child_input, context)})
            except StateFailed as failure:
                failures += 1
                outputs.append({"Status": "FAILED", "Error": failure.error, "Cause": failure.cause})
                self.events.append(("child-failed", name, index, failure.error))
        tolerated = state.get("ToleratedFailurePercentage", 0)
        if items and failures * 100 / len(items) > tolerated:
            raise StateFailed("States.ExceedToleratedFailureThreshold", f"{failures} of {len(items)} items failed")
        self.events.append(("map-done", name, len(items), failures))
        if "ResultWriter" not in state:
            return [o.get("Output") for o in outputs]
        return self._write_results(name, state["ResultWriter"], data, context, outputs)

    def _items(self, state: dict, data: Any, context: dict) -> list:
        reader = state.get("ItemReader")
        if reader is None:
            return select(data, state.get("ItemsPath", "$"), context)
        if reader["Resource"] != S3_GET_OBJECT or reader.get("ReaderConfig", {}).get("InputType") != "JSON":
            raise StateFailed("States.Runtime", "only the S3 JSON ItemReader is modelled")
        where = build(reader["Parameters"], data, context)
        try:
            body = self.s3.get_object(Bucket=where["Bucket"], Key=where["Key"])["Body"].read()
            items = json.loads(body)
        except Exception as exc:  # what the service reports when the item list cannot be read
            raise StateFailed("States.ItemReaderFailed", str(exc)) from exc
        if not isinstance(items, list):
            raise StateFailed("States.ItemReaderFailed", "the JSON item list is not an array")
        return items

    def _write_results(self, name: str, writer: dict, data: Any, context: dict, outputs: list[dict]) -> dict:
        """The S3 ResultWriter: its Parameters resolved against the state input; a write that fails is the map's
        `States.ResultWriterFailed` (the error the service names it, which a Catch may match)."""
        if writer["Resource"] != S3_PUT_OBJECT:
            raise StateFailed("States.Runtime", "only the S3 ResultWriter is modelled")
        where = build(writer["Parameters"], data, context)
        run = str(uuid.uuid4())
        prefix = f"{where['Prefix'].rstrip('/')}/{run}"
        succeeded = [o for o in outputs if o["Status"] == "SUCCEEDED"]
        failed = [o for o in outputs if o["Status"] == "FAILED"]
        files = {"SUCCEEDED_0.json": succeeded, "FAILED_0.json": failed}
        manifest = {"DestinationBucket": where["Bucket"], "MapRunArn": f"map-run/{name}/{run}"}
        try:
            for file_name, documents in files.items():
                body = json.dumps(documents).encode()
                self.s3.put_object(Bucket=where["Bucket"], Key=f"{prefix}/{file_name}", Body=body)
            body = json.dumps(manifest).encode()
            self.s3.put_object(Bucket=where["Bucket"], Key=f"{prefix}/manifest.json", Body=body)
        except Exception as exc:
            self.events.append(("result-writer-failed", name))
            raise StateFailed("States.ResultWriterFailed", str(exc)) from exc
        self.events.append(("results-written", name, prefix))
        return {"MapRunArn": manifest["MapRunArn"], "ResultWriterDetails": {"Bucket": where["Bucket"], "Key": prefix}}

    # ---- Choice ------------------------------------------------------------------------------------------------
    def _choose(self, state: dict, data: Any) -> str:
        for rule in state["Choices"]:
            if _rule_matches(rule, data):
                return rule["Next"]
        if "Default" not in state:
            raise StateFailed("States.NoChoiceMatched", "no choice rule matched and there is no Default")
        return state["Default"]


def _matches_error(retrier_or_catcher: dict, error: str) -> bool:
    names = retrier_or_catcher["ErrorEquals"]
    return error in names or "States.ALL" in names or ("States.TaskFailed" in names and not error.startswith("States."))


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "StringEquals": lambda a, b: isinstance(a, str) and a == b,
    "NumericEquals": lambda a, b: _number(a) and a == b,
    "NumericLessThan": lambda a, b: _number(a) and a < b,
    "NumericLessThanEquals": lambda a, b: _number(a) and a <= b,
    "NumericGreaterThan": lambda a, b: _number(a) and a > b,
    "NumericGreaterThanEquals": lambda a, b: _number(a) and a >= b,
    "BooleanEquals": lambda a, b: isinstance(a, bool) and a == b,
}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rule_matches(rule: dict, data: Any) -> bool:
    if "And" in rule:
        return all(_rule_matches(r, data) for r in rule["And"])
    if "Or" in rule:
        return any(_rule_matches(r, data) for r in rule["Or"])
    if "Not" in rule:
        return not _rule_matches(rule["Not"], data)
    if "IsPresent" in rule:
        try:
            select(data, rule["Variable"])
        except StateFailed:
            return not rule["IsPresent"]
        return bool(rule["IsPresent"])
    value = select(data, rule["Variable"])
    for operator, expected in rule.items():
        if operator in ("Variable", "Next", "Comment"):
            continue
        if operator.endswith("Path"):
            operator, expected = operator[: -len("Path")], select(data, expected)
        if operator not in _COMPARISONS:
            raise StateFailed("States.Runtime", f"choice operator {operator} is not modelled")
        return _COMPARISONS[operator](value, expected)
    raise StateFailed("States.Runtime", f"a choice rule without a comparison: {rule}")
