"""What the CLI says on stderr while it works (issue 17): progress per instance on a terminal, a periodic line in a
CI log, nothing but errors with -q, each AWS call with -v; and cleanup asking before it changes anything."""

from __future__ import annotations

import io
import json
import re
import sys

import pytest
from eic_guard.cli import exit_codes, main, progress

from tests.aws_views import eni_groups
from tests.conftest import IP_RANGES, REGION

SNAPSHOT = str(IP_RANGES / "ip-ranges-2026-08-22.json")
EU = "eu-west-1"


def scan(*extra: str) -> list[str]:
    return ["scan", "--region", REGION, "--ip-ranges", SNAPSHOT, *extra]


@pytest.fixture
def recorded_progress(monkeypatch) -> list[progress.RunProgress]:
    """Every RunProgress the CLI makes, kept to read its counts afterwards."""
    made = []

    class Recorded(progress.RunProgress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(progress, "RunProgress", Recorded)
    return made


def test_the_progress_bar_counts_instances_across_targets_on_a_terminal(
    account, monkeypatch, capsys, recorded_progress
):
    # Given a person watching a terminal, three opted-in instances here and none in a second region
    net = account.network()
    for _ in range(3):
        account.launch_drifted(net)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)

    # When scanning both regions
    code = main(["scan", "--region", f"{REGION},{EU}", "--ip-ranges", SNAPSHOT, "--format", "json"])

    # Then the bar heard of every instance found and checked, and of both targets
    assert code == exit_codes.FINDINGS, capsys.readouterr().err
    [shown] = recorded_progress
    assert (shown.found_instances, shown.checked_instances, shown.targets_done, shown.targets) == (3, 3, 2, 2)


def test_a_ci_log_gets_a_progress_line_once_the_run_lasts(account, monkeypatch, capsys):
    # Given stderr that is not a terminal (a CI log), and a run that lasts longer than the delay (here: any)
    account.launch_drifted(account.network())
    monkeypatch.setattr(progress, "DELAY", 0.0)

    # When scanning
    code = main(scan("--format", "json"))

    # Then the log ends with a line of totals
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("eic-guard: scan: ")]
    assert code == exit_codes.FINDINGS
    assert re.fullmatch(r"eic-guard: scan: 1 of 1 instances checked, 1 of 1 targets done \(\d+ s\)", lines[-1])


def test_a_short_run_prints_no_progress_line(account, capsys):
    # Given a run shorter than the delay (moto answers in milliseconds)
    account.launch_drifted(account.network())

    # When scanning
    main(scan("--format", "json"))

    # Then no progress line was printed
    assert "eic-guard: scan: " not in capsys.readouterr().err


def test_quiet_prints_nothing_but_errors(account, monkeypatch, capsys, recorded_progress, tmp_path):
    # Given a non-compliant instance (a normal scan alerts on stderr), EIC_GUARD_MODE=remediate (a note), a terminal
    account.launch_drifted(account.network())
    monkeypatch.setenv("EIC_GUARD_MODE", "remediate")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)

    # When scanning with -q
    code = main(scan("-q", "--format", "json", "--state-file", str(tmp_path / "state.json")))

    # Then stdout is the report, stderr is empty: no note, no alert, no progress; the alert state is not touched
    captured = capsys.readouterr()
    assert code == exit_codes.FINDINGS
    assert json.loads(captured.out)["summary"]["noncompliant"] == 1
    assert captured.err == ""
    assert recorded_progress == []
    assert list(tmp_path.iterdir()) == []


def test_quiet_still_prints_errors(api_calls, capsys):
    # When a quiet scan gets a bad input
    code = main(scan("-q", "--output", "/"))

    # Then the error is still said
    assert code == exit_codes.USAGE
    assert capsys.readouterr().err.startswith("eic-guard: error: --output /: is a directory")


def test_verbose_prints_each_aws_call_with_its_timing(account, capsys):
    # Given one opted-in instance
    account.launch_drifted(account.network())

    # When scanning with -v
    main(scan("-v", "--format", "json"))

    # Then each call is one stderr line: service.operation, region, account, outcome, milliseconds
    calls = [line for line in capsys.readouterr().err.splitlines() if line.startswith("eic-guard: aws ")]
    assert re.fullmatch(r"eic-guard: aws sts\.GetCallerIdentity us-east-1 200 \d+ ms", calls[0])
    described = [c for c in calls if c.startswith("eic-guard: aws ec2.DescribeInstances ")]
    assert described and re.fullmatch(
        r"eic-guard: aws ec2\.DescribeInstances us-east-1 123456789012 200 \d+ ms", described[0]
    )


def test_verbose_names_a_failed_call(account, monkeypatch, capsys):
    # Given DescribeInstances refused
    from tests.faults.injector import FaultInjector

    account.launch_drifted(account.network())
    FaultInjector().install(monkeypatch).error("DescribeInstances", "UnauthorizedOperation")

    # When scanning with -v
    main(scan("-v", "--format", "json"))

    # Then the refused call is a line with its HTTP status
    calls = [line for line in capsys.readouterr().err.splitlines() if "ec2.DescribeInstances" in line]
    assert calls and " 400 " in calls[0]


# ---- cleanup asks on a terminal -------------------------------------------------------------------------------------
@pytest.fixture
def installed(account, ec2, capsys):
    """One instance with eic-guard's group attached (a remediate scan made it)."""
    instance = account.launch_drifted(account.network())
    assert main(scan("--remediate", "--format", "json")) == exit_codes.OK
    capsys.readouterr()
    return instance


def answer_on_a_terminal(monkeypatch, answer: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(answer + "\n"))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)


def test_cleanup_on_a_terminal_asks_and_a_no_changes_nothing(installed, ec2, monkeypatch, capsys):
    # Given a person at a terminal who answers no
    before = eni_groups(ec2, installed)
    answer_on_a_terminal(monkeypatch, "n")

    # When cleaning up
    code = main(["cleanup", "--region", REGION])

    # Then the plan was shown with the question, nothing changed, and the exit code says so
    captured = capsys.readouterr()
    assert code == exit_codes.USAGE
    assert "detach-group" in captured.err and "Remove these 2 eic-guard resources? [y/N]" in captured.err
    assert captured.err.strip().endswith("eic-guard: cleanup declined: nothing changed")
    assert eni_groups(ec2, installed) == before


def test_cleanup_on_a_terminal_goes_on_after_a_yes(installed, ec2, monkeypatch, capsys):
    # Given a person at a terminal who answers yes
    before = eni_groups(ec2, installed)
    answer_on_a_terminal(monkeypatch, "yes")

    # When cleaning up
    code = main(["cleanup", "--region", REGION])

    # Then the group was detached and deleted
    assert code == exit_codes.OK, capsys.readouterr().err
    assert len(eni_groups(ec2, installed)) == len(before) - 1

    # And a second cleanup finds nothing (and asks nothing)
    answer_on_a_terminal(monkeypatch, "n")
    assert main(["cleanup", "--region", REGION]) == exit_codes.OK
    assert "nothing to clean up" in capsys.readouterr().out


def test_cleanup_with_yes_or_without_a_terminal_does_not_ask(installed, ec2, monkeypatch, capsys):
    # Given a terminal, and --yes
    before = eni_groups(ec2, installed)
    answer_on_a_terminal(monkeypatch, "n")

    # When cleaning up with --yes
    code = main(["cleanup", "--region", REGION, "--yes"])

    # Then no question was asked and the group is gone
    captured = capsys.readouterr()
    assert code == exit_codes.OK
    assert "[y/N]" not in captured.err
    assert len(eni_groups(ec2, installed)) == len(before) - 1
