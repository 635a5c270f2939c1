"""Large answers parsed one at a time (aws/clients.py OneLargeParseAtATime, docs/architecture.md §15): the CLI's
target threads parse two regions' DescribeInstances answers one after the other, so the scan's peak memory holds
one answer's parse, not the sum; small answers and every request stay concurrent."""

from __future__ import annotations

import gc
import threading
import time

import boto3
import pytest
from botocore.parsers import EC2QueryParser
from eic_guard.aws import clients as clients_module
from eic_guard.aws.clients import AwsClients, OneLargeParseAtATime
from moto import mock_aws

REGIONS = ("us-east-1", "eu-west-1")


class Overlap:
    """Wraps EC2QueryParser.parse: how many parses were running at once, at most (each lingers 50 ms, the GIL
    released, so that two threads free to parse together do)."""

    def __init__(self, parse):
        self._parse, self._lock, self.now, self.most = parse, threading.Lock(), 0, 0

    def __call__(self, parser, response, shape):
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(0.05)
            return self._parse(parser, response, shape)
        finally:
            with self._lock:
                self.now -= 1


def _describe_in_two_threads(clients: AwsClients) -> list[int]:
    start = threading.Barrier(len(REGIONS))
    found: list[int] = []

    def describe(region: str) -> None:
        ec2 = clients.ec2(region)
        start.wait()
        reservations = ec2.describe_instances()["Reservations"]
        found.append(sum(len(r["Instances"]) for r in reservations))

    threads = [threading.Thread(target=describe, args=(region,)) for region in REGIONS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return found


@pytest.fixture
def overlap(monkeypatch):
    tracker = Overlap(EC2QueryParser.parse)
    monkeypatch.setattr(EC2QueryParser, "parse", lambda self, response, shape: tracker(self, response, shape))
    with mock_aws():
        for region in REGIONS:
            ec2 = boto3.client("ec2", region_name=region)
            image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
            ec2.run_instances(ImageId=image, MinCount=3, MaxCount=3)
        yield tracker


def test_two_threads_parse_their_large_answers_one_after_the_other(overlap, monkeypatch):
    # Given answers above the threshold (lowered: 3 instances make a few KB)
    monkeypatch.setattr(clients_module, "LARGE_RESPONSE_BYTES", 1024)
    clients = AwsClients(boto3.Session(region_name="us-east-1"))

    # When two threads describe their region's instances at the same moment
    found = _describe_in_two_threads(clients)

    # Then both answers are whole, and they were never parsed at the same time
    assert found == [3, 3]
    assert overlap.most == 1


def test_small_answers_are_parsed_concurrently(overlap, monkeypatch):
    # Given answers below the threshold
    monkeypatch.setattr(clients_module, "LARGE_RESPONSE_BYTES", 1 << 30)
    clients = AwsClients(boto3.Session(region_name="us-east-1"))

    # When two threads describe at the same moment, Then their parses overlap (nothing waits for nothing)
    assert _describe_in_two_threads(clients) == [3, 3]
    assert overlap.most == 2


def test_the_session_keeps_one_factory_and_its_timestamp_parser():
    # Given a session two AwsClients are built from (the CLI's and a phase's)
    session = boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    AwsClients(session)
    factory = session._session.get_component("response_parser_factory")
    AwsClients(session)

    # Then the session has one serializing factory, which still parses timestamps with the standard library
    assert isinstance(factory, OneLargeParseAtATime)
    assert session._session.get_component("response_parser_factory") is factory
    assert factory._defaults["timestamp_parser"] is clients_module.parse_timestamp


class CollectorSeen:
    """Wraps EC2QueryParser.parse: whether the cyclic collector was enabled during each parse."""

    def __init__(self, parse):
        self._parse, self.enabled = parse, []

    def __call__(self, parser, response, shape):
        self.enabled.append(gc.isenabled())
        return self._parse(parser, response, shape)


@pytest.fixture
def two_regions():
    with mock_aws():
        for region in REGIONS:
            ec2 = boto3.client("ec2", region_name=region)
            image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
            ec2.run_instances(ImageId=image, MinCount=3, MaxCount=3)
        yield


def test_a_large_answer_is_parsed_with_the_collector_paused_and_restored(two_regions, monkeypatch):
    # Given a large answer (threshold lowered), and a small one
    seen = CollectorSeen(EC2QueryParser.parse)
    monkeypatch.setattr(EC2QueryParser, "parse", lambda self, response, shape: seen(self, response, shape))
    monkeypatch.setattr(clients_module, "LARGE_RESPONSE_BYTES", 1024)
    ec2 = AwsClients(boto3.Session(region_name="us-east-1")).ec2("us-east-1")

    # When each is parsed
    ec2.describe_instances()
    ec2.describe_key_pairs()

    # Then the collector was paused for the large one only, and is on again
    assert seen.enabled == [False, True]
    assert gc.isenabled()


def test_a_collector_paused_by_someone_else_stays_paused(two_regions, monkeypatch):
    monkeypatch.setattr(clients_module, "LARGE_RESPONSE_BYTES", 1024)
    ec2 = AwsClients(boto3.Session(region_name="us-east-1")).ec2("us-east-1")
    gc.disable()
    try:
        ec2.describe_instances()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_page_read_keeps_the_turn_until_the_next_request_or_the_end_of_the_read(two_regions, monkeypatch):
    # Given a large answer read inside reading_large_answers() (the inventory's DescribeInstances pages)
    monkeypatch.setattr(clients_module, "LARGE_RESPONSE_BYTES", 1024)
    ec2 = AwsClients(boto3.Session(region_name="us-east-1")).ec2("us-east-1")
    turn = OneLargeParseAtATime._turn

    with OneLargeParseAtATime.reading_large_answers():
        ec2.describe_instances()
        # Then the thread keeps the turn while it makes its records of the page
        assert turn.locked()
        # and gives it back as it sends its next request (a small answer takes no turn)
        ec2.describe_key_pairs()
        assert not turn.locked()
        ec2.describe_instances()
        assert turn.locked()
    # and at the end of the read
    assert not turn.locked()


def test_another_threads_large_answer_waits_until_the_page_is_read(two_regions, monkeypatch):
    # Given thread A reading a large page and making its records for 0.3 s, thread B asking for its own large answer
    monkeypatch.setattr(clients_module, "LARGE_RESPONSE_BYTES", 1024)
    clients = AwsClients(boto3.Session(region_name="us-east-1"))
    parsed, events = threading.Event(), []
    b_started = threading.Event()
    original = EC2QueryParser.parse

    def recording(self, response, shape):
        events.append(("parse", threading.current_thread().name))
        return original(self, response, shape)

    monkeypatch.setattr(EC2QueryParser, "parse", recording)

    def a():
        with OneLargeParseAtATime.reading_large_answers():
            clients.ec2("us-east-1").describe_instances()
            parsed.set()
            b_started.wait(5)
            time.sleep(0.3)
            events.append(("a done with its page", "a"))

    def b():
        parsed.wait(5)
        ec2 = clients.ec2("eu-west-1")
        b_started.set()
        ec2.describe_instances()

    threads = [threading.Thread(target=a, name="a"), threading.Thread(target=b, name="b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then B's parse came after A was done with its page
    assert events == [("parse", "a"), ("a done with its page", "a"), ("parse", "b")]
