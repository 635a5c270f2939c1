"""End to end: `eic-guard demo` seeds a simulated account, scans, remediates, rescans and proves the result; then the
same for an AWS Organization of three accounts, each member fixed through its member role."""

from __future__ import annotations

import io
import json
import os
import re
import socket
from contextlib import redirect_stdout
from dataclasses import dataclass

import pytest
from eic_guard.cli import main as eic_guard
from eic_guard.demo import deployment, environment, organization, runner, scenarios

MANAGEMENT = "123456789012"  # moto's default account: the demo's own credentials act there
STOREFRONT = {"Owner": "alice@example.com", "Team": "storefront"}
DATA = {"Owner": "bob@example.com", "Team": "data-platform"}
DATABASES = {"Owner": "dba@example.com", "Team": "databases"}
ML = {"Owner": "carol@example.com", "Team": "ml"}
PLATFORM = {"Team": "platform"}
OPS = {"Owner": "ops@example.com"}


class RecordingMotoServer(environment.ThreadedMotoServer):
    """The real server, remembering the port it listened on so the test can check it is closed afterwards."""

    started: list[int] = []

    def start(self) -> None:
        super().start()
        RecordingMotoServer.started.append(self.get_host_and_port()[1])


def port_is_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class DemoRun:
    exit_code: int
    out: str
    final: dict  # the final scan's JSON report, written beside the HTML page


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> DemoRun:
    """One run of the whole demo (about 5 s) shared by the tests below, with the real moto server observed."""
    RecordingMotoServer.started = []
    html = tmp_path_factory.mktemp("demo") / "demo-report.html"
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(out):
        patch.setattr(environment, "ThreadedMotoServer", RecordingMotoServer)
        patch.setenv(environment.HTML_ENV, str(html))
        exit_code = eic_guard(["demo"])
    return DemoRun(exit_code, out.getvalue(), json.loads(html.with_suffix(".json").read_text(encoding="utf-8")))


ENDPOINT_PATH_NA = dict.fromkeys(("public-ipv4", "eic-ssh-ingress", "internet-route"), "not-applicable")
PRIVATE = {"Owner": "erin@example.com", "Team": "internal-tools"}
# What each scenario's final report entry must say: verdict, the checks that do not pass, the warnings' codes, the
# owner tags; and, for each failing check, a sentence its guidance must contain.
SCENARIOS = {
    "api-narrow-cidr": ("compliant", {}, [], STOREFRONT),
    "api-no-ssh-rule": ("compliant", {}, [], STOREFRONT),
    "api-ssh-2222": ("compliant", {}, [], STOREFRONT),
    "api-udp-22": ("compliant", {}, [], STOREFRONT),
    "batch-imds-off": ("compliant", {}, [], DATA),
    "batch-stopped": ("compliant", {"public-ipv4": "not-applicable"}, [], DATA),
    "batch-two-drifts": ("compliant", {}, [], DATA),
    "db-nacl-blocked": ("noncompliant", {"network-acl": "fail"}, [], DATABASES),
    "db-no-public-ip": ("noncompliant", {"public-ipv4": "fail"}, [], DATABASES),
    "db-private-subnet": ("noncompliant", {"public-ipv4": "fail", "internet-route": "fail"}, [], DATABASES),
    "golden-retired": ("noncompliant", {"al2023-ami": "fail"}, [], {}),
    "legacy-al2": ("noncompliant", {"al2023-ami": "fail"}, [], PLATFORM),
    "legacy-al2-no-ssh": ("noncompliant", {"al2023-ami": "fail"}, [], PLATFORM),
    "ml-ubuntu": ("noncompliant", {"al2023-ami": "fail"}, [], ML),
    "ops-expired-exclusion": ("compliant", {}, [], OPS),
    "slim-minimal": ("noncompliant", {"al2023-ami": "fail"}, [], ML),
    "stg-no-ssh-rule": ("compliant", {}, [], {"Team": "storefront"}),
    "stg-ok": ("compliant", {}, [], {"Team": "storefront"}),
    "stg-ssh-2222": ("compliant", {}, [], {"Team": "storefront"}),
    "vendor-excluded": ("excluded", {}, [], OPS),
    "web-ok": ("compliant", {}, [], STOREFRONT),
    "web-open-world": ("compliant", {}, ["ssh-open-to-internet"], STOREFRONT),
    # docs/architecture.md §13: the endpoint path (its public checks are not applicable; its own pass or are fixed)
    "priv-eice-ok": ("compliant", ENDPOINT_PATH_NA, [], PRIVATE),
    "priv-no-eice-rule": ("compliant", ENDPOINT_PATH_NA, [], PRIVATE),
    "priv-nacl-blocked": ("noncompliant", {**ENDPOINT_PATH_NA, "network-acl": "fail"}, [], PRIVATE),
    "priv-no-endpoint": ("compliant", ENDPOINT_PATH_NA, [], PRIVATE),
}
AL2_GUIDANCE = (
    "does not ship EC2 Instance Connect (Amazon Linux 2 2.0.20180810 predates 2.0.20190618): relaunch from AL2023 or "
    "install the ec2-instance-connect package"
)
UBUNTU_COPY_GUIDANCE = (
    "does not ship EC2 Instance Connect (not Canonical's image: owner 123456789012): relaunch from AL2023 or install "
    "the ec2-instance-connect package"
)
PUBLIC_IP_GUIDANCE = "for an instance meant to stay private, use an EC2 Instance Connect Endpoint instead"
GUIDANCE = {
    ("db-nacl-blocked", "network-acl"): r"add inbound rule 49 allowing TCP 22 from 18\.206\.107\.24/29 \(before deny "
    r"rule 50\)\. See https://docs\.aws\.amazon\.com/vpc/latest/userguide/nacl-rules\.html$",
    ("db-no-public-ip", "public-ipv4"): re.escape(PUBLIC_IP_GUIDANCE),
    ("db-private-subnet", "public-ipv4"): re.escape(PUBLIC_IP_GUIDANCE),
    (
        "db-private-subnet",
        "internet-route",
    ): r"^Add the route 0\.0\.0\.0/0 -> igw-\w+ to rtb-\w+ \(the VPC's main table",
    ("golden-retired", "al2023-ami"): r"^ami-\w+ is deregistered or unreadable",
    ("legacy-al2", "al2023-ami"): re.escape(AL2_GUIDANCE),
    ("legacy-al2-no-ssh", "al2023-ami"): re.escape(AL2_GUIDANCE),
    ("ml-ubuntu", "al2023-ami"): re.escape(UBUNTU_COPY_GUIDANCE),
    # the endpoint path's NACL is evaluated from the endpoint's address (in dev's public subnet)
    ("priv-nacl-blocked", "network-acl"): r"add inbound rule 49 allowing TCP 22 from 10\.2\.1\.\d+/32 \(before deny "
    r"rule 50\)\. See https://docs\.aws\.amazon\.com/vpc/latest/userguide/nacl-rules\.html$",
    ("slim-minimal", "al2023-ami"): re.escape(
        "install the ec2-instance-connect package or relaunch from standard AL2023"
    ),
}


@pytest.mark.e2e
def test_each_demo_scenario_is_named_owned_guided_and_warned_exactly(demo_run):
    # Given the final scan's report of the demo account
    report = demo_run.final
    by_name = {e["name"]: e for e in report["instances"]}

    # Then every opted-in scenario is there under its Name, with its owner tags, verdict, non-passing checks, warnings
    assert sorted(by_name) == sorted(SCENARIOS)
    for name, (verdict, not_passing, warnings, tags) in SCENARIOS.items():
        entry = by_name[name]
        statuses = {c: v["status"] for c, v in entry["checks"].items() if v["status"] != "pass"}
        assert (entry["verdict"], statuses, [w.split(":")[0] for w in entry["warnings"]], entry["tags"]) == (
            verdict,
            not_passing,
            warnings,
            tags,
        ), name
        # And exactly the checks that neither pass nor are not applicable carry guidance, with its documentation page
        for check_id, check in entry["checks"].items():
            if check["status"] in ("pass", "not-applicable"):
                assert check["guidance"] is None, (name, check_id)
            else:
                assert re.search(GUIDANCE[(name, check_id)], check["guidance"]), (name, check_id, check["guidance"])
                assert "https://docs.aws.amazon.com/" in check["guidance"]
    assert set(GUIDANCE) == {(n, c) for n, (_, bad, _, _) in SCENARIOS.items() for c, s in bad.items() if s == "fail"}
    # And the world-open group is named in the warning, the account by its alias, the warnings counted
    [warning] = by_name["web-open-world"]["warnings"]
    assert re.fullmatch(
        r"ssh-open-to-internet: sg-\w+ allows TCP 22 from 0\.0\.0\.0/0 \(the whole internet\); "
        r"EIC needs only 18\.206\.107\.24/29",
        warning,
    )
    assert report["account_aliases"] == {MANAGEMENT: scenarios.ACCOUNT_ALIAS}
    assert report["summary"] == {
        "instances": 26,
        "compliant": 16,
        "fixed": 0,
        "noncompliant": 9,
        "excluded": 1,
        "errors": 0,
        "warnings": 1,
        "connect_paths": {"public": 22, "endpoint": 4},
    }


@pytest.mark.e2e
def test_demo_alerts_only_what_is_new(demo_run):
    # Given the demo's output, cut at its headings
    out = demo_run.out
    first, fixing, final = (out.index(h) for h in runner.HEADINGS)
    night, cleanup = out.index(runner.NEXT_NIGHT_HEADING), out.index(runner.CLEANUP_HEADING)

    # Then the first scan alerts every problem, named by the account's alias
    assert f"  | eic-guard: 27 new problems in {scenarios.ACCOUNT_ALIAS} ({MANAGEMENT})" in out[first:fixing]
    assert re.search(
        r"  \| - i-\w+ \(web-open-world, Owner=alice@example\.com, Team=storefront\) in "
        r"demo-shop \(123456789012\) us-east-1: warning: ssh-open-to-internet: ",
        out[first:fixing],
    )
    # And the remediate and final scans, with nothing new, alert nothing
    for section in (out[fixing:final], out[final:night]):
        assert "alert: none (nothing new or changed since the previous scan)" in section
        assert "new problems" not in section
    # And the next night's deleted route alerts exactly the three staging instances, then nothing the same night
    next_night = out[night:cleanup]
    assert f"  | eic-guard: 3 new problems in {scenarios.ACCOUNT_ALIAS} ({MANAGEMENT})" in next_night
    assert sorted(re.findall(r"  \| - i-\w+ \((stg-[\w-]+), Team=storefront\)", next_night)) == [
        "stg-no-ssh-rule",
        "stg-ok",
        "stg-ssh-2222",
    ]
    assert "  | And 11 persisting problems, listed in the weekly digest and the report." in next_night
    again = next_night[next_night.index("the same night again:") :]
    assert "  alert: none (nothing new or changed since the previous scan)" in again


@pytest.mark.e2e
def test_demo_runs_the_final_scan_as_ci_and_fails_it_on_ssh_open_to_the_internet(demo_run):
    # Given the demo's transcript, between the final scan and the next night
    out = demo_run.out
    section = out[out.index(runner.CI_HEADING) : out.index(runner.NEXT_NIGHT_HEADING)]

    # Then the CI scan wrote SARIF and --fail-on warning failed it on web-open-world alone
    assert "eic-guard scan --region us-east-1 --ip-ranges ip-ranges-2026-08-22.json --fail-on warning" in section
    assert re.search(
        r"exit code 1; SARIF 2\.1\.0: 9 rules, \d+ failing \(instance, check\) results, 1 warning: "
        r"web-open-world \(eic-ssh-ingress\)",
        section,
    )


@pytest.mark.e2e
def test_demo_cleanup_dry_run_plans_the_uninstall_and_changes_nothing(demo_run):
    # Given the cleanup section of the demo
    out = demo_run.out
    section = out[out.index(runner.CLEANUP_HEADING) : out.index(organization.ORGANIZATION_HEADINGS[0])]

    # Then it plans detaching eic-guard-ssh from the 10 interfaces it was attached to and deleting the two groups, and
    # on the endpoint path (docs/architecture.md §13) deleting the endpoint eic-guard created in lab (not the network
    # team's in dev), unlinking and deleting eic-guard-eice-ssh (dev, lab) and eic-guard-eice (lab)
    assert len(re.findall(r"detach-group\s+eni-\w+\s+planned\s+remove sg-\w+, keep sg-", section)) == 12
    assert len(re.findall(r"delete-group\s+sg-\w+\s+planned\s+delete eic-guard-ssh in vpc-", section)) == 2
    assert (
        len(re.findall(r"delete-endpoint\s+eice-\w+\s+planned\s+delete the EC2 Instance Connect Endpoint", section))
        == 1
    )
    assert len(re.findall(r"delete-group\s+sg-\w+\s+planned\s+delete eic-guard-eice-ssh in vpc-", section)) == 2
    assert re.search(r"delete-group\s+sg-\w+\s+planned\s+delete eic-guard-eice in vpc-\w+ once its endpoint", section)
    assert "dry run: nothing changed; 21 actions: 21 planned" in section
    assert "(eic-guard cleanup exit code 0)" in section


@pytest.mark.e2e
def test_demo_fixes_what_it_can_and_reports_the_rest(demo_run):
    exit_code, out = demo_run.exit_code, demo_run.out

    # Then: the demo checked itself and passed
    assert exit_code == 0, out[-3000:]
    assert "demo OK" in out
    positions = [out.index(heading) for heading in runner.HEADINGS]
    assert positions == sorted(positions)
    final = out[positions[2] : out.index("proof from the simulated AWS state")]
    # ... the final scan left nothing fixable, only what cannot be fixed automatically
    assert re.search(r"instances 26: 16 compliant, 0 fixed, 9 noncompliant, 1 excluded, 0 errors", final)
    assert "connect paths: 22 public, 4 endpoint" in final
    assert "would-fix" not in final
    assert "0 would-fix left" in out
    assert re.search(r"network-acl\s+│ FAIL\s+│ acl-\w+ inbound: rule 50 denies 18\.206\.107\.24/29 port 22", final)
    assert re.search(r"al2023-ami\s+│ FAIL\s+│ ami-unknown", final)
    assert re.search(r"internet-route\s+│ FAIL\s+│ rtb-\w+ \(main\) has no 0\.0\.0\.0/0 route", final)
    assert "is AL2023 minimal" in final and "(ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-" in final
    assert re.search(
        r"passes with a warning: i-\w+ \(web-open-world\): ssh-open-to-internet: sg-\w+ allows TCP 22 from "
        r"0\.0\.0\.0/0",
        out,
    )
    # ... the remediate scan fixed both kinds of fixable drift
    remediate = out[positions[1] : positions[2]]
    assert "instances 26: 4 compliant, 12 fixed, 9 noncompliant, 1 excluded, 0 errors" in remediate
    # ... one private instance went from would-fix to fixed to pass, and the command that connects to it is printed
    assert re.search(
        r"private path: i-\w+ \(priv-no-eice-rule\) endpoint-ssh-ingress would-fix \(noncompliant\) -> fixed "
        r"\(fixed\) -> pass \(compliant\)\n  connect: aws ec2-instance-connect ssh --instance-id i-\w+ --region "
        r"us-east-1 --connection-type eice\n",
        out,
    )
    assert re.search(r"imds-enabled\s+│ fixed", remediate)
    # ... then the organization act: report (exit 1), remediate through the member role (exit 0), final (exit 0)
    acts = [out.index(heading) for heading in organization.ORGANIZATION_HEADINGS]
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
def test_demo_verifies_a_simulated_deployment_healthy_then_broken(demo_run):
    # Given the demo's last acts: the stack deployed (simulated) in the organization, verified twice
    healthy_at, broken_at = (demo_run.out.index(h) for h in deployment.VERIFY_HEADINGS)
    healthy, broken = demo_run.out[healthy_at:broken_at], demo_run.out[broken_at:]
    payments = re.search(r"^  (\d{12})  payments ", demo_run.out, re.MULTILINE).group(1)

    # Then the healthy deployment is all good: every call of the three targets allowed but the two writes that need
    # a managed group the management account does not have
    assert "(eic-guard verify exit code 0)" in healthy
    assert " ".join(healthy.split()).count("3 of 3 targets answered; probes: 51 allowed, 3 untested") == 1
    # (one more skip than before the endpoint path: ec2:AuthorizeSecurityGroupEgress, untested where the management
    # account has no eic-guard group yet, like the ingress edits)
    assert "all good: 9 ok, 0 failing, 1 warnings, 4 skipped" in healthy
    # And the broken one fails on exactly the two things broken, each named with what to do
    assert "(eic-guard verify exit code 1)" in broken
    failing = re.findall(r"^FAIL  (\S+)\s+(\S+(?: \S+)*)\s{2,}", broken, re.MULTILINE)
    assert failing == [
        ("alerts-subscription", "eic-guard-AlertsTopic"),
        ("alerts-subscription", "email:security@example.com"),
        ("permission", "member role ec2:ModifyInstanceMetadataOptions"),
    ]
    words = " ".join(broken.split())
    assert f"denied in 1 target: {payments}/us-east-1: UnauthorizedOperation" in words
    assert "→ open the confirmation message SNS sent to security@example.com and confirm" in words
    assert "UNEXPECTED" not in demo_run.out


def test_demo_without_ip_ranges_file_is_a_usage_error(monkeypatch, tmp_path, capsys):
    # Given
    monkeypatch.setenv(environment.IP_RANGES_ENV, str(tmp_path / "missing.json"))

    # When
    exit_code = eic_guard(["demo"])

    # Then
    assert exit_code == 2
    assert "cannot read ip-ranges file" in capsys.readouterr().err
    assert "AWS_ENDPOINT_URL" not in os.environ
