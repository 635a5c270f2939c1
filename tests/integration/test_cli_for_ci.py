"""The scan as CI pipelines lean on it (issue 17): outputs that are never half-written, destinations refused before
any AWS call, the exit policy (--fail-on, exit 3 on an empty scan), SARIF and JUnit, and Ctrl-C at an instance
boundary. Against moto, through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import jsonschema
import pytest
from eic_guard.cli import exit_codes, main, progress
from eic_guard.simulated import ssh_from

from tests.aws_views import eni_groups, metadata_endpoint
from tests.conftest import EIC_US_EAST_1, FIXTURES, IP_RANGES, REGION, ROOT
from tests.faults.injector import FaultInjector

SNAPSHOT = str(IP_RANGES / "ip-ranges-2026-08-22.json")
SARIF_SCHEMA = json.loads((FIXTURES / "sarif" / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))


def scan(*extra: str) -> list[str]:
    return ["scan", "--region", REGION, "--ip-ranges", SNAPSHOT, *extra]


def compliant(account, net=None, tags: dict[str, str] | None = None) -> str:
    """Compliant; opted in with the default tag, or carrying only `tags` when given."""
    net = net or account.network()
    group = account.security_group(net, "eic-ssh", [ssh_from(EIC_US_EAST_1)])
    [instance] = account.launch(
        image_id=account.al2023_ami(),
        subnet_id=net.public_subnet_id,
        group_ids=[group],
        public_ip=True,
        tags=tags,
        opted_in=tags is None,
    )
    return instance


def world_open(account) -> str:
    """Compliant, through TCP 22 from 0.0.0.0/0: a pass with a warning (the demo's web-open-world)."""
    net = account.network("10.7.0.0/16", "open")
    group = account.security_group(net, "open-ssh", [ssh_from("0.0.0.0/0")])
    [instance] = account.launch(
        image_id=account.al2023_ami(), subnet_id=net.public_subnet_id, group_ids=[group], public_ip=True
    )
    return instance


def drifted(account, count: int = 1) -> list[str]:
    net = account.network("10.9.0.0/16", "fixable")
    return [account.launch_drifted(net) for _ in range(count)]


def one_error_line(code: int, capsys, *fragments: str) -> str:
    captured = capsys.readouterr()
    assert code == exit_codes.USAGE, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eic-guard: error: "), captured.err
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


# ---- destinations are checked before any AWS call ------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--output", "--html"])
def test_a_directory_as_destination_is_refused_before_any_call(account, ec2, api_calls, tmp_path, capsys, flag):
    # Given a fixable instance, and a directory given where a file is expected
    [instance] = drifted(account)
    api_calls.clear()

    # When remediating with the report going to that directory
    code = main(scan("--remediate", flag, str(tmp_path)))

    # Then it is one line (exit 2) before any AWS call: nothing was scanned and nothing fixed
    one_error_line(code, capsys, f"{flag} {tmp_path}: is a directory", str(tmp_path / "report.json"))
    assert api_calls.calls == []
    assert metadata_endpoint(ec2, instance) == "disabled"


@pytest.mark.parametrize(
    ("destination", "fragment"),
    [
        ("missing/report.json", "does not exist"),
        ("same", "--output and --html name the same file"),
        ("full", "the disk is full"),
    ],
)
def test_an_unusable_destination_is_refused_before_any_call(
    account, api_calls, monkeypatch, tmp_path, capsys, destination, fragment
):
    # Given a destination that cannot take the report (a missing folder, the same file twice, a full disk)
    drifted(account)
    argv = scan("--output", str(tmp_path / destination))
    if destination == "same":
        argv += ["--html", str(tmp_path / destination)]
    if destination == "full":
        monkeypatch.setattr("shutil.disk_usage", lambda _: type("Usage", (), {"free": 4096})())
    api_calls.clear()

    # When scanning
    code = main(argv)

    # Then it is one line before any call, and no file was made
    one_error_line(code, capsys, fragment)
    assert api_calls.calls == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_folder_is_refused_before_any_call(account, api_calls, tmp_path, capsys):
    # Given a folder nobody may write into
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    api_calls.clear()

    # When scanning into it
    code = main(scan("--output", str(folder / "report.json")))

    # Then it is one line before any call
    one_error_line(code, capsys, "is not writable")
    assert api_calls.calls == []


# ---- files are replaced whole, or the report lands in a fallback ---------------------------------------------------
def test_a_report_that_cannot_be_written_after_the_fixes_lands_in_the_fallback_file(
    account, ec2, monkeypatch, tmp_path, capsys
):
    # Given a fixable instance, and a disk that fills up while the scan runs: writing the report there fails
    [instance] = drifted(account)
    target = tmp_path / "report.json"
    from eic_guard import local_files

    real_replace = local_files.replace_file

    def disk_full_for_the_target(path, body, **kwargs):
        if Path(path) == target:
            raise OSError(28, "No space left on device")
        return real_replace(path, body, **kwargs)

    monkeypatch.setattr(local_files, "replace_file", disk_full_for_the_target)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "fallback"))
    (tmp_path / "fallback").mkdir()

    # When remediating with --output there
    code = main(scan("--remediate", "--format", "json", "--output", str(target)))

    # Then the fixes were made, exit 4 says the report is elsewhere, and stderr names where
    captured = capsys.readouterr()
    assert code == exit_codes.OUTPUT_FAILED
    assert metadata_endpoint(ec2, instance) == "enabled"
    [line] = [line for line in captured.err.splitlines() if line.startswith("eic-guard: error:")]
    [fallback] = (tmp_path / "fallback").iterdir()
    assert line == f"eic-guard: error: cannot write {target} (No space left on device): written to {fallback} instead"
    report = json.loads(fallback.read_text(encoding="utf-8"))
    assert [(e["instance_id"], e["verdict"]) for e in report["instances"]] == [(instance, "fixed")]
    assert fallback.name == f"eic-guard-{report['run_id']}.json"
    assert not target.exists()

    # And the next run (the disk has room again) finds nothing left to change
    monkeypatch.setattr(local_files, "replace_file", real_replace)
    code = main(scan("--remediate", "--format", "json", "--output", str(target)))
    assert code == exit_codes.OK, capsys.readouterr().err
    assert [e["verdict"] for e in json.loads(target.read_text())["instances"]] == ["compliant"]


def test_an_interrupted_write_leaves_the_previous_report_whole(account, monkeypatch, tmp_path, capsys):
    # Given last night's report at the path, and a write that is interrupted (Ctrl-C twice) half-way
    compliant(account)
    target = tmp_path / "report.json"
    target.write_text('{"previous": "report"}\n')

    def interrupted(_descriptor):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)

    # When scanning into it
    code = main(scan("--format", "json", "--output", str(target)))

    # Then the previous report is untouched, no temporary file is left beside it, and the exit code is 130
    capsys.readouterr()
    assert code == exit_codes.INTERRUPTED
    assert target.read_text() == '{"previous": "report"}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_report_file_is_readable_like_any_file_the_user_creates(account, tmp_path, capsys):
    # Given a usual umask
    compliant(account)
    previous = os.umask(0o022)
    try:
        # When scanning into a file
        code = main(scan("--output", str(tmp_path / "report.txt"), "--html", str(tmp_path / "report.html")))
    finally:
        os.umask(previous)

    # Then both files are rw-r--r-- (the temporary file they were renamed from was private)
    assert code == exit_codes.OK, capsys.readouterr().err
    assert {(tmp_path / name).stat().st_mode & 0o777 for name in ("report.txt", "report.html")} == {0o644}


# ---- the exit policy -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fail_on", "expected"),
    [
        (None, exit_codes.OK),
        ("noncompliant", exit_codes.OK),
        ("warning", exit_codes.FINDINGS),
        ("error", exit_codes.OK),
        ("none", exit_codes.OK),
    ],
)
def test_fail_on_warning_fails_the_build_on_ssh_open_to_the_internet(account, capsys, fail_on, expected):
    # Given a compliant instance whose SSH is open to 0.0.0.0/0 (a pass with a warning)
    world_open(account)

    # When scanning with each --fail-on
    code = main(scan("--format", "json", *(["--fail-on", fail_on] if fail_on else [])))

    # Then only --fail-on warning makes it exit 1
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["warnings"] == 1 and report["summary"]["noncompliant"] == 0
    assert code == expected


@pytest.mark.parametrize(
    ("fail_on", "expected"),
    [("noncompliant", exit_codes.FINDINGS), ("warning", exit_codes.FINDINGS), ("error", 0), ("none", 0)],
)
def test_fail_on_decides_whether_a_noncompliant_instance_fails_the_build(account, capsys, fail_on, expected):
    # Given a fixable instance (noncompliant in report mode)
    drifted(account)

    # When scanning
    code = main(scan("--format", "json", "--fail-on", fail_on))

    # Then noncompliant and warning fail on it, error and none do not
    assert json.loads(capsys.readouterr().out)["summary"]["noncompliant"] == 1
    assert code == expected


def test_fail_on_error_fails_on_a_target_that_could_not_be_scanned(account, monkeypatch, capsys):
    # Given a compliant instance, and a second account the caller cannot enter (STS refuses its member role)
    compliant(account)
    FaultInjector().install(monkeypatch).error("AssumeRole", "AccessDenied", service="sts")

    # When scanning both with --fail-on error
    code = main(scan("--format", "json", "--fail-on", "error", "--account", "123456789012,111111111111"))

    # Then the target error makes it exit 1
    report = json.loads(capsys.readouterr().out)
    assert sorted(t["status"] for t in report["targets"]) == ["error", "ok"]
    assert code == exit_codes.FINDINGS


def test_a_scan_that_matches_no_opted_in_instance_exits_3_naming_the_tag(account, capsys):
    # Given instances, none carrying the opt-in tag, one of them a near miss (eic-guard:managed=True)
    net = account.network()
    [near_miss] = account.launch(
        image_id=account.al2023_ami(),
        subnet_id=net.public_subnet_id,
        group_ids=[net.app_group_id],
        tags={"eic-guard:managed": "True"},
        opted_in=False,
    )

    # When scanning
    code = main(scan())

    # Then exit 3, the near miss is a note of the table, and stderr says what matched nothing and how to accept it
    captured = capsys.readouterr()
    assert code == exit_codes.NOTHING_MATCHED
    assert f"0 instances opted in here, but {near_miss} is tagged eic-guard:managed=True" in captured.out
    [line] = [line for line in captured.err.splitlines() if line.startswith("eic-guard: error:")]
    assert "no instance carries the opt-in tag eic-guard:managed=true in 123456789012 us-east-1" in line
    assert line.endswith("or pass --allow-empty")

    # And --allow-empty makes an empty scan a success
    assert main(scan("--allow-empty")) == exit_codes.OK


def test_failing_checks_take_precedence_over_an_empty_scan(account, monkeypatch, capsys):
    # Given no opted-in instance in the caller's account, and another account that cannot be entered
    FaultInjector().install(monkeypatch).error("AssumeRole", "AccessDenied", service="sts")

    # When scanning both
    code = main(scan("--account", "123456789012,111111111111", "--format", "json"))

    # Then the target error (exit 1) is what CI hears, not "nothing matched"
    assert json.loads(capsys.readouterr().out)["summary"]["instances"] == 0
    assert code == exit_codes.FINDINGS


def test_the_tag_flag_chooses_the_opt_in_tag(account, capsys):
    # Given one instance opted in with the default tag, and one tagged team=platform
    default = compliant(account)
    platform = compliant(account, account.network("10.8.0.0/16", "platform"), tags={"team": "platform"})

    # When scanning with --tag team=platform, then without
    code = main(scan("--format", "json", "--tag", "team=platform"))
    chosen = [e["instance_id"] for e in json.loads(capsys.readouterr().out)["instances"]]
    main(scan("--format", "json"))
    by_default = [e["instance_id"] for e in json.loads(capsys.readouterr().out)["instances"]]

    # Then each scan covers the instances of its tag only
    assert code == exit_codes.OK
    assert (chosen, by_default) == ([platform], [default])


@pytest.mark.parametrize(("value", "fragment"), [("platform", "expected KEY=VALUE"), ("=x", "expected KEY=VALUE")])
def test_a_tag_flag_without_key_and_value_is_a_usage_error(capsys, value, fragment):
    # When --tag is not KEY=VALUE
    with pytest.raises(SystemExit) as exited:
        main(scan("--tag", value))

    # Then argparse says so (exit 2) before anything runs
    assert exited.value.code == exit_codes.USAGE
    assert fragment in capsys.readouterr().err


def test_a_tag_flag_the_template_would_refuse_is_refused(api_calls, capsys):
    # When the tag's value is longer than a tag value may be
    code = main(scan("--tag", "team=" + "x" * 257))

    # Then it is one line naming the setting it sets, before any call
    one_error_line(code, capsys, "EIC_GUARD_TAG_VALUE")
    assert api_calls.calls == []


# ---- formats CI systems read ---------------------------------------------------------------------------------------
def test_sarif_is_valid_against_the_oasis_schema_with_a_result_per_failing_check(account, tmp_path, capsys):
    # Given a compliant instance, one with SSH open to the internet, and one that fails two checks
    ok = compliant(account)
    opened = world_open(account)
    [failing] = drifted(account)

    # When scanning to a SARIF file
    code = main(scan("--format", "sarif", "--output", str(tmp_path / "eic-guard.sarif")))
    log = json.loads((tmp_path / "eic-guard.sarif").read_text(encoding="utf-8"))

    # Then the schema accepts it
    assert code == exit_codes.FINDINGS, capsys.readouterr().err
    jsonschema.validate(log, SARIF_SCHEMA)
    [run] = log["runs"]
    # And it has one rule per check, with its help link, and one result per failing (instance, check) or warning
    assert [rule["id"] for rule in run["tool"]["driver"]["rules"]] == [
        "public-ipv4",
        "eic-ssh-ingress",
        "endpoint-present",
        "endpoint-ssh-ingress",
        "endpoint-ssh-egress",
        "al2023-ami",
        "imds-enabled",
        "internet-route",
        "network-acl",
    ]
    assert all(rule["helpUri"].startswith("https://docs.aws.amazon.com/") for rule in run["tool"]["driver"]["rules"])
    found = sorted((r["locations"][0]["logicalLocations"][0]["name"], r["ruleId"], r["level"]) for r in run["results"])
    assert found == sorted(
        [
            (failing, "eic-ssh-ingress", "error"),
            (failing, "imds-enabled", "error"),
            (opened, "eic-ssh-ingress", "warning"),
        ]
    )
    assert ok not in {r["properties"]["instanceId"] for r in run["results"]}
    arn = f"arn:aws:ec2:{REGION}:123456789012:instance/{failing}"
    assert arn in {r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] for r in run["results"]}


def test_junit_has_a_test_case_per_instance_check(account, capsys):
    # Given a compliant instance and one that fails two checks
    ok = compliant(account)
    [failing] = drifted(account)

    # When scanning with --format junit
    code = main(scan("--format", "junit"))
    root = ElementTree.fromstring(capsys.readouterr().out)

    # Then there is one suite for the target, six cases per instance, the two fixable checks failing
    assert code == exit_codes.FINDINGS
    [suite] = root.findall("testsuite")
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("12", "2", "0")
    cases = {(c.get("classname").rsplit(".", 1)[1], c.get("name")): c for c in suite.findall("testcase")}
    assert len(cases) == 12
    failed = sorted(key for key, case in cases.items() if case.find("failure") is not None)
    assert failed == [(failing, "eic-ssh-ingress"), (failing, "imds-enabled")]
    assert all(case.find("failure") is None for (instance, _), case in cases.items() if instance == ok)


# ---- Ctrl-C stops at an instance boundary ---------------------------------------------------------------------------
def test_ctrl_c_stops_at_the_next_instance_and_reports_what_was_done(account, ec2, monkeypatch, tmp_path, capsys):
    # Given three fixable instances, and Ctrl-C pressed while the first one is being finished
    instances = drifted(account, count=3)
    real_checked = progress.RunProgress.checked

    def checked(self):
        if self.checked_instances == 0:
            os.kill(os.getpid(), signal.SIGINT)
        real_checked(self)

    monkeypatch.setattr(progress.RunProgress, "checked", checked)
    target = tmp_path / "report.json"

    # When remediating
    code = main(scan("--remediate", "--format", "json", "--output", str(target)))

    # Then it exits 130 without a traceback, saying what was done, on stderr and (the report went to a file) stdout
    captured = capsys.readouterr()
    assert code == exit_codes.INTERRUPTED
    assert "Traceback" not in captured.err
    assert "SIGINT: stopping at the next instance" in captured.err
    summary = (
        "eic-guard: SIGINT: interrupted: 0 of 1 targets complete; instances 3: 0 compliant, 1 fixed, 2 noncompliant"
    )
    assert captured.out.startswith(summary)
    # And the report is marked interrupted: the first instance fixed, the two others held with the reason
    report = json.loads(target.read_text(encoding="utf-8"))
    assert report["interrupted"] is True
    verdicts = {e["instance_id"]: e["verdict"] for e in report["instances"]}
    assert sorted(verdicts.values()) == ["fixed", "noncompliant", "noncompliant"]
    held = [e for e in report["instances"] if e["verdict"] == "noncompliant"]
    for entry in held:
        assert entry["checks"]["imds-enabled"]["reason"].endswith("; not fixed: the run was interrupted")
        assert metadata_endpoint(ec2, entry["instance_id"]) == "disabled"
    assert [t["status"] for t in report["targets"]] == ["incomplete"]

    # When the scan runs again, uninterrupted, it fixes the rest; and a third run changes nothing
    monkeypatch.setattr(progress.RunProgress, "checked", real_checked)
    assert main(scan("--remediate", "--format", "json")) == exit_codes.OK
    assert sorted(e["verdict"] for e in json.loads(capsys.readouterr().out)["instances"]) == [
        "compliant",
        "fixed",
        "fixed",
    ]
    before = {i: eni_groups(ec2, i) for i in instances}
    assert main(scan("--remediate", "--format", "json")) == exit_codes.OK
    assert {e["verdict"] for e in json.loads(capsys.readouterr().out)["instances"]} == {"compliant"}
    assert {i: eni_groups(ec2, i) for i in instances} == before


def test_a_second_ctrl_c_exits_at_once():
    # Given a process that was already asked to stop
    code = (
        "from eic_guard.cli.interrupts import Interrupts\n"
        "interrupts = Interrupts()\n"
        "interrupts.request('SIGINT')\n"
        "interrupts.request('SIGINT')\n"
        "print('not reached')\n"
    )

    # When a second signal arrives
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT / "layers" / "eic_guard")},
    )

    # Then the process ends at once with 130, saying so
    assert result.returncode == exit_codes.INTERRUPTED
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == "eic-guard: SIGINT again: exiting now"


def test_a_second_ctrl_c_during_a_write_leaves_the_previous_report_and_no_temporary_file(tmp_path):
    # Given a report file from an earlier run, and a process asked to stop while it replaces that file
    report = tmp_path / "report.json"
    report.write_text('{"previous": true}')
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from eic_guard.cli.interrupts import Interrupts\n"
        "from eic_guard.local_files import replace_file\n"
        "interrupts = Interrupts()\n"
        "interrupts.request('SIGINT')\n"
        "real_fsync = os.fsync\n"
        "def fsync(fd):\n"
        "    interrupts.request('SIGINT')  # the second Ctrl-C arrives mid-write\n"
        "os.fsync = fsync\n"
        f"replace_file(Path({str(report)!r}), b'{{\"new\": true}}', create_folders=False)\n"
        "print('not reached')\n"
    )

    # When the second signal arrives during the write
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT / "layers" / "eic_guard")},
    )

    # Then the process exits at once, the previous report is whole and the write's temporary file is gone
    assert result.returncode == exit_codes.INTERRUPTED, result.stderr
    assert result.stdout == ""
    assert report.read_text() == '{"previous": true}'
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report.json"]


def test_interrupted_before_any_target_nothing_is_changed(account, ec2, monkeypatch, capsys):
    # Given a fixable instance, and SIGTERM arriving while the ip-ranges file is read (before any AWS call)
    [instance] = drifted(account)
    from eic_guard.ranges import ip_ranges

    real_load = ip_ranges.load

    def load(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(ip_ranges, "load", load)

    # When remediating
    code = main(scan("--remediate"))

    # Then it exits 130 without a traceback and the instance was not touched
    captured = capsys.readouterr()
    assert code == exit_codes.INTERRUPTED
    assert "Traceback" not in captured.err
    assert (
        captured.err.strip()
        .splitlines()[-1]
        .startswith("eic-guard: SIGTERM: stopped before it finished (before any AWS call")
    )
    assert metadata_endpoint(ec2, instance) == "disabled"
