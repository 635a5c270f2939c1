"""What a person should do about a check that does not pass (docs/architecture.md §5b `guidance`).

One or two sentences built from the result's `kind` and `facts` (the route table, the NACL rule numbers, the
prefix...), ending with " See <AWS documentation URL>". Every URL below was checked against the AWS documentation;
add none that was not.

The engine's rewrites come first, whatever the check: an instance gone, a bug, a security-group quota, a fix that
failed or was refused, a fix made while a check it needs still fails, a fix blocked by a network prerequisite, a fix
left for the next round; then `fixed` and `would-fix` say what eic-guard did or will do; then each check's own
failure kinds.
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
EICE_CREATE = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/create-ec2-instance-connect-endpoints.html"
EICE_QUOTAS = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/eice-quotas.html"
EICE_DELETE = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/delete-ec2-instance-connect-endpoint.html"
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
    # docs/architecture.md §13: the endpoint path's fixes
    "endpoint-ssh-ingress": FixWords(
        "attach",
        "attaches",
        "attached",
        lambda r: f"its eic-guard-eice-ssh group (TCP 22 from {_endpoint_groups(r)} by reference) to {_eni(r)}",
        lambda r: f"add an inbound rule TCP 22 from {_endpoint_groups(r)} (by reference) to a group of {_eni(r)}",
        "ec2:ModifyNetworkInterfaceAttribute",
        EICE_SECURITY_GROUPS,
    ),
    "endpoint-ssh-egress": FixWords(
        "allow",
        "allows",
        "allowed",
        lambda r: f"TCP 22 out of eic-guard-eice to eic-guard-eice-ssh (on {_eni(r)})",
        lambda r: _egress_rule(r),
        "ec2:AuthorizeSecurityGroupEgress",
        EICE_SECURITY_GROUPS,
    ),
    "endpoint-present": FixWords(
        "create",
        "creates",
        "created",
        lambda r: (
            f"an EC2 Instance Connect Endpoint in {r.fact('subnet_id') or 'the subnet'} of "
            f"{r.fact('vpc_id') or 'the VPC'} (with eic-guard-eice, PreserveClientIp=false, tagged ManagedBy=eic-guard)"
        ),
        lambda r: (
            f"create one EC2 Instance Connect Endpoint in {r.fact('vpc_id') or 'the VPC'} with a security group "
            "that allows TCP 22 out to the instance"
        ),
        "ec2:CreateInstanceConnectEndpoint",
        EICE_CREATE,
    ),
}


def _endpoint_groups(result: CheckResult) -> str:
    groups = [g for g in (result.fact("endpoint_groups") or "").split(",") if g]
    return " or ".join(groups) or "the endpoint's security group"


def _egress_rule(result: CheckResult) -> str:
    """The exact outbound rule the endpoint's group needs (an endpoint eic-guard did not create is never edited)."""
    groups = [g for g in (result.fact("group_ids") or "").split(",") if g]
    target = f"the instance's group {groups[0]} (by reference)" if groups else "the instance's group"
    address = result.fact("private_ip")
    if address:
        target += f" or its address {address}/32"
    return f"add to {_endpoint_groups(result)} an outbound rule allowing TCP 22 to {target}"


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
    if result.kind == "endpoint-quota":
        return _see(
            "The account's EC2 Instance Connect Endpoint quota is reached (one per VPC, 5 per account and Region, "
            "endpoints being deleted included): delete an endpoint nobody uses, or ask for a higher quota; the run "
            "went on without this one.",
            EICE_QUOTAS,
        )
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
    if waiting_for := result.fact("waiting_for"):  # its own change is made (or planned); another check is not
        needed = " and ".join(w for w in waiting_for.split(",") if w)
        did = f"{fix.past}" if result.fact("change") == "made" else f"will {fix.verb}"
        return _see(
            f"eic-guard {did} {fix.what(result)}, but this passes only once {needed} does: fix {needed} first (see "
            "its guidance); nothing else to do here.",
            DOCS.get(needed, url),
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
    if result.kind == "nacl-endpoint-unknown":
        return _see(
            "The network ACLs between the EC2 Instance Connect Endpoint and the instance are checked once the VPC's "
            "endpoint exists and has its address (endpoint-present); nothing to do here until then.",
            EIC_ENDPOINT,
            NACL_RULES,
        )
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


# ---- the endpoint path's failures (docs/architecture.md §13) -------------------------------------------------------
def _no_endpoint_yet(result: CheckResult, then: str) -> str:
    return _see(
        f"{result.fact('vpc_id') or 'The VPC'} has no EC2 Instance Connect Endpoint yet (endpoint-present says what "
        f"to do); once it has one, {then}.",
        EIC_ENDPOINT,
        EICE_SECURITY_GROUPS,
    )


def _endpoint_present(result: CheckResult) -> str:
    vpc, endpoint = result.fact("vpc_id") or "the VPC", result.fact("endpoint_id") or "The endpoint"
    if result.kind == "endpoints-unreadable":
        return _see(
            "eic-guard could not read the EC2 Instance Connect Endpoints: check that its role allows "
            "ec2:DescribeInstanceConnectEndpoints; the next run checks again.",
            EIC_ENDPOINT,
        )
    if result.kind == "no-vpc":
        return _see("An instance outside any VPC cannot use an EC2 Instance Connect Endpoint.", EIC_ENDPOINT)
    if result.kind == "endpoint-creating":
        return _see(
            f"{endpoint} in {vpc} is being created and is usually ready within minutes: nothing to do, eic-guard "
            "checks again on its CreateInstanceConnectEndpoint event and on the next run.",
            EICE_CREATE,
        )
    if result.kind == "endpoint-deleting":
        after = "once it is gone, " + (
            "eic-guard creates a new one on its next run"
            if result.fact("create_endpoints") == "true"
            else "create one (or set CreateEndpoints=true and eic-guard does it)"
        )
        if result.fact("state") == "delete-failed":
            return _see(
                f"The deletion of {endpoint} in {vpc} failed (its state message says why) and it still holds the "
                f"VPC's endpoint quota: delete it by hand (aws ec2 delete-instance-connect-endpoint "
                f"--instance-connect-endpoint-id {endpoint}); {after}.",
                EICE_DELETE,
            )
        return _see(
            f"{endpoint} in {vpc} is being deleted and holds the VPC's endpoint quota until it is gone: wait for the "
            f"deletion to finish (minutes); {after}.",
            EICE_DELETE,
        )
    if result.kind == "endpoint-ipv6-only":
        return _see(
            f"{endpoint} in {vpc} serves only IPv6 and the instance is reached on its private IPv4 address: change "
            "the endpoint's IP address type to dualstack (or ipv4).",
            EICE_CREATE,
        )
    create = "" if result.fact("create_endpoints") == "true" else " (or set CreateEndpoints=true and eic-guard does it)"
    subnet = result.fact("subnet_id") or "the instance's subnet"
    return _see(
        f"Create one EC2 Instance Connect Endpoint in {vpc}, for example in {subnet}, with a security group that "
        f"allows TCP 22 out to the instance{create}; endpoints are free, one per VPC.",
        EICE_CREATE,
    )


def _endpoint_ssh_ingress(result: CheckResult) -> str:
    if result.kind == "no-endpoint":
        return _no_endpoint_yet(result, "allow TCP 22 in from its security group")
    if result.kind == "no-interface":
        return _see(
            "The instance has no network interface to allow TCP 22 on: check it again once it has.", EIC_ENDPOINT
        )
    return _see(
        f"Add an inbound rule TCP 22 from {_endpoint_groups(result)} (by reference) to a group of {_eni(result)}; an "
        "address range counts only when the endpoint has PreserveClientIp=false.",
        EICE_SECURITY_GROUPS,
    )


def _endpoint_ssh_egress(result: CheckResult) -> str:
    if result.kind == "no-endpoint":
        return _no_endpoint_yet(result, "its group needs TCP 22 out to the instance")
    owned = "" if result.fact("owned") == "true" else " (eic-guard changes only the group of an endpoint it created)"
    return _see(f"{_capital(_egress_rule(result))}{owned}.", EICE_SECURITY_GROUPS)


def _unknown_check(result: CheckResult) -> str:
    return _see("EC2 Instance Connect needs every prerequisite eic-guard checks.", EIC_PREREQUISITES)


_CHECKS: dict[str, Callable[[CheckResult], str]] = {
    "public-ipv4": _public_ipv4,
    "eic-ssh-ingress": _eic_ssh_ingress,
    "al2023-ami": _al2023_ami,
    "imds-enabled": _imds_enabled,
    "internet-route": _internet_route,
    "network-acl": _network_acl,
    "endpoint-present": _endpoint_present,
    "endpoint-ssh-ingress": _endpoint_ssh_ingress,
    "endpoint-ssh-egress": _endpoint_ssh_egress,
}
