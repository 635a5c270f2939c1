"""The self-contained HTML report (html_report.py): its content, offline-safety, a real browser render, the CLI."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from eic_guard import cli
from eic_guard.checks import CHECK_IDS
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

ARTIFACTS = ROOT / "tests" / "artifacts"
BROWSER_TIMEOUT = 60
STARTED = datetime(2026, 8, 23, 3, 0, 5, tzinfo=UTC)
EVIL_REASON = "ami-0123456789abcdef0 (<b>golden</b>-image) is not owned by Amazon (137112412989)"
PASS = CheckEntry(status="pass", reason=None)


def checks(**overrides: CheckEntry) -> dict[str, CheckEntry]:
    by_id = {k.replace("_", "-"): v for k, v in overrides.items()}
    return {check_id: by_id.get(check_id, PASS) for check_id in CHECK_IDS}


def known_report() -> Report:
    """Six instances covering every verdict, with actions, a hostile reason, and one region that failed."""
    instances = [
        InstanceEntry(
            instance_id="i-0a00000000000001",
            account_id="123456789012",
            region=REGION,
            vpc_id="vpc-1",
            verdict="compliant",
            checks=checks(),
            actions=[],
        ),
        InstanceEntry(
            instance_id="i-0a00000000000002",
            account_id="123456789012",
            region=REGION,
            vpc_id="vpc-1",
            verdict="fixed",
            checks=checks(
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
            checks=checks(
                al2023_ami=CheckEntry(status="fail", reason=EVIL_REASON),
                network_acl=CheckEntry(status="fail", reason="rule 50 denies TCP 22 from 0.0.0.0/0"),
            ),
            actions=[],
        ),
        InstanceEntry(
            instance_id="i-0a00000000000004",
            account_id="123456789012",
            region=REGION,
            vpc_id="vpc-2",
            verdict="noncompliant",
            checks=checks(
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
            checks=checks(
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
        summary=Summary(instances=6, compliant=1, fixed=1, noncompliant=2, excluded=1, errors=2),
        accounts=["123456789012"],
        targets=[
            TargetEntry(account_id="123456789012", region=REGION, status="ok", error=None, instances=6),
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

    # When its tags and styles are inspected
    tags = {node.tag for node in _all_nodes(dom)}

    # Then it is a whole page, with no script, external stylesheet, image, frame or font, and no remote URL
    assert {"html", "head", "style", "body", "svg", "table"} <= tags
    assert not tags & {"script", "link", "img", "iframe", "object", "embed"}
    assert "<script" not in page.lower()
    assert not re.search(r"""\b(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert not re.search(r"@import|url\(", page, re.IGNORECASE)
    # And the only absolute URL is the SVG namespace, which is never fetched
    assert re.findall(r"https?://[^\s\"'<>]+", page) == ["http://www.w3.org/2000/svg"]


def test_summary_cards_show_the_run_counts(page):
    # Given the page of a report with known counts
    dom = parse(page)

    # When the summary cards are read (value, label)
    cards = {
        card.find_all("span")[0].text(): card.find_all("b")[0].text()
        for card in _all_nodes(dom)
        if card.attrs.get("class") == "card"
    }

    # Then each count is shown under its label
    assert cards == {
        "instances": "6",
        "compliant": "1",
        "fixed": "1",
        "noncompliant": "2",
        "excluded": "1",
        "errors": "2",
    }
    # And the run, the account, the regions and the ip-ranges version are named, and the failed region too
    text = dom.text()
    for fragment in (
        "run-html-1",
        "123456789012",
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
    assert list(counts) == list(CHECK_IDS)
    assert dict(counts) == EXPECTED_FAILURES


def test_chart_has_one_bar_per_check_labelled_with_its_count(page):
    # Given the page's inline SVG chart, under its heading
    dom = parse(page)
    [svg] = dom.find_all("svg")
    assert "Failures by check" in [h.text() for h in dom.find_all("h2")]

    # When its bars and labels are read in order: label, bar, count for each check
    shapes = svg.elements()
    rows = [shapes[i : i + 3] for i in range(0, len(shapes), 3)]

    # Then there is one bar per check id, labelled with the check and its count
    assert len(svg.find_all("rect")) == len(CHECK_IDS)
    assert [(label.text(), count.text()) for label, _bar, count in rows] == [
        (check_id, str(EXPECTED_FAILURES[check_id])) for check_id in CHECK_IDS
    ]
    assert all(bar.tag == "rect" for _label, bar, _count in rows)
    # And bar lengths follow the counts: the largest count has the longest bar, a zero count a sliver
    widths = {label.text(): int(bar.attrs["width"]) for label, bar, _count in rows}
    assert widths["al2023-ami"] > widths["public-ipv4"] == widths["imds-enabled"] == widths["network-acl"]
    assert widths["public-ipv4"] > widths["eic-ssh-ingress"] == widths["internet-route"] == 1
    assert widths["al2023-ami"] == 2 * widths["public-ipv4"]


def test_instance_table_shows_verdicts_check_statuses_reasons_and_actions(page):
    # Given the page's instance table
    [table] = parse(page).find_all("table")
    header = [th.text() for th in table.find_all("th")]
    rows = {row.find_all("td")[0].text(): row for row in table.find_all("tbody")[0].find_all("tr")}

    # When a row is read as header → cell
    def cells(instance_id: str) -> dict[str, Node]:
        return dict(zip(header, rows[instance_id].find_all("td")[: len(header)], strict=False))

    # Then there is one row per instance with its verdict and one column per check
    assert header == ["instance", "region", "vpc", "verdict", *CHECK_IDS, "reasons and actions"]
    assert sorted(rows) == [f"i-0a0000000000000{n}" for n in range(1, 7)]
    assert {i: cells(i)["verdict"].text() for i in rows} == {
        "i-0a00000000000001": "compliant",
        "i-0a00000000000002": "fixed",
        "i-0a00000000000003": "noncompliant",
        "i-0a00000000000004": "noncompliant",
        "i-0a00000000000005": "error",
        "i-0a00000000000006": "excluded",
    }
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
    notes = {i: [li.text() for li in cells(i)["reasons and actions"].find_all("li")] for i in rows}
    assert notes["i-0a00000000000001"] == []
    assert notes["i-0a00000000000002"] == [
        f"eic-ssh-ingress: TCP 22 not allowed from {EIC_US_EAST_1}",
        "imds-enabled: metadata endpoint is disabled",
        "done: attach-security-group eni-0f00000000000002 — added sg-0eic to the interface's groups",
        "done: enable-imds i-0a00000000000002 — HttpEndpoint=enabled",
    ]
    assert notes["i-0a00000000000003"] == [
        f"al2023-ami: {EVIL_REASON}",
        "network-acl: rule 50 denies TCP 22 from 0.0.0.0/0",
    ]
    assert "failed: enable-imds i-0a00000000000005 — UnauthorizedOperation: not allowed" in notes["i-0a00000000000005"]
    assert notes["i-0a00000000000006"] == ["legacy bastion (until 2026-12-31)"]


def test_markup_in_a_reason_is_shown_as_text_not_rendered(page):
    # Given a reason that contains <b>golden</b>
    dom = parse(page)

    # When the page is parsed
    bold = [b.text() for b in dom.find_all("b")]

    # Then the reason's markup is escaped: no <b> element "golden", and the escaped text appears instead
    assert "golden" not in bold
    assert "<b>golden</b>" not in page
    assert "(&lt;b&gt;golden&lt;/b&gt;-image)" in page
    assert EVIL_REASON in dom.text()


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


def test_page_renders_in_a_real_headless_browser(page, tmp_path):
    # Given the page written to a file and Debian's chromium
    browser = _chromium()
    html_file = tmp_path / "report.html"
    html_file.write_text(page, encoding="utf-8")
    screenshot = tmp_path / "html-report.png"

    # When chromium takes a screenshot and dumps the rendered DOM
    shot = _headless(
        browser, tmp_path / "profile-shot", f"--screenshot={screenshot}", "--window-size=1400,1000", html_file.as_uri()
    )
    dumped = _headless(browser, tmp_path / "profile-dom", "--dump-dom", html_file.as_uri())

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
    assert len(dom.find_all("rect")) == len(CHECK_IDS)
    assert "golden" not in [b.text() for b in dom.find_all("b")]
    assert EVIL_REASON in text


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
    assert code == cli.EXIT_NONCOMPLIANT
    report = Report.model_validate_json(json_file.read_text())
    html = html_file.read_text(encoding="utf-8")
    assert html == render_html(report)
    assert good in html and bad in html
    assert "custom-&lt;b&gt;image&lt;/b&gt;" in html
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
    assert code == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eic-guard: error: ") and str(missing) in err[0]
    assert api_calls.writes() == []
    assert not missing.exists()


def test_an_organization_run_groups_the_instances_by_account(page):
    # Given the known report's instances spread over two accounts, one of whose regions failed
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
    report = base.model_copy(update={"instances": instances, "accounts": ["123456789012", member], "targets": targets})

    # When the page is rendered
    tree = parse(render_html(report))
    headings = [h.text() for h in tree.find_all("h2")]
    tables = tree.find_all("table")

    # Then an accounts table comes first, then one instance table per account holding only that account's instances
    assert "Accounts" in headings
    assert "Instances in account 123456789012 (3)" in headings and f"Instances in account {member} (3)" in headings
    accounts = {
        row.find_all("td")[0].text(): [td.text() for td in row.find_all("td")] for row in tables[0].find_all("tr")[1:]
    }
    assert accounts[member][1:7] == ["1/2", "3", "0", "0", "1", "1"]
    assert accounts[member][7] == "eu-west-1: region not enabled"
    member_rows = [row.find_all("td")[0].text() for row in tables[2].find_all("tbody")[0].find_all("tr")]
    assert member_rows == ["i-0a00000000000004", "i-0a00000000000005", "i-0a00000000000006"]
