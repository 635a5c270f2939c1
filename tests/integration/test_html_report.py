"""The self-contained HTML report (html_report.py): its content, offline-safety, a real browser render, the CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import struct
import subprocess
import zlib
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from eic_guard import cli
from eic_guard.checks import check_ids_for
from eic_guard.observability import logger
from eic_guard.outputs.html import failures_by_check, render_html
from eic_guard.outputs.report import (
    ActionEntry,
    CheckEntry,
    InstanceEntry,
    IpRangesEntry,
    Report,
    Summary,
    TargetEntry,
    TargetError,
)

from tests.conftest import EIC_US_EAST_1, IP_RANGES, REGION, ROOT
from tests.report_entries import every_check

PUBLIC_CHECKS = check_ids_for("public")  # a page of public-path instances shows these columns (outputs/html.py)

ARTIFACTS = ROOT / "tests" / "artifacts"
BROWSER_TIMEOUT = 60
STARTED = datetime(2026, 8, 23, 3, 0, 5, tzinfo=UTC)
EVIL_REASON = "ami-0123456789abcdef0 (<b>golden</b>-image) is not owned by Amazon (137112412989)"
EVIL_NAME = "<i>legacy</i> & co"
WORLD_OPEN = "ssh-open-to-internet: sg-0open allows TCP 22 from 0.0.0.0/0 (<all>)"
AMI_DOC = "https://docs.aws.amazon.com/linux/al2023/ug/ec2.html"
AMI_GUIDANCE = f"Launch from an Amazon Linux 2023 AMI, or install ec2-instance-connect & its <deps>: {AMI_DOC}."
NOTE = "prefix list com.amazonaws.us-east-1.ec2-instance-connect not found: the EIC CIDRs are used instead"
AMBER_BACKGROUND = (0xFF, 0xF8, 0xC5)  # .warn{background:#fff8c5}


def known_report() -> Report:
    """Six instances covering every verdict, with actions, a hostile reason, and one region that failed."""
    instances = [
        InstanceEntry(
            instance_id="i-0a00000000000001",
            account_id="123456789012",
            region=REGION,
            vpc_id="vpc-1",
            verdict="compliant",
            checks=every_check(),
            actions=[],
            name="web-open-world",
            tags={"Owner": "alice", "Team": "payments"},
            warnings=[WORLD_OPEN],
        ),
        InstanceEntry(
            instance_id="i-0a00000000000002",
            account_id="123456789012",
            region=REGION,
            vpc_id="vpc-1",
            verdict="fixed",
            checks=every_check(
                eic_ssh_ingress=CheckEntry(status="fixed", reason=f"TCP 22 not allowed from {EIC_US_EAST_1}"),
                imds_enabled=CheckEntry(status="fixed", reason="metadata endpoint is disabled"),
            ),
            actions=[
                ActionEntry(
                    action="attach-security-group",
                    resource="eni-0f00000000000002",
                    status="done",
                    detail="added sg-0eic to the interface's groups",
                ),
                ActionEntry(
                    action="enable-imds", resource="i-0a00000000000002", status="done", detail="HttpEndpoint=enabled"
                ),
            ],
        ),
        InstanceEntry(
            instance_id="i-0a00000000000003",
            account_id="123456789012",
            region=REGION,
            vpc_id="vpc-1",
            verdict="noncompliant",
            checks=every_check(
                al2023_ami=CheckEntry(status="fail", reason=EVIL_REASON, guidance=AMI_GUIDANCE),
                network_acl=CheckEntry(status="fail", reason="rule 50 denies TCP 22 from 0.0.0.0/0"),
            ),
            actions=[],
            name=EVIL_NAME,
            tags={"Team": "<platform>"},
        ),
        InstanceEntry(
            instance_id="i-0a00000000000004",
            account_id="123456789012",
            region=REGION,
            vpc_id="vpc-2",
            verdict="noncompliant",
            checks=every_check(
                public_ipv4=CheckEntry(status="fail", reason="no public IPv4 address"),
                al2023_ami=CheckEntry(status="fail", reason="ami-unknown"),
            ),
            actions=[],
        ),
        InstanceEntry(
            instance_id="i-0a00000000000005",
            account_id="123456789012",
            region=REGION,
            vpc_id="vpc-2",
            verdict="error",
            checks=every_check(
                imds_enabled=CheckEntry(
                    status="error", reason="metadata endpoint is disabled; fix failed: UnauthorizedOperation"
                )
            ),
            actions=[
                ActionEntry(
                    action="enable-imds",
                    resource="i-0a00000000000005",
                    status="failed",
                    detail="UnauthorizedOperation: not allowed",
                )
            ],
        ),
        InstanceEntry(
            instance_id="i-0a00000000000006",
            account_id="123456789012",
            region=REGION,
            vpc_id="vpc-2",
            verdict="excluded",
            checks={},
            actions=[],
            excluded_reason="legacy bastion (until 2026-12-31)",
        ),
    ]
    return Report(
        run_id="run-html-1",
        mode="remediate",
        account_id="123456789012",
        regions=[REGION, "eu-west-1"],
        started_at=STARTED,
        finished_at=STARTED.replace(second=9),
        ip_ranges=IpRangesEntry(sync_token="1787411825", create_date="2026-08-22-15-17-05"),
        summary=Summary(instances=6, compliant=1, fixed=1, noncompliant=2, excluded=1, errors=2, warnings=1),
        accounts=["123456789012"],
        account_aliases={"123456789012": "acme-prod"},
        targets=[
            TargetEntry(account_id="123456789012", region=REGION, status="ok", error=None, instances=6, notes=[NOTE]),
            TargetEntry(
                account_id="123456789012",
                region="eu-west-1",
                status="error",
                error="ClientError: AuthFailure",
                instances=0,
            ),
        ],
        instances=instances,
        target_errors=[TargetError(region="eu-west-1", account_id="123456789012", error="ClientError: AuthFailure")],
    )


EXPECTED_FAILURES = {
    "public-ipv4": 1,
    "eic-ssh-ingress": 0,
    "al2023-ami": 2,
    "imds-enabled": 1,
    "internet-route": 0,
    "network-acl": 1,
}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None]):
        self.tag, self.attrs, self.children = tag, attrs, []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find_all(self, tag: str) -> list[Node]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                found.extend([child] if child.tag == tag else [])
                found.extend(child.find_all(tag))
        return found

    def elements(self) -> list[Node]:
        return [c for c in self.children if isinstance(c, Node)]


class TreeBuilder(HTMLParser):
    """Just enough of a DOM to read the page the way a browser would (text is unescaped)."""

    VOID = {"meta", "link", "br", "img", "input", "hr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, dict(attrs)))

    def handle_endtag(self, tag):
        while len(self.stack) > 1:
            if self.stack.pop().tag == tag:
                break

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse(html: str) -> Node:
    builder = TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def column_names(table: Node) -> list[str]:
    """The table's column names; a check column by its full id (its tooltip: the header shows the short id)."""
    return [th.attrs.get("title") or th.text() for th in table.find_all("th")]


def _all_nodes(node: Node) -> list[Node]:
    nodes = []
    for child in node.elements():
        nodes.append(child)
        nodes.extend(_all_nodes(child))
    return nodes


@pytest.fixture(scope="module")
def page() -> str:
    return render_html(known_report())


def test_page_loads_nothing_from_outside(page):
    # Given the page of a known report
    dom = parse(page)

    # When its tags, scripts and styles are inspected
    tags = {node.tag for node in _all_nodes(dom)}
    scripts = dom.find_all("script")
    [style] = dom.find_all("style")
    [csp] = [m for m in dom.find_all("meta") if m.attrs.get("http-equiv") == "Content-Security-Policy"]

    # Then it is a whole page, with no external stylesheet, image, frame or font, and no src anywhere
    assert {"html", "head", "style", "body", "svg", "table"} <= tags
    assert not tags & {"link", "img", "iframe", "object", "embed"}
    assert not re.search(r"""\bsrc\s*=""", page, re.IGNORECASE)
    assert not re.search(r"@import|url\(", page, re.IGNORECASE)
    # And its scripts are three JSON data islands (never executed) and one inline script
    assert [(s.attrs.get("type"), s.attrs.get("id")) for s in scripts] == [
        ("application/json", "eic-meta"),
        ("application/json", "eic-rows"),
        ("application/json", "eic-strings"),
        (None, None),
    ]
    # And the Content-Security-Policy allows nothing but that style and that script, by their hashes
    policy = dict(part.strip().split(" ", 1) for part in csp.attrs["content"].split(";"))
    assert policy == {
        "default-src": "'none'",
        "style-src": f"'{sha256(style.text())}'",
        "script-src": f"'{sha256(scripts[-1].text())}'",
        "base-uri": "'none'",
        "form-action": "'none'",
    }
    # And the only absolute URLs outside the data are the SVG namespace (never fetched); the guidance's
    # documentation links are in the data, made links by the script, opened without opener or referrer
    outside = re.sub(r'<script type="application/json".*?</script>', "", page, flags=re.DOTALL)
    assert re.findall(r"https?://[^\s\"'<>]+", outside) == ["http://www.w3.org/2000/svg"]
    assert AMI_GUIDANCE in islands(page)["eic-strings"][0]
    assert 'a.rel = "noopener noreferrer"' in scripts[-1].text()


def sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def islands(page: str) -> dict[str, object]:
    """The page's JSON data islands by id."""
    return {
        m.group(1): [json.loads(m.group(2))]
        for m in re.finditer(r'<script type="application/json" id="([\w-]+)">(.*?)</script>', page, re.DOTALL)
    }


def test_summary_cards_show_the_run_counts(page):
    # Given the page of a report with known counts
    dom = parse(page)

    # When the summary cards are read (value, label)
    cards = {
        card.find_all("span")[0].text(): card.find_all("b")[0].text()
        for card in _all_nodes(dom)
        if "card" in (card.attrs.get("class") or "").split()
    }

    # Then each count is shown under its label
    assert cards == {
        "instances": "6",
        "compliant": "1",
        "fixed": "1",
        "noncompliant": "2",
        "excluded": "1",
        "errors": "2",
        "warnings": "1",
    }
    # And the warnings card is amber
    [warnings_card] = [
        card
        for card in _all_nodes(dom)
        if "card" in (card.attrs.get("class") or "").split() and card.find_all("span")[0].text() == "warnings"
    ]
    assert warnings_card.attrs["class"] == "card warn"
    # And the run, the account, the regions and the ip-ranges version are named, and the failed region too
    text = dom.text()
    for fragment in (
        "run-html-1",
        "account acme-prod (123456789012)",
        "us-east-1, eu-west-1",
        "1787411825 (2026-08-22-15-17-05)",
        "eu-west-1: ClientError: AuthFailure",
    ):
        assert fragment in text


def test_failures_by_check_counts_what_still_fails_after_the_run():
    # Given the known report (fixed checks do not count; fail, would-fix and error do)
    report = known_report()

    # When failures are counted by check
    counts = failures_by_check(report)

    # Then every check id is present, in check order, with its count
    assert list(counts) == list(PUBLIC_CHECKS)
    assert dict(counts) == EXPECTED_FAILURES


def chart_rows(page: str) -> dict[str, tuple[list[Node], str]]:
    """Each check's bars and its count label, from the page's inline SVG chart."""
    [svg] = parse(page).find_all("svg")
    return {g.elements()[0].text(): (g.find_all("rect"), g.elements()[-1].text()) for g in svg.elements()}


def test_chart_has_one_bar_per_check_labelled_with_its_count(page):
    # Given the page's inline SVG chart, under its heading
    assert "Failures by check" in [h.text() for h in parse(page).find_all("h2")]

    # When its rows are read: label, bars, count for each check
    rows = chart_rows(page)

    # Then there is one row per check id, in check order, labelled with the check and its count
    assert [(check, count) for check, (_bars, count) in rows.items()] == [
        (check_id, str(EXPECTED_FAILURES[check_id])) for check_id in PUBLIC_CHECKS
    ]
    # And bar lengths follow the counts: the largest count has the longest bar, a zero count a sliver
    widths = {check: sum(int(bar.attrs["width"]) for bar in bars) for check, (bars, _count) in rows.items()}
    assert widths["al2023-ami"] > widths["public-ipv4"] == widths["imds-enabled"] == widths["network-acl"]
    assert widths["public-ipv4"] > widths["eic-ssh-ingress"] == widths["internet-route"] == 1
    assert widths["al2023-ami"] == 2 * widths["public-ipv4"]


def test_chart_shows_would_fix_in_amber_apart_from_what_fails():
    # Given a report-mode run: imds-enabled would be fixed on two instances, and fails on a third (no fix possible)
    base = known_report()
    would_fix = CheckEntry(status="would-fix", reason="metadata endpoint is disabled")
    failing = CheckEntry(status="fail", reason="metadata endpoint is disabled; cannot fix")
    instances = [
        e.model_copy(update={"checks": {**e.checks, "imds-enabled": status}})
        for e, status in zip(base.instances[:3], (would_fix, would_fix, failing), strict=True)
    ]
    page = render_html(base.model_copy(update={"instances": instances, "mode": "report"}))

    # When the imds-enabled row of the chart is read
    bars, count = chart_rows(page)["imds-enabled"]

    # Then the planned fixes are an amber bar twice as long as the red one, and the label says how many are planned
    assert [(bar.attrs["class"], bar.attrs["fill"]) for bar in bars] == [("fail", "#cf222e"), ("would-fix", "#bf8700")]
    assert abs(int(bars[1].attrs["width"]) - 2 * int(bars[0].attrs["width"])) <= 1
    assert count == "3 (2 would-fix)"


def instance_rows(dom: Node) -> tuple[list[str], dict[str, Node], list[str]]:
    """The drawn instance table: its column names, its rows by instance id, the ids in display order."""
    [table] = [t for t in dom.find_all("table") if t.attrs.get("id") == "instances"]
    header = column_names(table)
    rows = [row for row in table.find_all("tbody")[0].find_all("tr")]
    ids = [row.find_all("td")[1].text() for row in rows]
    return header, dict(zip(ids, rows, strict=True)), ids


def test_instance_table_shows_verdicts_check_statuses_reasons_and_actions(rendered):
    # Given the instance table the browser drew
    header, rows, order = instance_rows(rendered)

    # When a row is read as header → cell
    def cells(instance_id: str) -> dict[str, Node]:
        return dict(zip(header, rows[instance_id].find_all("td")[: len(header)], strict=False))

    # Then there is one row per instance, failures first (error, noncompliant, fixed, compliant, excluded)
    assert header == [
        "account / region / vpc",
        "instance",
        "name / owner",
        "verdict",
        *PUBLIC_CHECKS,
        "reasons, what to do, actions",
    ]
    assert [th.text() for th in rendered.find_all("th") if th.attrs.get("data-sort", "").startswith("check")] == [
        "ipv4",
        "ssh",
        "ami",
        "imds",
        "route",
        "nacl",
    ]
    assert order == [f"i-0a0000000000000{n}" for n in (5, 3, 4, 2, 1, 6)]
    assert {i: cells(i)["verdict"].text() for i in rows} == {
        "i-0a00000000000001": "compliant",
        "i-0a00000000000002": "fixed",
        "i-0a00000000000003": "noncompliant",
        "i-0a00000000000004": "noncompliant",
        "i-0a00000000000005": "error",
        "i-0a00000000000006": "excluded",
    }
    assert _lines(cells("i-0a00000000000003")["account / region / vpc"]) == [
        "acme-prod (123456789012)",
        REGION,
        "vpc-1",
    ]
    fixed = cells("i-0a00000000000002")
    assert (fixed["eic-ssh-ingress"].text(), fixed["imds-enabled"].text(), fixed["al2023-ami"].text()) == (
        "fixed",
        "fixed",
        "pass",
    )
    assert cells("i-0a00000000000003")["al2023-ami"].text() == "FAIL"
    assert cells("i-0a00000000000003")["al2023-ami"].attrs["title"] == EVIL_REASON
    assert cells("i-0a00000000000005")["imds-enabled"].text() == "ERROR"
    # And the last column lists each non-passing check's reason and each action with its outcome
    notes = {i: [li.text() for li in cells(i)["reasons, what to do, actions"].find_all("li")] for i in rows}
    assert notes["i-0a00000000000001"] == [f"warning: {WORLD_OPEN}"]
    assert notes["i-0a00000000000002"] == [
        f"eic-ssh-ingress: TCP 22 not allowed from {EIC_US_EAST_1}",
        "imds-enabled: metadata endpoint is disabled",
        "done: attach-security-group eni-0f00000000000002 — added sg-0eic to the interface's groups",
        "done: enable-imds i-0a00000000000002 — HttpEndpoint=enabled",
    ]
    assert notes["i-0a00000000000003"] == [
        f"al2023-ami: {EVIL_REASON}what to do: {AMI_GUIDANCE}",
        "network-acl: rule 50 denies TCP 22 from 0.0.0.0/0",
    ]
    assert "failed: enable-imds i-0a00000000000005 — UnauthorizedOperation: not allowed" in notes["i-0a00000000000005"]
    assert notes["i-0a00000000000006"] == ["legacy bastion (until 2026-12-31)"]
    # And the pager says what is shown
    [count] = [n for n in _all_nodes(rendered) if n.attrs.get("id") == "count"]
    assert count.text() == "instances 1\u20136 of 6"


def test_markup_in_a_reason_is_shown_as_text_not_rendered(page, rendered):
    # Given a reason and a name that contain markup (<b>golden</b>, <i>legacy</i>)
    # When the page is read as written, and as the browser drew it
    bold = [b.text() for b in rendered.find_all("b")]

    # Then the page holds the markup only as escaped JSON (no text can close its data island)
    assert "<b>golden</b>" not in page and "<i>legacy</i>" not in page
    assert "(\\u003cb\\u003egolden\\u003c/b\\u003e-image)" in page
    # And the browser shows it as text: no <b> element "golden", the reason whole
    assert "golden" not in bold
    assert EVIL_REASON in rendered.text()
    assert not [i for i in rendered.find_all("i")]


def _chromium() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed: run scripts/ensure-chromium.sh as root")
    return browser


def _headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT,
        check=False,
    )


# What the browser computed for the first amber check cell and a plain passing cell of the same row: added to a copy
# of the page for the test only (the page itself has no script), read back from the dumped DOM.
PROBE = """<script>
const box = (cell) => { const r = cell.getBoundingClientRect();
  return {x: Math.round(r.left + scrollX + 2), y: Math.round(r.top + scrollY + 2),
          background: getComputedStyle(cell).backgroundColor, text: cell.textContent}; };
const warned = document.querySelector("#instances td.warn");
const out = document.createElement("pre"); out.id = "probe"; out.hidden = true;
out.textContent = JSON.stringify({warned: box(warned), plain: box(warned.parentElement.querySelector("td.pass"))});
document.body.appendChild(out);
</script>"""
WINDOW = "--window-size=1400,2000"  # the summaries come first: the instance table starts below them


def without_csp(page: str) -> str:
    """A copy of the page that a test's probe script may run in (the page's own policy allows only its script)."""
    return re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)


def dump_dom(page: str, workdir: Path, *args: str) -> Node:
    """The DOM chromium has once the page's script drew it."""
    html_file = workdir / "page.html"
    html_file.write_text(page, encoding="utf-8")
    dumped = _headless(_chromium(), workdir / "profile", "--dump-dom", *args, html_file.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    return parse(dumped.stdout)


@pytest.fixture(scope="module")
def rendered(page, tmp_path_factory) -> Node:
    return dump_dom(page, tmp_path_factory.mktemp("rendered"))


def png_pixels(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """(width, height, bytes per pixel, rows) of an 8-bit RGB or RGBA, non-interlaced PNG (what chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat, header = 8, b"", b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        header, idat = (body, idat) if kind == b"IHDR" else (header, idat + body if kind == b"IDAT" else idat)
        position += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    size = 3 if colour == 2 else 4
    raw, stride, rows = zlib.decompress(idat), width * size, []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - size] if i >= size else 0
            up, corner = previous[i], previous[i - size] if i >= size else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                guess = left + up - corner
                near = min((abs(guess - left), 0, left), (abs(guess - up), 1, up), (abs(guess - corner), 2, corner))
                line[i] = (line[i] + near[2]) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, size, rows


def pixel(png: tuple[int, int, int, list[bytes]], x: int, y: int) -> tuple[int, int, int]:
    width, height, size, rows = png
    assert 0 <= x < width and 0 <= y < height, f"({x}, {y}) is outside the {width}x{height} screenshot"
    return tuple(rows[y][x * size : x * size + 3])


def test_page_renders_in_a_real_headless_browser_with_the_warning_in_amber(page, tmp_path):
    # Given the page written to a file, a copy of it with the probe, and Debian's chromium
    browser = _chromium()
    html_file, probe_file = tmp_path / "report.html", tmp_path / "probe.html"
    html_file.write_text(page, encoding="utf-8")
    probe_file.write_text(without_csp(page).replace("</body>", f"{PROBE}</body>"), encoding="utf-8")
    screenshot = tmp_path / "html-report.png"
    scale = "--force-device-scale-factor=1"

    # When chromium takes a screenshot of the page and dumps the rendered DOM of the page and of the probe
    shot = _headless(
        browser, tmp_path / "profile-shot", f"--screenshot={screenshot}", WINDOW, scale, html_file.as_uri()
    )
    dumped = _headless(browser, tmp_path / "profile-dom", "--dump-dom", html_file.as_uri())
    probed = _headless(browser, tmp_path / "profile-probe", "--dump-dom", WINDOW, scale, probe_file.as_uri())

    # Then the screenshot is a real PNG with content (a blank page is a few kB)
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(screenshot, ARTIFACTS / "html-report.png")
    # And the browser's DOM has the chart heading, the chart and every instance; the hostile reason stayed text
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = parse(dumped.stdout)
    text = dom.text()
    assert "Failures by check" in text
    assert all(f"i-0a0000000000000{n}" in text for n in range(1, 7))
    assert len(dom.find_all("rect")) == len(PUBLIC_CHECKS)
    assert "golden" not in [b.text() for b in dom.find_all("b")]
    assert EVIL_REASON in text
    # And the names, the guidance, the world-open warning and the target note are on the page as text
    for fragment in ("web-open-world", EVIL_NAME, AMI_GUIDANCE, f"warning: {WORLD_OPEN}", NOTE):
        assert fragment in text
    # And the browser painted the passing check with a warning amber (computed style and the screenshot's pixel),
    # while a plain passing cell of the same row is not
    assert probed.returncode == 0, probed.stderr[-2000:]
    [probe] = [node for node in _all_nodes(parse(probed.stdout)) if node.attrs.get("id") == "probe"]
    cells = json.loads(probe.text())
    assert cells["warned"]["text"] == "pass!"
    assert cells["warned"]["background"] == "rgb({}, {}, {})".format(*AMBER_BACKGROUND)
    png = png_pixels(data)
    assert pixel(png, cells["warned"]["x"], cells["warned"]["y"]) == AMBER_BACKGROUND
    assert pixel(png, cells["plain"]["x"], cells["plain"]["y"]) not in (AMBER_BACKGROUND, (255, 255, 255))


# Where the browser put the reasons column and how wide the page became (a copy of the page, for the test only).
WIDTH_PROBE = """<script>
const reasons = document.querySelector("td.reasons").getBoundingClientRect();
const out = document.createElement("pre"); out.id = "probe"; out.hidden = true;
out.textContent = JSON.stringify({page: document.documentElement.scrollWidth, window: innerWidth,
                                  left: Math.round(reasons.left), right: Math.round(reasons.right)});
document.body.appendChild(out);
</script>"""


def test_the_reasons_column_is_on_a_1280_pixel_screen(tmp_path):
    # Given a report like the demo's: real-length VPC ids, long names and e-mail owners
    base = known_report()
    instances = [
        e.model_copy(
            update={
                "vpc_id": f"vpc-0{n}23456789abcdef0",
                "name": "ops-expired-exclusion-web",
                "tags": {"Owner": "carol.smith@example.com", "Team": "data-platform"},
            }
        )
        for n, e in enumerate(base.instances)
    ]
    probe_file = tmp_path / "probe.html"
    probe_file.write_text(
        without_csp(render_html(base.model_copy(update={"instances": instances}))).replace(
            "</body>", f"{WIDTH_PROBE}</body>"
        ),
        encoding="utf-8",
    )

    # When chromium lays it out in a 1280 px window
    probed = _headless(
        _chromium(),
        tmp_path / "profile",
        "--dump-dom",
        "--window-size=1280,900",
        "--force-device-scale-factor=1",
        probe_file.as_uri(),
    )

    # Then the page is no wider than the window, and the reasons column, at least 300 px wide, is inside it
    assert probed.returncode == 0, probed.stderr[-2000:]
    [probe] = [node for node in _all_nodes(parse(probed.stdout)) if node.attrs.get("id") == "probe"]
    layout = json.loads(probe.text())
    assert layout["page"] <= layout["window"] == 1280, layout
    assert layout["right"] <= 1280 and layout["right"] - layout["left"] >= 300, layout


def _lines(node: Node) -> list[str]:
    """The text of a node split at its <br> elements."""
    lines = [""]
    for child in node.children:
        if isinstance(child, Node) and child.tag == "br":
            lines.append("")
        else:
            lines[-1] += child if isinstance(child, str) else child.text()
    return lines


def test_names_owner_tags_and_guidance_are_shown_and_escaped(rendered):
    # Given the drawn instance table, read as header -> cell
    header, rows, _order = instance_rows(rendered)

    def cells(instance_id: str) -> dict[str, Node]:
        return dict(zip(header, rows[instance_id].find_all("td")[: len(header)], strict=False))

    # When the rows of the named instances are read
    world_open, legacy = cells("i-0a00000000000001"), cells("i-0a00000000000003")

    # Then the name and the owner tags under it are shown, one a line, markup as text
    def who(cell: Node) -> tuple[str, list[str]]:
        name, *owner = cell.find_all("div")
        return name.text(), [line for div in owner for line in _lines(div)]

    assert who(world_open["name / owner"]) == ("web-open-world", ["Owner=alice", "Team=payments"])
    assert who(legacy["name / owner"]) == (EVIL_NAME, ["Team=<platform>"])
    # And the failing check's guidance follows its reason, its URL a link opened without opener or referrer
    [guidance] = [
        d for d in legacy["reasons, what to do, actions"].find_all("div") if d.attrs.get("class") == "guidance"
    ]
    assert guidance.text() == f"what to do: {AMI_GUIDANCE}"
    [link] = guidance.find_all("a")
    assert (link.attrs["href"], link.attrs["rel"], link.text()) == (AMI_DOC, "noopener noreferrer", AMI_DOC)


def test_a_passing_check_with_a_warning_is_amber_and_its_warning_is_written_out(page, rendered):
    # Given the drawn row of i-...1, which passes eic-ssh-ingress through a rule open to the world
    header, rows, _order = instance_rows(rendered)

    # When its cells are read
    cells = dict(zip(header, rows["i-0a00000000000001"].find_all("td"), strict=False))

    # Then its eic-ssh-ingress cell says pass! in the amber class, the other checks plain pass
    assert (cells["eic-ssh-ingress"].text(), cells["eic-ssh-ingress"].attrs["class"]) == ("pass!", "check pass warn")
    assert {cells[c].attrs["class"] for c in PUBLIC_CHECKS if c != "eic-ssh-ingress"} == {"check pass"}
    # And the warning's text is in the row, amber, not only in a tooltip
    [warning] = [li for li in rows["i-0a00000000000001"].find_all("li") if li.attrs.get("class") == "warn"]
    assert warning.text() == f"warning: {WORLD_OPEN}"
    # And the target note is listed, amber, under its heading (static: no script needed)
    dom = parse(page)
    assert "Notes" in [h.text() for h in dom.find_all("h2")]
    notes = [li.text() for li in dom.find_all("li") if li.attrs.get("class") == "warn" and NOTE in li.text()]
    assert notes == [f"acme-prod (123456789012) / {REGION}: {NOTE}"]


@pytest.fixture
def restore_cli_logging():
    """cli.main moves the shared logger to stderr at WARNING; put it back for the tests that follow."""
    handler = logger.registered_handler
    stream, level = handler.stream, logger.log_level
    yield
    handler.setStream(stream)
    logger.setLevel(level)


def test_cli_scan_with_html_writes_the_page_of_the_same_run(account, tmp_path, restore_cli_logging, capsys):
    # Given a compliant instance and one on a non-Amazon AMI
    net = account.network()
    eic_ssh = account.security_group(
        net, "eic-ssh", [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": EIC_US_EAST_1}]}]
    )
    [good] = account.launch(
        image_id=account.al2023_ami(), subnet_id=net.public_subnet_id, group_ids=[eic_ssh], public_ip=True
    )
    [bad] = account.launch(
        image_id=account.own_image("custom-<b>image</b>"),
        subnet_id=net.public_subnet_id,
        group_ids=[eic_ssh],
        public_ip=True,
    )
    html_file, json_file = tmp_path / "out" / "report.html", tmp_path / "report.json"
    html_file.parent.mkdir()

    # When `eic-guard scan --html FILE` runs (JSON report to another file)
    code = cli.main(
        [
            "scan",
            "--region",
            REGION,
            "--ip-ranges",
            str(IP_RANGES / "ip-ranges-2026-08-22.json"),
            "--format",
            "json",
            "--output",
            str(json_file),
            "--html",
            str(html_file),
        ]
    )

    # Then it exits 1 (one instance stays non-compliant) and the page is the rendering of that very report
    assert code == cli.exit_codes.FINDINGS
    report = Report.model_validate_json(json_file.read_text())
    html = html_file.read_text(encoding="utf-8")
    assert html == render_html(report)
    assert good in html and bad in html
    assert "custom-\\u003cb\\u003eimage\\u003c/b\\u003e" in html
    # And nothing but the progress-free run went to standard output
    assert capsys.readouterr().out == ""


def test_cli_html_into_a_missing_directory_is_a_usage_error_before_anything_changes(
    account, tmp_path, api_calls, restore_cli_logging, capsys
):
    # Given an instance that --remediate would fix, and an --html path whose directory does not exist
    net = account.network()
    account.launch(
        image_id=account.al2023_ami(),
        subnet_id=net.public_subnet_id,
        group_ids=[net.app_group_id],
        public_ip=True,
        imds="disabled",
    )
    missing = tmp_path / "no-such-dir" / "report.html"
    api_calls.clear()

    # When `eic-guard scan --remediate --html` runs
    code = cli.main(
        [
            "scan",
            "--region",
            REGION,
            "--remediate",
            "--ip-ranges",
            str(IP_RANGES / "ip-ranges-2026-08-22.json"),
            "--html",
            str(missing),
        ]
    )

    # Then it exits 2 with one line naming the path, and nothing was changed in AWS
    assert code == cli.exit_codes.USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eic-guard: error: ") and str(missing) in err[0]
    assert api_calls.writes() == []
    assert not missing.exists()


def org_report() -> Report:
    """The known report's instances spread over two accounts, one of whose regions failed."""
    base = known_report()
    member = "210987654321"
    instances = [
        e.model_copy(update={"account_id": member}) if e.instance_id.endswith(("4", "5", "6")) else e
        for e in base.instances
    ]
    targets = [
        TargetEntry(account_id="123456789012", region=REGION, status="ok", error=None, instances=3),
        TargetEntry(account_id=member, region=REGION, status="ok", error=None, instances=3),
        TargetEntry(account_id=member, region="eu-west-1", status="error", error="region not enabled", instances=0),
    ]
    return base.model_copy(update={"instances": instances, "accounts": ["123456789012", member], "targets": targets})


def summary_table(dom: Node, heading_id: str) -> list[list[str]]:
    """The rows (cell texts) of the summary table under the heading with this id."""
    for div in dom.find_all("div"):
        heads = [h for h in div.elements() if h.tag == "h2" and h.attrs.get("id") == heading_id]
        if heads:
            return [[td.text() for td in row.find_all("td")] for row in div.find_all("table")[0].find_all("tr")[1:]]
    raise AssertionError(f"no table under #{heading_id}")


def test_an_organization_run_summarises_accounts_worst_first_and_links_each_to_its_instances():
    # Given an organization run over two accounts, one of whose regions failed
    member = "210987654321"

    # When the page is rendered
    dom = parse(render_html(org_report()))

    # Then the accounts table lists the member account (two errors, a failed region) before the healthier one
    rows = summary_table(dom, "by-account")
    assert [row[0] for row in rows] == [member, "acme-prod (123456789012)"]
    # columns: account, regions ok, instances, compliant, fixed, noncompliant, errors, excluded, warnings, errors
    assert rows[0][1:] == ["1/2", "3", "0", "0", "1", "1", "1", "0", "eu-west-1: region not enabled"]
    assert rows[1][8] == "1"  # the instance with a warning
    # And each account links to the instance table filtered to it
    links = [a.attrs["href"] for a in dom.find_all("a") if a.attrs["href"].startswith("#account=")]
    assert links == [f"#account={member}", "#account=123456789012"]
    # And the regions and checks have their summaries too
    assert [row[0] for row in summary_table(dom, "by-region")] == [REGION, "eu-west-1"]
    checks = {row[0]: row[1:] for row in summary_table(dom, "by-check")}
    assert checks["al2023-ami"][:3] == ["2", "0", "0"]  # fail, would-fix, error
    assert checks["imds-enabled"][:4] == ["0", "0", "1", "1"]  # ... and fixed


def test_an_account_link_shows_only_that_accounts_instances(tmp_path):
    # Given the organization page, opened at the member account's link
    member = "210987654321"
    page = render_html(org_report())
    html_file = tmp_path / "page.html"
    html_file.write_text(page, encoding="utf-8")

    # When chromium draws it
    dumped = _headless(_chromium(), tmp_path / "profile", "--dump-dom", f"{html_file.as_uri()}#account={member}")

    # Then the instance table holds only the member's instances, failures first, and the filter says so
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = parse(dumped.stdout)
    _header, _rows, order = instance_rows(dom)
    assert order == ["i-0a00000000000005", "i-0a00000000000004", "i-0a00000000000006"]
    [count] = [n for n in _all_nodes(dom) if n.attrs.get("id") == "count"]
    assert count.text() == "instances 1\u20133 of 3 (filtered from 6)"


def test_an_instance_row_carries_its_connect_path_and_command():
    # Given a compliant instance on the endpoint path (docs/architecture.md §13) and one without a path
    from eic_guard.outputs.html import StringTable, instance_row

    command = "aws ec2-instance-connect ssh --instance-id i-0e --region us-east-1 --connection-type eice"
    entry = InstanceEntry(
        instance_id="i-0e",
        account_id="123456789012",
        region=REGION,
        vpc_id="vpc-1",
        verdict="compliant",
        checks=every_check(),
        actions=[],
        connect_path="endpoint",
        connect_command=command,
    )
    strings = StringTable()

    # When both become rows of the page's data island
    row = instance_row(entry, strings)
    bare = instance_row(entry.model_copy(update={"connect_path": None, "connect_command": None}), strings)

    # Then the row names the path (by the strings island) and the command; a row without them is as before
    assert strings.texts()[row[12]] == "endpoint" and row[13] == command
    assert len(bare) < 13
    # And the page's script shows both (a path line under the VPC, a connect line with the command)
    html = render_html(known_report())
    assert '"path " + r.path' in html and 'el("code", "", r.command)' in html
