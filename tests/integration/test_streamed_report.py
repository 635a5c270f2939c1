"""The streamed Aggregate (issue 20, item 1; docs/architecture.md §15) writes the report the in-memory one did, byte
for byte: the JSON report, the HTML page (or the summary page and one page per account beyond PAGE_INSTANCES) and
the alert, on a synthetic organization with every verdict, warnings, a target error, an unreadable and a lost result,
and two accounts with endpoint-path instances (docs/architecture.md §13; one of them after public-path ones), whose
pages show the endpoint path's columns when split by account; a report in parts goes through an S3 multipart upload,
and one that fails leaves no object and no upload behind."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.exceptions import ClientError
from eic_guard.checks import CHECK_IDS, check_ids_for
from eic_guard.fanout.aggregate import aggregate_run, merge_targets, stream_run
from eic_guard.fanout.plan import RunPlan
from eic_guard.fanout.results import LostResult, UnreadableResult
from eic_guard.fanout.targets import Target
from eic_guard.outputs import stream as streaming
from eic_guard.outputs.alerts import AlertState, ProblemTally, problems_of, quiet_alert, read_previous
from eic_guard.outputs.html import StringTable, _json, encoded_rows, instance_row, render_pages
from eic_guard.outputs.publish import store_scan_report
from eic_guard.outputs.report import InstanceEntry
from eic_guard.outputs.stream import S3Upload, Spool
from eic_guard.ranges import ip_ranges
from eic_guard.settings import Settings
from moto import mock_aws

from benchmarks import synthetic
from tests.conftest import FIXTURES, REGION
from tests.integration.test_html_at_scale import FRAME, REASONS, instances_header, on_the_endpoint_path

BUCKET = "eic-guard-streamed"
FINISHED = datetime(2026, 12, 7, 3, 9, tzinfo=UTC)
ACCOUNTS = 4


class _Store:
    """An alert state store holding one state (outputs.alerts.AlertStateStore)."""

    def __init__(self, state: AlertState | None):
        self.state = state

    def load(self) -> AlertState | None:
        return self.state

    def save(self, state: AlertState) -> None:
        self.state = state


def _run(instances: int) -> tuple[RunPlan, list[dict], list]:
    """A synthetic organization (benchmarks/synthetic.py: real entries, guidance, every verdict and warnings) whose
    first target could not be entered, whose second's object is unreadable and whose third's result was lost; the
    third account's third target and the fourth account's first take the endpoint path (one instance in four failing
    endpoint-present), the other targets the public path."""
    documents = list(synthetic.documents(instances, ACCOUNTS))
    for n in (12, 15):  # 5 targets (regions) an account
        documents[n] = on_the_endpoint_path(documents[n])
    targets = [Target(d["account_id"], d["region"]) for d in documents]
    documents[0] |= {"status": "error", "error": "AssumeRole: AccessDenied", "instances": []}
    documents[3]["account_alias"] = "prod-web"
    broken = documents.pop(1)
    lost_from = documents.pop(1)
    problems = [
        UnreadableResult(broken["account_id"], broken["region"], "apply", 1, "truncated at byte 4096"),
        LostResult(
            lost_from["account_id"],
            lost_from["region"],
            "apply",
            1,
            "PutObject: SlowDown",
            1,
            150,
            ({"action": "authorize-ingress", "resource": "sg-0abc", "status": "done", "detail": "tcp/22"},),
        ),
    ]
    plan = synthetic.run_plan(
        f"streamed-{instances}", targets, ip_ranges.load(str(FIXTURES / "ip-ranges" / "ip-ranges-2026-08-22.json"))
    )
    return plan, documents, problems


def _stored(s3, prefix: str) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", ())
    return {o["Key"][len(prefix) :]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed}


@pytest.mark.parametrize(
    ("instances", "page_instances"),
    [(10_000, None), (10_000, 4_000)],
    ids=["one page", "split by account"],
)
def test_the_streamed_report_is_the_in_memory_report_byte_for_byte(instances, page_instances, monkeypatch):
    # Given a run's results, aggregated the old way (every instance in memory) and streamed (one target at a time),
    # the report written in 5 MiB parts, S3's least (the JSON report is ~12 MB: three parts)
    plan, documents, problems = _run(instances)
    settings = Settings.build(regions=synthetic.REGIONS)
    monkeypatch.setattr(streaming, "PART_BYTES", 5 * 1024 * 1024)
    monkeypatch.setattr(streaming, "PAGE_INSTANCES", page_instances or streaming.PAGE_INSTANCES)
    report, refresh, _ = aggregate_run(plan, documents, settings, FINISHED, problems)
    targets = merge_targets(plan, documents, problems)
    with mock_aws():
        s3 = boto3.client("s3", REGION)
        s3.create_bucket(Bucket=BUCKET)
        stream, skeleton, streamed_refresh, light = stream_run(plan, iter(targets), settings, FINISHED)
        key = store_scan_report(s3, BUCKET, skeleton, stream)
        stream.close()
        stored = _stored(s3, key.rsplit("/", 1)[0] + "/")
        uploads = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])

    # Then the JSON report is the in-memory report's bytes, the pages are render_pages' pages, and the report
    # without instances is the report's every other field
    stem = plan.run_id
    stored_json = stored.pop(f"{stem}.json")
    assert stored_json == report.to_json_bytes()
    pages = render_pages(report, page_instances, stem=stem)
    assert {name: body.decode() for name, body in stored.items()} == pages
    assert len(pages) == (1 if page_instances is None else ACCOUNTS + 1)
    # and a page has the endpoint path's check columns when one of its instances takes that path: an account's page
    # when split by account (the third and fourth accounts'), the one page otherwise
    endpoint = sorted({e.account_id for e in report.instances if e.connect_path == "endpoint"})
    assert endpoint == synthetic.account_ids(ACCOUNTS)[2:]
    if page_instances is None:
        assert instances_header(pages[f"{stem}.html"]) == [*FRAME, *CHECK_IDS, REASONS]
    for account in report.accounts if page_instances else ():
        checks = CHECK_IDS if account in endpoint else check_ids_for("public")
        assert instances_header(pages[f"{stem}.accounts/{account}.html"]) == [*FRAME, *checks, REASONS]
    assert skeleton == report.model_copy(update={"instances": []})
    assert streamed_refresh == refresh
    assert all(t["instances"] == [] for t in light)
    assert uploads == []
    # and the instances are all there, each once: the errored, unreadable and lost targets as target errors
    assert json.loads(stored_json)["summary"]["instances"] == sum(len(d["instances"]) for d in documents)
    assert [e.error[:24] for e in skeleton.target_errors] == [
        "AssumeRole: AccessDenied",
        "result object unreadable",
        "scanned, result lost, 1 ",
    ]


@pytest.mark.parametrize("remembered", ["nothing", "half, digest due", "everything, no digest"])
def test_the_streamed_alert_is_the_in_memory_alert(remembered):
    # Given a run's problems, and a last run that remembered none, half (a week ago: a digest is due) or all of them
    plan, documents, problems = _run(2_000)
    settings = Settings.build(regions=synthetic.REGIONS)
    report, _, _ = aggregate_run(plan, documents, settings, FINISHED, problems)
    found = [p.fingerprint for p in problems_of(report)]
    state = {
        "nothing": None,
        "half, digest due": AlertState(frozenset(found[::2]), datetime(2026, 11, 29, 3, tzinfo=UTC)),
        "everything, no digest": AlertState(frozenset(found), datetime(2026, 12, 6, 3, tzinfo=UTC)),
    }[remembered]

    # When the alert is composed from the report in memory, and from the tally the streamed Aggregate feeds
    expected = quiet_alert(report, _Store(state), now=FINISHED, location="https://console/report")
    previous = read_previous(_Store(state))
    tally = ProblemTally(previous.state, previous.notes)
    _, skeleton, _, _ = stream_run(plan, iter(merge_targets(plan, documents, problems)), settings, FINISHED, tally)
    streamed = quiet_alert(
        skeleton, _Store(state), now=FINISHED, location="https://console/report", tally=tally, previous=previous
    )

    # Then both say the same, and remember the same
    assert (streamed.subject, streamed.message) == (expected.subject, expected.message)
    assert streamed.decision.state == expected.decision.state
    assert streamed.summary() == expected.summary()
    assert (expected.message is None) == (remembered == "everything, no digest")


def test_a_report_upload_that_fails_in_the_middle_leaves_no_object_and_no_parts(monkeypatch):
    # Given a report in parts whose second part S3 refuses
    with mock_aws():
        s3 = boto3.client("s3", REGION)
        s3.create_bucket(Bucket=BUCKET)
        real = s3.upload_part
        calls = []

        def refuse_second(**kwargs):
            calls.append(kwargs["PartNumber"])
            if kwargs["PartNumber"] == 2:
                raise ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce"}}, "UploadPart")
            return real(**kwargs)

        monkeypatch.setattr(s3, "upload_part", refuse_second)

        # When it is written
        with (
            pytest.raises(ClientError, match="SlowDown"),
            S3Upload(s3, BUCKET, "reports/r.json", "application/json") as up,
        ):
            for _ in range(3):
                up.write(b"x" * (5 * 1024 * 1024))

        # Then the error is raised (the caller logs it), the upload is aborted: no object, no parts kept
        assert calls == [1, 2]
        assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
        assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_a_small_report_is_one_put_and_a_large_one_a_multipart_upload_of_whole_parts():
    with mock_aws():
        s3 = boto3.client("s3", REGION)
        s3.create_bucket(Bucket=BUCKET)
        with S3Upload(s3, BUCKET, "reports/small.json", "application/json") as up:
            up.write(b'{"a": 1}')
        with S3Upload(s3, BUCKET, "reports/large.json", "application/json", part_bytes=5 * 1024 * 1024) as up:
            for n in range(12):
                up.write(bytes([48 + n]) * (1024 * 1024))
        assert s3.get_object(Bucket=BUCKET, Key="reports/small.json")["Body"].read() == b'{"a": 1}'
        large = s3.get_object(Bucket=BUCKET, Key="reports/large.json")
        assert large["Body"].read() == b"".join(bytes([48 + n]) * (1024 * 1024) for n in range(12))
        assert large["ContentType"] == "application/json"
        assert large["ETag"].endswith('-3"')  # three parts: 5, 5 and 2 MiB


@pytest.mark.parametrize(
    ("cut", "kept"), [(1300, b"a" * 600 + b"b" * 600 + b"c" * 100), (900, b"a" * 600 + b"b" * 300)]
)
def test_a_spool_cut_back_keeps_what_precedes_the_cut_and_goes_on_from_it(cut, kept, monkeypatch, tmp_path):
    # Given a spool (an account page's rows: its column set not shown is cut off) written through a buffer of 1,000
    # bytes: 1,200 bytes in its file, 300 in its buffer
    monkeypatch.setattr(streaming, "BUFFER_BYTES", 1000)
    spool = Spool(str(tmp_path))
    for data in (b"a" * 600, b"b" * 600, b"c" * 300):
        spool.write(data)

    # When it is cut back to 1,300 bytes (in its buffer) or to 900 (in its file), then written to
    spool.truncate(cut)
    spool.write(b"d" * 50)

    # Then it holds what preceded the cut and what came after, its file no longer than that
    assert b"".join(spool.chunks()) == kept + b"d" * 50
    assert spool.size == len(kept) + 50
    spool.file.seek(0, 2)
    assert spool.file.tell() == len(kept) + 50
    spool.close()


def test_a_row_encoded_for_several_column_sets_is_the_row_encoded_for_each():
    # Given instances of every synthetic profile on both connect paths, and column sets: the public path's checks and
    # every check (a page's two), in either order, and sets that are no part of one another
    documents = list(synthetic.documents(400, 1))
    entries = [
        InstanceEntry.model_validate(e)
        for d in (documents[0], on_the_endpoint_path(documents[1]))
        for e in d["instances"]
    ]
    public, odd = check_ids_for("public"), (("endpoint-present", "al2023-ami"), ("public-ipv4",))
    column_sets = [(public, CHECK_IDS), (CHECK_IDS, public), (public,), odd, (*odd, CHECK_IDS)]
    assert {e.connect_path for e in entries} == {None, "endpoint"}

    # When each instance's rows are encoded at once (the streamed pages') and one set at a time (the in-memory pages')
    together, apart = StringTable(), StringTable()
    for entry in entries:
        for sets in column_sets:
            # Then they are the same rows, and the string tables are the same
            assert encoded_rows(entry, together, sets) == [_json(instance_row(entry, apart, c)) for c in sets]
    assert together.texts() == apart.texts()


@pytest.mark.parametrize("mode", ["report", "remediate"])
def test_the_demo_fleets_streamed_report_is_its_in_memory_report(mode, account, ranges_2026, monkeypatch):
    # Given the demo's account (every scenario of `eic-guard demo`: both connect paths, every check failing somewhere,
    # excluded, stopped and retired-image instances, owner tags, warnings, an IAM alias), scanned by the real worker
    from eic_guard.aws.clients import AwsClients
    from eic_guard.aws.credentials import AccountClients
    from eic_guard.demo import scenarios, seeding
    from eic_guard.fanout.plan import plan_run
    from eic_guard.fanout.worker import run_target

    seeding.seed(account, ranges_2026.for_region(REGION))
    boto3.client("iam", REGION).create_account_alias(AccountAlias=scenarios.ACCOUNT_ALIAS)
    settings = Settings.build(regions=(REGION,), mode=mode, create_endpoints=True)
    clients = AwsClients()
    plan = plan_run("scan", settings, clients, ranges=ranges_2026)
    accounts = AccountClients(clients, plan.run_id, settings.member_role_name)
    documents = [run_target(plan, t, "apply", accounts.for_account, settings) for t in plan.targets]
    monkeypatch.setattr(streaming, "PART_BYTES", 5 * 1024 * 1024)

    # When it is aggregated in memory and streamed
    report, _, _ = aggregate_run(plan, documents, settings, FINISHED)
    s3 = boto3.client("s3", REGION)
    s3.create_bucket(Bucket=BUCKET)
    stream, skeleton, _, _ = stream_run(plan, iter(merge_targets(plan, documents)), settings, FINISHED)
    key = store_scan_report(s3, BUCKET, skeleton, stream)
    stream.close()

    # Then the stored report and page are the in-memory ones, byte for byte
    stored = _stored(s3, key.rsplit("/", 1)[0] + "/")
    assert stored.pop(f"{plan.run_id}.json") == report.to_json_bytes()
    assert {name: body.decode() for name, body in stored.items()} == render_pages(report, stem=plan.run_id)
    assert report.account_aliases == {report.account_id: scenarios.ACCOUNT_ALIAS}
    assert {e.verdict for e in report.instances} >= {"compliant", "noncompliant", "excluded"} | (
        {"fixed"} if mode == "remediate" else set()
    )
    assert {e.connect_path for e in report.instances} >= {"public", "endpoint"}


@pytest.mark.parametrize("planned", [0, 1], ids=["no target", "one target without a result"])
def test_a_run_without_instances_streams_the_in_memory_report(planned, ranges_2026):
    # Given a run with no target (an organization whose accounts are all skipped) or one whose only target left no
    # result
    targets = [Target(synthetic.account_ids(1)[0], REGION)][:planned]
    plan = synthetic.run_plan("empty-run", targets, ranges_2026, mode="report")
    settings = Settings.build(regions=(REGION,))
    report, _, _ = aggregate_run(plan, [], settings, FINISHED)

    # When it is streamed and stored
    with mock_aws():
        s3 = boto3.client("s3", REGION)
        s3.create_bucket(Bucket=BUCKET)
        stream, skeleton, _, _ = stream_run(plan, iter(merge_targets(plan, [])), settings, FINISHED)
        key = store_scan_report(s3, BUCKET, skeleton, stream)
        stream.close()
        stored = _stored(s3, key.rsplit("/", 1)[0] + "/")

    # Then its report and page are the in-memory ones (the target without a result is a target error)
    assert stored.pop("empty-run.json") == report.to_json_bytes()
    assert {name: body.decode() for name, body in stored.items()} == render_pages(report, stem="empty-run")
    assert len(skeleton.target_errors) == planned
