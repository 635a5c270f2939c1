"""`eic-guard demo`: the whole product end to end against a local simulated AWS (moto), no account needed.

It seeds an account with every kind of drift eic-guard knows, runs the real CLI three times in-process (report,
remediate, report) and then proves from the simulated AWS state that it fixed what it may fix and touched nothing
else. A last act does the same for an AWS Organization (docs/architecture.md §9): the management account and two member
accounts on the same simulated AWS, each member entered through its eic-guard-member role, the proof read with each
member's own credentials. moto is a development dependency, so this module is imported only by `eic-guard demo`.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

from .. import cli
from ..errors import IpRangesError
from ..models import EicPrefixes
from ..outputs.report import Report
from ..outputs.table import render
from ..ranges import ip_ranges
from ..ranges.managed_group import rule_description
from ..settings import ENV_PREFIX, EXCLUDE_TAG, EXCLUDE_UNTIL_TAG, MANAGED_BY_TAG, MANAGED_GROUP_NAME
from ..simulated import (
    Network,
    SimulatedAccount,
    SimulatedOrganization,
    create_member_role,
    create_organization,
    member_session,
    ssh_from,
)

REGION = "us-east-1"
IP_RANGES_ENV = "EIC_GUARD_DEMO_IP_RANGES"
DEFAULT_IP_RANGES = Path(__file__).resolve().parents[4] / "tests/fixtures/ip-ranges/ip-ranges-2026-08-22.json"
HTML_ENV = "EIC_GUARD_DEMO_HTML"
DEFAULT_HTML = Path(".eic-guard/demo-report.html")
HEADINGS = (
    "1. report-only scan: what is wrong",
    "2. remediate: what eic-guard fixes",
    "3. final scan: what is left and why it cannot be fixed automatically",
)
NEXT_NIGHT_HEADING = "4. the next night: a route is deleted in staging; the alert names only what is new"
CLEANUP_HEADING = "5. eic-guard cleanup --dry-run: what uninstalling would remove (nothing is changed)"
ORGANIZATION_HEADINGS = (
    "6. eic-guard scan --organization: report-only, every account of the organization",
    "7. eic-guard scan --organization --remediate: each member fixed through its eic-guard-member role",
    "8. eic-guard scan --organization: the final scan",
)
# Who to ask about each instance (the OwnerTags parameter's default tags), by the first word of its Name.
OWNERS = {
    "web": {"Owner": "alice@example.com", "Team": "storefront"},
    "api": {"Owner": "alice@example.com", "Team": "storefront"},
    "stg": {"Team": "storefront"},
    "batch": {"Owner": "bob@example.com", "Team": "data-platform"},
    "db": {"Owner": "dba@example.com", "Team": "databases"},
    "slim": {"Owner": "carol@example.com", "Team": "ml"},
    "ml": {"Owner": "carol@example.com", "Team": "ml"},
    "ops": {"Owner": "ops@example.com"},
    "vendor": {"Owner": "ops@example.com"},
    "legacy": {"Team": "platform"},
}
WORLD_OPEN = "ssh-open-to-internet"  # the warning code of TCP 22 open to the whole internet
MEMBER_ROLE = "eic-guard-member"  # the role the member StackSet (member/template.yaml) deploys in every account
MEMBERS = ("payments", "analytics")  # the member accounts' names; each runs one drifted instance
ACCOUNT_ALIAS = "demo-shop"  # the demo account's IAM alias: reports and alerts name the account by it
UBUNTU_NAME = "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240927"
RETIRED_NAME = "golden-al2023-2024-01 (deregistered)"


@dataclass(frozen=True)
class Scenario:
    """One demo instance: where it runs, the drift it carries and the verdict the final scan must give it."""

    name: str
    drift: str
    final: str  # the verdict expected from the final scan ("" for instances that are not opted in)
    image: str = "al2023"
    vpc: str = "prod"
    subnet: str = "public"
    groups: tuple[str, ...] = ("eic-ssh",)
    public_ip: bool | None = None
    imds: str = "enabled"
    tags: tuple[tuple[str, str], ...] = ()
    stopped: bool = False

    @property
    def opted_in(self) -> bool:
        return bool(self.final)

    @property
    def owners(self) -> dict[str, str]:
        """The owner tags it carries (none for the untagged ones and the golden image's orphan)."""
        return dict(OWNERS.get(self.name.split("-")[0], {})) if self.opted_in else {}


SCENARIOS = (
    Scenario("web-ok", "compliant: SG allows TCP 22 from the EIC range", "compliant"),
    Scenario(
        "web-open-world",
        "SSH open to 0.0.0.0/0: passes, reported as over-permissive",
        "compliant",
        groups=("open-ssh",),
    ),
    Scenario("api-no-ssh-rule", "no SSH rule at all: managed group gets attached", "compliant", groups=("app",)),
    Scenario("api-ssh-2222", "SSH only on port 2222", "compliant", groups=("ssh-2222",)),
    Scenario("api-udp-22", "UDP 22 instead of TCP 22", "compliant", groups=("udp-22",)),
    Scenario("api-narrow-cidr", "TCP 22 from half of the EIC range only", "compliant", groups=("narrow-ssh",)),
    Scenario("batch-imds-off", "IMDS disabled, HttpTokens=required", "compliant", imds="disabled"),
    Scenario("batch-two-drifts", "no SSH rule and IMDS disabled", "compliant", groups=("app", "web"), imds="disabled"),
    Scenario(
        "batch-stopped",
        "stopped, no SSH rule: fixed before it starts",
        "compliant",
        groups=("app",),
        public_ip=True,
        stopped=True,
    ),
    Scenario(
        "ops-expired-exclusion",
        "exclusion ended 2020-01-01, no SSH rule: scanned and fixed",
        "compliant",
        groups=("app",),
        tags=((EXCLUDE_TAG, "migration window"), (EXCLUDE_UNTIL_TAG, "2020-01-01")),
    ),
    Scenario(
        "vendor-excluded",
        "excluded (vendor appliance), no SSH rule: never touched",
        "excluded",
        groups=("app",),
        tags=((EXCLUDE_TAG, "vendor appliance, SSH managed by the vendor"),),
    ),
    Scenario("db-no-public-ip", "launched without a public IPv4 address", "noncompliant", public_ip=False),
    Scenario("db-private-subnet", "private subnet: no route to the internet gateway", "noncompliant", subnet="private"),
    Scenario("db-nacl-blocked", "subnet NACL denies TCP 22 (rule 50)", "noncompliant", subnet="locked"),
    Scenario("legacy-al2", "Amazon Linux 2 AMI", "noncompliant", image="al2"),
    Scenario(
        "legacy-al2-no-ssh",
        "Amazon Linux 2 AMI and no SSH rule: SSH fixed, AMI reported",
        "noncompliant",
        image="al2",
        groups=("app",),
    ),
    Scenario("slim-minimal", "AL2023 minimal AMI (no EIC agent)", "noncompliant", image="minimal"),
    Scenario("ml-ubuntu", "Ubuntu 22.04 AMI from this account", "noncompliant", image="ubuntu"),
    Scenario("golden-retired", "launched from an AMI since deregistered", "noncompliant", image="retired"),
    Scenario("stg-ok", "staging VPC: compliant", "compliant", vpc="staging"),
    Scenario(
        "stg-no-ssh-rule",
        "staging VPC: no SSH rule (second managed group)",
        "compliant",
        vpc="staging",
        groups=("app",),
    ),
    Scenario("stg-ssh-2222", "staging VPC: SSH only on port 2222", "compliant", vpc="staging", groups=("ssh-2222",)),
    Scenario("untagged-bastion", "not opted in: ignored and untouched", "", groups=("app",)),
    Scenario(
        "untagged-legacy", "not opted in: ignored and untouched", "", image="al2", groups=("udp-22",), imds="disabled"
    ),
    Scenario("untagged-staging", "not opted in: ignored and untouched", "", vpc="staging", groups=("ssh-2222",)),
)


@dataclass
class DemoFleet:
    """What the seeding created: instance ids by scenario, VPCs, and ENI groups that must never change."""

    instances: dict[str, Scenario] = field(default_factory=dict)
    vpcs: dict[str, str] = field(default_factory=dict)
    route_tables: dict[str, str] = field(default_factory=dict)  # each VPC's public route table
    untouched_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    imds_fixed: list[str] = field(default_factory=list)

    def name(self, instance_id: str) -> str:
        scenario = self.instances.get(instance_id)
        return scenario.name if scenario else "not created by the demo"


# ---- the simulated AWS -----------------------------------------------------------------------------------------
@contextmanager
def patched_environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, unset) environment variables for the duration, then restore them exactly."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            _set_env(name, value)
        yield
    finally:
        for name, value in saved.items():
            _set_env(name, value)


def _set_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Keep request logs (werkzeug prints one line per API call) out of the demo's output."""
    saved = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def demo_environment(endpoint: str) -> dict[str, str | None]:
    """Point boto3 at the local server with fake credentials; drop anything that could reach a real account."""
    values: dict[str, str | None] = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_PROFILE": None,
        "AWS_SESSION_TOKEN": None,
        "AWS_SECURITY_TOKEN": None,
        "NO_PROXY": ",".join(filter(None, ("127.0.0.1,localhost", os.environ.get("NO_PROXY")))),
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    # The user's EIC_GUARD_* settings (tag, ingress source...) would change what the demo must show.
    values.update({name: None for name in os.environ if name.startswith(ENV_PREFIX) and name != IP_RANGES_ENV})
    return values


@contextmanager
def simulated_aws() -> Iterator[str]:
    """A fresh moto server on 127.0.0.1 with boto3 pointed at it; always stopped and the environment restored."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    with quiet_loggers("werkzeug"):
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            with patched_environ(demo_environment(endpoint)):
                _reset(endpoint)  # moto's backends live in this process: start from an empty account
                yield endpoint
                _reset(endpoint)
        finally:
            server.stop()


def _reset(endpoint: str) -> None:
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


# ---- seeding ---------------------------------------------------------------------------------------------------
def security_group_rules(eic: EicPrefixes) -> dict[str, list[dict]]:
    """The application groups the scenarios refer to, by name ("app" is the network's own, rule-less group)."""
    prefixes = [str(p) for p in eic.ipv4]
    half = str(next(eic.ipv4[0].subnets(prefixlen_diff=1)))
    return {
        "eic-ssh": [ssh_from(*prefixes)],
        "open-ssh": [ssh_from("0.0.0.0/0")],
        "ssh-2222": [ssh_from(*prefixes, port_from=2222, port_to=2222)],
        "udp-22": [ssh_from(*prefixes, protocol="udp")],
        "narrow-ssh": [ssh_from(half)],
        "web": [ssh_from("0.0.0.0/0", port_from=443, port_to=443)],
    }


def demo_images(account: SimulatedAccount) -> dict[str, str]:
    """Real Amazon AMIs from moto's public data, plus two images of this account (one to be deregistered)."""
    return {
        "al2023": account.al2023_ami(),
        "al2": account.amazon_image("amzn2-ami-hvm-*"),
        "minimal": account.amazon_image("al2023-ami-minimal-2023*-x86_64"),
        "ubuntu": account.own_image(UBUNTU_NAME, "Canonical, Ubuntu, 22.04 LTS (copied into this account)"),
        "retired": account.own_image(RETIRED_NAME, "a golden image built from AL2023, deregistered since"),
    }


def locked_subnet(account: SimulatedAccount, network: Network, cidr: str) -> str:
    """A third, public subnet whose NACL denies TCP 22: every other prerequisite holds there."""
    ec2 = account.ec2
    tags = [{"ResourceType": "subnet", "Tags": [{"Key": "Name", "Value": "prod-locked"}]}]
    subnet = ec2.create_subnet(VpcId=network.vpc_id, CidrBlock=cidr, TagSpecifications=tags)["Subnet"]["SubnetId"]
    ec2.modify_subnet_attribute(SubnetId=subnet, MapPublicIpOnLaunch={"Value": True})
    ec2.associate_route_table(RouteTableId=network.public_route_table_id, SubnetId=subnet)
    account.block_ssh_in_nacl(network.vpc_id, subnet)
    return subnet


@dataclass(frozen=True)
class DemoNetwork:
    """A VPC of the demo with its subnets and security groups by the names scenarios use."""

    vpc_id: str
    subnets: dict[str, str]
    groups: dict[str, str]
    public_route_table_id: str


def demo_networks(account: SimulatedAccount, eic: EicPrefixes) -> dict[str, DemoNetwork]:
    """Two VPCs ("prod" with public, private and NACL-locked subnets; "staging"), each with the demo's groups."""
    networks = {"prod": account.network("10.0.0.0/16", "prod"), "staging": account.network("10.1.0.0/16", "staging")}
    result = {}
    for label, network in networks.items():
        subnets = {"public": network.public_subnet_id, "private": network.private_subnet_id}
        if label == "prod":
            subnets["locked"] = locked_subnet(account, network, "10.0.3.0/24")
        groups = {"app": network.app_group_id}
        for name, rules in security_group_rules(eic).items():
            groups[name] = account.security_group(network, f"{label}-{name}", rules)
        result[label] = DemoNetwork(network.vpc_id, subnets, groups, network.public_route_table_id)
    return result


def seed(account: SimulatedAccount, eic: EicPrefixes) -> DemoFleet:
    """Create the demo account: images, networks, every scenario's instance; then stop and deregister."""
    images = demo_images(account)
    networks = demo_networks(account, eic)
    fleet = DemoFleet(
        vpcs={label: network.vpc_id for label, network in networks.items()},
        route_tables={label: network.public_route_table_id for label, network in networks.items()},
    )
    for scenario in SCENARIOS:
        fleet.instances[launch(account, scenario, networks[scenario.vpc], images)] = scenario
    stopped = [i for i, s in fleet.instances.items() if s.stopped]
    account.ec2.stop_instances(InstanceIds=stopped)
    account.ec2.deregister_image(ImageId=images["retired"])
    never_touched = [i for i, s in fleet.instances.items() if s.final in ("", "excluded")]
    fleet.untouched_groups = interface_groups(account.ec2, never_touched)
    fleet.imds_fixed = [i for i, s in fleet.instances.items() if s.opted_in and s.imds == "disabled"]
    return fleet


def launch(account: SimulatedAccount, scenario: Scenario, network: DemoNetwork, images: dict[str, str]) -> str:
    """Launch one scenario's instance, named after it."""
    (instance_id,) = account.launch(
        image_id=images[scenario.image],
        subnet_id=network.subnets[scenario.subnet],
        group_ids=[network.groups[g] for g in scenario.groups],
        tags={**scenario.owners, **dict(scenario.tags)},
        public_ip=scenario.public_ip,
        imds=scenario.imds,
        opted_in=scenario.opted_in,
        name=scenario.name,
    )
    return instance_id


def interface_groups(ec2, instance_ids: list[str]) -> dict[str, tuple[str, ...]]:
    """Each instance's security groups, read from its ENIs (moto does not update the instance-level list)."""
    found = {}
    for reservation in ec2.describe_instances(InstanceIds=instance_ids)["Reservations"]:
        for instance in reservation["Instances"]:
            found[instance["InstanceId"]] = tuple(
                sorted(g["GroupId"] for eni in instance["NetworkInterfaces"] for g in eni["Groups"])
            )
    return found


# ---- the three scans -------------------------------------------------------------------------------------------
def run_cli_scan(
    ranges_path: Path, output: Path, remediate: bool, html: Path | None = None, extra: tuple[str, ...] = ()
) -> tuple[int, Report]:
    """`eic-guard scan` through the real CLI, in-process; the JSON report is kept to verify and shown as a table
    (with the CLI's line per account when it covers several), then the alert the scan printed on stderr: only what
    is new since the previous scan (the demo's own state file, beside its reports, never the user's)."""
    state_file = output.parent / "state.json"
    argv = ["scan", "--region", REGION, "--ip-ranges", str(ranges_path), "--format", "json", "--output", str(output)]
    argv += ["--state-file", str(state_file)]
    if html is not None:
        argv += ["--html", str(html)]
    argv += extra
    alert = io.StringIO()
    with redirect_stderr(alert):
        exit_code = cli.main([*argv, "--remediate"] if remediate else argv)
    if not output.exists():
        raise RuntimeError(f"eic-guard scan exited {exit_code} without writing a report")
    report = Report.model_validate_json(output.read_text(encoding="utf-8"))
    render(report, sys.stdout, width=DEMO_WIDTH)
    for line in cli.account_lines(report):
        print(line)
    print(f"(eic-guard scan exit code {exit_code})")
    print_alert(alert.getvalue())
    return exit_code, report


DEMO_WIDTH = 160  # the demo's tables, whatever the terminal (a transcript reads the same everywhere)
ALERT_LINES_SHOWN = 12


def print_alert(text: str) -> None:
    """The alert as the CLI printed it on stderr (deployed, the same text goes to the SNS topic), cut short."""
    lines = text.strip().splitlines()
    if not lines:
        print("alert: none (nothing new or changed since the previous scan)")
        return
    print("alert (the CLI prints it on stderr; deployed, the same text goes to the alerts topic):")
    for line in lines[:ALERT_LINES_SHOWN]:
        print(f"  | {line}")
    if len(lines) > ALERT_LINES_SHOWN:
        print(f"  | ... ({len(lines) - ALERT_LINES_SHOWN} more lines)")


def print_legend(fleet: DemoFleet) -> None:
    print("\nThe simulated account, in the report's order (instance id, VPC, Name, drift):")
    for instance_id, scenario in sorted(fleet.instances.items()):
        print(f"  {instance_id}  {scenario.vpc:<7} {scenario.name:<22} {scenario.drift}")
    print(
        "Owner and Team tags (the OwnerTags parameter's default) name who to ask, and the account's IAM alias "
        f"({ACCOUNT_ALIAS}) names the account: every output shows them."
    )


def heading(text: str) -> None:
    print(f"\n{'=' * 100}\n{text}\n{'=' * 100}")


# ---- proof -----------------------------------------------------------------------------------------------------
def statuses(report: Report, wanted: str) -> set[tuple[str, str]]:
    """(instance, check) pairs with the given status."""
    return {(e.instance_id, c) for e in report.instances for c, r in e.checks.items() if r.status == wanted}


def over_permissive(report: Report) -> list[tuple[str, str]]:
    """Instances whose SSH check passes with a warning: TCP 22 open to the whole internet (reported in amber, never
    narrowed: the rule is not eic-guard's)."""
    found = []
    for entry in report.instances:
        check = entry.checks.get("eic-ssh-ingress")
        world_open = [w for w in entry.warnings if w.startswith(f"{WORLD_OPEN}:")]
        if check and check.status == "pass" and world_open:
            found.append((entry.instance_id, world_open[0]))
    return found


def report_problems(fleet: DemoFleet, reports: list[tuple[int, Report]]) -> list[str]:
    """What the three reports show that the demo did not expect."""
    (_, first), (_, fixing), (last_code, last) = reports
    problems = []
    if statuses(first, "would-fix") != statuses(fixing, "fixed"):
        problems.append("remediate did not fix exactly what the report-only scan planned")
    leftovers = statuses(last, "would-fix") | statuses(last, "fixed") | statuses(last, "error")
    if leftovers:
        problems.append(f"the final scan still has fixable or erroring checks: {sorted(leftovers)}")
    verdicts = {e.instance_id: e.verdict for e in last.instances}
    expected = {i: s.final for i, s in fleet.instances.items() if s.opted_in}
    for instance_id in sorted(expected.keys() | verdicts.keys()):
        if verdicts.get(instance_id) != expected.get(instance_id):
            problems.append(
                f"{instance_id} ({fleet.name(instance_id)}): final verdict {verdicts.get(instance_id)}, "
                f"expected {expected.get(instance_id) or 'absent'}"
            )
    wide_open = {i for i, s in fleet.instances.items() if s.opted_in and "open-ssh" in s.groups}
    if {i for i, _ in over_permissive(last)} != wide_open:
        problems.append("the SSH rule open to 0.0.0.0/0 is not reported as a warning")
    if last.summary.warnings != len(wide_open):
        problems.append(f"summary.warnings is {last.summary.warnings}, expected {len(wide_open)}")
    problems += identity_problems(fleet, last)
    if last.account_aliases != {last.account_id: ACCOUNT_ALIAS}:
        problems.append(f"the report names the account {last.account_aliases}, expected {ACCOUNT_ALIAS}")
    if last_code != (1 if "noncompliant" in expected.values() else 0):
        problems.append(f"the final scan exited {last_code}")
    return problems


def identity_problems(fleet: DemoFleet, report: Report) -> list[str]:
    """Every instance named by its Name and owner tags; every check that does not pass says what to do."""
    problems = []
    for entry in report.instances:
        scenario = fleet.instances.get(entry.instance_id)
        if scenario is None or (entry.name, entry.tags) != (scenario.name, scenario.owners):
            problems.append(f"{entry.instance_id}: name {entry.name!r} and tags {entry.tags} are not the demo's")
        for check_id, check in entry.checks.items():
            needs = check.status not in ("pass", "not-applicable")
            documented = "https://docs.aws.amazon.com/" in (check.guidance or "")
            if needs != bool(check.guidance) or (needs and not documented):
                problems.append(f"{entry.instance_id} {check_id} {check.status}: guidance {check.guidance!r}")
    return problems


def managed_group_problems(ec2, fleet: DemoFleet, eic: EicPrefixes) -> list[str]:
    """One eic-guard-ssh group per VPC, tagged ManagedBy=eic-guard, holding TCP 22 from every EIC prefix."""
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [MANAGED_GROUP_NAME]}])
    by_vpc = {g["VpcId"]: g for g in groups["SecurityGroups"]}
    problems = []
    wanted = {str(p) for p in eic.all}
    for label, vpc_id in fleet.vpcs.items():
        group = by_vpc.get(vpc_id)
        if group is None:
            problems.append(f"no {MANAGED_GROUP_NAME} group in {label} ({vpc_id})")
            continue
        tags = {t["Key"]: t["Value"] for t in group.get("Tags", ())}
        if tags.get(MANAGED_BY_TAG[0]) != MANAGED_BY_TAG[1]:
            problems.append(f"{group['GroupId']} lacks the tag {'='.join(MANAGED_BY_TAG)}")
        missing = wanted - eic_guard_sources(group)
        if missing:
            problems.append(f"{group['GroupId']} lacks TCP 22 from {', '.join(sorted(missing))}")
    return problems


def eic_guard_sources(group: dict) -> set[str]:
    """The TCP 22 sources of a group that carry eic-guard's rule description."""
    description = rule_description(REGION)
    sources = set()
    for permission in group.get("IpPermissions", ()):
        if permission.get("IpProtocol") != "tcp" or permission.get("FromPort") != 22 or permission.get("ToPort") != 22:
            continue
        ranges = [(r["CidrIp"], r.get("Description")) for r in permission.get("IpRanges", ())]
        ranges += [(r["CidrIpv6"], r.get("Description")) for r in permission.get("Ipv6Ranges", ())]
        sources.update(cidr for cidr, desc in ranges if desc == description)
    return sources


def state_problems(ec2, fleet: DemoFleet, eic: EicPrefixes) -> list[str]:
    """What the simulated AWS state shows that the demo did not expect."""
    problems = managed_group_problems(ec2, fleet, eic)
    now = interface_groups(ec2, list(fleet.untouched_groups))
    for instance_id, before in fleet.untouched_groups.items():
        if now.get(instance_id) != before:
            problems.append(
                f"{instance_id} ({fleet.name(instance_id)}) groups changed: {before} -> {now.get(instance_id)}"
            )
    for reservation in ec2.describe_instances(InstanceIds=fleet.imds_fixed)["Reservations"]:
        for instance in reservation["Instances"]:
            if instance["MetadataOptions"].get("HttpEndpoint") != "enabled":
                problems.append(f"{instance['InstanceId']} metadata endpoint is still disabled")
    return problems


def print_proof(fleet: DemoFleet, last: Report, problems: list[str]) -> None:
    heading("proof from the simulated AWS state")
    untagged = sum(1 for s in fleet.instances.values() if not s.opted_in)
    print(f"  untagged instances ignored and their groups unchanged: {untagged}; excluded instance untouched")
    print(
        f"  {MANAGED_GROUP_NAME} groups tagged {'='.join(MANAGED_BY_TAG)} with the EIC rules: one in each of "
        f"{', '.join(f'{k} ({v})' for k, v in fleet.vpcs.items())}"
    )
    print(f"  metadata endpoint enabled on {', '.join(fleet.name(i) for i in fleet.imds_fixed)}")
    s = last.summary
    print(
        f"  final summary: instances {s.instances}: {s.compliant} compliant, {s.fixed} fixed, "
        f"{s.noncompliant} noncompliant, {s.excluded} excluded, {s.errors} errors; "
        f"{len(statuses(last, 'would-fix'))} would-fix left"
    )
    for instance_id, warning in over_permissive(last):
        print(f"  passes with a warning: {instance_id} ({fleet.name(instance_id)}): {warning}")
    for problem in problems:
        print(f"  UNEXPECTED: {problem}")
    print(
        "demo OK: eic-guard fixed every fixable drift and left the rest reported"
        if not problems
        else f"demo FAILED: {len(problems)} unexpected result(s)"
    )


# ---- the next night, and the uninstall plan ----------------------------------------------------------------------
STAGING_NEW = ("stg-ok", "stg-no-ssh-rule", "stg-ssh-2222")  # what the deleted route breaks


def next_night(ec2, fleet: DemoFleet, ranges_path: Path, workdir: str) -> list[str]:
    """Someone deletes staging's default route; the next remediate scan alerts on those instances only (the rest
    persist and were alerted already), then one more scan alerts nothing."""
    heading(NEXT_NIGHT_HEADING)
    print(f"  ec2 delete-route --route-table-id {fleet.route_tables['staging']} --destination-cidr-block 0.0.0.0/0")
    ec2.delete_route(RouteTableId=fleet.route_tables["staging"], DestinationCidrBlock="0.0.0.0/0")
    alerted = io.StringIO()
    with redirect_stdout_and_capture(alerted):
        _, report = run_cli_scan(ranges_path, Path(workdir, "night-2.json"), remediate=True)
    text = alerted.getvalue()
    print(text[text.index("alert") :] if "alert" in text else text, end="")
    problems = []
    newly = {e.name for e in report.instances if e.verdict == "noncompliant"} - noncompliant_before(fleet)
    if newly != set(STAGING_NEW):
        problems.append(f"the deleted route made {sorted(newly)} noncompliant, expected {sorted(STAGING_NEW)}")
    lines = [line for line in text.splitlines() if line.startswith("  | - ")]
    if sorted(n for n in STAGING_NEW if any(f"({n}" in line or f" {n} " in line for line in lines)) != sorted(
        STAGING_NEW
    ) or len(lines) != len(STAGING_NEW):
        problems.append(f"the next night's alert does not list exactly the staging instances: {lines}")
    print("the same night again:")
    again = io.StringIO()
    with redirect_stdout_and_capture(again):
        run_cli_scan(ranges_path, Path(workdir, "night-2-again.json"), remediate=True)
    quiet = again.getvalue().rstrip().splitlines()[-1]
    print(f"  {quiet}")
    if not quiet.startswith("alert: none"):
        problems.append(f"a scan with nothing new still alerted: {quiet}")
    return problems


@contextmanager
def redirect_stdout_and_capture(buffer: io.StringIO) -> Iterator[None]:
    saved, sys.stdout = sys.stdout, buffer
    try:
        yield
    finally:
        sys.stdout = saved


def noncompliant_before(fleet: DemoFleet) -> set[str]:
    return {s.name for s in fleet.instances.values() if s.final == "noncompliant"}


def cleanup_dry_run(ec2, fleet: DemoFleet) -> list[str]:
    """`eic-guard cleanup --dry-run`: the plan an uninstall would carry out, and proof that nothing changed."""
    heading(CLEANUP_HEADING)
    before = interface_groups(ec2, list(fleet.instances))
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [MANAGED_GROUP_NAME]}])
    exit_code = cli.main(["cleanup", "--dry-run", "--region", REGION])
    print(f"(eic-guard cleanup exit code {exit_code})")
    after = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [MANAGED_GROUP_NAME]}])
    problems = []
    if interface_groups(ec2, list(fleet.instances)) != before or len(after["SecurityGroups"]) != len(
        groups["SecurityGroups"]
    ):
        problems.append("cleanup --dry-run changed the simulated account")
    if exit_code != 0:
        problems.append(f"cleanup --dry-run exited {exit_code}")
    return problems


# ---- the organization act ---------------------------------------------------------------------------------------
@dataclass
class OrganizationFleet:
    """The simulated organization: its accounts by name, one instance each (the management's compliant, each
    member's drifted), and what the proof compares against."""

    organization: SimulatedOrganization
    session: boto3.Session  # the caller's, in the management account
    accounts: dict[str, str] = field(default_factory=dict)  # name -> account id, the management first
    instances: dict[str, str] = field(default_factory=dict)  # account id -> its instance
    management_groups: tuple[str, ...] = ()  # the management instance's groups, which must not change
    sessions: dict[str, boto3.Session] = field(default_factory=dict)  # member account id -> its own credentials

    def name(self, account_id: str) -> str:
        return next(name for name, known in self.accounts.items() if known == account_id)

    @property
    def management(self) -> str:
        return self.organization.management_id

    @property
    def members(self) -> dict[str, str]:
        return self.organization.members


def seed_organization(eic: EicPrefixes) -> OrganizationFleet:
    """An Organization run from the caller's (moto's default) account with two new member accounts. Each member
    gets the member role (as the StackSet would) and one drifted instance, seeded with that account's own
    credentials (OrganizationAccountAccessRole); the management account gets one compliant instance."""
    session = boto3.Session(region_name=REGION)  # one session: botocore's models are parsed once for the act
    organization = create_organization(session.client("organizations"), MEMBERS)
    fleet = OrganizationFleet(organization, session, {"management": organization.management_id, **organization.members})
    management = SimulatedAccount.of(session, REGION)
    image = management.al2023_ami()  # Amazon's public AMI: the same id in every account
    network = management.network("10.0.0.0/16", "management")
    eic_ssh = management.security_group(network, "management-eic-ssh", [ssh_from(*(str(p) for p in eic.ipv4))])
    (fleet.instances[organization.management_id],) = management.launch(
        image_id=image,
        subnet_id=network.public_subnet_id,
        group_ids=[eic_ssh],
        public_ip=True,
        name="management-bastion",
    )
    fleet.management_groups = (eic_ssh,)
    for name, account_id in organization.members.items():
        own = fleet.sessions[account_id] = member_session(account_id, region=REGION, source=session)
        create_member_role(own.client("iam"), MEMBER_ROLE, organization.management_id)
        member = SimulatedAccount.of(own, REGION)
        network = member.network("10.0.0.0/16", name)
        (fleet.instances[account_id],) = member.launch(
            image_id=image,
            subnet_id=network.public_subnet_id,
            group_ids=[network.app_group_id],  # no SSH rule at all
            public_ip=True,
            imds="disabled",
            name=f"{name}-app",
        )
    return fleet


def print_organization(fleet: OrganizationFleet) -> None:
    print(
        f"\nOrganization {fleet.organization.id}. eic-guard runs in the management account with its own credentials "
        f"and enters each\nmember account with sts:AssumeRole on its {MEMBER_ROLE} role (created here as the member "
        "StackSet would). Account, name, instance, drift:"
    )
    for name, account_id in fleet.accounts.items():
        drift = (
            "compliant: SG allows TCP 22 from the EIC range"
            if account_id == fleet.management
            else "SG without any SSH rule, metadata endpoint disabled"
        )
        print(f"  {account_id}  {name:<10}  {fleet.instances[account_id]}  {drift}")


def organization_report_problems(fleet: OrganizationFleet, reports: list[tuple[int, Report]]) -> list[str]:
    """What the organization's three reports show that the demo did not expect."""
    problems = []
    everyone = sorted(fleet.accounts.values())
    wanted = ((1, "noncompliant"), (0, "fixed"), (0, "compliant"))
    for (code, report), title, (want_code, member_verdict) in zip(reports, ORGANIZATION_HEADINGS, wanted, strict=True):
        step = title.split(":")[0]
        if code != want_code:
            problems.append(f"{step}: exit code {code}, expected {want_code}")
        if report.accounts != everyone:
            problems.append(f"{step}: accounts {report.accounts}, expected {everyone}")
        bad_targets = [f"{t.account_id}/{t.region}: {t.status}" for t in report.targets if t.status != "ok"]
        if bad_targets or len(report.targets) != len(everyone):
            problems.append(f"{step}: targets not all ok: {bad_targets or len(report.targets)}")
        verdicts = {(e.account_id, e.instance_id): e.verdict for e in report.instances}
        for account_id, instance_id in fleet.instances.items():
            expected = "compliant" if account_id == fleet.management else member_verdict
            found = verdicts.get((account_id, instance_id))
            if found != expected:
                problems.append(f"{step}: {fleet.name(account_id)} {instance_id} is {found}, expected {expected}")
    return problems


def member_proof(
    name: str, account_id: str, session: boto3.Session, instance_id: str, eic: EicPrefixes
) -> tuple[list[str], list[str]]:
    """(proof lines, problems) of one member account, read with that account's own credentials."""
    caller = session.client("sts").get_caller_identity()
    ec2 = session.client("ec2", region_name=REGION)
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    imds = instance["MetadataOptions"].get("HttpEndpoint")
    attached = interface_groups(ec2, [instance_id])[instance_id]
    managed = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [MANAGED_GROUP_NAME]}])
    group = next((g for g in managed["SecurityGroups"] if g["GroupId"] in attached), {})
    tagged = {t["Key"]: t["Value"] for t in group.get("Tags", ())}.get(MANAGED_BY_TAG[0]) == MANAGED_BY_TAG[1]
    sources = eic_guard_sources(group) if group else set()
    role = session.client("iam").get_role(RoleName=MEMBER_ROLE)["Role"]
    used = role.get("RoleLastUsed", {}).get("LastUsedDate")
    lines = [
        f"  {name} {account_id}, read as {caller['Arn']}:",
        f"    {instance_id}: metadata endpoint {imds}; {MANAGED_GROUP_NAME} {group.get('GroupId', 'missing')} attached"
        f"{', tagged ' + '='.join(MANAGED_BY_TAG) if tagged else ''}, TCP 22 from "
        f"{', '.join(sorted(sources)) or 'nothing'}",
        f"    {role['Arn']} last used {used.isoformat(timespec='seconds') if used else 'never'}",
    ]
    problems = []
    if caller["Account"] != account_id:
        problems.append(f"{name}: the member session acts in {caller['Account']}, not {account_id}")
    if imds != "enabled":
        problems.append(f"{name}: {instance_id} metadata endpoint is still {imds}")
    if not tagged or {str(p) for p in eic.all} - sources:
        problems.append(f"{name}: {instance_id} has no {MANAGED_GROUP_NAME} group with every EIC rule attached")
    if used is None:
        problems.append(f"{name}: the {MEMBER_ROLE} role was never used")
    return lines, problems


def organization_state(fleet: OrganizationFleet, eic: EicPrefixes) -> tuple[list[str], list[str]]:
    """(proof lines, problems) from each account's simulated AWS state, read with that account's own credentials:
    each member fixed in its own account, the management account left as it was and holding none of theirs."""
    lines, problems = [], []
    for name, account_id in fleet.members.items():
        session = fleet.sessions[account_id]
        member_lines, member_problems = member_proof(name, account_id, session, fleet.instances[account_id], eic)
        lines += member_lines
        problems += member_problems
    ec2 = fleet.session.client("ec2")
    seen = {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    created = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [MANAGED_GROUP_NAME]}])
    own = fleet.instances[fleet.management]
    lines.append(
        f"  management {fleet.management}: {own} groups unchanged, no {MANAGED_GROUP_NAME} group created; "
        f"its credentials see {len(seen)} instance: the members' instances are in their own accounts"
    )
    if interface_groups(ec2, [own])[own] != fleet.management_groups:
        problems.append(f"management: {own} groups changed")
    if created["SecurityGroups"]:
        problems.append(f"management: a {MANAGED_GROUP_NAME} group was created in the caller's account")
    if seen != {own}:
        problems.append(f"management: sees instances {sorted(seen)}, expected only {own}")
    return lines, problems


def organization_act(endpoint: str, path: Path, eic: EicPrefixes, workdir: str) -> list[str]:
    """Act 4-6: an Organization of three accounts, scanned, fixed through the member role, scanned again."""
    _reset(endpoint)  # a fresh simulated AWS: the organization's accounts start empty
    heading("an AWS Organization on the same simulated AWS (reset): the management account and two member accounts")
    fleet = seed_organization(eic)
    print_organization(fleet)
    reports = []
    for number, title in enumerate(ORGANIZATION_HEADINGS):
        heading(title)
        output = Path(workdir, f"organization-scan-{number + 1}.json")
        reports.append(run_cli_scan(path, output, remediate=number == 1, extra=("--organization",)))
    problems = organization_report_problems(fleet, reports)
    lines, state = organization_state(fleet, eic)
    problems += state
    heading("proof from each account's simulated AWS state, read with that account's own credentials")
    for line in lines:
        print(line)
    for problem in problems:
        print(f"  UNEXPECTED: {problem}")
    fixed = sum(1 for e in reports[1][1].instances if e.verdict == "fixed")
    print(
        f"organization OK: {fixed} member instances fixed through {MEMBER_ROLE}, "
        f"{len(fleet.accounts)} accounts compliant"
        if not problems
        else f"organization FAILED: {len(problems)} unexpected result(s)"
    )
    return problems


# ---- main ------------------------------------------------------------------------------------------------------
def html_report_path() -> Path:
    return Path(os.environ.get(HTML_ENV) or DEFAULT_HTML)


def ip_ranges_path() -> Path:
    return Path(os.environ.get(IP_RANGES_ENV) or DEFAULT_IP_RANGES)


def main() -> int:
    """Run the demo; 0 when everything behaved as expected, 1 when not, 2 when the ip-ranges file is missing."""
    started = time.monotonic()
    path = ip_ranges_path()
    try:
        eic = ip_ranges.load(str(path)).for_region(REGION)
    except IpRangesError as exc:
        print(f"eic-guard demo: error: {exc} (set {IP_RANGES_ENV} to an ip-ranges.json file)", file=sys.stderr)
        return cli.EXIT_USAGE
    if not eic.ipv4:
        print(f"eic-guard demo: error: {path} has no EC2_INSTANCE_CONNECT prefix for {REGION}", file=sys.stderr)
        return cli.EXIT_USAGE
    html = html_report_path()  # read before the simulated environment drops every EIC_GUARD_* variable
    with simulated_aws() as endpoint, tempfile.TemporaryDirectory(prefix="eic-guard-demo-") as workdir:
        print(f"eic-guard demo: simulated AWS (moto) at {endpoint}, region {REGION}, ip-ranges {path.name}")
        ec2 = boto3.client("ec2", region_name=REGION)
        fleet = seed(SimulatedAccount(ec2, boto3.client("ssm", region_name=REGION)), eic)
        boto3.client("iam", region_name=REGION).create_account_alias(AccountAlias=ACCOUNT_ALIAS)
        print_legend(fleet)
        reports = []
        html.parent.mkdir(parents=True, exist_ok=True)
        for number, title in enumerate(HEADINGS):
            heading(title)
            last = number == len(HEADINGS) - 1
            reports.append(
                run_cli_scan(
                    path, Path(workdir, f"scan-{number + 1}.json"), remediate=number == 1, html=html if last else None
                )
            )
        problems = report_problems(fleet, reports) + state_problems(ec2, fleet, eic)
        print_proof(fleet, reports[-1][1], problems)
        html.with_suffix(".json").write_text(Path(workdir, f"scan-{len(HEADINGS)}.json").read_text(encoding="utf-8"))
        print(f"HTML report of the final scan (opens offline): {html.resolve()} (JSON beside it)")
        problems += next_night(ec2, fleet, path, workdir)
        problems += cleanup_dry_run(ec2, fleet)
        problems += organization_act(endpoint, path, eic, workdir)
    print(f"(demo finished in {time.monotonic() - started:.1f}s)")
    return 1 if problems else 0
