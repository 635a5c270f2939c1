"""The deployed state machine (statemachine/eic_guard.asl.json, as template.yaml substitutes it) executed by moto's
Step Functions engine, its Lambda tasks running the real handlers with their template environments
(tests/step_functions.py). Each scenario asserts the execution's status, the report in S3, the alerts published and
the AWS state after."""

from __future__ import annotations

import pytest
import responses
from eic_guard.settings import IP_RANGES_URL

from tests.aws_views import eni_groups, metadata_endpoint
from tests.conftest import EIC_US_EAST_1, IP_RANGES
from tests.lambda_runtime import event

SNAPSHOT = IP_RANGES / "ip-ranges-2026-08-22.json"


@pytest.fixture
def ip_ranges_url():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as http:
        http.add(responses.GET, IP_RANGES_URL, body=SNAPSHOT.read_bytes(), content_type="application/json")
        yield http


@pytest.fixture
def fleet(account):
    """One instance lacking SSH from EIC and IMDS, one compliant (its own group allows the EIC prefix)."""
    net = account.network()
    eic_ssh = account.security_group(
        net, "eic-ssh", [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": EIC_US_EAST_1}]}]
    )
    ami = account.al2023_ami()
    [fixable] = account.launch(
        image_id=ami, subnet_id=net.public_subnet_id, group_ids=[net.app_group_id], public_ip=True, imds="disabled"
    )
    [compliant] = account.launch(image_id=ami, subnet_id=net.public_subnet_id, group_ids=[eic_ssh], public_ip=True)
    return net, fixable, compliant


@pytest.mark.parametrize("execution_input", [event("plan-scan.json"), {}, None], ids=["schedule", "empty", "none"])
def test_the_nightly_execution_scans_fixes_reports_and_a_second_night_changes_nothing(
    state_machine, fleet, ec2, ip_ranges_url, execution_input
):
    # Given the stack deployed with its defaults and a fleet with one fixable and one compliant instance
    _, fixable, compliant = fleet
    machine = state_machine()

    # When the schedule starts the execution
    run = machine.run(execution_input)

    # Then it succeeds with Aggregate's summary, the report names both instances, the fix is made in EC2
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert run.output["summary"]["instances"] == 2
    assert run.output["summary"]["fixed"] == 1 and run.output["summary"]["compliant"] == 1
    report = machine.report(run)
    assert {i["instance_id"]: i["verdict"] for i in report["instances"]} == {fixable: "fixed", compliant: "compliant"}
    assert metadata_endpoint(ec2, fixable) == "enabled"
    assert len(eni_groups(ec2, fixable)) == 2
    assert machine.alerts() == []  # everything fixed: nothing for a person to do (quiet alerts)

    # And a second night changes nothing
    again = machine.run(execution_input)
    assert again.status == "SUCCEEDED"
    assert again.output["summary"]["compliant"] == 2 and again.output["summary"]["fixed"] == 0
    assert [a["status"] for i in machine.report(again)["instances"] for a in i["actions"]] == []
