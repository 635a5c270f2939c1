"""guidance_for: what a person should do about each check that does not pass, with an AWS documentation URL
(docs/architecture.md §5b). The failures come from the real checks and the engine's real rewrites, so every kind they
can produce is covered."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from botocore.exceptions import ClientError
from eic_guard import engine
from eic_guard.aws.gateway import RemediationRefused
from eic_guard.checks import al2023_ami, eic_ssh_ingress, guidance, imds_enabled, internet_route, public_ipv4
from eic_guard.checks import network_acl as nacl_check
from eic_guard.checks.guidance import guidance_for
from eic_guard.models import CheckResult, EicPrefixes, InstanceOutcome

from tests.unit.snapshots import (
    EIC_V4,
    INSTANCE_ID,
    PRIMARY_ENI,
    REGION,
    SUBNET,
    VPC,
    context,
    default_nacl_entries,
    eic_prefixes,
    group,
    image,
    instance,
    nacl_entry,
    network_acl,
    route,
    route_table,
    rule,
    snapshot,
)

V4 = str(EIC_V4)
URL = re.compile(r"https://\S+")
VERIFIED_URLS = {
    guidance.EIC_PREREQUISITES,
    guidance.EIC_INSTALL,
    guidance.EIC_ENDPOINT,
    guidance.ELASTIC_IP,
    guidance.IMDS_OPTIONS,
    guidance.INTERNET_GATEWAY,
    guidance.ROUTE_TABLES,
    guidance.NACL_RULES,
    guidance.VPC_QUOTAS,
    guidance.IP_RANGES,
}
FIXABLE = ("public-ipv4", "eic-ssh-ingress", "imds-enabled")


# ---- every failure the checks can produce --------------------------------------------------------------------------
def _evaluate(check, inst=None, eic=None, **parts):
    inst = inst or instance()
    return check.evaluate(inst, context(snapshot(inst, **parts), eic, remediate_public_ip=True))


def _image(name: str, owner: str = "137112412989", state: str = "available"):
    return _evaluate(al2023_ami, images=(image(name, owner=owner, state=state),))


def check_failures() -> list[tuple[str, CheckResult]]:
    """One result per (check, kind) the checks produce, from the checks themselves."""
    closed = (group("sg-0ssh", rule("10.0.0.0/8")),)
    deny_in = network_acl(nacl_entry(50, allow=False, protocol="6", ports=(22, 22)), *default_nacl_entries())
    deny_out = network_acl(nacl_entry(50, egress=True, allow=False), *default_nacl_entries())
    only_in = network_acl(nacl_entry(100), nacl_entry(32767, allow=False), nacl_entry(32767, egress=True, allow=False))
    only_out = network_acl(nacl_entry(100, egress=True), nacl_entry(32767, allow=False))
    unavailable = EicPrefixes(REGION, unavailable="HTTP 503 from ip-ranges.amazonaws.com")
    return [
        ("public-ipv4", _evaluate(public_ipv4, instance(public_ip=None, tags={"eic-guard:public-ip": "allowed"}))),
        ("public-ipv4", _evaluate(public_ipv4, instance(public_ip=None))),
        ("eic-ssh-ingress", _evaluate(eic_ssh_ingress, groups=closed)),
        ("eic-ssh-ingress", _evaluate(eic_ssh_ingress, instance(enis=(), groups=("sg-0ssh",)), groups=closed)),
        ("eic-ssh-ingress", _evaluate(eic_ssh_ingress, eic=eic_prefixes(ipv4=(), ipv6=()))),
        ("eic-ssh-ingress", _evaluate(eic_ssh_ingress, eic=unavailable)),
        ("imds-enabled", _evaluate(imds_enabled, instance(http_endpoint="disabled"))),
        ("internet-route", _evaluate(internet_route, route_tables=())),
        ("internet-route", _evaluate(internet_route, route_tables=(route_table("rtb-0main", main=True),))),
        (
            "internet-route",
            _evaluate(internet_route, route_tables=(route_table("rtb-0m", route(target="nat-0a"), main=True),)),
        ),
        (
            "internet-route",
            _evaluate(internet_route, route_tables=(route_table("rtb-0m", route(state="blackhole"), main=True),)),
        ),
        ("network-acl", _evaluate(nacl_check, network_acls=())),
        ("network-acl", _evaluate(nacl_check, eic=EicPrefixes(REGION))),
        ("network-acl", _evaluate(nacl_check, eic=unavailable)),
        ("network-acl", _evaluate(nacl_check, network_acls=(deny_in,))),
        ("network-acl", _evaluate(nacl_check, network_acls=(deny_out,))),
        ("network-acl", _evaluate(nacl_check, network_acls=(only_in,))),
        ("network-acl", _evaluate(nacl_check, network_acls=(only_out,))),
        ("al2023-ami", _evaluate(al2023_ami, images=())),
        ("al2023-ami", _image("al2023-ami-2023.1.20230101.0-kernel-6.1-x86_64", state="disabled")),
        ("al2023-ami", _image("amzn2-ami-hvm-2.0.20260727.0-x86_64-gp2")),
        ("al2023-ami", _image("al2023-ami-minimal-2023.1.20230101.0-kernel-6.1-x86_64")),
        ("al2023-ami", _image("al2023-ami-ecs-hvm-2023.0.20230101-kernel-6.1-x86_64")),
        ("al2023-ami", _image("al2023-ami-2023.1.20230101.0-kernel-6.1-x86_64", owner="111122223333")),
        ("al2023-ami", _image("ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20260801", owner="099720109477")),
        ("al2023-ami", _image("rhel-9.4-custom", owner="111122223333")),
    ]


def _refused(result: CheckResult) -> CheckResult:
    return engine._after_failed_fix(result, RemediationRefused("a group named eic-guard-ssh is not ours"), "")


def _failed_fix(result: CheckResult, code: str) -> CheckResult:
    error = ClientError({"Error": {"Code": code, "Message": code}}, "ModifyNetworkInterfaceAttribute")
    return engine._after_failed_fix(result, error, code)


def _outcome_with(check_id: str, result: CheckResult, blocker: str | None = None) -> InstanceOutcome:
    outcome = InstanceOutcome(INSTANCE_ID, REGION, VPC)
    outcome.checks[check_id] = result
    if blocker:
        outcome.checks[blocker] = CheckResult("fail", "blocked", kind="no-default-route")
    return outcome


def engine_rewrites() -> list[tuple[str, CheckResult]]:
    """What the engine makes of every fixable failure: fixed, would-fix, blocked, held, refused, failed, quota..."""
    found = []
    for check_id, result in check_failures():
        if result.fix is None:
            continue
        blocked = _outcome_with(check_id, result, "internet-route")
        engine.hold_blocked_fixes(blocked)
        held = _outcome_with(check_id, result)
        engine.hold_for_next_round(held)
        found += [
            (check_id, replace(result, status="fixed", fix=None)),
            (check_id, replace(result, status="would-fix", fix=None)),
            (check_id, blocked.checks[check_id]),
            (check_id, held.checks[check_id]),
            (check_id, _refused(result)),
            (check_id, _failed_fix(result, "UnauthorizedOperation")),
            (check_id, _failed_fix(result, "InvalidInstanceID.NotFound")),
            (check_id, _failed_fix(result, "SecurityGroupsPerInterfaceLimitExceeded")),
            (check_id, _failed_fix(result, "RulesPerSecurityGroupLimitExceeded")),
        ]
    bug = CheckResult("error", "KeyError: 'x'", kind="check-bug")
    return found + [(check_id, bug) for check_id in ("network-acl", "al2023-ami")]


EVERY = check_failures() + engine_rewrites()


def test_the_checks_produce_every_kind_the_guidance_knows():
    # Given every failure the checks and the engine produce
    # When
    kinds = {(check_id, result.kind) for check_id, result in EVERY}

    # Then each failure has a kind (no check fails without one)
    assert all(kind for _, kind in kinds), sorted(kinds, key=str)
    assert {kind for _, kind in kinds} >= {
        "no-public-ipv4",
        "public-ip-not-allowed",
        "ssh-not-allowed",
        "no-interface",
        "no-eic-prefix",
        "ranges-unavailable",
        "imds-disabled",
        "no-route-table",
        "no-default-route",
        "route-not-igw",
        "route-not-active",
        "no-nacl",
        "nacl-inbound-deny",
        "nacl-outbound-deny",
        "nacl-inbound-default-deny",
        "nacl-outbound-default-deny",
        "ami-unknown",
        "ami-not-allowed",
        "sg-quota",
        "instance-vanished",
        "check-bug",
    }


@pytest.mark.parametrize(
    ("check_id", "result"), EVERY, ids=[f"{c}-{r.status}-{r.kind}-{i}" for i, (c, r) in enumerate(EVERY)]
)
def test_every_non_passing_result_has_short_guidance_with_a_verified_aws_documentation_url(check_id, result):
    # When
    text = guidance_for(check_id, result)

    # Then one or two sentences (at most ~300 characters besides the URLs), ending with AWS documentation
    assert text is not None
    urls = URL.findall(text)
    assert urls and set(urls) <= VERIFIED_URLS, urls
    assert all(url.startswith("https://docs.aws.amazon.com/") for url in urls)
    assert text.endswith(urls[-1])
    prose = URL.sub("", text)
    assert len(prose) <= 320, prose
    assert "None" not in prose, text


@pytest.mark.parametrize("status", ["pass", "not-applicable"])
@pytest.mark.parametrize("check_id", [*FIXABLE, "al2023-ami", "internet-route", "network-acl"])
def test_pass_and_not_applicable_have_no_guidance(check_id, status):
    # Given a passing (or not applicable) result, even one that carries a warning
    result = CheckResult(status, "fine", warnings=("ssh-open-to-internet: sg-0a allows TCP 22 from 0.0.0.0/0",))

    # When / Then
    assert guidance_for(check_id, result) is None


# ---- exact texts of the important ones -----------------------------------------------------------------------------
def test_nacl_guidance_names_both_allow_rules_numbered_before_the_denying_rules():
    # Given inbound TCP 22 denied at 50 (49 taken) and outbound allowing only TCP 80-443 at 100, then the * rules
    acl = network_acl(
        nacl_entry(49, cidr="10.0.0.0/8"),
        nacl_entry(50, allow=False, protocol="6", ports=(22, 22)),
        nacl_entry(100),
        nacl_entry(32767, allow=False),
        nacl_entry(100, egress=True, protocol="6", ports=(80, 443)),
        nacl_entry(32767, egress=True, allow=False),
    )
    result = _evaluate(nacl_check, network_acls=(acl,))

    # When
    text = guidance_for("network-acl", result)

    # Then
    assert text == (
        f"In acl-0aaa, add inbound rule 48 allowing TCP 22 from {V4} (before deny rule 50) and add outbound rule "
        f"110 allowing TCP 1024-65535 to {V4}. See https://docs.aws.amazon.com/vpc/latest/userguide/nacl-rules.html"
    )


def test_nacl_guidance_without_a_free_number_says_to_replace_the_rule():
    # Given TCP 22 denied by rule 1
    acl = network_acl(nacl_entry(1, allow=False), *default_nacl_entries())

    # When
    text = guidance_for("network-acl", _evaluate(nacl_check, network_acls=(acl,)))

    # Then
    assert text == (
        f"In acl-0aaa, replace inbound deny rule 1 (no free number comes before it) to allow TCP 22 from {V4}. "
        "See https://docs.aws.amazon.com/vpc/latest/userguide/nacl-rules.html"
    )


@pytest.mark.parametrize(
    ("tables", "expected"),
    [
        (
            (route_table("rtb-0own", subnets=(SUBNET,)), route_table("rtb-0pub", route(), subnets=("subnet-0b",))),
            "Add the route 0.0.0.0/0 -> igw-0aaa to rtb-0own.",
        ),
        (
            (route_table("rtb-0main", main=True),),
            "Add the route 0.0.0.0/0 -> the VPC's internet gateway to rtb-0main (the VPC's main table: every subnet "
            "without its own table uses it); if vpc-0aaa has none, create and attach one first.",
        ),
    ],
    ids=["gateway-known", "no-gateway-seen"],
)
def test_route_guidance_names_the_route_to_add(tables, expected):
    # When
    text = guidance_for("internet-route", _evaluate(internet_route, route_tables=tables))

    # Then
    assert text == f"{expected} See https://docs.aws.amazon.com/vpc/latest/userguide/VPC_Internet_Gateway.html"


def test_a_route_to_a_nat_gateway_offers_the_gateway_or_an_endpoint():
    # Given a private subnet: 0.0.0.0/0 to a NAT gateway, while the public table routes to igw-0aaa
    tables = (
        route_table("rtb-0private", route(target="nat-0abc"), subnets=(SUBNET,)),
        route_table("rtb-0public", route(), subnets=("subnet-0b",)),
    )

    # When
    text = guidance_for("internet-route", _evaluate(internet_route, route_tables=tables))

    # Then
    assert text == (
        "rtb-0private sends 0.0.0.0/0 to nat-0abc, which EIC cannot come in through: point it at igw-0aaa (the "
        "subnet becomes public), or keep it private and use an EC2 Instance Connect Endpoint. See "
        f"{guidance.INTERNET_GATEWAY} and {guidance.EIC_ENDPOINT}"
    )


def test_a_blocked_fix_says_which_prerequisite_to_fix_first():
    # Given a missing SSH rule whose fix the engine held because internet-route and network-acl fail
    result = _evaluate(eic_ssh_ingress, groups=(group("sg-0ssh"),))
    outcome = _outcome_with("eic-ssh-ingress", result, "internet-route")
    outcome.checks["network-acl"] = CheckResult("fail", "denied", kind="nacl-inbound-deny")
    engine.hold_blocked_fixes(outcome)

    # When
    text = guidance_for("eic-ssh-ingress", outcome.checks["eic-ssh-ingress"])

    # Then
    assert text == (
        "Fix internet-route and network-acl first (see their guidance); eic-guard then attaches its eic-guard-ssh "
        f"group (TCP 22 from {V4}) to {PRIMARY_ENI} on the next run in remediate mode. See "
        "https://docs.aws.amazon.com/vpc/latest/userguide/VPC_Internet_Gateway.html"
    )


def test_would_fix_says_what_eic_guard_will_do_and_how_to_do_it_by_hand():
    # Given a report-mode result for two groups without SSH from EIC
    inst = instance(groups=("sg-0a", "sg-0b"))
    result = _evaluate(eic_ssh_ingress, inst, groups=(group("sg-0a"), group("sg-0b")))

    # When
    text = guidance_for("eic-ssh-ingress", replace(result, status="would-fix", fix=None))

    # Then
    assert text == (
        f"eic-guard will attach its eic-guard-ssh group (TCP 22 from {V4}) to {PRIMARY_ENI} in remediate mode; or "
        f"do it yourself: allow TCP 22 from {V4} in one of sg-0a, sg-0b. See {guidance.EIC_PREREQUISITES}"
    )


def test_fixed_says_what_changed_and_that_nothing_is_needed():
    # Given a metadata endpoint eic-guard turned on
    result = _evaluate(imds_enabled, instance(http_endpoint="disabled", http_tokens="required"))

    # When
    text = guidance_for("imds-enabled", replace(result, status="fixed", fix=None))

    # Then
    assert text == (
        "eic-guard enabled the metadata endpoint (HttpTokens stays required); nothing to do. See "
        "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-IMDS-existing-instances.html"
    )


def test_a_failed_fix_names_the_error_and_the_permission_and_says_the_next_run_retries():
    # When
    text = guidance_for("imds-enabled", _failed_fix(_evaluate(imds_enabled, instance(http_endpoint="disabled")), "X"))

    # Then
    assert text == (
        "eic-guard could not enable the metadata endpoint (HttpTokens stays required) (X); the next run retries. If "
        "this repeats, check that its role allows ec2:ModifyInstanceMetadataOptions, or set the instance's metadata "
        f"service to Enable (Modify instance metadata options). See {guidance.IMDS_OPTIONS}"
    )


def test_a_security_group_quota_says_to_remove_a_group_or_raise_the_quota():
    # When
    quota = _failed_fix(
        _evaluate(eic_ssh_ingress, groups=(group("sg-0ssh"),)), "SecurityGroupsPerInterfaceLimitExceeded"
    )

    # Then
    assert guidance_for("eic-ssh-ingress", quota) == (
        f"{PRIMARY_ENI} is at its security-group quota (SecurityGroupsPerInterfaceLimitExceeded), so eic-guard "
        "cannot attach eic-guard-ssh: remove a group from it or raise the 'Security groups per network interface' "
        f"quota, or allow TCP 22 from {V4} in sg-0ssh. See {guidance.VPC_QUOTAS}"
    )


@pytest.mark.parametrize(
    ("name", "owner", "family", "expected"),
    [
        (
            "amzn2-ami-hvm-2.0.20260727.0-x86_64-gp2",
            "137112412989",
            "amazon-linux-2",
            "{name} is not AL2023: relaunch from AL2023, or accept it. It ships EC2 Instance Connect: "
            "AllowedImages=eic-preinstalled accepts it.",
        ),
        (
            "amzn2-ami-hvm-2.0.20180810-x86_64-gp2",
            "137112412989",
            "amazon-linux-2",
            "{name} does not ship EC2 Instance Connect (Amazon Linux 2 2.0.20180810 predates 2.0.20190618): relaunch "
            "from AL2023 or install the ec2-instance-connect package.",
        ),
        (
            "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240927",
            "123456789012",
            "ubuntu",
            "{name} does not ship EC2 Instance Connect (not Canonical's image: owner 123456789012): relaunch from "
            "AL2023 or install the ec2-instance-connect package.",
        ),
    ],
    ids=["al2-current", "al2-2018", "ubuntu-copy"],
)
def test_amazon_linux_2_and_ubuntu_guidance_offers_eic_preinstalled_only_when_the_image_ships_it(
    name, owner, family, expected
):
    # Given the al2023-ami check's result for the image under AllowedImages=al2023
    result = _image(name, owner=owner)

    # When
    text = guidance_for("al2023-ami", result)

    # Then
    assert result.fact("family") == family
    assert text == expected.format(name=name) + (
        " See https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-instance-connect-set-up.html"
    )


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (
            (("image_id", "ami-0gone"), ("allowed_images", "al2023")),
            "ami-0gone is deregistered or unreadable, so nothing shows it ships EC2 Instance Connect: relaunch from a "
            "current AL2023 AMI, or install the ec2-instance-connect package if its OS supports it.",
        ),
    ],
)
def test_an_unknown_ami_says_to_relaunch_from_al2023(facts, expected):
    # When
    text = guidance_for("al2023-ami", CheckResult("fail", "ami-unknown", kind="ami-unknown", facts=facts))

    # Then
    assert text == f"{expected} See {guidance.EIC_INSTALL}"


def test_al2023_minimal_says_to_install_the_package_or_use_standard_al2023():
    # Given
    name = "al2023-ami-minimal-2023.1.20230101.0-kernel-6.1-x86_64"
    result = CheckResult(
        "fail", "x", kind="ami-not-allowed", facts=(("image_name", name), ("family", "al2023-minimal"))
    )

    # When / Then
    assert guidance_for("al2023-ami", result) == (
        f"{name} is AL2023 minimal, which lacks EC2 Instance Connect: install the ec2-instance-connect package or "
        f"relaunch from standard AL2023. See {guidance.EIC_INSTALL}"
    )


def test_no_public_ipv4_offers_the_elastic_ip_opt_in_or_an_endpoint():
    # Given default settings (no RemediatePublicIp)
    inst = instance(public_ip=None)
    result = public_ipv4.evaluate(inst, context(snapshot(inst)))

    # When / Then
    assert guidance_for("public-ipv4", result) == (
        f"EIC from the console needs a public IPv4 address: associate an Elastic IP with {PRIMARY_ENI} (or set "
        "RemediatePublicIp=true and eic-guard does it); for an instance meant to stay private, use an EC2 Instance "
        f"Connect Endpoint instead. See {guidance.ELASTIC_IP} and {guidance.EIC_ENDPOINT}"
    )


def test_out_of_time_says_the_next_round_continues():
    # Given
    outcome = _outcome_with("imds-enabled", _evaluate(imds_enabled, instance(http_endpoint="disabled")))
    engine.hold_for_next_round(outcome)

    # When / Then
    assert guidance_for("imds-enabled", outcome.checks["imds-enabled"]) == (
        "Out of time in this round: eic-guard enables the metadata endpoint (HttpTokens stays required) in the next "
        f"round or run; nothing to do. See {guidance.IMDS_OPTIONS}"
    )


@pytest.mark.parametrize(
    ("code", "what"),
    [
        ("SecurityGroupsPerInterfaceLimitExceeded", "the network interface is at its security-group quota"),
        ("RulesPerSecurityGroupLimitExceeded", "the eic-guard-ssh group is at its rules quota"),
    ],
)
def test_a_quota_refusal_says_which_quota_was_reached(code, what):
    # Given a failing SSH check whose fix EC2 refused for a quota
    result = CheckResult("fail", "TCP 22 not allowed from 18.206.107.24/29", kind="ssh-not-allowed")

    # When the engine records the failed fix
    after = _failed_fix(result, code)

    # Then the reason names the quota that was reached, not the other one
    assert (after.status, after.kind) == ("fail", "sg-quota")
    assert after.reason == f"TCP 22 not allowed from 18.206.107.24/29; cannot fix: {what} ({code})"


# ---- the endpoint path (docs/architecture.md §13) ------------------------------------------------------------------
EICE_SG = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/eice-security-groups.html"
EICE_CREATE = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/create-ec2-instance-connect-endpoints.html"
EICE_ABOUT = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/connect-with-ec2-instance-connect-endpoint.html"
EICE_QUOTAS = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/eice-quotas.html"
EICE_DELETE = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/delete-ec2-instance-connect-endpoint.html"


@pytest.mark.parametrize(
    ("check_id", "kind", "facts", "says", "url"),
    [
        (
            "endpoint-present",
            "no-endpoint",
            {"vpc_id": "vpc-0a", "subnet_id": "subnet-0b", "create_endpoints": "false"},
            "Create one EC2 Instance Connect Endpoint in vpc-0a, for example in subnet-0b",
            EICE_CREATE,
        ),
        (
            "endpoint-present",
            "endpoint-creating",
            {"vpc_id": "vpc-0a", "endpoint_id": "eice-0c"},
            "being created",
            EICE_CREATE,
        ),
        ("endpoint-present", "endpoint-ipv6-only", {"endpoint_id": "eice-0c"}, "dualstack", EICE_CREATE),
        (
            "endpoint-present",
            "endpoint-deleting",
            {"vpc_id": "vpc-0a", "endpoint_id": "eice-0c", "state": "delete-in-progress", "create_endpoints": "true"},
            "eice-0c in vpc-0a is being deleted and holds the VPC's endpoint quota until it is gone: wait for the "
            "deletion to finish (minutes); once it is gone, eic-guard creates a new one on its next run.",
            EICE_DELETE,
        ),
        (
            "endpoint-present",
            "endpoint-deleting",
            {"vpc_id": "vpc-0a", "endpoint_id": "eice-0c", "state": "delete-failed", "create_endpoints": "false"},
            "delete it by hand (aws ec2 delete-instance-connect-endpoint --instance-connect-endpoint-id eice-0c); once "
            "it is gone, create one (or set CreateEndpoints=true and eic-guard does it).",
            EICE_DELETE,
        ),
        ("endpoint-present", "endpoints-unreadable", {}, "ec2:DescribeInstanceConnectEndpoints", EICE_ABOUT),
        ("endpoint-present", "endpoint-quota", {}, "quota is reached", EICE_QUOTAS),
        (
            "endpoint-ssh-ingress",
            "ssh-not-allowed-from-endpoint",
            {"endpoint_groups": "sg-0e", "eni_id": "eni-0i"},
            "Add an inbound rule TCP 22 from sg-0e (by reference) to a group of eni-0i",
            EICE_SG,
        ),
        (
            "endpoint-ssh-ingress",
            "no-endpoint",
            {"vpc_id": "vpc-0a"},
            "vpc-0a has no EC2 Instance Connect Endpoint",
            EICE_SG,
        ),
        (
            "endpoint-ssh-egress",
            "ssh-egress-not-allowed",
            {"endpoint_groups": "sg-0e", "group_ids": "sg-0app,sg-0x", "private_ip": "10.0.2.7", "owned": "false"},
            "Add to sg-0e an outbound rule allowing TCP 22 to the instance's group sg-0app (by reference) or its "
            "address 10.0.2.7/32 (eic-guard changes only the group of an endpoint it created)",
            EICE_SG,
        ),
        ("network-acl", "nacl-endpoint-unknown", {"vpc_id": "vpc-0a"}, "once the VPC's endpoint exists", EICE_ABOUT),
    ],
)
def test_each_endpoint_path_failure_says_what_to_do_with_its_page(check_id, kind, facts, says, url):
    # Given a failure of the endpoint path as its check reports it
    result = CheckResult("fail", "why", kind=kind, facts=tuple(facts.items()))

    # When its guidance is written
    text = guidance_for(check_id, result)

    # Then it says what to do, exactly, and links the EC2 User Guide page about it
    assert says in text and url in text


def test_a_planned_endpoint_says_what_eic_guard_will_create():
    # Given report mode with CreateEndpoints on: endpoint-present would create the VPC's endpoint
    facts = (("vpc_id", "vpc-0a"), ("subnet_id", "subnet-0b"), ("create_endpoints", "true"))
    result = CheckResult("would-fix", "no endpoint", kind="no-endpoint", facts=facts)

    # When its guidance is written / Then it names what remediate mode creates, and where
    text = guidance_for("endpoint-present", result)
    assert "an EC2 Instance Connect Endpoint in subnet-0b of vpc-0a" in text and EICE_CREATE in text
