"""What the demo checks after its scans: the reports against the scenarios, and the simulated AWS state itself."""

from __future__ import annotations

from ..models import EicPrefixes
from ..outputs.report import Report
from ..ranges.managed_group import rule_description
from ..settings import ENDPOINT_GROUP_NAME, ENDPOINT_INSTANCE_GROUP_NAME, MANAGED_BY_TAG, MANAGED_GROUP_NAME
from .environment import REGION
from .scenarios import ACCOUNT_ALIAS, WORLD_OPEN
from .seeding import DemoFleet, interface_groups
from .transcript import heading


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


def endpoint_problems(ec2, fleet: DemoFleet) -> list[str]:
    """The endpoint path (docs/architecture.md §13): the network team's endpoint keeps its own group, lab got one
    endpoint tagged ManagedBy=eic-guard with eic-guard-eice, and the instance without a rule from dev's endpoint got
    eic-guard-eice-ssh."""
    problems = []
    endpoints = ec2.describe_instance_connect_endpoints()["InstanceConnectEndpoints"]
    by_vpc: dict[str, list[dict]] = {}
    for endpoint in endpoints:
        by_vpc.setdefault(endpoint["VpcId"], []).append(endpoint)
    [seeded] = [e for e in endpoints if e["InstanceConnectEndpointId"] == fleet.endpoints["dev"]] or [None]
    if seeded is None or _managed(seeded.get("Tags")):
        problems.append("the network team's endpoint in dev is gone or was tagged as eic-guard's")
    created = by_vpc.get(fleet.private_vpcs["lab"], [])
    if len(created) != 1 or not _managed(created[0].get("Tags")) or created[0]["State"] != "create-complete":
        problems.append(f"lab has {len(created)} endpoint(s), expected one ManagedBy=eic-guard, create-complete")
    else:
        [group] = ec2.describe_security_groups(GroupIds=created[0]["SecurityGroupIds"])["SecurityGroups"]
        if group["GroupName"] != ENDPOINT_GROUP_NAME:
            problems.append(f"lab's endpoint carries {group['GroupName']}, expected {ENDPOINT_GROUP_NAME}")
    [fixed] = [i for i, s in fleet.instances.items() if s.name == "priv-no-eice-rule"]
    names = {
        g["GroupName"]
        for g in ec2.describe_security_groups(GroupIds=list(interface_groups(ec2, [fixed])[fixed]))["SecurityGroups"]
    }
    if ENDPOINT_INSTANCE_GROUP_NAME not in names:
        problems.append(f"priv-no-eice-rule lacks {ENDPOINT_INSTANCE_GROUP_NAME}: {sorted(names)}")
    return problems


def _managed(tags) -> bool:
    return {"Key": MANAGED_BY_TAG[0], "Value": MANAGED_BY_TAG[1]} in (tags or [])


def print_private_path(fleet: DemoFleet, reports: list[tuple[int, Report]]) -> None:
    """One private instance through the three scans, and the command that now connects to it."""
    [instance_id] = [i for i, s in fleet.instances.items() if s.name == "priv-no-eice-rule"]
    entries = [next(e for e in report.instances if e.instance_id == instance_id) for _, report in reports]
    steps = " -> ".join(
        f"{entry.checks['endpoint-ssh-ingress'].status} ({entry.verdict})"
        for entry in entries
        if "endpoint-ssh-ingress" in entry.checks
    )
    print(f"  private path: {instance_id} (priv-no-eice-rule) endpoint-ssh-ingress {steps}")
    print(f"  connect: {entries[-1].connect_command}")
    paths = reports[-1][1].summary.connect_paths
    print(f"  connect paths of the final scan: {', '.join(f'{n} {p}' for p, n in paths.items())}")


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
