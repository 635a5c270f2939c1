"""`eic-guard scan --format json` (cli/output.py): the report's JSON encoded by pydantic-core from the model, the bytes
`json.dumps(report.to_dict(), indent=2)` always gave, non-ASCII escaped; to a file and on standard output."""

from __future__ import annotations

import json

from eic_guard.cli.output import emit

from tests.unit.test_table import fleet_report, instance


def _report():
    return fleet_report(
        instance(1, name="café-名前", tags={"Owner": "zoë", "Team": 'line\u2028separator "quoted" \\ tab\t'}),
        instance(2, "noncompliant", name="plain"),
    )


def test_the_json_file_is_the_classic_encoding_byte_for_byte(tmp_path):
    # Given a report with non-ASCII names, quotes, backslashes and control characters
    report = _report()

    # When the CLI writes it to a file
    path = tmp_path / "report.json"
    assert emit(report, "json", str(path)) is None

    # Then the file is what json.dumps(indent=2) gave, and reads back as the report's document
    expected = json.dumps(report.to_dict(), indent=2) + "\n"
    assert path.read_bytes() == expected.encode("ascii")
    assert json.loads(path.read_text(encoding="utf-8")) == report.to_dict()


def test_an_interrupted_report_keeps_its_flag(tmp_path):
    report = _report().model_copy(update={"interrupted": True})
    path = tmp_path / "report.json"
    emit(report, "json", str(path))
    assert json.loads(path.read_bytes())["interrupted"] is True
    assert "interrupted" not in json.loads(_report().to_json_bytes(ensure_ascii=True))


def test_the_json_on_standard_output_is_the_same_text(capsys):
    report = _report()
    emit(report, "json", None)
    assert capsys.readouterr().out == json.dumps(report.to_dict(), indent=2) + "\n"
