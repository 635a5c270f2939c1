"""The CSV report (outputs/csv_rows.py): one row per (instance, check), each saying who, what is wrong, what to do."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from eic_guard.checks import check_ids_for
from eic_guard.outputs.csv_rows import COLUMNS, write_csv
from eic_guard.outputs.report import (
    ActionEntry,
    CheckEntry,
    InstanceEntry,
    IpRangesEntry,
    Report,
    Summary,
    TargetEntry,
)

from tests.report_entries import every_check

ACCOUNT, MEMBER, REGION = "123456789012", "210987654321", "us-east-1"
STARTED = datetime(2026, 8, 23, 3, 0, 5, tzinfo=UTC)
WORLD_OPEN = "ssh-open-to-internet: sg-0open allows TCP 22 from 0.0.0.0/0"
UNPLACED = "some-future-code: a warning about no check in particular"
GUIDANCE = "Turn the metadata endpoint on: https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-IMDS.html"


def report() -> Report:
    instances = [
        InstanceEntry(
            instance_id="i-01",
            account_id=ACCOUNT,
            region=REGION,
            vpc_id="vpc-1",
            verdict="noncompliant",
            checks=every_check(
                imds_enabled=CheckEntry(status="would-fix", reason="endpoint disabled", guidance=GUIDANCE)
            ),
            actions=[
                ActionEntry(action="create-security-group", resource="vpc-1", status="planned", detail="new"),
                ActionEntry(action="attach-security-group", resource="eni-1", status="planned", detail="attach"),
                ActionEntry(action="enable-imds", resource="i-01", status="planned", detail="HttpEndpoint"),
                ActionEntry(action="future-action", resource="i-01", status="done", detail="a new kind of write"),
            ],
            name='web, "open" world',
            tags={"Owner": "alice", "Team": "payments"},
            warnings=[WORLD_OPEN, UNPLACED],
        ),
        InstanceEntry(
            instance_id="i-02",
            account_id=MEMBER,
            region=REGION,
            vpc_id=None,
            verdict="excluded",
            checks={},
            actions=[],
            excluded_reason="legacy bastion",
        ),
    ]
    return Report(
        run_id="run-csv-1",
        mode="report",
        account_id=ACCOUNT,
        regions=[REGION],
        started_at=STARTED,
        finished_at=STARTED,
        ip_ranges=IpRangesEntry(sync_token="1", create_date="2026-08-22-15-17-05"),
        summary=Summary(instances=2, compliant=0, fixed=0, noncompliant=1, excluded=1, errors=0, warnings=1),
        accounts=[ACCOUNT, MEMBER],
        account_aliases={ACCOUNT: "acme-prod"},
        targets=[
            TargetEntry(account_id=a, region=REGION, status="ok", error=None, instances=1) for a in (ACCOUNT, MEMBER)
        ],
        instances=instances,
    )


def rows_of(report: Report) -> list[dict[str, str]]:
    stream = io.StringIO()
    write_csv(report, stream)
    return list(csv.DictReader(io.StringIO(stream.getvalue())))


def test_each_row_names_the_instance_its_owners_what_to_do_and_its_warnings():
    # Given a named, owned instance whose metadata endpoint is off and whose SSH is open to the world
    # When the report is written as CSV
    rows = rows_of(report())

    # Then the header is the documented one, and each of the instance's rows says who it is
    assert list(rows[0]) == list(COLUMNS)
    first = [r for r in rows if r["instance_id"] == "i-01"]
    assert [r["check"] for r in first] == list(check_ids_for("public"))
    assert {(r["account_alias"], r["name"], r["tags"]) for r in first} == {
        ("acme-prod", 'web, "open" world', "Owner=alice;Team=payments")
    }
    # And the failing check's row carries its guidance, the passing ones none
    by_check = {r["check"]: r for r in first}
    assert by_check["imds-enabled"]["guidance"] == GUIDANCE
    assert {r["guidance"] for c, r in by_check.items() if c != "imds-enabled"} == {""}
    # And the world-open warning is on the eic-ssh-ingress row; a warning about no check is on every row
    assert by_check["eic-ssh-ingress"]["status"] == "pass"
    assert by_check["eic-ssh-ingress"]["warnings"] == f"{WORLD_OPEN}; {UNPLACED}"
    assert {r["warnings"] for c, r in by_check.items() if c != "eic-ssh-ingress"} == {UNPLACED}
    # And each action is on the row of the check it was made for, once; one about no known check on the first row
    assert {c: r["actions"] for c, r in by_check.items() if r["actions"]} == {
        "public-ipv4": "done: future-action i-01",
        "eic-ssh-ingress": "planned: create-security-group vpc-1; planned: attach-security-group eni-1",
        "imds-enabled": "planned: enable-imds i-01",
    }


def test_an_excluded_instance_without_alias_or_name_is_one_row_with_empty_cells():
    # Given an excluded instance in an account without an alias
    # When the report is written as CSV
    [row] = [r for r in rows_of(report()) if r["instance_id"] == "i-02"]

    # Then it is one row with its reason, and nothing where there is nothing to say
    assert row == {
        "account_id": MEMBER,
        "account_alias": "",
        "region": REGION,
        "instance_id": "i-02",
        "name": "",
        "tags": "",
        "vpc_id": "",
        "verdict": "excluded",
        "check": "",
        "status": "",
        "reason": "legacy bastion",
        "guidance": "",
        "warnings": "",
        "actions": "",
        "connect_path": "",
        "connect_command": "",
    }


@pytest.mark.parametrize("name", ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1)", "\tleading-tab"])
def test_a_tag_a_spreadsheet_would_evaluate_is_written_as_text(name):
    # Given an instance whose Name tag starts like a formula (anyone who may tag the instance chooses it)
    base = report()
    named = base.instances[0].model_copy(update={"name": name})
    evil = base.model_copy(update={"instances": [named, *base.instances[1:]]})

    # When the report is written as CSV
    rows = [row for row in rows_of(evil) if row["instance_id"] == "i-01"]

    # Then the name cells start with a quote: a spreadsheet shows them as text and never evaluates them
    assert {row["name"] for row in rows} == {f"'{name}"}
    # And a plain value is written as it is
    assert {row["tags"] for row in rows} == {"Owner=alice;Team=payments"}


def test_each_row_carries_the_instances_connect_path_and_command():
    # Given a compliant instance on the endpoint path and a noncompliant one on the public path
    base = report()
    command = "aws ec2-instance-connect ssh --instance-id i-01 --region us-east-1 --connection-type eice"
    compliant = base.instances[0].model_copy(
        update={"verdict": "compliant", "connect_path": "endpoint", "connect_command": command}
    )
    failing = base.instances[0].model_copy(update={"instance_id": "i-03", "connect_path": "public"})
    changed = base.model_copy(update={"instances": [compliant, failing]})

    # When the report is written as CSV
    rows = rows_of(changed)

    # Then every row of an instance names its path, and only the compliant one has a command
    assert {(r["instance_id"], r["connect_path"], r["connect_command"]) for r in rows} == {
        (compliant.instance_id, "endpoint", command),
        ("i-03", "public", ""),
    }
