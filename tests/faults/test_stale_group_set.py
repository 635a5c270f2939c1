"""Defect 7: the attach must write the ENI's groups as they are *now*, not as they were at the start of the run.

EC2's ModifyNetworkInterfaceAttribute(Groups=...) replaces the whole set. The scan re-reads the current groups of the
ENIs it is about to change (one DescribeNetworkInterfaces per chunk of up to 200 ENIs), writes them plus the managed
group, and skips the write when the managed group is already there. The edits between gather and act are made
through a separate client by `FaultInjector.after_gather`.
"""

from __future__ import annotations

from eic_guard.checks.eic_ssh_ingress import ATTACH_MANAGED_GROUP

from tests.aws_views import eni_groups, primary_eni_id
from tests.conftest import REGION
from tests.faults.conftest import (
    US_EAST_1,
    action,
    entry,
    launch,
    managed_group,
    managed_group_in,
    remediate_scan,
    summary,
)
from tests.faults.injector import FaultInjector


def kept_groups(detail: str) -> str:
    """What the attach action says it kept: the text after "keeping "."""
    assert "keeping " in detail, detail
    return detail.split("keeping ", 1)[1]


def test_group_added_between_gather_and_act_stays_attached(faults: FaultInjector, account, ec2, ranges_2026):
    # Given an instance lacking SSH from EIC, and a monitoring group a person attaches to its ENI mid-run
    net = account.network()
    monitoring = account.security_group(net, "monitoring", [])
    [instance] = launch(account, net)
    eni = primary_eni_id(ec2, instance)

    def person_adds_monitoring(region, snapshot):
        ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[net.app_group_id, monitoring])

    faults.after_gather(person_adds_monitoring)

    # When a remediate scan runs
    report = remediate_scan(faults, ranges_2026)

    # Then the ENI has the app group, the monitoring group and the managed group
    managed = managed_group_in(ec2, net.vpc_id)
    assert sorted(eni_groups(ec2, instance)) == sorted([net.app_group_id, monitoring, managed])
    # And the report says it kept the groups the ENI had at the time of the write
    attach = action(report, instance, ATTACH_MANAGED_GROUP)
    assert attach.status == "done"
    assert {net.app_group_id, monitoring} <= set(kept_groups(attach.detail).replace(",", " ").split())
    assert entry(report, instance).verdict == "fixed"

    # And a second run writes nothing
    again = remediate_scan(faults, ranges_2026)
    assert faults.writes() == []
    assert entry(again, instance).verdict == "compliant"


def test_group_detached_by_a_responder_is_not_put_back(faults: FaultInjector, account, ec2, ranges_2026):
    # Given an instance whose ENI also has MySQL open to the world, which an incident responder detaches mid-run
    net = account.network()
    mysql_open = account.security_group(
        net,
        "mysql-open",
        [{"IpProtocol": "tcp", "FromPort": 3306, "ToPort": 3306, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    [instance] = launch(account, net, groups=[net.app_group_id, mysql_open])
    eni = primary_eni_id(ec2, instance)

    def responder_detaches_mysql(region, snapshot):
        ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[net.app_group_id])

    faults.after_gather(responder_detaches_mysql)

    # When a remediate scan runs
    report = remediate_scan(faults, ranges_2026)

    # Then the MySQL group stays detached: the ENI has the app group and the managed group only
    managed = managed_group_in(ec2, net.vpc_id)
    assert sorted(eni_groups(ec2, instance)) == sorted([net.app_group_id, managed])
    # And the report names only the group it really kept
    kept = kept_groups(action(report, instance, ATTACH_MANAGED_GROUP).detail)
    assert net.app_group_id in kept and mysql_open not in kept
    assert entry(report, instance).verdict == "fixed"

    # And a second run writes nothing (and still does not bring the group back)
    remediate_scan(faults, ranges_2026)
    assert faults.writes() == []
    assert mysql_open not in eni_groups(ec2, instance)


def test_no_write_when_the_managed_group_is_attached_by_the_time_of_the_write(
    faults: FaultInjector, account, ec2, ranges_2026
):
    # Given the VPC's managed group, up to date, and an instance without it, which another run attaches mid-run
    net = account.network()
    managed = managed_group(ec2, net.vpc_id, *US_EAST_1)
    [instance] = launch(account, net)
    eni = primary_eni_id(ec2, instance)

    def other_run_attaches(region, snapshot):
        ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[net.app_group_id, managed])

    faults.after_gather(other_run_attaches)

    # When a remediate scan runs
    report = remediate_scan(faults, ranges_2026)

    # Then it made no ModifyNetworkInterfaceAttribute call at all (nor any other write): it re-read the ENI
    assert faults.count("ModifyNetworkInterfaceAttribute") == 0
    assert faults.writes() == []
    assert faults.count("DescribeNetworkInterfaces") == 1
    assert eni_groups(ec2, instance) == [net.app_group_id, managed]
    # And the instance is reported with its SSH check satisfied, not as an error
    e = entry(report, instance)
    assert e.checks["eic-ssh-ingress"].status in ("fixed", "pass")
    assert e.verdict in ("fixed", "compliant")
    assert summary(report)["errors"] == 0

    # And a second run writes nothing
    remediate_scan(faults, ranges_2026)
    assert faults.writes() == []


def test_enis_are_reread_in_one_batched_call_not_one_per_instance(faults: FaultInjector, account, ec2, ranges_2026):
    # Given five drifted instances in one region
    net = account.network()
    instances = launch(account, net, count=5)

    # When a remediate scan runs
    report = remediate_scan(faults, ranges_2026)

    # Then the ENIs were re-read with exactly one DescribeNetworkInterfaces, filtered by their ids
    [reread] = [c for c in faults.calls if c.operation == "DescribeNetworkInterfaces"]
    [id_filter] = [f for f in reread.params.get("Filters", ()) if f["Name"] == "network-interface-id"]
    assert sorted(id_filter["Values"]) == sorted(primary_eni_id(ec2, i) for i in instances)
    # And every instance was fixed, one attach each
    managed = managed_group_in(ec2, net.vpc_id)
    assert faults.count("ModifyNetworkInterfaceAttribute") == 5
    for instance in instances:
        assert eni_groups(ec2, instance) == [net.app_group_id, managed]
    assert summary(report) == dict(
        instances=5, compliant=0, fixed=5, noncompliant=0, excluded=0, errors=0, warnings=0, connect_paths={"public": 5}
    )

    # And a second run writes nothing
    again = remediate_scan(faults, ranges_2026)
    assert faults.writes() == []
    assert summary(again)["compliant"] == 5
    assert REGION in again.regions
