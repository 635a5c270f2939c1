"""ip-ranges.json: fetch (pinned URL or a local file), verify (md5, shape) and select the EIC prefixes."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..budget import Deadline
from ..errors import IpRangesError
from ..models import EicPrefixes
from ..settings import IP_RANGES_URL

# requests is imported by a download only: the target worker never downloads (the run's manifest has the ranges).
if TYPE_CHECKING:
    import requests

EIC_SERVICE = "EC2_INSTANCE_CONNECT"
REQUIRED_KEYS = ("syncToken", "createDate", "prefixes", "ipv6_prefixes")
FETCH_TIMEOUT = (5, 20)  # connect, read (seconds), per attempt
FETCH_ATTEMPTS = 2  # one retry, on a connection error or a 5xx


@dataclass(frozen=True)
class IpRanges:
    """A verified ip-ranges.json reduced to what eic-guard needs: its identity and the EIC prefixes by region."""

    sync_token: str
    create_date: str
    md5: str
    eic: dict[str, EicPrefixes]
    unavailable: str | None = None  # why there are no ranges at all (the scan then cannot judge the SSH rules)

    @classmethod
    def none_available(cls, why: str) -> IpRanges:
        """No verified file and no stored copy: the scan still runs, the SSH-rule check reports an error."""
        return cls("", "", "", {}, unavailable=why)

    def for_region(self, region: str) -> EicPrefixes:
        return self.eic.get(region, EicPrefixes(region, unavailable=self.unavailable))

    def to_dict(self, regions: tuple[str, ...] | None = None) -> dict:
        """A JSON-ready copy (the run manifest carries it to every target worker), reduced to `regions`."""
        kept = {r: p for r, p in self.eic.items() if regions is None or r in regions}
        return {
            "sync_token": self.sync_token,
            "create_date": self.create_date,
            "md5": self.md5,
            "unavailable": self.unavailable,
            "eic": {r: {"ipv4": [str(n) for n in p.ipv4], "ipv6": [str(n) for n in p.ipv6]} for r, p in kept.items()},
        }

    @classmethod
    def from_dict(cls, raw: dict) -> IpRanges:
        eic = {
            region: EicPrefixes(
                region,
                tuple(ipaddress.IPv4Network(n) for n in prefixes["ipv4"]),
                tuple(ipaddress.IPv6Network(n) for n in prefixes["ipv6"]),
            )
            for region, prefixes in raw["eic"].items()
        }
        return cls(raw["sync_token"], raw["create_date"], raw["md5"], eic, unavailable=raw.get("unavailable"))


def _http_session(attempts: int) -> requests.Session:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(
        total=attempts - 1, backoff_factor=0.5, status_forcelist=(500, 502, 503, 504), allowed_methods=("GET",)
    )
    session = requests.Session()
    session.mount("https://", HTTPAdapter(max_retries=retry))
    session.mount("http://", HTTPAdapter(max_retries=retry))
    return session


def fetch_bytes(
    source: str | None = None, if_none_match: str | None = None, deadline: Deadline | None = None
) -> bytes | None:
    """Download the pinned URL (or `source`: a URL or a local path) and return the exact bytes.

    With `if_none_match` (the md5 of the copy we hold, which is the file's ETag) a 304 answer returns None.
    At most FETCH_ATTEMPTS attempts; with a `deadline`, each attempt's timeouts are cut to its share of the time
    that remains and the body must arrive before the deadline, so a hanging or dripping server fails the fetch
    while the function can still report it.
    """
    source = source or IP_RANGES_URL
    if not source.startswith(("https://", "http://")):
        try:
            return Path(source).read_bytes()
        except OSError as exc:
            raise IpRangesError("unreadable", f"cannot read ip-ranges file {source}: {exc.strerror}") from None
    connect, read = FETCH_TIMEOUT
    if deadline is not None:
        share = deadline.remaining() / FETCH_ATTEMPTS
        if share <= 0:
            raise IpRangesError("download-failed", f"cannot download {source}: no time left in the invocation")
        connect, read = deadline.timeout(min(connect, share)), deadline.timeout(min(read, share))
    import requests

    try:
        headers = {"If-None-Match": f'"{if_none_match}"'} if if_none_match else {}
        with _http_session(FETCH_ATTEMPTS).get(
            source, timeout=(connect, read), headers=headers, stream=True
        ) as response:
            if response.status_code == 304 and if_none_match:
                return None
            response.raise_for_status()
            # urllib3 enforces Content-Length on a streamed body too: a truncated download raises.
            return _read_body(response, source, deadline)
    except requests.RequestException as exc:
        raise IpRangesError("download-failed", f"cannot download {source}: {exc}") from None


def _read_body(response: requests.Response, source: str, deadline: Deadline | None) -> bytes:
    chunks = []
    for chunk in response.iter_content(chunk_size=256 * 1024):
        chunks.append(chunk)
        if deadline is not None and deadline.remaining() <= 0:
            raise IpRangesError("download-failed", f"cannot download {source}: the invocation's time ran out")
    return b"".join(chunks)


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
    sync_token = str(document["syncToken"])
    if not sync_token.isascii() or not sync_token.isdigit():
        # synctokens are epoch seconds; ordering notifications relies on comparing them as numbers
        raise IpRangesError("invalid-sync-token", f"ip-ranges.json syncToken {sync_token[:40]!r} is not a number")
    try:
        eic = _select_eic(document["prefixes"], document["ipv6_prefixes"])
    except (TypeError, KeyError, ValueError) as exc:
        raise IpRangesError("invalid-shape", f"ip-ranges.json has a malformed prefix entry: {exc}") from None
    return IpRanges(sync_token, str(document["createDate"]), digest, eic)


def load(source: str | None = None, expected_md5: str | None = None, deadline: Deadline | None = None) -> IpRanges:
    """Fetch and parse in one step."""
    raw = fetch_bytes(source, deadline=deadline)
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
