"""Every AWS call the real handlers make, held against the role the templates render for that configuration.

moto enforces no IAM, so a handler can be green on moto and refused on AWS. Here each parameter set of
`parameter_sets.py` (report and remediate modes, Elastic IPs on and off, prefix-list mode, Regions not starting with
the stack's region, a list of accounts, an organization, the refresh, `eic-guard verify`'s job) is rendered with
SAM's translator (`cfn.render`), and the deployed engine runs on moto against fleets with drift, so that the
remediation writes really happen: the nightly schedule's input (or, for a refresh set, functions/refresh/app.py on
the SNS event, whose StartExecution gives the input; for the verify set, verify's {"job": "verify"}) starts
statemachine/eic_guard.asl.json, run by `asl.Execution` with the real handlers (functions/plan,
functions/scan_target for every target and phase, functions/aggregate), each with its
own rendered environment. A recorder on every botocore session (`call_recorder.CallRecorder`) turns each call into
the IAM authorizations AWS would make, and an evaluator (`iam_eval.evaluate`) checks each against the right role:
a function's calls in the stack's account against that function's role; the calls made in a member account (with
the credentials AssumeRole returned: moto maps them to the member account) against the member role that
member/template.yaml renders with the same settings; the state machine's own calls (ItemReader, ResultWriter, and
the lambda:InvokeFunction and child-execution states:StartExecution requests Step Functions makes for it) against
the state machine's role.

How the request context is derived (details in call_recorder.py): the action from the botocore operation (IAM's
name where it differs: ListObjectsV2 is s3:ListBucket); the resource ARNs from the call's parameters and moto's
state (instance, security group, network interface, Elastic IP, VPC, subnet, prefix list, table, bucket or object,
topic, role, state machine), kept where the Service Authorization Reference says the action authorizes that resource
type; aws:RequestedRegion from the client's region; s3:prefix from the listing's Prefix; aws:RequestTag/*,
aws:TagKeys from the request's tags; aws:ResourceTag/* from moto's state before the call; ec2:CreateAction for the
tag-on-create authorization; ec2:MetadataHttpTokens/ec2:MetadataHttpEndpoint (instance resource keys in the
reference) from the instance's current options.

Limits: the evaluator models one identity-based policy set. It does not model service control policies,
permission boundaries, session policies or resource-based policies (the bucket, topic and key policies; the member
role's trust policy is checked separately, by its principal), nor condition keys the recorder does not derive (they
count as absent). sts:GetCallerIdentity needs no permission. The AWS-managed policies SAM attaches (basic execution,
X-Ray) are out of scope: logs and traces are not API calls the code makes through boto3. The Distributed Map's
describe/stop calls on its child executions are not modelled (the service makes them only to stop a map run).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache

import boto3
import botocore.session
import pytest
import responses
from eic_guard.outputs.security_hub import FindingScope, LedgerChanges, S3Ledger, asff_time, build_finding
from eic_guard.ranges.state import DynamoDbStateStore, RangesState
from eic_guard.settings import CONNECT_PATH_TAG, ENDPOINT_GROUP_NAME, IP_RANGES_URL
from eic_guard.simulated import SimulatedAccount
from moto import mock_aws

from tests.conftest import IP_RANGES, ROOT, create_state_table
from tests.lambda_runtime import FakeLambdaContext, event, load_handler
from tests.template.asl import STATE_MACHINE_ID, Execution, load_definition
from tests.template.call_recorder import CallRecorder, RecordedCall
from tests.template.cfn import PSEUDO, RenderedStack, as_list, member_values_for, render, render_member
from tests.template.iam_eval import Request, conditions_match, evaluate
from tests.template.parameter_sets import LISTED_MEMBER, OWN_ACCOUNT, PARAMETER_SETS, STACK_REGION, ParameterSet

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
# Each function's handler folder (functions/<folder>/app.py).
HANDLERS = {
    "PlanFunction": "plan",
    "ScanTargetFunction": "scan_target",
    "AggregateFunction": "aggregate",
    "RefreshFunction": "refresh",
    "OnChangeFunction": "on_change",
}
MISSING_HANDLERS = sorted(
    f"functions/{f}/app.py" for f in HANDLERS.values() if not (ROOT / "functions" / f / "app.py").is_file()
)
# Not silently skipped: the reason names what is missing, and the module runs as soon as every handler exists.
pytestmark = [
    pytest.mark.skipif(
        bool(MISSING_HANDLERS), reason=f"the fan-out handlers do not exist yet: {', '.join(MISSING_HANDLERS)}"
    ),
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]
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
    ("ec2", "DescribeInstanceConnectEndpoints"),
    ("ec2", "AuthorizeSecurityGroupEgress"),
    ("ec2", "RevokeSecurityGroupEgress"),
    ("ec2", "CreateInstanceConnectEndpoint"),
    ("dynamodb", "GetItem"),
    ("dynamodb", "PutItem"),
    ("dynamodb", "UpdateItem"),
    ("s3", "PutObject"),
    ("s3", "GetObject"),
    ("s3", "ListObjectsV2"),
    ("sns", "Publish"),
    ("sts", "AssumeRole"),
    ("organizations", "ListAccounts"),
    ("states", "StartExecution"),
    ("lambda", "InvokeFunction"),
    ("securityhub", "BatchImportFindings"),
    ("securityhub", "BatchUpdateFindings"),
    ("organizations", "ListAccounts"),
}
# The on-change sets' batch: every instance's state change, plus a call on an interface and on a security group (the
# lookups of the instances behind them), as events/ has them with the fleet's ids put in.
ON_CHANGE_SAMPLES = (
    "cloudtrail-modify-network-interface-attribute.json",
    "cloudtrail-revoke-security-group-ingress.json",
)
MEMBER_SETS = ("organization", "accounts-report", "refresh-organization", "create-endpoints")


@dataclass
class Run:
    """One execution of the fan-out for one parameter set: what it returned and every call it made."""

    parameter_set: ParameterSet
    stack: RenderedStack | None
    calls: list[RecordedCall]
    members: list[str] = field(default_factory=list)
    organization_id: str = ""  # the organization moto made for the run (this account its management account)
    result: dict | None = None
    error: str | None = None
    handler_errors: list[str] = field(default_factory=list)
    reports: list[dict] = field(default_factory=list)
    events: list[tuple] = field(default_factory=list)

    @property
    def report(self) -> dict:
        """The run's eic-guard/report/v1 document, as Aggregate stored it in the reports bucket."""
        [report] = [r for r in self.reports if r.get("schema") == "eic-guard/report/v1"]
        return report

    def role_statements(self, function_id: str) -> list[dict]:
        return self.stack.role_statements(f"{function_id}Role")

    def member_params(self) -> dict[str, str]:
        return member_params(self.stack, self.organization_id)

    def member_statements(self, account_id: str) -> list[dict]:
        return member_role_statements(tuple(sorted(self.member_params().items())), account_id)

    def statements_for(self, call: RecordedCall) -> list[dict]:
        if call.account_id != OWN_ACCOUNT:
            return self.member_statements(call.account_id)
        return self.role_statements(call.function_id)

    def denied(self) -> list[str]:
        problems = []
        for call in self.calls:
            where = f"{call.function_id} in {call.account_id}/{call.region}"
            problems += [f"{call.action} ({where}): cannot name its {u}" for u in call.underived]
            statements = self.statements_for(call)
            for request in call.requests:
                decision = evaluate(statements, request)
                if not decision.allowed:
                    problems.append(f"{request.action} on {request.resource} ({where}): {decision.reason}")
                if request.action == "sts:AssumeRole" and not self.trusted(call, request):
                    problems.append(f"sts:AssumeRole of {request.resource} ({where}): its trust policy refuses")
        return problems

    def trusted(self, call: RecordedCall, request: Request) -> bool:
        """The member role's trust policy (a resource policy) admits the calling role, from this organization."""
        account = request.resource.split(":")[4]
        member = render_member(self.member_params(), account)
        caller = self.stack.physical(f"{call.function_id}Role", "Arn")
        context = {"aws:PrincipalOrgID": self.organization_id} if self.organization_id else {}
        return any(
            s["Effect"] == "Allow"
            and caller in as_list(s["Principal"]["AWS"])
            and conditions_match(s.get("Condition", {}), context)
            for s in member.resources["MemberRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        )


def member_params(stack: RenderedStack, organization_id: str) -> dict[str, str]:
    """The member stack's parameters for this central stack (what the README's StackSet commands pass): both central
    roles that enter member accounts may assume the member role, from the central stack's organization."""
    roles = ",".join(stack.physical(r, "Arn") for r in ("ScanTargetFunctionRole", "OnChangeFunctionRole"))
    return member_values_for(
        stack.params, stack.pseudo["AWS::Region"], WorkerRoleArns=roles, OrganizationId=organization_id
    )


@cache
def member_role_statements(params_items: tuple[tuple[str, str], ...], account_id: str) -> list[dict]:
    return render_member(dict(params_items), account_id).role_statements("MemberRole")


# ---------------------------------------------------------------- the fleets with drift


def eic_prefixes(region: str) -> tuple[list[str], list[str]]:
    """The region's EC2_INSTANCE_CONNECT prefixes in the snapshot the HTTP mock serves (IPv4, IPv6)."""
    document = json.loads(SNAPSHOT.read_text())
    v4 = [p["ip_prefix"] for p in document["prefixes"] if _is_eic(p, region)]
    v6 = [p["ipv6_prefix"] for p in document["ipv6_prefixes"] if _is_eic(p, region)]
    return v4, v6


def _is_eic(prefix: dict, region: str) -> bool:
    return prefix["service"] == "EC2_INSTANCE_CONNECT" and prefix["region"] == region


def managed_group_with_a_stale_rule(ec2, vpc_id: str, region: str) -> str:
    """eic-guard's group from an earlier run: none of the current rules (the run's apply phase adds them) and one for
    a prefix the file no longer lists (revoked once its grace period is over)."""
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


def build_scan_fleet(session: boto3.Session, region: str, prefix_lists: bool) -> None:
    """Drift of every fixable kind in `region`, plus an instance that stays non-compliant (so an alert goes out)."""
    ec2 = session.client("ec2", region)
    account = SimulatedAccount(ec2, session.client("ssm", region))
    ami = account.al2023_ami()
    if prefix_lists:
        eic_prefix_lists(ec2, region)
    # VPC a: eic-guard's group exists but lost its rules; an instance lacks it and has its metadata endpoint off.
    net_a = account.network("10.0.0.0/16", name="a")
    managed_group_with_a_stale_rule(ec2, net_a.vpc_id, region)
    launch = {"image_id": ami, "group_ids": [net_a.app_group_id], "subnet_id": net_a.public_subnet_id}
    account.launch(**launch, public_ip=True, imds="disabled", http_tokens="required", name="detached-imds-off")
    # ... one without a public IPv4 address (an Elastic IP fixes it with RemediatePublicIp on: an admin allowed it) ...
    account.launch(**launch, public_ip=False, name="no-public-ip", tags={"eic-guard:public-ip": "allowed"})
    # ... and one on an image EIC does not support out of the box: non-compliant whatever happens.
    account.launch(**{**launch, "image_id": account.own_image("custom-image")}, public_ip=True, name="custom-ami")
    # VPC b: no eic-guard group yet, one instance without SSH from EIC.
    net_b = account.network("10.1.0.0/16", name="b")
    account.launch(image_id=ami, subnet_id=net_b.public_subnet_id, group_ids=[net_b.app_group_id], public_ip=True)
    # The endpoint path (docs/architecture.md §13). VPC c: the endpoint eic-guard created, whose group lost its TCP 22
    # egress rule (restored in remediate mode), and a private instance without eic-guard-eice-ssh (attached).
    net_c = account.network("10.2.0.0/16", name="c")
    endpoint_group = ec2.create_security_group(
        GroupName=ENDPOINT_GROUP_NAME,
        Description="eic-guard: the EC2 Instance Connect Endpoint's group",
        VpcId=net_c.vpc_id,
        TagSpecifications=[
            {"ResourceType": "security-group", "Tags": [MANAGED_BY, {"Key": "Name", "Value": ENDPOINT_GROUP_NAME}]}
        ],
    )["GroupId"]
    ec2.revoke_security_group_egress(
        GroupId=endpoint_group, IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    )
    account.instance_connect_endpoint(net_c.private_subnet_id, [endpoint_group], tags={"ManagedBy": "eic-guard"})
    account.launch(
        image_id=ami, subnet_id=net_c.private_subnet_id, group_ids=[net_c.app_group_id], public_ip=False, name="private"
    )
    # VPC d: a private instance its owner put on the endpoint path, in a VPC without an endpoint (CreateEndpoints=true
    # creates one; otherwise it stays non-compliant).
    net_d = account.network("10.3.0.0/16", name="d")
    account.launch(
        image_id=ami,
        subnet_id=net_d.private_subnet_id,
        group_ids=[net_d.app_group_id],
        public_ip=False,
        name="private-no-endpoint",
        tags={CONNECT_PATH_TAG: "endpoint"},
    )
    # An Elastic IP eic-guard allocated, now on an instance that was opted out: to disassociate and release.
    [opted_out] = account.launch(**launch, public_ip=True, opted_in=False, name="opted-out")
    address = ec2.allocate_address(
        Domain="vpc", TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": [MANAGED_BY]}]
    )
    ec2.associate_address(AllocationId=address["AllocationId"], InstanceId=opted_out)


def build_refresh_fleet(session: boto3.Session, region: str) -> None:
    """eic-guard's group in two VPCs of `region`, without the current rules and with a retired one."""
    ec2 = session.client("ec2", region)
    account = SimulatedAccount(ec2)
    for n in range(2):
        managed_group_with_a_stale_rule(ec2, account.network(f"10.{n}.0.0/16", name=f"net{n}").vpc_id, region)


def stack_resources(environment: dict[str, str]) -> None:
    """The table, bucket and topic the rendered environment names, in the stack's region."""
    create_state_table(environment["EIC_GUARD_STATE_TABLE"])
    boto3.client("s3", STACK_REGION).create_bucket(Bucket=environment["EIC_GUARD_REPORTS_BUCKET"])
    topic = environment["EIC_GUARD_ALERTS_TOPIC_ARN"]
    assert boto3.client("sns", STACK_REGION).create_topic(Name=topic.rsplit(":", 1)[1])["TopicArn"] == topic


def previous_state(environment: dict[str, str]) -> None:
    """The state a run of the day before left: the previous file's prefixes, the retired one among them, so that
    today's file expires it (and, with a grace of 0 h, the run revokes it: the revoke phase of the fan-out)."""
    today = json.loads(SNAPSHOT.read_text())
    yesterday = datetime.strptime(today["createDate"], "%Y-%m-%d-%H-%M-%S").replace(tzinfo=UTC) - timedelta(days=1)
    regions = environment["EIC_GUARD_REGIONS"].split(",")
    current = {r: [*eic_prefixes(r)[0], *eic_prefixes(r)[1], RETIRED_PREFIX] for r in regions}
    state = RangesState(
        sync_token=str(int(today["syncToken"]) - 86400),
        create_date=f"{yesterday:%Y-%m-%d-%H-%M-%S}",
        current=current,
        last_seen={r: dict.fromkeys(prefixes, yesterday) for r, prefixes in current.items()},
        updated_at=yesterday,
    )
    store = DynamoDbStateStore(boto3.client("dynamodb", STACK_REGION), environment["EIC_GUARD_STATE_TABLE"])
    store.save(state, None)


def current_state(environment: dict[str, str]) -> None:
    """The state a nightly run left today: the snapshot's prefixes (the on-change function reads them, never the
    file)."""
    today = json.loads(SNAPSHOT.read_text())
    created = datetime.strptime(today["createDate"], "%Y-%m-%d-%H-%M-%S").replace(tzinfo=UTC)
    current = {r: [*eic_prefixes(r)[0], *eic_prefixes(r)[1]] for r in environment["EIC_GUARD_REGIONS"].split(",")}
    state = RangesState(
        sync_token=today["syncToken"],
        create_date=today["createDate"],
        current=current,
        last_seen={r: dict.fromkeys(prefixes, created) for r, prefixes in current.items()},
        updated_at=created,
    )
    store = DynamoDbStateStore(boto3.client("dynamodb", STACK_REGION), environment["EIC_GUARD_STATE_TABLE"])
    store.save(state, None)


def on_change_batch(region: str) -> dict:
    """An SQS batch (events/sqs-on-change-batch.json's shape) of EventBridge events about the fleet of `region`:
    each instance starting, one of its interfaces' groups changed, one of its groups' rules revoked."""
    ec2 = boto3.client("ec2", region)
    instances = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    bodies = []
    for instance in instances:
        body = event("ec2-instance-state-change-aws-doc.json")
        body["detail"].update({"instance-id": instance["InstanceId"], "state": "pending"})
        body.update(account=OWN_ACCOUNT, region=region)
        bodies.append(body)
    eni = instances[0]["NetworkInterfaces"][0]
    interface, group = event(ON_CHANGE_SAMPLES[0]), event(ON_CHANGE_SAMPLES[1])
    interface["detail"]["requestParameters"]["networkInterfaceId"] = eni["NetworkInterfaceId"]
    group["detail"]["requestParameters"]["groupId"] = eni["Groups"][0]["GroupId"]
    for body in (interface, group):
        body.update(account=OWN_ACCOUNT, region=region)
        body["detail"].update(awsRegion=region, recipientAccountId=OWN_ACCOUNT)
        bodies.append(body)
    template = event("sqs-on-change-batch.json")["Records"][0]
    records = [
        {**template, "messageId": f"4f0c6a1e-2b3d-4e5f-8a9b-{n:012d}", "body": json.dumps(body)}
        for n, body in enumerate(bodies, start=1)
    ]
    return {"Records": records}


def member_accounts(parameter_set: ParameterSet) -> tuple[str, list[str]]:
    """The run's organization (created here whenever the run covers other accounts, this account its management
    account) and its member accounts: the organization's, or the listed ones other than this account."""
    accounts = parameter_set.params["Accounts"]
    if not accounts:
        return "", []
    organizations = boto3.client("organizations", STACK_REGION)
    organization_id = organizations.create_organization(FeatureSet="ALL")["Organization"]["Id"]
    if accounts != "organization":
        return organization_id, [a for a in accounts.split(",") if a and a != OWN_ACCOUNT]
    for n in range(parameter_set.members):
        organizations.create_account(Email=f"member{n}@example.com", AccountName=f"member-{n}")
    members = sorted(a["Id"] for a in organizations.list_accounts()["Accounts"] if a["Id"] != OWN_ACCOUNT)
    return organization_id, members


def session_in(account_id: str) -> boto3.Session:
    """A session acting in `account_id` (moto maps assumed-role credentials to the role's account)."""
    if account_id == OWN_ACCOUNT:
        return boto3.Session(region_name=STACK_REGION)
    credentials = boto3.client("sts", STACK_REGION).assume_role(
        RoleArn=f"arn:aws:iam::{account_id}:role/fleet-builder", RoleSessionName="fleet-builder"
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=STACK_REGION,
    )


def an_open_finding_the_run_resolves(session: boto3.Session, account: str, region: str, environment: dict) -> None:
    """The imds-enabled finding of the instance whose metadata endpoint is off, as an earlier report-mode run left it
    (in Security Hub and in the ledger): this remediating run fixes the instance, so it resolves the finding
    (BatchImportFindings PASSED, BatchUpdateFindings RESOLVED) in that account, with that account's role."""
    ec2 = session.client("ec2", region)
    filters = [{"Name": "tag:Name", "Values": ["detached-imds-off"]}]
    [instance] = [
        i["InstanceId"] for r in ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]
    ]
    scope = FindingScope(account, region)
    earlier = datetime.now(UTC) - timedelta(days=1)
    planned = build_finding(
        scope,
        instance,
        "imds-enabled",
        "FAILED",
        status="would-fix",
        description="metadata endpoint is disabled",
        created_at=asff_time(earlier),
        updated_at=asff_time(earlier),
        run_id="earlier-run",
    )
    session.client("securityhub", region).batch_import_findings(Findings=[planned.finding])
    record = {"instance_id": instance, "check_id": "imds-enabled", "created_at": asff_time(earlier)}
    ledger = S3Ledger(boto3.client("s3", STACK_REGION), environment["EIC_GUARD_REPORTS_BUCKET"], account, region)
    ledger.load()
    ledger.save(LedgerChanges(opened={planned.finding_id: record}), earlier)


# ---------------------------------------------------------------- the deployed engine, run under the recorder


class DeployedEngine:
    """The stack's functions as Lambda runs them (each with its rendered environment and a context of its own
    timeout), invoked by the state machine's definition; every call is attributed to the function making it."""

    def __init__(self, stack: RenderedStack, recorder: CallRecorder, outcome: Run):
        self.stack, self.recorder, self.outcome = stack, recorder, outcome
        self.handlers = {f: load_handler(folder, f"eic_guard_{folder}_app_iam") for f, folder in HANDLERS.items()}
        self.by_arn = {stack.physical(f, "Arn"): f for f in HANDLERS}

    def call(self, function_id: str, event_: dict) -> dict:
        properties = self.stack.resources[function_id]["Properties"]
        context = FakeLambdaContext(
            function_name=self.stack.physical(function_id),
            invoked_function_arn=self.stack.physical(function_id, "Arn"),
            aws_request_id=str(uuid.uuid4()),
            memory_limit_in_mb=properties["MemorySize"],
            remaining_ms=properties["Timeout"] * 1000,
        )
        with pytest.MonkeyPatch.context() as env:
            for name in [n for n in os.environ if n.startswith("EIC_GUARD_")]:
                env.delenv(name)
            for name, value in self.stack.environment(function_id).items():
                env.setenv(name, value)
            with self.recording(function_id):
                try:
                    return self.handlers[function_id](event_, context)
                except Exception as exc:
                    self.outcome.handler_errors.append(f"{function_id}: {type(exc).__name__}: {exc}")
                    raise

    @contextmanager
    def recording(self, function_id: str) -> Iterator[None]:
        self.recorder.function_id, self.recorder.recording = function_id, True
        try:
            yield
        finally:
            self.recorder.recording = False

    def invoke(self, function_arn: str, payload: dict) -> dict:
        """Step Functions' lambda:invoke: the state machine's role invokes the function."""
        self.state_machine_request("lambda", "InvokeFunction", function_arn)
        return self.call(self.by_arn[function_arn], payload)

    def state_machine_request(self, service: str, operation: str, resource: str) -> None:
        """A request Step Functions makes with the state machine's role (not a boto3 call of ours)."""
        call = RecordedCall(service, operation, STACK_REGION, {}, account_id=OWN_ACCOUNT, function_id=STATE_MACHINE_ID)
        call.requests.append(Request(call.action, resource, {"aws:RequestedRegion": STACK_REGION}))
        self.recorder.calls.append(call)

    def start(self, job: str) -> dict:
        """The execution input: the nightly schedule's, or what the refresh function started the state machine with."""
        if job == "scan":
            return json.loads(self.stack.resources[f"{STATE_MACHINE_ID}Nightly"]["Properties"]["Target"]["Input"])
        if job == "verify":  # what `eic-guard verify` starts (verify/execution.py)
            return {"job": "verify"}
        state_machine = self.stack.physical(STATE_MACHINE_ID)
        created = boto3.client("stepfunctions", STACK_REGION).create_state_machine(
            name=self.stack.physical(STATE_MACHINE_ID, "Name"),
            definition=json.dumps(load_definition(self.stack)),
            roleArn=self.stack.physical(f"{STATE_MACHINE_ID}Role", "Arn"),
        )
        assert created["stateMachineArn"] == state_machine
        self.call("RefreshFunction", event("sns-ip-space-changed-current.json"))
        [started] = [c for c in self.recorder.calls if c.action == "states:StartExecution" and c.function_id]
        assert started.params["stateMachineArn"] == state_machine
        return json.loads(started.params["input"])

    def run(self, job: str) -> dict:
        if job == "on-change":
            regions = self.stack.environment("OnChangeFunction")["EIC_GUARD_REGIONS"].split(",")
            results = [self.call("OnChangeFunction", on_change_batch(region)) for region in regions]
            return {"batchItemFailures": [f for r in results for f in r["batchItemFailures"]]}
        execution_input = self.start(job)
        s3 = _AsStateMachine(boto3.client("s3", STACK_REGION), self)
        execution = Execution(load_definition(self.stack), self.invoke, s3, events=self.outcome.events)
        try:
            return execution.run(execution_input)
        finally:
            for _ in [e for e in execution.events if e[0] == "child"]:  # each map item is a child execution
                self.state_machine_request("states", "StartExecution", self.stack.physical(STATE_MACHINE_ID))


class _AsStateMachine:
    """The S3 client of the Distributed Maps' ItemReader and ResultWriter: calls recorded as the state machine's."""

    def __init__(self, s3, engine: DeployedEngine):
        self.s3, self.engine = s3, engine

    def get_object(self, **kwargs):
        with self.engine.recording(STATE_MACHINE_ID):
            return self.s3.get_object(**kwargs)

    def put_object(self, **kwargs):
        with self.engine.recording(STATE_MACHINE_ID):
            return self.s3.put_object(**kwargs)


def stored_reports(bucket: str) -> list[dict]:
    s3 = boto3.client("s3", STACK_REGION)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="reports/").get("Contents", ())]
    return [json.loads(s3.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys if k.endswith(".json")]


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
    """The parameter set's fan-out on moto with the rendered stack, every call recorded."""
    outcome = Run(parameter_set, None, [])
    recorder.calls = outcome.calls
    with mock_aws():
        # The organization first: the stack names it (OrganizationId), and its roles may enter only its accounts.
        outcome.organization_id, outcome.members = member_accounts(parameter_set)
        params = parameter_set.params
        if parameter_set.organization:
            params = {**params, "OrganizationId": outcome.organization_id}
        stack = outcome.stack = render(params, STACK_REGION)
        environment = stack.environment("AggregateFunction")
        stack_resources(environment)
        if parameter_set.job == "on-change":
            current_state(environment)
        elif parameter_set.params["StalePrefixGraceHours"] == "0":
            previous_state(environment)
        for account in (OWN_ACCOUNT, *outcome.members):
            session = session_in(account)
            for region in environment["EIC_GUARD_REGIONS"].split(","):
                if parameter_set.job in ("scan", "on-change", "verify"):
                    build_scan_fleet(session, region, environment["EIC_GUARD_INGRESS_SOURCE"] == "prefix-list")
                else:
                    build_refresh_fleet(session, region)
                if stack.params["SecurityHubFindings"] == "enabled":
                    an_open_finding_the_run_resolves(session, account, region, environment)
        with responses.RequestsMock(assert_all_requests_are_fired=False) as http:
            http.add(responses.GET, IP_RANGES_URL, body=SNAPSHOT.read_bytes(), content_type="application/json")
            try:
                outcome.result = DeployedEngine(stack, recorder, outcome).run(parameter_set.job)
            except Exception as exc:  # noqa: BLE001 - reported by the tests, with the calls made until then
                outcome.error = f"{type(exc).__name__}: {exc}"
        outcome.reports = stored_reports(environment["EIC_GUARD_REPORTS_BUCKET"])
    return outcome


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


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS, ids=lambda s: s.id)
def test_every_call_of_the_fan_out_is_allowed_by_the_role_that_makes_it(runs, parameter_set):
    # Given the fan-out run on moto with the parameter set's rendered stack and drifted fleets
    outcome = runs[parameter_set.id]

    # When every recorded call's authorizations are evaluated against the role that made it (the function's, the
    # member role in a member account, the state machine's)
    denied = outcome.denied()

    # Then the execution finished without a handler failing, made calls, and IAM would allow every one of them
    assert outcome.error is None, outcome.error
    assert outcome.handler_errors == []
    assert outcome.calls, "the recorder saw no call"
    assert denied == []


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS, ids=lambda s: s.id)
def test_every_target_ran_and_the_report_names_every_account(runs, parameter_set):
    # Given a run and the accounts and regions it covers
    outcome = runs[parameter_set.id]
    if parameter_set.job == "on-change":
        # (no fan-out: every record of the batch was checked, none handed back to the queue)
        assert outcome.result == {"batchItemFailures": []}
        return
    regions = outcome.stack.environment("PlanFunction")["EIC_GUARD_REGIONS"].split(",")
    expected = {(a, r) for a in (OWN_ACCOUNT, *outcome.members) for r in regions}

    # When the workers' inputs are collected
    worked = {
        (target["account_id"], target["region"], e[3]["BatchInput"]["phase"])
        for e in outcome.events
        if e[0] == "child"
        for target in e[3]["Items"]
    }

    # Then every (account, region) had its apply phase, and the stored report of a scan lists every target as ok
    assert {(a, r) for a, r, phase in worked if phase == "apply"} == expected
    if parameter_set.job == "scan":
        report = outcome.report
        assert {(t["account_id"], t["region"]): t["status"] for t in report["targets"]} == dict.fromkeys(expected, "ok")
        assert sorted(report["accounts"]) == sorted({a for a, _ in expected})
        assert {i["account_id"] for i in report["instances"]} == {a for a, _ in expected}


def test_the_runs_make_every_kind_of_write_so_the_check_is_not_vacuous(runs):
    # Given every parameter set's run
    calls = [c for r in runs.values() for c in r.calls]

    # When the distinct (service, operation) pairs are collected
    pairs = {(c.service, c.operation) for c in calls}

    # Then every remediation write, the state, report, alert and run-object calls, entering the member accounts,
    # listing the organization, and starting the state machine (and what the state machine does) are there
    assert sorted(EXPECTED_PAIRS - pairs) == []
    print(f"\n{len(pairs)} distinct (service, operation) pairs checked: {sorted(pairs)}")


@pytest.mark.parametrize("set_id", ["report", "accounts-report"])
def test_report_mode_scan_makes_no_ec2_write_at_all(runs, set_id):
    # Given a report-mode scan (every remediation switch on, managed groups missing their current rules)
    outcome = runs[set_id]

    # When its EC2 calls, in every account, are split into reads and writes
    writes = [
        f"{c.action} in {c.account_id}"
        for c in outcome.calls
        if c.service == "ec2" and not c.operation.startswith(("Describe", "Get"))
    ]

    # Then it made none although there was drift to fix, and its roles allow no write but the managed groups' rules
    # (the refresh job's)
    assert writes == []
    summary = outcome.report["summary"]
    assert summary["noncompliant"] == summary["instances"] > 0
    rule_edits = ["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"]
    for statements in [outcome.role_statements("ScanTargetFunction")] + [
        outcome.member_statements(m) for m in outcome.members
    ]:
        assert sorted({a for s in statements if s["Effect"] == "Allow" for a in _actions(s) if _is_ec2_write(a)}) == (
            rule_edits
        )


def test_on_change_checks_the_events_instances_and_fixes_them_only_in_remediate_mode(runs):
    # Given the same drifted fleet and batch of events in report mode and in remediate mode
    report, remediate = runs["on-change-report"], runs["on-change-remediate"]

    # When the on-change function's EC2 calls are split into lookups and writes
    def ec2_calls(outcome, writes: bool) -> set[str]:
        return {
            c.operation
            for c in outcome.calls
            if c.function_id == "OnChangeFunction"
            and c.service == "ec2"
            and c.operation.startswith(("Describe", "Get")) is not writes
        }

    # Then both looked up the instances behind the interface and the group; report mode wrote nothing to EC2 and
    # its role allows no EC2 write at all; remediate mode fixed (group attached, metadata endpoint on, tags) and
    # imported the findings into this account's Security Hub
    assert "DescribeNetworkInterfaces" in ec2_calls(report, False) & ec2_calls(remediate, False)
    assert ec2_calls(report, True) == set()
    statements = report.role_statements("OnChangeFunction")
    assert sorted(a for s in statements if s["Effect"] == "Allow" for a in _actions(s) if _is_ec2_write(a)) == []
    assert {"ModifyNetworkInterfaceAttribute", "ModifyInstanceMetadataOptions", "CreateTags"} <= ec2_calls(
        remediate, True
    )
    assert "RevokeSecurityGroupIngress" not in ec2_calls(remediate, True)
    imports = [c for c in remediate.calls if c.action == "securityhub:BatchImportFindings"]
    assert imports and {c.function_id for c in imports} == {"OnChangeFunction"}


def test_security_hub_findings_are_imported_in_each_account_by_the_role_that_owns_it(runs):
    # Given a scan of this account and a listed member account with SecurityHubFindings=enabled
    outcome = runs["security-hub"]

    # When the imports and the ledger's calls are collected
    imports = {(c.function_id, c.account_id) for c in outcome.calls if c.action == "securityhub:BatchImportFindings"}
    ledger = {
        (c.action, c.account_id)
        for c in outcome.calls
        if c.service == "s3" and str(c.params.get("Key", "")).startswith("findings/")
    }

    # Then the worker imported into both accounts (the member's with the member role: same function, other
    # account), each on its own default product, and kept the ledger with its own role in this account's bucket
    assert imports == {("ScanTargetFunction", OWN_ACCOUNT), ("ScanTargetFunction", outcome.members[0])}
    for call in [c for c in outcome.calls if c.action == "securityhub:BatchImportFindings"]:
        [request] = call.requests
        assert request.resource.endswith(f":{call.account_id}:product/{call.account_id}/default")
    assert ("s3:PutObject", OWN_ACCOUNT) in ledger
    assert {account for _, account in ledger} == {OWN_ACCOUNT}


@pytest.mark.parametrize("set_id", MEMBER_SETS)
def test_member_accounts_are_entered_only_by_the_worker_through_the_member_role(runs, set_id):
    # Given a run covering member accounts
    outcome = runs[set_id]
    role_name = outcome.stack.params["MemberRoleName"]
    worker_role = outcome.stack.physical("ScanTargetFunctionRole", "Arn")

    # When the calls made in member accounts and the AssumeRole calls are picked out
    in_members = [c for c in outcome.calls if c.account_id != OWN_ACCOUNT]
    entered = {c.params["RoleArn"] for c in outcome.calls if c.action == "sts:AssumeRole"}

    # Then every member account got EC2 calls (and its alias read), all made by the worker with the member role's
    # credentials, each entered once per run through role/<MemberRoleName>, which the member template lets exactly
    # the worker role assume
    assert outcome.members
    assert {c.account_id for c in in_members if c.service == "ec2"} == set(outcome.members)
    assert {c.function_id for c in in_members} == {"ScanTargetFunction"}
    scans = not set_id.startswith("refresh")  # a scan names each account by its alias (once per account and run)
    assert {c.service for c in in_members} == ({"ec2", "iam"} if scans else {"ec2"})
    assert sorted(c.account_id for c in in_members if c.service == "iam") == (sorted(outcome.members) if scans else [])
    assert entered == {f"arn:aws:iam::{m}:role/{role_name}" for m in outcome.members}
    assert [c.function_id for c in outcome.calls if c.action == "sts:AssumeRole"] == ["ScanTargetFunction"] * len(
        [c for c in outcome.calls if c.action == "sts:AssumeRole"]
    )
    member = render_member(outcome.member_params(), outcome.members[0])
    [trust] = member.resources["MemberRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    on_change_role = outcome.stack.physical("OnChangeFunctionRole", "Arn")
    assert trust["Principal"] == {"AWS": [worker_role, on_change_role]}
    assert trust["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": outcome.organization_id}}
    assert member.resources["MemberRole"]["Properties"]["RoleName"] == role_name


def test_the_refresh_job_updates_every_members_managed_groups_in_report_mode(runs):
    # Given the refresh job across an organization, in report mode
    outcome = runs["refresh-organization"]

    # When the managed-group rule additions are grouped by account
    added = {c.account_id for c in outcome.calls if c.action == "ec2:AuthorizeSecurityGroupIngress"}

    # Then every account's groups got the new prefixes (the member role allows exactly that in report mode)
    assert added == {OWN_ACCOUNT, *outcome.members}


@pytest.mark.parametrize("set_id", ["refresh", "refresh-organization"])
def test_the_refresh_function_only_verifies_advances_and_starts_this_state_machine(runs, set_id):
    # Given a refresh run
    outcome = runs[set_id]

    # When the refresh function's own calls are listed
    calls = [c for c in outcome.calls if c.function_id == "RefreshFunction"]
    started = [c for c in calls if c.action == "states:StartExecution"]

    # Then it made no EC2 call, and started this stack's state machine once, with the refresh job
    assert [c.action for c in calls if c.service == "ec2"] == []
    assert [(c.params["stateMachineArn"], json.loads(c.params["input"])) for c in started] == [
        (outcome.stack.physical(STATE_MACHINE_ID), {"job": "refresh"})
    ]


@pytest.mark.parametrize(("set_id", "account"), [("remediate-elastic-ip", "own"), ("organization", "member")])
def test_every_deny_of_the_role_was_evaluated_against_real_calls_and_never_fired(runs, set_id, account):
    # Given a run and the Deny statements of the worker's role in its own account, or of a member role
    outcome = runs[set_id]
    own = account == "own"
    where = OWN_ACCOUNT if own else outcome.members[0]
    statements = outcome.role_statements("ScanTargetFunction") if own else outcome.member_statements(where)
    denies = [s for s in statements if s["Effect"] == "Deny"]
    requests = [
        r for c in outcome.calls if c.account_id == where and c.function_id == "ScanTargetFunction" for r in c.requests
    ]

    # When each Deny is matched against the recorded requests on its action and resource alone
    exercised = {
        d["Sid"]: [r for r in requests if evaluate([{**_without_condition(d), "Effect": "Allow"}], r).allowed]
        for d in denies
    }

    # Then each one applied to some real call, and its condition kept it from firing on every one of them
    assert denies
    assert [sid for sid, hits in exercised.items() if not hits] == []
    assert [r for hits in exercised.values() for r in hits if not evaluate(statements, r).allowed] == []


def _without_condition(statement: dict) -> dict:
    return {k: v for k, v in statement.items() if k != "Condition"}


def test_imds_changes_keep_http_tokens_and_enable_the_endpoint(runs):
    # Given the remediating runs
    calls = [c for r in runs.values() for c in r.calls if c.operation == "ModifyInstanceMetadataOptions"]

    # When the metadata changes are read (verify's probes send the same request with DryRun)
    sent = [{k: v for k, v in c.params.items() if k not in ("InstanceId", "DryRun")} for c in calls]

    # Then each enables the endpoint and states HttpTokens (the instance's current value, here "required")
    assert sent
    assert all(s == {"HttpEndpoint": "enabled", "HttpTokens": "required"} for s in sent), sent


def test_state_and_run_objects_stay_in_the_stack_region(runs):
    # Given the run whose Regions do not start with the stack's region
    outcome = runs["regions-elsewhere-first"]

    # When its DynamoDB and S3 calls are listed
    regions = {c.region for c in outcome.calls if c.service in ("dynamodb", "s3")}

    # Then they all went to the stack's region, where the table and bucket are, and the scan covered both regions
    assert regions == {STACK_REGION}
    assert {c.region for c in outcome.calls if c.service == "ec2"} == {"eu-west-1", STACK_REGION}


# ---------------------------------------------------------------- the evaluator refuses what the role does not allow


def _recorded(runs, set_id: str, action: str, account: str = OWN_ACCOUNT) -> Request:
    return next(r for c in runs[set_id].calls if c.account_id == account for r in c.requests if r.action == action)


def _actions(statement: dict) -> list[str]:
    return statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]


def _is_ec2_write(action: str) -> bool:
    return action.startswith("ec2:") and not action.startswith(("ec2:Describe", "ec2:Get"))


def test_a_remediation_write_is_denied_to_the_report_mode_roles(runs):
    # Given a metadata change a remediating scan made in a member account
    member = runs["organization"].members[0]
    request = _recorded(runs, "organization", "ec2:ModifyInstanceMetadataOptions", member)

    # When it is evaluated against the report-mode member role and the remediating one
    report_role = runs["accounts-report"].member_statements(member)
    remediate_role = runs["organization"].member_statements(member)

    # Then only the remediating role allows it
    assert evaluate(report_role, request).reason == "implicitly denied"
    assert evaluate(remediate_role, request).allowed


def test_the_worker_may_not_enter_another_role_nor_touch_another_bucket(runs):
    # Given the worker's AssumeRole and a result write it made
    outcome = runs["organization"]
    statements = outcome.role_statements("ScanTargetFunction")
    assume = _recorded(runs, "organization", "sts:AssumeRole")
    result = next(
        r
        for c in outcome.calls
        if c.function_id == "ScanTargetFunction"
        for r in c.requests
        if r.action == "s3:PutObject" and "/runs/" in r.resource
    )
    rows = _recorded_put(runs, "organization", "/tables/findings/")

    # When the same requests name another role or a key outside runs/ (the reports are Aggregate's)
    other_role = Request(assume.action, assume.resource.rsplit("/", 1)[0] + "/OrganizationAccountAccessRole")
    report = Request(result.action, result.resource.split("/runs/")[0] + "/reports/x.json", result.context)

    # Then the originals (the result object, the Athena rows) are allowed and those are not
    assert evaluate(statements, assume).allowed and evaluate(statements, result).allowed
    assert evaluate(statements, rows).allowed
    assert not evaluate(statements, other_role).allowed
    assert not evaluate(statements, report).allowed
    # And the Athena rows' grant reaches no other part of the bucket (the Security Hub ledger under findings/)
    ledger = Request(rows.action, rows.resource.split("/tables/")[0] + "/findings/123456789012/us-east-1.json")
    assert not evaluate(statements, Request(ledger.action, ledger.resource, rows.context)).allowed


def _recorded_put(runs, name: str, part: str) -> Request:
    return next(
        r
        for c in runs[name].calls
        if c.function_id == "ScanTargetFunction"
        for r in c.requests
        if r.action == "s3:PutObject" and part in r.resource
    )


def test_the_evaluator_applies_resource_tags_request_tags_and_region_denies(runs):
    # Given requests the remediating scan made, each changed in one way its role must refuse
    statements = runs["remediate-elastic-ip"].role_statements("ScanTargetFunction")
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


@pytest.mark.parametrize("set_id", ["remediate", "organization", "refresh", "refresh-organization"])
def test_an_expired_prefix_is_revoked_only_after_every_account_got_its_additions(runs, set_id):
    # Given a run whose state expires a prefix (grace 0 h), over one account or a whole organization
    outcome = runs[set_id]

    # When its rule changes are listed in the order they were made
    changes = [(c.operation, c.account_id) for c in outcome.calls if c.operation.endswith("SecurityGroupIngress")]
    revokes = [i for i, (operation, _) in enumerate(changes) if operation == "RevokeSecurityGroupIngress"]
    adds = [i for i, (operation, _) in enumerate(changes) if operation == "AuthorizeSecurityGroupIngress"]

    # Then the revoke phase ran (its own map), in every account, and after the last addition anywhere
    assert ("enter", "RevokeTargets") in outcome.events
    assert {changes[i][1] for i in revokes} == {OWN_ACCOUNT, *outcome.members}
    assert adds and revokes and max(adds) < min(revokes)


def _changed(request: Request, **context) -> Request:
    return Request(request.action, request.resource, {**request.context, **context})


def test_the_condition_keys_refuse_what_eic_guard_never_asks(runs):
    # Given requests the remediating scans made (each allowed), in this account and in a member account
    outcome, organization = runs["remediate-elastic-ip"], runs["organization"]
    statements = outcome.role_statements("ScanTargetFunction")
    imds = _recorded(runs, "remediate-elastic-ip", "ec2:ModifyInstanceMetadataOptions")
    attach = next(
        r
        for c in outcome.calls
        for r in c.requests
        if r.action == "ec2:ModifyNetworkInterfaceAttribute" and ":network-interface/" in r.resource
    )
    associate = next(
        r
        for c in outcome.calls
        for r in c.requests
        if r.action == "ec2:AssociateAddress" and ":instance/" in r.resource
    )
    assume = _recorded(runs, "organization", "sts:AssumeRole")
    assert all(evaluate(statements, r).allowed for r in (imds, attach, associate))
    assert evaluate(organization.role_statements("ScanTargetFunction"), assume).allowed

    # When each is changed the way a misused role would
    metadata_off = _changed(imds, **{"ec2:Attribute/HttpEndpoint": "disabled"})
    imds_v1_on = _changed(imds, **{"ec2:Attribute/HttpTokens": "optional", "ec2:MetadataHttpTokens": "required"})
    hop_limit = _changed(imds, **{"ec2:Attribute/HttpPutResponseHopLimit": "64"})
    source_dest = _changed(attach, **{"ec2:Attribute/SourceDestCheck": "False"})
    not_allowed_ip = Request(
        associate.action,
        associate.resource,
        {k: v for k, v in associate.context.items() if "eic-guard:public-ip" not in k},
    )
    other_org = _changed(assume, **{"aws:ResourceOrgID": "o-someoneelse1"})

    # Then IAM refuses each: the endpoint off, IMDSv1 turned on, another metadata attribute, an interface attribute
    # other than its groups, an Elastic IP for an instance no admin allowed one, a role outside the organization
    own = [evaluate(statements, r) for r in (metadata_off, imds_v1_on, hop_limit, source_dest, not_allowed_ip)]
    assert [d.allowed for d in own] == [False] * 5, own
    assert [d.reason.startswith("explicitly denied") for d in own[:2]] == [True, True]
    assert not evaluate(organization.role_statements("ScanTargetFunction"), other_org).allowed


def test_the_member_role_trusts_the_central_roles_only_from_their_organization(runs):
    # Given an AssumeRole the worker made into a member account, and the member role's trust
    outcome = runs["organization"]
    [call] = [c for c in outcome.calls if c.action == "sts:AssumeRole"][:1]
    [request] = call.requests

    # When the same caller asks from outside the organization (the central account left it, say)
    outside = Run(outcome.parameter_set, outcome.stack, [], outcome.members, organization_id="")
    outside.member_params = lambda: outcome.member_params()  # the member stack as deployed, the caller elsewhere

    # Then the trust admits it from the organization only
    assert outcome.trusted(call, request)
    assert not outside.trusted(call, request)


def test_the_verify_job_probes_its_writes_with_dry_run_on_the_drifted_fleet(runs):
    # Given `eic-guard verify`'s job on the drifted fleets of this account and a listed member, every switch on
    outcome = runs["verify"]

    # When its EC2 and Security Hub calls are collected per account
    writes = {
        (c.account_id, c.operation, c.params.get("DryRun"))
        for c in outcome.calls
        if c.service == "ec2" and not c.operation.startswith(("Describe", "Get"))
    }
    hubs = {c.account_id for c in outcome.calls if (c.service, c.operation) == ("securityhub", "DescribeHub")}

    # Then each account saw every write the remediation may make there, each as a DryRun (allowed above, as the
    # role that made it would be), and Security Hub's state read; nothing was written for real
    expected = {
        "AuthorizeSecurityGroupIngress",
        "RevokeSecurityGroupIngress",
        "CreateSecurityGroup",
        "CreateTags",
        "ModifyNetworkInterfaceAttribute",
        "ModifyInstanceMetadataOptions",
        "AllocateAddress",
    }
    for account in (OWN_ACCOUNT, LISTED_MEMBER):
        assert {operation for a, operation, _ in writes if a == account} >= expected
    assert {dry_run for _, _, dry_run in writes} == {True}
    assert hubs == {OWN_ACCOUNT, LISTED_MEMBER}
    assert outcome.reports == []  # no report written, so no alert either
