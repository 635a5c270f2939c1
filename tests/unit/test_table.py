"""The terminal table (outputs/table.py): who each instance is, what to do, warnings in amber, and every line within
the width."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime

import pytest
from eic_guard.checks import check_ids_for
from eic_guard.outputs import table
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
from eic_guard.outputs.table import MeasuredByWidestCells, render
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from tests.report_entries import every_check

ACCOUNT = "123456789012"
MEMBER = "210987654321"
REGION = "us-east-1"
STARTED = datetime(2026, 8, 23, 3, 0, 5, tzinfo=UTC)
WORLD_OPEN = "ssh-open-to-internet: sg-0open allows TCP 22 from 0.0.0.0/0"
NACL_REASON = "acl-0123456789abcdef0 inbound: rule 50 denies 18.206.107.24/29 port 22"
NACL_GUIDANCE = (
    "Allow TCP 22 in from 18.206.107.24/29 before rule 50 of acl-0123456789abcdef0: "
    "https://docs.aws.amazon.com/vpc/latest/userguide/nacl-rules.html"
)
# ANSI for bold xterm colour 214, what rich writes for AMBER ("orange1") in a 256-colour terminal
AMBER_ANSI = "\x1b[1;38;5;214m"


def instance(number: int, verdict: str = "compliant", **fields) -> InstanceEntry:
    values = {
        "instance_id": f"i-0a0000000000000{number}",
        "account_id": ACCOUNT,
        "region": REGION,
        "vpc_id": "vpc-1",
        "verdict": verdict,
        "checks": every_check(),
        "actions": [],
        **fields,
    }
    return InstanceEntry(**values)


def fleet_report(*instances: InstanceEntry, **fields) -> Report:
    entries = list(instances) or [
        instance(1, name="web-open-world", tags={"Owner": "alice", "Team": "payments"}, warnings=[WORLD_OPEN]),
        instance(
            2,
            "noncompliant",
            name="billing-api",
            tags={"Owner": "bob"},
            checks=every_check(
                imds_enabled=CheckEntry(
                    status="would-fix",
                    reason="metadata endpoint is disabled",
                    guidance="Turn the metadata endpoint on: https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/"
                    "configuring-IMDS-existing-instances.html",
                ),
                network_acl=CheckEntry(status="fail", reason=NACL_REASON, guidance=NACL_GUIDANCE),
            ),
        ),
        instance(
            3,
            "fixed",
            name="batch-7",
            checks=every_check(eic_ssh_ingress=CheckEntry(status="fixed", reason="x")),
            actions=[
                ActionEntry(action="attach-security-group", resource="eni-0f2", status="done", detail="added sg-0eic")
            ],
        ),
        instance(4, "excluded", checks={}, excluded_reason="legacy bastion (until 2026-12-31)"),
    ]
    values = {
        "run_id": "run-table-1",
        "mode": "report",
        "account_id": ACCOUNT,
        "regions": [REGION],
        "started_at": STARTED,
        "finished_at": STARTED.replace(second=9),
        "ip_ranges": IpRangesEntry(sync_token="1787411825", create_date="2026-08-22-15-17-05"),
        "summary": Summary(instances=4, compliant=1, fixed=1, noncompliant=1, excluded=1, errors=0, warnings=1),
        "accounts": [ACCOUNT],
        "account_aliases": {ACCOUNT: "acme-prod"},
        "targets": [
            TargetEntry(
                account_id=ACCOUNT,
                region=REGION,
                status="ok",
                error=None,
                instances=len(entries),
                notes=["0 instances opted in here, but i-0b (web-2) is tagged eic-guard:managed=True"],
            )
        ],
        "instances": entries,
        **fields,
    }
    return Report(**values)


def rendered(report: Report, width: int, color: bool = False) -> str:
    stream = io.StringIO()
    render(report, stream, width=width, color=color)
    return stream.getvalue()


def instance_table(output: str) -> str:
    return output[: output.index("what is wrong")]


def details_rows(output: str) -> list[list[str]]:
    """The details table's lines, cells split on the box's vertical bars."""
    section = output[output.index("what is wrong") :]
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in section.splitlines() if line.startswith("│")]


@pytest.mark.parametrize("width", [80, 100, 120, 160])
def test_every_line_fits_the_width_and_nothing_important_is_cut(width):
    # Given a report with names, owner tags, a failure with guidance, a would-fix, a warning and a target note
    report = fleet_report()

    # When it is rendered at the width
    output = rendered(report, width)
    lines = output.splitlines()

    # Then no line is longer than the width
    assert max(len(line) for line in lines) <= width
    # And every instance id is there whole, in the instance table and in the details
    summary = instance_table(output)
    for entry in report.instances:
        assert entry.instance_id in summary
    # And the names, the failure, the warning mark, the warning row and the summary count are there
    for name in ("web-open-world", "billing-api", "batch-7"):
        assert name in output
    assert "FAIL" in summary and "pass!" in summary
    [warning] = [row for row in details_rows(output) if row[2] == "warning"]
    assert warning[0] == "i-0a00000000000001" and warning[3].startswith("ssh-open-to-internet:")
    words = " ".join(output.split())  # lines wrapped below 90 columns
    assert "0 errors, 1 with warnings" in words
    assert sum(row[3].startswith("what to do:") for row in details_rows(output)) == 2
    assert "note: acme-prod (123456789012) us-east-1: 0 instances opted in here" in words


def test_the_widest_layout_that_fits_is_taken():
    # Given the same report
    report = fleet_report()

    # When it is rendered at 160, 120 and 80 columns
    headers = {
        width: next(line for line in instance_table(rendered(report, width)).splitlines() if line.startswith("┃"))
        for width in (160, 120, 80)
    }

    # Then 160 names the checks in full, with a column for the name over the owner tags; 120 shortens the check
    # ids; 80 stacks who the instance is (id, verdict, name, owner tags) in one cell
    assert [c.strip() for c in headers[160].split("┃")[1:-1]] == [
        "instance",
        "name / owner",
        "verdict",
        *check_ids_for("public"),
    ]
    assert [c.strip() for c in headers[120].split("┃")[1:-1]] == [
        "instance",
        "name / owner",
        "verdict",
        "ipv4",
        "ssh",
        "ami",
        "imds",
        "route",
        "nacl",
    ]
    assert [c.strip() for c in headers[80].split("┃")[1:-1]] == [
        "instance",
        "ipv4",
        "ssh",
        "ami",
        "imds",
        "route",
        "nacl",
    ]
    stacked = [
        line.split("│")[1].strip() for line in instance_table(rendered(report, 80)).splitlines() if line.startswith("│")
    ]
    assert stacked[:4] == ["i-0a00000000000001", "compliant", "web-open-world", "Owner=alice Team=payments"]
    # And below 120 columns `would-fix` takes two lines
    assert re.search(r"│ would │.*\n.*│ fix   │", instance_table(rendered(report, 80)))


def test_region_and_account_columns_appear_only_when_the_run_has_several():
    # Given one report over one region and account, and one over two accounts and two regions
    single = fleet_report()
    several = fleet_report(
        instance(1, name="web-1"),
        instance(2, account_id=MEMBER, region="eu-west-1", name="web-2"),
        accounts=[ACCOUNT, MEMBER],
        account_aliases={ACCOUNT: "acme-prod"},
        regions=[REGION, "eu-west-1"],
    )

    # When both are rendered at 160 columns
    single_header = instance_table(rendered(single, 160)).splitlines()[2]
    several_output = rendered(several, 160)
    several_rows = {
        row[0]: row
        for row in (
            [c.strip() for c in line.split("│")[1:-1]]
            for line in instance_table(several_output).splitlines()
            if line.startswith("│ i-")
        )
    }

    # Then one region and one account need no column (the run line names them, with the alias)
    assert "region" not in single_header and "account" not in single_header
    assert "account acme-prod (123456789012)" in rendered(single, 160)
    # And several do: each instance's account label (alias when known) and region
    assert several_rows["i-0a00000000000001"][2:4] == ["acme-prod (123456789012)", REGION]
    assert several_rows["i-0a00000000000002"][2:4] == [MEMBER, "eu-west-1"]


def test_guidance_follows_the_reason_in_the_details():
    # Given an instance whose network ACL fails, with guidance
    report = fleet_report()

    # When rendered at 160 columns
    rows = details_rows(rendered(report, 160))

    # Then its details row says the reason, then what to do with the documentation URL, in the same cell
    start = next(i for i, row in enumerate(rows) if row[1:3] == ["network-acl", "FAIL"])
    assert rows[start][3] == NACL_REASON
    cell = " ".join(row[3] for row in rows[start + 1 : start + 4])
    assert cell.startswith("what to do: Allow TCP 22 in from 18.206.107.24/29 before rule 50")
    assert "https://docs.aws.amazon.com/vpc/latest/userguide/nacl-rules.html" in cell
    # And the instance's name is under its id
    assert rows[start + 1][0] == "billing-api"


def test_warnings_are_amber_in_a_colour_terminal(monkeypatch):
    # Given an instance that passes with a world-open SSH rule, and a target note, for a 256-colour terminal
    report = fleet_report()
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("COLORTERM", raising=False)

    # When rendered with colour
    output = rendered(report, 160, color=True)

    # Then its eic-ssh-ingress cell reads pass! in amber, and so do the warning row, the count and the note
    assert f"{AMBER_ANSI}pass!" in output
    assert f"{AMBER_ANSI}warning" in output
    assert re.search(r"\x1b\[38;5;214m" + re.escape(WORLD_OPEN), output)
    assert "\x1b[38;5;214m1 with warnings" in output
    assert f"{AMBER_ANSI}note: \x1b[0macme-prod (123456789012) us-east-1: 0 instances opted in here" in output
    # And a plain pass is green, not amber
    assert "\x1b[32mpass" in output


def test_text_from_aws_is_never_read_as_markup():
    # Given a name, a tag value and a reason carrying rich markup
    report = fleet_report(
        instance(
            1,
            "noncompliant",
            name="[bold red]evil[/]",
            tags={"Owner": "[/]"},
            checks=every_check(al2023_ami=CheckEntry(status="fail", reason="ami [link=x]custom[/link]")),
        )
    )

    # When rendered
    output = rendered(report, 160)

    # Then it is printed as it is
    assert "[bold red]evil[/]" in output and "Owner=[/]" in output and "ami [link=x]custom[/link]" in output


def test_target_errors_name_the_account_when_the_run_has_several():
    # Given a run over two accounts whose member region could not be scanned
    report = fleet_report(
        instance(1),
        accounts=[ACCOUNT, MEMBER],
        account_aliases={MEMBER: "analytics"},
        target_errors=[TargetError(region="eu-west-1", account_id=MEMBER, error="region not enabled")],
    )

    # When rendered
    output = rendered(report, 120)

    # Then the line names the account by its label
    assert f"analytics ({MEMBER}) region eu-west-1 could not be scanned: region not enabled" in output


def test_the_width_is_columns_then_the_terminal_then_160(monkeypatch):
    # Given a stream that is a 93-column terminal, and one that is a file
    class Terminal(io.StringIO):
        def isatty(self):
            return True

        def fileno(self):
            return 1

    monkeypatch.setattr(table.os, "get_terminal_size", lambda fd: __import__("os").terminal_size((93, 40)))
    monkeypatch.delenv("COLUMNS", raising=False)

    # When the width is chosen without $COLUMNS, then with COLUMNS=77
    without = (table.output_width(Terminal()), table.output_width(io.StringIO()))
    monkeypatch.setenv("COLUMNS", "77")
    with_columns = (table.output_width(Terminal()), table.output_width(io.StringIO()))

    # Then a terminal gives its width and a file 160; $COLUMNS wins over both
    assert without == (93, 160)
    assert with_columns == (77, 77)


def test_render_without_a_width_fits_columns(monkeypatch):
    # Given COLUMNS=90 (what a shell exports for its terminal)
    monkeypatch.setenv("COLUMNS", "90")
    stream = io.StringIO()

    # When the table is rendered without a width
    render(fleet_report(), stream, color=False)

    # Then no line is longer than 90 columns
    assert max(len(line) for line in stream.getvalue().splitlines()) <= 90


# ---- the connect path (docs/architecture.md §13) -------------------------------------------------------------------
PUBLIC_COMMAND = (
    "aws ec2-instance-connect ssh --instance-id i-0a00000000000001 --region us-east-1 --connection-type direct"
)
ENDPOINT_COMMAND = (
    "aws ec2-instance-connect ssh --instance-id i-0a00000000000003 --region us-east-1 --connection-type eice"
)


def pathed_report() -> Report:
    return fleet_report(
        instance(1, connect_path="public", connect_command=PUBLIC_COMMAND),
        instance(2, "noncompliant", connect_path="endpoint"),
        instance(3, "fixed", connect_path="endpoint", connect_command=ENDPOINT_COMMAND),
        summary=Summary(
            instances=3,
            compliant=1,
            fixed=1,
            noncompliant=1,
            excluded=0,
            errors=0,
            connect_paths={"public": 1, "endpoint": 2},
        ),
    )


def test_the_path_of_each_instance_its_connect_command_and_the_count_per_path_are_shown():
    # Given instances on both paths, two of them compliant or fixed
    # When the table is rendered wide
    output = rendered(pathed_report(), 160)

    # Then each instance row names its path, each connectable instance has its whole command in the details table,
    # and the summary counts the paths
    paths = {
        line.split("│")[1].strip(): line.split("│")[3].strip()
        for line in instance_table(output).splitlines()
        if "i-0a0" in line
    }
    assert paths == {"i-0a00000000000001": "public", "i-0a00000000000002": "endpoint", "i-0a00000000000003": "endpoint"}
    assert [line.split("│")[4].strip() for line in output.splitlines() if "│ connect │" in line] == [
        PUBLIC_COMMAND,
        ENDPOINT_COMMAND,
    ]
    assert "connect paths: 1 public, 2 endpoint" in output.splitlines()


def test_the_stacked_layout_names_the_path_in_the_instance_cell():
    # Given the same report at 80 columns (the stacked layout)
    output = rendered(pathed_report(), 80)

    # Then the path is a line of each instance's cell, and every line fits
    assert instance_table(output).count("path endpoint") == 2 and instance_table(output).count("path public") == 1
    assert output.count("│ connect │") == 2
    assert all(len(line) <= 80 for line in output.splitlines())


def test_a_report_without_paths_has_no_path_column():
    # Given a report written before the endpoint path (no connect_path anywhere)
    # When it is rendered
    output = rendered(fleet_report(), 160)

    # Then nothing about paths is shown
    assert " path " not in instance_table(output) and "connect paths" not in output


# ---- measuring on the widest cells (MeasuredByWidestCells) ---------------------------------------------------------
def _twin_tables(rows: list[tuple], **table_options) -> tuple[Table, MeasuredByWidestCells]:
    """The same columns and rows in rich's Table and in the table that measures on the widest cells."""
    tables = (Table(**table_options), MeasuredByWidestCells(**table_options))
    for each in tables:
        each.add_column("id", no_wrap=True)
        each.add_column("name", overflow="fold", max_width=12)
        each.add_column("reason", overflow="fold", ratio=1)
        for row in rows:
            each.add_row(*row)
    return tables


def _rendered(table: Table, width: int) -> str:
    stream = io.StringIO()
    Console(file=stream, width=width, force_terminal=True, highlight=False).print(table)
    return stream.getvalue()


def test_measuring_on_the_widest_cells_measures_and_renders_as_every_cell_does():
    # Given rows whose widest word and widest line are in different rows of each column, wide characters and markup
    # in plain strings included
    rows = [
        ("i-0a", Text("short"), Text("a reason of several words\nand a second line")),
        ("i-0123456789abcdef0", Text("a name much longer than twelve"), "x"),
        ("[bold]i-2[/bold]", Text("名前の長い名前", style="dim"), Text("averyveryverylongwordthatcannotwrap")),
        ("i-3", Text(""), Text("")),
        ("i-4", Text("two\nlines here"), Text("what to do: " + "words " * 30)),
    ]
    every_cell, widest_cells = _twin_tables(rows, title="t", show_lines=True, expand=True)
    console = Console(width=10_000)

    # Then the table's measurement and its rendering at every width are the ones rich gives measuring every cell
    assert Measurement.get(console, console.options, widest_cells) == Measurement.get(
        console, console.options, every_cell
    )
    for width in (20, 40, 60, 80, 120, 200):
        assert _rendered(widest_cells, width) == _rendered(every_cell, width)


def test_a_column_with_a_cell_that_is_not_text_is_measured_on_every_cell():
    # Given a column holding a nested table (rich measures it its own way)
    inner = Table()
    inner.add_column("x")
    inner.add_row("a fairly long cell inside")
    rows = [("i-1", Text("n"), inner), ("i-2", Text("m"), Text("short")), ("i-3", Text("o"), Text("tiny"))]
    every_cell, widest_cells = _twin_tables(rows)

    # Then it renders as rich's table does
    for width in (30, 60, 100):
        assert _rendered(widest_cells, width) == _rendered(every_cell, width)
