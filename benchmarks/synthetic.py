"""A synthetic organization's worker results, at any size, without AWS or moto: the HTML, findings and aggregate
benchmarks (and their tests) need 100,000 or 1,000,000 instances, which no simulator seeds in minutes.

Each instance comes from a *profile* (compliant, missing the SSH rule, IMDS disabled, a foreign AMI, a NACL that
blocks 22, excluded, an error...) with the reasons and facts the real checks produce, and its report entry is built by
the real `outputs.report.instance_entry` (so the guidance is the real guidance, URLs included). Ids, names and owner
tags vary per instance, deterministically: the same arguments give the same documents.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eic_guard.checks import CHECK_IDS
from eic_guard.fanout.plan import RunPlan
from eic_guard.fanout.targets import Target
from eic_guard.models import ActionRecord, CheckResult, InstanceOutcome
from eic_guard.outputs.report import instance_entry

STARTED = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)  # when the synthetic runs start
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2")
EIC_CIDR = {"us-east-1": "18.206.107.24/29", "us-west-2": "18.237.140.160/29", "eu-west-1": "18.202.216.48/29"}
TEAMS = ("payments", "data-platform", "search", "identity", "checkout", "ml-infra", "billing", "web")
ROLES = ("web", "api", "worker", "batch", "bastion", "db-proxy", "cache", "ingest")
PASS = CheckResult("pass")


def hex_id(*parts: object, length: int = 17) -> str:
    return hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=16).hexdigest()[:length]


@dataclass(frozen=True)
class Profile:
    name: str
    weight: int  # out of 100


PROFILES = (
    Profile("compliant", 55),
    Profile("world-open", 5),  # compliant, with the TCP 22 from 0.0.0.0/0 warning
    Profile("missing-ssh", 14),
    Profile("imds-disabled", 9),
    Profile("foreign-ami", 6),
    Profile("nacl-blocks", 4),
    Profile("no-public-ip", 2),
    Profile("excluded", 3),
    Profile("error", 2),
)
_WHEEL = [p.name for p in PROFILES for _ in range(p.weight)]


def profile_of(index: int) -> str:
    """The profile of the index-th instance of a target: spread so any 100 consecutive instances hold the mix."""
    return _WHEEL[(index * 37) % len(_WHEEL)]


def _checks(profile: str, mode: str, ids: dict[str, str], region: str) -> tuple[dict[str, CheckResult], list]:
    eni, vpc, sg, ami = ids["eni"], ids["vpc"], ids["sg"], ids["ami"]
    cidr = EIC_CIDR.get(region, "3.16.146.0/29")
    checks = {check_id: PASS for check_id in CHECK_IDS}
    actions: list[ActionRecord] = []
    remediate = mode == "remediate"
    if profile == "world-open":
        checks["eic-ssh-ingress"] = CheckResult(
            "pass", warnings=(f"ssh-open-to-internet: {sg} allows TCP 22 from 0.0.0.0/0",)
        )
    elif profile == "missing-ssh":
        facts = (("missing", cidr), ("group_ids", sg), ("eni_id", eni), ("vpc_id", vpc))
        status = "fixed" if remediate else "would-fix"
        checks["eic-ssh-ingress"] = CheckResult(
            status, f"TCP 22 not allowed from {cidr}", kind="ssh-not-allowed", facts=facts
        )
        actions.append(
            ActionRecord(
                "attach-managed-group",
                eni,
                "done" if remediate else "planned",
                f"attach eic-guard-ssh to {eni} keeping {sg}",
            )
        )
    elif profile == "imds-disabled":
        facts = (("http_tokens", "required"),)
        status = "fixed" if remediate else "would-fix"
        checks["imds-enabled"] = CheckResult(status, "metadata endpoint is disabled", kind="imds-disabled", facts=facts)
        actions.append(
            ActionRecord(
                "enable-imds",
                ids["instance"],
                "done" if remediate else "planned",
                "HttpEndpoint=enabled HttpTokens=required",
            )
        )
    elif profile == "foreign-ami":
        facts = (
            ("image_id", ami),
            ("image_name", f"golden-{ami[-6:]}"),
            ("owner_id", "210987654321"),
            ("family", "other"),
        )
        checks["al2023-ami"] = CheckResult(
            "fail",
            f"{ami} (golden-{ami[-6:]}) is not owned by Amazon (210987654321)",
            kind="ami-not-allowed",
            facts=facts,
        )
    elif profile == "nacl-blocks":
        nacl = f"acl-{hex_id(vpc, 'acl')}"
        checks["network-acl"] = CheckResult(
            "fail",
            f"{nacl} inbound: rule 90 denies TCP 22 from {cidr}",
            kind="nacl-inbound-deny",
            facts=(("nacl_id", nacl), ("prefix", cidr), ("in_rule", "90"), ("in_free", "89")),
        )
        checks["eic-ssh-ingress"] = CheckResult(
            "fail",
            f"TCP 22 not allowed from {cidr}",
            kind="ssh-not-allowed",
            facts=(("missing", cidr), ("eni_id", eni), ("vpc_id", vpc), ("blocked_by", "network-acl")),
        )
    elif profile == "no-public-ip":
        checks["public-ipv4"] = CheckResult(
            "fail", "no public IPv4 address", kind="no-public-ip", facts=(("eni_id", eni),)
        )
        checks["internet-route"] = CheckResult("not-applicable", "no public IPv4 address")
    elif profile == "error":
        checks["imds-enabled"] = CheckResult(
            "error",
            "metadata endpoint is disabled; fix failed: UnauthorizedOperation",
            kind="imds-disabled",
            facts=(("fix_failed", "UnauthorizedOperation"),),
        )
        actions.append(ActionRecord("enable-imds", ids["instance"], "failed", "UnauthorizedOperation: not allowed"))
    return checks, actions


def outcome(account_id: str, region: str, index: int, mode: str) -> InstanceOutcome:
    """The index-th instance of a target, as the engine leaves it."""
    ids = {
        "instance": f"i-{hex_id(account_id, region, index)}",
        "eni": f"eni-{hex_id(account_id, region, index, 'eni')}",
        "vpc": f"vpc-{hex_id(account_id, region, index // 50, 'vpc')}",
        "sg": f"sg-{hex_id(account_id, region, index // 20, 'sg')}",
        "ami": f"ami-{hex_id(account_id, region, index // 100, 'ami')}",
    }
    profile = profile_of(index)
    team, role = TEAMS[index % len(TEAMS)], ROLES[(index // 3) % len(ROLES)]
    result = InstanceOutcome(
        instance_id=ids["instance"],
        region=region,
        vpc_id=ids["vpc"],
        account_id=account_id,
        name=f"{team}-{role}-{index:05d}",
        tags={"Owner": f"{team}-oncall@example.com", "Team": team},
    )
    if profile == "excluded":
        result.excluded_reason = "legacy bastion (until 2027-06-30)"
        return result
    result.checks, result.actions = _checks(profile, mode, ids, region)
    result.warnings = [w for r in result.checks.values() for w in r.warnings]
    return result


def target_document(account_id: str, region: str, instances: int, mode: str = "remediate") -> dict[str, Any]:
    """One target's worker result (fanout.worker.to_document's shape, one round, apply phase)."""
    return {
        "account_id": account_id,
        "region": region,
        "phase": "apply",
        "round": 1,
        "status": "ok",
        "error": None,
        "account_alias": None,
        "notes": [],
        "instances": [instance_entry(outcome(account_id, region, i, mode)) for i in range(instances)],
        "actions": [],
        "refresh": None,
        "security_hub": None,
        "finished_at": datetime(2026, 12, 7, 3, 4, tzinfo=UTC).isoformat(),
    }


def account_ids(count: int) -> list[str]:
    return [f"{100000000000 + n * 7919:012d}" for n in range(count)]


def organization(instances: int, accounts: int, regions: tuple[str, ...] = REGIONS) -> Iterator[tuple[str, str, int]]:
    """(account, region, instances) of every target, `instances` spread evenly over accounts x regions."""
    targets = [(a, r) for a in account_ids(accounts) for r in regions]
    per, extra = divmod(instances, len(targets))
    for n, (account, region) in enumerate(targets):
        yield account, region, per + (1 if n < extra else 0)


def documents(instances: int, accounts: int, regions: tuple[str, ...] = REGIONS, mode: str = "remediate"):
    """Every target's worker result, one at a time (a million instances never sit in memory at once)."""
    for account, region, count in organization(instances, accounts, regions):
        yield target_document(account, region, count, mode)


def run_plan(run_id: str, targets: list[Target], ranges: Any, mode: str = "remediate") -> RunPlan:
    """The plan of a scan of the synthetic organization from its first account, started at STARTED."""
    return RunPlan(
        run_id=run_id,
        job="scan",
        mode=mode,
        started_at=STARTED,
        own_account=account_ids(1)[0],
        ranges=ranges,
        apply_ranges=False,
        targets=targets,
    )
