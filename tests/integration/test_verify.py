"""`eic-guard verify` against a deployed stack in moto (eic_guard/simulated_stack.py: the stack's parameters and
outputs from a small CloudFormation template, the resources they name made with their own APIs, each verify job
completed by the fan-out's steps in-process). What is checked: the exit code, the exact checklist items, that every
EC2 write the job made carried DryRun=True, and that the AWS state is the same afterwards (run twice)."""

from __future__ import annotations

import json

import boto3
import pytest
from eic_guard import simulated_stack
from eic_guard.cli import main
from eic_guard.permissions import MEMBER, WORKER, Deployment, granted
from eic_guard.settings import MANAGED_BY_TAG, MANAGED_GROUP_NAME

from tests.conftest import REGION
from tests.faults.injector import FaultInjector
from tests.integration.org_fixtures import create_organization, drifted_instance, share_botocore_loader
from tests.lambda_runtime import event
from tests.step_functions import shared

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
ALERTS = "security@example.com"


@pytest.fixture
def injector(aws, monkeypatch) -> FaultInjector:
    """Every boto3 session records its calls (and may be faulted), then gets the simulator's accommodations."""
    faults = FaultInjector().install(monkeypatch)
    share_botocore_loader(monkeypatch)
    hooked = boto3.Session.__init__

    def init(self, *args, **kwargs):
        hooked(self, *args, **kwargs)
        simulated_stack.hook(self.events)

    monkeypatch.setattr(boto3.Session, "__init__", init)
    return faults


@pytest.fixture
def deployed(injector, monkeypatch):
    """The stack (its parameters: samconfig.toml's, the alerts to one mail) and its functions' environment."""
    stack = simulated_stack.deploy(boto3.Session(region_name=REGION), AlertEmail=ALERTS)
    for name, value in stack.function_environment().items():
        monkeypatch.setenv(name, value)
    return stack


def fleet(account) -> dict[str, str]:
    """An opted-in instance in a VPC whose managed group exists (so every write has a real resource to act on)."""
    net = account.network()
    instance = account.launch_drifted(net)
    key, value = MANAGED_BY_TAG
    group = account.ec2.create_security_group(
        GroupName=MANAGED_GROUP_NAME,
        Description="eic-guard",
        VpcId=net.vpc_id,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": key, "Value": value}]}],
    )["GroupId"]
    return {"instance": instance, "group": group, "vpc": net.vpc_id}


def ec2_state(ec2) -> str:
    """Everything a write could change, as one comparable document."""
    instances = ec2.describe_instances()["Reservations"]
    groups = ec2.describe_security_groups()["SecurityGroups"]
    interfaces = ec2.describe_network_interfaces()["NetworkInterfaces"]
    addresses = ec2.describe_addresses()["Addresses"]
    tags = ec2.describe_tags()["Tags"]
    return json.dumps([instances, groups, interfaces, addresses, tags], default=str, sort_keys=True)


def verify(capsys, *args: str) -> tuple[int, dict]:
    code = main(["verify", "--stack", "eic-guard", "--format", "json", *args])
    return code, json.loads(capsys.readouterr().out)


def items(checklist: dict, status: str | None = None) -> list[tuple[str, str, str]]:
    """(check, status, subject) of each item (the verify job's subject, its execution's name, made generic)."""
    return [
        (i["check"], i["status"], "execution" if i["subject"].startswith("eic-guard-verify-") else i["subject"])
        for i in checklist["items"]
        if status in (None, i["status"])
    ]


def test_a_healthy_deployment_passes_and_nothing_changes(deployed, account, injector, capsys):
    # Given a deployed stack and an opted-in instance with its managed group
    resources = fleet(account)
    before = ec2_state(account.ec2)
    injector.calls.clear()

    # When verify runs twice
    first_code, first = verify(capsys)
    second_code, second = verify(capsys)

    # Then all is good, twice, with the same checklist
    assert (first_code, second_code) == (0, 0)
    assert first["ok"] is True
    assert items(first, "fail") == []
    assert items(first) == items(second)
    assert items(first, "pass")[:6] == [
        ("stack", "pass", "eic-guard"),
        ("parameters", "pass", "eic-guard"),
        ("ip-space-subscription", "pass", "AmazonIpSpaceChanged"),
        ("alerts-subscription", "pass", "eic-guard-AlertsTopic"),
        ("schedule", "pass", "eic-guard-nightly-scan"),
        ("dead-letter-queue", "pass", "eic-guard-event-delivery-dlq"),
    ]
    job = next(i for i in first["items"] if i["check"] == "verify-job")
    assert job["status"] == "pass"
    # every action the worker role is granted in this account was allowed (its writes as DryRunOperation)
    worker_actions = {a for a in granted(WORKER, Deployment()) if a.split(":")[0] in ("ec2", "iam", "securityhub")}
    assert job["detail"] == f"1 of 1 targets answered; probes: {len(worker_actions)} allowed"
    assert ("executions", "warn", "eic-guard-EicGuardStateMachine") in items(first)  # no nightly run yet
    # And every EC2 write the jobs made was a DryRun on the real resources, and the account is as it was
    writes = [c for c in injector.calls if c.service == "ec2" and not c.operation.startswith(("Describe", "Get"))]
    assert {c.operation for c in writes} == {
        "AuthorizeSecurityGroupEgress",  # docs/architecture.md §13: the endpoint path's egress fix
        "AuthorizeSecurityGroupIngress",
        "RevokeSecurityGroupIngress",
        "CreateSecurityGroup",
        "CreateTags",
        "ModifyNetworkInterfaceAttribute",
        "ModifyInstanceMetadataOptions",
    }
    assert all(c.params.get("DryRun") is True for c in writes)
    # beyond the run's own working objects (runs/), nothing written: no report, no alert, no state
    others = [(c.service, c.operation, c.params.get("Key", "")) for c in injector.calls if c.service != "ec2"]
    assert {(s, o) for s, o, _ in others if not o.startswith(("Describe", "Get", "List"))} == {
        ("stepfunctions", "StartExecution"),
        ("s3", "PutObject"),
    }
    assert all(key.startswith("runs/") for s, o, key in others if o == "PutObject")
    attach = next(c for c in writes if c.operation == "ModifyInstanceMetadataOptions")
    assert attach.params["InstanceId"] == resources["instance"]
    assert {c.params["GroupId"] for c in writes if "Ingress" in c.operation} == {resources["group"]}
    assert ec2_state(account.ec2) == before


def test_a_member_role_missing_a_permission_fails_and_names_it(deployed, injector, monkeypatch, capsys):
    # Given a member account whose role may not change instance metadata options (IAM answers UnauthorizedOperation)
    org = create_organization()
    member = org.members[0]
    _, instance = drifted_instance(org, member)
    monkeypatch.setenv("EIC_GUARD_ACCOUNTS", f"{org.management},{member}")  # the stack's Accounts
    injector.error(
        "ModifyInstanceMetadataOptions",
        "UnauthorizedOperation",
        message="You are not authorized to perform this operation.",
        when=lambda params: params.get("InstanceId") == instance,
    )
    before = ec2_state(org.ec2(member))

    # When verify runs
    code, checklist = verify(capsys)

    # Then it fails, naming the member role's missing permission, the account and the instance it was tried on
    assert code == 1
    failing = [i for i in checklist["items"] if i["status"] == "fail"]
    assert [(i["check"], i["subject"]) for i in failing] == [
        ("permission", "member role ec2:ModifyInstanceMetadataOptions")
    ]
    assert failing[0]["detail"].startswith(f"denied in 1 target: {member}/{REGION}: UnauthorizedOperation")
    assert "member/template.yaml" in failing[0]["fix"]
    assert failing[0]["url"].startswith("https://docs.aws.amazon.com/")
    # the member role's other calls were allowed, and the worker role's in this account
    member_actions = {a for a in granted(MEMBER, Deployment(accounts="x")) if a.split(":")[0] in ("ec2", "iam")}
    assert member_actions  # probed in the member account, one of them refused
    assert ec2_state(org.ec2(member)) == before

    # And the table says the same in words
    assert main(["verify", "--stack", "eic-guard"]) == 1
    table = capsys.readouterr().out
    assert "FAIL  permission" in table and "member role ec2:ModifyInstanceMetadataOptions" in table
    assert table.rstrip().endswith("something is failing: " + table.rstrip().rsplit("something is failing: ", 1)[1])


def test_an_unconfirmed_alerts_subscription_is_named(deployed, account, injector, capsys):
    # Given the alerts mail not confirmed yet: SNS lists it as PendingConfirmation (moto confirms at once)
    fleet(account)

    def pending(parsed):
        for subscription in parsed["Subscriptions"]:
            if subscription["Endpoint"] == ALERTS:
                subscription["SubscriptionArn"] = "PendingConfirmation"

    injector.rewrite("ListSubscriptionsByTopic", pending, service="sns")

    # When verify runs
    code, checklist = verify(capsys, "--no-job")

    # Then it fails: nobody confirmed receives the alerts, and the pending address is named with what to do
    assert code == 1
    failing = [(i["check"], i["subject"], i["detail"]) for i in checklist["items"] if i["status"] == "fail"]
    assert failing == [
        (
            "alerts-subscription",
            "eic-guard-AlertsTopic",
            "no confirmed subscription: nobody receives eic-guard's alerts (targets that failed, instances left open, "
            "ranges that vanished)",
        ),
        (
            "alerts-subscription",
            f"email:{ALERTS}",
            "pending confirmation on eic-guard-AlertsTopic: it receives no alert until confirmed",
        ),
    ]
    assert ("verify-job", "skip", "state machine") in items(checklist)


def test_an_unknown_stack_is_a_usage_error(aws, capsys):
    # Given no stack
    # When verify names one
    code = main(["verify", "--stack", "nope"])

    # Then one line on stderr, exit 2
    assert code == 2
    assert (
        capsys.readouterr().err
        == f"eic-guard: error: no stack named nope in {REGION} (name it with --stack, its region with --region)\n"
    )


def test_a_failed_run_a_waiting_dead_letter_and_security_hub_off_are_each_named(injector, account, monkeypatch, capsys):
    # Given a stack with Security Hub findings on, in an account whose Security Hub is not enabled
    stack = simulated_stack.deploy(boto3.Session(region_name=REGION), AlertEmail=ALERTS, SecurityHubFindings="enabled")
    for name, value in stack.function_environment().items():
        monkeypatch.setenv(name, value)
    fleet(account)
    # ... a last run that failed (a run request Plan refuses), and a notification waiting in the refresh DLQ
    sfn = boto3.client("stepfunctions", REGION)
    failed = sfn.start_execution(stateMachineArn=stack.outputs["StateMachineArn"], input='{"job": "bogus"}')
    boto3.client("sqs", REGION).send_message(QueueUrl=stack.outputs["RefreshDeadLetterQueueUrl"], MessageBody="{}")

    # When verify runs
    code, checklist = verify(capsys)

    # Then each is a failing item with what to do
    assert code == 1
    failing = {i["check"]: i for i in checklist["items"] if i["status"] == "fail"}
    assert sorted(failing) == ["dead-letter-queue", "executions", "security-hub"]
    assert failing["executions"]["detail"].startswith(
        f"the last finished run ({failed['executionArn'].rsplit(':', 1)[1]}) is FAILED"
    )
    assert failed["executionArn"] in failing["executions"]["fix"]
    assert (failing["dead-letter-queue"]["subject"], failing["dead-letter-queue"]["detail"]) == (
        "eic-guard-refresh-dlq",
        "1 message waiting: AmazonIpSpaceChanged notifications the refresh function failed on every retry",
    )
    assert failing["security-hub"]["detail"] == (
        f"Security Hub is not enabled where findings go: 123456789012/{REGION}: Security Hub is not enabled here "
        "(InvalidAccessException)"
    )
    # Security Hub's writes have no DryRun: listed as not tested, never as allowed
    assert ("permission", "skip", "worker role securityhub:BatchImportFindings") in items(checklist)

    # And once Security Hub is enabled, its item passes
    boto3.client("securityhub", REGION).enable_security_hub()
    _, again = verify(capsys)
    assert ("security-hub", "pass", "every target") in items(again)


def test_the_verify_job_runs_through_the_deployed_definition(state_machine, account, monkeypatch):
    # Given the stack's real state machine (moto's Step Functions engine, the handlers routed to it), an opted-in
    # instance with its managed group, and the simulator's DryRun accommodation only
    fleet(account)
    monkeypatch.setenv("EIC_GUARD_TAG_INSTANCES", "true")  # the stack's default
    machine = state_machine()
    before = ec2_state(account.ec2)

    # When `eic-guard verify` starts its job
    with simulated_stack.Simulation(complete_executions=False).installed():
        run = machine.run(event("plan-verify.json"))

    # Then Plan, the one target's worker and Aggregate ran as for a scan, every probe was allowed, nothing changed
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    worker_actions = {a for a in granted(WORKER, Deployment()) if a.split(":")[0] in ("ec2", "iam", "securityhub")}
    assert {k: v for k, v in run.output.items() if k != "run_id"} == {
        "job": "verify",
        "own_account": "123456789012",
        "targets": 1,
        "targets_with_result": 1,
        "targets_unreachable": 0,
        "probes": {"allowed": len(worker_actions)},
        "problems": [],
    }
    assert [(i.function, shared(i.event).get("phase")) for i in machine.invocations] == [
        ("PlanFunction", None),
        ("ScanTargetFunction", "apply"),
        ("AggregateFunction", None),
    ]
    reports = boto3.client("s3", REGION).list_objects_v2(Bucket=machine.reports_bucket, Prefix="reports/")
    assert reports.get("KeyCount", 0) == 0 and machine.alerts() == []
    assert ec2_state(account.ec2) == before


def test_verbose_lists_each_call_and_an_interrupt_stops_verify_with_130(deployed, monkeypatch, capsys):
    # Given a deployed stack
    # When verify runs with -v (no job)
    assert main(["verify", "--no-job", "-v"]) == 0
    calls = capsys.readouterr().err

    # Then each AWS call it made is on stderr
    for operation in ("DescribeStacks", "ListSubscriptions", "ListSubscriptionsByTopic", "GetSchedule"):
        assert operation in calls

    # And when Ctrl-C has been pressed, it stops at its next step, exit 130, nothing printed on stdout
    monkeypatch.setattr("eic_guard.cli.interrupts.Interrupts.requested", property(lambda self: True))
    assert main(["verify", "--no-job"]) == 130
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "eic-guard: SIGINT: stopped before it finished (verify stopped; a verify job already started runs on, "
        "changing nothing)\n"
    )
