"""Defect 11: every network call is budgeted, so that a failure is reported by eic-guard itself, never by Lambda
killing the function (no report, no alert).

A hung EC2 call is a real HTTP hop that never answers: a FaultyMotoServer whose middleware holds the request longer
than the client's read timeout (e2e). A hung ip-ranges.amazonaws.com is a local TCP server that accepts and never
answers.
"""

from __future__ import annotations

import time

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from eic_guard.aws.clients import CONNECT_TIMEOUT, MAX_ATTEMPTS, READ_TIMEOUT, AwsClients
from eic_guard.budget import Deadline
from eic_guard.errors import IpRangesError
from eic_guard.fanout.local import run_scan
from eic_guard.ranges import ip_ranges

from tests.conftest import REGION
from tests.faults.conftest import remediate_settings
from tests.faults.injector import FaultInjector, FaultyMotoServer, SilentServer

REFRESH_FUNCTION_TIMEOUT = 120  # template.yaml, RefreshFunction: the shortest function timeout a client serves


def read_timeout_of(fetch_timeout) -> float:
    """The read part of ip_ranges.FETCH_TIMEOUT (a (connect, read) pair or one number)."""
    return fetch_timeout[1] if isinstance(fetch_timeout, tuple) else fetch_timeout


# ---- AWS calls ------------------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_hung_describe_instances_is_a_target_error_after_the_configured_attempts(server: FaultyMotoServer, ranges_2026):
    # Given DescribeInstances hanging 5 s at the server, and clients with a 1 s read timeout and 2 attempts in all
    server.faults.hang("DescribeInstances", 5)
    config = Config(retries={"mode": "standard", "total_max_attempts": 2}, connect_timeout=1, read_timeout=1)
    clients = AwsClients(config=config)

    # When a remediate scan runs
    started = time.monotonic()
    report = run_scan(clients, remediate_settings(), ranges_2026)
    elapsed = time.monotonic() - started

    # Then the server saw exactly two DescribeInstances requests, and the run gave up on the region long before 5 s
    assert server.faults.counts["DescribeInstances"] == 2
    assert elapsed < 5
    # And it still returned a report, whose target error says the call timed out
    [error] = report.target_errors
    assert error.region == REGION
    assert "timeout" in error.error.lower()
    assert report.summary.errors == 1


@pytest.mark.e2e
def test_deadline_inside_the_reserve_sends_nothing_and_the_run_still_reports(server: FaultyMotoServer, ranges_2026):
    # Given clients on a clock that entered its 90 s reserve after the account was identified
    remaining = {"seconds": 600.0}
    clients = AwsClients(deadline=Deadline(lambda: remaining["seconds"], reserve=90.0))
    clients.account_id()
    remaining["seconds"] = 60.0
    server.faults.counts.clear()

    # When a remediate scan runs
    report = run_scan(clients, remediate_settings(), ranges_2026)

    # Then no request reached the server
    assert dict(server.faults.counts) == {}
    # And the run returned a report whose target error names the deadline
    [error] = report.target_errors
    assert error.region == REGION
    assert "deadline" in error.error.lower(), error.error
    assert report.summary.errors == 1


def test_default_clients_try_a_call_at_most_max_attempts_times(faults: FaultInjector, aws, no_backoff):
    # Given DescribeInstances throttled on every attempt, and eic-guard's default clients
    throttled = faults.respond("DescribeInstances", "RequestLimitExceeded", status=503)
    clients = AwsClients()

    # When a call is made
    with pytest.raises(ClientError) as raised:
        clients.ec2(REGION).describe_instances()

    # Then it was attempted MAX_ATTEMPTS times in all, then the throttling error surfaced
    assert raised.value.response["Error"]["Code"] == "RequestLimitExceeded"
    assert len(throttled.hits) == len(faults.attempts_of("DescribeInstances")) == MAX_ATTEMPTS
    # And the timeouts are the budgeted ones: a call hanging on every attempt gives up within the shortest
    # function timeout, so the function reports it rather than being killed
    config = clients.ec2(REGION).meta.config
    assert (config.connect_timeout, config.read_timeout) == (CONNECT_TIMEOUT, READ_TIMEOUT)
    assert MAX_ATTEMPTS * (CONNECT_TIMEOUT + READ_TIMEOUT) < REFRESH_FUNCTION_TIMEOUT


# ---- the ip-ranges download -----------------------------------------------------------------------------------------
def test_silent_ip_ranges_server_fails_the_download_in_bounded_attempts(monkeypatch):
    # Given a server that accepts connections and never answers, and short per-attempt timeouts
    original = ip_ranges.FETCH_TIMEOUT
    monkeypatch.setattr(ip_ranges, "FETCH_TIMEOUT", (1.0, 0.3) if isinstance(original, tuple) else 0.3)

    # When the file is fetched
    with SilentServer() as silent, pytest.raises(IpRangesError) as raised:
        ip_ranges.fetch_bytes(silent.url())

    # Then the download failed after exactly FETCH_ATTEMPTS attempts
    assert raised.value.reason == "download-failed"
    assert silent.accepted == ip_ranges.FETCH_ATTEMPTS


def test_download_timeout_is_cut_to_what_the_deadline_leaves(monkeypatch):
    # Given a server that never answers, and a deadline 2 s away (far less than the configured read timeout)
    read_timeout = read_timeout_of(ip_ranges.FETCH_TIMEOUT)
    assert read_timeout > 4
    end = time.monotonic() + 2.0
    deadline = Deadline(lambda: end - time.monotonic(), reserve=0.0)

    with SilentServer() as silent:
        # When the file is fetched
        started = time.monotonic()
        with pytest.raises(IpRangesError) as raised:
            ip_ranges.fetch_bytes(silent.url(), deadline=deadline)
        elapsed = time.monotonic() - started

    # Then it failed as a download failure, with no more than FETCH_ATTEMPTS connections, within the deadline
    assert raised.value.reason == "download-failed"
    assert 1 <= silent.accepted <= ip_ranges.FETCH_ATTEMPTS
    assert elapsed < 3.5 < read_timeout
