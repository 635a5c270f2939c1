"""Findings you can query (issue 20, item 4): each target's worker writes its per-instance rows as gzip JSON Lines
under tables/findings/run_date=/account=, and template.yaml's Glue table (partition projection) reads them. The table's
schema is held against the records the real worker writes."""

from __future__ import annotations

import gzip
import json
import re
from datetime import UTC, datetime
from types import SimpleNamespace

import boto3
import pytest
from botocore.exceptions import ClientError
from eic_guard.fanout import steps
from eic_guard.fanout.steps import RunObjects, _put_findings
from eic_guard.fanout.targets import Target
from eic_guard.outputs import athena

from benchmarks import synthetic
from tests.conftest import REGION, ROOT
from tests.integration.test_nightly_run import build_fleet, ip_ranges_url, scan_env  # noqa: F401 - fixtures
from tests.template.cfn import resources

ACCOUNT = "123456789012"
README = (ROOT / "README.md").read_text(encoding="utf-8")


def table() -> dict:
    return resources()["FindingsTable"]["Properties"]["TableInput"]


def stored_rows(bucket: str) -> dict[str, list[dict]]:
    """Every object under tables/findings/, as its rows."""
    s3 = boto3.client("s3", REGION)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="tables/findings/").get("Contents", [])
    return {
        o["Key"]: [
            json.loads(line)
            for line in gzip.decompress(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()).splitlines()
        ]
        for o in listed
    }


# ---- a reader of Hive type strings, to hold records against the table's columns -------------------------------------
def parse_type(text: str) -> tuple:
    """("string",) / ("array", t) / ("map", k, v) / ("struct", {name: t}) from a Glue column type."""
    parsed, rest = _type(text.replace(" ", ""))
    assert rest == "", f"trailing {rest!r} in {text!r}"
    return parsed


def _type(text: str) -> tuple[tuple, str]:
    name = re.match(r"[a-z]+", text).group()
    rest = text[len(name) :]
    if name == "array":
        inner, rest = _type(rest[1:])
        return ("array", inner), rest[1:]
    if name == "map":
        key, rest = _type(rest[1:])
        value, rest = _type(rest[1:])
        return ("map", key, value), rest[1:]
    if name == "struct":
        fields, rest = {}, rest[1:]
        while True:
            field = re.match(r"[a-z_]+", rest).group()
            fields[field], rest = _type(rest[len(field) + 1 :])
            if rest[0] == ">":
                return ("struct", fields), rest[1:]
            rest = rest[1:]
    return (name,), rest


HIVE_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,9})?$")


def conforms(value, hive: tuple, where: str) -> list[str]:
    """What in `value` the column type `hive` cannot read (a null is always readable)."""
    if value is None:
        return []
    kind = hive[0]
    if kind == "string":
        return [] if isinstance(value, str) else [f"{where}: {value!r} is not a string"]
    if kind in ("int", "bigint"):
        ok = isinstance(value, int) and not isinstance(value, bool) and (kind == "bigint" or abs(value) < 2**31)
        return [] if ok else [f"{where}: {value!r} is not an {kind}"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{where}: {value!r} is not a boolean"]
    if kind == "timestamp":
        ok = isinstance(value, str) and HIVE_TIMESTAMP.match(value)
        return [] if ok else [f"{where}: {value!r} is not a yyyy-MM-dd HH:mm:ss[.fff] timestamp"]
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: {value!r} is not an array"]
        return [p for n, v in enumerate(value) for p in conforms(v, hive[1], f"{where}[{n}]")]
    if kind == "map":
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not a map"]
        return [p for k, v in value.items() for p in conforms(k, hive[1], where) + conforms(v, hive[2], f"{where}.{k}")]
    if kind == "struct":
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not a struct"]
        unknown = [f"{where}: {k} is no field of the struct" for k in set(value) - set(hive[1])]
        return unknown + [p for k, t in hive[1].items() for p in conforms(value.get(k), t, f"{where}.{k}")]
    return [f"{where}: the test does not know the type {kind}"]


def schema_problems(record: dict) -> list[str]:
    columns = {c["Name"]: parse_type(c["Type"]) for c in table()["StorageDescriptor"]["Columns"]}
    problems = [f"{k} is no column of the table" for k in set(record) - set(columns)]
    problems += [f"{c} is missing" for c in set(columns) - set(record)]
    return problems + [p for name, hive in columns.items() for p in conforms(record.get(name), hive, name)]


def test_the_table_reads_exactly_the_columns_the_worker_writes_and_projects_run_date():
    # Given the Glue table of template.yaml
    columns = [c["Name"] for c in table()["StorageDescriptor"]["Columns"]]
    parameters = table()["Parameters"]

    # When / Then its columns are outputs/athena.py's, in order, and every type parses
    assert tuple(columns) == athena.COLUMNS
    assert all(parse_type(c["Type"]) for c in table()["StorageDescriptor"]["Columns"])
    # And run_date is projected (no crawler): a date partition from the key, from 2026 to now, one a day
    assert table()["PartitionKeys"] == [
        {"Name": "run_date", "Type": "string", "Comment": "the run's UTC start date, yyyy-MM-dd"}
    ]
    assert {k: v for k, v in parameters.items() if k.startswith("projection.")} == {
        "projection.enabled": "true",
        "projection.run_date.type": "date",
        "projection.run_date.format": "yyyy-MM-dd",
        "projection.run_date.range": "2026-01-01,NOW",
        "projection.run_date.interval": "1",
        "projection.run_date.interval.unit": "DAYS",
    }
    # And the locations are the prefix the worker writes under (the account= level is a folder inside run_date=)
    assert parameters["storage.location.template"] == {
        "Fn::Sub": "s3://${ReportsBucket}/tables/findings/run_date=${!run_date}/"
    }
    assert table()["StorageDescriptor"]["Location"] == {"Fn::Sub": "s3://${ReportsBucket}/tables/findings/"}
    assert athena.TABLE_PREFIX == "tables/findings"
    assert table()["StorageDescriptor"]["SerdeInfo"] == {"SerializationLibrary": "org.openx.data.jsonserde.JsonSerDe"}


@pytest.fixture
def nightly(account, ec2, ip_ranges_url, scan_env, runs_bucket, nightly_execution):  # noqa: F811 - fixtures
    """Two nights of the fan-out (the deployed state machine) over one fixable and one compliant instance."""
    _net, failing, compliant = build_fleet(account)
    first = nightly_execution("night-1")
    after_first = stored_rows(runs_bucket)
    second = nightly_execution("night-2")
    return {
        "failing": failing,
        "compliant": compliant,
        "first": first,
        "second": second,
        "after_first": after_first,
        "after_second": stored_rows(runs_bucket),
    }


def test_each_night_writes_one_row_per_instance_under_its_run_date_and_account(nightly):
    # Given two nights: the first fixes the failing instance, the second finds both compliant
    today = datetime.now(UTC).date().isoformat()

    # When the rows under tables/findings/ are read after each night
    first, second = nightly["after_first"], nightly["after_second"]
    assert set(first) < set(second)

    # Then the first night wrote one object for its one target, under run_date= and account=
    prefix = f"tables/findings/run_date={today}/account={ACCOUNT}/"
    assert list(first) == [f"{prefix}{REGION}-night-1.json.gz"]
    rows = {r["instance_id"]: r for r in first[f"{prefix}{REGION}-night-1.json.gz"]}
    assert set(rows) == {nightly["failing"], nightly["compliant"]}
    # And each row says what the report says: the verdict, the checks, what was done
    fixed = rows[nightly["failing"]]
    assert (fixed["run_id"], fixed["mode"], fixed["account_id"], fixed["region"]) == (
        "night-1",
        "remediate",
        ACCOUNT,
        REGION,
    )
    assert fixed["verdict"] == "fixed" and fixed["target_status"] == "ok"
    assert {c: v["status"] for c, v in fixed["checks"].items() if v["status"] != "pass"} == {
        "eic-ssh-ingress": "fixed",
        "imds-enabled": "fixed",
    }
    assert fixed["checks"]["imds-enabled"]["guidance"].startswith("eic-guard enabled the metadata endpoint")
    assert fixed["failing_checks"] == [] and fixed["fixes"] == len(fixed["actions"]) >= 2
    assert {a["status"] for a in fixed["actions"]} == {"done"}
    assert rows[nightly["compliant"]]["verdict"] == "compliant" and rows[nightly["compliant"]]["fixes"] == 0
    # And the report of that night counts the same instances
    assert nightly["first"]["summary"]["fixed"] == 1 and nightly["first"]["summary"]["compliant"] == 1
    # And the second night added its own object (the first is unchanged), both instances compliant, nothing fixed
    assert set(nightly["after_second"]) == {*first, f"{prefix}{REGION}-night-2.json.gz"}
    assert nightly["after_second"][f"{prefix}{REGION}-night-1.json.gz"] == first[f"{prefix}{REGION}-night-1.json.gz"]
    again = nightly["after_second"][f"{prefix}{REGION}-night-2.json.gz"]
    assert {(r["verdict"], r["fixes"]) for r in again} == {("compliant", 0)}


def test_the_table_schema_reads_every_record_written(nightly):
    # Given every record the real worker wrote over two nights, and the rows of a synthetic organization's results
    # (every verdict, check status, warning, failed action, exclusion)
    written = [r for rows in nightly["after_second"].values() for r in rows]
    started = datetime(2026, 12, 7, 3, 0, 5, 123456, tzinfo=UTC)
    synthetic_rows = [
        row
        for document in synthetic.documents(200, 1, regions=("us-east-1",), mode="report")
        for row in athena.finding_rows(document, "run-synthetic", started, "report")
    ]
    assert {r["verdict"] for r in synthetic_rows} == {"compliant", "noncompliant", "excluded", "error"}

    # When each record is held against the table's columns and types
    problems = {r["instance_id"]: schema_problems(r) for r in written + synthetic_rows}

    # Then every record has exactly the table's columns, each value of its column's type
    assert {i: p for i, p in problems.items() if p} == {}
    assert synthetic_rows[0]["run_started_at"] == "2026-12-07 03:00:05.123"


def test_a_later_round_rewrites_its_targets_rows_with_every_round_merged(aws, runs_bucket):
    # Given round 1 of a target that fixed i-1 and saw i-2 (gone since), and round 2 that finds i-1 compliant
    s3 = boto3.client("s3", REGION)
    objects = RunObjects(s3, runs_bucket, "run-rounds")
    plan = _plan("run-rounds")
    target = Target(ACCOUNT, REGION)
    fixed = _entry(
        "i-1", "fixed", "fixed", [{"action": "enable-imds", "resource": "i-1", "status": "done", "detail": "x"}]
    )
    round_1 = _document(1, [fixed, _entry("i-2", "noncompliant", "fail", [])])
    objects.put(f"results/{target.key}/apply-r1.json", round_1)
    round_2 = _document(2, [_entry("i-1", "compliant", "pass", [])])

    # When round 2's rows are written
    _put_findings(objects, plan, target, 2, round_2)

    # Then the target's one object holds i-1 fixed with round 1's action, and i-2 as round 1 saw it
    [(key, rows)] = stored_rows(runs_bucket).items()
    assert key == f"tables/findings/run_date=2026-12-07/account={ACCOUNT}/{REGION}-run-rounds.json.gz"
    by_id = {r["instance_id"]: r for r in rows}
    assert (by_id["i-1"]["verdict"], by_id["i-1"]["fixes"]) == ("fixed", 1)
    assert by_id["i-1"]["checks"]["imds-enabled"]["status"] == "fixed"
    assert by_id["i-2"]["verdict"] == "noncompliant" and by_id["i-2"]["failing_checks"] == ["imds-enabled"]
    assert round_2["notes"] == []


def test_rows_that_cannot_be_written_are_a_note_of_the_target_and_its_result_is_kept(aws, runs_bucket, monkeypatch):
    # Given a bucket that refuses the rows' key
    def refuse(*args, **kwargs):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "PutObject")

    monkeypatch.setattr(steps, "write_findings", refuse)
    objects = RunObjects(boto3.client("s3", REGION), runs_bucket, "run-refused")
    document = _document(1, [_entry("i-1", "compliant", "pass", [])])

    # When the rows are written
    _put_findings(objects, _plan("run-refused"), Target(ACCOUNT, REGION), 1, document)

    # Then nothing is raised and the target carries a note (amber in the report) naming the failure
    assert document["notes"] == [
        "per-instance results for Athena (tables/findings/) not written: An error occurred (AccessDenied) when "
        "calling the PutObject operation: Access Denied"
    ]


def test_the_readme_shows_three_queries_of_the_table_with_its_columns():
    # Given the README's section on the table
    section = README[README.index("### Findings you can query") :]
    section = section[: section.index("\n## ")]
    queries = re.findall(r"```sql\n(.*?)```", section, re.DOTALL)

    # When / Then there are the three queries: non-compliant by account over 30 days, failing since N nights,
    # fixes per night - each on eic_guard.findings, bounded by run_date (so Athena reads only those days)
    assert len(queries) == 3
    columns = {c["Name"] for c in table()["StorageDescriptor"]["Columns"]} | {"run_date"}
    for query in queries:
        assert "FROM eic_guard.findings" in query and "run_date" in query
        used = set(re.findall(r"\b([a-z_]+)\b", query)) & {
            "verdict",
            "account_id",
            "instance_id",
            "fixes",
            "failing_checks",
            "region",
            "name",
            "account_alias",
        }
        assert used <= columns


def _plan(run_id: str) -> SimpleNamespace:
    """What the rows need of a RunPlan."""
    return SimpleNamespace(run_id=run_id, started_at=datetime(2026, 12, 7, 3, 0, tzinfo=UTC), mode="remediate")


def _entry(instance_id: str, verdict: str, imds: str, actions: list) -> dict:
    checks = {"imds-enabled": {"status": imds, "reason": None if imds == "pass" else "metadata endpoint is disabled"}}
    return {
        "instance_id": instance_id,
        "account_id": ACCOUNT,
        "region": REGION,
        "vpc_id": "vpc-1",
        "verdict": verdict,
        "checks": checks,
        "actions": actions,
        "name": None,
        "tags": {},
        "warnings": [],
        "excluded_reason": None,
    }


def _document(round_: int, instances: list) -> dict:
    return {
        "account_id": ACCOUNT,
        "region": REGION,
        "phase": "apply",
        "round": round_,
        "status": "ok",
        "error": None,
        "account_alias": None,
        "notes": [],
        "instances": instances,
        "actions": [],
        "refresh": None,
        "security_hub": None,
        "finished_at": "2026-12-07T03:01:00+00:00",
    }
