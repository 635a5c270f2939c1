"""Settings: template parameters arrive as environment variables and are validated once per invocation."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import botocore
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from .errors import ConfigurationError
from .fanout.targets import parse_accounts

IP_RANGES_URL = "https://ip-ranges.amazonaws.com/ip-ranges.json"
AWS_IP_SPACE_TOPIC = "arn:aws:sns:us-east-1:806199016981:AmazonIpSpaceChanged"
MANAGED_BY_TAG = ("ManagedBy", "eic-guard")
MANAGED_GROUP_NAME = "eic-guard-ssh"
# The endpoint path (docs/architecture.md §13): the per-VPC group attached to instances' ENIs (TCP 22 from the
# endpoint's group by reference), and the group of the endpoints eic-guard creates (egress TCP 22 to the former only).
ENDPOINT_INSTANCE_GROUP_NAME = "eic-guard-eice-ssh"
ENDPOINT_GROUP_NAME = "eic-guard-eice"
# The per-instance override of ConnectPath: `public` or `endpoint`; any other value is that instance's error.
CONNECT_PATH_TAG = "eic-guard:connect-path"
CONNECT_PATHS = ("public", "endpoint")
EXCLUDE_TAG = "eic-guard:exclude"
EXCLUDE_UNTIL_TAG = "eic-guard:exclude-until"
# The second, admin-only tag an instance needs before RemediatePublicIp gives it an Elastic IP (README "Threat model";
# policies/ reserves it to the admins like the opt-in tag): a public address is an exposure of its own.
PUBLIC_IP_TAG = ("eic-guard:public-ip", "allowed")


@cache
def _partitions() -> tuple[dict, ...]:
    """botocore's partitions.json (a 7 kB read, no AWS call)."""
    document = json.loads((Path(botocore.__file__).parent / "data" / "partitions.json").read_text(encoding="utf-8"))
    return tuple(document["partitions"])


@cache
def known_regions() -> frozenset[str]:
    """Every region of every partition the SDK knows."""
    return frozenset(region for partition in _partitions() for region in partition["regions"])


def partition_of(region: str) -> str:
    """The partition (aws, aws-cn, aws-us-gov, ...) of a region: a known one, else the one whose pattern it fits."""
    partitions = _partitions()
    for partition in partitions:
        if region in partition["regions"]:
            return partition["id"]
    for partition in partitions:
        if re.match(partition["regionRegex"], region):
            return partition["id"]
    return "aws"


_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
ENV_PREFIX = "EIC_GUARD_"


@dataclass(frozen=True)
class Source:
    """Where a setting is set besides its EIC_GUARD_* variable: the template parameter the stack passes it from
    (or what the stack sets it to itself), and the CLI flag that overrides it. The settings reference (README,
    `eic-guard scan --help`) is generated from these and the fields' descriptions (cli/reference.py)."""

    parameter: str = ""
    stack: str = ""  # when no parameter sets it: the stack's own value (a resource, the stack's name)
    flag: str = ""


class Settings(BaseModel):
    """Validated run settings; `from_env` maps EIC_GUARD_* variables onto these fields. Adding one is adding a
    field here, with its description and Source: the reference and its tests pick it up."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tag_key: Annotated[str, Source(parameter="TagKey", flag="--tag KEY=VALUE")] = Field(
        default="eic-guard:managed",
        min_length=1,
        max_length=128,
        description="The opt-in tag's key: only instances tagged key=value are checked, fixed and reachable.",
    )
    tag_value: Annotated[str, Source(parameter="TagValue", flag="--tag KEY=VALUE")] = Field(
        default="true", min_length=1, max_length=256, description="The opt-in tag's value."
    )
    regions: Annotated[tuple[str, ...], Source(parameter="Regions", flag="--region")] = Field(
        min_length=1,
        description="Comma list of regions to cover in every account. Default: the stack's region (deployed); "
        "the CLI: AWS_REGION, AWS_DEFAULT_REGION, then the profile's region.",
    )
    mode: Annotated[Literal["report", "remediate"], Source(parameter="Mode", flag="--remediate")] = Field(
        default="remediate",
        description="`report` plans fixes and writes nothing; `remediate` makes them. The CLI is report-only "
        "unless --remediate (the variable is validated, not honoured).",
    )
    ingress_source: Annotated[Literal["cidr", "prefix-list"], Source(parameter="IngressSource")] = Field(
        default="cidr",
        description="How the managed group allows the EIC ranges: one rule per CIDR, or the AWS-managed prefix "
        "list where it exists.",
    )
    remediate_public_ip: Annotated[bool, Source(parameter="RemediatePublicIp")] = Field(
        default=False,
        description="`true`: allocate a ManagedBy=eic-guard Elastic IP for an instance without a public IPv4 "
        "that also carries the admin-only tag eic-guard:public-ip=allowed (billed), released once unused or "
        "once that tag is gone.",
    )
    tag_instances: Annotated[bool, Source(parameter="TagInstances")] = Field(
        default=False,
        description="`true`: remediate mode tags opted-in instances with eic-guard:status and eic-guard:checked-at. "
        "The stack's default is `true`.",
    )
    stale_prefix_grace_hours: Annotated[int, Source(parameter="StalePrefixGraceHours")] = Field(
        default=24,
        ge=0,
        le=24 * 90,
        description="Hours a prefix gone from ip-ranges.json keeps its rule (0-2160).",
    )
    state_table: Annotated[str | None, Source(stack="StateTable")] = Field(
        default=None, description="The DynamoDB table of the ip-ranges state (the CLI keeps a file: --state-file)."
    )
    reports_bucket: Annotated[str | None, Source(stack="ReportsBucket")] = Field(
        default=None, description="The S3 bucket of the reports and of each run's working objects."
    )
    alerts_topic_arn: Annotated[str | None, Source(stack="AlertsTopic")] = Field(
        default=None, description="The SNS topic alerts go to (the CLI prints them on stderr)."
    )
    ip_ranges_topic_arns: Annotated[tuple[str, ...], Source()] = Field(
        default=(AWS_IP_SPACE_TOPIC,),
        description="Comma list of the SNS topics whose notifications the refresh accepts.",
    )
    accounts: Annotated[str, Source(parameter="Accounts", flag="--account, --organization")] = Field(
        default="",
        description="Empty: the caller's own account; `organization`: every ACTIVE account of the AWS "
        "Organization; or a comma list of 12-digit account ids (docs/architecture.md §9).",
    )
    member_role_name: Annotated[str, Source(parameter="MemberRoleName", flag="--role-name")] = Field(
        default="eic-guard-member",
        pattern=r"^[\w+=,.@-]{1,64}$",
        description="The role entered (sts:AssumeRole) in every other account.",
    )
    state_machine_arn: Annotated[str | None, Source(stack="EicGuardStateMachine")] = Field(
        default=None, description="The state machine the refresh function starts its fan-out on."
    )
    security_hub_findings: Annotated[
        Literal["enabled", "disabled"], Source(parameter="SecurityHubFindings", flag="--security-hub")
    ] = Field(
        default="disabled",
        description="`enabled`: one Security Hub finding per failing check, in each instance's own account "
        "(docs/architecture.md §11).",
    )
    owner_tags: Annotated[tuple[str, ...], Source(parameter="OwnerTags")] = Field(
        default=("Owner", "Team"),
        max_length=10,
        description="Comma list of the instance tags every output shows beside the instance (who to ask).",
    )
    allowed_images: Annotated[
        Literal["al2023", "eic-preinstalled"], Source(parameter="AllowedImages", flag="--allowed-images")
    ] = Field(
        default="al2023",
        description="Images al2023-ami accepts: AL2023 only, or every image AWS ships EC2 Instance Connect in.",
    )
    connect_path: Annotated[
        Literal["auto", "public", "endpoint"], Source(parameter="ConnectPath", flag="--connect-path")
    ] = Field(
        default="auto",
        description="How EC2 Instance Connect reaches instances: `public` (public IPv4, the EIC ranges, an internet "
        "route), `endpoint` (an EC2 Instance Connect Endpoint in the VPC), or `auto`: public with a public IPv4, else "
        "the endpoint path when the VPC has an endpoint or CreateEndpoints is on. The tag eic-guard:connect-path "
        "(`public` or `endpoint`) overrides it per instance (docs/architecture.md §13).",
    )
    create_endpoints: Annotated[bool, Source(parameter="CreateEndpoints", flag="--create-endpoints")] = Field(
        default=False,
        description="`true`: remediate mode creates one EC2 Instance Connect Endpoint (tagged ManagedBy=eic-guard, "
        "its own group eic-guard-eice) in each VPC whose endpoint-path instances have none.",
    )
    per_account_metrics: Annotated[bool, Source(parameter="PerAccountMetrics")] = Field(
        default=False,
        description="`true`: each run's metrics add TargetInstancesNoncompliant and TargetErrors per account "
        "(dimension AccountId; 2 custom metrics per account with a finding). Off by default: the reports and alerts "
        "name every account, and an organization's metric bill stays flat (README: Scale and cost).",
    )
    stack_name: Annotated[str | None, Source(stack="AWS::StackName")] = Field(
        default=None,
        max_length=128,
        description="The metrics' Stack dimension, so two stacks in one account keep their own alarms.",
    )

    @field_validator("accounts")
    @classmethod
    def _accounts(cls, value: str) -> str:
        try:
            parsed = parse_accounts(value)
        except ConfigurationError as exc:
            raise ValueError(str(exc).removeprefix("EIC_GUARD_ACCOUNTS: ")) from None
        return ",".join(parsed) if isinstance(parsed, tuple) else parsed

    @field_validator("owner_tags")
    @classmethod
    def _tag_keys(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        bad = [k for k in keys if not 0 < len(k) <= 128]
        if bad:
            raise ValueError(f"not a tag key: {bad[0]!r}")
        return tuple(dict.fromkeys(keys))

    @field_validator("regions")
    @classmethod
    def _known_region_shape(cls, regions: tuple[str, ...]) -> tuple[str, ...]:
        bad = [r for r in regions if not _REGION.match(r)]
        if bad:
            raise ValueError(f"not a region name: {', '.join(bad)}")
        unknown = [r for r in regions if r not in known_regions()]
        if unknown:
            # A well-formed typo (eu-west-9) would otherwise fail every night, region by region, as a target error.
            raise ValueError(f"unknown region (not in this SDK's region list): {', '.join(unknown)}")
        return tuple(dict.fromkeys(regions))

    @property
    def remediate(self) -> bool:
        return self.mode == "remediate"

    def require(self, *names: str) -> Settings:
        """Fail clearly when a setting this function cannot run without is empty."""
        missing = [ENV_PREFIX + n.upper() for n in names if not getattr(self, n)]
        if missing:
            raise ConfigurationError(f"missing setting: {', '.join(missing)}")
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> Settings:
        """Build settings from EIC_GUARD_* variables (regions default to AWS_REGION); raise ConfigurationError."""
        env = os.environ if env is None else env
        raw: dict[str, object] = {}
        for name in cls.model_fields:
            value = env.get(ENV_PREFIX + name.upper())
            if value is not None and value != "":
                raw[name] = value
        for name in ("regions", "ip_ranges_topic_arns", "owner_tags"):
            if isinstance(raw.get(name), str):
                raw[name] = tuple(p.strip() for p in str(raw[name]).split(",") if p.strip())
        if "regions" not in raw:
            default_region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
            raw["regions"] = (default_region,) if default_region else ()
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls.build(**raw)

    @classmethod
    def one_from_env(cls, name: str, env: Mapping[str, str] | None = None) -> object:
        """One setting from its EIC_GUARD_* variable, validated as `from_env` validates it (its default when unset):
        for code that runs after the handler validated the whole settings and needs just this one."""
        field = cls.model_fields[name]
        raw = (os.environ if env is None else env).get(ENV_PREFIX + name.upper())
        if raw is None or raw == "":
            return field.default
        try:
            return TypeAdapter(field.annotation).validate_python(raw)
        except ValidationError as exc:
            problem = exc.errors()[0]["msg"]
            raise ConfigurationError(f"invalid settings: {ENV_PREFIX}{name.upper()}: {problem}") from None

    @classmethod
    def build(cls, **values) -> Settings:
        """Validate `values`, turning pydantic's error into one readable ConfigurationError line."""
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{ENV_PREFIX}{'.'.join(str(p) for p in err['loc'][:1]).upper()}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigurationError(f"invalid settings: {problems}") from None
