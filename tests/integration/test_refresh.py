"""The ip-ranges refresh (docs/architecture.md §3-§4) against moto: security-group rules after each refresh, the state
document, the reason a bad file is refused with, and the number of EC2 calls made.

Every file used is a real ip-ranges.json snapshot (tests/fixtures/ip-ranges, see MANIFEST.json) or a small file
derived from one in tmp_path (a prefix replaced or a region removed, with a higher syncToken).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import boto3
import pytest
import responses
from botocore.loaders import create_loader
from eic_guard import cli
from eic_guard.aws.clients import AwsClients
from eic_guard.errors import IpRangesError
from eic_guard.ranges import ip_ranges
from eic_guard.ranges.refresh import RefreshResult, apply_ranges, newer_or_stored
from eic_guard.ranges.state import FileStateStore, RangesState, StateStore
from eic_guard.settings import IP_RANGES_URL, Settings

from tests.aws_views import ingress_of
from tests.conftest import EIC_US_EAST_1, EIC_US_EAST_1_V6, IP_RANGES, REGION

MANIFEST = json.loads((IP_RANGES / "MANIFEST.json").read_text())["files"]
MANAGED_NAME = "eic-guard-ssh"
MANAGED_TAG = {"Key": "ManagedBy", "Value": "eic-guard"}
EU_WEST_1 = ("18.202.216.48/29", "2a05:d018:403:4e00::/56")
AP_SOUTHEAST_6 = ("3.103.24.208/29", "2406:da12:80b3:4800::/56")
REPLACEMENT = "198.51.100.24/29"  # TEST-NET-2: stands in for a prefix AWS would add
REPLACEMENT_V6 = "2001:db8:1:100::/56"  # documentation range, likewise
T0 = datetime(2026, 8, 22, 16, 0, tzinfo=UTC)
SG_WRITES = (
    "AuthorizeSecurityGroupIngress",
    "RevokeSecurityGroupIngress",
    "CreateSecurityGroup",
    "DeleteSecurityGroup",
    "ModifySecurityGroupRules",
    "UpdateSecurityGroupRuleDescriptionsIngress",
    "AuthorizeSecurityGroupEgress",
    "RevokeSecurityGroupEgress",
)


def description(region: str) -> str:
    return f"eic-guard EC2_INSTANCE_CONNECT {region}"


# ---- snapshots and derived files ----------------------------------------------------------------------------------
def snapshot_name(day: str) -> str:
    return f"ip-ranges-{day}.json"


@cache
def snapshot_bytes(day: str) -> bytes:
    return (IP_RANGES / snapshot_name(day)).read_bytes()


def snapshot_md5(day: str) -> str:
    return MANIFEST[snapshot_name(day)]["md5"]


def snapshot_sync_token(day: str) -> str:
    return MANIFEST[snapshot_name(day)]["syncToken"]


@cache
def snapshot(day: str) -> ip_ranges.IpRanges:
    """A real snapshot, verified against the md5 MANIFEST.json records for it."""
    return ip_ranges.load(str(IP_RANGES / snapshot_name(day)), snapshot_md5(day))


def derived_file(
    tmp_path: Path,
    name: str,
    *,
    sync_token: int,
    base: str = "2026-08-22",
    replace: dict[str, str] | None = None,
    drop_regions: tuple[str, ...] = (),
) -> tuple[Path, str]:
    """A small ip-ranges.json derived from a real snapshot: every EIC entry plus a few other services' entries,
    with `replace` applied to the EIC prefixes and the EIC entries of `drop_regions` removed. Returns (path, md5)."""
    document = json.loads(snapshot_bytes(base))
    replace = replace or {}

    def keep(entries: list[dict], key: str) -> list[dict]:
        others = [e for e in entries if e["service"] != "EC2_INSTANCE_CONNECT"][:25]
        eic = [
            dict(e, **{key: replace.get(e[key], e[key])})
            for e in entries
            if e["service"] == "EC2_INSTANCE_CONNECT" and e["region"] not in drop_regions
        ]
        return others + eic

    document["syncToken"] = str(sync_token)
    document["createDate"] = datetime.fromtimestamp(sync_token, UTC).strftime("%Y-%m-%d-%H-%M-%S")
    document["prefixes"] = keep(document["prefixes"], "ip_prefix")
    document["ipv6_prefixes"] = keep(document["ipv6_prefixes"], "ipv6_prefix")
    raw = json.dumps(document, indent=2).encode()
    path = tmp_path / name
    path.write_bytes(raw)
    return path, hashlib.md5(raw).hexdigest()


NEWEST = int(MANIFEST[snapshot_name("2026-08-22")]["syncToken"])


# ---- AWS helpers --------------------------------------------------------------------------------------------------
_vpc_numbers = itertools.count(1)


def new_group(
    region: str = REGION, *, managed: bool = True, name: str = MANAGED_NAME, permissions: tuple[dict, ...] = ()
) -> str:
    """A security group in a VPC of its own; `managed` tags it ManagedBy=eic-guard."""
    ec2 = boto3.client("ec2", region)
    vpc_id = ec2.create_vpc(CidrBlock=f"10.{next(_vpc_numbers) % 250}.0.0/16")["Vpc"]["VpcId"]
    tags = {"TagSpecifications": [{"ResourceType": "security-group", "Tags": [MANAGED_TAG]}]} if managed else {}
    group_id = ec2.create_security_group(GroupName=name, Description="ssh", VpcId=vpc_id, **tags)["GroupId"]
    if permissions:
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=list(permissions))
    return group_id


def tcp(port: int, cidr: str, desc: str) -> dict:
    key, inner = ("Ipv6Ranges", "CidrIpv6") if ":" in cidr else ("IpRanges", "CidrIp")
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, key: [{inner: cidr, "Description": desc}]}


def eic_rules(region: str, *prefixes: str) -> set[tuple]:
    """The rules eic-guard creates for `prefixes` of `region`."""
    return {("tcp", 22, 22, p, description(region)) for p in prefixes}


def sg_writes(api_calls) -> list[str]:
    return [name for name in api_calls.names() if name in SG_WRITES]


# ---- running a refresh --------------------------------------------------------------------------------------------
_shared: dict[str, AwsClients] = {}
_LOADER = create_loader()


@pytest.fixture(autouse=True)
def fast_aws(monkeypatch, api_calls):
    """Speed only, behaviour unchanged: moto skips its AMI catalogue (no AMI is used here); every boto3 session
    (the tests', eic-guard's, Powertools') shares one botocore data loader, so botocore's endpoint and EC2 model
    files are parsed once per test run instead of once per session (~0.2 s each); the refreshes of one test share
    one AwsClients. Sessions stay hooked by `api_calls`, which patched boto3.Session.__init__ first."""
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    recorded_init = boto3.Session.__init__

    def init(self, *args, **kwargs):
        recorded_init(self, *args, **kwargs)
        self._session.register_component("data_loader", _LOADER)

    monkeypatch.setattr(boto3.Session, "__init__", init)
    _shared["clients"] = AwsClients()
    yield
    _shared.clear()


def refresh(
    store: StateStore,
    ranges: ip_ranges.IpRanges,
    *,
    regions: tuple[str, ...] = (REGION,),
    at: datetime = T0,
    replay_same: bool = False,
    **settings,
) -> RefreshResult:
    return apply_ranges(
        _shared["clients"],
        Settings.build(regions=regions, **settings),
        store,
        ranges,
        replay_same=replay_same,
        now=lambda: at,
    )


@pytest.fixture
def store(tmp_path) -> FileStateStore:
    return FileStateStore(tmp_path / "state" / "state.json")


@pytest.fixture
def http(aws):
    """Serves the pinned URL; started after moto so that it, not moto's catch-all for *.amazonaws.com, answers."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def region_result(result: RefreshResult, region: str):
    return next(r for r in result.regions if r.region == region)


# ---- first install, a region added, a file that changes nothing ---------------------------------------------------
THREE = ("us-east-1", "ap-southeast-6", "eu-west-1")


def test_first_install_from_2022_authorizes_each_regions_ipv4_prefix(aws, store, api_calls):
    # Given one managed group per region, no state, and the 2022-04-27 file (IPv4 only; no ap-southeast-6 yet)
    groups = {region: new_group(region) for region in THREE}
    api_calls.clear()

    # When it is applied
    result = refresh(store, snapshot("2022-04-27"), regions=THREE)

    # Then each region's group allows TCP 22 from that region's prefix only, with one write per group that gains one
    assert ingress_of(groups["us-east-1"], "us-east-1") == eic_rules("us-east-1", EIC_US_EAST_1)
    assert ingress_of(groups["eu-west-1"], "eu-west-1") == eic_rules("eu-west-1", EU_WEST_1[0])
    assert ingress_of(groups["ap-southeast-6"], "ap-southeast-6") == set()
    assert sg_writes(api_calls) == ["AuthorizeSecurityGroupIngress"] * 2
    # ap-southeast-6 has no EIC prefix in that file: an alert naming it, not an error
    assert len(result.alerts) == 1 and result.alerts[0].startswith("ap-southeast-6: ")
    assert result.summary()["prefixes_added"] == 2
    state = store.load()
    assert (state.sync_token, state.md5) == ("1651086206", snapshot_md5("2022-04-27"))
    assert state.current == {"us-east-1": [EIC_US_EAST_1], "eu-west-1": [EU_WEST_1[0]], "ap-southeast-6": []}
    assert state.last_seen["us-east-1"] == {EIC_US_EAST_1: T0}


def test_region_added_2026_05_29_to_06_01_gains_its_rules_alone(aws, store, api_calls):
    # Given the three groups brought up to date with 2026-05-29 (no ap-southeast-6 EIC prefix yet)
    groups = {region: new_group(region) for region in THREE}
    refresh(store, snapshot("2026-05-29"), regions=THREE)
    assert ingress_of(groups["ap-southeast-6"], "ap-southeast-6") == set()
    before = {r: ingress_of(g, r) for r, g in groups.items()}
    api_calls.clear()

    # When 2026-06-01, which adds ap-southeast-6, is applied
    result = refresh(store, snapshot("2026-06-01"), regions=THREE, at=T0 + timedelta(hours=1))

    # Then only the ap-southeast-6 group changes (IPv4 and IPv6 in one call); nothing is revoked anywhere
    assert ingress_of(groups["ap-southeast-6"], "ap-southeast-6") == eic_rules("ap-southeast-6", *AP_SOUTHEAST_6)
    assert (
        ingress_of(groups["us-east-1"], "us-east-1")
        == before["us-east-1"]
        == eic_rules("us-east-1", EIC_US_EAST_1, EIC_US_EAST_1_V6)
    )
    assert ingress_of(groups["eu-west-1"], "eu-west-1") == before["eu-west-1"] == eic_rules("eu-west-1", *EU_WEST_1)
    assert sg_writes(api_calls) == ["AuthorizeSecurityGroupIngress"]
    assert result.alerts == []
    assert region_result(result, "ap-southeast-6").added == sorted(AP_SOUTHEAST_6)
    assert store.load().sync_token == snapshot_sync_token("2026-06-01")
    assert store.load().current["ap-southeast-6"] == sorted(AP_SOUTHEAST_6)


def test_file_changed_but_eic_unchanged_writes_nothing_and_advances_the_state(aws, store, api_calls):
    # Given the groups in line with 2026-06-01
    groups = {region: new_group(region) for region in THREE}
    refresh(store, snapshot("2026-06-01"), regions=THREE)
    before = {r: ingress_of(g, r) for r, g in groups.items()}
    api_calls.clear()

    # When 2026-08-22 (other services changed, EIC identical) is applied
    result = refresh(store, snapshot("2026-08-22"), regions=THREE, at=T0 + timedelta(hours=2))

    # Then no write at all, the rules are as they were, and the state names the new file
    assert api_calls.writes() == []
    assert {r: ingress_of(g, r) for r, g in groups.items()} == before
    assert result.summary()["prefixes_added"] == result.summary()["prefixes_revoked"] == 0
    state = store.load()
    assert (state.sync_token, state.create_date, state.md5) == (
        "1787411825",
        "2026-08-22-15-17-05",
        "63431d35877fa5386ded1a7df9cfa971",
    )
    assert state.last_seen["us-east-1"][EIC_US_EAST_1] == T0 + timedelta(hours=2)


# ---- a file that could only take access away ----------------------------------------------------------------------
def test_2017_file_without_any_eic_prefix_is_refused(aws, store, api_calls):
    # Given a group in line with 2026-08-22
    group = new_group()
    refresh(store, snapshot("2026-08-22"))
    before, state_before = ingress_of(group), store.path.read_text()
    api_calls.clear()

    # When the 2017 file (which predates EC2 Instance Connect) is applied
    with pytest.raises(IpRangesError) as refused:
        refresh(
            store,
            ip_ranges.load(str(IP_RANGES / snapshot_name("2017-11-30")), snapshot_md5("2017-11-30")),
            at=T0 + timedelta(days=30),
            replay_same=True,
        )

    # Then it is refused as empty, nothing is revoked and the state is untouched
    assert refused.value.reason == "empty-eic-set"
    assert ingress_of(group) == before == eic_rules(REGION, EIC_US_EAST_1, EIC_US_EAST_1_V6)
    assert api_calls.writes() == []
    assert store.path.read_text() == state_before


# ---- grace period -------------------------------------------------------------------------------------------------
@pytest.fixture
def installed(aws, store):
    """A managed group in us-east-1 in line with 2026-08-22, applied at T0."""
    group = new_group()
    refresh(store, snapshot("2026-08-22"))
    return group


@pytest.mark.parametrize("hours", [1, 23])
def test_disappeared_prefix_is_kept_inside_the_grace_period(installed, store, tmp_path, api_calls, hours):
    # Given a newer file in which us-east-1's IPv4 prefix was replaced
    path, md5 = derived_file(tmp_path, "replaced.json", sync_token=NEWEST + 3600, replace={EIC_US_EAST_1: REPLACEMENT})
    api_calls.clear()

    # When it is applied `hours` after the old prefix was last seen
    result = refresh(store, ip_ranges.load(str(path), md5), at=T0 + timedelta(hours=hours), stale_prefix_grace_hours=24)

    # Then the new prefix is allowed at once and the old one stays, reported as in grace
    assert ingress_of(installed) == eic_rules(REGION, EIC_US_EAST_1, REPLACEMENT, EIC_US_EAST_1_V6)
    assert sg_writes(api_calls) == ["AuthorizeSecurityGroupIngress"]
    assert result.summary()["prefixes_in_grace"] == 1 and result.summary()["prefixes_revoked"] == 0
    assert region_result(result, REGION).in_grace == [EIC_US_EAST_1]
    state = store.load()
    assert state.current[REGION] == sorted([REPLACEMENT, EIC_US_EAST_1_V6])
    assert state.last_seen[REGION][EIC_US_EAST_1] == T0  # its clock is not reset by a file that lacks it


@pytest.mark.parametrize("how", ["replay-same-file", "later-file"])
def test_disappeared_prefix_is_revoked_after_the_grace_period(installed, store, tmp_path, api_calls, how):
    # Given the replacement file applied 1 h after T0 (old prefix in grace)
    path, md5 = derived_file(tmp_path, "replaced.json", sync_token=NEWEST + 3600, replace={EIC_US_EAST_1: REPLACEMENT})
    refresh(store, ip_ranges.load(str(path), md5), at=T0 + timedelta(hours=1))
    if how == "later-file":
        path, md5 = derived_file(tmp_path, "later.json", sync_token=NEWEST + 7200, replace={EIC_US_EAST_1: REPLACEMENT})
    api_calls.clear()

    # When a refresh runs 25 h after the old prefix was last seen (the same file replayed, or a later one)
    result = refresh(store, ip_ranges.load(str(path), md5), at=T0 + timedelta(hours=25), replay_same=True)

    # Then our rule for the old prefix is revoked, in one call, and forgotten by the state
    assert ingress_of(installed) == eic_rules(REGION, REPLACEMENT, EIC_US_EAST_1_V6)
    assert sg_writes(api_calls) == ["RevokeSecurityGroupIngress"]
    assert region_result(result, REGION).revoked == [EIC_US_EAST_1]
    assert result.summary()["prefixes_in_grace"] == 0
    assert EIC_US_EAST_1 not in store.load().last_seen[REGION]


def test_same_file_without_replay_is_a_duplicate_even_after_the_grace_period(installed, store, tmp_path, api_calls):
    # Given the replacement file applied 1 h after T0
    path, md5 = derived_file(tmp_path, "replaced.json", sync_token=NEWEST + 3600, replace={EIC_US_EAST_1: REPLACEMENT})
    refresh(store, ip_ranges.load(str(path), md5), at=T0 + timedelta(hours=1))
    state_before = store.path.read_text()
    api_calls.clear()

    # When the same synctoken arrives again (a redelivered notification), without replay_same
    result = refresh(store, ip_ranges.load(str(path), md5), at=T0 + timedelta(hours=25))

    # Then nothing happens: duplicate, zero calls, state untouched
    assert result.status == "duplicate" and result.regions == []
    assert api_calls.names() == []
    assert store.path.read_text() == state_before
    assert EIC_US_EAST_1 in {rule[3] for rule in ingress_of(installed)}


def test_region_that_vanished_keeps_its_rules_and_raises_an_alert(installed, store, tmp_path, api_calls):
    # Given a newer file in which us-east-1 has no EIC prefix at all (AWS has published such files)
    path, md5 = derived_file(tmp_path, "vanished.json", sync_token=NEWEST + 3600, drop_regions=(REGION,))
    api_calls.clear()

    # When it is applied well after the grace period
    result = refresh(store, ip_ranges.load(str(path), md5), at=T0 + timedelta(hours=48))

    # Then every rule stays, no write is made and an alert names the region
    assert ingress_of(installed) == eic_rules(REGION, EIC_US_EAST_1, EIC_US_EAST_1_V6)
    assert sg_writes(api_calls) == []
    assert len(result.alerts) == 1 and result.alerts[0].startswith(f"{REGION}: ")
    assert result.summary()["prefixes_revoked"] == 0
    state = store.load()
    assert state.last_seen[REGION] == {EIC_US_EAST_1: T0, EIC_US_EAST_1_V6: T0}


def test_prefixes_of_a_region_that_comes_back_are_revoked_a_grace_period_later(installed, store, tmp_path, api_calls):
    # Given us-east-1 vanished for 48 h (rules kept, no absence clock while the region has no prefix at all),
    # then comes back with only a new IPv4 prefix
    vanished, vanished_md5 = derived_file(tmp_path, "vanished.json", sync_token=NEWEST + 3600, drop_regions=(REGION,))
    refresh(store, ip_ranges.load(str(vanished), vanished_md5), at=T0 + timedelta(hours=48))
    document = json.loads(vanished.read_text())
    document["syncToken"] = str(NEWEST + 7200)
    document["prefixes"].append(
        {"ip_prefix": REPLACEMENT, "region": REGION, "service": "EC2_INSTANCE_CONNECT", "network_border_group": REGION}
    )
    back = tmp_path / "back.json"
    back.write_bytes(json.dumps(document).encode())
    api_calls.clear()

    # When that file is applied, and replayed by the nightly run 23 h and 24 h later
    returned = refresh(store, ip_ranges.load(str(back)), at=T0 + timedelta(hours=49))
    writes_when_back = sg_writes(api_calls)
    refresh(store, ip_ranges.load(str(back)), at=T0 + timedelta(hours=72), replay_same=True)
    writes_23h_later = sg_writes(api_calls)[len(writes_when_back) :]
    later = refresh(store, ip_ranges.load(str(back)), at=T0 + timedelta(hours=73), replay_same=True)

    # Then the new prefix is added at once; the long-gone ones start their grace only now and go 24 h later
    assert writes_when_back == ["AuthorizeSecurityGroupIngress"]
    assert sorted(region_result(returned, REGION).in_grace) == sorted([EIC_US_EAST_1, EIC_US_EAST_1_V6])
    assert writes_23h_later == []
    assert sorted(region_result(later, REGION).revoked) == sorted([EIC_US_EAST_1, EIC_US_EAST_1_V6])
    assert ingress_of(installed) == eic_rules(REGION, REPLACEMENT)


def test_every_authorization_precedes_any_revocation(aws, store, tmp_path, api_calls):
    # Given two managed groups in us-east-1 in line with 2026-08-22 at T0, and at T0+1h a file that replaced the
    # IPv4 prefix (the old one is absent from then on)
    groups = [new_group(), new_group()]
    refresh(store, snapshot("2026-08-22"))
    first, first_md5 = derived_file(
        tmp_path, "replaced.json", sync_token=NEWEST + 3600, replace={EIC_US_EAST_1: REPLACEMENT}
    )
    refresh(store, ip_ranges.load(str(first), first_md5), at=T0 + timedelta(hours=1))
    second, second_md5 = derived_file(
        tmp_path,
        "replaced-v6.json",
        sync_token=NEWEST + 7200,
        replace={EIC_US_EAST_1: REPLACEMENT, EIC_US_EAST_1_V6: REPLACEMENT_V6},
    )
    api_calls.clear()

    # When, past the old prefix's grace period, a file also replacing the IPv6 prefix arrives (add and revoke
    # in the same run)
    refresh(store, ip_ranges.load(str(second), second_md5), at=T0 + timedelta(hours=25))

    # Then both groups get the new prefix before either loses the expired one
    writes = sg_writes(api_calls)
    assert writes == ["AuthorizeSecurityGroupIngress"] * 2 + ["RevokeSecurityGroupIngress"] * 2
    authorized = [p["GroupId"] for n, p in api_calls.calls if n == "AuthorizeSecurityGroupIngress"]
    assert sorted(authorized) == sorted(groups)
    for group in groups:
        assert ingress_of(group) == eic_rules(REGION, REPLACEMENT, REPLACEMENT_V6, EIC_US_EAST_1_V6)


# ---- rules eic-guard does not own ---------------------------------------------------------------------------------
def test_rules_eic_guard_does_not_own_survive_every_refresh(aws, store, tmp_path):
    # Given a managed group with the user's own rules, a managed group where the user allowed the EIC prefix
    # under their own description, and an untagged eic-guard-ssh group with a rule that looks exactly like ours
    user_rules = (tcp(22, "203.0.113.0/24", "office VPN"), tcp(443, "0.0.0.0/0", "https"))
    managed = new_group(permissions=user_rules)
    shared = new_group(permissions=(tcp(22, EIC_US_EAST_1, "my own EIC rule"),))
    untagged = new_group(
        managed=False, permissions=(tcp(22, EIC_US_EAST_1, description(REGION)), tcp(22, "192.0.2.0/24", "bastion"))
    )
    user_view = {("tcp", 22, 22, "203.0.113.0/24", "office VPN"), ("tcp", 443, 443, "0.0.0.0/0", "https")}
    untagged_before = ingress_of(untagged)
    replaced, replaced_md5 = derived_file(
        tmp_path, "replaced.json", sync_token=NEWEST + 3600, replace={EIC_US_EAST_1: REPLACEMENT}
    )
    vanished, vanished_md5 = derived_file(tmp_path, "vanished.json", sync_token=NEWEST + 7200, drop_regions=(REGION,))
    steps = [
        (snapshot("2026-08-22"), T0, False),  # install
        (ip_ranges.load(str(replaced), replaced_md5), T0 + timedelta(hours=1), False),  # old prefix in grace
        (ip_ranges.load(str(replaced), replaced_md5), T0 + timedelta(hours=25), True),  # old prefix revoked
        (ip_ranges.load(str(vanished), vanished_md5), T0 + timedelta(hours=60), False),  # region vanished
    ]

    for ranges, at, replay in steps:
        # When each refresh runs
        refresh(store, ranges, at=at, replay_same=replay)

        # Then the user's rules are intact in the managed group, and the untagged group is never touched
        assert user_view <= ingress_of(managed)
        assert ("tcp", 22, 22, EIC_US_EAST_1, "my own EIC rule") in ingress_of(shared)
        assert ingress_of(untagged) == untagged_before

    # and at the end eic-guard's own rules follow the files, around the user's ones
    assert ingress_of(managed) == user_view | eic_rules(REGION, REPLACEMENT, EIC_US_EAST_1_V6)
    assert ingress_of(shared) == {("tcp", 22, 22, EIC_US_EAST_1, "my own EIC rule")} | eic_rules(
        REGION, REPLACEMENT, EIC_US_EAST_1_V6
    )


# ---- older and repeated files -------------------------------------------------------------------------------------
def test_older_file_after_a_newer_one_is_stale(installed, store, api_calls):
    # Given the state at 2026-08-22
    state_before = store.path.read_text()
    api_calls.clear()

    # When the older 2026-05-29 file is applied (even with replay_same)
    result = refresh(store, snapshot("2026-05-29"), at=T0 + timedelta(days=3), replay_same=True)

    # Then it is a stale no-op: no call, state unchanged
    assert result.status == "stale"
    assert api_calls.names() == []
    assert store.path.read_text() == state_before


# ---- prefix-list mode ---------------------------------------------------------------------------------------------
def customer_eic_list(region: str, *cidrs: str, ipv6: bool = False) -> str:
    """A customer-managed list that carries the name of an AWS-managed EIC list, IPv4 or IPv6 (moto has none)."""
    ec2 = boto3.client("ec2", region)
    name = (
        f"com.amazonaws.{region}.ipv6.ec2-instance-connect" if ipv6 else f"com.amazonaws.{region}.ec2-instance-connect"
    )
    return ec2.create_managed_prefix_list(
        PrefixListName=name,
        AddressFamily="IPv6" if ipv6 else "IPv4",
        MaxEntries=5,
        Entries=[{"Cidr": c} for c in cidrs],
    )["PrefixList"]["PrefixListId"]


def test_prefix_list_mode_reports_how_the_list_differs_and_writes_nothing(aws, store, api_calls):
    # Given a managed group and the EIC lists, the IPv4 one differing from the file (an extra, unknown entry)
    group = new_group()
    list_id = customer_eic_list(REGION, EIC_US_EAST_1, "192.0.2.0/29")
    customer_eic_list(REGION, EIC_US_EAST_1_V6, ipv6=True)
    api_calls.clear()

    # When 2026-08-22 is applied in prefix-list mode
    result = refresh(store, snapshot("2026-08-22"), ingress_source="prefix-list")

    # Then no security-group write is made and one alert lists the difference
    assert sg_writes(api_calls) == []
    assert ingress_of(group) == set()
    assert len(result.alerts) == 1
    assert list_id in result.alerts[0] and "192.0.2.0/29" in result.alerts[0]
    assert region_result(result, REGION).prefix_list_differences == [f"only in {list_id}: 192.0.2.0/29"]


def test_prefix_list_mode_is_quiet_when_the_lists_match_the_file(aws, store, api_calls):
    # Given the IPv4 and IPv6 EIC lists holding exactly the file's prefixes (AWS publishes them as two lists)
    new_group()
    customer_eic_list(REGION, EIC_US_EAST_1)
    customer_eic_list(REGION, EIC_US_EAST_1_V6, ipv6=True)
    api_calls.clear()

    # When 2026-08-22 (IPv4 and IPv6 for us-east-1) is applied in prefix-list mode
    result = refresh(store, snapshot("2026-08-22"), ingress_source="prefix-list")

    # Then nothing is written and nothing is reported
    assert sg_writes(api_calls) == []
    assert result.alerts == []
    assert region_result(result, REGION).notes == []


def test_prefix_list_mode_keeps_cidr_rules_for_a_family_without_a_list(aws, store, api_calls):
    # Given only the IPv4 EIC list exists in the region
    group = new_group()
    customer_eic_list(REGION, EIC_US_EAST_1)

    # When 2026-08-22 is applied in prefix-list mode
    result = refresh(store, snapshot("2026-08-22"), ingress_source="prefix-list")

    # Then the group gets the IPv6 prefix as a CIDR rule (an IPv6 instance stays reachable), nothing for IPv4
    assert ingress_of(group) == eic_rules(REGION, EIC_US_EAST_1_V6)
    assert result.alerts == []
    # And the target's note says the IPv6 rules are CIDRs because the IPv6 list does not exist
    assert region_result(result, REGION).notes == [
        "prefix-list mode: com.amazonaws.us-east-1.ipv6.ec2-instance-connect does not exist in us-east-1; "
        "the managed groups use the EIC IPv6 CIDRs instead"
    ]


def test_prefix_list_mode_without_the_list_falls_back_to_cidrs(aws, store):
    # Given a managed group in a region that has no EIC prefix list (moto has none of the AWS-managed lists)
    group = new_group("eu-west-1")

    # When 2026-08-22 is applied in prefix-list mode
    result = refresh(store, snapshot("2026-08-22"), regions=("eu-west-1",), ingress_source="prefix-list")

    # Then the group gets the CIDR rules
    assert ingress_of(group, "eu-west-1") == eic_rules("eu-west-1", *EU_WEST_1)
    # And the region's refresh says why, for the report's target notes (not an alert: nothing is wrong)
    assert region_result(result, "eu-west-1").notes == [
        "prefix-list mode: com.amazonaws.eu-west-1.ec2-instance-connect does not exist in eu-west-1; "
        "the managed groups use the EIC CIDRs instead",
        "prefix-list mode: com.amazonaws.eu-west-1.ipv6.ec2-instance-connect does not exist in eu-west-1; "
        "the managed groups use the EIC IPv6 CIDRs instead",
    ]
    assert result.alerts == []


def test_cidr_mode_and_a_region_without_managed_groups_make_no_fallback_note(aws, store):
    # Given a region without the EIC lists, with a managed group, and another region without any managed group
    new_group("eu-west-1")

    # When 2026-08-22 is applied in CIDR mode there, and in prefix-list mode to the region without a group
    cidr = refresh(store, snapshot("2026-08-22"), regions=("eu-west-1",))
    no_group = refresh(store, snapshot("2026-08-22"), regions=(REGION,), ingress_source="prefix-list", replay_same=True)

    # Then neither says anything: CIDRs are what CIDR mode asks for, and no group falls back to anything
    assert region_result(cidr, "eu-west-1").notes == []
    assert region_result(no_group, REGION).notes == []


# ---- API calls per region -----------------------------------------------------------------------------------------
def test_calls_per_region_are_one_describe_plus_one_write_per_group_that_changes(aws, store, api_calls):
    # Given 3 regions with 10 managed groups each
    groups = {region: [new_group(region) for _ in range(10)] for region in THREE}
    api_calls.clear()

    # When the first refresh runs, then a refresh with nothing to change (same file replayed an hour later)
    refresh(store, snapshot("2026-08-22"), regions=THREE)
    install = list(api_calls.calls)
    api_calls.clear()
    refresh(store, snapshot("2026-08-22"), regions=THREE, at=T0 + timedelta(hours=1), replay_same=True)
    quiet = list(api_calls.calls)

    # Then per region: first install = 1 DescribeSecurityGroups + 10 AuthorizeSecurityGroupIngress; then 1 describe
    assert [n for n, _ in install] == (["DescribeSecurityGroups"] + ["AuthorizeSecurityGroupIngress"] * 10) * 3
    assert [n for n, _ in quiet] == ["DescribeSecurityGroups"] * 3
    for region, ids in groups.items():
        assert all(len(ingress_of(g, region)) == 2 for g in ids)


# ---- nightly catch-up ---------------------------------------------------------------------------------------------
def test_nightly_reuses_the_stored_prefixes_when_the_file_is_unchanged(installed, store, http):
    # Given the state at 2026-08-22 and AWS answering 304 Not Modified
    http.add(responses.GET, IP_RANGES_URL, status=304)
    settings = Settings.build(regions=(REGION,))

    # When the nightly run fetches the file
    ranges = newer_or_stored(store.load(), settings)

    # Then it asked with the stored md5 as ETag and reuses the stored prefixes
    assert len(http.calls) == 1
    assert http.calls[0].request.headers["If-None-Match"] == '"63431d35877fa5386ded1a7df9cfa971"'
    assert (ranges.sync_token, ranges.md5) == ("1787411825", "63431d35877fa5386ded1a7df9cfa971")
    assert ranges.for_region(REGION) == snapshot("2026-08-22").for_region(REGION)


def test_nightly_on_304_still_alerts_for_a_vanished_region(installed, store, tmp_path, http, api_calls):
    # Given the file without us-east-1 applied (rules kept, alert raised), and AWS answering 304 the next night
    path, md5 = derived_file(tmp_path, "vanished.json", sync_token=NEWEST + 3600, drop_regions=(REGION,))
    assert refresh(store, ip_ranges.load(str(path), md5), at=T0 + timedelta(hours=1)).alerts
    http.add(responses.GET, IP_RANGES_URL, status=304)
    settings = Settings.build(regions=(REGION,))
    api_calls.clear()

    # When the nightly run reuses the stored copy of that file and applies it
    ranges = newer_or_stored(store.load(), settings)
    result = apply_ranges(
        _shared["clients"], settings, store, ranges, replay_same=True, now=lambda: T0 + timedelta(hours=30)
    )

    # Then the stored copy is that file (no us-east-1 prefix): the rules stay and the alert is raised again
    assert http.calls[0].request.headers["If-None-Match"] == f'"{md5}"'
    assert ranges.for_region(REGION).all == ()
    assert len(result.alerts) == 1 and result.alerts[0].startswith(f"{REGION}: ")
    assert sg_writes(api_calls) == []
    assert ingress_of(installed) == eic_rules(REGION, EIC_US_EAST_1, EIC_US_EAST_1_V6)


def test_nightly_uses_a_newer_file(aws, store, http):
    # Given the state at 2026-06-01 and AWS serving 2026-08-22
    new_group()
    refresh(store, snapshot("2026-06-01"))
    http.add(responses.GET, IP_RANGES_URL, body=snapshot_bytes("2026-08-22"))

    # When the nightly run fetches the file
    ranges = newer_or_stored(store.load(), Settings.build(regions=(REGION,)))

    # Then the new file is used (and the conditional request named the stored copy)
    assert http.calls[0].request.headers["If-None-Match"] == f'"{snapshot_md5("2026-06-01")}"'
    assert (ranges.sync_token, ranges.md5) == ("1787411825", snapshot_md5("2026-08-22"))


def test_nightly_never_goes_back_to_an_older_file(installed, store, http, api_calls):
    # Given the state at 2026-08-22 and a cache serving the older 2026-05-29 file
    http.add(responses.GET, IP_RANGES_URL, body=snapshot_bytes("2026-05-29"))
    settings = Settings.build(regions=(REGION,))

    # When the nightly run fetches and applies it
    ranges = newer_or_stored(store.load(), settings)
    api_calls.clear()
    apply_ranges(_shared["clients"], settings, store, ranges, replay_same=True, now=lambda: T0 + timedelta(days=1))

    # Then the stored 2026-08-22 prefixes are used and the state stays at 2026-08-22
    assert ranges.sync_token == "1787411825"
    assert store.load().sync_token == "1787411825"
    assert sg_writes(api_calls) == []
    assert ingress_of(installed) == eic_rules(REGION, EIC_US_EAST_1, EIC_US_EAST_1_V6)


# ---- CLI ----------------------------------------------------------------------------------------------------------
def run_cli(*args: str) -> int:
    return cli.main(["refresh", "--region", REGION, *args])


def test_cli_refresh_applies_a_verified_file(aws, tmp_path, capsys):
    # Given a managed group and no state file
    group = new_group()
    state_file = tmp_path / "state.json"

    # When `eic-guard refresh` runs with the file and its md5
    code = run_cli(
        "--ip-ranges",
        str(IP_RANGES / snapshot_name("2026-08-22")),
        "--state-file",
        str(state_file),
        "--md5",
        snapshot_md5("2026-08-22"),
    )

    # Then it exits 0 with a JSON summary and the group and state file follow the file
    out = capsys.readouterr()
    assert code == 0, out.err
    summary = json.loads(out.out)
    assert summary["status"] == "applied" and summary["sync_token"] == "1787411825"
    assert summary["prefixes_added"] == 2 and summary["alerts"] == []
    assert ingress_of(group) == eic_rules(REGION, EIC_US_EAST_1, EIC_US_EAST_1_V6)
    assert RangesState.model_validate_json(state_file.read_text()).sync_token == "1787411825"


def test_cli_refresh_with_a_wrong_md5_changes_nothing(aws, tmp_path, capsys, api_calls):
    # Given a managed group and no state file
    group = new_group()
    state_file = tmp_path / "state.json"
    api_calls.clear()

    # When the given md5 is not the file's
    code = run_cli(
        "--ip-ranges", str(IP_RANGES / snapshot_name("2026-08-22")), "--state-file", str(state_file), "--md5", "0" * 32
    )

    # Then it exits 2 with one error line, and nothing was touched (not even an AWS call)
    out = capsys.readouterr()
    assert code == 2
    assert api_calls.names() == []
    assert out.out == ""
    assert out.err.count("\n") == 1 and out.err.startswith("eic-guard: error: ") and "md5" in out.err
    assert ingress_of(group) == set()
    assert not state_file.exists()


def test_cli_refresh_of_a_vanished_region_exits_1_with_an_alert(aws, tmp_path, capsys):
    # Given the group in line with 2026-08-22 through the CLI, then a newer file without us-east-1
    group = new_group()
    state_file = tmp_path / "state.json"
    assert run_cli("--ip-ranges", str(IP_RANGES / snapshot_name("2026-08-22")), "--state-file", str(state_file)) == 0
    path, md5 = derived_file(tmp_path, "vanished.json", sync_token=NEWEST + 3600, drop_regions=(REGION,))
    capsys.readouterr()

    # When it is applied
    code = run_cli("--ip-ranges", str(path), "--state-file", str(state_file), "--md5", md5)

    # Then it exits 1, the alert names the region on stderr, and the rules stay
    out = capsys.readouterr()
    assert code == 1
    assert f"eic-guard: alert: {REGION}: " in out.err
    assert json.loads(out.out)["prefixes_revoked"] == 0
    assert ingress_of(group) == eic_rules(REGION, EIC_US_EAST_1, EIC_US_EAST_1_V6)


def test_grace_runs_from_the_first_file_without_the_prefix_not_from_when_it_was_last_seen(installed, store, tmp_path):
    # Given the prefix was last seen at T0, and no file came for 30 h, then one without it
    replaced, md5 = derived_file(
        tmp_path, "replaced.json", sync_token=NEWEST + 3600, replace={EIC_US_EAST_1: REPLACEMENT}
    )
    ranges = ip_ranges.load(str(replaced), md5)

    # When that file is applied at T0+30h, and replayed at T0+53h and T0+54h
    at_30h = refresh(store, ranges, at=T0 + timedelta(hours=30))
    at_53h = refresh(store, ranges, at=T0 + timedelta(hours=53), replay_same=True)
    rules_at_53h = ingress_of(installed)
    at_54h = refresh(store, ranges, at=T0 + timedelta(hours=54), replay_same=True)

    # Then the old prefix stays absent a full grace period (24 h) before its rule is revoked
    assert region_result(at_30h, REGION).revoked == [] and region_result(at_53h, REGION).revoked == []
    assert EIC_US_EAST_1 in region_result(at_30h, REGION).in_grace
    assert eic_rules(REGION, EIC_US_EAST_1) <= rules_at_53h
    assert region_result(at_54h, REGION).revoked == [EIC_US_EAST_1]
    assert ingress_of(installed) == eic_rules(REGION, REPLACEMENT, EIC_US_EAST_1_V6)
