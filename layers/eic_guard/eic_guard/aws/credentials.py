"""Credentials per account for one run (docs/architecture.md §9): the caller's own account uses the caller's
credentials, every other account is entered with sts:AssumeRole on its member role, once per account per run (cached,
refreshed by botocore before they expire, safe to share between the worker threads)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
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
    """`AwsClients` per account for one run; the first use of an account assumes its role.

    An account's credentials (assumed once per run, refreshed by botocore) and its clients are kept apart: `release`
    drops the clients (a botocore session and a client per region) once the account's targets are done, so the run
    holds the clients of the accounts being worked on, not of the organization; the credentials go with them unless
    the run comes back to the account (its revoke phase), which then needs no second AssumeRole.
    """

    def __init__(self, own: AwsClients, run_id: str, role_name: str = DEFAULT_MEMBER_ROLE):
        self.own = own
        self.run_id = run_id
        self.role_name = role_name
        self._credentials: dict[str, DeferredRefreshableCredentials | AccountUnreachable] = {}
        self._clients: dict[str, AwsClients] = {}
        self._lock = threading.Lock()  # guards the dicts; each account has its own lock for entering it
        self._entering: dict[str, threading.Lock] = {}

    @property
    def entered(self) -> frozenset[str]:
        """The member accounts whose clients are held now."""
        with self._lock:
            return frozenset(self._clients)

    def for_account(self, account_id: str) -> AwsClients:
        """Clients acting in `account_id`; raises AccountUnreachable (cached: one AssumeRole try per run)."""
        if account_id == self.own.account_id():
            return self.own
        with self._lock:
            known = self._clients.get(account_id)
            entering = self._entering.setdefault(account_id, threading.Lock())
        if known is None:
            with entering:  # threads entering other accounts go on meanwhile
                known = self._enter(account_id)
        known.deadline = self.own.deadline  # a warm container's next invocation brings its own deadline
        return known

    def release(self, account_id: str, *, again: bool = False) -> None:
        """Forget an account's clients once its targets are done; with `again` (the run comes back to it), keep its
        credentials. An account that could not be entered stays remembered (one AssumeRole try per run)."""
        with self._lock:
            self._clients.pop(account_id, None)
            if not again and not isinstance(self._credentials.get(account_id), AccountUnreachable):
                self._credentials.pop(account_id, None)
                self._entering.pop(account_id, None)

    def countdown(self, account_ids: Iterable[str], *, again: bool = False) -> Callable[[str], None]:
        """`done(account_id)`, to call as each of the given targets' accounts (one id per target) ends a target, from
        any thread: the account is released after its last one (see `release` for `again`)."""
        remaining = Counter(account_ids)
        lock = threading.Lock()

        def done(account_id: str) -> None:
            with lock:
                remaining[account_id] -= 1
                last = remaining[account_id] == 0
            if last:
                self.release(account_id, again=again)

        return done

    def _enter(self, account_id: str) -> AwsClients:
        """The account's clients, built from its credentials (assumed on first use); under its entering lock."""
        with self._lock:
            known, credentials = self._clients.get(account_id), self._credentials.get(account_id)
        if known is not None:
            return known
        if credentials is None:
            credentials = self._assume_role(account_id)
            with self._lock:
                self._credentials[account_id] = credentials
        if isinstance(credentials, AccountUnreachable):
            # A copy per target: raising the one instance again would chain every target's frames to it.
            raise AccountUnreachable(credentials.account_id, str(credentials), credentials.reason)
        known = self._member_clients(account_id, credentials)
        with self._lock:
            self._clients[account_id] = known
        return known

    def _assume_role(self, account_id: str) -> DeferredRefreshableCredentials | AccountUnreachable:
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
        return credentials

    def _member_clients(self, account_id: str, credentials: DeferredRefreshableCredentials) -> AwsClients:
        source = self.own.session._session
        member = botocore.session.Session()
        member._credentials = credentials  # botocore has no public setter for a credentials provider object
        session = boto3.Session(botocore_session=member, region_name=self.own.session.region_name or "us-east-1")
        # One parsed copy of botocore's service models for every account (parsing them costs ~0.2 s per session),
        # registered after boto3.Session, which appends its own data path to the loader it finds: the shared one's
        # search paths would grow by one per account entered.
        member.register_component("data_loader", source.get_component("data_loader"))
        return AwsClients(session, self.own.config, self.own.deadline, account=account_id, call_log=self.own.call_log)
