"""Defect 8: AuthorizeSecurityGroupIngress with several ranges, one of which already exists, fails *whole* with
InvalidPermission.Duplicate. The gateway must re-read the group and add exactly what is missing.

The duplicate is made real: right before eic-guard's call, one of its ranges is added to the group through a separate
client (another run or a person). moto then refuses the whole request as EC2 does (asserted through the answer the
caller got, so a moto that stopped doing so would fail these tests loudly rather than let them pass for nothing).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
from eic_guard.aws.clients import AwsClients
from eic_guard.ranges.refresh import apply_ranges
from eic_guard.ranges.state import FileStateStore
from eic_guard.settings import Settings

from tests.aws_views import eni_groups, ingress_of
from tests.conftest import EIC_US_EAST_1, EIC_US_EAST_1_V6, REGION
from tests.faults.conftest import eic_permissions, eic_rules, entry, launch, managed_group, remediate_scan, snapshot
from tests.faults.injector import FaultInjector

AP_SOUTHEAST_6 = "ap-southeast-6"
AP_SOUTHEAST_6_EIC = ("3.103.24.208/29", "2406:da12:80b3:4800::/56")  # new in ip-ranges-2026-06-01.json
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def someone_adds_first(faults: FaultInjector, group_id: str, region: str, prefix: str):
    """Right before eic-guard's first AuthorizeSecurityGroupIngress on `group_id`, add TCP 22 from `prefix` to it
    through a separate client (with eic-guard's description, as a concurrent run would)."""
    ec2 = boto3.client("ec2", region)

    def add(params):
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=eic_permissions(region, prefix))

    return faults.before("AuthorizeSecurityGroupIngress", add, when=lambda p: p.get("GroupId") == group_id)


def test_scan_top_up_adds_what_is_missing_after_a_partial_duplicate(faults: FaultInjector, account, ec2, ranges_2026):
    # Given the VPC's managed group without any rule, an instance lacking SSH from EIC, and the IPv4 prefix added to
    # the group by someone else just before eic-guard authorizes IPv4 and IPv6 together
    net = account.network()
    group = managed_group(ec2, net.vpc_id)
    [instance] = launch(account, net)
    race = someone_adds_first(faults, group, REGION, EIC_US_EAST_1)

    # When a remediate scan runs
    report = remediate_scan(faults, ranges_2026)

    # Then the request really failed whole with InvalidPermission.Duplicate ...
    assert len(race.hits) == 1
    assert faults.answers_of("AuthorizeSecurityGroupIngress")[0] == "InvalidPermission.Duplicate"
    # ... and yet the group allows TCP 22 from every current prefix of the region
    assert ingress_of(group) == eic_rules(REGION, EIC_US_EAST_1, EIC_US_EAST_1_V6)
    # And the instance has the group and is fixed
    assert eni_groups(ec2, instance) == [net.app_group_id, group]
    assert entry(report, instance).verdict == "fixed"

    # And a second run writes nothing
    again = remediate_scan(faults, ranges_2026)
    assert faults.writes() == []
    assert entry(again, instance).verdict == "compliant"


def test_refresh_adds_what_is_missing_and_counts_only_what_it_added(faults: FaultInjector, aws, tmp_path):
    # Given a managed group in ap-southeast-6, refreshed from 2026-05-29 (no EIC prefix for that region yet)
    ec2 = boto3.client("ec2", AP_SOUTHEAST_6)
    vpc_id = ec2.create_vpc(CidrBlock="10.6.0.0/16")["Vpc"]["VpcId"]
    group = managed_group(ec2, vpc_id, region=AP_SOUTHEAST_6)
    store = FileStateStore(tmp_path / "state.json")
    settings = Settings.build(regions=(AP_SOUTHEAST_6,))
    clients = AwsClients()
    apply_ranges(clients, settings, store, snapshot("2026-05-29"), replay_same=False, now=lambda: T0)
    assert ingress_of(group, AP_SOUTHEAST_6) == set()
    # and its new IPv4 prefix added by someone else just before eic-guard authorizes IPv4 and IPv6 together
    race = someone_adds_first(faults, group, AP_SOUTHEAST_6, AP_SOUTHEAST_6_EIC[0])
    faults.clear()

    # When 2026-06-01, which adds the region's prefixes, is applied
    result = apply_ranges(
        clients, settings, store, snapshot("2026-06-01"), replay_same=False, now=lambda: T0 + timedelta(hours=1)
    )

    # Then the request really failed whole with InvalidPermission.Duplicate ...
    assert len(race.hits) == 1
    assert faults.answers_of("AuthorizeSecurityGroupIngress")[0] == "InvalidPermission.Duplicate"
    # ... and yet every current prefix is in the group
    assert ingress_of(group, AP_SOUTHEAST_6) == eic_rules(AP_SOUTHEAST_6, *AP_SOUTHEAST_6_EIC)
    # And the summary counts only the prefix eic-guard added itself, and the state advanced
    assert result.summary()["status"] == "applied"
    assert result.summary()["prefixes_added"] == 1
    assert [r.added for r in result.regions] == [[AP_SOUTHEAST_6_EIC[1]]]
    assert store.load().sync_token == snapshot("2026-06-01").sync_token

    # And applying the same file again writes nothing
    faults.clear()
    again = apply_ranges(
        clients, settings, store, snapshot("2026-06-01"), replay_same=True, now=lambda: T0 + timedelta(hours=2)
    )
    assert faults.writes() == []
    assert again.summary()["prefixes_added"] == 0
    assert ingress_of(group, AP_SOUTHEAST_6) == eic_rules(AP_SOUTHEAST_6, *AP_SOUTHEAST_6_EIC)
