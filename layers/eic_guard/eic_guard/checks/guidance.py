"""What a person should do about a check that does not pass (docs/architecture.md §5b `guidance`).

One or two sentences built from the result's `kind` and `facts` (the route table, the NACL rule numbers, the
prefix...), ending with " See <AWS documentation URL>". Every URL below was checked against the AWS documentation;
add none that was not.

The engine's rewrites come first, whatever the check: an instance gone, a bug, a security-group quota, a fix that
failed or was refused, a fix blocked by a network prerequisite, a fix left for the next round; then `fixed` and
`would-fix` say what eic-guard did or will do; then each check's own failure kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..models import CheckResult

SILENT = ("pass", "not-applicable")

EIC_PREREQUISITES = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-instance-connect-prerequisites.html"
EIC_INSTALL = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-instance-connect-set-up.html"
EIC_ENDPOINT = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/connect-with-ec2-instance-connect-endpoint.html"
EICE_SECURITY_GROUPS = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/eice-security-groups.html"
ELASTIC_IP = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/elastic-ip-addresses-eip.html"
IMDS_OPTIONS = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-IMDS-existing-instances.html"
INTERNET_GATEWAY = "https://docs.aws.amazon.com/vpc/latest/userguide/VPC_Internet_Gateway.html"
ROUTE_TABLES = "https://docs.aws.amazon.com/vpc/latest/userguide/VPC_Route_Tables.html"
NACL_RULES = "https://docs.aws.amazon.com/vpc/latest/userguide/nacl-rules.html"
VPC_QUOTAS = "https://docs.aws.amazon.com/vpc/latest/userguide/amazon-vpc-limits.html"
IP_RANGES = "https://docs.aws.amazon.com/vpc/latest/userguide/aws-ip-ranges.html"

# The page about each prerequisite: every guidance of that check links it unless a more specific page fits.
DOCS = {
    "public-ipv4": ELASTIC_IP,
    "eic-ssh-ingress": EIC_PREREQUISITES,
    "al2023-ami": EIC_INSTALL,
    "imds-enabled": IMDS_OPTIONS,
    "internet-route": INTERNET_GATEWAY,
    "network-acl": NACL_RULES,
    "endpoint-present": EIC_ENDPOINT,
    "endpoint-ssh-ingress": EICE_SECURITY_GROUPS,
    "endpoint-ssh-egress": EICE_SECURITY_GROUPS,
}


def guidance_for(check_id: str, result: CheckResult) -> str | None:
    """One or two sentences with an AWS documentation URL, for every status other than pass and not-applicable."""
    if result.status in SILENT:
        return None
    fix = _FIXES.get(check_id)
    text = _rewritten(check_id, result, fix)
    if text is None and fix is not None and result.status in ("fixed", "would-fix"):
        text = _done_or_planned(result, fix)
    if text is None:
        text = _CHECKS.get(check_id, _unknown_check)(result)
    return text


def _see(text: str, *urls: str) -> str:
    return f"{text} See {' and '.join(urls)}"


# ---- what eic-guard fixes, in the words the guidance needs ---------------------------------------------------------
@dataclass(frozen=True)
class FixWords:
    """A fix said three ways ("attach" / "attaches" / "attached" + its object), and how to do it by hand."""

    verb: str
    third: str
    past: str
    what: Callable[[CheckResult], str]
    by_hand: Callable[[CheckResult], str]
    permission: str  # the IAM action a failed fix most likely lacks
    url: str

    def will(self, result: CheckResult) -> str:
        return f"{self.verb} {self.what(result)}"


def _in_groups(result: CheckResult) -> str:
    groups = [g for g in (result.fact("group_ids") or "").split(",") if g]
    if not groups:
        return "in a group of the instance"
    return f"in {groups[0]}" if len(groups) == 1 else f"in one of {', '.join(groups)}"


def _ssh_by_hand(result: CheckResult) -> str:
    prefix_list = result.fact("prefix_list")
    source = result.fact("missing") or "the EIC prefixes"
    if prefix_list:
        source += f" (or the prefix list {prefix_list})"
    return f"allow TCP 22 from {source} {_in_groups(result)}"


def _eni(result: CheckResult) -> str:
    return result.fact("eni_id") or "the instance's network interface"


_FIXES = {
    "eic-ssh-ingress": FixWords(
        "attach",
        "attaches",
        "attached",
        lambda r: f"its eic-guard-ssh group (TCP 22 from {r.fact('missing') or 'the EIC prefixes'}) to {_eni(r)}",
        _ssh_by_hand,
        "ec2:ModifyNetworkInterfaceAttribute",
        EIC_PREREQUISITES,
    ),
    "imds-enabled": FixWords(
        "enable",
        "enables",
        "enabled",
        lambda r: f"the metadata endpoint (HttpTokens stays {r.fact('http_tokens') or 'as it is'})",
        lambda r: "set the instance's metadata service to Enable (Modify instance metadata options)",
        "ec2:ModifyInstanceMetadataOptions",
        IMDS_OPTIONS,
    ),
    "public-ipv4": FixWords(
        "associate",
        "associates",
        "associated",
        lambda r: f"an Elastic IP tagged ManagedBy=eic-guard with {_eni(r)}",
        lambda r: f"allocate an Elastic IP and associate it with {_eni(r)}",
        "ec2:AssociateAddress",
        ELASTIC_IP,
    ),
}


# ---- the engine's rewrites (any check) -----------------------------------------------------------------------------
def _rewritten(check_id: str, result: CheckResult, fix: FixWords | None) -> str | None:
    url = fix.url if fix else DOCS.get(check_id, EIC_PREREQUISITES)
    if result.kind == "instance-vanished":
        return _see("The instance was terminated or disappeared during the run: nothing to do.", url)
    if result.kind == "check-bug":
        return _see(
            f"eic-guard failed to evaluate {check_id} (a bug in eic-guard, not your setup): please report it with "
            "this reason; the other checks still ran.",
            url,
        )
    if result.kind == "sg-quota":
        return _quota(result)
    if fix is None:
        return None
    if code := result.fact("fix_failed"):
        return _see(
            f"eic-guard could not {fix.will(result)} ({code}); the next run retries. If this repeats, check that "
            f"its role allows {fix.permission}, or {fix.by_hand(result)}.",
            url,
        )
    if refused := result.fact("refused"):
        return _see(
            f"eic-guard did not {fix.verb} {fix.what(result)}: {refused}. {_capital(fix.by_hand(result))}.", url
        )
    if blocked_by := result.fact("blocked_by"):
        blockers = [b for b in blocked_by.split(",") if b] or ["the network prerequisites"]
        their = "its" if len(blockers) == 1 else "their"
        return _see(
            f"Fix {' and '.join(blockers)} first (see {their} guidance); eic-guard then {fix.third} "
            f"{fix.what(result)} on the next run in remediate mode.",
            DOCS.get(blockers[0], url),
        )
    if result.fact("held"):
        return _see(
            f"Out of time in this round: eic-guard {fix.third} {fix.what(result)} in the next round or run; nothing "
            "to do.",
            url,
        )
    return None


def _quota(result: CheckResult) -> str:
    code = result.fact("error_code")
    if code == "RulesPerSecurityGroupLimitExceeded":
        return _see(
            f"eic-guard-ssh in {result.fact('vpc_id') or 'the VPC'} is at the rules-per-security-group quota, so it "
            f"cannot take every EIC prefix: raise that VPC quota, or {_ssh_by_hand(result)}.",
            VPC_QUOTAS,
        )
    eni = result.fact("eni_id") or "The network interface"
    return _see(
        f"{eni} is at its security-group quota ({code}), so eic-guard cannot attach "
        "eic-guard-ssh: remove a group from it or raise the 'Security groups per network interface' quota, or "
        f"{_ssh_by_hand(result)}.",
        VPC_QUOTAS,
    )


def _done_or_planned(result: CheckResult, fix: FixWords) -> str:
    if result.status == "fixed":
        return _see(f"eic-guard {fix.past} {fix.what(result)}; nothing to do.", fix.url)
    return _see(
        f"eic-guard will {fix.will(result)} in remediate mode; or do it yourself: {fix.by_hand(result)}.", fix.url
    )


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


# ---- each check's own failures ---------------------------------------------------------------------------------------
def _public_ipv4(result: CheckResult) -> str:
    if result.kind == "public-ip-not-allowed":
        return _see(
            f"EIC from the console needs a public IPv4 address. RemediatePublicIp gives {_eni(result)} an Elastic IP "
            "only once an eic-guard admin tags the instance eic-guard:public-ip=allowed (a public address is an "
            "exposure of its own); or use an EC2 Instance Connect Endpoint to keep it private.",
            ELASTIC_IP,
            EIC_ENDPOINT,
        )
    opt_in = (
        "" if result.fact("remediate_public_ip") == "true" else " (or set RemediatePublicIp=true and eic-guard does it)"
    )
    return _see(
        f"EIC from the console needs a public IPv4 address: associate an Elastic IP with {_eni(result)}{opt_in}; "
        "for an instance meant to stay private, use an EC2 Instance Connect Endpoint instead.",
        ELASTIC_IP,
        EIC_ENDPOINT,
    )


def _no_prefix(result: CheckResult) -> str:
    return _see(
        f"AWS publishes no EC2_INSTANCE_CONNECT range for {result.fact('region') or 'this region'}, so there is "
        "nothing to allow yet; eic-guard checks again on every run. An EC2 Instance Connect Endpoint works meanwhile.",
        IP_RANGES,
        EIC_ENDPOINT,
    )


def _ranges_unavailable(result: CheckResult) -> str:
    return _see(
        f"eic-guard could not read ip-ranges.json ({result.fact('error') or 'unreadable'}); the next run "
        "retries. Check that it can reach ip-ranges.amazonaws.com.",
        IP_RANGES,
    )


def _eic_ssh_ingress(result: CheckResult) -> str:
    if result.kind == "ranges-unavailable":
        return _ranges_unavailable(result)
    if result.kind == "no-eic-prefix":
        return _no_prefix(result)
    if result.kind == "no-interface":
        return _see(
            f"{_capital(_ssh_by_hand(result))}: eic-guard found no network interface to attach its group to.",
            EIC_PREREQUISITES,
        )
    return _see(
        f"{_capital(_ssh_by_hand(result))}, or let eic-guard attach its eic-guard-ssh group in remediate mode.",
        EIC_PREREQUISITES,
    )


def _imds_enabled(result: CheckResult) -> str:
    return _see(
        "EIC pushes its key through instance metadata: set the metadata service to Enable (keep IMDSv2 required), "
        "or let eic-guard do it in remediate mode.",
        IMDS_OPTIONS,
    )


_EIC_PREINSTALLED = " It ships EC2 Instance Connect: AllowedImages=eic-preinstalled accepts it."


def _al2023_ami(result: CheckResult) -> str:
    image = result.fact("image_name") or result.fact("image_id") or "the image"
    family = result.fact("family")
    install = "install the ec2-instance-connect package"
    if result.kind == "ami-unknown":
        text = (
            f"{result.fact('image_id') or 'The AMI'} is deregistered or unreadable, so nothing shows it ships EC2 "
            f"Instance Connect: relaunch from a current AL2023 AMI, or {install} if its OS supports it."
        )
    elif family in ("al2023-minimal", "ecs-optimized"):
        what = "AL2023 minimal" if family == "al2023-minimal" else "an ECS-optimized AMI"
        text = f"{image} is {what}, which lacks EC2 Instance Connect: {install} or relaunch from standard AL2023."
    elif family == "al2023":
        text = (
            f"{image} (owner {result.fact('owner_id')}) is not Amazon's AL2023 standard image: relaunch from Amazon's "
            f"AL2023 AMI or {install}."
        )
    elif result.fact("preinstalled") == "yes" and result.fact("allowed_images") == "al2023":
        text = f"{image} is not AL2023: relaunch from AL2023, or accept it.{_EIC_PREINSTALLED}"
    elif family in ("amazon-linux-2", "ubuntu"):
        text = f"{image} does not ship EC2 Instance Connect ({_why_not(result)}): relaunch from AL2023 or {install}."
    else:
        text = (
            f"{image} is not an image listed with EC2 Instance Connect pre-installed: relaunch from AL2023 or "
            f"{install} (supported OSes on the page)."
        )
    return _see(text, EIC_INSTALL)


def _why_not(result: CheckResult) -> str:
    """Why an Amazon Linux 2 or Ubuntu image is not one AWS lists with EIC pre-installed: its age or its owner."""
    version = result.fact("version")
    if result.fact("family") == "amazon-linux-2":
        first = "2.0.20190618"
        return f"Amazon Linux 2 {version} predates {first}" if version and version < first else "not Amazon's image"
    if version and tuple(int(p) for p in version.split(".")) < (20, 4):
        return f"Ubuntu {version} predates 20.04"
    return f"not Canonical's image: owner {result.fact('owner_id')}"


def _internet_route(result: CheckResult) -> str:
    table = result.fact("route_table_id")
    igw = result.fact("igw_id")
    gateway = igw or "the VPC's internet gateway"
    attach = "" if igw else f"; if {result.fact('vpc_id') or 'the VPC'} has none, create and attach one first"
    shared = " (the VPC's main table: every subnet without its own table uses it)"
    main = shared if result.fact("association") == "main" else ""
    if result.kind == "no-route-table":
        return _see(
            f"No route table applies to {result.fact('subnet_id')}: associate one that routes 0.0.0.0/0 to the "
            "VPC's internet gateway.",
            ROUTE_TABLES,
        )
    if result.kind == "route-not-igw":
        return _see(
            f"{table} sends 0.0.0.0/0 to {result.fact('target') or 'a target'}, which EIC cannot come in through: "
            f"point it at {gateway} (the subnet becomes public){attach}, or keep it private and use an EC2 "
            "Instance Connect Endpoint.",
            INTERNET_GATEWAY,
            EIC_ENDPOINT,
        )
    if result.kind == "route-not-active":
        return _see(
            f"The route 0.0.0.0/0 -> {result.fact('target')} in {table} is {result.fact('state')} (the gateway was "
            f"detached or deleted): attach an internet gateway to {result.fact('vpc_id') or 'the VPC'} and point "
            "the route at it.",
            INTERNET_GATEWAY,
        )
    if table:
        return _see(f"Add the route 0.0.0.0/0 -> {gateway} to {table}{main}{attach}.", INTERNET_GATEWAY)
    return _see("Route 0.0.0.0/0 to the VPC's internet gateway in the subnet's route table.", INTERNET_GATEWAY)


_NACL_DIRECTIONS = (("in", "inbound", "TCP 22 from"), ("out", "outbound", "TCP 1024-65535 to"))


def _network_acl(result: CheckResult) -> str:
    if result.kind == "ranges-unavailable":
        return _ranges_unavailable(result)
    if result.kind == "no-eic-prefix":
        return _no_prefix(result)
    nacl, prefix = result.fact("nacl_id"), result.fact("prefix")
    steps = [_nacl_step(result, key, direction, traffic, prefix) for key, direction, traffic in _NACL_DIRECTIONS]
    steps = [step for step in steps if step]
    if not nacl or not steps:
        return _see(
            f"No network ACL was found for {result.fact('subnet_id') or 'the subnet'}: check that eic-guard's role "
            "allows ec2:DescribeNetworkAcls; the next run checks again.",
            NACL_RULES,
        )
    return _see(f"In {nacl}, {' and '.join(steps)}.", NACL_RULES)


def _nacl_step(result: CheckResult, key: str, direction: str, traffic: str, prefix: str | None) -> str | None:
    """The allow rule one direction needs, numbered to come before the rule that denies it now."""
    rule = result.fact(f"{key}_rule")
    if rule is None or prefix is None:
        return None
    free = result.fact(f"{key}_free")
    if not free:
        return f"replace {direction} deny rule {rule} (no free number comes before it) to allow {traffic} {prefix}"
    before = "" if rule == "*" else f" (before deny rule {rule})"
    return f"add {direction} rule {free} allowing {traffic} {prefix}{before}"


def _unknown_check(result: CheckResult) -> str:
    return _see("EC2 Instance Connect needs every prerequisite eic-guard checks.", EIC_PREREQUISITES)


_CHECKS: dict[str, Callable[[CheckResult], str]] = {
    "public-ipv4": _public_ipv4,
    "eic-ssh-ingress": _eic_ssh_ingress,
    "al2023-ami": _al2023_ami,
    "imds-enabled": _imds_enabled,
    "internet-route": _internet_route,
    "network-acl": _network_acl,
}
