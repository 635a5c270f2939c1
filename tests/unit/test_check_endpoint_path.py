"""The endpoint connect path (docs/architecture.md §13): the path each instance takes, and the pass/fail table of
endpoint-present, endpoint-ssh-ingress, endpoint-ssh-egress and network-acl on the API's shapes (endpoint in another
subnet, dualstack, PreserveClientIp on and off, group reference vs CIDR, protocol -1)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from botocore.exceptions import ClientError
from eic_guard.aws import gateway as gateway_module
from eic_guard.aws.gateway import RemediationRefused
from eic_guard.checks import CheckContext, check_ids_for, endpoint_present, endpoint_ssh_egress, endpoint_ssh_ingress
from eic_guard.checks import network_acl as network_acl_check
from eic_guard.checks.connect_path import connect_path
from eic_guard.checks.guidance import guidance_for
from eic_guard.engine import evaluate_instance, hold_blocked_fixes, remediate_instance
from eic_guard.models import IngressPermission, InstanceConnectEndpoint, SecurityGroup
from eic_guard.settings import Settings

from tests.unit.snapshots import (
    ACCOUNT,
    INSTANCE_ID,
    PRIMARY_ENI,
    REGION,
    SUBNET,
    VPC,
    default_nacl_entries,
    eic_prefixes,
    eni,
    group,
    instance,
    nacl_entry,
    network_acl,
    rule,
    snapshot,
)

TODAY = date(2026, 12, 7)
APP = "sg-0app"
EICE_GROUP = "sg-0eice"
ENDPOINT_ID = "eice-0123456789abcdef0"
ENDPOINT_ADDRESS = "10.0.2.10"
INSTANCE_IP = "10.0.1.20"
OTHER_SUBNET = "subnet-0bbb"
OWNED = (("ManagedBy", "eic-guard"),)


def endpoint(
    *,
    state: str = "create-complete",
    subnet_id: str = OTHER_SUBNET,
    groups: tuple[str, ...] = (EICE_GROUP,),
    preserve_client_ip: bool = False,
    ip_address_type: str = "ipv4",
    tags: tuple[tuple[str, str], ...] = (),
    address: str | None = ENDPOINT_ADDRESS,
    endpoint_id: str = ENDPOINT_ID,
    message: str | None = None,
) -> InstanceConnectEndpoint:
    return InstanceConnectEndpoint(
        endpoint_id,
        VPC,
        subnet_id,
        state,
        message,
        groups,
        preserve_client_ip,
        ip_address_type,
        ("eni-0eice",),
        tags,
        address,
    )


def egress(*permissions: IngressPermission, group_id: str = EICE_GROUP, tags=()) -> SecurityGroup:
    return SecurityGroup(group_id, group_id, VPC, tags, (), tuple(permissions))


def private(**kwargs):
    """An opted-in instance without a public address, its primary ENI in SUBNET with the app group only."""
    kwargs.setdefault("groups", (APP,))
    return replace(instance(public_ip=None, **kwargs), private_ip=INSTANCE_IP)


def ctx_of(inst, *, endpoints=(), groups=(), nacls=None, settings=None, **fields) -> CheckContext:
    snap = snapshot(
        inst,
        groups=(group(APP), *groups),
        network_acls=nacls or (network_acl(*default_nacl_entries(), subnets=(SUBNET, OTHER_SUBNET)),),
    )
    snap = replace(snap, endpoints=tuple(endpoints), **fields)
    return CheckContext(snap, eic_prefixes(), settings or Settings.build(regions=(REGION,)))


FROM_ENDPOINT = group(APP, rule(group_refs=(EICE_GROUP,)))
TO_APP = egress(rule(group_refs=(APP,)))


# ---- the connect path -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("public_ip", "endpoints", "setting", "create", "tag", "path"),
    [
        ("54.1.2.3", (endpoint(),), "auto", False, None, "public"),  # a public address: the tutorial's path
        (None, (endpoint(),), "auto", False, None, "endpoint"),
        (None, (), "auto", False, None, "public"),  # no endpoint, none to be created: today's behaviour
        (None, (), "auto", True, None, "endpoint"),  # CreateEndpoints will make one
        (None, (endpoint(state="delete-complete"),), "auto", False, None, "public"),  # a deleted one is none
        (None, (endpoint(state="create-in-progress"),), "auto", False, None, "endpoint"),
        ("54.1.2.3", (), "endpoint", False, None, "endpoint"),  # the setting decides
        (None, (endpoint(),), "public", False, None, "public"),
        (None, (endpoint(),), "auto", False, "public", "public"),  # the tag overrides
        ("54.1.2.3", (), "public", False, "endpoint", "endpoint"),
        ("stopped", (), "auto", True, None, "public"),  # no address while stopped: no endpoint created for it
        ("stopped", (endpoint(),), "auto", False, None, "endpoint"),
    ],
)
def test_connect_path(public_ip, endpoints, setting, create, tag, path):
    state = "running"
    if public_ip == "stopped":
        state, public_ip = "stopped", None
    inst = instance(state=state, public_ip=public_ip, tags={"eic-guard:connect-path": tag} if tag else None)
    settings = Settings.build(regions=(REGION,), connect_path=setting, create_endpoints=create)
    assert connect_path(inst, ctx_of(inst, endpoints=endpoints, settings=settings)) == path


def test_a_bad_connect_path_tag_is_the_instances_error_and_nothing_is_checked():
    inst = private(tags={"eic-guard:connect-path": "bastion"})
    outcome = evaluate_instance(inst, ctx_of(inst, endpoints=(endpoint(),)), TODAY)
    assert outcome.checks == {}
    assert outcome.error == (
        "eic-guard:connect-path='bastion' is not a connect path (use public or endpoint): the instance is neither "
        "checked nor changed"
    )


def test_each_path_reports_its_checks_and_the_public_ones_are_not_applicable_on_the_endpoint_path():
    inst = private()
    ctx = ctx_of(inst, endpoints=(endpoint(),), groups=(TO_APP,))
    ctx.snapshot.security_groups[APP] = FROM_ENDPOINT
    outcome = evaluate_instance(inst, ctx, TODAY)
    assert outcome.connect_path == "endpoint"
    assert list(outcome.checks) == list(check_ids_for("endpoint"))
    assert {c: r.status for c, r in outcome.checks.items()} == {
        "public-ipv4": "not-applicable",
        "eic-ssh-ingress": "not-applicable",
        "endpoint-present": "pass",
        "endpoint-ssh-ingress": "pass",
        "endpoint-ssh-egress": "pass",
        "al2023-ami": "pass",
        "imds-enabled": "pass",
        "internet-route": "not-applicable",
        "network-acl": "pass",
    }
    assert outcome.checks["internet-route"].reason == "the instance takes the endpoint connect path"
    public = instance()
    assert list(evaluate_instance(public, ctx_of(public), TODAY).checks) == list(check_ids_for("public"))


# ---- endpoint-present ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("found", "status", "kind", "reason"),
    [
        (endpoint(), "pass", None, f"{ENDPOINT_ID} (create-complete, ipv4) in {OTHER_SUBNET}"),
        (endpoint(ip_address_type="dualstack"), "pass", None, f"{ENDPOINT_ID} (create-complete, dualstack) in "),
        (endpoint(state="update-complete"), "pass", None, f"{ENDPOINT_ID} (update-complete, ipv4)"),
        (endpoint(ip_address_type="ipv6"), "fail", "endpoint-ipv6-only", "serves only IPv6"),
        (endpoint(state="create-in-progress"), "fail", "endpoint-creating", "is being created (create-in-progress)"),
        (
            endpoint(state="create-failed", message="Subnet has no free address"),
            "fail",
            "no-endpoint",
            f"no EC2 Instance Connect Endpoint in {VPC} ({ENDPOINT_ID} is create-failed: Subnet has no free address)",
        ),
        (
            endpoint(state="delete-in-progress"),
            "fail",
            "endpoint-deleting",
            f"{ENDPOINT_ID} in {VPC} is being deleted (delete-in-progress): it serves no connection but holds the "
            "VPC's endpoint quota (one per VPC), so no endpoint can be created until it is gone",
        ),
        (
            endpoint(state="delete-failed", message="Network interface in use"),
            "fail",
            "endpoint-deleting",
            f"{ENDPOINT_ID} in {VPC} could not be deleted (delete-failed: Network interface in use): it serves no "
            "connection but holds",
        ),
        (endpoint(state="delete-complete"), "fail", "no-endpoint", f"({ENDPOINT_ID} is delete-complete)"),
        (None, "fail", "no-endpoint", f"no EC2 Instance Connect Endpoint in {VPC}"),
    ],
)
def test_endpoint_present(found, status, kind, reason):
    inst = private(tags={"eic-guard:connect-path": "endpoint"})
    result = endpoint_present.evaluate(inst, ctx_of(inst, endpoints=(found,) if found else ()))
    assert (result.status, result.kind, result.fix) == (status, kind, None)
    assert reason in result.reason


EICE_DELETE = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/delete-ec2-instance-connect-endpoint.html"


@pytest.mark.parametrize("state", ["delete-in-progress", "delete-failed"])
@pytest.mark.parametrize("create", [True, False])
def test_an_endpoint_being_deleted_holds_the_quota_so_no_creation_is_planned(state, create):
    # Given a private instance whose VPC's only endpoint is being deleted (or failed to be): it is not usable, but it
    # holds the VPC's endpoint quota, so a CreateInstanceConnectEndpoint would be refused
    inst = private(http_endpoint="disabled", tags={"eic-guard:connect-path": "endpoint"})
    settings = Settings.build(regions=(REGION,), create_endpoints=create)
    ctx = ctx_of(inst, endpoints=(endpoint(state=state, subnet_id=SUBNET, tags=OWNED),), settings=settings)
    # When its checks are evaluated and the fixes that cannot work are held
    outcome = evaluate_instance(inst, ctx, TODAY)
    hold_blocked_fixes(outcome)
    # Then endpoint-present names the endpoint and its state, and asks for no creation, with CreateEndpoints or not
    present = outcome.checks["endpoint-present"]
    doing = "is being deleted" if state == "delete-in-progress" else "could not be deleted"
    assert (present.status, present.kind, present.fix) == ("fail", "endpoint-deleting", None)
    assert present.reason == (
        f"{ENDPOINT_ID} in {VPC} {doing} ({state}): it serves no connection but holds the VPC's endpoint quota (one "
        "per VPC), so no endpoint can be created until it is gone"
    )
    after = "once it is gone, " + (
        "eic-guard creates a new one on its next run"
        if create
        else "create one (or set CreateEndpoints=true and eic-guard does it)"
    )
    if state == "delete-in-progress":
        says = (
            f"{ENDPOINT_ID} in {VPC} is being deleted and holds the VPC's endpoint quota until it is gone: wait for "
            f"the deletion to finish (minutes); {after}."
        )
    else:
        says = (
            f"The deletion of {ENDPOINT_ID} in {VPC} failed (its state message says why) and it still holds the VPC's "
            f"endpoint quota: delete it by hand (aws ec2 delete-instance-connect-endpoint "
            f"--instance-connect-endpoint-id {ENDPOINT_ID}); {after}."
        )
    assert guidance_for("endpoint-present", present) == f"{says} See {EICE_DELETE}"
    # And nothing is planned for the endpoint that is not coming: no group change, no network-acl pass on it, and the
    # instance's other fixes are held as without CreateEndpoints
    assert {c: (r.status, r.kind, r.fix) for c, r in outcome.checks.items() if r.status != "not-applicable"} == {
        "endpoint-present": ("fail", "endpoint-deleting", None),
        "endpoint-ssh-ingress": ("fail", "no-endpoint", None),
        "endpoint-ssh-egress": ("fail", "no-endpoint", None),
        "al2023-ami": ("pass", None, None),
        "imds-enabled": ("fail", "imds-disabled", None),
        "network-acl": ("fail", "nacl-endpoint-unknown", None),
    }
    assert outcome.checks["imds-enabled"].reason.endswith(
        "not fixed: blocked by network-acl, endpoint-present, endpoint-ssh-egress"
    )


def test_a_live_endpoint_beside_one_being_deleted_serves_the_vpc():
    inst = private()
    ctx = ctx_of(inst, endpoints=(endpoint(state="delete-in-progress", endpoint_id="eice-0old"), endpoint()))
    result = endpoint_present.evaluate(inst, ctx)
    assert (result.status, result.reason) == ("pass", f"{ENDPOINT_ID} (create-complete, ipv4) in {OTHER_SUBNET}")


def test_endpoint_present_plans_one_endpoint_per_vpc_in_the_first_instances_subnet_with_a_stable_token():
    # Given two endpoint-path instances of one VPC, the lower id in another subnet
    second = private(instance_id="i-0b")
    first = replace(private(instance_id="i-0a", enis=(eni(groups=(APP,), subnet_id=OTHER_SUBNET),)), subnet_id=None)
    settings = Settings.build(regions=(REGION,), create_endpoints=True)
    ctx = ctx_of(second, settings=settings)
    ctx = replace(ctx, snapshot=replace(ctx.snapshot, instances=(second, first)), memo={})
    # When
    fixes = [endpoint_present.evaluate(i, ctx).fix for i in (second, first)]
    # Then both ask for the same endpoint, in the first instance's subnet
    assert fixes[0] == fixes[1]
    assert dict(fixes[0].params) == {"vpc_id": VPC, "subnet_id": OTHER_SUBNET, "client_token": f"eic-guard-{VPC}"}
    # And an endpoint eic-guard created before (deleted since) changes the token: a new one, not the deleted one
    deleted = endpoint(state="delete-complete", tags=OWNED)
    ctx = replace(ctx, snapshot=replace(ctx.snapshot, endpoints=(deleted,)), memo={})
    token = dict(endpoint_present.evaluate(first, ctx).fix.params)["client_token"]
    assert token.startswith(f"eic-guard-{VPC}-") and len(token) <= 64


def test_endpoints_that_cannot_be_read_are_an_error_of_the_endpoint_path_instances():
    inst = private(tags={"eic-guard:connect-path": "endpoint"})
    why = "EC2 Instance Connect Endpoints not read: ec2:DescribeInstanceConnectEndpoints denied"
    result = endpoint_present.evaluate(inst, ctx_of(inst, endpoints_unreadable=why))
    assert (result.status, result.reason, result.kind) == ("error", why, "endpoints-unreadable")


# ---- endpoint-ssh-ingress -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("permission", "preserve", "status", "allowed"),
    [
        (rule(group_refs=(EICE_GROUP,)), False, "pass", f"{EICE_GROUP} (the endpoint's group) in {APP}"),
        (rule(group_refs=(EICE_GROUP,)), True, "pass", f"{EICE_GROUP} (the endpoint's group)"),  # either way
        (rule("10.0.2.0/24"), False, "pass", f"10.0.2.0/24 (covers the endpoint's address {ENDPOINT_ADDRESS})"),
        (rule("10.0.2.0/24"), True, "fail", None),  # the source is the client's address
        (rule("10.0.3.0/24"), False, "fail", None),
        (rule(group_refs=(EICE_GROUP,), protocol="-1", ports=None), False, "pass", f"{EICE_GROUP}"),
        (rule(group_refs=(EICE_GROUP,), ports=(0, 65535)), False, "pass", f"{EICE_GROUP}"),
        (rule(group_refs=(EICE_GROUP,), protocol="udp"), False, "fail", None),
        (rule(group_refs=(EICE_GROUP,), ports=(2222, 2222)), False, "fail", None),
        (rule(group_refs=("sg-0other",)), False, "fail", None),
    ],
)
def test_endpoint_ssh_ingress(permission, preserve, status, allowed):
    inst = private()
    ctx = ctx_of(inst, endpoints=(endpoint(preserve_client_ip=preserve),))
    ctx.snapshot.security_groups[APP] = group(APP, permission)
    result = endpoint_ssh_ingress.evaluate(inst, ctx)
    assert result.status == status
    if allowed:
        assert allowed in result.reason
    else:
        assert result.reason.startswith(f"TCP 22 not allowed from the endpoint {ENDPOINT_ID} (groups {EICE_GROUP}")
        assert dict(result.fix.params) == {"eni_id": PRIMARY_ENI, "vpc_id": VPC, "group_ids": APP}


def test_a_range_that_would_count_without_preserve_client_ip_is_named():
    inst = private()
    ctx = ctx_of(inst, endpoints=(endpoint(preserve_client_ip=True),))
    ctx.snapshot.security_groups[APP] = group(APP, rule("10.0.0.0/16"))
    result = endpoint_ssh_ingress.evaluate(inst, ctx)
    assert "found: TCP 22 from 10.0.0.0/16 in sg-0app, which does not count: the endpoint preserves" in result.reason


def test_ssh_from_the_whole_internet_passes_with_a_warning():
    inst = private()
    ctx = ctx_of(inst, endpoints=(endpoint(),))
    ctx.snapshot.security_groups[APP] = group(APP, rule("0.0.0.0/0"))
    result = endpoint_ssh_ingress.evaluate(inst, ctx)
    assert result.status == "pass"
    assert result.warnings == (
        "ssh-open-to-internet: sg-0app allows TCP 22 from 0.0.0.0/0 (the whole internet); the endpoint path needs "
        "only the endpoint's group",
    )


# ---- endpoint-ssh-egress ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("permission", "status"),
    [
        (rule(group_refs=(APP,)), "pass"),
        (rule("10.0.1.0/24"), "pass"),  # covers the instance's private address
        (rule("0.0.0.0/0", protocol="-1", ports=None), "pass"),  # a new group's default egress
        (rule("10.0.3.0/24"), "fail"),
        (rule(group_refs=(APP,), protocol="udp"), "fail"),
        (rule(group_refs=(APP,), ports=(443, 443)), "fail"),
        (None, "fail"),
    ],
)
def test_endpoint_ssh_egress(permission, status):
    inst = private()
    endpoint_group = egress(*((permission,) if permission else ()))
    result = endpoint_ssh_egress.evaluate(inst, ctx_of(inst, endpoints=(endpoint(),), groups=(endpoint_group,)))
    assert result.status == status
    if status == "fail":
        assert result.fix is None  # not eic-guard's endpoint: guidance only
        assert result.reason.endswith("eic-guard changes only the group of an endpoint it created")


def test_endpoint_ssh_egress_is_fixed_only_on_eic_guards_own_endpoint():
    inst = private()
    own_group = egress(group_id=EICE_GROUP, tags=OWNED)
    ctx = ctx_of(inst, endpoints=(endpoint(tags=OWNED),), groups=(own_group,), endpoint_groups={VPC: own_group})
    result = endpoint_ssh_egress.evaluate(inst, ctx)
    assert (result.status, result.kind) == ("fail", "ssh-egress-not-allowed")
    assert dict(result.fix.params) == {"eni_id": PRIMARY_ENI, "vpc_id": VPC, "group_ids": APP}


# ---- network-acl between the endpoint and the instance ------------------------------------------------------------
def _nacls(instance_side=(), endpoint_side=()):
    return (
        network_acl(*instance_side, *default_nacl_entries(), nacl_id="acl-0inst", subnets=(SUBNET,)),
        network_acl(*endpoint_side, *default_nacl_entries(), nacl_id="acl-0eice", subnets=(OTHER_SUBNET,)),
    )


@pytest.mark.parametrize(
    ("found", "nacls", "status", "kind", "text"),
    [
        (endpoint(subnet_id=SUBNET), _nacls((nacl_entry(1, allow=False),)), "pass", None, "no network ACL between"),
        (endpoint(), _nacls(), "pass", None, f"allow TCP 22 from {ENDPOINT_ADDRESS} to {INSTANCE_IP}"),
        (
            endpoint(),
            _nacls((nacl_entry(50, allow=False, cidr="10.0.2.0/24", protocol="6", ports=(22, 22)),)),
            "fail",
            "nacl-endpoint-inbound-deny",
            f"acl-0inst (the instance's subnet) inbound: rule 50 denies {ENDPOINT_ADDRESS}/32 port 22",
        ),
        (
            endpoint(),
            _nacls((nacl_entry(50, egress=True, allow=False, cidr="10.0.2.0/24"),)),
            "fail",
            "nacl-endpoint-outbound-deny",
            "acl-0inst (the instance's subnet) outbound: rule 50 denies",
        ),
        (
            endpoint(),
            _nacls(endpoint_side=(nacl_entry(50, egress=True, allow=False, cidr="10.0.1.0/24"),)),
            "fail",
            "nacl-endpoint-outbound-deny",
            f"acl-0eice (the endpoint {ENDPOINT_ID}'s subnet) outbound: rule 50 denies {INSTANCE_IP}/32 port 22",
        ),
        (
            endpoint(),
            _nacls(endpoint_side=(nacl_entry(50, allow=False, cidr="10.0.1.0/24", protocol="6", ports=(1024, 65535)),)),
            "fail",
            "nacl-endpoint-inbound-deny",
            "acl-0eice (the endpoint",
        ),
        (None, _nacls(), "fail", "nacl-endpoint-unknown", "checked once it exists"),
    ],
)
def test_network_acl_on_the_endpoint_path(found, nacls, status, kind, text):
    inst = private(tags={"eic-guard:connect-path": "endpoint"})
    result = network_acl_check.evaluate(inst, ctx_of(inst, endpoints=(found,) if found else (), nacls=nacls))
    assert (result.status, result.kind) == (status, kind)
    assert text in result.reason


def test_network_acl_passes_for_the_subnet_eic_guard_will_create_the_endpoint_in():
    inst = private()
    settings = Settings.build(regions=(REGION,), create_endpoints=True)
    result = network_acl_check.evaluate(inst, ctx_of(inst, settings=settings))
    assert (result.status, result.reason) == (
        "pass",
        f"the endpoint eic-guard creates will be in {SUBNET}: no network ACL between them",
    )


# ---- what blocks the fixes ----------------------------------------------------------------------------------------
def test_no_endpoint_without_create_endpoints_blocks_every_fix():
    inst = private(http_endpoint="disabled", tags={"eic-guard:connect-path": "endpoint"})
    outcome = evaluate_instance(inst, ctx_of(inst), TODAY)
    hold_blocked_fixes(outcome)
    assert outcome.checks["imds-enabled"].fix is None
    assert outcome.checks["imds-enabled"].reason.endswith(
        "not fixed: blocked by network-acl, endpoint-present, endpoint-ssh-egress"
    )


def test_a_nacl_between_endpoint_and_instance_blocks_the_ingress_fix():
    inst = private()
    nacls = _nacls((nacl_entry(50, allow=False, cidr="10.0.2.0/24", protocol="6", ports=(22, 22)),))
    outcome = evaluate_instance(inst, ctx_of(inst, endpoints=(endpoint(),), groups=(TO_APP,), nacls=nacls), TODAY)
    hold_blocked_fixes(outcome)
    ingress = outcome.checks["endpoint-ssh-ingress"]
    assert (ingress.status, ingress.fix) == ("fail", None)
    assert ingress.reason.endswith("not fixed: blocked by network-acl")


def test_instance_id_and_account_are_kept():
    inst = private()
    outcome = evaluate_instance(inst, ctx_of(inst, endpoints=(endpoint(),)), TODAY)
    assert (outcome.instance_id, outcome.account_id, outcome.region) == (INSTANCE_ID, ACCOUNT, REGION)


# ---- the checks that pass only through the endpoint (NEEDS) -------------------------------------------------------
class _Remediator:
    """The endpoint path's remediator as the checks' fixes call it: every write succeeds (or is planned), except
    the endpoint's creation when `creation` is an exception."""

    def __init__(self, *, dry_run: bool = False, creation: Exception | None = None):
        self.dry_run, self.creation = dry_run, creation

    def created_endpoint(self, vpc_id, subnet_id, client_token, actions):
        if self.creation is not None:
            raise self.creation
        return "eice-0new"

    def endpoint_instance_group(self, vpc_id, actions):
        return "sg-0eicessh"

    def endpoint_egress(self, vpc_id, actions):
        return EICE_GROUP

    def attach(self, eni_id, gathered, group_id, actions):
        return None


INTERNAL_ERROR = ClientError({"Error": {"Code": "InternalError", "Message": "x"}}, "CreateInstanceConnectEndpoint")
REFUSED = RemediationRefused("a group named eic-guard-eice exists in vpc-0a without the ManagedBy=eic-guard tag")


@pytest.mark.parametrize(
    ("dry_run", "creation", "present", "others", "change"),
    [
        (False, None, "fixed", "fixed", None),
        (True, None, "would-fix", "would-fix", None),
        (False, INTERNAL_ERROR, "error", "fail", "was made"),
        (False, REFUSED, "fail", "fail", "was made"),
        (True, REFUSED, "fail", "fail", "is planned"),
    ],
)
def test_ingress_and_egress_are_fixed_only_with_the_endpoint(dry_run, creation, present, others, change):
    # Given a private instance of a VPC without an endpoint, CreateEndpoints on: three fixes, the endpoint's first
    inst = private()
    settings = Settings.build(regions=(REGION,), create_endpoints=True)
    outcome = evaluate_instance(inst, ctx_of(inst, settings=settings), TODAY)
    before = {c: outcome.checks[c].reason for c in ("endpoint-ssh-ingress", "endpoint-ssh-egress")}

    # When the fixes run, the endpoint's creation failing, refused or not
    remediate_instance(inst, outcome, _Remediator(dry_run=dry_run, creation=creation))

    # Then endpoint-ssh-ingress and -egress are fixed (or would be) only when the endpoint is; otherwise they stay
    # `fail`, saying that their own change was made (or planned) and what they wait for
    assert outcome.checks["endpoint-present"].status == present
    for check_id, reason in before.items():
        result = outcome.checks[check_id]
        if change is None:
            assert (result.status, result.reason) == (others, reason)
            continue
        assert (result.status, result.fix) == ("fail", None)
        assert (
            result.reason
            == f"{reason}; not fixed: its change {change} (see the actions), but endpoint-present is {present}"
        )
        assert result.fact("waiting_for") == "endpoint-present"
    if change is not None:
        did = "attached" if change == "was made" else "will attach"
        assert guidance_for("endpoint-ssh-ingress", outcome.checks["endpoint-ssh-ingress"]) == (
            f"eic-guard {did} its eic-guard-eice-ssh group (TCP 22 from the endpoint's security group by reference) to "
            f"{PRIMARY_ENI}, but this passes only once endpoint-present does: fix endpoint-present first (see its "
            "guidance); nothing else to do here. See "
            "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/connect-with-ec2-instance-connect-endpoint.html"
        )


@pytest.mark.parametrize(
    ("dry_run", "creation", "present"),
    [
        (False, None, None),
        (True, None, None),
        (False, INTERNAL_ERROR, "error"),
        (False, REFUSED, "fail"),
        (True, REFUSED, "fail"),
    ],
)
def test_network_acl_passes_on_the_endpoint_eic_guard_creates_only_while_it_is_created(dry_run, creation, present):
    # Given a private instance in the subnet eic-guard creates its VPC's endpoint in: network-acl passes on that plan
    inst = private()
    settings = Settings.build(regions=(REGION,), create_endpoints=True)
    outcome = evaluate_instance(inst, ctx_of(inst, settings=settings), TODAY)
    planned = f"the endpoint eic-guard creates will be in {SUBNET}: no network ACL between them"
    assert (outcome.checks["network-acl"].status, outcome.checks["network-acl"].reason) == ("pass", planned)

    # When the fixes run, the endpoint's creation failing, refused or not
    remediate_instance(inst, outcome, _Remediator(dry_run=dry_run, creation=creation))

    # Then the pass stands while the endpoint is created (or planned); once its creation failed or was refused, no
    # endpoint exists to check the network ACLs against: network-acl fails as it does without an endpoint, saying why
    result = outcome.checks["network-acl"]
    if present is None:
        assert (result.status, result.reason, result.kind) == ("pass", planned, None)
        return
    assert outcome.checks["endpoint-present"].status == present
    assert (result.status, result.kind, result.fix) == ("fail", "nacl-endpoint-unknown", None)
    assert result.reason == (
        f"no EC2 Instance Connect Endpoint in {VPC}: the one eic-guard was to create in {SUBNET} was not created "
        f"(endpoint-present is {present}); the network ACLs are checked once it exists"
    )
    assert guidance_for("network-acl", result) == (
        "The network ACLs between the EC2 Instance Connect Endpoint and the instance are checked once the VPC's "
        "endpoint exists and has its address (endpoint-present); nothing to do here until then. See "
        "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/connect-with-ec2-instance-connect-endpoint.html and "
        "https://docs.aws.amazon.com/vpc/latest/userguide/nacl-rules.html"
    )


# ---- CreateInstanceConnectEndpoint answered with a racing run's endpoint (the same ClientToken) ---------------------
class _Ec2:
    def __init__(self, answer: dict):
        self.answer = answer

    def create_instance_connect_endpoint(self, **_):
        return {"InstanceConnectEndpoint": self.answer}


SENT = datetime(2026, 12, 7, 6, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("state", "created_at", "concurrent"),
    [
        ("create-in-progress", SENT + timedelta(seconds=1), False),  # this request made it
        ("create-in-progress", SENT - timedelta(seconds=2), False),  # within the clocks' margin: counted as made
        ("create-in-progress", None, False),
        ("create-in-progress", SENT - timedelta(minutes=1), True),  # a racing run made it a minute before
        ("create-in-progress", (SENT - timedelta(minutes=1)).replace(tzinfo=None), True),
        ("create-complete", SENT + timedelta(seconds=1), True),  # a new endpoint is never ready at once
        ("update-complete", None, True),
    ],
)
def test_an_endpoint_the_client_token_returns_is_recorded_as_made_only_by_this_request(
    state, created_at, concurrent, monkeypatch
):
    answer = {"InstanceConnectEndpointId": "eice-0new", "State": state}
    if created_at is not None:
        answer["CreatedAt"] = created_at
    monkeypatch.setattr(gateway_module, "now", lambda: SENT)
    gw = gateway_module.Ec2Gateway(_Ec2(answer), REGION, dry_run=False)
    endpoint_id, record = gw.create_instance_connect_endpoint(SUBNET, EICE_GROUP, f"eic-guard-{VPC}")
    assert (endpoint_id, record.action, record.resource, record.status) == (
        "eice-0new",
        "create-instance-connect-endpoint",
        "eice-0new",
        "done",
    )
    assert record.detail == (
        f"EC2 Instance Connect Endpoint eice-0new in {SUBNET} already created by a concurrent run ({state})"
        if concurrent
        else f"create an EC2 Instance Connect Endpoint in {SUBNET} with {EICE_GROUP}, PreserveClientIp=false, tagged "
        f"ManagedBy=eic-guard ({state}, ready in minutes)"
    )
