"""From flags and environment to a session, validated settings and clients, before anything is read or changed.

Every AWS configuration problem (unknown profile, no credentials, unreachable endpoint, a refused request) becomes
a ConfigurationError: one line on stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..errors import ConfigurationError
from .arguments import ORGANIZATION, FanOut, resolve_regions
from .invocation import Invocation

if TYPE_CHECKING:
    import boto3

    from ..aws.clients import AwsClients
    from ..settings import Settings


def session(region: str | None = None) -> boto3.Session:
    """A boto3 session; building it reads AWS_PROFILE's configuration (ProfileNotFound is turned into exit 2)."""
    import boto3

    return boto3.Session(region_name=region)


def settings_for(
    regions: tuple[str, ...], mode: str, fan_out: FanOut, overrides: Mapping[str, object] | None = None
) -> Settings:
    """Every EIC_GUARD_* variable validated as the functions validate it (EIC_GUARD_MODE included), then the mode
    the command runs in: the CLI's mode comes from its flags, so EIC_GUARD_MODE is checked but not honoured.
    The account flags, when given, take the place of EIC_GUARD_ACCOUNTS and EIC_GUARD_MEMBER_ROLE_NAME, and
    `overrides` (other flags: --tag...) of their variables, validated alike."""
    from ..settings import Settings

    configured = Settings.from_env(
        regions=regions, accounts=fan_out.accounts, member_role_name=fan_out.role_name, **(overrides or {})
    )
    return configured.model_copy(update={"mode": mode})


def configure(
    args: argparse.Namespace, mode: str, fan_out: FanOut, overrides: Mapping[str, object] | None = None
) -> tuple[boto3.Session, Settings]:
    """Regions (known to botocore), settings and the session for the clients, before any AWS call."""
    from ..aws.clients import known_regions

    probe = session()
    regions, source = resolve_regions(args.regions, os.environ, lambda: probe.region_name)
    known = known_regions(probe)
    unknown = [region for region in regions if region not in known]
    if unknown:
        raise ConfigurationError(f"unknown region: {', '.join(unknown)} (from {source})")
    settings = settings_for(regions, mode, fan_out, overrides)
    # Account-level calls (STS) go to the first region worked on when the profile names none.
    return (probe if probe.region_name else session(regions[0])), settings


def connect(aws_session: boto3.Session, settings: Settings, invocation: Invocation) -> AwsClients:
    """The clients of the run, built now, and the caller's account asked for: configuration that botocore only
    reads when a client is built (AWS_ENDPOINT_URL=foo raises ValueError, AWS_DEFAULTS_MODE=foo an error) and missing
    credentials or an unreachable endpoint are found before anything is read or changed. They send no call once
    the run is interrupted, and report each call with -v."""
    from ..aws.clients import AwsClients

    deadline = invocation.interrupts.deadline()
    clients = AwsClients(aws_session, deadline=deadline, call_log=invocation.verbosity.call_log())
    try:
        for region in settings.regions:
            clients.ec2(region)
    except ValueError as exc:
        raise ConfigurationError(f"AWS configuration problem: {exc}") from None
    clients.account_id()
    return clients


@contextmanager
def aws_problems() -> Iterator[None]:
    """Turn what botocore raises about the AWS configuration (unknown profile, no credentials, unreachable endpoint,
    a refused request) into a ConfigurationError: one line on stderr and exit 2, never a traceback."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ProfileNotFound

    try:
        yield
    except ProfileNotFound as exc:
        profile = exc.kwargs.get("profile", "")
        raise ConfigurationError(
            f"AWS profile {profile!r} not found in the AWS config or credentials files (check AWS_PROFILE)"
        ) from None
    except NoCredentialsError:
        raise ConfigurationError("no AWS credentials found (set AWS_PROFILE or the AWS_* variables)") from None
    except BotoCoreError as exc:
        raise ConfigurationError(f"AWS configuration problem: {exc}") from None
    except ClientError as exc:
        raise ConfigurationError(f"AWS refused a request: {exc}") from None


@contextmanager
def organization_problems(settings: Settings, source: str) -> Iterator[None]:
    """A refused Organizations ListAccounts (not the management account, no organization) is the run's one-line
    configuration error, raised while planning, before any target is touched."""
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as exc:
        if settings.accounts != ORGANIZATION or exc.operation_name != "ListAccounts":
            raise
        raise ConfigurationError(
            f"{source}: cannot list the organization's accounts (run it from the management account or a "
            f"delegated administrator): {exc}"
        ) from None
