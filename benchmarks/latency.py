"""A moto server that answers every request after an injected delay, and counts the requests it serves.

The organization benchmark (`benchmarks/org.py`) needs AWS's round trips, which dominate a real fan-out, not
moto's sub-millisecond loopback answers: a small WSGI middleware in front of moto sleeps `latency` before handing
each request on (in the server's request thread, so concurrent requests wait concurrently, as they do against AWS).
It also counts requests by service and operation (HTTP requests: a retried call counts twice), from the SigV4
credential scope and the Action / X-Amz-Target / method of the request. moto's quadratic lookups are patched as in
`benchmarks/moto_launcher.py` (this process only).

Control (same port, never forwarded to moto):
    GET /_bench/latency?ms=100     set the delay (0 turns it off)
    GET /_bench/counts[?reset=1]   {"service:Operation": n, ...} since the last reset (JSON)

With `--amis REGION,...` every EC2 backend gets only moto's latest public AMIs of those regions (a hundred or so)
instead of all 1,291 it knows (ECS-optimised ones included): moto builds one backend per (account, region), and
loading them all costs 0.2 s and 3.8 MiB per backend, 3.8 GB and minutes for 1,000 targets. Same AMI ids (the
AL2023 and AL2 images the benchmarks launch among them), nothing else changes.

Run: `python -m benchmarks.latency [--latency-ms N] [--amis REGION,...]` — prints `PORT <n>` once listening, serves
until stdin closes.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
_CONTROL = "/_bench/"


class LatencyCounter:
    """WSGI middleware: delay, count, pass on."""

    def __init__(self, app, latency_s: float = 0.0):
        self.app = app
        self.latency_s = latency_s
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith(_CONTROL):
            return self._control(path[len(_CONTROL) :], parse_qs(environ.get("QUERY_STRING", "")), start_response)
        operation = self._operation(environ)
        with self._lock:
            self.counts[operation] += 1
        if self.latency_s:
            time.sleep(self.latency_s)
        return self.app(environ, start_response)

    @staticmethod
    def _operation(environ) -> str:
        scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        service = scope.group(2) if scope else "?"
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:
            return f"{service}:{target.rsplit('.', 1)[-1]}"
        action = parse_qs(environ.get("QUERY_STRING", "")).get("Action")
        if not action and environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)  # moto reads it again
            action = parse_qs(body.decode("utf-8", "replace")).get("Action")
        if action:
            return f"{service}:{action[0]}"
        return f"{service}:{environ.get('REQUEST_METHOD', '?')}"  # S3 (REST): the method is the operation

    def _control(self, command: str, query: dict, start_response):
        if command == "latency":
            self.latency_s = float(query.get("ms", ["0"])[0]) / 1000
            body: object = {"latency_ms": self.latency_s * 1000}
        elif command == "counts":
            with self._lock:
                body = dict(self.counts)
                if query.get("reset"):
                    self.counts.clear()
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"unknown control command"]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]


def few_amis(regions: list[str]) -> str:
    """A MOTO_AMIS_PATH file: moto's latest public AMIs of `regions` (read before moto's EC2 models are imported)."""
    import importlib.util

    resources = Path(importlib.util.find_spec("moto").origin).parent / "ec2" / "resources" / "latest_amis"
    amis: dict[str, dict] = {}
    for region in regions:
        with gzip.open(resources / f"{region}.json.gz", "rt", encoding="utf-8") as stream:
            amis.update({ami["ami_id"]: ami for ami in json.load(stream)})
    handle, path = tempfile.mkstemp(prefix="eic-bench-amis-", suffix=".json")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(list(amis.values()), stream)
    return path


def main() -> int:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    latency_ms = float(sys.argv[sys.argv.index("--latency-ms") + 1]) if "--latency-ms" in sys.argv else 0.0
    amis_path = None
    if "--amis" in sys.argv:
        amis_path = os.environ["MOTO_AMIS_PATH"] = few_amis(sys.argv[sys.argv.index("--amis") + 1].split(","))

    from werkzeug.serving import make_server

    from benchmarks.moto_launcher import patch_moto

    patch_moto()
    from eic_guard import simulated_eice

    simulated_eice.install()  # the EC2 Instance Connect Endpoint API moto lacks: the scan describes endpoints
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

    app = LatencyCounter(DomainDispatcherApplication(create_backend_app), latency_ms / 1000)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"PORT {server.server_address[1]} patched", flush=True)
    try:
        sys.stdin.read()  # the harness closes our stdin (or kills us) when it is done
    finally:
        server.shutdown()
        if amis_path:
            os.unlink(amis_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
