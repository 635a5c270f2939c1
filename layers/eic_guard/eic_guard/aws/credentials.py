"""Credentials per account for one run (docs/architecture.md §9): the caller's own account uses the caller's
credentials, every other account is entered with sts:AssumeRole on its member role, once per account per run (cached,
refreshed by botocore before they expire, safe to share between the worker threads)."""

from __future__ import annotations

import threading
from typing import Any

import boto3
import botocore.session
from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import EicGuardError
from .clients import AwsClients

DEFAULT_MEMBER_ROLE = "eic-guard-member"
SESSION_DURATION = 3600  # seconds; botocore refreshes assumed credentials before they expire


class AccountUnreachable(EicGuardError):
    """A member account cannot be entered (its role is missing, does not trust us, or STS refused)."""

    def __init__(self, account_id: str, message: str, reason: str = "access-denied"):
        super().__init__(message)
        self.account_id = account_id
        self.reason = reason


def session_name(run_id: str) -> str:
    """The RoleSessionName CloudTrail shows in every member account: which run made a call."""
    cleaned = "".join(c if c.isalnum() or c in "=,.@-" else "-" for c in run_id)
    return f"eic-guard-{cleaned}"[:64]


def member_role_arn(partition: str, account_id: str, role_name: str) -> str:
    return f"arn:{partition}:iam::{account_id}:role/{role_name}"


class AccountClients:
    """`AwsClients` per account for one run; the first use of an account assumes its role."""

    def __init__(self, own: AwsClients, run_id: str, role_name: str = DEFAULT_MEMBER_ROLE):
        self.own = own
        self.run_id = run_id
        self.role_name = role_name
        self._accounts: dict[str, AwsClients | AccountUnreachable] = {}
        self._lock = threading.Lock()  # guards the two dicts; each account has its own lock for entering it
        self._entering: dict[str, threading.Lock] = {}

    def for_account(self, account_id: str) -> AwsClients:
        """Clients acting in `account_id`; raises AccountUnreachable (cached: one AssumeRole try per run)."""
        if account_id == self.own.account_id():
            return self.own
        with self._lock:
            known = self._accounts.get(account_id)
            entering = self._entering.setdefault(account_id, threading.Lock())
        if known is None:
            with entering:  # threads entering other accounts go on meanwhile
                with self._lock:
                    known = self._accounts.get(account_id)
                if known is None:
                    known = self._enter(account_id)
                    with self._lock:
                        self._accounts[account_id] = known
        if isinstance(known, AccountUnreachable):
            raise known
        known.deadline = self.own.deadline  # a warm container's next invocation brings its own deadline
        return known

    def release(self, account_id: str) -> None:
        """Forget an entered account's clients (each region's client holds ~2.6 MiB): once its targets are done, a
        run over 1,000 targets keeps only the accounts still being worked on. An account that could not be entered
        stays remembered (one AssumeRole try per run); a later use enters it again."""
        with self._lock:
            if not isinstance(self._accounts.get(account_id), AccountUnreachable):
                self._accounts.pop(account_id, None)

    def _enter(self, account_id: str) -> AwsClients | AccountUnreachable:
        own_session = self.own.session
        region = own_session.region_name or "us-east-1"
        partition = own_session.get_partition_for_region(region)
        role_arn = member_role_arn(partition, account_id, self.role_name)
        source = own_session._session  # the botocore session behind boto3's (its credentials and loaders)

        def sts_client(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("region_name", region)  # the regional STS endpoint, not the global one
            kwargs.setdefault("config", self.own.config)
            return source.create_client(*args, **kwargs)

        fetcher = AssumeRoleCredentialFetcher(
            sts_client,
            source.get_credentials(),
            role_arn,
            extra_args={"RoleSessionName": session_name(self.run_id), "DurationSeconds": SESSION_DURATION},
        )
        credentials = DeferredRefreshableCredentials(fetcher.fetch_credentials, "assume-role")
        try:
            credentials.get_frozen_credentials()  # enter now, so a refusal is this account's error, stated once
        except (ClientError, BotoCoreError) as exc:
            return AccountUnreachable(account_id, f"cannot assume {role_arn}: {exc}")
        member = botocore.session.Session()
        member._credentials = credentials  # botocore has no public setter for a credentials provider object
        # one parsed copy of botocore's service models for every account (parsing them costs ~0.2 s per session)
        member.register_component("data_loader", source.get_component("data_loader"))
        session = boto3.Session(botocore_session=member, region_name=region)
        return AwsClients(session, self.own.config, self.own.deadline, account=account_id, call_log=self.own.call_log)
