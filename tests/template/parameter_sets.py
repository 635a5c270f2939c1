"""The stack configurations the IAM tests render and run: each mode and switch that changes a role, and each way the
fan-out reaches its accounts (own account, a list, an organization)."""

from __future__ import annotations

from dataclasses import dataclass

from tests.template.cfn import PSEUDO, parameter_values

STACK_REGION = "us-east-1"  # the recorder runs the handlers on moto there (moto's default account is PSEUDO's)
OWN_ACCOUNT = PSEUDO["AWS::AccountId"]
LISTED_MEMBER = "111111111111"  # a member account named in Accounts (moto lets any account id be entered)


@dataclass(frozen=True)
class ParameterSet:
    id: str
    # "scan": the schedule starts the state machine; "refresh": the SNS refresh function verifies the file, advances
    # the state and starts it. Either way the state machine then runs Plan, the target workers and Aggregate.
    # "on-change": OnChangeFunction on an SQS batch of EC2 change events (docs/architecture.md §10), after a nightly
    # run's state.
    job: str
    overrides: tuple[tuple[str, str], ...]
    members: int = 0  # member accounts the run creates in its organization (Accounts=organization)

    @property
    def params(self) -> dict[str, str]:
        return parameter_values(**dict(self.overrides))

    @property
    def organization(self) -> bool:
        return self.params["Accounts"] == "organization"


PARAMETER_SETS = (
    # Report mode with every remediation switch on: the switches must not make the scan write anything.
    ParameterSet("report", "scan", (("Mode", "report"), ("RemediatePublicIp", "true"), ("TagInstances", "true"))),
    # A grace of 0 h: the catch-up revokes our rule for a prefix the file no longer lists, in the same run.
    ParameterSet(
        "remediate", "scan", (("Mode", "remediate"), ("RemediatePublicIp", "false"), ("StalePrefixGraceHours", "0"))
    ),
    ParameterSet("remediate-elastic-ip", "scan", (("Mode", "remediate"), ("RemediatePublicIp", "true"))),
    ParameterSet("prefix-list", "scan", (("Mode", "remediate"), ("IngressSource", "prefix-list"))),
    # The endpoint path (docs/architecture.md §13): an endpoint created where a VPC's private instance needs one, and
    # in a member account through the member role.
    ParameterSet(
        "create-endpoints",
        "scan",
        (("Accounts", f"{OWN_ACCOUNT},{LISTED_MEMBER}"), ("Mode", "remediate"), ("CreateEndpoints", "true")),
    ),
    # Regions not starting with the stack's region: the state table and the bucket still live in the stack's region.
    ParameterSet(
        "regions-elsewhere-first",
        "scan",
        (("Mode", "remediate"), ("RemediatePublicIp", "true"), ("Regions", f"eu-west-1,{STACK_REGION}")),
    ),
    # Every account of an organization (this one and two members entered through the member role), every switch on.
    ParameterSet(
        "organization",
        "scan",
        (
            ("Accounts", "organization"),
            ("Mode", "remediate"),
            ("RemediatePublicIp", "true"),
            ("TagInstances", "true"),
            ("StalePrefixGraceHours", "0"),
        ),
        members=2,
    ),
    # A list of accounts in report mode: nothing is written in the member account either.
    ParameterSet(
        "accounts-report",
        "scan",
        (
            ("Accounts", f"{OWN_ACCOUNT},{LISTED_MEMBER}"),
            ("Mode", "report"),
            ("RemediatePublicIp", "true"),
            ("TagInstances", "true"),
        ),
    ),
    # Security Hub findings (docs/architecture.md §11): the worker imports into its own account with its role and into
    # a listed member account with the member role, and keeps the ledger in the reports bucket.
    ParameterSet(
        "security-hub",
        "scan",
        (
            ("Accounts", f"{OWN_ACCOUNT},{LISTED_MEMBER}"),
            ("Mode", "remediate"),
            ("RemediatePublicIp", "true"),
            ("TagInstances", "true"),
            ("SecurityHubFindings", "enabled"),
        ),
    ),
    # Event-driven checks (docs/architecture.md §10): report mode with every switch on writes nothing to EC2; remediate
    # mode fixes the drifted instances the events name, tags them and imports their findings.
    ParameterSet(
        "on-change-report", "on-change", (("Mode", "report"), ("RemediatePublicIp", "true"), ("TagInstances", "true"))
    ),
    ParameterSet(
        "on-change-remediate",
        "on-change",
        (
            ("Mode", "remediate"),
            ("RemediatePublicIp", "true"),
            ("TagInstances", "true"),
            ("SecurityHubFindings", "enabled"),
        ),
    ),
    # `eic-guard verify`'s job (docs/architecture.md §16) with every switch on, in this account and a listed member:
    # every probe (DryRun writes on the drifted fleet, reads, Security Hub's DescribeHub) is allowed by the role
    # that makes it, so verify never reports a permission the deployed roles really have as missing.
    ParameterSet(
        "verify",
        "verify",
        (
            ("Accounts", f"{OWN_ACCOUNT},{LISTED_MEMBER}"),
            ("Mode", "remediate"),
            ("RemediatePublicIp", "true"),
            ("TagInstances", "true"),
            ("SecurityHubFindings", "enabled"),
        ),
    ),
    ParameterSet("refresh", "refresh", (("StalePrefixGraceHours", "0"),)),
    ParameterSet("refresh-regions-elsewhere-first", "refresh", (("Regions", f"eu-west-1,{STACK_REGION}"),)),
    # The refresh job in report mode across an organization: every member's managed groups follow, through a member
    # role that allows no other write.
    ParameterSet(
        "refresh-organization",
        "refresh",
        (("Accounts", "organization"), ("Mode", "report"), ("StalePrefixGraceHours", "0")),
        members=2,
    ),
)
