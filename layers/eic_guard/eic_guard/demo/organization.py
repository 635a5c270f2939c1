"""The demo's last act: an AWS Organization of three accounts on the same simulated AWS (docs/architecture.md §9),
each member fixed through its eic-guard-member role and proven with that account's own credentials."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import boto3

from ..models import EicPrefixes
from ..outputs.report import Report
from ..settings import MANAGED_BY_TAG, MANAGED_GROUP_NAME
from ..simulated import (
    SimulatedAccount,
    SimulatedOrganization,
    create_member_role,
    create_organization,
    member_session,
    ssh_from,
)
from .environment import REGION, reset
from .proof import eic_guard_sources
from .scenarios import MEMBER_ROLE, MEMBERS
from .seeding import interface_groups
from .transcript import Cli, heading, run_cli_scan

ORGANIZATION_HEADINGS = (
    "6. eic-guard scan --organization: report-only, every account of the organization",
    "7. eic-guard scan --organization --remediate: each member fixed through its eic-guard-member role",
    "8. eic-guard scan --organization: the final scan",
)


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


def organization_act(
    cli: Cli, endpoint: str, path: Path, eic: EicPrefixes, workdir: str
) -> tuple[list[str], OrganizationFleet]:
    """Act 6-8: an Organization of three accounts, scanned, fixed through the member role, scanned again; the
    unexpected results and the organization (the next act deploys the stack in it)."""
    reset(endpoint)  # a fresh simulated AWS: the organization's accounts start empty
    heading("an AWS Organization on the same simulated AWS (reset): the management account and two member accounts")
    fleet = seed_organization(eic)
    print_organization(fleet)
    reports = []
    for number, title in enumerate(ORGANIZATION_HEADINGS):
        heading(title)
        output = Path(workdir, f"organization-scan-{number + 1}.json")
        reports.append(run_cli_scan(cli, path, output, remediate=number == 1, extra=("--organization",)))
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
    return problems, fleet
