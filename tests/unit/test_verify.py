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
from eic_guard.verify.execution import VERIFY_PREFIX, JobOutcome, job_items, run_job
from eic_guard.verify.job import actions_to_probe, plan_verify, summarize
from eic_guard.verify.stack import Stack, parameter_items, status_item
from eic_guard.verify.subscriptions import IP_SPACE_CHANGED, ip_space_item

DEPLOYMENTS = [
    Deployment(mode, public_ip, tags, hub, accounts, create_endpoints=create)
    for mode, public_ip, tags, hub, accounts, create in itertools.product(
        ("report", "remediate"),
        (False, True),
        (False, True),
        (False, True),
        ("", "111111111111", "organization"),
        (False, True),  # CreateEndpoints (docs/architecture.md §13)
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


class FakeStepFunctions:
    """StartExecution and DescribeExecution answering `statuses` one poll after another."""

    def __init__(self, *described: dict):
        self.described = list(described)
        self.started: list[dict] = []

    def start_execution(self, **kwargs):
        self.started.append(kwargs)
        return {"executionArn": f"arn:aws:states:us-east-1:123456789012:execution:sm:{kwargs['name']}"}

    def describe_execution(self, executionArn):
        return self.described.pop(0) if len(self.described) > 1 else self.described[0]


def test_the_job_is_started_with_its_input_and_waited_for_until_it_ends():
    # Given an execution that runs for two polls, then succeeds
    sfn = FakeStepFunctions({"status": "RUNNING"}, {"status": "RUNNING"}, {"status": "SUCCEEDED", "output": '{"a": 1}'})
    slept, ticks = [], []

    # When the CLI runs the job
    outcome = run_job(sfn, "arn:sm", timeout=60, on_tick=ticks.append, sleep=slept.append, clock=lambda: 0.0)

    # Then it started {"job": "verify"} under a verify name, polled every 2 s, and read the output
    assert sfn.started[0]["input"] == '{"job": "verify"}' and sfn.started[0]["name"].startswith(VERIFY_PREFIX)
    assert (outcome.status, outcome.output, outcome.error) == ("SUCCEEDED", {"a": 1}, None)
    assert slept == [2.0, 2.0] and ticks == [0.0, 0.0]


def test_a_job_still_running_at_the_timeout_is_left_running_and_failing():
    # Given an execution that never ends, and a clock at 5 s past the start on its second reading
    sfn = FakeStepFunctions({"status": "RUNNING"})
    readings = iter([0.0, 5.0])

    # When the CLI waits at most 5 s
    outcome = run_job(sfn, "arn:sm", timeout=5, sleep=lambda _: None, clock=lambda: next(readings))

    # Then it stops waiting, and the checklist says so with how to follow it
    assert outcome.status == "RUNNING"
    [item] = job_items(outcome, 5, security_hub=False)
    assert (item.check, item.status, item.detail) == ("verify-job", FAIL, "still running after 5 s (left running)")
    assert outcome.execution_arn in item.fix


def test_a_failed_job_names_its_error():
    sfn = FakeStepFunctions({"status": "FAILED", "error": "States.TaskFailed", "cause": "boom"})
    outcome = run_job(sfn, "arn:sm", timeout=5, sleep=lambda _: None, clock=lambda: 0.0)
    [item] = job_items(outcome, 5, security_hub=True)
    assert (item.status, item.detail) == (FAIL, "FAILED: States.TaskFailed boom")


def test_each_kind_of_problem_is_its_own_item_with_what_to_do():
    # Given a job's output with a denied member write, an account not entered, a target without a result, an
    # untested write and Security Hub off in one target
    def problem(action, outcome, reason, role="member/MemberRole", examples=("111111111111/us-east-1: x",)):
        return {
            "action": action,
            "outcome": outcome,
            "reason": reason,
            "role": role,
            "targets": 1,
            "examples": list(examples),
        }

    output = {
        "targets": 3,
        "targets_with_result": 2,
        "probes": {"allowed": 40, "denied": 1},
        "problems": [
            problem("ec2:CreateTags", "denied", "UnauthorizedOperation"),
            problem("sts:AssumeRole", "denied", "cannot enter account AccessDenied"),
            problem("worker", "missing", "no result from the target worker", role="", examples=("2/us-east-1",)),
            problem("ec2:ReleaseAddress", "untested", "no eic-guard Elastic IP in this region"),
            problem("securityhub:DescribeHub", "error", "Security Hub is not enabled here (InvalidAccessException)"),
        ],
    }
    outcome = JobOutcome("arn:aws:states:us-east-1:1:execution:sm:eic-guard-verify-0123456789", "SUCCEEDED", output)

    # When the checklist items are made
    items = job_items(outcome, 600, security_hub=True)

    # Then one item each, in order, the Security Hub failure replacing its passing line
    assert [(i.check, i.status, i.subject) for i in items] == [
        ("verify-job", PASS, "eic-guard-verify-01234567"),
        ("permission", FAIL, "member role ec2:CreateTags"),
        ("member-account", FAIL, "member role"),
        ("verify-job", FAIL, "target worker"),
        ("permission", SKIP, "member role ec2:ReleaseAddress"),
        ("security-hub", FAIL, "1 target"),
    ]
    assert items[0].detail == "2 of 3 targets answered; probes: 40 allowed, 1 denied"
    assert all(i.fix and i.url for i in items if i.status == FAIL)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("UPDATE_COMPLETE", PASS),
        ("UPDATE_ROLLBACK_FAILED", FAIL),
        ("CREATE_IN_PROGRESS", FAIL),
        ("DELETE_COMPLETE", FAIL),
    ],
)
def test_only_a_complete_stack_passes(status, expected):
    assert status_item(Stack("s", status)).status == expected


def test_a_refresh_function_not_subscribed_fails_and_another_subscription_does_not_count():
    # Given AmazonIpSpaceChanged subscriptions in this account: another function's only
    sns = boto3.client("sns", "us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    other = {
        "TopicArn": IP_SPACE_CHANGED,
        "Endpoint": "arn:aws:lambda:us-east-1:1:function:other",
        "Protocol": "lambda",
    }
    mine = "arn:aws:lambda:us-east-1:1:function:eic-guard-RefreshFunction"

    # When / Then it fails, and passes once the function (an alias of it) is subscribed
    with Stubber(sns) as stub:
        stub.add_response("list_subscriptions", {"Subscriptions": [{**other, "SubscriptionArn": "arn:s:1"}]})
        assert ip_space_item(sns, mine).status == FAIL
        subscribed = {**other, "Endpoint": f"{mine}:live", "SubscriptionArn": "arn:s:2"}
        stub.add_response("list_subscriptions", {"Subscriptions": [subscribed]})
        assert ip_space_item(sns, mine).status == PASS


def test_the_rule_probes_restate_a_rule_the_group_has_and_revoke_one_it_does_not():
    # Given the managed group allowing the EIC prefix
    group = {
        "GroupId": "sg-m",
        "IpPermissions": [
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "18.206.107.24/29"}]}
        ],
    }
    target, stub = stubbed_target(managed_groups=[group], eic_prefix=None)
    rule = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}
    stub.add_client_error(
        "authorize_security_group_ingress",
        "DryRunOperation",
        expected_params={
            "GroupId": "sg-m",
            "IpPermissions": [{**rule, "IpRanges": [{"CidrIp": "18.206.107.24/29"}]}],
            "DryRun": True,
        },
    )
    stub.add_client_error(
        "revoke_security_group_ingress",
        "DryRunOperation",
        expected_params={
            "GroupId": "sg-m",
            "IpPermissions": [{**rule, "IpRanges": [{"CidrIp": "192.0.2.0/29"}]}],
            "DryRun": True,
        },
    )

    # When both are probed
    with stub:
        outcomes = [
            probes.run_probe(a, target).outcome
            for a in ("ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress")
        ]

    # Then both requests would change nothing if made: the group's own rule again, a rule it does not have
    assert outcomes == [probes.ALLOWED, probes.ALLOWED]
    stub.assert_no_pending_responses()


class BrokenStore:
    def load(self):
        raise ValueError("'999.0.0.0/8' does not appear to be an IPv4 or IPv6 network")


def test_the_verify_plan_reads_the_stored_prefixes_and_survives_a_broken_state():
    # Given a caller in account 1 scanning two regions
    clients = SimpleNamespace(account_id=lambda: "000000000001")
    settings = Settings(regions=("us-east-1", "eu-west-1"))

    # When the verify job is planned over a state item that cannot be read
    plan = plan_verify(settings, clients, BrokenStore(), run_id="r")

    # Then the targets are the scan's, nothing is applied, and the probes go on without prefixes
    assert [t.key for t in plan.targets] == ["000000000001/us-east-1", "000000000001/eu-west-1"]
    assert (plan.job, plan.apply_ranges, plan.revoke, plan.writes_ranges) == ("verify", False, False, False)
    assert plan.ranges.unavailable.startswith("stored state unreadable: '999.0.0.0/8'")


def test_the_egress_probes_restate_the_groups_own_rule_and_revoke_one_it_does_not_have():
    # Given an eic-guard group with its default allow-all egress
    group = {"GroupId": "sg-m", "IpPermissionsEgress": [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}
    target, stub = stubbed_target(managed_groups=[group])
    stub.add_client_error(
        "authorize_security_group_egress",
        "DryRunOperation",
        expected_params={
            "GroupId": "sg-m",
            "IpPermissions": [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
            "DryRun": True,
        },
    )
    stub.add_client_error(
        "revoke_security_group_egress",
        "DryRunOperation",
        expected_params={
            "GroupId": "sg-m",
            "IpPermissions": [
                {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "192.0.2.0/29"}]}
            ],
            "DryRun": True,
        },
    )

    # When both are probed / Then both are allowed, with requests that would change nothing if made
    with stub:
        actions = ("ec2:AuthorizeSecurityGroupEgress", "ec2:RevokeSecurityGroupEgress")
        assert [probes.run_probe(a, target).outcome for a in actions] == [probes.ALLOWED, probes.ALLOWED]
    stub.assert_no_pending_responses()
