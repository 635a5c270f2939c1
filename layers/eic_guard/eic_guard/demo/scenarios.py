"""The demo's world as data: the instances it seeds, the drift each carries and the verdict the final scan must give
it, who owns them, and the organization's member accounts. The runner (demo/runner.py) seeds and proves them."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import CONNECT_PATH_TAG, EXCLUDE_TAG, EXCLUDE_UNTIL_TAG

REGION = "us-east-1"

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
    "priv": {"Owner": "erin@example.com", "Team": "internal-tools"},
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
        "stopped, no SSH rule: fixed before it starts (tagged onto the public path)",
        "compliant",
        groups=("app",),
        public_ip=True,
        stopped=True,
        # a stopped instance has no public address: with CreateEndpoints on, auto would take the endpoint path
        tags=((CONNECT_PATH_TAG, "public"),),
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
    # Pinned to the public path by their tag: with CreateEndpoints on, the default (auto) would give their VPC an
    # endpoint and make them private-path instances, which the priv-* scenarios show.
    Scenario(
        "db-no-public-ip",
        "launched without a public IPv4 address (tagged onto the public path)",
        "noncompliant",
        public_ip=False,
        tags=((CONNECT_PATH_TAG, "public"),),
    ),
    Scenario(
        "db-private-subnet",
        "private subnet: no route to the internet gateway (tagged onto the public path)",
        "noncompliant",
        subnet="private",
        tags=((CONNECT_PATH_TAG, "public"),),
    ),
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
    # docs/architecture.md §13: private instances reached through an EC2 Instance Connect Endpoint. VPC dev has the
    # network team's endpoint (its own group, in the public subnet); VPC lab has none, and CreateEndpoints is on.
    Scenario(
        "priv-eice-ok",
        "private, TCP 22 from the endpoint's group: compliant through the endpoint",
        "compliant",
        vpc="dev",
        subnet="private",
        groups=("eice-ssh",),
    ),
    Scenario(
        "priv-no-eice-rule",
        "private, no rule from the endpoint's group: eic-guard-eice-ssh gets attached",
        "compliant",
        vpc="dev",
        subnet="private",
        groups=("app",),
    ),
    Scenario(
        "priv-nacl-blocked",
        "private, subnet NACL denies TCP 22 from the endpoint (rule 50)",
        "noncompliant",
        vpc="dev",
        subnet="locked",
        groups=("eice-ssh",),
        public_ip=False,
    ),
    Scenario(
        "priv-no-endpoint",
        "private, VPC without an endpoint: eic-guard creates one (CreateEndpoints)",
        "compliant",
        vpc="lab",
        subnet="private",
        groups=("app",),
        tags=((CONNECT_PATH_TAG, "endpoint"),),
    ),
    Scenario("untagged-bastion", "not opted in: ignored and untouched", "", groups=("app",)),
    Scenario(
        "untagged-legacy", "not opted in: ignored and untouched", "", image="al2", groups=("udp-22",), imds="disabled"
    ),
    Scenario("untagged-staging", "not opted in: ignored and untouched", "", vpc="staging", groups=("ssh-2222",)),
)


STAGING_NEW = ("stg-ok", "stg-no-ssh-rule", "stg-ssh-2222")  # what the deleted route breaks
