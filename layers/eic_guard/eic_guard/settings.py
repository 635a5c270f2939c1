"""Settings: template parameters arrive as environment variables and are validated once per invocation."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Literal

import botocore
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigurationError
from .fanout.targets import parse_accounts

IP_RANGES_URL = "https://ip-ranges.amazonaws.com/ip-ranges.json"
AWS_IP_SPACE_TOPIC = "arn:aws:sns:us-east-1:806199016981:AmazonIpSpaceChanged"
MANAGED_BY_TAG = ("ManagedBy", "eic-guard")
MANAGED_GROUP_NAME = "eic-guard-ssh"
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


class Settings(BaseModel):
    """Validated run settings; `from_env` maps EIC_GUARD_* variables onto these fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tag_key: str = Field(default="eic-guard:managed", min_length=1, max_length=128)
    tag_value: str = Field(default="true", min_length=1, max_length=256)
    regions: tuple[str, ...] = Field(min_length=1)
    mode: Literal["report", "remediate"] = "remediate"
    ingress_source: Literal["cidr", "prefix-list"] = "cidr"
    remediate_public_ip: bool = False
    tag_instances: bool = False  # eic-guard:status / eic-guard:checked-at on opted-in instances (remediate mode)
    stale_prefix_grace_hours: int = Field(default=24, ge=0, le=24 * 90)
    state_table: str | None = None
    reports_bucket: str | None = None
    alerts_topic_arn: str | None = None
    ip_ranges_topic_arns: tuple[str, ...] = (AWS_IP_SPACE_TOPIC,)
    # docs/architecture.md §9: "" = the caller's own account, "organization" = every ACTIVE account, or a comma list of
    # ids
    accounts: str = ""
    member_role_name: str = Field(default="eic-guard-member", pattern=r"^[\w+=,.@-]{1,64}$")
    state_machine_arn: str | None = None  # the refresh function starts the fan-out there
    # docs/architecture.md §11: ASFF findings imported into each target's Security Hub after its scan
    # (outputs/security_hub/)
    security_hub_findings: Literal["enabled", "disabled"] = "disabled"
    # docs/architecture.md §5b: the instance tags every output names besides `Name` (who to ask about an instance)
    owner_tags: tuple[str, ...] = Field(default=("Owner", "Team"), max_length=10)
    # checks/al2023_ami.py: AL2023 only (the EIC tutorial's prerequisite) or every image AWS ships EIC in
    allowed_images: Literal["al2023", "eic-preinstalled"] = "al2023"
    # The deployed stack's name: the metrics' `Stack` dimension, so two stacks in one account keep their own alarms
    stack_name: str | None = Field(default=None, max_length=128)

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
    def build(cls, **values) -> Settings:
        """Validate `values`, turning pydantic's error into one readable ConfigurationError line."""
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{ENV_PREFIX}{'.'.join(str(p) for p in err['loc'][:1]).upper()}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigurationError(f"invalid settings: {problems}") from None
