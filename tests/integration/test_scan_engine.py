"""The scan engine against moto: AWS state after remediation, the report entries, and the API calls made."""

from __future__ import annotations

from collections import Counter

import pytest
from eic_guard.aws.clients import AwsClients
from eic_guard.fanout.local import run_scan
from eic_guard.settings import Settings
from eic_guard.simulated import ssh_from

from tests.aws_views import (
    ALL_SOURCES,
    describe_instance,
    eni_groups,
    ingress_rules,
    metadata_endpoint,
    metadata_options,
)
from tests.conftest import EIC_US_EAST_1, EIC_US_EAST_1_V6, REGION

MANAGED_NAME = "eic-guard-ssh"
DESCRIPTION = "eic-guard EC2_INSTANCE_CONNECT us-east-1"
OTHER_CHECKS = ("public-ipv4", "al2023-ami", "internet-route", "network-acl")


# ---- helpers -----------------------------------------------------------------------------------------------------
def scan(ranges, mode="remediate", **settings):
    return run_scan(AwsClients(), Settings.build(regions=(REGION,), mode=mode, **settings), ranges)


def entry(report, instance_id):
    matches = [e for e in report.instances if e.instance_id == instance_id]
    assert len(matches) == 1, f"{instance_id} appears {len(matches)} times in the report"
    return matches[0]


def groups_named(ec2, vpc_id, name=MANAGED_NAME) -> list[dict]:
    return ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": [name]}]
    )["SecurityGroups"]


def egress(group: dict) -> set[tuple]:
    return {(p["IpProtocol"], r["CidrIp"]) for p in group["IpPermissionsEgress"] for r in p.get("IpRanges", ())} | {
        (p["IpProtocol"], r["CidrIpv6"]) for p in group["IpPermissionsEgress"] for r in p.get("Ipv6Ranges", ())
    }


def launch_failing(account, network, count=1, **kwargs) -> list[str]:
    """Opted-in, public, AL2023, but no SSH rule for EIC and (by default) the metadata endpoint off."""
    kwargs.setdefault("imds", "disabled")
    return account.launch(
        image_id=account.al2023_ami(),
        subnet_id=network.public_subnet_id,
        group_ids=[network.app_group_id],
        public_ip=True,
        count=count,
        **kwargs,
    )


def assert_quiet_second_run(ranges, api_calls, instance_ids, **settings):
    """Run again: no write call at all, and every given instance is compliant with every check passing."""
    api_calls.clear()
    report = scan(ranges, **settings)
    assert api_calls.writes() == []
    for instance_id in instance_ids:
        e = entry(report, instance_id)
        assert e.verdict == "compliant", e.checks
        assert {c.status for c in e.checks.values()} == {"pass"}
        assert e.actions == []
    return report


# ---- remediation -------------------------------------------------------------------------------------------------
def test_remediate_attaches_a_new_managed_group_and_enables_imds_only(account, ec2, api_calls, ranges_2026):
    # Given an opted-in instance without an SSH rule for EIC and with its metadata endpoint off (tokens required)
    net = account.network()
    [instance] = launch_failing(account, net, http_tokens="required")
    api_calls.clear()

    # When a remediate scan runs
    report = scan(ranges_2026)

    # Then its primary ENI keeps its group and gains exactly one new eic-guard-ssh group
    groups = eni_groups(ec2, instance)
    assert groups[0] == net.app_group_id and len(groups) == 2
    [managed] = groups_named(ec2, net.vpc_id)
    assert groups[1] == managed["GroupId"]
    assert {"Key": "ManagedBy", "Value": "eic-guard"} in managed["Tags"]
    # whose ingress is exactly TCP 22 from the region's EIC prefixes, described, and whose egress is moto's default
    assert ingress_rules(managed, ALL_SOURCES) == {
        ("tcp", 22, 22, EIC_US_EAST_1, DESCRIPTION),
        ("tcp", 22, 22, EIC_US_EAST_1_V6, DESCRIPTION),
    }
    assert egress(managed) == {("-1", "0.0.0.0/0")}
    # And the metadata endpoint is on with IMDSv2 still required: moto stores exactly what the request carried, so
    # its state shows what EC2 would hold if the request had relied on the default for HttpTokens (docs/architecture.md
    # §4)
    assert metadata_endpoint(ec2, instance) == "enabled"
    assert metadata_options(ec2, instance)["HttpTokens"] == "required"
    # And the report says so
    e = entry(report, instance)
    assert e.verdict == "fixed"
    assert e.checks["eic-ssh-ingress"].status == "fixed"
    assert e.checks["imds-enabled"].status == "fixed"
    assert all(e.checks[c].status == "pass" for c in OTHER_CHECKS)
    assert [(a.action, a.status) for a in e.actions] == [
        ("create-security-group", "done"),
        ("authorize-ingress", "done"),
        ("attach-security-group", "done"),
        ("enable-imds", "done"),
    ]
    assert report.summary.model_dump() == {
        "instances": 1,
        "compliant": 0,
        "fixed": 1,
        "noncompliant": 0,
        "excluded": 0,
        "errors": 0,
        "warnings": 0,
        "connect_paths": {"public": 1},
    }

    # And a second run writes nothing and finds the instance compliant
    assert_quiet_second_run(ranges_2026, api_calls, [instance])
    assert eni_groups(ec2, instance) == groups


def test_one_managed_group_per_vpc_for_many_failing_instances(account, ec2, api_calls, ranges_2026):
    # Given two VPCs with three failing instances each
    net_a = account.network("10.0.0.0/16", name="a")
    net_b = account.network("10.1.0.0/16", name="b")
    fleet = {
        net_a.vpc_id: launch_failing(account, net_a, count=3, imds="enabled"),
        net_b.vpc_id: launch_failing(account, net_b, count=3, imds="enabled"),
    }
    api_calls.clear()

    # When a remediate scan runs
    report = scan(ranges_2026)

    # Then exactly one managed group was created and filled per VPC, and every instance of the VPC got it
    assert api_calls.count("CreateSecurityGroup") == 2
    assert api_calls.count("AuthorizeSecurityGroupIngress") == 2
    for vpc_id, instances in fleet.items():
        [managed] = groups_named(ec2, vpc_id)
        for instance in instances:
            assert managed["GroupId"] in eni_groups(ec2, instance)
            assert entry(report, instance).verdict == "fixed"
    assert report.summary.fixed == 6

    # And a second run writes nothing
    assert_quiet_second_run(ranges_2026, api_calls, [i for ids in fleet.values() for i in ids])


def test_existing_managed_group_is_reused_and_topped_up(account, ec2, api_calls, ranges_2026):
    # Given the VPC already holds eic-guard's group, with only the IPv4 rule, and a failing instance without it
    net = account.network()
    existing = ec2.create_security_group(
        GroupName=MANAGED_NAME,
        Description="pre-existing",
        VpcId=net.vpc_id,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": "ManagedBy", "Value": "eic-guard"}]}],
    )["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=existing,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": EIC_US_EAST_1, "Description": DESCRIPTION}],
            }
        ],
    )
    [instance] = launch_failing(account, net, imds="enabled")
    api_calls.clear()

    # When a remediate scan runs
    report = scan(ranges_2026)

    # Then no group is created, the existing one gains only the missing IPv6 rule and is attached
    assert api_calls.count("CreateSecurityGroup") == 0
    [authorize] = [params for name, params in api_calls.calls if name == "AuthorizeSecurityGroupIngress"]
    assert authorize["GroupId"] == existing
    assert [r["CidrIpv6"] for p in authorize["IpPermissions"] for r in p.get("Ipv6Ranges", ())] == [EIC_US_EAST_1_V6]
    assert [r for p in authorize["IpPermissions"] for r in p.get("IpRanges", ())] == []
    [managed] = groups_named(ec2, net.vpc_id)
    assert managed["GroupId"] == existing
    assert ingress_rules(managed, ALL_SOURCES) == {
        ("tcp", 22, 22, EIC_US_EAST_1, DESCRIPTION),
        ("tcp", 22, 22, EIC_US_EAST_1_V6, DESCRIPTION),
    }
    assert eni_groups(ec2, instance) == [net.app_group_id, existing]
    assert entry(report, instance).verdict == "fixed"

    # And a second run writes nothing
    assert_quiet_second_run(ranges_2026, api_calls, [instance])


def test_report_mode_plans_the_same_fixes_and_writes_nothing(account, ec2, api_calls, ranges_2026):
    # Given the same failing instance as the remediate test
    net = account.network()
    [instance] = launch_failing(account, net)
    groups_before, metadata_before = eni_groups(ec2, instance), metadata_options(ec2, instance)
    api_calls.clear()

    # When a report-mode scan runs
    report = scan(ranges_2026, mode="report")

    # Then the fixes are planned, not made
    assert api_calls.writes() == []
    e = entry(report, instance)
    assert e.verdict == "noncompliant"
    assert e.checks["eic-ssh-ingress"].status == "would-fix"
    assert e.checks["imds-enabled"].status == "would-fix"
    assert [a.action for a in e.actions] == [
        "create-security-group",
        "authorize-ingress",
        "attach-security-group",
        "enable-imds",
    ]
    assert {a.status for a in e.actions} == {"planned"}
    assert report.mode == "report"
    assert report.summary.noncompliant == 1 and report.summary.fixed == 0
    # And AWS is as it was
    assert eni_groups(ec2, instance) == groups_before
    assert metadata_options(ec2, instance) == metadata_before
    assert groups_named(ec2, net.vpc_id) == []

    # And running it again still changes nothing and says the same
    api_calls.clear()
    again = scan(ranges_2026, mode="report")
    assert api_calls.writes() == []
    assert entry(again, instance).checks == e.checks


# ---- scope -------------------------------------------------------------------------------------------------------
def test_untagged_excluded_and_terminated_instances_are_left_alone(account, ec2, api_calls, ranges_2026):
    # Given failing instances: one opted in, one not opted in, one excluded, one whose exclusion has expired,
    # and one opted in but terminated
    net = account.network()
    [opted_in] = launch_failing(account, net)
    [untagged] = launch_failing(account, net, opted_in=False)
    [wrong_value] = launch_failing(account, net, opted_in=False, tags={"eic-guard:managed": "false"})
    [excluded] = launch_failing(account, net, tags={"eic-guard:exclude": "vendor appliance, CHG-1234"})
    [expired] = launch_failing(
        account, net, tags={"eic-guard:exclude": "migration", "eic-guard:exclude-until": "2020-01-31"}
    )
    [terminated] = launch_failing(account, net)
    ec2.terminate_instances(InstanceIds=[terminated])
    untouched = (untagged, wrong_value, excluded)
    before = {i: (eni_groups(ec2, i), metadata_options(ec2, i)) for i in untouched}
    api_calls.clear()

    # When a remediate scan runs
    report = scan(ranges_2026)

    # Then only the opted-in and the no-longer-excluded instances are fixed
    assert entry(report, opted_in).verdict == "fixed"
    assert entry(report, expired).verdict == "fixed"
    # And instances that are not opted in are neither touched nor reported
    reported = {e.instance_id for e in report.instances}
    assert reported == {opted_in, excluded, expired}
    for instance in untouched:
        assert (eni_groups(ec2, instance), metadata_options(ec2, instance)) == before[instance]
    # And the excluded one is reported as excluded, with its reason, and nothing was done to it
    e = entry(report, excluded)
    assert e.verdict == "excluded"
    assert "vendor appliance, CHG-1234" in e.excluded_reason
    assert e.actions == []
    assert report.summary.model_dump() == {
        "instances": 3,
        "compliant": 0,
        "fixed": 2,
        "noncompliant": 0,
        "excluded": 1,
        "errors": 0,
        "warnings": 0,
        "connect_paths": {"public": 3},
    }
    # And no write named an instance or ENI outside scope
    touched = {str(v) for _, params in api_calls.calls for v in params.values()}
    out_of_scope = {*untouched, terminated} | {
        n["NetworkInterfaceId"] for i in untouched for n in describe_instance(ec2, i)["NetworkInterfaces"]
    }
    assert touched & out_of_scope == set()

    # And a second run writes nothing
    second = assert_quiet_second_run(ranges_2026, api_calls, [opted_in, expired])
    assert entry(second, excluded).verdict == "excluded"


def test_unowned_group_named_like_the_managed_one_is_never_used(account, ec2, api_calls, ranges_2026):
    # Given someone else's group called eic-guard-ssh (no ManagedBy tag) in the VPC, and an instance missing SSH
    net = account.network()
    foreign = account.security_group(net, MANAGED_NAME, [ssh_from("203.0.113.0/24")])
    foreign_before = ec2.describe_security_groups(GroupIds=[foreign])["SecurityGroups"][0]
    [instance] = launch_failing(account, net, imds="enabled")
    api_calls.clear()

    # When a remediate scan runs
    report = scan(ranges_2026)

    # Then that group is neither changed nor attached, and no other group of that name appears
    assert ec2.describe_security_groups(GroupIds=[foreign])["SecurityGroups"][0] == foreign_before
    assert [g["GroupId"] for g in groups_named(ec2, net.vpc_id)] == [foreign]
    assert eni_groups(ec2, instance) == [net.app_group_id]
    # And the check fails with a reason that says why
    e = entry(report, instance)
    assert e.verdict == "noncompliant"
    assert e.checks["eic-ssh-ingress"].status == "fail"
    assert "without the ManagedBy=eic-guard tag" in e.checks["eic-ssh-ingress"].reason
    assert "AuthorizeSecurityGroupIngress" not in api_calls.names()
    assert "ModifyNetworkInterfaceAttribute" not in api_calls.names()

    # And a second run changes nothing and says the same
    api_calls.clear()
    again = scan(ranges_2026)
    assert api_calls.writes() == []
    assert entry(again, instance).checks["eic-ssh-ingress"] == e.checks["eic-ssh-ingress"]
    assert ec2.describe_security_groups(GroupIds=[foreign])["SecurityGroups"][0] == foreign_before
    # And report mode does not promise a fix that remediate mode refuses
    planned = entry(scan(ranges_2026, mode="report"), instance)
    assert planned.checks["eic-ssh-ingress"] == e.checks["eic-ssh-ingress"]
    assert planned.actions[0].status == "failed"


def test_prefix_list_ingress_source_references_the_eic_list(account, ec2, api_calls, ranges_2026):
    # Given the region's EIC prefix lists, IPv4 and IPv6 (customer-managed stand-ins: moto lacks the AWS-managed
    # ones) and an instance missing SSH
    net = account.network()
    prefix_list = ec2.create_managed_prefix_list(
        PrefixListName=f"com.amazonaws.{REGION}.ec2-instance-connect",
        AddressFamily="IPv4",
        MaxEntries=5,
        Entries=[{"Cidr": EIC_US_EAST_1}],
    )["PrefixList"]["PrefixListId"]
    ipv6_list = ec2.create_managed_prefix_list(
        PrefixListName=f"com.amazonaws.{REGION}.ipv6.ec2-instance-connect",
        AddressFamily="IPv6",
        MaxEntries=5,
        Entries=[{"Cidr": EIC_US_EAST_1_V6}],
    )["PrefixList"]["PrefixListId"]
    [instance] = launch_failing(account, net, imds="enabled")
    api_calls.clear()

    # When a remediate scan runs with IngressSource=prefix-list
    report = scan(ranges_2026, ingress_source="prefix-list")

    # Then the managed group allows TCP 22 from the two lists, not from CIDRs, and is attached
    [managed] = groups_named(ec2, net.vpc_id)
    # (moto drops prefix-list rule descriptions, so the description is asserted on the request)
    assert {rule[:4] for rule in ingress_rules(managed, ALL_SOURCES)} == {
        ("tcp", 22, 22, prefix_list),
        ("tcp", 22, 22, ipv6_list),
    }
    [authorize] = [params for name, params in api_calls.calls if name == "AuthorizeSecurityGroupIngress"]
    assert authorize["IpPermissions"] == [
        {
            "IpProtocol": "tcp",
            "FromPort": 22,
            "ToPort": 22,
            "PrefixListIds": [
                {"PrefixListId": pl, "Description": DESCRIPTION} for pl in sorted((prefix_list, ipv6_list))
            ],
        }
    ]
    assert eni_groups(ec2, instance) == [net.app_group_id, managed["GroupId"]]
    assert entry(report, instance).verdict == "fixed"

    # And the second run reads the list's entries, passes the instance and writes nothing
    second = assert_quiet_second_run(ranges_2026, api_calls, [instance], ingress_source="prefix-list")
    assert api_calls.count("GetManagedPrefixListEntries") == 2
    assert EIC_US_EAST_1 in entry(second, instance).checks["eic-ssh-ingress"].reason
    # And the target has no fallback note: both lists exist
    assert [t.notes for t in (report.targets + second.targets)] == [[], []]


PREFIX_LIST_FALLBACK_NOTES = [
    f"prefix-list mode: com.amazonaws.{REGION}.ec2-instance-connect does not exist in {REGION}; "
    "the managed groups use the EIC CIDRs instead",
    f"prefix-list mode: com.amazonaws.{REGION}.ipv6.ec2-instance-connect does not exist in {REGION}; "
    "the managed groups use the EIC IPv6 CIDRs instead",
]


@pytest.mark.parametrize("mode", ["remediate", "report"])
def test_prefix_list_mode_without_the_lists_uses_cidrs_and_says_so_once(account, ec2, api_calls, ranges_2026, mode):
    # Given a region without the EIC prefix lists (moto has none of the AWS-managed lists) and an instance missing SSH
    net = account.network()
    [instance] = launch_failing(account, net, imds="enabled")

    # When a scan runs with IngressSource=prefix-list (the apply phase and the scan's gather both see the fallback)
    report = scan(ranges_2026, mode=mode, ingress_source="prefix-list")

    # Then the target's notes say so once per family, and the instance gets (or would get) the CIDR rules
    [target] = report.targets
    assert target.notes == PREFIX_LIST_FALLBACK_NOTES
    assert entry(report, instance).checks["eic-ssh-ingress"].status == ("fixed" if mode == "remediate" else "would-fix")
    if mode == "remediate":
        [managed] = groups_named(ec2, net.vpc_id)
        assert {rule[3] for rule in ingress_rules(managed, ALL_SOURCES)} == {EIC_US_EAST_1, EIC_US_EAST_1_V6}
        # And the second run writes nothing and still says it (the groups still use CIDRs)
        second = assert_quiet_second_run(ranges_2026, api_calls, [instance], ingress_source="prefix-list")
        assert second.targets[0].notes == PREFIX_LIST_FALLBACK_NOTES


# ---- cost --------------------------------------------------------------------------------------------------------
def _read_calls(api_calls) -> Counter:
    return Counter(n for n in api_calls.names() if n not in api_calls.writes() and n != "DescribeInstances")


def test_describe_calls_do_not_grow_with_the_fleet(account, ec2, api_calls, ranges_2026):
    # Given 20 failing opted-in instances spread over two VPCs
    net_a = account.network("10.0.0.0/16", name="a")
    net_b = account.network("10.1.0.0/16", name="b")
    for net in (net_a, net_b):
        launch_failing(account, net, count=10)
    api_calls.clear()

    # When a remediate scan runs, and again after the fleet grows to 60 (40 new failing instances)
    scan(ranges_2026)
    small = _read_calls(api_calls)
    for net in (net_a, net_b):
        launch_failing(account, net, count=20)
    api_calls.clear()
    report = scan(ranges_2026)
    large = _read_calls(api_calls)

    # Then every read other than DescribeInstances is made the same, small number of times
    assert report.summary.instances == 60 and report.summary.fixed == 40
    assert small == large
    assert {"DescribeSecurityGroups", "DescribeImages", "DescribeRouteTables", "DescribeNetworkAcls"} <= set(large)
    assert max(large.values()) <= 2, large
    # And the writes are one per instance fix, the managed groups being reused
    assert api_calls.count("ModifyNetworkInterfaceAttribute") == 40
    assert api_calls.count("ModifyInstanceMetadataOptions") == 40
    assert api_calls.count("CreateSecurityGroup") == 0


@pytest.mark.parametrize("mode", ["report", "remediate"])
def test_scan_of_an_empty_account_reports_nothing(aws, api_calls, ranges_2026, mode):
    # Given an account with no opted-in instance
    # When a scan runs
    report = scan(ranges_2026, mode=mode)

    # Then the report is empty and nothing is written
    assert report.instances == []
    assert report.summary.instances == 0
    assert api_calls.writes() == []
