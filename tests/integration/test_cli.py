"""The eic-guard command line (DESIGN §5): report JSON, exit codes, output formats and input errors, against moto."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import eic_guard
import pytest
from eic_guard.checks import CHECK_IDS
from eic_guard.cli import main
from eic_guard.simulated import ssh_from

from tests.aws_views import metadata_endpoint
from tests.conftest import EIC_US_EAST_1, IP_RANGES, REGION

SNAPSHOT = str(IP_RANGES / "ip-ranges-2026-08-22.json")

# DESIGN §5, key for key.
REPORT_KEYS = {
    "schema",
    "run_id",
    "mode",
    "account_id",
    "regions",
    "started_at",
    "finished_at",
    "ip_ranges",
    "summary",
    "instances",
}
# Additions of DESIGN §5b, and extensions of v1 documented on purpose in README "The report".
REPORT_ADDITIONS = {"tool_version", "accounts", "targets"}
REPORT_EXTENSIONS = {"target_actions", "target_errors"}
INSTANCE_ADDITIONS = {"account_id"}
INSTANCE_EXTENSIONS = {"excluded_reason"}
SUMMARY_KEYS = {"instances", "compliant", "fixed", "noncompliant", "excluded", "errors"}
INSTANCE_KEYS = {"instance_id", "region", "vpc_id", "verdict", "checks", "actions"}
VERDICTS = {"compliant", "fixed", "noncompliant", "excluded", "error"}
CHECK_STATUSES = {"pass", "fail", "fixed", "would-fix", "error", "not-applicable"}
ACTION_KEYS = {"action", "resource", "status", "detail"}


def scan_args(*extra: str) -> list[str]:
    return ["scan", "--region", REGION, "--ip-ranges", SNAPSHOT, *extra]


def run_json(capsys, *extra: str) -> tuple[int, dict]:
    code = main(scan_args("--format", "json", *extra))
    out = capsys.readouterr().out
    return code, json.loads(out)


def compliant_instance(account) -> tuple[str, str]:
    """Public IP, a group allowing the EIC range, AL2023, IMDS on, IGW route, the default NACL."""
    net = account.network()
    eic_ssh = account.security_group(net, "eic-ssh", [ssh_from(EIC_US_EAST_1)])
    [instance] = account.launch(
        image_id=account.al2023_ami(),
        subnet_id=net.public_subnet_id,
        group_ids=[eic_ssh],
        public_ip=True,
        imds="enabled",
    )
    return net.vpc_id, instance


def fixable_instance(account, net=None) -> str:
    """Everything right except SSH from EIC and the metadata endpoint: both fixable."""
    net = net or account.network("10.9.0.0/16", name="fixable")
    [instance] = account.launch(
        image_id=account.al2023_ami(),
        subnet_id=net.public_subnet_id,
        group_ids=[net.app_group_id],
        public_ip=True,
        imds="disabled",
    )
    return instance


def assert_usage_error(code: int, capsys, api_calls, fragment: str) -> None:
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("eic-guard: error:")
    assert fragment in lines[0]
    assert api_calls.writes() == []


# ---- the report ------------------------------------------------------------------------------------------------
def test_json_report_matches_the_contract_and_exits_1_when_noncompliant(account, api_calls, capsys):
    # Given one compliant instance and one fixable one
    vpc_id, compliant = compliant_instance(account)
    fixable = fixable_instance(account)
    api_calls.clear()

    # When scanning in (default) report mode with JSON output
    code, report = run_json(capsys)

    # Then the exit code says something is noncompliant, and nothing was written
    assert code == 1
    assert api_calls.writes() == []
    # And the document has the contract's keys, exactly
    assert set(report) == REPORT_KEYS | REPORT_ADDITIONS | REPORT_EXTENSIONS
    assert report["schema"] == "eic-guard/report/v1"
    assert report["mode"] == "report"
    assert report["regions"] == [REGION]
    assert report["account_id"] == "123456789012"
    assert isinstance(report["run_id"], str) and report["run_id"]
    assert datetime.fromisoformat(report["started_at"]) <= datetime.fromisoformat(report["finished_at"])
    assert report["ip_ranges"] == {"sync_token": "1787411825", "create_date": "2026-08-22-15-17-05"}
    assert report["summary"] == {
        "instances": 2,
        "compliant": 1,
        "fixed": 0,
        "noncompliant": 1,
        "excluded": 0,
        "errors": 0,
    }
    assert set(report["summary"]) == SUMMARY_KEYS
    # And the DESIGN §5b additions: the tool's version, the accounts and the (account, region) targets covered
    assert report["tool_version"] == eic_guard.__version__
    assert report["accounts"] == ["123456789012"]
    assert report["targets"] == [
        {"account_id": "123456789012", "region": REGION, "status": "ok", "error": None, "instances": 2}
    ]
    for instance in report["instances"]:
        assert set(instance) == INSTANCE_KEYS | INSTANCE_ADDITIONS | INSTANCE_EXTENSIONS
        assert instance["verdict"] in VERDICTS
        assert instance["region"] == REGION
        assert instance["account_id"] == "123456789012"
        assert list(instance["checks"]) == list(CHECK_IDS)
        for check in instance["checks"].values():
            assert set(check) == {"status", "reason"}
            assert check["status"] in CHECK_STATUSES
        for action in instance["actions"]:
            assert set(action) == ACTION_KEYS
            assert action["status"] in {"done", "planned", "failed"}
    by_id = {i["instance_id"]: i for i in report["instances"]}
    assert by_id[compliant]["verdict"] == "compliant"
    assert by_id[compliant]["vpc_id"] == vpc_id
    assert {c["status"] for c in by_id[compliant]["checks"].values()} == {"pass"}
    assert by_id[fixable]["verdict"] == "noncompliant"
    assert by_id[fixable]["checks"]["eic-ssh-ingress"]["status"] == "would-fix"
    assert by_id[fixable]["checks"]["imds-enabled"]["status"] == "would-fix"
    assert {a["status"] for a in by_id[fixable]["actions"]} == {"planned"}


def test_exit_0_when_every_instance_is_compliant(account, api_calls, capsys):
    # Given only a fully compliant instance
    _, instance = compliant_instance(account)
    api_calls.clear()

    # When scanning
    code, report = run_json(capsys)

    # Then it exits 0 and reports it compliant, writing nothing
    assert code == 0
    assert [(i["instance_id"], i["verdict"]) for i in report["instances"]] == [(instance, "compliant")]
    assert api_calls.writes() == []


def test_remediate_then_second_run_exits_0(account, ec2, api_calls, capsys):
    # Given a compliant instance and a fixable one
    _, compliant = compliant_instance(account)
    fixable = fixable_instance(account)
    api_calls.clear()

    # When scanning with --remediate
    code, report = run_json(capsys, "--remediate")

    # Then everything fixable was fixed and it exits 0
    assert code == 0
    assert report["mode"] == "remediate"
    assert report["summary"]["fixed"] == 1 and report["summary"]["compliant"] == 1
    assert {"CreateSecurityGroup", "ModifyNetworkInterfaceAttribute", "ModifyInstanceMetadataOptions"} <= set(
        api_calls.writes()
    )
    assert metadata_endpoint(ec2, fixable) == "enabled"

    # And a second run (report mode) exits 0 with both compliant and no write
    api_calls.clear()
    code, report = run_json(capsys)
    assert code == 0
    assert api_calls.writes() == []
    assert {i["instance_id"]: i["verdict"] for i in report["instances"]} == {
        compliant: "compliant",
        fixable: "compliant",
    }


def test_remediate_exits_1_when_something_cannot_be_fixed(account, api_calls, capsys):
    # Given an instance running an AMI that is not Amazon Linux 2023 (nothing can fix that in place)
    net = account.network()
    image = account.own_image("ubuntu-24.04-custom")
    [instance] = account.launch(
        image_id=image, subnet_id=net.public_subnet_id, group_ids=[net.app_group_id], public_ip=True
    )
    api_calls.clear()

    # When scanning with --remediate
    code, report = run_json(capsys, "--remediate")

    # Then the SSH rule is fixed but the AMI still fails, so it exits 1
    assert code == 1
    [entry] = report["instances"]
    assert entry["instance_id"] == instance
    assert entry["checks"]["eic-ssh-ingress"]["status"] == "fixed"
    assert entry["checks"]["al2023-ami"]["status"] == "fail"
    assert entry["verdict"] == "noncompliant"

    # And a second run writes nothing and still exits 1
    api_calls.clear()
    code, report = run_json(capsys, "--remediate")
    assert code == 1
    assert api_calls.writes() == []
    assert report["instances"][0]["checks"]["eic-ssh-ingress"]["status"] == "pass"


# ---- output ----------------------------------------------------------------------------------------------------
def test_output_file_receives_the_json_report(account, capsys, tmp_path):
    # Given a fixable instance
    instance = fixable_instance(account)
    target = tmp_path / "report.json"

    # When the report is written to a file
    code = main(scan_args("--format", "json", "--output", str(target)))

    # Then the file holds the report and standard output stays empty
    assert code == 1
    assert capsys.readouterr().out == ""
    report = json.loads(target.read_text())
    assert report["schema"] == "eic-guard/report/v1"
    assert [i["instance_id"] for i in report["instances"]] == [instance]


def test_table_format_shows_instances_and_checks(account, capsys):
    # Given a fixable instance
    instance = fixable_instance(account)

    # When the report is printed as a table
    code = main(scan_args("--format", "table"))

    # Then the table names the instance and every check, and the output is not JSON
    out = capsys.readouterr().out
    assert code == 1
    assert instance in out
    for check_id in CHECK_IDS:
        assert check_id in out
    assert "would-fix" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


def test_table_output_file_has_no_terminal_colour_codes(account, capsys, tmp_path):
    # Given a fixable instance
    instance = fixable_instance(account)
    target = tmp_path / "report.txt"

    # When the table is written to a file
    code = main(scan_args("--format", "table", "--output", str(target)))

    # Then the file holds a plain table
    text = target.read_text()
    assert code == 1
    assert instance in text
    assert "\x1b[" not in text
    assert capsys.readouterr().out == ""


# ---- usage / configuration / input errors -----------------------------------------------------------------------
def test_unknown_region_is_a_usage_error(account, api_calls, capsys):
    # Given a fixable instance
    fixable_instance(account)
    api_calls.clear()

    # When scanning a region that does not exist
    code = main(["scan", "--region", "mars-east-1", "--ip-ranges", SNAPSHOT, "--remediate"])

    # Then it exits 2 with one line on stderr and makes no call
    assert_usage_error(code, capsys, api_calls, "mars-east-1")
    assert api_calls.calls == []


def test_unreadable_ip_ranges_path_is_an_input_error(account, api_calls, capsys, tmp_path):
    # Given a fixable instance and a path that does not exist
    fixable_instance(account)
    missing = tmp_path / "nowhere" / "ip-ranges.json"
    api_calls.clear()

    # When scanning with it
    code = main(["scan", "--region", REGION, "--ip-ranges", str(missing), "--remediate"])

    # Then it exits 2 naming the file, and makes no call
    assert_usage_error(code, capsys, api_calls, str(missing))
    assert api_calls.calls == []


def test_truncated_ip_ranges_file_is_an_input_error(account, api_calls, capsys, tmp_path):
    # Given a fixable instance and a copy of the real snapshot cut in the middle
    fixable_instance(account)
    truncated = tmp_path / "ip-ranges.json"
    truncated.write_bytes(Path(SNAPSHOT).read_bytes()[:4096])
    api_calls.clear()

    # When scanning with it
    code = main(["scan", "--region", REGION, "--ip-ranges", str(truncated), "--remediate"])

    # Then it exits 2 saying the file is not valid JSON, and makes no call
    assert_usage_error(code, capsys, api_calls, "not valid JSON")
    assert api_calls.calls == []


def test_missing_credentials_are_a_configuration_error(account, ec2, api_calls, capsys, monkeypatch, tmp_path):
    # Given a fixable instance, then no credentials anywhere (env, files) and no instance-metadata probing
    instance = fixable_instance(account)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        empty = tmp_path / name.lower()
        empty.write_text("")
        monkeypatch.setenv(name, str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    api_calls.clear()

    # When scanning with --remediate
    code = main(scan_args("--remediate"))

    # Then it exits 2 saying so, and nothing was written
    assert_usage_error(code, capsys, api_calls, "no AWS credentials")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert metadata_endpoint(ec2, instance) == "disabled"


def test_bad_setting_is_a_configuration_error(account, api_calls, capsys, monkeypatch):
    # Given a fixable instance and a negative grace period
    fixable_instance(account)
    monkeypatch.setenv("EIC_GUARD_STALE_PREFIX_GRACE_HOURS", "-1")
    api_calls.clear()

    # When scanning with --remediate
    code = main(scan_args("--remediate"))

    # Then it exits 2 naming the setting, and makes no call
    assert_usage_error(code, capsys, api_calls, "EIC_GUARD_STALE_PREFIX_GRACE_HOURS")
    assert api_calls.calls == []


def test_installed_console_script_runs(tmp_path):
    # Given the console script installed into the virtualenv (skipped where the project is not pip-installed)
    script = shutil.which("eic-guard") or shutil.which("eic-guard", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("eic-guard console script is not installed in this environment")

    # When asking it for help
    result = subprocess.run([script, "scan", "--help"], capture_output=True, text=True, timeout=60, check=False)

    # Then it runs eic_guard.cli and lists the scan options
    assert result.returncode == 0, result.stderr
    for option in ("--region", "--remediate", "--ip-ranges", "--format", "--output"):
        assert option in result.stdout
