"""Targets: the (account, region) pairs one run covers (docs/architecture.md §9)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError

ORGANIZATION = "organization"
_ACCOUNT_ID = re.compile(r"^\d{12}$")


@dataclass(frozen=True, order=True)
class Target:
    """The unit of work: one region of one account."""

    account_id: str
    region: str

    @property
    def key(self) -> str:
        return f"{self.account_id}/{self.region}"

    def to_dict(self) -> dict[str, str]:
        return {"account_id": self.account_id, "region": self.region}

    @classmethod
    def from_dict(cls, raw: dict) -> Target:
        return cls(str(raw["account_id"]), str(raw["region"]))


@dataclass(frozen=True)
class AccountsPlan:
    """The accounts a run enters, and those the organization lists but a run must skip (not ACTIVE)."""

    accounts: tuple[str, ...]
    skipped: tuple[str, ...] = ()


def parse_accounts(setting: str) -> str | tuple[str, ...]:
    """EIC_GUARD_ACCOUNTS: "" (the caller's own account), "organization", or a comma list of 12-digit ids."""
    value = setting.strip()
    if value in ("", ORGANIZATION):
        return value
    ids = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    bad = [i for i in ids if not _ACCOUNT_ID.match(i)]
    if bad or not ids:
        got = ", ".join(bad) or repr(value)
        raise ConfigurationError(f"EIC_GUARD_ACCOUNTS: expected empty, '{ORGANIZATION}' or 12-digit account ids: {got}")
    return ids


def organization_accounts(organizations: Any) -> AccountsPlan:
    """Every ACTIVE account of the organization (ListAccounts, from the management or a delegated admin account).

    Suspended (and pending-closure) accounts are skipped: their role cannot be assumed and nothing runs there.
    """
    active, skipped = [], []
    for page in organizations.get_paginator("list_accounts").paginate():
        for account in page.get("Accounts", ()):
            status = account.get("State") or account.get("Status")  # State replaces the deprecated Status
            (active if status == "ACTIVE" else skipped).append(account["Id"])
    return AccountsPlan(tuple(sorted(active)), tuple(sorted(skipped)))


def plan_accounts(setting: str, own_account: str, organizations: Any = None) -> AccountsPlan:
    """The accounts one run covers, from the EIC_GUARD_ACCOUNTS setting."""
    parsed = parse_accounts(setting)
    if parsed == "":
        return AccountsPlan((own_account,))
    if parsed == ORGANIZATION:
        if organizations is None:
            raise ConfigurationError("EIC_GUARD_ACCOUNTS=organization needs an Organizations client")
        plan = organization_accounts(organizations)
        if not plan.accounts:  # never a green run that scanned nothing
            raise ConfigurationError("EIC_GUARD_ACCOUNTS=organization: the organization lists no ACTIVE account")
        return plan
    return AccountsPlan(tuple(parsed))


def plan_targets(accounts: tuple[str, ...], regions: tuple[str, ...]) -> list[Target]:
    """Every (account, region), accounts in order, the regions of one account together."""
    return [Target(account, region) for account in accounts for region in regions]
