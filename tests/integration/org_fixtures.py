"""An AWS Organization on moto for the fan-out's integration tests: the management account (moto's default
123456789012, where eic-guard runs) and two member accounts made with organizations.create_account.

The tests' own clients for a member account come from sts.assume_role on its member role, made here with plain boto3
(not with eic-guard's AccountClients, which is under test): moto maps assumed-role credentials to the role's account,
so these clients see and build that account's own EC2 state. They are made when the organization is created, so that
a fault injector installed later by a test does not touch them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.loaders import create_loader
from eic_guard.settings import MANAGED_BY_TAG, MANAGED_GROUP_NAME
from eic_guard.simulated import Network, SimulatedAccount

from tests.aws_views import ingress_rules
from tests.conftest import REGION

MANAGEMENT = "123456789012"
MEMBER_ROLE = "eic-guard-member"


_LOADER = create_loader()


def share_botocore_loader(monkeypatch) -> None:
    """Speed only, behaviour unchanged: every boto3 session created from now on (the tests', eic-guard's, the
    handlers') shares one botocore data loader, so the service models are parsed once per test run instead of once
    per session (~0.2 s each). Sessions stay hooked by whatever patched boto3.Session.__init__ before."""
    patched_before = boto3.Session.__init__

    def init(self, *args, **kwargs):
        patched_before(self, *args, **kwargs)
        self._session.register_component("data_loader", _LOADER)

    monkeypatch.setattr(boto3.Session, "__init__", init)


def fast_member_accounts(monkeypatch) -> None:
    """Speed only: one parsed copy of botocore's models for every session (share_botocore_loader), and moto skips
    loading its AMI catalogue into each account's EC2 backend (for tests that use no AMI)."""
    share_botocore_loader(monkeypatch)
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")


def role_arn(account_id: str, role_name: str = MEMBER_ROLE) -> str:
    return f"arn:aws:iam::{account_id}:role/{role_name}"


@dataclass
class Organization:
    """The three accounts, and a boto3 session acting in each (the management account's is the default one)."""

    management: str
    members: tuple[str, str]
    sessions: dict[str, boto3.Session]
    _clients: dict[tuple[str, str, str], Any] = field(default_factory=dict)

    @property
    def accounts(self) -> list[str]:
        """Every account, sorted (the order Organizations-planned targets come in)."""
        return sorted([self.management, *self.members])

    def client(self, account_id: str, service: str, region: str = REGION) -> Any:
        key = (account_id, service, region)
        if key not in self._clients:
            self._clients[key] = self.sessions[account_id].client(service, region_name=region)
        return self._clients[key]

    def ec2(self, account_id: str, region: str = REGION) -> Any:
        return self.client(account_id, "ec2", region)

    def simulated(self, account_id: str, region: str = REGION) -> SimulatedAccount:
        return SimulatedAccount(self.ec2(account_id, region), self.client(account_id, "ssm", region))


def create_organization(regions: tuple[str, ...] = (REGION,)) -> Organization:
    """An organization (all features) with two new member accounts; EC2 and SSM clients ready in each account for
    `regions` (inside an active moto mock)."""
    organizations = boto3.client("organizations", REGION)
    organizations.create_organization(FeatureSet="ALL")
    members = tuple(
        organizations.create_account(AccountName=name, Email=f"{name}@example.com")["CreateAccountStatus"]["AccountId"]
        for name in ("member-a", "member-b")
    )
    sts = boto3.client("sts", REGION)
    sessions = {MANAGEMENT: boto3.Session(region_name=REGION)}
    for member in members:
        credentials = sts.assume_role(RoleArn=role_arn(member), RoleSessionName="test-setup")["Credentials"]
        sessions[member] = boto3.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            region_name=REGION,
        )
    org = Organization(MANAGEMENT, members, sessions)  # type: ignore[arg-type]
    for account_id in org.accounts:
        for region in regions:
            org.ec2(account_id, region)
            org.client(account_id, "ssm", region)
    assert org.client(members[0], "sts").get_caller_identity()["Account"] == members[0]
    return org


def drifted_instance(org: Organization, account_id: str) -> tuple[Network, str]:
    """In `account_id`: a VPC with an internet route and an opted-in AL2023 instance with a public address, no SSH
    rule for EIC and its metadata endpoint off (IMDSv2 required)."""
    account = org.simulated(account_id)
    net = account.network()
    instance = account.launch_drifted(net)
    return net, instance


def managed_groups(ec2: Any) -> list[dict]:
    """eic-guard's managed groups (named eic-guard-ssh, tagged ManagedBy=eic-guard) as EC2 describes them."""
    key, value = MANAGED_BY_TAG
    return ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [MANAGED_GROUP_NAME]}, {"Name": f"tag:{key}", "Values": [value]}]
    )["SecurityGroups"]


def eic_description(region: str) -> str:
    return f"eic-guard EC2_INSTANCE_CONNECT {region}"


def eic_rules(region: str, *prefixes: str) -> set[tuple]:
    """The ingress rules eic-guard keeps for `prefixes` of `region` (tests.aws_views.ingress_rules' shape)."""
    return {("tcp", 22, 22, p, eic_description(region)) for p in prefixes}


def managed_group_with_rules(ec2: Any, region: str, prefixes: tuple[str, ...], cidr: str = "10.40.0.0/16") -> str:
    """A managed group in a VPC of its own, holding eic-guard's SSH rules for `prefixes`."""
    vpc_id = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    key, value = MANAGED_BY_TAG
    group_id = ec2.create_security_group(
        GroupName=MANAGED_GROUP_NAME,
        Description="eic-guard: SSH from EC2 Instance Connect",
        VpcId=vpc_id,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": key, "Value": value}]}],
    )["GroupId"]
    permissions = []
    for prefix in prefixes:
        source, entry = ("Ipv6Ranges", "CidrIpv6") if ":" in prefix else ("IpRanges", "CidrIp")
        permissions.append(
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                source: [{entry: prefix, "Description": eic_description(region)}],
            }
        )
    if permissions:
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=permissions)
    return group_id


def group_rules(ec2: Any, group_id: str) -> set[tuple]:
    return ingress_rules(ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0])
