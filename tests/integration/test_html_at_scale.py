"""The HTML report at 100,000 instances (issue 20, item 3): its size, what a person sees first, and that the
instance table filters and sorts in a real browser; and the per-account pages beyond PAGE_INSTANCES."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime

import pytest
from eic_guard.checks import CHECK_IDS, check_ids_for
from eic_guard.checks.connect_path import elsewhere
from eic_guard.models import CheckResult
from eic_guard.outputs.html import PAGE_INSTANCES, render_html, render_pages
from eic_guard.outputs.report import Report, build_report, instance_entry

from benchmarks import synthetic
from tests.integration.test_html_report import (
    ARTIFACTS,
    _all_nodes,
    _chromium,
    _headless,
    column_names,
    instance_rows,
    parse,
    without_csp,
)

INSTANCES, ACCOUNTS = 100_000, 100  # 100 accounts x 5 regions x 200 instances
SIZE_LIMIT = 25_000_000  # bytes: the 25 MB at 100,000 instances


class _Ranges:
    sync_token, create_date = "1787411825", "2026-08-22-15-17-05"


def synthetic_report(instances: int, accounts: int) -> Report:
    return report_of(list(synthetic.documents(instances, accounts)))


def report_of(documents: list[dict]) -> Report:
    return build_report(
        run_id="run-100k",
        mode="remediate",
        account_id=synthetic.account_ids(1)[0],
        regions=list(synthetic.REGIONS),
        started=datetime(2026, 12, 7, 3, 0, tzinfo=UTC),
        finished=datetime(2026, 12, 7, 3, 9, tzinfo=UTC),
        ip_ranges=_Ranges(),
        targets=documents,
    )


def on_the_endpoint_path(document: dict) -> dict:
    """The target's instances (but the excluded) on the EC2 Instance Connect Endpoint path (docs/architecture.md §13)
    as the engine reports them: the public path's own checks not applicable, the others passing, but every fourth
    instance's VPC has no endpoint (endpoint-present fails, report mode)."""
    account, region = document["account_id"], document["region"]
    entries = []
    for n in range(len(document["instances"])):
        outcome = synthetic.outcome(account, region, n, "report")
        if outcome.excluded_reason is None:
            outcome.connect_path = "endpoint"
            outcome.checks = {c: elsewhere("endpoint") for c in check_ids_for("public") if c not in ENDPOINT_TOO}
            outcome.checks |= {c: CheckResult("pass") for c in CHECK_IDS if c not in outcome.checks}
            outcome.actions, outcome.warnings = [], []
            if n % 4 == 0:
                vpc = outcome.vpc_id
                facts = (("vpc_id", vpc), ("subnet_id", ""), ("create_endpoints", "false"))
                no_endpoint = f"no EC2 Instance Connect Endpoint in {vpc}"
                outcome.checks["endpoint-present"] = CheckResult("fail", no_endpoint, kind="no-endpoint", facts=facts)
        entries.append(instance_entry(outcome))
    return {**document, "instances": entries}


ENDPOINT_TOO = ("al2023-ami", "imds-enabled", "network-acl")  # the checks of both paths
FRAME = ("account / region / vpc", "instance", "name / owner", "verdict")  # an instance table's columns, its checks
REASONS = "reasons, what to do, actions"  # ... and its last


def instances_header(page: str) -> list[str]:
    """The instance table's column names as the page writes them (a check by its full id)."""
    [table] = [t for t in parse(page).find_all("table") if t.attrs.get("id") == "instances"]
    return column_names(table)


@pytest.fixture(scope="module")
def big_report() -> Report:
    return synthetic_report(INSTANCES, ACCOUNTS)


@pytest.fixture(scope="module")
def big_page(big_report) -> str:
    return render_html(big_report)


# Read what the page drew, then use its filters and sort as a person would, and write down what each showed.
PROBE = """<script>
const drawn = () => [...document.querySelectorAll("#instances tbody tr")].map((tr) => [tr.className,
  tr.cells[1].textContent]);
const count = () => document.getElementById("count").textContent;
const out = {loaded_ms: Math.round(performance.now()), cards_top: Math.round(document.querySelector(".cards")
  .getBoundingClientRect().top), table_top: Math.round(document.getElementById("instances")
  .getBoundingClientRect().top), first: {count: count(), rows: drawn()}};
const pick = (id, value) => { const e = document.getElementById(id); e.value = value;
  e.dispatchEvent(new Event("change")); };
let t = performance.now(); pick("f-verdict", "noncompliant");
out.noncompliant = {count: count(), rows: drawn(), ms: Math.round(performance.now() - t)};
pick("f-verdict", ""); t = performance.now(); pick("f-check", "2");
out.ami_failing = {count: count(), rows: drawn(), ms: Math.round(performance.now() - t)};
pick("f-check", ""); t = performance.now(); document.querySelector('th[data-sort="instance"]').click();
out.by_instance = {count: count(), rows: drawn(), ms: Math.round(performance.now() - t)};
const pre = document.createElement("pre"); pre.id = "probe"; pre.hidden = true;
pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
</script>"""


def test_a_100000_instance_page_is_under_25_mb_and_opens_on_its_summary_then_filters_and_sorts(
    big_report, big_page, tmp_path
):
    # Given the page of a 100,000-instance run over 100 accounts and 5 regions (12% noncompliant, 2% errors)
    size = len(big_page.encode())
    verdicts = big_report.summary

    # When chromium takes a screenshot of it, and a copy with the probe uses its filters and sort
    browser = _chromium()
    html_file, probe_file, screenshot = tmp_path / "big.html", tmp_path / "probe.html", tmp_path / "big.png"
    html_file.write_text(big_page, encoding="utf-8")
    probe_file.write_text(without_csp(big_page).replace("</body>", f"{PROBE}</body>"), encoding="utf-8")
    window = "--window-size=1400,1200"
    shot = _headless(browser, tmp_path / "profile-shot", f"--screenshot={screenshot}", window, html_file.as_uri())
    probed = _headless(browser, tmp_path / "profile-probe", "--dump-dom", window, probe_file.as_uri())

    # Then the page is under 25 MB
    assert size <= SIZE_LIMIT, f"{size:,} bytes"
    # And the screenshot is a real one, kept as an artifact
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(screenshot, ARTIFACTS / "html-report-100k.png")
    # And the counts come first, the instance table below the summaries
    assert probed.returncode == 0, probed.stderr[-2000:]
    [node] = [n for n in _all_nodes(parse(probed.stdout)) if n.attrs.get("id") == "probe"]
    seen = json.loads(node.text())
    assert seen["cards_top"] < 200 < 1200 < seen["table_top"], seen
    # And the first screen holds 100 rows, failures first: every error before any noncompliant instance
    first = seen["first"]
    assert first["count"] == f"instances 1\u2013100 of {INSTANCES}"
    assert len(first["rows"]) == 100
    assert {cls for cls, _ in first["rows"]} == {"v-error"}  # 2,000 errors: the first screen is all errors
    # And choosing a verdict or a failing check filters all 100,000 at once, with the counts the summary has
    assert (
        seen["noncompliant"]["count"] == f"instances 1\u2013100 of {verdicts.noncompliant} (filtered from {INSTANCES})"
    )
    assert {cls for cls, _ in seen["noncompliant"]["rows"]} == {"v-noncompliant"}
    ami_failing = sum(
        1 for e in big_report.instances if e.checks.get("al2023-ami", None) and e.checks["al2023-ami"].status == "fail"
    )
    assert seen["ami_failing"]["count"] == f"instances 1\u2013100 of {ami_failing} (filtered from {INSTANCES})"
    # And sorting by instance id orders the whole fleet, not the screen
    ids = [instance for _, instance in seen["by_instance"]["rows"]]
    assert ids == sorted(e.instance_id for e in big_report.instances)[:100]
    print(
        f"100,000 instances: {size:,} bytes; loaded and drawn in {seen['loaded_ms']} ms; filter "
        f"{seen['noncompliant']['ms']} ms, {seen['ami_failing']['ms']} ms; sort {seen['by_instance']['ms']} ms"
    )


def test_beyond_the_page_limit_each_account_has_its_page_linked_from_the_summary(tmp_path):
    # Given a run of 3 accounts, and a page limit below its instance count
    report = synthetic_report(3 * 5 * 4, 3)

    # When its pages are rendered with a limit of 50 instances (the real limit is PAGE_INSTANCES)
    pages = render_pages(report, page_instances=50, stem="run-1")

    # Then there is the summary page and one page per account
    accounts = report.accounts
    assert sorted(pages) == sorted(["run-1.html", *[f"run-1.accounts/{a}.html" for a in accounts]])
    summary = parse(pages["run-1.html"])
    assert not [s for s in summary.find_all("script") if s.attrs.get("id") == "eic-rows"]
    links = sorted(a.attrs["href"] for a in summary.find_all("a") if a.attrs["href"].startswith("run-1.accounts/"))
    assert links == sorted(f"run-1.accounts/{a}.html" for a in accounts)
    # And each account's page holds exactly that account's instances, its own counts, and a link back
    for account in accounts:
        page = pages[f"run-1.accounts/{account}.html"]
        dom = dump_rows(page, tmp_path / account)
        mine = [e.instance_id for e in report.instances if e.account_id == account]
        assert sorted(dom) == sorted(mine)
        cards = {
            c.find_all("span")[0].text(): c.find_all("b")[0].text()
            for c in _all_nodes(parse(page))
            if "card" in (c.attrs.get("class") or "").split()
        }
        assert cards["instances"] == str(len(mine))
        assert '<a href="../run-1.html">all accounts</a>' in page
    # And under the limit there is one page, the same as render_html's
    assert render_pages(report, page_instances=PAGE_INSTANCES, stem="run-1") == {"run-1.html": render_html(report)}


def test_an_account_page_has_the_endpoint_paths_columns_when_one_of_its_instances_takes_it(tmp_path):
    # Given a run of 3 accounts split by account (limit 50, 60 instances), whose second account's instances in its
    # third region take the endpoint path (the first two regions': the public path), one in four failing
    # endpoint-present, and whose other accounts' instances all take the public path
    documents = list(synthetic.documents(3 * 5 * 4, 3))
    documents[7] = on_the_endpoint_path(documents[7])
    report = report_of(documents)
    mixed = documents[7]["account_id"]
    failing = [
        e.instance_id
        for e in report.instances
        if "endpoint-present" in e.checks and e.checks["endpoint-present"].status == "fail"
    ]
    assert len(failing) == 1 and report.summary.connect_paths == {"endpoint": 4}

    # When its pages are rendered
    pages = render_pages(report, page_instances=50, stem="run-1")

    # Then that account's page has every check's column, the endpoint path's included; each other account's page
    # the public path's checks only
    for account in report.accounts:
        checks = CHECK_IDS if account == mixed else check_ids_for("public")
        assert instances_header(pages[f"run-1.accounts/{account}.html"]) == [*FRAME, *checks, REASONS]
    assert list(CHECK_IDS) != list(check_ids_for("public"))
    # And in a browser the failing instance's endpoint-present cell says fail, its reason named by the check
    workdir = tmp_path / "mixed"
    workdir.mkdir()
    html_file = workdir / "page.html"
    html_file.write_text(pages[f"run-1.accounts/{mixed}.html"], encoding="utf-8")
    dumped = _headless(_chromium(), workdir / "profile", "--dump-dom", html_file.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    header, rows, _order = instance_rows(parse(dumped.stdout))
    assert header == [*FRAME, *CHECK_IDS, REASONS]
    assert len(rows) == 20
    cells = dict(zip(header, rows[failing[0]].find_all("td"), strict=True))
    assert (cells["endpoint-present"].text(), cells["endpoint-present"].attrs["class"]) == ("FAIL", "check fail")
    assert cells["verdict"].text() == "noncompliant"
    [vpc] = [e.vpc_id for e in report.instances if e.instance_id == failing[0]]
    [reason] = [li for li in cells[REASONS].find_all("li") if li.text().startswith("endpoint-present: ")]
    assert reason.text().startswith(f"endpoint-present: no EC2 Instance Connect Endpoint in {vpc}")


def dump_rows(page: str, workdir) -> list[str]:
    """The instance ids an account page draws (its 12 instances fit one screen)."""
    workdir.mkdir()
    html_file = workdir / "page.html"
    html_file.write_text(page, encoding="utf-8")
    dumped = _headless(_chromium(), workdir / "profile", "--dump-dom", html_file.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    _header, rows, _order = instance_rows(parse(dumped.stdout))
    return list(rows)


def test_the_stored_report_of_a_split_run_puts_each_account_page_beside_the_summary(aws, monkeypatch):
    # Given a reports bucket, and a run of 3 accounts over a page limit of 50 instances
    import boto3
    from eic_guard.outputs import html
    from eic_guard.outputs.publish import store_scan_report

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="reports")
    monkeypatch.setattr(html, "PAGE_INSTANCES", 50)
    report = synthetic_report(3 * 5 * 4, 3)

    # When the report is stored
    key = store_scan_report(s3, "reports", report)

    # Then the JSON, the summary page and one page per account sit under the run's dated key
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="reports")["Contents"])
    folder = key.rsplit("/", 1)[0]
    assert keys == sorted(
        [f"{key}.json", f"{key}.html", *[f"{folder}/{report.run_id}.accounts/{a}.html" for a in report.accounts]]
    )
    # And the summary page's links point at them (relative to the page)
    page = s3.get_object(Bucket="reports", Key=f"{key}.html")["Body"].read().decode()
    for account in report.accounts:
        assert f'href="{report.run_id}.accounts/{account}.html"' in page


def test_the_stored_json_report_is_the_same_document_encoded_from_the_model(big_report):
    # Given the 100,000-instance report, a small one, and an interrupted one
    small = synthetic_report(40, 2)
    interrupted = small.model_copy(update={"interrupted": True})

    # When each is encoded as Aggregate stores it (from the model, no dict) and as the report's document
    # Then the two are the same document (the interrupted flag only when true), indented
    for report in (big_report, small, interrupted):
        encoded = report.to_json_bytes()
        assert json.loads(encoded) == report.to_dict()
        assert encoded.startswith(b'{\n  "schema": "eic-guard/report/v1"')
    assert "interrupted" not in json.loads(small.to_json_bytes())
    assert json.loads(interrupted.to_json_bytes())["interrupted"] is True
