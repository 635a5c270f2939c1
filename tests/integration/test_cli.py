"""The eic-guard command line (docs/architecture.md §5): report JSON, exit codes, output formats and input errors,
against moto."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import boto3
import eic_guard
import pytest
from eic_guard.checks import check_ids_for
from eic_guard.cli import main
from eic_guard.outputs.csv_rows import COLUMNS
from eic_guard.simulated import SimulatedAccount, create_organization, member_session, ssh_from

from tests.aws_views import eni_groups, ingress_rules, metadata_endpoint
from tests.conftest import EIC_US_EAST_1, EIC_US_EAST_1_V6, IP_RANGES, REGION
from tests.faults.injector import FaultInjector

SNAPSHOT = str(IP_RANGES / "ip-ranges-2026-08-22.json")

# docs/architecture.md §5, key for key.
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
# Additions of docs/architecture.md §5b, and extensions of v1 documented on purpose in README "The report".
REPORT_ADDITIONS = {"tool_version", "accounts", "account_aliases", "targets"}
REPORT_EXTENSIONS = {"target_actions", "target_errors"}
INSTANCE_ADDITIONS = {"account_id", "name", "tags", "warnings"}
INSTANCE_EXTENSIONS = {"excluded_reason", "connect_path", "connect_command", "error"}  # docs/architecture.md §13
SUMMARY_KEYS = {"instances", "compliant", "fixed", "noncompliant", "excluded", "errors", "warnings", "connect_paths"}
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
    instance = account.launch_drifted(net)
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
        "warnings": 0,
        "connect_paths": {"public": 2},
    }
    assert set(report["summary"]) == SUMMARY_KEYS
    # And the docs/architecture.md §5b additions: the tool's version, the accounts and the (account, region) targets
    # covered
    assert report["tool_version"] == eic_guard.__version__
    assert report["accounts"] == ["123456789012"]
    assert report["targets"] == [
        {"account_id": "123456789012", "region": REGION, "status": "ok", "error": None, "instances": 2, "notes": []}
    ]
    for instance in report["instances"]:
        assert set(instance) == INSTANCE_KEYS | INSTANCE_ADDITIONS | INSTANCE_EXTENSIONS
        assert instance["verdict"] in VERDICTS
        assert instance["region"] == REGION
        assert instance["account_id"] == "123456789012"
        assert list(instance["checks"]) == list(check_ids_for("public"))
        for check in instance["checks"].values():
            assert set(check) == {"status", "reason", "guidance"}
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
    for check_id in check_ids_for("public"):
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


def test_table_marks_ssh_open_to_the_world_as_a_passing_check_with_a_warning(account, capsys):
    # Given a compliant instance named web-open-world whose group allows TCP 22 from 0.0.0.0/0
    net = account.network()
    world = account.security_group(net, "ssh-world", [ssh_from("0.0.0.0/0")])
    [instance] = account.launch(
        image_id=account.al2023_ami(),
        subnet_id=net.public_subnet_id,
        group_ids=[world],
        public_ip=True,
        name="web-open-world",
    )

    # When the report is printed as a table
    code = main(scan_args("--format", "table"))
    out = capsys.readouterr().out

    # Then the instance is compliant, named, its eic-ssh-ingress reads pass!, and a warning row names the group
    assert code == 0
    [row] = [line for line in out.splitlines() if line.startswith(f"│ {instance} │ web-open-world")]
    assert [cell.strip() for cell in row.split("│")[3:6]] == ["compliant", "public", "pass"]
    assert [cell.strip() for cell in row.split("│")][6] == "pass!"
    [warning] = [line for line in out.splitlines() if "│ warning " in line]
    assert [cell.strip() for cell in warning.split("│")][1:3] == [instance, "eic-ssh-ingress"]
    assert f"ssh-open-to-internet: {world} allows TCP 22 from 0.0.0.0/0" in warning
    assert "1 with warnings" in out


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


# ---- accounts: the organization fan-out (docs/architecture.md §9)
# -------------------------------------------------------------
MANAGEMENT = "123456789012"  # moto's default account: the caller's credentials act there
MEMBERS = ("payments", "analytics")
ROLE = "eic-guard-member"


@dataclass
class Organization:
    """An organization run from the caller's account; a fixable instance in each member, a compliant one here."""

    members: dict[str, str]  # name -> account id
    accounts: dict[str, SimulatedAccount]  # member account id -> builder acting with that account's credentials
    instances: dict[str, str]  # account id -> its instance
    role_arns: dict[str, str]  # member account id -> the member role eic-guard assumes there

    def ec2(self, account_id: str):
        return self.accounts[account_id].ec2

    def member(self, name: str) -> str:
        return self.members[name]


@pytest.fixture
def organization(account, api_calls) -> Organization:
    simulated = create_organization(boto3.client("organizations", REGION), MEMBERS)
    assert simulated.management_id == MANAGEMENT
    _, own_instance = compliant_instance(account)
    accounts, instances = {}, {MANAGEMENT: own_instance}
    for name, account_id in simulated.members.items():
        session = member_session(account_id, region=REGION)
        # the assumed role's credentials act in the member account, not the caller's
        assert session.client("sts").get_caller_identity()["Account"] == account_id
        accounts[account_id] = member = SimulatedAccount.of(session, REGION)
        instances[account_id] = fixable_instance(member, member.network("10.9.0.0/16", name=name))
    api_calls.clear()
    role_arns = {a: f"arn:aws:iam::{a}:role/{ROLE}" for a in accounts}
    return Organization(simulated.members, accounts, instances, role_arns)


def writes_but_entering(api_calls) -> list[str]:
    """The write calls, but AssumeRole (entering a member account is not a change to it)."""
    return [name for name in api_calls.writes() if name != "AssumeRole"]


def assumed_roles(api_calls) -> list[tuple[str, str]]:
    return [(p["RoleArn"], p["RoleSessionName"]) for name, p in api_calls.calls if name == "AssumeRole"]


def test_organization_scan_and_remediate_cover_the_management_and_every_member(organization, ec2, api_calls, capsys):
    # Given the management account (the caller's, one compliant instance) and two members, each with a fixable one
    everyone = sorted([MANAGEMENT, *organization.accounts])

    # When scanning the organization in report mode
    code, report = run_json(capsys, "--organization")

    # Then every account's target was scanned, each instance under its own account, and nothing was written
    assert code == 1
    assert writes_but_entering(api_calls) == []
    assert report["accounts"] == everyone
    assert [(t["account_id"], t["status"], t["instances"]) for t in report["targets"]] == [
        (a, "ok", 1) for a in everyone
    ]
    verdicts = {(i["account_id"], i["instance_id"]): i["verdict"] for i in report["instances"]}
    assert verdicts == {
        (a, i): "compliant" if a == MANAGEMENT else "noncompliant" for a, i in organization.instances.items()
    }
    # ... each member entered once through its member role, with a session name that shows the run
    roles = assumed_roles(api_calls)
    assert sorted(arn for arn, _ in roles) == sorted(organization.role_arns.values())
    assert {session for _, session in roles} == {f"eic-guard-{report['run_id']}"[:64]}

    # When remediating the organization
    api_calls.clear()
    code, report = run_json(capsys, "--organization", "--remediate")

    # Then both members' instances were fixed in their own accounts, read back with their own credentials
    assert code == 0
    assert report["summary"] == {**report["summary"], "fixed": 2, "compliant": 1, "noncompliant": 0, "errors": 0}
    for account_id, member in organization.accounts.items():
        instance = organization.instances[account_id]
        assert metadata_endpoint(member.ec2, instance) == "enabled"
        [managed] = member.ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["eic-guard-ssh"]}])[
            "SecurityGroups"
        ]
        assert managed["GroupId"] in eni_groups(member.ec2, instance)
        assert ("tcp", 22, 22, EIC_US_EAST_1) in {rule[:4] for rule in ingress_rules(managed)}
    # ... and nothing was created in the caller's account, whose instance was compliant already
    assert (
        ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["eic-guard-ssh"]}])["SecurityGroups"]
        == []
    )

    # And a second remediation writes nothing and exits 0
    api_calls.clear()
    code, report = run_json(capsys, "--organization", "--remediate")
    assert code == 0
    assert api_calls.writes() == [
        "AssumeRole",
        "AssumeRole",
    ]  # entering the members is the only call that is not a read
    assert {i["verdict"] for i in report["instances"]} == {"compliant"}


def test_account_flags_pick_the_accounts_and_the_environment_gives_the_defaults(organization, monkeypatch, capsys):
    # Given EIC_GUARD_ACCOUNTS=organization and a member role name from the environment
    payments, analytics = organization.member("payments"), organization.member("analytics")
    monkeypatch.setenv("EIC_GUARD_ACCOUNTS", "organization")
    monkeypatch.setenv("EIC_GUARD_MEMBER_ROLE_NAME", "from-env")
    recorded = []
    monkeypatch.setattr(
        "botocore.credentials.AssumeRoleCredentialFetcher.__init__",
        _recording_fetcher(recorded),
    )

    # When scanning without account flags, Then the environment's organization and role are used
    _, report = run_json(capsys)
    assert report["accounts"] == sorted([MANAGEMENT, payments, analytics])
    assert sorted(recorded) == sorted(f"arn:aws:iam::{a}:role/from-env" for a in (payments, analytics))

    # When --account (repeated, comma lists, a duplicate) and --role-name are given, Then they win
    recorded.clear()
    _, report = run_json(capsys, "--account", f"{analytics},{payments}", "--account", analytics, "--role-name", "ops")
    assert report["accounts"] == sorted([payments, analytics])
    assert [t["account_id"] for t in report["targets"]] == [analytics, payments]  # in the order given
    assert {i["instance_id"] for i in report["instances"]} == {
        organization.instances[payments],
        organization.instances[analytics],
    }
    assert sorted(recorded) == sorted(f"arn:aws:iam::{a}:role/ops" for a in (payments, analytics))


def _recording_fetcher(recorded: list[str]):
    from botocore.credentials import AssumeRoleCredentialFetcher

    original = AssumeRoleCredentialFetcher.__init__

    def init(self, client_creator, source_credentials, role_arn, *args, **kwargs):
        recorded.append(role_arn)
        original(self, client_creator, source_credentials, role_arn, *args, **kwargs)

    return init


def test_an_unreachable_member_is_a_target_error_and_the_others_are_fixed(organization, monkeypatch, capsys):
    # Given the analytics member's role cannot be assumed (AccessDenied from STS)
    analytics, payments = organization.member("analytics"), organization.member("payments")
    faults = FaultInjector().install(monkeypatch)
    refused = faults.error(
        "AssumeRole", "AccessDenied", service="sts", when=lambda p: p["RoleArn"] == organization.role_arns[analytics]
    )

    # When remediating the organization
    code, report = run_json(capsys, "--organization", "--remediate")

    # Then it exits 1: the unreachable account is a target error naming the account and STS's refusal
    assert code == 1
    assert len(refused.hits) == 1
    targets = {t["account_id"]: t for t in report["targets"]}
    assert targets[analytics]["status"] == "error"
    assert f"cannot enter account {analytics}" in targets[analytics]["error"]
    assert "AccessDenied" in targets[analytics]["error"]
    assert report["summary"]["errors"] == 1
    # ... and the others went on: the payments instance fixed, the management one compliant
    assert (targets[payments]["status"], targets[MANAGEMENT]["status"]) == ("ok", "ok")
    assert metadata_endpoint(organization.ec2(payments), organization.instances[payments]) == "enabled"
    with faults.paused():
        assert metadata_endpoint(organization.ec2(analytics), organization.instances[analytics]) == "disabled"

    # And the table names every account with its counts, and the target that could not be entered
    code = main(scan_args("--organization"))
    out = capsys.readouterr().out
    assert code == 1
    assert f"account {MANAGEMENT} (this account): instances 1: 1 compliant," in out
    assert f"account {payments}: instances 1: 1 compliant, 0 fixed, 0 noncompliant" in out
    assert f"account {analytics}: instances 0: 0 compliant, 0 fixed, 0 noncompliant, 0 excluded, 1 errors" in out
    assert f"cannot enter account {analytics}" in out


def test_max_workers_1_and_4_give_the_same_report(organization, monkeypatch, capsys):
    # Given three accounts x two regions = six targets, and the engine's thread pool observed
    from eic_guard.fanout import local

    pools = []
    real_run_job = local.run_job

    def run_job(*args, **kwargs):
        pools.append(kwargs["max_workers"])
        return real_run_job(*args, **kwargs)

    monkeypatch.setattr(local, "run_job", run_job)

    def comparable(report: dict) -> dict:
        return {k: v for k, v in report.items() if k not in ("run_id", "started_at", "finished_at")}

    # When scanning the organization one target at a time, then four at a time, then with the default
    one = run_json(capsys, "--organization", "--region", "eu-west-1", "--max-workers", "1")
    four = run_json(capsys, "--organization", "--region", "eu-west-1", "--max-workers", "4")
    run_json(capsys, "--organization")

    # Then the reports are the same, and the pool had the size asked for (8 by default)
    assert pools == [1, 4, 8]
    assert one[0] == four[0] == 1
    assert len(one[1]["targets"]) == 6
    assert comparable(one[1]) == comparable(four[1])


def test_organization_refresh_brings_every_members_managed_groups_to_the_file(
    organization, api_calls, tmp_path, capsys
):
    # Given a managed group (eic-guard-ssh, ManagedBy=eic-guard, no rule yet) in each member account
    tags = [{"ResourceType": "security-group", "Tags": [{"Key": "ManagedBy", "Value": "eic-guard"}]}]
    groups = {}
    for account_id, member in organization.accounts.items():
        vpc_id = member.ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
        groups[account_id] = member.ec2.create_security_group(
            GroupName="eic-guard-ssh", Description="ssh", VpcId=vpc_id, TagSpecifications=tags
        )["GroupId"]
    state_file = tmp_path / "state.json"
    argv = ["refresh", "--region", REGION, "--ip-ranges", SNAPSHOT, "--state-file", str(state_file), "--organization"]
    api_calls.clear()

    # When refreshing the organization
    code = main(argv)

    # Then the state file advanced once and every member's group allows the EIC prefixes
    out = capsys.readouterr()
    assert code == 0, out.err
    summary = json.loads(out.out)
    assert summary["status"] == "applied" and summary["sync_token"] == "1787411825"
    assert summary["prefixes_added"] == 4 and summary["alerts"] == []  # IPv4 and IPv6 in each member
    assert [(t["account_id"], t["status"]) for t in summary["targets"]] == [
        (a, "ok") for a in sorted([MANAGEMENT, *organization.accounts])
    ]
    assert json.loads(state_file.read_text())["sync_token"] == "1787411825"
    for account_id, member in organization.accounts.items():
        group = member.ec2.describe_security_groups(GroupIds=[groups[account_id]])["SecurityGroups"][0]
        assert {rule[3] for rule in ingress_rules(group)} == {EIC_US_EAST_1, EIC_US_EAST_1_V6}

    # And a second refresh of the same file writes nothing
    api_calls.clear()
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["prefixes_added"] == 0
    assert writes_but_entering(api_calls) == []


def test_organization_refresh_with_an_unreachable_member_alerts_and_exits_1(
    organization, monkeypatch, tmp_path, capsys
):
    # Given the payments member's role cannot be assumed
    payments = organization.member("payments")
    faults = FaultInjector().install(monkeypatch)
    faults.error(
        "AssumeRole", "AccessDenied", service="sts", when=lambda p: p["RoleArn"].endswith(f"{payments}:role/{ROLE}")
    )

    # When refreshing the organization
    code = main(
        ["refresh", "--region", REGION, "--ip-ranges", SNAPSHOT, "--state-file", str(tmp_path / "s"), "--organization"]
    )

    # Then it exits 1 with the target's error as an alert, naming the account
    out = capsys.readouterr()
    assert code == 1
    summary = json.loads(out.out)
    assert summary["status"] == "incomplete"
    assert any(payments in alert and "AccessDenied" in alert for alert in summary["alerts"])
    assert f"eic-guard: alert: {payments}/{REGION}: cannot enter account {payments}" in out.err


def test_csv_format_has_one_row_per_instance_and_check(account, api_calls, capsys):
    # Given one compliant instance named web-1 with an owner tag, and one fixable instance
    net = account.network()
    [compliant] = account.launch(
        image_id=account.al2023_ami(),
        subnet_id=net.public_subnet_id,
        group_ids=[account.security_group(net, "eic-ssh", [ssh_from(EIC_US_EAST_1)])],
        public_ip=True,
        name="web-1",
        tags={"Owner": "alice", "Unrelated": "x"},
    )
    fixable = fixable_instance(account)

    # When scanning with --format csv
    code = main(scan_args("--format", "csv"))
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))

    # Then the header is the documented one and each instance has one row per check, in check order
    assert code == 1
    assert list(rows[0]) == list(COLUMNS)
    by_instance = {i: [r for r in rows if r["instance_id"] == i] for i in (compliant, fixable)}
    assert [r["check"] for r in by_instance[compliant]] == list(check_ids_for("public"))
    assert {r["status"] for r in by_instance[compliant]} == {"pass"}
    fixable_statuses = {r["check"]: r["status"] for r in by_instance[fixable]}
    assert fixable_statuses["eic-ssh-ingress"] == "would-fix" and fixable_statuses["imds-enabled"] == "would-fix"
    assert {r["account_id"] for r in rows} == {"123456789012"} and {r["region"] for r in rows} == {REGION}
    assert len(rows) == 2 * len(check_ids_for("public"))
    # And each row says who the instance is (its name and the configured owner tags only) and what to do
    assert {(r["name"], r["tags"]) for r in by_instance[compliant]} == {("web-1", "Owner=alice")}
    assert {r["guidance"] for r in by_instance[compliant]} == {""}
    assert api_calls.writes() == []
