"""The Lambda handlers around the refresh, against moto and a mocked https://ip-ranges.amazonaws.com:
RefreshFunction (SNS AmazonIpSpaceChanged) and ScanFunction's nightly catch-up.

For every bad input: the invocation raises, a RefreshRejected EMF metric carries the reason, no security group
changes and the state is not advanced. The Given state of those tests is the 2022-04-27 file (IPv4 only), so a
wrongly accepted 2026 file *would* add the IPv6 rule and advance the state: the assertions can fail.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
from datetime import timedelta

import boto3
import pytest
import requests
import responses
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from botocore.exceptions import ClientError
from eic_guard.errors import IpRangesError
from eic_guard.events import InvalidEvent, parse_ip_space_notification
from eic_guard.observability import logger as powertools_logger
from eic_guard.ranges.notification import handle_notification
from eic_guard.ranges.state import DynamoDbStateStore, StateConflict
from eic_guard.settings import IP_RANGES_URL, Settings
from responses.registries import OrderedRegistry

from functions.refresh import app as refresh_app
from tests.aws_views import ingress_of
from tests.conftest import EIC_US_EAST_1, EIC_US_EAST_1_V6, IP_RANGES, REGION, create_state_table
from tests.integration.test_refresh import (  # noqa: F401 - fixtures used by name
    T0,
    _shared,
    eic_rules,
    fast_aws,
    new_group,
    refresh,
    sg_writes,
    snapshot,
    snapshot_bytes,
    tcp,
)
from tests.lambda_runtime import REFRESH_ARN, FakeLambdaContext, emf_blobs, event, with_message

TABLE = "eic-guard-state"
# A rejected invocation publishes no application metric besides its RefreshRejected blob; Powertools warns on flush.
NO_APP_METRICS = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
NEWEST_MD5 = "63431d35877fa5386ded1a7df9cfa971"
USER_RULE = tcp(22, "203.0.113.0/24", "office VPN")
REQUEST_ID = "6bc28136-xmpl-4365-b021-0ce6b2e64ab0"


def refresh_context(request_id: str = REQUEST_ID) -> FakeLambdaContext:
    """The refresh function's context."""
    return FakeLambdaContext(
        function_name="eic-guard-refresh",
        memory_limit_in_mb=256,
        invoked_function_arn=REFRESH_ARN,
        aws_request_id=request_id,
    )


def invoke(evt, request_id: str = REQUEST_ID):
    return refresh_app.lambda_handler(copy.deepcopy(evt), refresh_context(request_id))


def metric_blobs(stdout: str, metric: str) -> list[dict]:
    """The EMF documents printed on standard output that carry `metric`."""
    return [blob for blob in emf_blobs(stdout) if metric in blob]


@pytest.fixture
def http(aws):
    """Serves the pinned URL; started after moto so that it, not moto's catch-all for *.amazonaws.com, answers."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def table(aws, monkeypatch):
    """The state table (also Powertools' idempotency table), partition key `id`."""
    client = create_state_table(TABLE)
    monkeypatch.setenv("EIC_GUARD_STATE_TABLE", TABLE)
    return DynamoDbStateStore(client, TABLE)


@pytest.fixture
def state_2022(table):
    """A managed group holding the user's rule, refreshed from 2022-04-27 (IPv4 only) at T0."""
    group = new_group(permissions=(USER_RULE,))
    refresh(table, snapshot("2022-04-27"))
    assert ingress_of(group) == {("tcp", 22, 22, "203.0.113.0/24", "office VPN")} | eic_rules(REGION, EIC_US_EAST_1)
    return group


@pytest.fixture
def log_messages():
    """Messages eic-guard logs (the CLI tests may have raised the shared logger's level to WARNING)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect(level=logging.INFO)
    level = powertools_logger.log_level
    powertools_logger.setLevel("INFO")
    powertools_logger.addHandler(handler)
    yield messages
    powertools_logger.removeHandler(handler)
    powertools_logger.setLevel(level)


# ---- bad inputs ---------------------------------------------------------------------------------------------------
INVALID_JSON = b'{"syncToken": "1787411825", "createDate": '
BAD_INPUTS = {
    # id: (event, how AWS answers, exception, reason, requests expected at the pinned URL)
    "wrong-md5": (event("sns-ip-space-changed-wrong-md5.json"), "newest", IpRangesError, "md5-mismatch", 1),
    "truncated-body": (event("sns-ip-space-changed-current.json"), "truncated", IpRangesError, "md5-mismatch", 1),
    "invalid-json": (
        with_message(
            {
                "create-time": "2026-08-22-16-00-00",
                "synctoken": "1787415600",
                "md5": hashlib.md5(INVALID_JSON).hexdigest(),
            }
        ),
        "invalid-json",
        IpRangesError,
        "invalid-json",
        1,
    ),
    "timeout": (event("sns-ip-space-changed-current.json"), "timeout", IpRangesError, "download-failed", 1),
    "http-503": (
        event("sns-ip-space-changed-current.json"),
        "503",
        IpRangesError,
        "download-failed",
        2,
    ),  # FETCH_ATTEMPTS
    "foreign-topic": (event("sns-ip-space-changed-foreign-topic.json"), "newest", InvalidEvent, "foreign-topic", 0),
    "empty-record": ({"Records": [{}]}, "newest", InvalidEvent, "malformed-event", 0),
    "eventbridge-event": (event("scheduled-nightly.json"), "newest", InvalidEvent, "malformed-event", 0),
    "message-not-json": (with_message("create-time=2026-08-22"), "newest", InvalidEvent, "malformed-message", 0),
    "message-without-md5": (
        with_message({"create-time": "2026-08-22-15-17-05", "synctoken": "1787411825"}),
        "newest",
        InvalidEvent,
        "malformed-message",
        0,
    ),
}


def answer(http, how: str) -> None:
    if how == "newest":
        http.add(responses.GET, IP_RANGES_URL, body=snapshot_bytes("2026-08-22"))
    elif how == "truncated":
        http.add(responses.GET, IP_RANGES_URL, body=snapshot_bytes("2026-08-22")[:1_000_000])
    elif how == "invalid-json":
        http.add(responses.GET, IP_RANGES_URL, body=INVALID_JSON)
    elif how == "timeout":
        http.add(responses.GET, IP_RANGES_URL, body=requests.exceptions.ConnectTimeout("connect timed out"))
    elif how == "503":
        http.add(responses.GET, IP_RANGES_URL, status=503, body=b"Service Unavailable")  # every attempt
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_rejected_with_its_reason_and_changes_nothing(state_2022, table, http, api_calls, capsys, case):
    # Given the state and group at 2022-04-27, and AWS answering as the case says
    evt, how, error, reason, expected_requests = BAD_INPUTS[case]
    answer(http, how)
    http.add(responses.GET, "https://attacker.example/ip-ranges.json", body=snapshot_bytes("2026-08-22"))
    rules_before, state_before = ingress_of(state_2022), table.load()
    capsys.readouterr()
    api_calls.clear()

    # When the handler is invoked
    with pytest.raises(error) as raised:
        invoke(evt)

    # Then it raises with the reason, emits one RefreshRejected metric with that reason, fetched only the
    # pinned URL (or nothing at all), and changed no security group and no state
    assert raised.value.reason == reason
    blobs = metric_blobs(capsys.readouterr().out, "RefreshRejected")
    assert [(b["Reason"], b["RefreshRejected"]) for b in blobs] == [(reason, [1.0])]
    assert blobs[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "EicGuard"
    assert [c.request.url for c in http.calls] == [IP_RANGES_URL] * expected_requests
    assert sg_writes(api_calls) == []
    assert ingress_of(state_2022) == rules_before
    assert table.load() == state_before


def test_real_2017_event_with_its_real_file_is_rejected_as_empty(table, http, api_calls, capsys):
    # Given no state yet, a managed group that already holds an eic-guard rule (state lost) and the user's rule,
    # and AWS serving the real 2017 file, whose md5 is the one in the real 2017 event
    group = new_group(permissions=(USER_RULE, tcp(22, EIC_US_EAST_1, "eic-guard EC2_INSTANCE_CONNECT us-east-1")))
    rules_before = ingress_of(group)
    http.add(responses.GET, IP_RANGES_URL, body=(IP_RANGES / "ip-ranges-2017-11-30.json").read_bytes())
    capsys.readouterr()
    api_calls.clear()

    # When the real 2017 event is handled
    with pytest.raises(IpRangesError) as raised:
        invoke(event("sns-ip-space-changed-2017-11-30-real.json"))

    # Then it is refused because the file has no EIC prefix (its md5 was right), nothing was revoked
    assert raised.value.reason == "empty-eic-set"
    assert [b["Reason"] for b in metric_blobs(capsys.readouterr().out, "RefreshRejected")] == ["empty-eic-set"]
    assert sg_writes(api_calls) == []
    assert ingress_of(group) == rules_before
    assert table.load().sync_token is None


# ---- accepted notifications ---------------------------------------------------------------------------------------
def test_current_notification_downloads_the_pinned_url_and_applies(state_2022, table, http, api_calls, capsys):
    # Given the state at 2022-04-27 and AWS serving 2026-08-22
    http.add(responses.GET, IP_RANGES_URL, body=snapshot_bytes("2026-08-22"))
    api_calls.clear()

    # When the current notification is handled
    summary = invoke(event("sns-ip-space-changed-current.json"))

    # Then the IPv6 prefix is added, the user's rule stays, the state advances, and metrics are emitted
    assert summary["status"] == "applied" and summary["sync_token"] == "1787411825"
    assert (summary["prefixes_added"], summary["prefixes_revoked"], summary["alerts"]) == (1, 0, [])
    assert ingress_of(state_2022) == {("tcp", 22, 22, "203.0.113.0/24", "office VPN")} | eic_rules(
        REGION, EIC_US_EAST_1, EIC_US_EAST_1_V6
    )
    assert sg_writes(api_calls) == ["AuthorizeSecurityGroupIngress"]
    assert [c.request.url for c in http.calls] == [IP_RANGES_URL]
    assert (table.load().sync_token, table.load().md5) == ("1787411825", NEWEST_MD5)
    out = capsys.readouterr().out
    assert metric_blobs(out, "RefreshRejected") == []
    assert [b["PrefixesAdded"] for b in metric_blobs(out, "PrefixesAdded")] == [[1.0]]


def test_url_in_the_message_is_never_followed(state_2022, table, http, monkeypatch):
    # Given the other account's topic allowed by configuration, its Message pointing at another host
    evt = event("sns-ip-space-changed-foreign-topic.json")
    monkeypatch.setenv(
        "EIC_GUARD_IP_RANGES_TOPIC_ARNS",
        ",".join(["arn:aws:sns:us-east-1:806199016981:AmazonIpSpaceChanged", evt["Records"][0]["Sns"]["TopicArn"]]),
    )
    http.add(responses.GET, IP_RANGES_URL, body=snapshot_bytes("2026-08-22"))
    elsewhere = http.add(responses.GET, "https://attacker.example/ip-ranges.json", body=b"{}")

    # When it is handled
    summary = invoke(evt)

    # Then the file came from the pinned URL only
    assert summary["status"] == "applied"
    assert [c.request.url for c in http.calls] == [IP_RANGES_URL]
    assert elsewhere.call_count == 0


def test_one_503_then_200_succeeds_through_the_retry(state_2022, table, api_calls):
    # Given AWS answering 503 once, then the file
    with responses.RequestsMock(registry=OrderedRegistry) as http:
        http.add(responses.GET, IP_RANGES_URL, status=503)
        http.add(responses.GET, IP_RANGES_URL, body=snapshot_bytes("2026-08-22"))

        # When the current notification is handled
        summary = invoke(event("sns-ip-space-changed-current.json"))

        # Then the second attempt's file is applied
        assert len(http.calls) == 2
    assert summary["status"] == "applied" and summary["prefixes_added"] == 1
    assert table.load().sync_token == "1787411825"


def test_rejected_notification_succeeds_when_lambda_retries_it(state_2022, table, http):
    # Given a first delivery that failed on a 503 (so Powertools released the synctoken)
    http.add(responses.GET, IP_RANGES_URL, status=503)
    with pytest.raises(IpRangesError):
        invoke(event("sns-ip-space-changed-current.json"))
    http.replace(responses.GET, IP_RANGES_URL, body=snapshot_bytes("2026-08-22"))

    # When Lambda retries the same event
    summary = invoke(event("sns-ip-space-changed-current.json"), request_id="retry")

    # Then it is applied
    assert summary["status"] == "applied" and summary["prefixes_added"] == 1
    assert EIC_US_EAST_1_V6 in {rule[3] for rule in ingress_of(state_2022)}


def test_replayed_notification_is_answered_from_the_first_run(state_2022, table, http, api_calls):
    # Given the current notification handled once
    http.add(responses.GET, IP_RANGES_URL, body=snapshot_bytes("2026-08-22"))
    first = invoke(event("sns-ip-space-changed-current.json"))
    rules, state = ingress_of(state_2022), table.load()
    api_calls.clear()

    # When SNS delivers the same synctoken again
    second = invoke(event("sns-ip-space-changed-current.json"), request_id="redelivery")

    # Then it returns the first run's summary without downloading or writing anything
    assert second == first
    assert len(http.calls) == 1
    assert sg_writes(api_calls) == []
    assert ingress_of(state_2022) == rules and table.load() == state


def test_same_synctoken_twice_is_a_duplicate_below_the_idempotency_layer(state_2022, table, http, api_calls):
    # Given the current notification applied once by handle_notification
    http.add(responses.GET, IP_RANGES_URL, body=snapshot_bytes("2026-08-22"))
    settings = Settings.build(regions=(REGION,))
    change = parse_ip_space_notification(event("sns-ip-space-changed-current.json"), settings.ip_ranges_topic_arns)
    assert handle_notification(change, _shared["clients"], settings, table)["status"] == "applied"
    api_calls.clear()

    # When the same change is handled again (e.g. after the idempotency record expired)
    result = handle_notification(change, _shared["clients"], settings, table)

    # Then it is a duplicate: no download, no EC2 call at all
    assert result == {"status": "duplicate", "sync_token": "1787411825", "stored_sync_token": "1787411825"}
    assert len(http.calls) == 1
    assert [n for n in api_calls.names() if n != "GetItem"] == []  # only the state was read


def test_stale_notification_after_the_current_one_is_a_logged_no_op(state_2022, table, http, api_calls, log_messages):
    # Given the current notification applied
    http.add(responses.GET, IP_RANGES_URL, body=snapshot_bytes("2026-08-22"))
    invoke(event("sns-ip-space-changed-current.json"))
    rules, state = ingress_of(state_2022), table.load()
    api_calls.clear()
    log_messages.clear()

    # When the older 2026-05-29 notification arrives late
    result = invoke(event("sns-ip-space-changed-stale.json"), request_id="late")

    # Then it is a stale no-op: logged, not downloaded, nothing written, state unchanged
    assert result == {"status": "stale", "sync_token": "1780065426", "stored_sync_token": "1787411825"}
    assert "notification stale: nothing to do" in log_messages
    assert len(http.calls) == 1
    assert sg_writes(api_calls) == []
    assert ingress_of(state_2022) == rules and table.load() == state


def test_two_concurrent_invocations_of_the_same_event_apply_once(state_2022, table, http, api_calls):
    # Given AWS serving the file slowly, and two invocations with the same event starting together
    def slow_file(request):
        threading.Event().wait(0.5)  # keeps the first invocation in its download while the second starts
        return 200, {}, snapshot_bytes("2026-08-22")

    http.add_callback(responses.GET, IP_RANGES_URL, callback=slow_file)
    start = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def run(request_id: str) -> None:
        start.wait()
        try:
            outcomes[request_id] = invoke(event("sns-ip-space-changed-current.json"), request_id=request_id)
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            outcomes[request_id] = exc

    threads = [threading.Thread(target=run, args=(name,)) for name in ("first", "second")]
    api_calls.clear()

    # When both run at once
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    # Then one applied the change and the other was turned away as in progress (or got the same summary)
    summaries = [o for o in outcomes.values() if isinstance(o, dict)]
    others = [o for o in outcomes.values() if not isinstance(o, dict)]
    assert len(outcomes) == 2 and summaries, outcomes
    assert summaries[0]["status"] == "applied" and summaries[0]["prefixes_added"] == 1
    assert all(isinstance(o, IdempotencyAlreadyInProgressError) for o in others), others
    assert all(s == summaries[0] for s in summaries)
    # and the change was made once: one download, at most one authorization, each rule present once
    assert len(http.calls) == 1
    assert api_calls.count("AuthorizeSecurityGroupIngress") == 1
    group = boto3.client("ec2", REGION).describe_security_groups(GroupIds=[state_2022])["SecurityGroups"][0]
    sources = [r["CidrIpv6"] for p in group["IpPermissions"] for r in p.get("Ipv6Ranges", ())]
    assert sources == [EIC_US_EAST_1_V6]
    assert table.load().sync_token == "1787411825"


# ---- nightly catch-up through the scan handler --------------------------------------------------------------------
def test_nightly_scan_refreshes_first_then_reuses_the_stored_copy_on_304(
    nightly_execution, table, http, api_calls, runs_bucket
):
    # Given a managed group, no state yet, and AWS serving 2026-08-22
    group = new_group()
    http.add(responses.GET, IP_RANGES_URL, body=snapshot_bytes("2026-08-22"))

    # When the nightly scan runs
    first = nightly_execution("night-1")

    # Then it refreshed the ranges before scanning
    assert first["refresh"]["status"] == "applied" and first["refresh"]["sync_token"] == "1787411825"
    assert first["refresh"]["prefixes_added"] == 2
    assert first["ip_ranges"]["sync_token"] == "1787411825"
    assert ingress_of(group) == eic_rules(REGION, EIC_US_EAST_1, EIC_US_EAST_1_V6)
    assert http.calls[0].request.headers.get("If-None-Match") is None  # nothing stored to compare with yet

    # Given the next night AWS answers 304 Not Modified
    http.replace(responses.GET, IP_RANGES_URL, status=304)
    api_calls.clear()

    # When the nightly scan runs again
    second = nightly_execution("night-2")

    # Then it asked with the stored md5 as ETag, reused the stored prefixes and wrote nothing
    assert http.calls[1].request.headers["If-None-Match"] == f'"{NEWEST_MD5}"'
    assert second["refresh"]["status"] == "applied" and second["refresh"]["sync_token"] == "1787411825"
    assert second["refresh"]["prefixes_added"] == 0
    assert sg_writes(api_calls) == []
    assert table.load().sync_token == "1787411825"


def test_nightly_scan_keeps_the_newer_state_when_served_an_older_file(
    nightly_execution, table, http, api_calls, runs_bucket
):
    # Given the state at 2026-08-22 and a cache serving the older 2026-06-01 file
    group = new_group()
    refresh(table, snapshot("2026-08-22"))
    http.add(responses.GET, IP_RANGES_URL, body=snapshot_bytes("2026-06-01"))
    api_calls.clear()

    # When the nightly scan runs
    result = nightly_execution("night")

    # Then it used the stored 2026-08-22 prefixes and the state did not go back
    assert result["refresh"]["sync_token"] == "1787411825"
    assert table.load().sync_token == "1787411825"
    assert sg_writes(api_calls) == []
    assert ingress_of(group) == eic_rules(REGION, EIC_US_EAST_1, EIC_US_EAST_1_V6)
    assert table.load().last_seen[REGION][EIC_US_EAST_1] > T0 + timedelta(days=1)  # seen again tonight


def test_report_mode_catch_up_plans_the_new_prefixes_and_writes_nothing_to_ec2(
    nightly_execution, state_2022, table, http, api_calls, monkeypatch, runs_bucket
):
    # Given a report-mode stack whose state and managed group are at 2022-04-27, a reports bucket, and AWS serving
    # 2026-08-22 (which adds the IPv6 prefix)
    monkeypatch.setenv("EIC_GUARD_MODE", "report")
    s3 = boto3.client("s3", REGION)
    http.add(responses.GET, IP_RANGES_URL, body=snapshot_bytes("2026-08-22"))
    rules_before, state_before = ingress_of(state_2022), table.load()
    api_calls.clear()

    # When the nightly scan runs
    result = nightly_execution("night")

    # Then the catch-up planned the new prefix instead of writing it: the role of a report-mode stack has no EC2
    # write, and the state stays at 2022 so that the SNS refresh still applies the file
    assert set(api_calls.writes()) == {"PutObject"}  # the JSON and HTML report, nothing else
    assert ingress_of(state_2022) == rules_before
    assert table.load() == state_before
    assert result["refresh"]["status"] == "planned"
    assert result["refresh"]["prefixes_added"] == 1
    # And the report lists the would-be change as a planned action of the region
    key = f"{result['report_key']}.json"
    report = json.loads(s3.get_object(Bucket="eic-guard-reports", Key=key)["Body"].read())
    assert [(a["action"], a["resource"], a["status"], a["region"]) for a in report["target_actions"]] == [
        ("authorize-ingress", state_2022, "planned", REGION)
    ]
    assert EIC_US_EAST_1_V6 in report["target_actions"][0]["detail"]


def test_state_table_is_read_in_the_functions_region_whatever_the_first_scanned_region(
    nightly_execution, table, http, api_calls, monkeypatch, runs_bucket
):
    # Given a stack in us-east-1 (its table there) scanning eu-west-1 first, and a managed group in us-east-1
    monkeypatch.setenv("EIC_GUARD_REGIONS", "eu-west-1,us-east-1")
    group = new_group()
    http.add(responses.GET, IP_RANGES_URL, body=snapshot_bytes("2026-08-22"))

    # When the nightly scan runs
    result = nightly_execution("night")

    # Then the catch-up read and advanced the state in the function's region and refreshed both regions
    assert result["refresh"]["status"] == "applied"
    assert result["regions"] == ["eu-west-1", REGION]
    assert table.load().sync_token == "1787411825"
    assert set(table.load().current) == {"eu-west-1", REGION}
    assert ingress_of(group) == eic_rules(REGION, EIC_US_EAST_1, EIC_US_EAST_1_V6)


def _conflicting_save(self, state, previous_token):
    raise StateConflict("the ip-ranges state was advanced by another run")


def _unreadable_table(self):
    raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, "GetItem")


@NO_APP_METRICS
@pytest.mark.parametrize(
    ("patch", "reason"),
    [(("save", _conflicting_save), "state-conflict"), (("load", _unreadable_table), "aws-error")],
    ids=["state-conflict", "table-unreadable"],
)
def test_every_rejection_is_counted_with_a_reason_even_when_it_is_not_an_input_error(
    state_2022, table, http, capsys, monkeypatch, patch, reason
):
    # Given AWS serving the newest file, and the state table failing in a way that is no fault of the input
    http.add(responses.GET, IP_RANGES_URL, body=snapshot_bytes("2026-08-22"))
    monkeypatch.setattr(DynamoDbStateStore, *patch)
    capsys.readouterr()

    # When the current notification is handled
    with pytest.raises((StateConflict, ClientError)):
        invoke(event("sns-ip-space-changed-current.json"))

    # Then the invocation fails (SNS retries it) and one RefreshRejected metric names the reason
    blobs = metric_blobs(capsys.readouterr().out, "RefreshRejected")
    assert [(b["Reason"], b["RefreshRejected"]) for b in blobs] == [(reason, [1.0])]
