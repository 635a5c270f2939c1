"""Fault injection in front of moto, for the fault tier (tests/faults).

Three tools, each small enough to read in one go:

- `FaultInjector`: botocore event hooks registered on every boto3 Session created while it is installed, so the
  clients eic-guard builds itself (AwsClients, the handlers) are covered. Works in-process with `mock_aws` and against
  a server. Per operation it can
    * `error`: answer with a real-looking ClientError before the request is sent (`before-call`). botocore does not
      retry such an answer: use it for errors its retry handler would not retry anyway (UnauthorizedOperation,
      InvalidInstanceID.NotFound, InvalidPermission.Duplicate ...);
    * `respond`: answer one HTTP attempt with an error *response* (`before-send`), which botocore parses and hands to
      its retry handler exactly like a real one: throttling (RequestLimitExceeded), 5xx;
    * `before`: run a callback (a concurrent edit made through a separate client) just before the call goes out;
    * `rewrite`: edit the parsed answer of a call (e.g. hide a resource AWS has deleted but moto keeps);
  each optionally only when the call's parameters match a predicate, and only the first N times. Every API call and
  every attempt (sent or answered by a fault) is recorded. Calls made while the injector is paused (callbacks run
  paused) are neither faulted nor recorded, so a test's own edits never trip its own faults.
- `FaultyMotoServer`: a `ThreadedMotoServer` on 127.0.0.1 whose WSGI app is wrapped by `FaultMiddleware`, for faults
  only a real HTTP hop shows: hangs longer than the client's read timeout, 5xx and throttling answers; every request
  is counted per operation (the EC2/Query `Action`, the JSON `X-Amz-Target`).
- `SilentServer`: a TCP server that accepts connections and never answers (a hung ip-ranges.amazonaws.com).

`FaultInjector.after_gather` mutates AWS state between eic-guard's gather and act phases.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import boto3
import requests
from botocore.awsrequest import AWSResponse
from moto.server import ThreadedMotoServer

Params = dict[str, Any]
Predicate = Callable[[Params], bool]
# A URL moto's in-process stub does not serve: an attempt answered by a fault must not also run in moto.
UNSERVED_URL = "https://fault-injected.invalid/"
_PARAMS, _SERVICE, _OPERATION, _PROTOCOL = "faults:params", "faults:service", "faults:operation", "faults:protocol"
READ_PREFIXES = ("Describe", "Get", "List", "Query", "Scan")


def _always(_: Params) -> bool:
    return True


def error_document(protocol: str, code: str, message: str) -> bytes:
    """The body AWS sends for an error, in the service's protocol (EC2's own XML, Query XML, JSON, REST XML)."""
    if protocol == "ec2":
        return (
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
            "<RequestID>fault-injected</RequestID></Response>"
        ).encode()
    if protocol in ("json", "rest-json"):
        return json.dumps({"__type": code, "message": message}).encode()
    if protocol == "query":
        return (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            "<RequestId>fault-injected</RequestId></ErrorResponse>"
        ).encode()
    return f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()


class _Body:
    """The raw body botocore reads an AWSResponse from."""

    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_):
        yield self.data


# ---- botocore event hooks -------------------------------------------------------------------------------------------
@dataclass
class Rule:
    """One fault: what it matches, what it does, how often it did it."""

    kind: str  # "error" | "respond" | "before" | "rewrite"
    service: str
    operation: str
    when: Predicate = _always
    times: int | None = None  # None: every matching call
    code: str = ""
    message: str = ""
    status: int = 400
    action: Callable[[Params], Any] | None = None  # the callback of `before`, the editor of `rewrite`
    hits: list[Params] = field(default_factory=list)

    def matches(self, service: str, operation: str, params: Params) -> bool:
        if (service, operation) != (self.service, self.operation):
            return False
        if self.times is not None and len(self.hits) >= self.times:
            return False
        return bool(self.when(params))


@dataclass(frozen=True)
class Call:
    """One API call (or one HTTP attempt of it), with its API-level parameters; `outcome` is "sent" or the code a
    fault answered with."""

    service: str
    operation: str
    params: Params
    outcome: str = "sent"


class FaultInjector:
    """botocore event hooks on every boto3 Session created after `install` (see the module docstring)."""

    def __init__(self) -> None:
        self.rules: list[Rule] = []
        self.calls: list[Call] = []  # one per API call
        self.attempts: list[Call] = []  # one per HTTP attempt, or per call answered before sending
        self.answers: list[Call] = []  # one per API call, after botocore's retries: outcome "ok" or the error code
        self._local = threading.local()
        self._monkeypatch: Any = None

    # -- installing -------------------------------------------------------------------------------------------------
    def install(self, monkeypatch) -> FaultInjector:
        """Hook every boto3 Session created from now on (undone by `monkeypatch` at the end of the test)."""
        original = boto3.Session.__init__
        injector = self

        def init(session, *args, **kwargs):
            original(session, *args, **kwargs)
            injector.hook(session.events)

        monkeypatch.setattr(boto3.Session, "__init__", init)
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # boto3.client() builds a hooked session too
        self._monkeypatch = monkeypatch
        return self

    def hook(self, events) -> None:
        """Register the handlers on one event emitter (a session's, or a client's `meta.events`)."""
        events.register("before-parameter-build", self._remember_params)
        events.register("before-call", self._before_call)
        events.register_first("before-send", self._before_send)  # ahead of moto's in-process stub
        events.register("after-call", self._after_call)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Calls made in this block (in this thread) are neither faulted nor recorded."""
        self._local.depth = getattr(self._local, "depth", 0) + 1
        try:
            yield
        finally:
            self._local.depth -= 1

    @property
    def _is_paused(self) -> bool:
        return getattr(self._local, "depth", 0) > 0

    # -- declaring faults -------------------------------------------------------------------------------------------
    def error(
        self,
        operation: str,
        code: str,
        *,
        service: str = "ec2",
        message: str | None = None,
        status: int = 400,
        when: Predicate = _always,
        times: int | None = None,
    ) -> Rule:
        """Answer matching calls with ClientError `code` before anything is sent (botocore does not retry it)."""
        return self._add(Rule("error", service, operation, when, times, code, message or f"injected {code}", status))

    def respond(
        self,
        operation: str,
        code: str = "RequestLimitExceeded",
        *,
        service: str = "ec2",
        status: int = 503,
        when: Predicate = _always,
        times: int | None = None,
    ) -> Rule:
        """Answer matching HTTP attempts with an error response that botocore parses and may retry (throttling)."""
        return self._add(Rule("respond", service, operation, when, times, code, f"injected {code}", status))

    def before(
        self,
        operation: str,
        callback: Callable[[Params], Any],
        *,
        service: str = "ec2",
        when: Predicate = _always,
        times: int | None = 1,
    ) -> Rule:
        """Run `callback(params)` (paused) just before a matching call is sent; the call then goes on as usual."""
        return self._add(Rule("before", service, operation, when, times, action=callback))

    def rewrite(
        self,
        operation: str,
        editor: Callable[[Params], Any],
        *,
        service: str = "ec2",
        when: Predicate = _always,
        times: int | None = None,
    ) -> Rule:
        """Let `editor(parsed)` edit the parsed answer of matching successful calls in place."""
        return self._add(Rule("rewrite", service, operation, when, times, action=editor))

    def after_gather(self, callback: Callable[[str, Any], Any], *, times: int = 1) -> list[str]:
        """Run `callback(region, snapshot)` (paused) right after eic-guard's gather of a region, before it acts.

        Wraps `eic_guard.engine.gather` (the name the engine calls); returns the regions it ran for.
        """
        from eic_guard import engine

        real_gather = engine.gather
        ran: list[str] = []

        def gather_then_edit(ec2, account_id, region, *args, **kwargs):
            snapshot = real_gather(ec2, account_id, region, *args, **kwargs)
            if len(ran) < times:
                ran.append(region)
                with self.paused():
                    callback(region, snapshot)
            return snapshot

        self._monkeypatch.setattr(engine, "gather", gather_then_edit)
        return ran

    def _add(self, rule: Rule) -> Rule:
        self.rules.append(rule)
        return rule

    # -- reading the record -----------------------------------------------------------------------------------------
    def count(self, operation: str) -> int:
        """API calls of `operation` (retries not counted)."""
        return sum(1 for c in self.calls if c.operation == operation)

    def attempts_of(self, operation: str) -> list[Call]:
        return [a for a in self.attempts if a.operation == operation]

    def answers_of(self, operation: str) -> list[str]:
        """The final answer of each call of `operation`: "ok" or the error code the caller got."""
        return [a.outcome for a in self.answers if a.operation == operation]

    def writes(self, service: str | None = None) -> list[str]:
        """The operations called (of `service`, if given) that are not reads, in order."""
        return [
            c.operation
            for c in self.calls
            if not c.operation.startswith(READ_PREFIXES) and service in (None, c.service)
        ]

    def clear(self) -> None:
        """Forget the record (the rules stay)."""
        self.calls.clear()
        self.attempts.clear()
        self.answers.clear()

    # -- the handlers -----------------------------------------------------------------------------------------------
    def _matching(self, kind: str, context: dict) -> list[Rule]:
        """The rules of `kind` that match this call, each counting it as a hit."""
        service, operation, params = context[_SERVICE], context[_OPERATION], context[_PARAMS]
        found = [r for r in self.rules if r.kind == kind and r.matches(service, operation, params)]
        for rule in found:
            rule.hits.append(params)
        return found

    def _first(self, kind: str, context: dict) -> Rule | None:
        """The first rule of `kind` that matches this call (only it counts a hit): one answer per attempt."""
        service, operation, params = context[_SERVICE], context[_OPERATION], context[_PARAMS]
        rule = next((r for r in self.rules if r.kind == kind and r.matches(service, operation, params)), None)
        if rule is not None:
            rule.hits.append(params)
        return rule

    def _remember_params(self, params, model, context, **_):
        context[_SERVICE] = model.service_model.service_name
        context[_OPERATION] = model.name
        context[_PROTOCOL] = model.service_model.resolved_protocol
        context[_PARAMS] = dict(params)

    def _before_call(self, model, context, **_):
        if self._is_paused or _PARAMS not in context:
            return None
        service, params = context[_SERVICE], context[_PARAMS]
        self.calls.append(Call(service, model.name, params))
        for rule in self._matching("before", context):
            with self.paused():
                rule.action(params)
        rule = self._first("error", context)
        if rule is None:
            return None
        self.attempts.append(Call(service, model.name, params, rule.code))
        parsed = {
            "Error": {"Code": rule.code, "Message": rule.message},
            "ResponseMetadata": {"HTTPStatusCode": rule.status, "RequestId": "fault-injected", "HTTPHeaders": {}},
        }
        return AWSResponse(UNSERVED_URL, rule.status, {}, _Body(b"")), parsed

    def _before_send(self, request, **_):
        context = request.context or {}
        if self._is_paused or _PARAMS not in context:
            return None
        service, operation, params = context[_SERVICE], context[_OPERATION], context[_PARAMS]
        rule = self._first("respond", context)
        if rule is None:
            self.attempts.append(Call(service, operation, params))
            return None
        self.attempts.append(Call(service, operation, params, rule.code))
        request.url = UNSERVED_URL  # so that moto's stub, called after us, does not also run the request
        body = error_document(context[_PROTOCOL], rule.code, rule.message)
        return AWSResponse(UNSERVED_URL, rule.status, {"x-amzn-requestid": "fault-injected"}, _Body(body))

    def _after_call(self, http_response, parsed, model, context, **_):
        if self._is_paused or _PARAMS not in context:
            return
        code = parsed.get("Error", {}).get("Code", "Unknown") if http_response.status_code >= 300 else None
        self.answers.append(Call(context[_SERVICE], model.name, context[_PARAMS], code or "ok"))
        if code is None:
            for rule in self._matching("rewrite", context):
                rule.action(parsed)


# ---- a moto server behind a faulty WSGI middleware -------------------------------------------------------------------
@dataclass
class HttpRule:
    operation: str
    kind: str  # "hang" | "status"
    seconds: float = 0.0
    status: int = 500
    code: str = "InternalError"
    times: int | None = None
    hits: int = 0


class FaultMiddleware:
    """Wraps moto's WSGI app: counts requests per operation and hangs or fails chosen ones."""

    def __init__(self, app):
        self.app = app
        self.counts: Counter[str] = Counter()
        self.rules: list[HttpRule] = []
        self._lock = threading.Lock()
        self._released = threading.Event()

    def hang(self, operation: str, seconds: float, *, times: int | None = None) -> HttpRule:
        """Hold matching requests `seconds` before answering (longer than the client waits = a hung call)."""
        return self._add(HttpRule(operation, "hang", seconds=seconds, times=times))

    def fail(self, operation: str, status: int = 500, code: str = "InternalError", *, times=None) -> HttpRule:
        """Answer matching requests with `status` and an AWS error document (503 + RequestLimitExceeded: throttling)."""
        return self._add(HttpRule(operation, "status", status=status, code=code, times=times))

    def _add(self, rule: HttpRule) -> HttpRule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Forget rules and counts; let every hung request go (answered 503, never run)."""
        with self._lock:
            self.rules.clear()
            self.counts.clear()
            self._released.set()
            self._released = threading.Event()

    def __call__(self, environ, start_response):
        operation, protocol = self._operation(environ)
        with self._lock:
            self.counts[operation] += 1
            rule = next(
                (r for r in self.rules if r.operation == operation and (r.times is None or r.hits < r.times)), None
            )
            if rule is not None:
                rule.hits += 1
            released = self._released
        if rule is None:
            return self.app(environ, start_response)
        if rule.kind == "hang" and not released.wait(rule.seconds):
            return self.app(environ, start_response)  # a slow answer: the client has given up by now
        status, code = (503, "ServiceUnavailable") if rule.kind == "hang" else (rule.status, rule.code)
        body = error_document(protocol, code, f"injected {code}")
        start_response(f"{status} Injected", [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))])
        return [body]

    @staticmethod
    def _operation(environ) -> tuple[str, str]:
        """(operation, protocol) of a request: X-Amz-Target for JSON APIs, else the Query `Action`."""
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:
            return target.rsplit(".", 1)[-1], "json"
        fields = parse_qs(environ.get("QUERY_STRING", ""))
        if "Action" not in fields and "form-urlencoded" in environ.get("CONTENT_TYPE", ""):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(body)  # moto reads it again
            fields = parse_qs(body.decode("utf-8", "replace"))
        if "Action" in fields:
            service = "ec2" if "/ec2/" in environ.get("HTTP_AUTHORIZATION", "") else "query"
            return fields["Action"][0], service
        return f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}", "rest-xml"


class FaultyMotoServer(ThreadedMotoServer):
    """A ThreadedMotoServer on 127.0.0.1 (a free port) with `faults`, a FaultMiddleware, in front of its app."""

    def __init__(self) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.faults: FaultMiddleware | None = None

    def start(self) -> None:
        super().start()
        assert self._server is not None
        # werkzeug's request handler reads `server.app` per request; nothing has been sent yet.
        self.faults = self._server.app = FaultMiddleware(self._server.app)

    @property
    def url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def reset(self) -> None:
        """Clear the faults and every moto backend (the server keeps running)."""
        assert self.faults is not None
        self.faults.clear()
        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()
        self.faults.counts.clear()  # the reset request itself

    def stop(self) -> None:
        if self.faults is not None:
            self.faults.clear()
        super().stop()


# ---- a server that never answers ----------------------------------------------------------------------------------
class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte; counts the connections it accepted."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self.accepted = 0

    def url(self, path: str = "/ip-ranges.json") -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}{path}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            self._held.append(connection)
            self.accepted += 1

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for connection in self._held:
            connection.close()
        self._listener.close()
