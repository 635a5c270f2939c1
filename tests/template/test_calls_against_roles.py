"""Every AWS call the real handlers make, held against the role template.yaml renders for that configuration.

moto enforces no IAM, so a handler can be green on moto and refused on AWS. Here each parameter set of
`parameter_sets.py` (report and remediate modes, Elastic IPs on and off, prefix-list mode, Regions not starting with
the stack's region, the refresh function) is rendered with SAM's translator (`cfn.render`); the function's own
environment variables come from that rendering, and the handler (functions/*/app.py) runs on moto against a fleet
with drift, so that the remediation writes really happen. A recorder on every botocore session
(`call_recorder.CallRecorder`) turns each call into the IAM authorizations AWS would make, and an evaluator
(`iam_eval.evaluate`) checks each against the role: allowed by some Allow statement, not hit by any Deny.

How the request context is derived (details in call_recorder.py): the action from the botocore operation; the
resource ARNs from the call's parameters and moto's state (instance, security group, network interface, Elastic IP,
VPC, subnet, prefix list, table, bucket object, topic), kept where the Service Authorization Reference says the
action authorizes that resource type; aws:RequestedRegion from the client's region; aws:RequestTag/*, aws:TagKeys
from the request's tags; aws:ResourceTag/* from moto's state before the call; ec2:CreateAction for the tag-on-create
authorization; ec2:MetadataHttpTokens/ec2:MetadataHttpEndpoint (instance resource keys in the reference) from the
instance's current options.

Limits: the evaluator models one identity-based policy set. It does not model service control policies,
permission boundaries, session policies or resource-based policies (the bucket, topic and key policies), nor
condition keys the recorder does not derive (they count as absent). sts:GetCallerIdentity needs no permission. The
AWS-managed policies SAM attaches (basic execution, X-Ray) are out of scope: logs and traces are not API calls the
code makes through boto3.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import boto3
import botocore.session
import pytest
import responses
from eic_guard.settings import IP_RANGES_URL
from eic_guard.simulated import SimulatedAccount
from moto import mock_aws

from tests.conftest import IP_RANGES, create_state_table
from tests.lambda_runtime import REFRESH_ARN, FakeLambdaContext, event, load_handler
from tests.template.call_recorder import CallRecorder, RecordedCall
from tests.template.cfn import PSEUDO, RenderedStack, render
from tests.template.iam_eval import Request, evaluate
from tests.template.parameter_sets import PARAMETER_SETS, STACK_REGION, ParameterSet

SNAPSHOT = IP_RANGES / "ip-ranges-2026-08-22.json"
MANAGED_BY = {"Key": "ManagedBy", "Value": "eic-guard"}
MANAGED_GROUP = "eic-guard-ssh"
RETIRED_PREFIX = "192.0.2.0/29"  # TEST-NET-1: never an EIC prefix
NOT_INHERITED = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": STACK_REGION,
    "AWS_DEFAULT_REGION": STACK_REGION,
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_DEV": "false",
}
# The writes the runs must make between them, so that "every call is allowed" cannot hold vacuously.
EXPECTED_PAIRS = {
    ("ec2", "ModifyInstanceMetadataOptions"),
    ("ec2", "ModifyNetworkInterfaceAttribute"),
    ("ec2", "DescribeNetworkInterfaces"),
    ("ec2", "AuthorizeSecurityGroupIngress"),
    ("ec2", "RevokeSecurityGroupIngress"),
    ("ec2", "CreateSecurityGroup"),
    ("ec2", "CreateTags"),
    ("ec2", "AllocateAddress"),
    ("ec2", "AssociateAddress"),
    ("ec2", "DisassociateAddress"),
    ("ec2", "ReleaseAddress"),
    ("ec2", "GetManagedPrefixListEntries"),
    ("dynamodb", "GetItem"),
    ("dynamodb", "PutItem"),
    ("dynamodb", "UpdateItem"),
    ("s3", "PutObject"),
    ("sns", "Publish"),
}


@dataclass
class Run:
    """One handler invocation for one parameter set: what it returned and every call it made."""

    parameter_set: ParameterSet
    stack: RenderedStack
    calls: list[RecordedCall]
    result: dict | None = None
    error: str | None = None
    statements: list[dict] = field(default_factory=list)

    def denied(self) -> list[str]:
        problems = []
        for call in self.calls:
            problems += [f"{call.action} in {call.region}: cannot name its {u}" for u in call.underived]
            for request in call.requests:
                decision = evaluate(self.statements, request)
                if not decision.allowed:
                    problems.append(f"{request.action} on {request.resource} ({call.region}): {decision.reason}")
        return problems


# ---------------------------------------------------------------- the fleet with drift


def eic_prefixes(region: str) -> tuple[list[str], list[str]]:
    """The region's EC2_INSTANCE_CONNECT prefixes in the snapshot the HTTP mock serves (IPv4, IPv6)."""
    document = json.loads(SNAPSHOT.read_text())
    v4 = [p["ip_prefix"] for p in document["prefixes"] if _is_eic(p, region)]
    v6 = [p["ipv6_prefix"] for p in document["ipv6_prefixes"] if _is_eic(p, region)]
    return v4, v6


def _is_eic(prefix: dict, region: str) -> bool:
    return prefix["service"] == "EC2_INSTANCE_CONNECT" and prefix["region"] == region


def managed_group_with_a_stale_rule(ec2, vpc_id: str, region: str) -> str:
    """eic-guard's group from an earlier run: none of the current rules (the nightly catch-up or the refresh adds
    them) and one for a prefix the file no longer lists (revoked once its grace period is over)."""
    group_id = ec2.create_security_group(
        GroupName=MANAGED_GROUP,
        Description="eic-guard: SSH from the regional EC2 Instance Connect ranges only",
        VpcId=vpc_id,
        TagSpecifications=[
            {"ResourceType": "security-group", "Tags": [MANAGED_BY, {"Key": "Name", "Value": MANAGED_GROUP}]}
        ],
    )["GroupId"]
    stale = {"CidrIp": RETIRED_PREFIX, "Description": f"eic-guard EC2_INSTANCE_CONNECT {region}"}
    ec2.authorize_security_group_ingress(
        GroupId=group_id, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [stale]}]
    )
    return group_id


def eic_prefix_lists(ec2, region: str) -> None:
    """Customer-managed stand-ins for the AWS-managed EIC prefix lists (moto has not got them)."""
    v4, v6 = eic_prefixes(region)
    for name, family, cidrs in (("", "IPv4", v4), (".ipv6", "IPv6", v6)):
        ec2.create_managed_prefix_list(
            PrefixListName=f"com.amazonaws.{region}{name}.ec2-instance-connect",
            AddressFamily=family,
            MaxEntries=10,
            Entries=[{"Cidr": c} for c in cidrs],
        )


def build_scan_fleet(region: str, prefix_lists: bool) -> None:
    """Drift of every fixable kind in `region`, plus an instance that stays non-compliant (so an alert goes out)."""
    ec2 = boto3.client("ec2", region)
    account = SimulatedAccount(ec2, boto3.client("ssm", region))
    ami = account.al2023_ami()
    if prefix_lists:
        eic_prefix_lists(ec2, region)
    # VPC a: eic-guard's group exists but lost its rules; an instance lacks it and has its metadata endpoint off.
    net_a = account.network("10.0.0.0/16", name="a")
    managed_group_with_a_stale_rule(ec2, net_a.vpc_id, region)
    launch = {"image_id": ami, "group_ids": [net_a.app_group_id], "subnet_id": net_a.public_subnet_id}
    account.launch(**launch, public_ip=True, imds="disabled", http_tokens="required", name="detached-imds-off")
    # ... one without a public IPv4 address (an Elastic IP fixes it when RemediatePublicIp is on) ...
    account.launch(**launch, public_ip=False, name="no-public-ip")
    # ... and one on an image EIC does not support out of the box: non-compliant whatever happens.
    account.launch(**{**launch, "image_id": account.own_image("custom-image")}, public_ip=True, name="custom-ami")
    # VPC b: no eic-guard group yet, one instance without SSH from EIC.
    net_b = account.network("10.1.0.0/16", name="b")
    account.launch(image_id=ami, subnet_id=net_b.public_subnet_id, group_ids=[net_b.app_group_id], public_ip=True)
    # An Elastic IP eic-guard allocated, now on an instance that was opted out: to disassociate and release.
    [opted_out] = account.launch(**launch, public_ip=True, opted_in=False, name="opted-out")
    address = ec2.allocate_address(
        Domain="vpc", TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": [MANAGED_BY]}]
    )
    ec2.associate_address(AllocationId=address["AllocationId"], InstanceId=opted_out)


def build_refresh_fleet(region: str) -> None:
    """eic-guard's group in two VPCs of `region`, without the current rules and with a retired one."""
    ec2 = boto3.client("ec2", region)
    account = SimulatedAccount(ec2)
    for n in range(2):
        managed_group_with_a_stale_rule(ec2, account.network(f"10.{n}.0.0/16", name=f"net{n}").vpc_id, region)


def stack_resources(environment: dict[str, str]) -> None:
    """The table, bucket and topic the rendered environment names, in the stack's region."""
    create_state_table(environment["EIC_GUARD_STATE_TABLE"])
    boto3.client("s3", STACK_REGION).create_bucket(Bucket=environment["EIC_GUARD_REPORTS_BUCKET"])
    topic = environment["EIC_GUARD_ALERTS_TOPIC_ARN"]
    assert boto3.client("sns", STACK_REGION).create_topic(Name=topic.rsplit(":", 1)[1])["TopicArn"] == topic


# ---------------------------------------------------------------- running a handler under the recorder


@pytest.fixture(scope="module")
def recorder() -> Iterator[CallRecorder]:
    """A CallRecorder registered on every botocore session created from now on (boto3's default one included)."""
    recorder = CallRecorder(PSEUDO["AWS::AccountId"])
    original = botocore.session.Session.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        recorder.register(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.session.Session, "__init__", init)
        patch.setattr(boto3, "DEFAULT_SESSION", None)
        yield recorder


def run(parameter_set: ParameterSet, recorder: CallRecorder) -> Run:
    """The parameter set's handler on moto with the rendered environment, every call recorded."""
    stack = render(parameter_set.params, STACK_REGION)
    environment = stack.environment(parameter_set.function_id)
    outcome = Run(parameter_set, stack, [], statements=stack.role_statements(parameter_set.role_id))
    recorder.calls = outcome.calls
    with pytest.MonkeyPatch.context() as env, mock_aws():
        for name, value in environment.items():
            env.setenv(name, value)
        stack_resources(environment)
        regions = environment["EIC_GUARD_REGIONS"].split(",")
        for region in regions:
            if parameter_set.function_id == "ScanFunction":
                build_scan_fleet(region, environment["EIC_GUARD_INGRESS_SOURCE"] == "prefix-list")
            else:
                build_refresh_fleet(region)
        with responses.RequestsMock(assert_all_requests_are_fired=False) as http:
            http.add(responses.GET, IP_RANGES_URL, body=SNAPSHOT.read_bytes(), content_type="application/json")
            outcome.result, outcome.error = _invoke(parameter_set, recorder)
    return outcome


def _invoke(parameter_set: ParameterSet, recorder: CallRecorder) -> tuple[dict | None, str | None]:
    if parameter_set.function_id == "ScanFunction":
        handler, evt, context = load_handler("scan"), event("scheduled-nightly.json"), FakeLambdaContext()
    else:
        handler, evt = load_handler("refresh"), event("sns-ip-space-changed-current.json")
        context = FakeLambdaContext(function_name="eic-guard-refresh", invoked_function_arn=REFRESH_ARN)
    recorder.recording = True
    try:
        return handler(evt, context), None
    except Exception as exc:  # noqa: BLE001 - reported by the tests, with the calls made until then
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        recorder.recording = False


class Runs:
    """Each parameter set's run, made once when a test first asks for it (the handlers and fleets are the slow
    part; under pytest-xdist a worker runs only the sets its tests need)."""

    def __init__(self, recorder: CallRecorder):
        self.recorder = recorder
        self.done: dict[str, Run] = {}

    def __getitem__(self, set_id: str) -> Run:
        if set_id not in self.done:
            [parameter_set] = [s for s in PARAMETER_SETS if s.id == set_id]
            with pytest.MonkeyPatch.context() as patch:
                # conftest's autouse environment is function-scoped: the same fake, network-free settings here
                for name in [n for n in os.environ if n.startswith("EIC_GUARD_")] + list(NOT_INHERITED):
                    patch.delenv(name, raising=False)
                for name, value in FAKE_AWS.items():
                    patch.setenv(name, value)
                self.done[set_id] = run(parameter_set, self.recorder)
        return self.done[set_id]

    def values(self) -> list[Run]:
        return [self[s.id] for s in PARAMETER_SETS]


@pytest.fixture(scope="module")
def runs(recorder) -> Runs:
    return Runs(recorder)


# ---------------------------------------------------------------- the checks


@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
@pytest.mark.parametrize("parameter_set", PARAMETER_SETS, ids=lambda s: s.id)
def test_every_call_the_handler_makes_is_allowed_by_the_rendered_role(runs, parameter_set):
    # Given the handler run on moto with the parameter set's rendered environment and a drifted fleet
    outcome = runs[parameter_set.id]

    # When every recorded call's authorizations are evaluated against the role SAM renders for that set
    denied = outcome.denied()

    # Then the handler finished, made calls, and IAM would allow every one of them (no Deny hit)
    assert outcome.error is None, outcome.error
    assert outcome.calls, "the recorder saw no call"
    assert denied == []


def test_the_runs_make_every_kind_of_write_so_the_check_is_not_vacuous(runs):
    # Given every parameter set's run
    calls = [c for r in runs.values() for c in r.calls]

    # When the distinct (service, operation) pairs are collected
    pairs = {(c.service, c.operation) for c in calls}

    # Then every remediation write, the state, report and alert writes and the re-read before the attach are there
    assert sorted(EXPECTED_PAIRS - pairs) == []
    print(f"\n{len(pairs)} distinct (service, operation) pairs checked: {sorted(pairs)}")


def test_report_mode_makes_no_ec2_write_at_all(runs):
    # Given the report-mode scan run (every remediation switch on, a managed group missing its current rules)
    outcome = runs["report"]

    # When its EC2 calls are split into reads and writes
    writes = [c.action for c in outcome.calls if c.service == "ec2" and not c.operation.startswith(("Describe", "Get"))]

    # Then it made none although there was drift to fix, and the role grants none either
    assert writes == []
    assert outcome.result["summary"]["noncompliant"] == outcome.result["summary"]["instances"] > 0
    assert [a for s in outcome.statements if s["Effect"] == "Allow" for a in _actions(s) if _is_ec2_write(a)] == []


@pytest.mark.parametrize("set_id", ["remediate-elastic-ip", "refresh"])
def test_every_deny_of_the_role_was_evaluated_against_real_calls_and_never_fired(runs, set_id):
    # Given a run and the Deny statements of its role (the guardrails and the region limit)
    outcome = runs[set_id]
    denies = [s for s in outcome.statements if s["Effect"] == "Deny"]
    requests = [r for c in outcome.calls for r in c.requests]

    # When each Deny is matched against the recorded requests on its action and resource alone
    exercised = {
        d["Sid"]: [r for r in requests if evaluate([{**_without_condition(d), "Effect": "Allow"}], r).allowed]
        for d in denies
    }

    # Then each one applied to some real call, and its condition kept it from firing on every one of them
    assert denies
    assert [sid for sid, hits in exercised.items() if not hits] == []
    assert [r for hits in exercised.values() for r in hits if not evaluate(outcome.statements, r).allowed] == []


def _without_condition(statement: dict) -> dict:
    return {k: v for k, v in statement.items() if k != "Condition"}


def test_imds_changes_keep_http_tokens_and_enable_the_endpoint(runs):
    # Given the remediating runs
    calls = [c for r in runs.values() for c in r.calls if c.operation == "ModifyInstanceMetadataOptions"]

    # When the metadata changes are read
    sent = [{k: v for k, v in c.params.items() if k != "InstanceId"} for c in calls]

    # Then each enables the endpoint and states HttpTokens (the instance's current value, here "required")
    assert sent
    assert all(s == {"HttpEndpoint": "enabled", "HttpTokens": "required"} for s in sent), sent


def test_the_scan_reads_and_writes_its_state_in_the_stack_region(runs):
    # Given the run whose Regions do not start with the stack's region
    outcome = runs["regions-elsewhere-first"]

    # When its DynamoDB calls are listed
    regions = {c.region for c in outcome.calls if c.service == "dynamodb"}

    # Then they all went to the stack's region, where the table is, and the scan covered both regions
    assert regions == {STACK_REGION}
    assert {c.region for c in outcome.calls if c.service == "ec2"} == {"eu-west-1", STACK_REGION}


# ---------------------------------------------------------------- the evaluator refuses what the role does not allow


def _recorded(runs, set_id: str, action: str) -> Request:
    return next(r for c in runs[set_id].calls for r in c.requests if r.action == action)


def _actions(statement: dict) -> list[str]:
    return statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]


def _is_ec2_write(action: str) -> bool:
    return action.startswith("ec2:") and not action.startswith(("ec2:Describe", "ec2:Get"))


def test_a_remediation_write_is_denied_to_the_report_mode_role(runs):
    # Given a metadata change a remediating scan made
    request = _recorded(runs, "remediate", "ec2:ModifyInstanceMetadataOptions")

    # When it is evaluated against the report-mode role and the remediating role
    report_role = runs["report"].statements
    remediate_role = runs["remediate"].statements

    # Then only the remediating role allows it
    assert evaluate(report_role, request).reason == "implicitly denied"
    assert evaluate(remediate_role, request).allowed


def test_the_evaluator_applies_resource_tags_request_tags_and_region_denies(runs):
    # Given requests the remediating scan made, each changed in one way its role must refuse
    statements = runs["remediate-elastic-ip"].statements
    imds = _recorded(runs, "remediate-elastic-ip", "ec2:ModifyInstanceMetadataOptions")
    authorize = next(
        r
        for c in runs["remediate-elastic-ip"].calls
        for r in c.requests
        if r.action == "ec2:AuthorizeSecurityGroupIngress" and ":security-group/" in r.resource
    )
    status_tags = next(
        r
        for c in runs["remediate-elastic-ip"].calls
        for r in c.requests
        if r.action == "ec2:CreateTags" and ":instance/" in r.resource
    )
    not_opted_in = Request(
        imds.action, imds.resource, {k: v for k, v in imds.context.items() if "ResourceTag" not in k}
    )
    foreign_group = Request(authorize.action, authorize.resource, {"aws:RequestedRegion": STACK_REGION})
    extra_tag = Request(
        status_tags.action,
        status_tags.resource,
        {
            **status_tags.context,
            "aws:TagKeys": (*status_tags.context["aws:TagKeys"], "Owner"),
            "aws:RequestTag/Owner": "x",
        },
    )
    elsewhere = Request(
        imds.action,
        imds.resource.replace(STACK_REGION, "ap-south-1"),
        {**imds.context, "aws:RequestedRegion": "ap-south-1"},
    )

    # When each is evaluated (the originals are allowed)
    assert all(evaluate(statements, r).allowed for r in (imds, authorize, status_tags))
    decisions = [evaluate(statements, r) for r in (not_opted_in, foreign_group, extra_tag, elsewhere)]

    # Then each is refused: no opt-in tag, no ManagedBy tag, a tag key beyond the status keys, another region
    assert [d.allowed for d in decisions] == [False, False, False, False]
    assert decisions[3].reason.startswith("explicitly denied by")
