"""`eic-guard verify`'s pure parts: the probes cover every call the code declares, each answer is classified as EC2
and IAM mean it, problems are grouped across targets within a bound, the parameters' coherence, the checklist."""

from __future__ import annotations

import io
import itertools
from types import SimpleNamespace

import boto3
import pytest
from botocore.stub import Stubber
from eic_guard.cli.verify import default_stack
from eic_guard.fanout.results import UnreadableResult
from eic_guard.fanout.targets import Target as RunTarget
from eic_guard.permissions import IN_ACCOUNT, MEMBER, WORKER, Deployment, granted
from eic_guard.settings import Settings
from eic_guard.verify import probes
from eic_guard.verify.checklist import FAIL, PASS, SKIP, WARN, Checklist, Item, write_table
from eic_guard.verify.job import actions_to_probe, summarize
from eic_guard.verify.stack import Stack, parameter_items

DEPLOYMENTS = [
    Deployment(mode, public_ip, tags, hub, accounts)
    for mode, public_ip, tags, hub, accounts in itertools.product(
        ("report", "remediate"), (False, True), (False, True), (False, True), ("", "111111111111", "organization")
    )
]


@pytest.mark.parametrize("role", [WORKER, MEMBER])
def test_every_call_a_role_makes_in_an_account_has_a_probe(role):
    # Given every parameter combination, the actions the role is granted in the accounts it scans (permissions.CALLS)
    actions = set().union(*(actions_to_probe(role, d) for d in DEPLOYMENTS))

    # Then each has a probe: verify cannot drift from the code's declared calls
    assert actions - set(probes.PROBES) == set()
    assert "ec2:ModifyInstanceMetadataOptions" in actions and "iam:ListAccountAliases" in actions


def test_every_probe_is_a_call_some_role_makes():
    # Given every action any in-account role is granted under any parameters
    granted_anywhere = {a for role in IN_ACCOUNT for d in DEPLOYMENTS for a in granted(role, d)}

    # Then no probe tests a call the code never makes
    assert set(probes.PROBES) - granted_anywhere == set()


def test_the_hub_is_read_only_where_findings_are_on():
    assert "securityhub:DescribeHub" in actions_to_probe(MEMBER, Deployment(security_hub=True, accounts="x"))
    assert "securityhub:DescribeHub" not in actions_to_probe(WORKER, Deployment())


def stubbed_target(**resources) -> tuple[probes.Target, Stubber]:
    ec2 = boto3.client("ec2", "us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    target = probes.Target(
        ec2=ec2,
        iam=None,
        securityhub=None,
        region="us-east-1",
        settings=Settings(regions=("us-east-1",)),
        eic_prefix="18.206.107.24/29",
    )
    for name, value in resources.items():
        setattr(target, name, value)
    return target, Stubber(ec2)


INSTANCE = {
    "InstanceId": "i-0123456789abcdef0",
    "ImageId": "ami-1",
    "VpcId": "vpc-1",
    "MetadataOptions": {"HttpEndpoint": "enabled", "HttpTokens": "required"},
    "NetworkInterfaces": [
        {"NetworkInterfaceId": "eni-1", "Attachment": {"DeviceIndex": 0}, "Groups": [{"GroupId": "sg-a"}]}
    ],
}


@pytest.mark.parametrize(
    ("code", "outcome", "detail"),
    [
        ("DryRunOperation", probes.ALLOWED, "DryRunOperation"),
        ("UnauthorizedOperation", probes.DENIED, "UnauthorizedOperation: not authorized"),
        ("InvalidInstanceID.NotFound", probes.ERROR, "InvalidInstanceID.NotFound: not authorized"),
    ],
)
def test_a_dry_run_answer_is_classified(code, outcome, detail):
    # Given an opted-in instance, and EC2 answering the DryRun write with `code`
    target, stub = stubbed_target(instances=[INSTANCE])
    expected = {
        "InstanceId": INSTANCE["InstanceId"],
        "HttpEndpoint": "enabled",
        "HttpTokens": "required",
        "DryRun": True,
    }
    stub.add_client_error("modify_instance_metadata_options", code, "not authorized", expected_params=expected)

    # When the write is probed
    with stub:
        probe = probes.run_probe("ec2:ModifyInstanceMetadataOptions", target)

    # Then allowed, denied (the missing permission named by the action) or an error, as EC2 meant it
    assert probe == probes.Probe("ec2:ModifyInstanceMetadataOptions", outcome, detail)


def test_a_write_that_succeeds_despite_dry_run_is_an_error_never_allowed():
    # Given an endpoint that ignores DryRun and makes the call
    target, stub = stubbed_target(instances=[INSTANCE])
    stub.add_response("modify_network_interface_attribute", {})

    # When the attach is probed (it restates the interface's own groups: a no-op even then)
    with stub:
        probe = probes.run_probe("ec2:ModifyNetworkInterfaceAttribute", target)

    # Then it is reported, not counted as allowed
    assert probe.outcome == probes.ERROR
    assert probe.detail == "eni-1 of i-0123456789abcdef0: the endpoint ignored DryRun=True and made the call"


def test_a_write_without_a_resource_to_act_on_is_untested_and_says_why():
    # Given a region with no managed group yet
    target, _ = stubbed_target()

    # When / Then no call is made and the reason is the probe's
    assert probes.run_probe("ec2:AuthorizeSecurityGroupIngress", target) == probes.Probe(
        "ec2:AuthorizeSecurityGroupIngress",
        probes.UNTESTED,
        "no eic-guard-ssh group in this region yet (the first remediate scan creates one)",
    )
    assert probes.run_probe("ec2:Unknown", target).outcome == probes.UNTESTED


def test_problems_are_grouped_across_targets_with_a_few_examples():
    # Given 12 member targets refusing the same write, one account not entered, one target without a result and one
    # whose result object is unreadable
    targets = [RunTarget(f"{n:012d}", "us-east-1") for n in range(1, 16)]
    plan = SimpleNamespace(run_id="r", own_account="000000000001", targets=targets)
    denied = {"action": "ec2:CreateTags", "outcome": "denied", "detail": "UnauthorizedOperation: no"}
    documents = [
        {
            "job": "verify",
            "account_id": t.account_id,
            "region": t.region,
            "role": MEMBER,
            "probes": [denied],
            "error": None,
        }
        for t in targets[:12]
    ]
    documents.append(
        {
            "job": "verify",
            "account_id": targets[12].account_id,
            "region": "us-east-1",
            "role": MEMBER,
            "probes": [],
            "error": "cannot enter account 000000000013: AccessDenied",
        }
    )

    broken = UnreadableResult("000000000015", "us-east-1", "apply", 1, "Expecting value: line 1 column 1 (char 0)")

    # When Aggregate summarizes
    summary = summarize(plan, documents, [broken])

    # Then one problem per (action, outcome, reason), counted, with at most 5 targets named
    assert [(p["action"], p["outcome"], p["targets"], len(p["examples"])) for p in summary["problems"]] == [
        ("ec2:CreateTags", "denied", 12, 5),
        ("sts:AssumeRole", "denied", 1, 1),
        ("worker", "missing", 1, 1),
        ("worker", "unreadable", 1, 1),
    ]
    assert summary["problems"][0]["examples"][0] == "000000000001/us-east-1: UnauthorizedOperation: no"
    assert summary["problems"][3]["examples"] == ["000000000015/us-east-1: Expecting value: line 1 column 1 (char 0)"]
    assert (summary["targets"], summary["targets_with_result"], summary["targets_unreachable"]) == (15, 13, 1)


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({"Accounts": "organization", "OrganizationId": ""}, [("parameters", FAIL, "OrganizationId")]),
        ({"Accounts": "", "OrganizationId": "o-abcdefghij"}, [("parameters", WARN, "OrganizationId")]),
        ({"Mode": "report", "RemediatePublicIp": "true"}, [("parameters", WARN, "RemediatePublicIp")]),
        (
            {"Mode": "remediate", "Accounts": "organization", "OrganizationId": "o-abcdefghij"},
            [("parameters", PASS, "s")],
        ),
    ],
)
def test_parameters_that_contradict_each_other_are_named(parameters, expected):
    items = parameter_items(Stack("s", "CREATE_COMPLETE", parameters))
    assert [(i.check, i.status, i.subject) for i in items] == expected


def test_the_table_gives_each_failing_item_what_to_do_and_where_to_read():
    # Given a checklist with one pass, one failure and one skipped item
    checklist = Checklist(
        "eic-guard",
        "eu-west-1",
        (
            Item("stack", PASS, "eic-guard", "CREATE_COMPLETE"),
            Item("schedule", FAIL, "eic-guard-nightly-scan", "DISABLED", fix="enable it", url="https://docs.example/s"),
            Item("verify-job", SKIP, "state machine", "--no-job"),
        ),
    )
    out = io.StringIO()

    # When written as a table
    write_table(checklist, out)

    # Then exactly
    assert out.getvalue() == (
        "eic-guard verify: stack eic-guard (eu-west-1)\n"
        "      check       subject                 detail\n"
        "ok    stack       eic-guard               CREATE_COMPLETE\n"
        "FAIL  schedule    eic-guard-nightly-scan  DISABLED\n"
        "      → enable it\n"
        "        https://docs.example/s\n"
        "skip  verify-job  state machine           --no-job\n"
        "something is failing: 1 ok, 1 failing, 0 warnings, 1 skipped\n"
    )
    assert checklist.failed and checklist.to_dict()["summary"] == {"pass": 1, "fail": 1, "warn": 0, "skip": 1}


def test_the_stack_name_comes_from_samconfig(tmp_path):
    config = tmp_path / "samconfig.toml"
    assert default_stack(config) == "eic-guard"
    config.write_text('version = 0.1\n[default.global.parameters]\nstack_name = "eic-guard-prod"\n')
    assert default_stack(config) == "eic-guard-prod"
    config.write_text(
        '[default.deploy.parameters]\nstack_name = "deployed"\n[default.global.parameters]\nstack_name = "g"\n'
    )
    assert default_stack(config) == "deployed"
