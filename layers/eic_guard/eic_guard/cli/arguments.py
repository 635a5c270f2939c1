"""The flags subcommands share and the values they take: regions, accounts, the fan-out, the state file."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..errors import ConfigurationError

DEFAULT_STATE_FILE = os.path.join(os.path.expanduser("~"), ".eic-guard", "state.json")
# Where the regions come from when --region is not given, in docs/architecture.md §5's order (then the AWS profile's
# region).
REGION_VARIABLES = ("EIC_GUARD_REGIONS", "AWS_REGION", "AWS_DEFAULT_REGION")
ORGANIZATION = "organization"  # EIC_GUARD_ACCOUNTS's value for every ACTIVE account of the organization
ACCOUNT_ID = re.compile(r"^\d{12}$")
ROLE_NAME = re.compile(r"^[A-Za-z0-9_+=,.@-]{1,64}$")  # an IAM role name, as Settings.member_role_name accepts it
DEFAULT_MEMBER_ROLE = "eic-guard-member"
DEFAULT_MAX_WORKERS, MAX_WORKERS = 8, 64

EPILOG = """\
regions: --region, else $EIC_GUARD_REGIONS (comma list), else $AWS_REGION, else $AWS_DEFAULT_REGION, else the
  region of the AWS profile.
settings: the EIC_GUARD_* variables of the functions are read and validated (a bad one is exit 2). EIC_GUARD_MODE
  is only validated: `scan` is report-only unless --remediate, whatever EIC_GUARD_MODE says, and `refresh` always
  updates eic-guard's own ManagedBy=eic-guard groups.
accounts: --organization or --account, else $EIC_GUARD_ACCOUNTS ("organization" or a comma list), else the caller's
  own account. Other accounts are entered with sts:AssumeRole on their --role-name role ($EIC_GUARD_MEMBER_ROLE_NAME,
  default eic-guard-member); one that cannot be entered is a target error and the others go on.
"""


def add_target_arguments(command: argparse.ArgumentParser, verb: str, role_note: str = "") -> None:
    """--region, --account, --organization, --role-name and --max-workers: which (account, region) targets."""
    command.add_argument(
        "--region",
        action="append",
        dest="regions",
        metavar="R",
        help=f"region(s) to {verb}: repeat the flag or give a comma list (us-east-1,eu-west-1); "
        "default: $EIC_GUARD_REGIONS, $AWS_REGION, $AWS_DEFAULT_REGION, then the AWS profile's region",
    )
    command.add_argument(
        "--account",
        action="append",
        dest="accounts",
        metavar="ID",
        help=f"account(s) to {verb}: repeat the flag or give a comma list of 12-digit ids; the caller's own account "
        "uses its credentials, any other is entered through its member role; default: $EIC_GUARD_ACCOUNTS, else "
        "the caller's own account",
    )
    command.add_argument(
        "--organization",
        action="store_true",
        help=f"{verb} every ACTIVE account of the AWS Organization (run from the management account or a delegated "
        "administrator); not with --account",
    )
    command.add_argument(
        "--role-name",
        metavar="NAME",
        help=f"the member role assumed in every other account (default: $EIC_GUARD_MEMBER_ROLE_NAME, else "
        f"{DEFAULT_MEMBER_ROLE}){role_note}",
    )
    command.add_argument(
        "--max-workers",
        metavar="N",
        help=f"(account, region) targets worked on at once, 1 to {MAX_WORKERS} (default {DEFAULT_MAX_WORKERS})",
    )


def add_ip_ranges_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument("--ip-ranges", metavar="PATH|URL", help="ip-ranges.json to use instead of the AWS URL")


def add_state_file_argument(command: argparse.ArgumentParser, use: str) -> None:
    command.add_argument(
        "--state-file",
        metavar="FILE",
        default=None,
        help=f"local state (default: $EIC_GUARD_STATE_FILE, else {DEFAULT_STATE_FILE}; a folder given must exist); "
        + use,
    )


def state_file(args: argparse.Namespace) -> str:
    """--state-file, else $EIC_GUARD_STATE_FILE, else ~/.eic-guard/state.json. A folder the user named must exist
    (a typo must not scatter state files around); eic-guard's own default folder is created when first needed."""
    given = getattr(args, "state_file", None)
    source = "--state-file" if given else "EIC_GUARD_STATE_FILE"
    path = given or os.environ.get("EIC_GUARD_STATE_FILE")
    if not path:
        return DEFAULT_STATE_FILE
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ConfigurationError(f"{source} {path}: {folder} is not a directory")
    if not os.path.isdir(folder):
        raise ConfigurationError(f"{source} {path}: the folder {folder} does not exist")
    return path


def tag_argument(value: str) -> tuple[str, str]:
    """--tag KEY=VALUE: the opt-in tag (the key cannot hold "=" here: EIC_GUARD_TAG_KEY can)."""
    key, separator, tag_value = value.partition("=")
    if not separator or not key.strip() or not tag_value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. eic-guard:managed=true), got {value!r}")
    return key, tag_value


def split_regions(values: Iterable[str]) -> tuple[str, ...]:
    """Repeated values and comma lists, in order, without blanks or duplicates (`--region a,b --region a`)."""
    return tuple(dict.fromkeys(part.strip() for value in values for part in value.split(",") if part.strip()))


@dataclass(frozen=True)
class FanOut:
    """What the account flags ask for: the EIC_GUARD_ACCOUNTS and EIC_GUARD_MEMBER_ROLE_NAME values they override
    (None: the variable's, else the default) and the size of the thread pool."""

    accounts: str | None = None
    role_name: str | None = None
    max_workers: int = DEFAULT_MAX_WORKERS

    @property
    def source(self) -> str:
        """Where an organization-wide run was asked for (named by its one-line errors)."""
        return "--organization" if self.accounts == ORGANIZATION else f"EIC_GUARD_ACCOUNTS={ORGANIZATION}"


def resolve_fan_out(args: argparse.Namespace) -> FanOut:
    """--account, --organization, --role-name and --max-workers, checked before anything reads AWS."""
    flags = getattr(args, "accounts", None)
    organization = getattr(args, "organization", False)
    if organization and flags is not None:
        raise ConfigurationError("--organization and --account exclude each other: give one of them")
    accounts = None
    if organization:
        accounts = ORGANIZATION
    elif flags is not None:
        ids = split_regions(flags)
        if not ids:
            raise ConfigurationError("--account needs a 12-digit account id")
        bad = [i for i in ids if not ACCOUNT_ID.match(i)]
        if bad:
            raise ConfigurationError(f"--account: not a 12-digit account id: {', '.join(bad)}")
        accounts = ",".join(ids)
    role_name = getattr(args, "role_name", None)
    if role_name is not None and not ROLE_NAME.match(role_name):
        raise ConfigurationError(f"--role-name: not an IAM role name (1-64 letters, digits or +=,.@_-): {role_name!r}")
    raw = getattr(args, "max_workers", None)
    workers = DEFAULT_MAX_WORKERS
    if raw is not None:
        try:
            workers = int(raw, 10)
        except ValueError:
            workers = 0
        if not 1 <= workers <= MAX_WORKERS:
            raise ConfigurationError(f"--max-workers: expected a whole number from 1 to {MAX_WORKERS}, got {raw!r}")
    return FanOut(accounts, role_name, workers)


def resolve_regions(
    flags: Sequence[str] | None, env: Mapping[str, str], profile_region: Callable[[], str | None]
) -> tuple[tuple[str, ...], str]:
    """The regions to work on and where they came from, in docs/architecture.md §5's order (see REGION_VARIABLES).

    The profile's region is asked for last and only if needed: reading it opens the AWS configuration files.
    """
    if flags is not None:
        regions = split_regions(flags)
        if not regions:
            raise ConfigurationError("--region needs a region name")
        return regions, "--region"
    for name in REGION_VARIABLES:
        value = (env.get(name) or "").strip()
        if value:
            # Only EIC_GUARD_REGIONS is a list; AWS_REGION=a,b is kept whole and refused as an unknown region.
            return (split_regions([value]) if name == "EIC_GUARD_REGIONS" else (value,)), name
    region = profile_region()
    if region:
        return (region,), "the AWS profile"
    raise ConfigurationError(
        "no region: pass --region, set EIC_GUARD_REGIONS, AWS_REGION or AWS_DEFAULT_REGION, "
        "or give the AWS profile a region"
    )
