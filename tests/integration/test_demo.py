"""End to end: `eic-guard demo` seeds a simulated account, scans, remediates, rescans and proves the result; then the
same for an AWS Organization of three accounts, each member fixed through its member role."""

from __future__ import annotations

import os
import re
import socket

import pytest
from eic_guard import demo

MANAGEMENT = "123456789012"  # moto's default account: the demo's own credentials act there


class RecordingMotoServer(demo.ThreadedMotoServer):
    """The real server, remembering the port it listened on so the test can check it is closed afterwards."""

    started: list[int] = []

    def start(self) -> None:
        super().start()
        RecordingMotoServer.started.append(self.get_host_and_port()[1])


def port_is_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.e2e
def test_demo_fixes_what_it_can_and_reports_the_rest(monkeypatch, capsys):
    # Given: the real moto server, observed, and the test's own fake credentials
    RecordingMotoServer.started = []
    monkeypatch.setattr(demo, "ThreadedMotoServer", RecordingMotoServer)

    # When
    exit_code = demo.main()
    out = capsys.readouterr().out

    # Then: the demo checked itself and passed
    assert exit_code == 0, out[-3000:]
    assert "demo OK" in out
    positions = [out.index(heading) for heading in demo.HEADINGS]
    assert positions == sorted(positions)
    final = out[positions[2] : out.index("proof from the simulated AWS state")]
    # ... the final scan left nothing fixable, only what cannot be fixed automatically
    assert re.search(r"instances 22: 13 compliant, 0 fixed, 8 noncompliant, 1 excluded, 0 errors", final)
    assert "would-fix" not in final
    assert "0 would-fix left" in out
    assert re.search(r"network-acl\s+│ FAIL\s+│ acl-\w+ inbound: rule 50 denies 18\.206\.107\.24/29 port 22", final)
    assert re.search(r"al2023-ami\s+│ FAIL\s+│ ami-unknown", final)
    assert re.search(r"internet-route\s+│ FAIL\s+│ rtb-\w+ \(main\) has no 0\.0\.0\.0/0 route", final)
    assert "is AL2023 minimal" in final and "(ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-" in final
    assert re.search(r"passes with a warning: i-\w+ \(web-open-world\): over-permissive", out)
    # ... the remediate scan fixed both kinds of fixable drift
    remediate = out[positions[1] : positions[2]]
    assert "instances 22: 3 compliant, 10 fixed, 8 noncompliant, 1 excluded, 0 errors" in remediate
    assert re.search(r"imds-enabled\s+│ fixed", remediate)
    # ... then the organization act: report (exit 1), remediate through the member role (exit 0), final (exit 0)
    acts = [out.index(heading) for heading in demo.ORGANIZATION_HEADINGS]
    proof = out.index("proof from each account's simulated AWS state")
    assert positions[2] < acts[0] < acts[1] < acts[2] < proof
    report, fixing, final = out[acts[0] : acts[1]], out[acts[1] : acts[2]], out[acts[2] : proof]
    members = re.findall(r"^  (\d{12})  (?:payments|analytics) ", out, re.MULTILINE)
    assert len(set(members)) == 2 and MANAGEMENT not in members
    management = rf"account {MANAGEMENT} \(this account\): instances 1: 1 compliant, 0 fixed, 0 noncompliant"
    for section, member_counts, exit_code in (
        (report, "0 compliant, 0 fixed, 1 noncompliant", 1),
        (fixing, "0 compliant, 1 fixed, 0 noncompliant", 0),
        (final, "1 compliant, 0 fixed, 0 noncompliant", 0),
    ):
        assert re.search(management, section)
        for member in members:
            assert f"account {member}: instances 1: {member_counts}, 0 excluded, 0 errors · targets 1 ok" in section
        assert f"(eic-guard scan exit code {exit_code})" in section
    assert "instances 3: 1 compliant, 2 fixed, 0 noncompliant, 0 excluded, 0 errors" in fixing
    # ... proven in each member account, read with that account's own credentials
    for member in members:
        assert re.search(
            rf"read as arn:aws:sts::{member}:assumed-role/OrganizationAccountAccessRole/[\w-]+:\n"
            r"    i-\w+: metadata endpoint enabled; eic-guard-ssh sg-\w+ attached, tagged ManagedBy=eic-guard, "
            r"TCP 22 from 18\.206\.107\.24/29, 2600:1f18:6fe3:8c00::/56\n"
            rf"    arn:aws:iam::{member}:role/eic-guard-member last used \d{{4}}-",
            out,
        )
    assert re.search(rf"management {MANAGEMENT}: i-\w+ groups unchanged, no eic-guard-ssh group created", out)
    assert "organization OK: 2 member instances fixed through eic-guard-member, 3 accounts compliant" in out
    assert "UNEXPECTED" not in out
    # ... and the simulator is gone, the environment as it was
    assert len(RecordingMotoServer.started) == 1
    assert not port_is_open(RecordingMotoServer.started[0])
    assert "AWS_ENDPOINT_URL" not in os.environ
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"


@pytest.mark.e2e
def test_demo_without_ip_ranges_file_is_a_usage_error(monkeypatch, tmp_path, capsys):
    # Given
    monkeypatch.setenv(demo.IP_RANGES_ENV, str(tmp_path / "missing.json"))

    # When
    exit_code = demo.main()

    # Then
    assert exit_code == 2
    assert "cannot read ip-ranges file" in capsys.readouterr().err
    assert "AWS_ENDPOINT_URL" not in os.environ
