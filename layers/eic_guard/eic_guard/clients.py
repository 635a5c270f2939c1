"""AWS clients with botocore's standard retry mode; nothing talks to AWS at import time."""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from .errors import ConfigurationError

RETRY_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 8},
    connect_timeout=10,
    read_timeout=60,
    user_agent_extra="eic-guard",
)


class AwsClients:
    """Builds one client per (service, region) from a session; honours AWS_ENDPOINT_URL via boto3."""

    def __init__(self, session: boto3.Session | None = None, config: Config = RETRY_CONFIG):
        self.session = session or boto3.Session()
        self.config = config
        self._clients: dict[tuple[str, str | None], Any] = {}

    def client(self, service: str, region: str | None = None) -> Any:
        key = (service, region)
        if key not in self._clients:
            self._clients[key] = self.session.client(service, region_name=region, config=self.config)
        return self._clients[key]

    def ec2(self, region: str) -> Any:
        return self.client("ec2", region)

    @cache  # noqa: B019 - one account per AwsClients, asked once per run
    def account_id(self) -> str:
        """The caller's account (GetCallerIdentity needs no IAM permission)."""
        try:
            return self.client("sts", self.session.region_name or "us-east-1").get_caller_identity()["Account"]
        except NoCredentialsError:
            raise ConfigurationError("no AWS credentials found (set AWS_PROFILE or the AWS_* variables)") from None
        except (ClientError, BotoCoreError) as exc:
            raise ConfigurationError(f"cannot identify the AWS account: {exc}") from None


def known_regions(session: boto3.Session) -> set[str]:
    """Every region botocore knows for EC2, across partitions."""
    regions: set[str] = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("ec2", partition_name=partition))
    return regions
