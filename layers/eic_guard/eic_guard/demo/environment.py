"""The simulated AWS the demo runs against: a moto server on 127.0.0.1 with boto3 pointed at it, nothing real."""

from __future__ import annotations

import logging
import os
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from moto.server import ThreadedMotoServer

from .. import simulated_eice
from ..settings import ENV_PREFIX

IP_RANGES_ENV = "EIC_GUARD_DEMO_IP_RANGES"  # the one EIC_GUARD_* variable the demo keeps (its own)
HTML_ENV = "EIC_GUARD_DEMO_HTML"
REGION = "us-east-1"


@contextmanager
def patched_environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, unset) environment variables for the duration, then restore them exactly."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            _set_env(name, value)
        yield
    finally:
        for name, value in saved.items():
            _set_env(name, value)


def _set_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Keep request logs (werkzeug prints one line per API call) out of the demo's output."""
    saved = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def demo_environment(endpoint: str) -> dict[str, str | None]:
    """Point boto3 at the local server with fake credentials; drop anything that could reach a real account."""
    values: dict[str, str | None] = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_PROFILE": None,
        "AWS_SESSION_TOKEN": None,
        "AWS_SECURITY_TOKEN": None,
        "NO_PROXY": ",".join(filter(None, ("127.0.0.1,localhost", os.environ.get("NO_PROXY")))),
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    # The user's EIC_GUARD_* settings (tag, ingress source...) would change what the demo must show.
    values.update({name: None for name in os.environ if name.startswith(ENV_PREFIX) and name != IP_RANGES_ENV})
    return values


@contextmanager
def simulated_aws() -> Iterator[str]:
    """A fresh moto server on 127.0.0.1 with boto3 pointed at it; always stopped and the environment restored."""
    simulated_eice.install()  # the EC2 Instance Connect Endpoint API moto lacks (docs/architecture.md §13)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    with quiet_loggers("werkzeug"):
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            with patched_environ(demo_environment(endpoint)):
                reset(endpoint)  # moto's backends live in this process: start from an empty account
                yield endpoint
                reset(endpoint)
        finally:
            server.stop()


def reset(endpoint: str) -> None:
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
