"""Throttling and vanishing resources: one instance's trouble is contained, the run goes on, AWS ends right.

Throttling is an error *response* to an HTTP attempt (FaultInjector.respond), so botocore's standard retry mode
sees and retries it exactly like a real one; the throttled attempts never reach moto.
"""

from __future__ import annotations

from tests.aws_views import eni_groups, metadata_options, primary_eni_id
from tests.faults.conftest import entry, launch, managed_group_in, remediate_scan, summary
from tests.faults.injector import FaultInjector


def test_throttled_write_is_retried_and_the_instance_ends_fixed(
    faults: FaultInjector, account, ec2, ranges_2026, no_backoff
):
    # Given an instance with its metadata endpoint disabled (IMDSv2 required), and EC2 throttling the first two
    # attempts of the metadata change
    net = account.network()
    [instance] = launch(account, net, imds="disabled", http_tokens="required")
    throttled = faults.respond("ModifyInstanceMetadataOptions", "RequestLimitExceeded", status=503, times=2)

    # When a remediate scan runs
    report = remediate_scan(faults, ranges_2026)

    # Then the one call took three attempts, and the instance ends fixed with IMDSv2 still required
    assert len(throttled.hits) == 2
    assert faults.count("ModifyInstanceMetadataOptions") == 1
    assert [a.outcome for a in faults.attempts_of("ModifyInstanceMetadataOptions")] == [
        "RequestLimitExceeded",
        "RequestLimitExceeded",
        "sent",
    ]
    options = metadata_options(ec2, instance)
    assert (options["HttpEndpoint"], options.get("HttpTokens")) == ("enabled", "required")
    assert entry(report, instance).verdict == "fixed"

    # And a second run writes nothing
    again = remediate_scan(faults, ranges_2026)
    assert faults.writes() == []
    assert entry(again, instance).verdict == "compliant"


def test_write_throttled_on_every_attempt_is_that_instances_error_only(
    faults: FaultInjector, account, ec2, ranges_2026, no_backoff
):
    # Given three instances with the metadata endpoint disabled, and EC2 throttling every attempt to change the first
    net = account.network()
    throttled_instance, *others = launch(account, net, count=3, imds="disabled")
    throttled = faults.respond(
        "ModifyInstanceMetadataOptions",
        "RequestLimitExceeded",
        status=503,
        when=lambda params: params.get("InstanceId") == throttled_instance,
    )

    # When a remediate scan runs
    report = remediate_scan(faults, ranges_2026)

    # Then that instance's metadata check is an error naming the throttling, after botocore's attempts ran out
    e = entry(report, throttled_instance)
    assert len(throttled.hits) > 1
    assert e.checks["imds-enabled"].status == "error"
    assert "RequestLimitExceeded" in e.checks["imds-enabled"].reason
    assert e.verdict == "error"
    # And its metadata is unchanged in AWS (no throttled attempt reached EC2) while the others were fixed
    assert metadata_options(ec2, throttled_instance)["HttpEndpoint"] == "disabled"
    for instance in others:
        assert metadata_options(ec2, instance)["HttpEndpoint"] == "enabled"
        assert entry(report, instance).verdict == "fixed"
    assert summary(report) == dict(
        instances=3, compliant=0, fixed=2, noncompliant=0, excluded=0, errors=1, warnings=0, connect_paths={"public": 3}
    )

    # And a second run, still throttled, only retries that one write
    again = remediate_scan(faults, ranges_2026)
    assert faults.writes() == ["ModifyInstanceMetadataOptions"]
    assert summary(again) == dict(
        instances=3, compliant=2, fixed=0, noncompliant=0, excluded=0, errors=1, warnings=0, connect_paths={"public": 3}
    )


def test_instance_terminated_between_gather_and_act_is_an_error_and_the_run_goes_on(
    faults: FaultInjector, account, ec2, ranges_2026
):
    # Given three instances lacking SSH from EIC and IMDS; the first is terminated right after the gather.
    # moto keeps a terminated instance's primary ENI and accepts writes to both, so the injector answers as EC2 does
    # once they are gone: the ENI is absent from describes, writes naming either are NotFound.
    net = account.network()
    gone, *others = launch(account, net, count=3, imds="disabled")
    gone_eni = primary_eni_id(ec2, gone)
    faults.after_gather(lambda region, snapshot: ec2.terminate_instances(InstanceIds=[gone]))
    faults.rewrite(
        "DescribeNetworkInterfaces",
        lambda parsed: parsed.__setitem__(
            "NetworkInterfaces", [n for n in parsed["NetworkInterfaces"] if n["NetworkInterfaceId"] != gone_eni]
        ),
    )
    faults.error(
        "ModifyNetworkInterfaceAttribute",
        "InvalidNetworkInterfaceID.NotFound",
        message=f"The networkInterface ID '{gone_eni}' does not exist",
        when=lambda params: params.get("NetworkInterfaceId") == gone_eni,
    )
    faults.error(
        "ModifyInstanceMetadataOptions",
        "InvalidInstanceID.NotFound",
        message=f"The instance ID '{gone}' does not exist",
        when=lambda params: params.get("InstanceId") == gone,
    )

    # When a remediate scan runs
    report = remediate_scan(faults, ranges_2026)

    # Then the terminated instance is an error that says it vanished
    e = entry(report, gone)
    assert e.verdict == "error"
    assert "vanished" in " ".join(c.reason or "" for c in e.checks.values())
    # And the others were fixed, and the counts add up
    managed = managed_group_in(ec2, net.vpc_id)
    for instance in others:
        assert entry(report, instance).verdict == "fixed"
        assert eni_groups(ec2, instance) == [net.app_group_id, managed]
        assert metadata_options(ec2, instance)["HttpEndpoint"] == "enabled"
    assert summary(report) == dict(
        instances=3, compliant=0, fixed=2, noncompliant=0, excluded=0, errors=1, warnings=0, connect_paths={"public": 3}
    )
    assert report.target_errors == []

    # And a second run no longer sees it and writes nothing
    again = remediate_scan(faults, ranges_2026)
    assert faults.writes() == []
    assert {x.instance_id for x in again.instances} == set(others)
