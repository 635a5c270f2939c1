"""What the CLI does with what it is given (docs/architecture.md §5): regions, the AWS configuration, settings, the
ip-ranges file and the local state file. Every wrong input is one line on stderr and exit 2, before anything is read or
changed in AWS; concurrent refreshes take turns instead of failing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from importlib.metadata import version
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from eic_guard.aws.clients import AwsClients
from eic_guard.cli import main
from eic_guard.cli.arguments import resolve_regions
from eic_guard.errors import ConfigurationError
from eic_guard.ranges import refresh as refresh_module
from eic_guard.ranges.state import FileStateStore, RangesState, StateFileError
from eic_guard.simulated import ssh_from

from tests.aws_views import ingress_of, metadata_endpoint
from tests.conftest import EIC_US_EAST_1, IP_RANGES, REGION, ROOT
from tests.faults.injector import FaultInjector

SNAPSHOT = str(IP_RANGES / "ip-ranges-2026-08-22.json")
SNAPSHOT_TOKEN = "1787411825"
NO_EIC_SNAPSHOT = str(IP_RANGES / "ip-ranges-2017-11-30.json")  # published before EC2 Instance Connect existed
EU = "eu-west-1"


# ---- helpers -------------------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def restore_cli_logging():
    """cli.main moves the shared logger to stderr at WARNING; put it back for the tests that follow."""
    from eic_guard.observability import logger

    handler = logger.registered_handler
    stream, level = handler.stream, logger.log_level
    yield
    handler.setStream(stream)
    logger.setLevel(level)


@pytest.fixture
def no_aws_files(monkeypatch, tmp_path) -> Path:
    """Empty AWS config and credentials files: no profile, no profile region, whatever the machine has."""
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        empty = tmp_path / name.lower()
        empty.write_text("")
        monkeypatch.setenv(name, str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path / "aws_config_file"


def scan_json(capsys, *args: str) -> tuple[int, dict]:
    """A scan whose report these tests read (an account without opted-in instances is fine here: --allow-empty)."""
    code = main(["scan", "--ip-ranges", SNAPSHOT, "--format", "json", "--allow-empty", *args])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err
    return code, json.loads(captured.out)


def assert_one_error_line(code: int, capsys, *fragments: str) -> str:
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("eic-guard: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def fixable_instance(account) -> str:
    """An opted-in instance that --remediate would change (no SSH from EIC, metadata endpoint off)."""
    net = account.network("10.9.0.0/16", name="fixable")
    instance = account.launch_drifted(net)
    return instance


def compliant_instance(account) -> str:
    net = account.network()
    eic_ssh = account.security_group(net, "eic-ssh", [ssh_from(EIC_US_EAST_1)])
    [instance] = account.launch(
        image_id=account.al2023_ami(), subnet_id=net.public_subnet_id, group_ids=[eic_ssh], public_ip=True
    )
    return instance


def managed_group() -> str:
    """eic-guard's own group (eic-guard-ssh, ManagedBy=eic-guard) with no rule yet: what a refresh writes to."""
    ec2 = boto3.client("ec2", REGION)
    vpc_id = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    tags = [{"ResourceType": "security-group", "Tags": [{"Key": "ManagedBy", "Value": "eic-guard"}]}]
    return ec2.create_security_group(
        GroupName="eic-guard-ssh", Description="ssh", VpcId=vpc_id, TagSpecifications=tags
    )["GroupId"]


def refresh_args(state_file: Path | str, ip_ranges: str = SNAPSHOT) -> list[str]:
    return ["refresh", "--region", REGION, "--ip-ranges", ip_ranges, "--state-file", str(state_file)]


# ---- regions -------------------------------------------------------------------------------------------------------
def test_aws_region_alone_is_enough(aws, monkeypatch, no_aws_files, capsys):
    # Given only AWS_REGION (no AWS_DEFAULT_REGION, no profile region, no --region), as Lambda and CloudShell set it
    monkeypatch.delenv("AWS_DEFAULT_REGION")

    # When scanning
    _, report = scan_json(capsys)

    # Then that region was scanned
    assert report["regions"] == [REGION]


def test_eic_guard_regions_is_read_as_a_comma_list(account, monkeypatch, capsys):
    # Given a compliant instance, and EIC_GUARD_REGIONS naming two regions while AWS_REGION names one
    instance = compliant_instance(account)
    monkeypatch.setenv("EIC_GUARD_REGIONS", f"{EU}, {REGION}")

    # When scanning without --region
    code, report = scan_json(capsys)

    # Then both regions of EIC_GUARD_REGIONS were scanned, in its order
    assert code == 0
    assert report["regions"] == [EU, REGION]
    assert [i["instance_id"] for i in report["instances"]] == [instance]


def test_region_flag_takes_comma_lists_and_repeats(account, monkeypatch, capsys):
    # Given a compliant instance, and EIC_GUARD_REGIONS that --region must override
    instance = compliant_instance(account)
    monkeypatch.setenv("EIC_GUARD_REGIONS", "ap-south-1")

    # When --region mixes a comma list and repeats, with a duplicate
    code, report = scan_json(capsys, "--region", f"{REGION},{EU}", "--region", REGION, "--region", "eu-central-1")

    # Then each region is scanned once, in the order given
    assert code == 0
    assert report["regions"] == [REGION, EU, "eu-central-1"]
    assert [i["instance_id"] for i in report["instances"]] == [instance]


def test_the_profile_region_is_the_last_resort(aws, monkeypatch, no_aws_files, capsys):
    # Given no region variable at all, and a profile whose region is eu-west-1
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name)
    no_aws_files.write_text(f"[default]\nregion = {EU}\n")

    # When scanning
    _, report = scan_json(capsys)

    # Then the profile's region was scanned
    assert report["regions"] == [EU]


@pytest.mark.parametrize(
    ("flags", "env", "profile", "expected"),
    [
        (["a-b-1,c-d-2", "a-b-1"], {"EIC_GUARD_REGIONS": "x-y-1", "AWS_REGION": "z-z-1"}, "p-p-1", ("a-b-1", "c-d-2")),
        (None, {"EIC_GUARD_REGIONS": "x-y-1,x-y-2", "AWS_REGION": "z-z-1"}, "p-p-1", ("x-y-1", "x-y-2")),
        (None, {"EIC_GUARD_REGIONS": " ", "AWS_REGION": "z-z-1", "AWS_DEFAULT_REGION": "d-d-1"}, None, ("z-z-1",)),
        (None, {"AWS_REGION": "", "AWS_DEFAULT_REGION": "d-d-1"}, "p-p-1", ("d-d-1",)),
        (None, {}, "p-p-1", ("p-p-1",)),
    ],
)
def test_region_sources_in_order(flags, env, profile, expected):
    # Given regions from several sources, When resolved, Then docs/architecture.md §5's order decides
    regions, _ = resolve_regions(flags, env, lambda: profile)
    assert regions == expected


def test_no_region_anywhere_is_a_configuration_error():
    # Given no source names a region, When resolved, Then the message says where one can come from
    with pytest.raises(ConfigurationError, match="EIC_GUARD_REGIONS, AWS_REGION or AWS_DEFAULT_REGION"):
        resolve_regions(None, {}, lambda: None)


def test_unknown_region_in_eic_guard_regions_is_refused_before_any_call(account, api_calls, monkeypatch, capsys):
    # Given a fixable instance and EIC_GUARD_REGIONS with a region that does not exist
    fixable_instance(account)
    monkeypatch.setenv("EIC_GUARD_REGIONS", f"{REGION},mars-east-1")
    api_calls.clear()

    # When scanning with --remediate
    code = main(["scan", "--ip-ranges", SNAPSHOT, "--remediate"])

    # Then it exits 2 naming the region and where it came from, and makes no call
    assert_one_error_line(code, capsys, "mars-east-1", "EIC_GUARD_REGIONS")
    assert api_calls.calls == []


# ---- the AWS configuration -------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["scan", "refresh"])
def test_unknown_profile_is_one_line_and_exit_2(aws, api_calls, monkeypatch, no_aws_files, tmp_path, capsys, command):
    # Given a profile that exists in no AWS configuration file
    monkeypatch.setenv("AWS_PROFILE", "does-not-exist")
    api_calls.clear()

    # When a command runs
    argv = ["scan", "--region", REGION, "--ip-ranges", SNAPSHOT] if command == "scan" else refresh_args(tmp_path / "s")
    code = main(argv)

    # Then it is a configuration error naming the profile, and no call was made
    assert_one_error_line(code, capsys, "does-not-exist", "AWS_PROFILE")
    assert api_calls.calls == []


def test_a_botocore_error_escaping_the_run_is_one_line_and_exit_2(account, monkeypatch, capsys):
    # Given an endpoint that cannot be reached, reported raw by botocore from inside the run
    def unreachable(self):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    monkeypatch.setattr(AwsClients, "account_id", unreachable)

    # When scanning
    code = main(["scan", "--region", REGION, "--ip-ranges", SNAPSHOT])

    # Then it is one line naming the endpoint, not a traceback and not exit 1 ("non-compliant")
    assert_one_error_line(code, capsys, "http://127.0.0.1:9")


def _subprocess_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test's fake credentials, empty AWS files, this checkout first on the path, no instance metadata."""
    env = dict(os.environ)
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        empty = tmp_path / name.lower()
        empty.write_text("")
        env[name] = str(empty)
    paths = [str(ROOT / "layers" / "eic_guard"), str(ROOT), env.get("PYTHONPATH", "")]
    env.update(AWS_EC2_METADATA_DISABLED="true", PYTHONPATH=os.pathsep.join(p for p in paths if p), **extra)
    return env


@pytest.mark.parametrize(
    ("extra_env", "argv", "expected_code", "expected"),
    [
        ({"AWS_PROFILE": "does-not-exist"}, ["--help"], 0, "usage: eic-guard"),
        ({"AWS_PROFILE": "does-not-exist"}, ["scan", "--help"], 0, "--remediate"),
        ({"AWS_PROFILE": "does-not-exist"}, ["--version"], 0, "eic-guard "),
        ({"AWS_PROFILE": "does-not-exist"}, ["scan", "--region", REGION, "--ip-ranges", SNAPSHOT], 2, "does-not-exist"),
        ({"AWS_PROFILE": "does-not-exist"}, ["refresh", "--ip-ranges", SNAPSHOT], 2, "does-not-exist"),
        ({"AWS_ENDPOINT_URL": "not-a-url"}, ["scan", "--region", REGION, "--ip-ranges", SNAPSHOT], 2, "not-a-url"),
        # (AWS_MAX_ATTEMPTS is not read: eic-guard's clients set their own attempts, aws/clients.py RETRY_CONFIG)
        ({"AWS_DEFAULTS_MODE": "sometimes"}, ["scan", "--region", REGION, "--ip-ranges", SNAPSHOT], 2, "sometimes"),
    ],
)
def test_the_installed_command_never_prints_a_traceback(tmp_path, extra_env, argv, expected_code, expected):
    # Given a broken AWS configuration in the environment of a fresh process (nothing imported yet)
    env = _subprocess_env(tmp_path, EIC_GUARD_STATE_FILE=str(tmp_path / "state.json"), **extra_env)

    # When `python -m eic_guard.cli` runs
    result = subprocess.run(
        [sys.executable, "-m", "eic_guard.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env=env,
    )

    # Then the exit code is the contract's, with no traceback: help and version work, a command says one line
    assert result.returncode == expected_code, result.stderr
    assert "Traceback" not in result.stderr
    if expected_code == 0:
        assert expected in result.stdout
        assert result.stderr == ""
    else:
        assert result.stdout == ""
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("eic-guard: error: ") and expected in line
    assert not (tmp_path / "state.json").exists()


def test_version_prints_the_installed_version(capsys):
    # When asking for the version
    with pytest.raises(SystemExit) as exited:
        main(["--version"])

    # Then it prints the distribution's version and exits 0
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"eic-guard {version('eic-guard')}\n"


# ---- accounts (docs/architecture.md §9)
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["scan", "refresh"])
@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--organization", "--account", "111111111111"], "--organization and --account exclude each other"),
        (["--account", "111111111111,12345"], "--account: not a 12-digit account id: 12345"),
        (["--account", "1111111111111"], "not a 12-digit account id: 1111111111111"),
        (["--account", " , "], "--account needs a 12-digit account id"),
        (["--role-name", "ops/eic-guard"], "--role-name: not an IAM role name"),
        (["--role-name", "r" * 65], "--role-name"),
        (["--max-workers", "0"], "--max-workers: expected a whole number from 1 to 64, got '0'"),
        (["--max-workers", "65"], "got '65'"),
        (["--max-workers", "eight"], "got 'eight'"),
    ],
)
def test_bad_account_flags_are_one_line_before_any_call(aws, api_calls, tmp_path, capsys, command, flags, fragment):
    # Given account flags that cannot be used
    argv = ["scan", "--region", REGION, "--ip-ranges", SNAPSHOT] if command == "scan" else refresh_args(tmp_path / "s")
    api_calls.clear()

    # When a command runs with them
    code = main([*argv, *flags])

    # Then it is one line naming the flag, and no call was made, no state written
    assert_one_error_line(code, capsys, fragment)
    assert api_calls.calls == []
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("variable", "value"), [("EIC_GUARD_ACCOUNTS", "everyone"), ("EIC_GUARD_MEMBER_ROLE_NAME", "a/b")]
)
def test_a_bad_account_setting_is_refused_before_any_call(aws, api_calls, monkeypatch, capsys, variable, value):
    # Given an account setting that cannot be used
    monkeypatch.setenv(variable, value)
    api_calls.clear()

    # When scanning without account flags
    code = main(["scan", "--region", REGION, "--ip-ranges", SNAPSHOT])

    # Then it is one line naming the variable, and no call was made
    assert_one_error_line(code, capsys, variable)
    assert api_calls.calls == []


@pytest.mark.parametrize(
    ("refusal", "fragments"),
    [
        (
            "AWSOrganizationsNotInUseException",  # what AWS answers outside an organization
            ("--organization: cannot list the organization's accounts", "management account", "NotInUse"),
        ),
        ("AccessDeniedException", ("cannot list the organization's accounts", "delegated administrator")),
        (None, ("the organization lists no ACTIVE account",)),  # moto answers outside an organization: no account
    ],
)
def test_organization_that_cannot_be_listed_is_one_line_and_changes_nothing(
    account, ec2, api_calls, monkeypatch, capsys, refusal, fragments
):
    # Given a fixable instance in an account whose organization cannot be listed (or lists nothing)
    instance = fixable_instance(account)
    if refusal:
        FaultInjector().install(monkeypatch).error("ListAccounts", refusal, service="organizations")
    api_calls.clear()

    # When remediating --organization
    code = main(["scan", "--region", REGION, "--ip-ranges", SNAPSHOT, "--organization", "--remediate"])

    # Then it is one line saying why and where to run it from, and nothing was written
    assert_one_error_line(code, capsys, *fragments)
    assert api_calls.writes() == []
    assert metadata_endpoint(ec2, instance) == "disabled"


# ---- settings ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["scan", "refresh"])
def test_invalid_eic_guard_mode_is_refused(account, api_calls, monkeypatch, tmp_path, capsys, command):
    # Given a fixable instance and a mode that does not exist
    fixable_instance(account)
    monkeypatch.setenv("EIC_GUARD_MODE", "bogus")
    api_calls.clear()

    # When a command runs (scan with --remediate, which sets the CLI's own mode)
    argv = ["scan", "--region", REGION, "--ip-ranges", SNAPSHOT, "--remediate"]
    code = main(argv if command == "scan" else refresh_args(tmp_path / "state.json"))

    # Then it exits 2 naming the setting, and makes no call
    assert_one_error_line(code, capsys, "EIC_GUARD_MODE")
    assert api_calls.calls == []


def test_eic_guard_mode_remediate_does_not_make_the_cli_write(account, ec2, api_calls, monkeypatch, capsys):
    # Given a fixable instance and EIC_GUARD_MODE=remediate (the functions' setting)
    instance = fixable_instance(account)
    monkeypatch.setenv("EIC_GUARD_MODE", "remediate")
    api_calls.clear()

    # When scanning without --remediate
    code = main(["scan", "--region", REGION, "--ip-ranges", SNAPSHOT, "--format", "json"])

    # Then it is a report: nothing written, the instance still as it was, and a note says why on stderr
    captured = capsys.readouterr()
    assert code == 1
    assert json.loads(captured.out)["mode"] == "report"
    assert api_calls.writes() == []
    assert metadata_endpoint(ec2, instance) == "disabled"
    assert "EIC_GUARD_MODE=remediate is ignored" in captured.err and "--remediate" in captured.err


def test_remediate_flag_overrides_eic_guard_mode_report(account, monkeypatch, capsys):
    # Given a fixable instance and EIC_GUARD_MODE=report
    fixable_instance(account)
    monkeypatch.setenv("EIC_GUARD_MODE", "report")

    # When scanning with --remediate
    code, report = scan_json(capsys, "--region", REGION, "--remediate")

    # Then the flag decides
    assert code == 0
    assert report["mode"] == "remediate" and report["summary"]["fixed"] == 1


# ---- ip-ranges -------------------------------------------------------------------------------------------------
def test_scan_refuses_a_file_without_any_eic_prefix_before_any_call(account, ec2, api_calls, capsys):
    # Given a fixable instance, and the real 2017 file, which has no EC2_INSTANCE_CONNECT prefix at all
    instance = fixable_instance(account)
    api_calls.clear()

    # When scanning with it and --remediate
    code = main(["scan", "--region", REGION, "--ip-ranges", NO_EIC_SNAPSHOT, "--remediate"])

    # Then it exits 2 saying so, makes no call, and the instance is untouched
    assert_one_error_line(code, capsys, "no EC2_INSTANCE_CONNECT prefix")
    assert api_calls.calls == []
    assert metadata_endpoint(ec2, instance) == "disabled"


def test_refresh_refuses_a_file_without_any_eic_prefix_before_any_call(aws, api_calls, tmp_path, capsys):
    # Given eic-guard's managed group and the 2017 file
    group = managed_group()
    api_calls.clear()

    # When refreshing with it
    code = main(refresh_args(tmp_path / "state.json", NO_EIC_SNAPSHOT))

    # Then it exits 2 before any call (not even the account lookup), and nothing was written anywhere
    assert_one_error_line(code, capsys, "no EC2_INSTANCE_CONNECT prefix")
    assert api_calls.calls == []
    assert ingress_of(group) == set()
    assert not (tmp_path / "state.json").exists()


# ---- the state file ------------------------------------------------------------------------------------------------
def _directory(path: Path) -> None:
    path.mkdir()


BAD_STATES = {
    "corrupt": (lambda path: path.write_text('{"sync_token": "17'), "Invalid JSON"),
    "empty": (lambda path: path.write_text(""), "is empty"),
    "blank": (lambda path: path.write_text("\n  \n"), "is empty"),
    "directory": (_directory, "is a directory"),
    "not-an-object": (lambda path: path.write_text("[]"), "not an eic-guard state document"),
    "bad-date": (
        lambda path: path.write_text('{"sync_token": "1", "last_seen": {"us-east-1": {"1.2.3.0/29": "noon"}}}'),
        "last_seen.us-east-1.1.2.3.0/29",
    ),
    "non-numeric-token": (lambda path: path.write_text('{"sync_token": "yesterday"}'), "is not a number"),
}


@pytest.mark.parametrize("kind", sorted(BAD_STATES))
def test_refresh_with_an_unusable_state_file_stops_before_any_call(aws, api_calls, tmp_path, capsys, kind):
    # Given eic-guard's managed group, and a state file that cannot be used
    group = managed_group()
    state_file = tmp_path / "state.json"
    make, fragment = BAD_STATES[kind]
    make(state_file)
    api_calls.clear()

    # When refreshing
    code = main(refresh_args(state_file))

    # Then it is one line naming the file and what is wrong, before any AWS call: the group was not changed
    assert_one_error_line(code, capsys, str(state_file), fragment)
    assert api_calls.calls == []
    assert ingress_of(group) == set()


def test_refresh_into_an_unwritable_directory_stops_before_any_call(aws, api_calls, tmp_path, capsys):
    # Given eic-guard's managed group, and a state path below a regular file (its directory can never exist)
    group = managed_group()
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    api_calls.clear()

    # When refreshing
    code = main(refresh_args(blocker / "state.json"))

    # Then it exits 2 before any call, naming the path, and EC2 was not changed
    assert_one_error_line(code, capsys, str(blocker / "state.json"), "not a directory")
    assert api_calls.calls == []
    assert ingress_of(group) == set()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only directories")
def test_refresh_into_a_read_only_directory_stops_before_any_call(aws, api_calls, tmp_path, capsys):
    # Given eic-guard's managed group, and a state directory nobody may write into
    group = managed_group()
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(0o555)
    api_calls.clear()

    # When refreshing
    try:
        code = main(refresh_args(directory / "state.json"))
    finally:
        directory.chmod(0o755)

    # Then it exits 2 before any call, and EC2 was not changed
    assert_one_error_line(code, capsys, str(directory / "state.json"), "cannot be written")
    assert api_calls.calls == []
    assert ingress_of(group) == set()


def test_refresh_with_a_missing_state_file_starts_a_fresh_state(aws, tmp_path, capsys):
    # Given eic-guard's managed group and a state path whose folder exists, without the file
    group = managed_group()
    state_file = tmp_path / "state.json"

    # When refreshing
    code = main(refresh_args(state_file))

    # Then it applies the file and creates the state
    assert code == 0, capsys.readouterr().err
    assert (EIC_US_EAST_1, "tcp") in {(rule[3], rule[0]) for rule in ingress_of(group)}
    assert RangesState.model_validate_json(state_file.read_text()).sync_token == SNAPSHOT_TOKEN


@pytest.mark.parametrize("given", ["--state-file", "EIC_GUARD_STATE_FILE"])
def test_a_state_file_in_a_folder_that_does_not_exist_is_refused_before_any_call(
    aws, api_calls, monkeypatch, tmp_path, capsys, given
):
    # Given eic-guard's managed group and a state file named (flag or variable) in a folder nobody created: a typo
    group = managed_group()
    state_file = tmp_path / "new" / "dir" / "state.json"
    argv = refresh_args(state_file)
    if given == "EIC_GUARD_STATE_FILE":
        argv = argv[: argv.index("--state-file")]
        monkeypatch.setenv("EIC_GUARD_STATE_FILE", str(state_file))
    api_calls.clear()

    # When refreshing
    code = main(argv)

    # Then it is one line naming the folder, before any call; no folder was made and no group changed
    assert_one_error_line(code, capsys, f"{given} {state_file}: the folder {state_file.parent} does not exist")
    assert api_calls.calls == []
    assert not (tmp_path / "new").exists()
    assert ingress_of(group) == set()


def test_the_default_state_file_gets_its_folder_made(aws, tmp_path, capsys):
    # Given no state file named: the default (here the test's own ~/.eic-guard/state.json, conftest) whose folder
    # does not exist yet
    from eic_guard.cli import arguments

    default = Path(arguments.DEFAULT_STATE_FILE)
    assert not default.parent.exists()

    # When refreshing
    code = main(["refresh", "--region", REGION, "--ip-ranges", SNAPSHOT])

    # Then eic-guard's own folder was made and holds the state
    assert code == 0, capsys.readouterr().err
    assert RangesState.model_validate_json(default.read_text()).sync_token == SNAPSHOT_TOKEN


@pytest.mark.parametrize("kind", sorted(BAD_STATES))
def test_file_store_load_names_the_file_and_the_problem(tmp_path, kind):
    # Given an unusable state file
    path = tmp_path / "state.json"
    make, fragment = BAD_STATES[kind]
    make(path)

    # When loaded, Then it is a ConfigurationError saying which file and what is wrong
    with pytest.raises(StateFileError) as raised:
        FileStateStore(path).load()
    assert isinstance(raised.value, ConfigurationError)
    assert str(path) in str(raised.value) and fragment in str(raised.value)


def test_file_store_save_failure_is_a_state_file_error_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    # Given a store whose rename fails (a full disk, a vanished directory)
    path = tmp_path / "state.json"

    def failing_replace(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)

    # When saving, Then the error names the file and the reason, and no temporary file is left
    with pytest.raises(StateFileError, match="No space left on device"):
        FileStateStore(path).save(RangesState(sync_token="1"), None)
    assert list(tmp_path.iterdir()) == []


# ---- concurrent refreshes ------------------------------------------------------------------------------------------
class Rendezvous:
    """Holds each refresh just after it read the state until the other one has too (or a second has passed).

    Without serialization both runs then work from the same state and the second save conflicts every time; with
    the lock the first waits here in vain while the second waits for the lock, so the test costs about a second.
    """

    def __init__(self, parties: int = 2, patience: float = 1.0):
        self.parties, self.patience = parties, patience
        self.arrived = 0
        self.condition = threading.Condition()

    def meet(self) -> None:
        with self.condition:
            self.arrived += 1
            self.condition.notify_all()
            self.condition.wait_for(lambda: self.arrived >= self.parties, timeout=self.patience)


class StoreAfterLoad:
    """The store a refresh is given, calling `after_load` once the state was read (apply_ranges reads it once)."""

    def __init__(self, store, after_load):
        self.store, self.after_load = store, after_load

    def load(self) -> RangesState:
        state = self.store.load()
        self.after_load()
        return state

    def save(self, state: RangesState, previous_token: str | None) -> None:
        self.store.save(state, previous_token)


def test_two_refreshes_on_one_state_file_take_turns(aws, monkeypatch, tmp_path, capsys):
    # Given eic-guard's managed group, no state yet, and two refreshes held together right after reading the state
    group = managed_group()
    state_file = tmp_path / "state.json"
    rendezvous = Rendezvous()
    original = refresh_module.apply_ranges

    def apply_held(clients, settings, store, ranges, **kwargs):
        return original(clients, settings, StoreAfterLoad(store, rendezvous.meet), ranges, **kwargs)

    monkeypatch.setattr(refresh_module, "apply_ranges", apply_held)
    codes: list[int] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            codes.append(main(refresh_args(state_file)))
        except BaseException as exc:  # noqa: BLE001 - a traceback in a thread must fail the test, not vanish
            failures.append(exc)

    # When both run at once in one process (moto is process-wide, so both see the same account)
    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    # Then both succeed: the second waited for the lock, then replayed what the first had applied
    captured = capsys.readouterr()
    assert failures == [] and codes == [0, 0], captured.err
    decoder, out, summaries = json.JSONDecoder(), captured.out.strip(), []
    while out:
        summary, end = decoder.raw_decode(out)
        summaries.append(summary)
        out = out[end:].strip()
    assert sorted(s["prefixes_added"] for s in summaries) == [0, 2]
    assert {s["status"] for s in summaries} == {"applied"}
    # And the state file is valid and at the file's synctoken; the group has exactly the EIC rules
    assert FileStateStore(state_file).load().sync_token == SNAPSHOT_TOKEN
    assert {rule[3] for rule in ingress_of(group)} == {EIC_US_EAST_1, "2600:1f18:6fe3:8c00::/56"}


def test_file_store_lock_makes_the_second_holder_wait_and_says_so(tmp_path):
    # Given one holder of the state file's lock, and a second one that reports when it has to wait
    store = FileStateStore(tmp_path / "state.json")
    waiting, entered = threading.Event(), threading.Event()

    def second() -> None:
        with FileStateStore(store.path).locked(on_wait=waiting.set):
            entered.set()

    # When the second tries while the first holds it
    with store.locked():
        thread = threading.Thread(target=second)
        thread.start()
        assert waiting.wait(timeout=30)

        # Then it was told to wait and did not get in
        assert not entered.is_set()

    # And it gets in once the first lets go; the lock file stays, the state file was never created
    thread.join(timeout=30)
    assert entered.is_set()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json.lock"]


def test_a_state_conflict_with_a_writer_that_does_not_lock_is_one_line_and_exit_2(aws, monkeypatch, tmp_path, capsys):
    # Given a refresh during which something that does not take the lock (an older eic-guard) saves another state
    managed_group()
    state_file = tmp_path / "state.json"
    original = refresh_module.apply_ranges

    def intruder() -> None:
        FileStateStore(state_file).save(RangesState(sync_token="1"), None)

    def apply_raced(clients, settings, store, ranges, **kwargs):
        return original(clients, settings, StoreAfterLoad(store, intruder), ranges, **kwargs)

    monkeypatch.setattr(refresh_module, "apply_ranges", apply_raced)

    # When refreshing
    code = main(refresh_args(state_file))

    # Then the conflict is one line naming the file and what to do; the other writer's state is kept
    assert_one_error_line(code, capsys, str(state_file), "run the refresh again")
    assert FileStateStore(state_file).load().sync_token == "1"


def test_cli_module_imports_no_aws_machinery():
    # Given a fresh interpreter, When eic_guard.cli is imported, Then neither boto3 nor botocore nor X-Ray is
    code = "import sys, eic_guard.cli; "
    code += "print(sorted(m for m in ('boto3', 'botocore', 'aws_xray_sdk') if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "eic_guard"), str(ROOT)])},
    )
    assert result.stdout.strip() == "[]"
