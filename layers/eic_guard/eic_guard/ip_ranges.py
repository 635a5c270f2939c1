"""ip-ranges.json: fetch (pinned URL or a local file), verify (md5, shape) and select the EIC prefixes."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .errors import IpRangesError
from .models import EicPrefixes
from .settings import IP_RANGES_URL

EIC_SERVICE = "EC2_INSTANCE_CONNECT"
REQUIRED_KEYS = ("syncToken", "createDate", "prefixes", "ipv6_prefixes")
FETCH_TIMEOUT = (5, 30)  # connect, read (seconds)


@dataclass(frozen=True)
class IpRanges:
    """A verified ip-ranges.json reduced to what eic-guard needs: its identity and the EIC prefixes by region."""

    sync_token: str
    create_date: str
    md5: str
    eic: dict[str, EicPrefixes]

    def for_region(self, region: str) -> EicPrefixes:
        return self.eic.get(region, EicPrefixes(region))


def _http_session() -> requests.Session:
    retry = Retry(total=3, backoff_factor=0.5, status_forcelist=(500, 502, 503, 504), allowed_methods=("GET",))
    session = requests.Session()
    session.mount("https://", HTTPAdapter(max_retries=retry))
    session.mount("http://", HTTPAdapter(max_retries=retry))
    return session


def fetch_bytes(source: str | None = None, if_none_match: str | None = None) -> bytes | None:
    """Download the pinned URL (or `source`: a URL or a local path) and return the exact bytes.

    With `if_none_match` (the md5 of the copy we hold, which is the file's ETag) a 304 answer returns None.
    """
    source = source or IP_RANGES_URL
    if not source.startswith(("https://", "http://")):
        try:
            return Path(source).read_bytes()
        except OSError as exc:
            raise IpRangesError("unreadable", f"cannot read ip-ranges file {source}: {exc.strerror}") from None
    try:
        headers = {"If-None-Match": f'"{if_none_match}"'} if if_none_match else {}
        response = _http_session().get(source, timeout=FETCH_TIMEOUT, headers=headers)
        if response.status_code == 304 and if_none_match:
            return None
        response.raise_for_status()
        # .content would silently accept a body shorter than Content-Length; urllib3 enforces it by default.
        return response.content
    except requests.RequestException as exc:
        raise IpRangesError("download-failed", f"cannot download {source}: {exc}") from None


def parse(raw: bytes, expected_md5: str | None = None) -> IpRanges:
    """Verify `raw` (md5 when given, JSON shape) and select the EC2_INSTANCE_CONNECT prefixes per region."""
    digest = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    if expected_md5 is not None and digest != expected_md5.lower():
        raise IpRangesError("md5-mismatch", f"ip-ranges.json md5 is {digest}, expected {expected_md5}")
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IpRangesError("invalid-json", f"ip-ranges.json is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise IpRangesError("invalid-shape", "ip-ranges.json is not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in document]
    if missing:
        raise IpRangesError("invalid-shape", f"ip-ranges.json lacks {', '.join(missing)}")
    try:
        eic = _select_eic(document["prefixes"], document["ipv6_prefixes"])
    except (TypeError, KeyError, ValueError) as exc:
        raise IpRangesError("invalid-shape", f"ip-ranges.json has a malformed prefix entry: {exc}") from None
    return IpRanges(str(document["syncToken"]), str(document["createDate"]), digest, eic)


def load(source: str | None = None, expected_md5: str | None = None) -> IpRanges:
    """Fetch and parse in one step."""
    raw = fetch_bytes(source)
    assert raw is not None  # no If-None-Match was sent
    return parse(raw, expected_md5)


def _select_eic(prefixes: list[dict], ipv6_prefixes: list[dict]) -> dict[str, EicPrefixes]:
    v4: dict[str, set[ipaddress.IPv4Network]] = {}
    v6: dict[str, set[ipaddress.IPv6Network]] = {}
    for entry in prefixes:
        if entry["service"] == EIC_SERVICE:
            v4.setdefault(entry["region"], set()).add(ipaddress.IPv4Network(entry["ip_prefix"]))
    for entry in ipv6_prefixes:
        if entry["service"] == EIC_SERVICE:
            v6.setdefault(entry["region"], set()).add(ipaddress.IPv6Network(entry["ipv6_prefix"]))
    return {
        region: EicPrefixes(region, tuple(sorted(v4.get(region, ()))), tuple(sorted(v6.get(region, ()))))
        for region in sorted(v4.keys() | v6.keys())
    }
