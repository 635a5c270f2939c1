"""A scan's report tells a person what to do (per-check guidance) and flags SSH open wider than EIC (warnings),
docs/architecture.md §5b: moto fleet, report mode (no write, so no second run to compare)."""

from __future__ import annotations

from eic_guard.aws.clients import AwsClients
from eic_guard.checks import guidance
from eic_guard.fanout.local import run_scan
from eic_guard.settings import Settings

from tests.conftest import EIC_US_EAST_1, REGION

SILENT = ("pass", "not-applicable")


def ssh_from(cidr: str) -> list[dict]:
    return [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": cidr}]}]


def test_every_non_passing_check_has_guidance_and_ssh_open_to_the_internet_is_a_warning(
    account, ec2, api_calls, ranges_2026
):
    # Given a fleet: SSH open to 0.0.0.0/0 (passes), drifted (fixable), in a subnet without an internet route,
    # behind a NACL that denies TCP 22 at rule 50, and on a non-Amazon image
    net = account.network()
    blocked_net = account.network("10.1.0.0/16", name="blocked")
    acl = account.block_ssh_in_nacl(blocked_net.vpc_id, blocked_net.public_subnet_id, rule_number=50)
    open_group = account.security_group(net, "open-ssh", ssh_from("0.0.0.0/0"))
    eic_group = account.security_group(net, "eic-ssh", ssh_from(EIC_US_EAST_1))
    blocked_eic_group = account.security_group(blocked_net, "eic-ssh", ssh_from(EIC_US_EAST_1))
    al2023 = account.al2023_ami()

    def launch(subnet_id: str, group_id: str, image_id: str = al2023) -> str:
        [instance] = account.launch(image_id=image_id, subnet_id=subnet_id, group_ids=[group_id], public_ip=True)
        return instance

    wide_open = launch(net.public_subnet_id, open_group)
    drifted = account.launch_drifted(net)
    private = account.launch_drifted(net, subnet_id=net.private_subnet_id)
    behind_nacl = launch(blocked_net.public_subnet_id, blocked_eic_group)
    foreign_image = launch(net.public_subnet_id, eic_group, account.own_image("rhel-9-custom"))
    api_calls.clear()

    # When a report-mode scan runs
    report = run_scan(AwsClients(), Settings.build(regions=(REGION,), mode="report"), ranges_2026)

    # Then nothing was written
    assert api_calls.writes() == []
    entries = {e.instance_id: e for e in report.instances}
    # And every check that does not pass says what to do, with AWS documentation; passing ones say nothing
    for entry in entries.values():
        for check_id, check in entry.checks.items():
            if check.status in SILENT:
                assert check.guidance is None, (entry.instance_id, check_id)
            else:
                assert check.guidance and "https://docs.aws.amazon.com/" in check.guidance, (
                    entry.instance_id,
                    check_id,
                )
    assert {c: entries[drifted].checks[c].status for c in ("eic-ssh-ingress", "imds-enabled")} == {
        "eic-ssh-ingress": "would-fix",
        "imds-enabled": "would-fix",
    }
    assert entries[foreign_image].checks["al2023-ami"].status == "fail"
    # And the guidance names the exact route, the exact NACL rule and what is blocked by what
    assert entries[private].checks["internet-route"].guidance == (
        f"Add the route 0.0.0.0/0 -> {net.internet_gateway_id} to {net.main_route_table_id} (the VPC's main table: "
        f"every subnet without its own table uses it). See {guidance.INTERNET_GATEWAY}"
    )
    assert (
        entries[private]
        .checks["eic-ssh-ingress"]
        .guidance.startswith(
            "Fix internet-route first (see its guidance); eic-guard then attaches its eic-guard-ssh group"
        )
    )
    assert entries[behind_nacl].checks["network-acl"].guidance == (
        f"In {acl}, add inbound rule 49 allowing TCP 22 from {EIC_US_EAST_1} (before deny rule 50). "
        f"See {guidance.NACL_RULES}"
    )
    # And the instance open to the whole internet passes with one warning naming its group
    assert entries[wide_open].verdict == "compliant"
    assert entries[wide_open].checks["eic-ssh-ingress"].reason == f"TCP 22 allowed from {EIC_US_EAST_1}"
    assert entries[wide_open].warnings == [
        f"ssh-open-to-internet: {open_group} allows TCP 22 from 0.0.0.0/0 (the whole internet); "
        f"EIC needs only {EIC_US_EAST_1}"
    ]
    assert all(not e.warnings for i, e in entries.items() if i != wide_open)
    assert report.summary.warnings == 1
    # And the JSON document carries both
    document = report.to_dict()
    [wide_open_doc] = [e for e in document["instances"] if e["instance_id"] == wide_open]
    assert wide_open_doc["warnings"] == entries[wide_open].warnings
    assert document["summary"]["warnings"] == 1
