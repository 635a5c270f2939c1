"""The inventory's near-miss look-up (aws/inventory.py: every whole-region scan) held against the
roles: the fleets of test_calls_against_roles.py always have opted-in instances, so their runs never make it.

The calls are recorded on moto by the same CallRecorder and evaluated against the worker role template.yaml renders
and the member role member/template.yaml renders, in both modes."""

from __future__ import annotations

import boto3
import pytest
from eic_guard.aws.inventory import gather
from eic_guard.settings import Settings
from eic_guard.simulated import SimulatedAccount
from moto import mock_aws

from tests.template.call_recorder import CallRecorder
from tests.template.cfn import PSEUDO, member_values_for, parameter_values, render, render_member
from tests.template.iam_eval import evaluate
from tests.template.parameter_sets import STACK_REGION

REGION = "eu-west-1"  # a configured region that is not the stack's


@pytest.fixture(scope="module")
def near_miss_calls():
    """gather() of a region whose only instance is tagged eic-guard:managed=True, every call recorded."""
    recorder = CallRecorder(PSEUDO["AWS::AccountId"])
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        account = SimulatedAccount(session.client("ec2"), session.client("ssm"))
        net = account.network()
        account.launch(
            image_id=account.al2023_ami(),
            subnet_id=net.public_subnet_id,
            group_ids=[net.app_group_id],
            tags={"eic-guard:managed": "True"},
            opted_in=False,
        )
        recording = boto3.Session(region_name=REGION)
        recorder.register(recording._session)
        recorder.recording, recorder.function_id = True, "ScanTargetFunction"
        snapshot = gather(recording.client("ec2"), PSEUDO["AWS::AccountId"], REGION, Settings.build(regions=(REGION,)))
    assert snapshot.notes, "the fleet must make the look-up find something"
    return recorder.calls


@pytest.mark.parametrize("mode", ["report", "remediate"])
def test_the_near_miss_look_up_is_allowed_to_the_worker_and_member_roles(near_miss_calls, mode):
    # Given the calls of a near-miss look-up, and the roles rendered for a stack covering that region
    params = parameter_values(Mode=mode, Regions=f"{STACK_REGION},{REGION}")
    stack = render(params, STACK_REGION)
    member = render_member(
        member_values_for(params, STACK_REGION, WorkerRoleArns=stack.physical("ScanTargetFunctionRole", "Arn"))
    )
    roles = {
        "worker": stack.role_statements("ScanTargetFunctionRole"),
        "member": member.role_statements("MemberRole"),
    }

    # When each call's authorizations are evaluated against each role
    denied = [
        f"{role}: {request.action} on {request.resource}: {decision.reason}"
        for role, statements in roles.items()
        for call in near_miss_calls
        for request in call.requests
        if not (decision := evaluate(statements, request)).allowed
    ]

    # Then the look-up was made (DescribeTags, then DescribeInstances for what it found) and both roles allow it
    assert [c.action for c in near_miss_calls][:3] == [
        "ec2:DescribeInstances",
        "ec2:DescribeTags",
        "ec2:DescribeInstances",
    ]
    assert denied == []
