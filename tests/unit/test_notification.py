"""AmazonIpSpaceChanged SNS events: what is accepted, and the reason everything else is refused with."""

from __future__ import annotations

import pytest
from eic_guard.events import InvalidEvent, IpSpaceChange, parse_ip_space_notification
from eic_guard.settings import AWS_IP_SPACE_TOPIC

from tests.lambda_runtime import event, with_message

TOPICS = (AWS_IP_SPACE_TOPIC,)
MESSAGE = {
    "create-time": "2026-08-22-15-17-05",
    "synctoken": "1787411825",
    "md5": "63431d35877fa5386ded1a7df9cfa971",
    "url": "https://ip-ranges.amazonaws.com/ip-ranges.json",
}


def refused(evt, topics=TOPICS) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        parse_ip_space_notification(evt, topics)
    return info.value


# ---- accepted -----------------------------------------------------------------------------------------------------
def test_real_2017_event_is_parsed():
    # Given the real delivered 2017 event
    evt = event("sns-ip-space-changed-2017-11-30-real.json")

    # When it is parsed
    change = parse_ip_space_notification(evt, TOPICS)

    # Then its Message fields come out as they were sent
    assert change == IpSpaceChange.model_validate(
        {
            "create-time": "2017-11-30-18-42-12",
            "synctoken": "1512067332",
            "md5": "e0a38abfb954152e33ccdd4a19fea03e",
            "url": "https://ip-ranges.amazonaws.com/ip-ranges.json",
        }
    )


@pytest.mark.parametrize("create_time", ["2026-08-22-15-17-05", "2026-08-22T15:17:05Z", "2026-08-22T15:17:05+00:00"])
def test_both_create_time_formats_are_accepted(create_time):
    # Given the current event's Message with create-time in AWS's form or in ISO 8601
    evt = with_message({**MESSAGE, "create-time": create_time})

    # When it is parsed
    change = parse_ip_space_notification(evt, TOPICS)

    # Then the value is kept as sent
    assert change.create_time == create_time and change.synctoken == "1787411825"


def test_another_topic_is_accepted_when_configured():
    # Given the foreign-topic event and a configuration that lists its topic
    evt = event("sns-ip-space-changed-foreign-topic.json")
    topic = evt["Records"][0]["Sns"]["TopicArn"]

    # When it is parsed with that topic allowed
    change = parse_ip_space_notification(evt, (AWS_IP_SPACE_TOPIC, topic))

    # Then it is accepted (the url inside is recorded, never followed)
    assert change.url == "https://attacker.example/ip-ranges.json"


# ---- refused ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "create_time",
    [
        "yesterday",
        "",
        "2026-99-99-99-99-99",
        "2026-02-30-15-17-05",
        "2026-8-22-15-17-05",
        "2026-08-22T25:17:05Z",
        "1787411825",
    ],
)
def test_garbage_create_time_is_malformed_message(create_time):
    # Given a Message whose create-time is not a date and time in either format
    evt = with_message({**MESSAGE, "create-time": create_time})

    # When it is parsed, Then it is refused as a malformed message naming the field
    error = refused(evt)
    assert error.reason == "malformed-message"
    assert "create-time" in str(error)


def test_foreign_topic_is_refused():
    # Given the event from another account's topic (pointing at another URL)
    evt = event("sns-ip-space-changed-foreign-topic.json")

    # When it is parsed, Then it is refused as foreign-topic, naming the topic
    error = refused(evt)
    assert error.reason == "foreign-topic"
    assert "arn:aws:sns:us-east-1:111122223333:AmazonIpSpaceChanged" in str(error)


@pytest.mark.parametrize(
    "evt",
    [
        pytest.param({"Records": [{}]}, id="empty-record"),
        pytest.param({"Records": []}, id="no-record"),
        pytest.param({}, id="empty-object"),
        pytest.param(None, id="null"),
        pytest.param("Records", id="string"),
        pytest.param(event("scheduled-nightly.json"), id="eventbridge-scheduler"),
        pytest.param(event("scheduled-eventbridge-rule.json"), id="eventbridge-rule"),
    ],
)
def test_not_an_sns_event_is_malformed_event(evt):
    # When something that is not one SNS record is parsed, Then it is refused as malformed-event
    assert refused(evt).reason == "malformed-event"


def test_two_records_are_malformed_event():
    # Given an envelope with the same record twice (SNS delivers one per invocation)
    evt = event("sns-ip-space-changed-current.json")
    evt["Records"] = evt["Records"] * 2

    # When it is parsed, Then it is refused as malformed-event
    error = refused(evt)
    assert error.reason == "malformed-event" and "2" in str(error)


@pytest.mark.parametrize(
    "message",
    [
        pytest.param("not json", id="not-json"),
        pytest.param("", id="empty"),
        pytest.param("[]", id="array"),
        pytest.param({k: v for k, v in MESSAGE.items() if k != "md5"}, id="missing-md5"),
        pytest.param({k: v for k, v in MESSAGE.items() if k != "synctoken"}, id="missing-synctoken"),
        pytest.param({k: v for k, v in MESSAGE.items() if k != "create-time"}, id="missing-create-time"),
        pytest.param({**MESSAGE, "md5": "63431d35"}, id="short-md5"),
        pytest.param({**MESSAGE, "md5": "z" * 32}, id="non-hex-md5"),
        pytest.param({**MESSAGE, "synctoken": "17874118x5"}, id="non-numeric-synctoken"),
        pytest.param({**MESSAGE, "synctoken": "-1"}, id="negative-synctoken"),
    ],
)
def test_malformed_message_is_refused(message):
    # Given the real envelope with a Message that is not a valid AmazonIpSpaceChanged message
    evt = with_message(message)

    # When it is parsed, Then it is refused as malformed-message
    assert refused(evt).reason == "malformed-message"


def test_topic_is_checked_before_the_message():
    # Given a foreign topic whose Message is also garbage
    evt = with_message("not json", base="sns-ip-space-changed-foreign-topic.json")

    # When it is parsed, Then the reason is the topic (the message of a stranger is not even read)
    assert refused(evt).reason == "foreign-topic"
