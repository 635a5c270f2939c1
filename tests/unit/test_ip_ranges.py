"""ip_ranges: fetch (URL or path), verify (md5, shape) and select the EIC prefixes, on real snapshots
(docs/architecture.md §3)."""

from __future__ import annotations

import hashlib
import json
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

import pytest
import requests
import responses
from eic_guard.errors import IpRangesError
from eic_guard.models import EicPrefixes
from eic_guard.ranges import ip_ranges
from eic_guard.settings import IP_RANGES_URL

FIXTURES = Path(__file__).parents[1] / "fixtures" / "ip-ranges"
MANIFEST = json.loads((FIXTURES / "MANIFEST.json").read_text())["files"]
SMALL = FIXTURES / "ip-ranges-2017-11-30.json"


@pytest.fixture(scope="module")
def parsed() -> dict[str, ip_ranges.IpRanges]:
    """Every real snapshot, parsed once with the md5 the manifest records."""
    return {name: ip_ranges.parse((FIXTURES / name).read_bytes(), meta["md5"]) for name, meta in MANIFEST.items()}


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_real_snapshot_identity_and_eic_prefixes_match_the_manifest(parsed, name):
    # Given a real ip-ranges.json snapshot and its independently recorded manifest entry
    meta = MANIFEST[name]

    # When
    ranges = parsed[name]

    # Then
    assert (ranges.sync_token, ranges.create_date, ranges.md5) == (meta["syncToken"], meta["createDate"], meta["md5"])
    assert {r: ([str(p) for p in e.ipv4], [str(p) for p in e.ipv6]) for r, e in ranges.eic.items()} == {
        r: (sorted(v["ipv4"]), sorted(v["ipv6"])) for r, v in meta["eic"].items()
    }


def test_2026_us_east_1_has_one_ipv4_and_one_ipv6_prefix(parsed):
    # Given the newest snapshot
    ranges = parsed["ip-ranges-2026-08-22.json"]

    # When
    us_east_1 = ranges.for_region("us-east-1")

    # Then
    assert us_east_1 == EicPrefixes(
        "us-east-1", (IPv4Network("18.206.107.24/29"),), (IPv6Network("2600:1f18:6fe3:8c00::/56"),)
    )
    assert len(ranges.eic) == 37
    assert ranges.create_date == "2026-08-22-15-17-05"


def test_2017_snapshot_predates_eic(parsed):
    # Given a snapshot from before EC2 Instance Connect existed
    ranges = parsed["ip-ranges-2017-11-30.json"]

    # When / Then
    assert ranges.eic == {}
    assert ranges.for_region("us-east-1") == EicPrefixes("us-east-1", (), ())


def test_2022_snapshot_has_ipv4_but_no_ipv6(parsed):
    # Given the 2022 snapshot (EIC IPv6 ranges came later)
    ranges = parsed["ip-ranges-2022-04-27.json"]

    # When
    us_east_1 = ranges.for_region("us-east-1")

    # Then
    assert us_east_1.ipv4 == (IPv4Network("18.206.107.24/29"),)
    assert us_east_1.ipv6 == ()
    assert all(not e.ipv6 for e in ranges.eic.values())


def test_md5_comparison_ignores_case():
    # Given the md5 in upper case
    raw = SMALL.read_bytes()

    # When
    ranges = ip_ranges.parse(raw, MANIFEST[SMALL.name]["md5"].upper())

    # Then
    assert ranges.md5 == MANIFEST[SMALL.name]["md5"]


def test_wrong_md5_is_rejected():
    # Given the bytes of one snapshot and the md5 of another
    raw = SMALL.read_bytes()

    # When
    with pytest.raises(IpRangesError) as caught:
        ip_ranges.parse(raw, MANIFEST["ip-ranges-2022-04-27.json"]["md5"])

    # Then
    assert caught.value.reason == "md5-mismatch"


def test_one_changed_byte_breaks_the_md5():
    # Given a snapshot with one byte altered
    raw = bytearray(SMALL.read_bytes())
    raw[100] ^= 1

    # When / Then
    with pytest.raises(IpRangesError) as caught:
        ip_ranges.parse(bytes(raw), MANIFEST[SMALL.name]["md5"])
    assert caught.value.reason == "md5-mismatch"


@pytest.mark.parametrize("raw", [SMALL.read_bytes()[:70_000], b"", b"\xff\xfe{}", b"<html>503</html>"])
def test_truncated_or_non_json_bytes_are_invalid_json(raw):
    # Given bytes that are not a JSON document
    # When
    with pytest.raises(IpRangesError) as caught:
        ip_ranges.parse(raw)

    # Then
    assert caught.value.reason == "invalid-json"


def small_document(**changes) -> bytes:
    document = json.loads(SMALL.read_bytes())
    document.update(changes)
    return json.dumps({k: v for k, v in document.items() if v is not None}).encode()


@pytest.mark.parametrize("key", ["syncToken", "createDate", "prefixes", "ipv6_prefixes"])
def test_missing_key_is_invalid_shape(key):
    # Given a valid document with one required key removed
    raw = small_document(**{key: None})

    # When
    with pytest.raises(IpRangesError) as caught:
        ip_ranges.parse(raw)

    # Then
    assert caught.value.reason == "invalid-shape"
    assert key in str(caught.value)


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b'"ip-ranges"',
        small_document(prefixes=[{"region": "us-east-1", "service": "EC2_INSTANCE_CONNECT"}]),
        small_document(
            prefixes=[{"ip_prefix": "18.206.107.24/33", "region": "us-east-1", "service": "EC2_INSTANCE_CONNECT"}]
        ),
        small_document(prefixes="nope"),
    ],
    ids=["array", "string", "eic-entry-without-prefix", "bad-prefix", "prefixes-not-a-list"],
)
def test_malformed_documents_are_invalid_shape(raw):
    # Given JSON that is not an ip-ranges document
    # When
    with pytest.raises(IpRangesError) as caught:
        ip_ranges.parse(raw)

    # Then
    assert caught.value.reason == "invalid-shape"


def test_selection_dedupes_and_ignores_other_services():
    # Given a document listing the same EIC prefix twice and an EC2 prefix in the same region
    eic = {"ip_prefix": "18.206.107.24/29", "region": "us-east-1", "service": "EC2_INSTANCE_CONNECT"}
    ec2 = {"ip_prefix": "3.0.0.0/15", "region": "us-east-1", "service": "EC2"}
    raw = small_document(prefixes=[eic, ec2, eic], ipv6_prefixes=[])

    # When
    ranges = ip_ranges.parse(raw)

    # Then
    assert ranges.eic == {"us-east-1": EicPrefixes("us-east-1", (IPv4Network("18.206.107.24/29"),), ())}


@responses.activate
def test_fetch_from_the_pinned_url_returns_the_exact_bytes():
    # Given the pinned URL answering with a real snapshot
    body = SMALL.read_bytes()
    responses.get(IP_RANGES_URL, body=body)

    # When
    raw = ip_ranges.fetch_bytes()

    # Then
    assert raw == body
    assert hashlib.md5(raw).hexdigest() == MANIFEST[SMALL.name]["md5"]


@responses.activate
def test_fetch_retries_a_server_error():
    # Given one 500 and then the file
    body = SMALL.read_bytes()
    responses.get(IP_RANGES_URL, status=500)
    responses.get(IP_RANGES_URL, body=body)

    # When
    raw = ip_ranges.fetch_bytes(IP_RANGES_URL)

    # Then
    assert raw == body
    assert len(responses.calls) == 2


@pytest.mark.parametrize(
    "answer",
    [
        {"status": 404},
        {"status": 403},
        {"status": 503},
        {"body": requests.exceptions.ConnectTimeout("connect timed out")},
        {"body": requests.exceptions.ReadTimeout("read timed out")},
        {"body": requests.exceptions.ConnectionError("connection refused")},
    ],
    ids=["404", "403", "503-every-time", "connect-timeout", "read-timeout", "connection-error"],
)
@responses.activate
def test_fetch_failures_are_download_failed(answer):
    # Given the URL answering with an error every time
    responses.get(IP_RANGES_URL, **answer)

    # When
    with pytest.raises(IpRangesError) as caught:
        ip_ranges.fetch_bytes(IP_RANGES_URL)

    # Then
    assert caught.value.reason == "download-failed"


def test_fetch_from_a_local_path_returns_the_exact_bytes():
    # Given a local snapshot
    # When
    raw = ip_ranges.fetch_bytes(str(SMALL))

    # Then
    assert hashlib.md5(raw).hexdigest() == MANIFEST[SMALL.name]["md5"]


@pytest.mark.parametrize("make_path", [lambda tmp: tmp / "missing.json", lambda tmp: tmp])
def test_fetch_from_a_missing_or_unreadable_path_is_unreadable(tmp_path, make_path):
    # Given a path that does not exist (or is a directory)
    path = make_path(tmp_path)

    # When
    with pytest.raises(IpRangesError) as caught:
        ip_ranges.fetch_bytes(str(path))

    # Then
    assert caught.value.reason == "unreadable"
    assert str(path) in str(caught.value)
