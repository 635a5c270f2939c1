"""Event-driven checks (docs/architecture.md §10) against moto, through functions/on_change/app.py as Lambda calls it:
an SQS batch whose message bodies are the EventBridge events of events/ (with the simulator's ids put in).

What is held: each event type re-checks exactly the instances it can have broken (and none other), untagged
instances are never touched, eic-guard's own changes are ignored, a batch on one region makes one DescribeInstances,
bad records are batch item failures while the good ones are done, and a second identical batch changes nothing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import boto3
import botocore.session
import pytest
from eic_guard.aws import clients as aws_clients
from eic_guard.aws.clients import AwsClients
from eic_guard.observability import logger as powertools_logger
from eic_guard.ranges.state import STATE_ITEM_ID, DynamoDbStateStore, RangesState
from eic_guard.settings import ENDPOINT_INSTANCE_GROUP_NAME
from eic_guard.simulated import Network, SimulatedAccount, member_session

from tests.aws_views import eni_groups, metadata_endpoint, primary_eni_id
from tests.conftest import REGION, create_state_table
from tests.faults.injector import FaultInjector
from tests.lambda_runtime import FakeLambdaContext, emf_blobs, event, load_handler

ACCOUNT = "123456789012"  # moto's default account: the function's own
MEMBER = "111111111111"
FOREIGN = "999999999999"
TABLE = "eic-guard-state"
TAG_KEY = "eic-guard:managed"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:eic-guard-on-change"
REQUEST_ID = "3c9a7e51-8f2d-4b6a-9c1e-5d7f0b2a4e68"
# The central stack's roles as the template passes them (GetAtt Role.Arn, which carries the role's path).
OWN_ROLES = (
    f"arn:aws:iam::{ACCOUNT}:role/eic-guard-OnChangeFunctionRole-1A2B3C4D5E6F",
    f"arn:aws:iam::{ACCOUNT}:role/service-role/eic-guard-ScanTargetFunctionRole-6F5E4D3C2B1A",
)
MANAGED_GROUP = "eic-guard-ssh"
AL2023_IMAGE = "ami-0a1b2c3d4e5f60718"


@pytest.fixture(autouse=True)
def no_ami_catalogue(monkeypatch):
    """Speed only: moto skips loading its catalogue of thousands of AMIs into each account (a second per test);
    `register_al2023` adds the one image the instances use."""
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")


def register_al2023(account_id: str = ACCOUNT) -> str:
    """An Amazon-owned AL2023 standard image in moto's EC2 backend of `account_id` (the API cannot register an image
    owned by another account)."""
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.amis import Ami

    backend = ec2_backends[account_id][REGION]
    backend.amis[AL2023_IMAGE] = Ami(
        backend,
        ami_id=AL2023_IMAGE,
        name="al2023-ami-2023.8.20250818.0-kernel-6.1-x86_64",
        owner_id="137112412989",
        owner_alias="amazon",
    )
    return AL2023_IMAGE


# ---- events --------------------------------------------------------------------------------------------------------
def sample(name: str) -> dict:
    return copy.deepcopy(event(name))


def state_change(instance_id: str, state: str = "pending", account: str = ACCOUNT, region: str = REGION) -> dict:
    body = sample("ec2-instance-state-change-aws-doc.json")
    body["detail"].update({"instance-id": instance_id, "state": state})
    body.update(account=account, region=region, resources=[f"arn:aws:ec2:{region}:{account}:instance/{instance_id}"])
    return body


def request_of(body: dict) -> dict:
    return body["detail"]["requestParameters"]


def run_instances(*instance_ids: str, opted_in: bool = True) -> dict:
    """The RunInstances sample for these instances: launched with the opt-in tag, or (`opted_in=False`) without."""
    body = sample("cloudtrail-run-instances.json")
    instances = body["detail"]["responseElements"]["instancesSet"]
    instances["items"] = [{**instances["items"][0], "instanceId": i} for i in instance_ids]
    if not opted_in:
        del request_of(body)["tagSpecificationSet"]
    return body


def create_tags(*resource_ids: str, key: str = TAG_KEY) -> dict:
    body = sample("cloudtrail-create-tags.json")
    request_of(body)["resourcesSet"]["items"] = [{"resourceId": r} for r in resource_ids]
    request_of(body)["tagSet"]["items"] = [{"key": key, "value": "true"}]
    return body


def api_call(name: str, **request: str) -> dict:
    """The sample of `name` (events/cloudtrail-<name>.json) with these flat request parameters."""
    body = sample(f"cloudtrail-{name}.json")
    request_of(body).update(request)
    return body


def metadata_options_event(instance_id: str) -> dict:
    body = sample("cloudtrail-modify-instance-metadata-options.json")
    request_of(body)["ModifyInstanceMetadataOptionsRequest"]["InstanceId"] = instance_id
    return body


def group_rules_event(group_id: str) -> dict:
    body = sample("cloudtrail-modify-security-group-rules.json")
    request_of(body)["ModifySecurityGroupRulesRequest"]["GroupId"] = group_id
    return body


def acl_association_event(acl_id: str, old: str, new: str) -> dict:
    body = api_call("replace-network-acl-association", networkAclId=acl_id, associationId=old)
    body["detail"]["responseElements"]["newAssociationId"] = new
    return body


def as_identity(body: dict, arn: str, issuer_arn: str | None = None) -> dict:
    """The event as if made by `arn` (a role session when `issuer_arn`, the role, is given)."""
    identity = body["detail"]["userIdentity"]
    identity["arn"] = arn
    if issuer_arn is None:
        identity.pop("sessionContext", None)
    else:
        identity["sessionContext"]["sessionIssuer"]["arn"] = issuer_arn
    return body


def message_id(n: int) -> str:
    return f"4f0c6a1e-2b3d-4e5f-8a9b-{n:012d}"


def sqs_event(*bodies: dict | str) -> dict:
    """An SQS → Lambda event like events/sqs-on-change-batch.json: one record per body (a str is sent as is)."""
    template = event("sqs-on-change-batch.json")["Records"][0]
    records = []
    for n, body in enumerate(bodies, start=1):
        text = body if isinstance(body, str) else json.dumps(body)
        records.append({**copy.deepcopy(template), "messageId": message_id(n), "body": text})
        records[-1]["md5OfBody"] = hashlib.md5(text.encode()).hexdigest()
    return {"Records": records}


# ---- the account ---------------------------------------------------------------------------------------------------
@dataclass
class Fleet:
    """A VPC with a public subnet (its own route table, a custom allow-all network ACL) and a private one (the main
    route table, the default ACL). `a` and `c` are drifted alike (metadata endpoint off, no SSH rule for EIC) in the
    public subnet, `a` opted in and `c` not; `b` is opted in, in the private subnet, with its own group."""

    net: Network
    a: str
    b: str
    c: str
    b_group: str
    acl: str
    account: object = field(repr=False)

    def untouched(self, ec2, instance_id: str) -> bool:
        """True while the instance has its launch groups and its metadata endpoint off."""
        return MANAGED_GROUP not in group_names(ec2, instance_id) and metadata_endpoint(ec2, instance_id) == "disabled"

    def fixed(self, ec2, instance_id: str) -> bool:
        return MANAGED_GROUP in group_names(ec2, instance_id) and metadata_endpoint(ec2, instance_id) == "enabled"


def group_names(ec2, instance_id: str) -> set[str]:
    ids = eni_groups(ec2, instance_id)
    return {g["GroupName"] for g in ec2.describe_security_groups(GroupIds=ids)["SecurityGroups"]}


def allow_all_acl(ec2, vpc_id: str) -> str:
    acl = ec2.create_network_acl(VpcId=vpc_id)["NetworkAcl"]["NetworkAclId"]
    for egress in (False, True):
        ec2.create_network_acl_entry(
            NetworkAclId=acl, RuleNumber=100, Protocol="-1", RuleAction="allow", Egress=egress, CidrBlock="0.0.0.0/0"
        )
    return acl


def acl_association(ec2, subnet_id: str) -> str:
    acls = ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])["NetworkAcls"]
    return next(a["NetworkAclAssociationId"] for acl in acls for a in acl["Associations"] if a["SubnetId"] == subnet_id)


def launch_drifted(account, subnet_id: str, group_id: str, opted_in: bool = True, count: int = 1) -> list[str]:
    return account.launch(
        image_id=AL2023_IMAGE,
        subnet_id=subnet_id,
        group_ids=[group_id],
        public_ip=True,
        imds="disabled",
        opted_in=opted_in,
        count=count,
    )


@pytest.fixture
def fleet(account, ec2) -> Fleet:
    register_al2023()
    net = account.network()
    acl = allow_all_acl(ec2, net.vpc_id)
    ec2.replace_network_acl_association(AssociationId=acl_association(ec2, net.public_subnet_id), NetworkAclId=acl)
    b_group = account.security_group(net, "b-app", [])
    (a,) = launch_drifted(account, net.public_subnet_id, net.app_group_id)
    (b,) = launch_drifted(account, net.private_subnet_id, b_group)
    (c,) = launch_drifted(account, net.public_subnet_id, net.app_group_id, opted_in=False)
    return Fleet(net, a, b, c, b_group, acl, account)


def ranges_state(ranges) -> RangesState:
    return RangesState(
        sync_token=ranges.sync_token,
        create_date=ranges.create_date,
        md5=ranges.md5,
        current={region: sorted(str(p) for p in prefixes.all) for region, prefixes in ranges.eic.items()},
    )


@pytest.fixture
def deployed(aws, monkeypatch, runs_bucket, ranges_2026) -> dict:
    """The on_change function's environment: the state table holding the 2026-08-22 EIC prefixes, the reports bucket,
    the alerts topic, eic-guard's own roles."""
    DynamoDbStateStore(create_state_table(TABLE), TABLE).save(ranges_state(ranges_2026), None)
    topic = boto3.client("sns", REGION).create_topic(Name="eic-guard-alerts")["TopicArn"]
    monkeypatch.setenv("EIC_GUARD_STATE_TABLE", TABLE)
    monkeypatch.setenv("EIC_GUARD_ALERTS_TOPIC_ARN", topic)
    monkeypatch.setenv("EIC_GUARD_OWN_ROLE_ARNS", ",".join(OWN_ROLES))
    return {"bucket": runs_bucket, "topic": topic}


@cache
def parsed_models():
    """botocore's loader, kept for the whole test session: it holds the parsed service models."""
    return botocore.session.Session().get_component("data_loader")


def container_clients() -> AwsClients:
    """The clients a Lambda container builds on its first invocation (aws.clients.lambda_clients), without parsing
    botocore's models again in every test (~0.6 s each): a new session, sharing the parsed models."""
    core = botocore.session.Session()
    core.register_component("data_loader", parsed_models())
    return AwsClients(boto3.Session(botocore_session=core))


@pytest.fixture
def invoke(deployed, monkeypatch) -> Callable[..., dict]:
    """Call the handler (functions/on_change/app.py, imported by path as Lambda does) with an SQS batch of `bodies`,
    as Lambda's SQS event source does. Calls of one test share one container."""
    handler = load_handler("on_change", "eic_guard_on_change_app")

    def call(*bodies) -> dict:
        if aws_clients._LAMBDA_CLIENTS is None:  # built here, after the test's recorders are installed
            monkeypatch.setattr(aws_clients, "_LAMBDA_CLIENTS", container_clients())
        context = FakeLambdaContext(
            function_name="eic-guard-on-change",
            invoked_function_arn=FUNCTION_ARN,
            aws_request_id=REQUEST_ID,
            remaining_ms=120_000,
        )
        return handler(sqs_event(*bodies), context)

    return call


class Logs(logging.Handler):
    """eic-guard's log records of the test, with their structured keys (the CLI tests may have raised the shared
    logger's level to WARNING: INFO while collecting)."""

    def __init__(self):
        super().__init__(level=logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, message: str) -> list[dict]:
        return [vars(r) for r in self.records if r.getMessage() == message]

    def batch_done(self) -> dict:
        """The handler's closing log line."""
        (line,) = self.lines("on-change batch done")
        return line


@pytest.fixture
def logs():
    collected = Logs()
    level = powertools_logger.log_level
    powertools_logger.setLevel("INFO")
    powertools_logger.addHandler(collected)
    yield collected
    powertools_logger.removeHandler(collected)
    powertools_logger.setLevel(level)


def no_call_but_identity(api_calls) -> bool:
    """No AWS call but the container's one GetCallerIdentity (its own account, asked once per container)."""
    return set(api_calls.names()) <= {"GetCallerIdentity"}


def failures(*numbers: int) -> dict:
    return {"batchItemFailures": [{"itemIdentifier": message_id(n)} for n in numbers]}


def reports(bucket: str) -> list[str]:
    return [o["Key"] for o in boto3.client("s3", REGION).list_objects_v2(Bucket=bucket).get("Contents", ())]


# ---- from event to fixed state --------------------------------------------------------------------------------------
def test_a_state_change_event_fixes_the_instance_and_stores_the_report(fleet, ec2, invoke, deployed, logs):
    # Given an opted-in instance with its metadata endpoint off and no SSH rule for EIC, just started
    assert fleet.untouched(ec2, fleet.a)

    # When its "pending" state-change event reaches the function
    response = invoke(state_change(fleet.a))

    # Then the record succeeds and the instance is fixed: the managed group attached, the metadata endpoint on
    assert response == failures()
    assert fleet.fixed(ec2, fleet.a)
    # And the report (schema v1) lies under reports/on-change/ with the instance fixed by the attach and the IMDS fix
    (key,) = reports(deployed["bucket"])
    assert key.startswith("reports/on-change/") and key.endswith(f"/{REQUEST_ID}.json")
    report = json.loads(boto3.client("s3", REGION).get_object(Bucket=deployed["bucket"], Key=key)["Body"].read())
    assert report["schema"] == "eic-guard/report/v1"
    (entry,) = report["instances"]
    assert (entry["instance_id"], entry["verdict"]) == (fleet.a, "fixed")
    assert entry["checks"]["eic-ssh-ingress"]["status"] == entry["checks"]["imds-enabled"]["status"] == "fixed"
    assert logs.batch_done()["checked"] == {message_id(1): [fleet.a]}


# ---- each event type → exactly the instances it can affect ---------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Fleet, object], dict]  # builds the event (making the change it reports, where it matters)
    expected: Callable[[Fleet], set[str]]
    tags_c: bool = False  # the event opts c in


def _tag_and_event(fleet: Fleet, ec2) -> dict:
    ec2.create_tags(Resources=[fleet.c], Tags=[{"Key": TAG_KEY, "Value": "true"}])
    return create_tags(fleet.c)


def _spare_group_deleted(fleet: Fleet, ec2) -> dict:
    spare = fleet.account.security_group(fleet.net, "spare", [])
    ec2.delete_security_group(GroupId=spare)  # AWS refuses to delete a group an interface uses
    return api_call("delete-security-group", groupId=spare)


def _private_subnet_moved_to_acl(fleet: Fleet, ec2) -> dict:
    old = acl_association(ec2, fleet.net.private_subnet_id)
    new = ec2.replace_network_acl_association(AssociationId=old, NetworkAclId=fleet.acl)["NewAssociationId"]
    return acl_association_event(fleet.acl, old, new)


def endpoint_event(name: str, vpc_id: str) -> dict:
    """CreateInstanceConnectEndpoint / DeleteInstanceConnectEndpoint as events/ has them, in `vpc_id`."""
    operation = "".join(part.title() for part in name.split("-"))
    body = sample(f"cloudtrail-{name}.json")
    answer = body["detail"]["responseElements"][f"{operation}Response"]["instanceConnectEndpoint"]
    answer["vpcId"] = vpc_id
    return body


CASES = [
    Case("state-change-pending", lambda f, _: state_change(f.a, "pending"), lambda f: {f.a}),
    Case("state-change-running", lambda f, _: state_change(f.b, "running"), lambda f: {f.b}),
    Case("run-instances", lambda f, _: run_instances(f.a, f.c), lambda f: {f.a}),
    Case("create-tags-opt-in", _tag_and_event, lambda f: {f.c}, tags_c=True),
    Case(
        "modify-network-interface-attribute",
        lambda f, ec2: api_call("modify-network-interface-attribute", networkInterfaceId=primary_eni_id(ec2, f.a)),
        lambda f: {f.a},
    ),
    Case(
        "modify-instance-attribute", lambda f, _: api_call("modify-instance-attribute", instanceId=f.b), lambda f: {f.b}
    ),
    Case("modify-instance-metadata-options", lambda f, _: metadata_options_event(f.a), lambda f: {f.a}),
    Case(
        "revoke-security-group-ingress",
        lambda f, _: api_call("revoke-security-group-ingress", groupId=f.net.app_group_id),
        lambda f: {f.a},  # c uses the group too, but is not opted in
    ),
    Case("modify-security-group-rules", lambda f, _: group_rules_event(f.b_group), lambda f: {f.b}),
    Case("delete-security-group", _spare_group_deleted, lambda f: set()),
    Case(
        "associate-route-table",
        lambda f, _: api_call(
            "associate-route-table", routeTableId=f.net.public_route_table_id, subnetId=f.net.public_subnet_id
        ),
        lambda f: {f.a},
    ),
    Case(
        "replace-route-explicit-table",
        lambda f, _: api_call("replace-route", routeTableId=f.net.public_route_table_id),
        lambda f: {f.a},
    ),
    Case(
        "delete-route-main-table",
        lambda f, _: api_call("delete-route", routeTableId=f.net.main_route_table_id),
        lambda f: {f.b},  # the private subnet has no explicit association: it follows the main table
    ),
    Case(
        "replace-network-acl-entry",
        lambda f, _: api_call("replace-network-acl-entry", networkAclId=f.acl),
        lambda f: {f.a},
    ),
    Case("replace-network-acl-association", _private_subnet_moved_to_acl, lambda f: {f.b}),
    # issue 16: the rest of what can break the network path
    Case(
        "create-network-acl-entry",
        lambda f, _: api_call("create-network-acl-entry", networkAclId=f.acl),
        lambda f: {f.a},
    ),
    Case(
        "delete-network-acl-entry",
        lambda f, _: api_call("delete-network-acl-entry", networkAclId=f.acl),
        lambda f: {f.a},
    ),
    Case(
        "replace-route-table-association",
        lambda f, _: api_call("replace-route-table-association", routeTableId=f.net.public_route_table_id),
        lambda f: {f.a},
    ),
    Case(
        "detach-internet-gateway",
        lambda f, _: api_call("detach-internet-gateway", vpcId=f.net.vpc_id),
        lambda f: {f.a, f.b},  # every opted-in instance of the VPC
    ),
    # an association that no longer exists names nothing to follow: every opted-in instance of the region
    Case("disassociate-address", lambda f, _: api_call("disassociate-address"), lambda f: {f.a, f.b}),
    Case("disassociate-route-table", lambda f, _: api_call("disassociate-route-table"), lambda f: {f.a, f.b}),
    # docs/architecture.md §13: an endpoint appeared in or went from the VPC - its every opted-in instance
    Case(
        "create-instance-connect-endpoint",
        lambda f, _: endpoint_event("create-instance-connect-endpoint", f.net.vpc_id),
        lambda f: {f.a, f.b},
    ),
    Case(
        "delete-instance-connect-endpoint",
        lambda f, _: endpoint_event("delete-instance-connect-endpoint", f.net.vpc_id),
        lambda f: {f.a, f.b},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_event_type_rechecks_exactly_the_instances_it_can_affect(case, fleet, ec2, invoke, api_calls, logs):
    # Given the fleet and the change the event reports
    body = case.make(fleet, ec2)
    api_calls.clear()

    # When the event reaches the function
    response = invoke(body)

    # Then it succeeds, and exactly the expected opted-in instances were checked
    assert response == failures()
    assert logs.batch_done()["checked"] == {message_id(1): sorted(case.expected(fleet))}
    # And the not-opted-in instance is untouched (unless the event opted it in), and so is every opted-in instance
    # the event cannot have affected (b is never fixed: its subnet has no internet route, so it is only reported)
    assert fleet.untouched(ec2, fleet.c) is not case.tags_c
    assert fleet.fixed(ec2, fleet.a) is (fleet.a in case.expected(fleet))
    assert fleet.untouched(ec2, fleet.b)
    if not case.expected(fleet):
        assert api_calls.writes() == [] and api_calls.count("DescribeInstances") == 0


def test_a_new_endpoint_puts_the_vpcs_private_instance_on_its_path_and_fixes_it(fleet, ec2, invoke, logs, deployed):
    # Given a private opted-in instance (no public IPv4, metadata endpoint off) in the VPC's private subnet, and an
    # EC2 Instance Connect Endpoint someone just created there with a group of their own
    [private] = fleet.account.launch(
        image_id=AL2023_IMAGE,
        subnet_id=fleet.net.private_subnet_id,
        group_ids=[fleet.b_group],
        public_ip=False,
        imds="disabled",
    )
    endpoint_group = fleet.account.security_group(fleet.net, "their-endpoint", [])
    fleet.account.instance_connect_endpoint(fleet.net.private_subnet_id, [endpoint_group], tags={"Owner": "net-team"})

    # When the endpoint's CreateInstanceConnectEndpoint event reaches the function (remediate mode)
    response = invoke(endpoint_event("create-instance-connect-endpoint", fleet.net.vpc_id))

    # Then the VPC's opted-in instances were checked, and the private one now takes the endpoint path: the
    # endpoint's group may reach it on TCP 22 through eic-guard-eice-ssh, and its metadata endpoint is on
    assert response == failures()
    assert logs.batch_done()["checked"] == {message_id(1): sorted({fleet.a, fleet.b, private})}
    assert ENDPOINT_INSTANCE_GROUP_NAME in group_names(ec2, private)
    assert metadata_endpoint(ec2, private) == "enabled"
    (report,) = [
        json.loads(boto3.client("s3", REGION).get_object(Bucket=deployed["bucket"], Key=k)["Body"].read())
        for k in reports(deployed["bucket"])
    ]
    (entry,) = [e for e in report["instances"] if e["instance_id"] == private]
    assert (entry["connect_path"], entry["verdict"]) == ("endpoint", "fixed")
    assert entry["checks"]["endpoint-ssh-ingress"]["status"] == "fixed"
    # And the endpoint eic-guard does not own is left as it is: no group of eic-guard on it
    (endpoint,) = ec2.describe_instance_connect_endpoints()["InstanceConnectEndpoints"]
    assert endpoint["SecurityGroupIds"] == [endpoint_group]


def test_an_untagged_instance_named_by_events_is_never_touched(fleet, ec2, invoke, api_calls, logs, deployed):
    # Given events that name only the instance that is not opted in
    bodies = [state_change(fleet.c), metadata_options_event(fleet.c), run_instances(fleet.c, opted_in=False)]

    # When they reach the function
    response = invoke(*bodies)

    # Then they succeed with nothing checked, nothing written and no report
    assert response == failures()
    assert logs.batch_done()["checked"] == {message_id(n): [] for n in (1, 2, 3)}
    assert api_calls.writes() == []
    assert fleet.untouched(ec2, fleet.c)
    assert reports(deployed["bucket"]) == []


def test_a_tag_change_that_is_not_the_opt_in_tag_checks_nothing(fleet, invoke, api_calls, logs):
    # Given a CreateTags event that adds a Name tag to an opted-in instance
    # When it reaches the function
    response = invoke(create_tags(fleet.a, key="Name"))

    # Then it is ignored without an EC2 call (the container's one GetCallerIdentity aside)
    assert response == failures()
    (line,) = logs.lines("change event ignored")
    assert line["why"] == f"no {TAG_KEY} tag among the tags"
    assert no_call_but_identity(api_calls)


# ---- loop prevention -----------------------------------------------------------------------------------------------
MEMBER_SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/eic-guard-member/eic-guard-6f1d2c3b-0a9e-4e8f-b7d6-5c4b3a291807"


@pytest.mark.parametrize(
    "identity",
    [
        pytest.param((MEMBER_SESSION, f"arn:aws:iam::{ACCOUNT}:role/eic-guard-member"), id="member-role-session"),
        pytest.param(
            (
                f"arn:aws:sts::{ACCOUNT}:assumed-role/eic-guard-OnChangeFunctionRole-1A2B3C4D5E6F/eic-guard-on-change",
                None,
            ),
            id="own-role-session-without-session-context",
        ),
        pytest.param(
            (
                f"arn:aws:sts::{ACCOUNT}:assumed-role/eic-guard-ScanTargetFunctionRole-6F5E4D3C2B1A/eic-guard-scan",
                OWN_ROLES[1],
            ),
            id="own-role-with-path",
        ),
    ],
)
def test_an_event_made_by_eic_guard_is_ignored(identity, fleet, ec2, invoke, api_calls, logs):
    # Given eic-guard's own change to the opted-in instance's interface (the sample made by the member role session)
    body = sample("cloudtrail-modify-network-interface-attribute-by-eic-guard.json")
    request_of(body)["networkInterfaceId"] = primary_eni_id(ec2, fleet.a)
    as_identity(body, *identity)
    api_calls.clear()

    # When it reaches the function
    response = invoke(body)

    # Then it succeeds without an EC2 call, the instance left as it is: no loop
    assert response == failures()
    (line,) = logs.lines("change event ignored")
    assert line["why"].startswith("made by eic-guard")
    assert no_call_but_identity(api_calls)
    assert fleet.untouched(ec2, fleet.a)


def test_the_same_change_made_by_a_person_is_checked(fleet, ec2, invoke):
    # Given the same event made by another session of the member role, whose name is not eic-guard's
    body = sample("cloudtrail-modify-network-interface-attribute-by-eic-guard.json")
    request_of(body)["networkInterfaceId"] = primary_eni_id(ec2, fleet.a)
    as_identity(
        body, MEMBER_SESSION.replace("eic-guard-6f1d", "alice-6f1d"), f"arn:aws:iam::{ACCOUNT}:role/eic-guard-member"
    )

    # When it reaches the function
    response = invoke(body)

    # Then the instance is checked and fixed
    assert response == failures()
    assert fleet.fixed(ec2, fleet.a)


# ---- coalescing ----------------------------------------------------------------------------------------------------
def test_a_batch_of_ten_events_on_one_region_makes_one_describe_instances(account, fleet, ec2, invoke, api_calls, logs):
    # Given four more drifted opted-in instances, and ten events about them and a
    d, e, f, g = launch_drifted(account, fleet.net.public_subnet_id, fleet.net.app_group_id, count=4)
    bodies = [
        run_instances(d, e, f, g),
        state_change(d, "pending"),
        state_change(e, "pending"),
        state_change(f, "pending"),
        state_change(g, "pending"),
        state_change(d, "running"),
        state_change(e, "running"),
        create_tags(f),
        metadata_options_event(g),
        api_call("modify-instance-attribute", instanceId=fleet.a),
    ]
    api_calls.clear()

    # When they arrive as one batch
    response = invoke(*bodies)

    # Then one DescribeInstances reads the five instances, and every one is fixed
    assert response == failures()
    assert api_calls.count("DescribeInstances") == 1
    (describe,) = [params for name, params in api_calls.calls if name == "DescribeInstances"]
    (ids,) = [f["Values"] for f in describe["Filters"] if f["Name"] == "instance-id"]
    assert sorted(ids) == sorted([fleet.a, d, e, f, g])
    assert all(fleet.fixed(ec2, i) for i in (fleet.a, d, e, f, g))
    # And every other read is one call too (two for groups: the instances' own, then the VPC's managed group by name)
    reads = Counter(n for n in api_calls.names() if n.startswith("Describe"))
    assert reads == {
        "DescribeInstances": 1,
        "DescribeSecurityGroups": 2,
        "DescribeImages": 1,
        "DescribeRouteTables": 1,
        "DescribeNetworkAcls": 1,
        "DescribeInstanceConnectEndpoints": 1,  # the endpoint path: one paginated describe per (account, region)
        "DescribeManagedPrefixLists": 1,
        "DescribeNetworkInterfaces": 1,  # the attach re-reads the interfaces' groups just before writing
    }
    assert len(logs.batch_done()["checked"]) == 10


def test_network_events_are_resolved_once_per_kind_for_the_whole_batch(fleet, ec2, invoke, api_calls):
    # Given route, ACL and group events of one region in one batch
    bodies = [
        api_call("replace-route", routeTableId=fleet.net.public_route_table_id),
        api_call("delete-route", routeTableId=fleet.net.main_route_table_id),
        api_call("replace-network-acl-entry", networkAclId=fleet.acl),
        api_call("revoke-security-group-ingress", groupId=fleet.net.app_group_id),
        group_rules_event(fleet.b_group),
    ]
    api_calls.clear()

    # When they arrive together
    assert invoke(*bodies) == failures()

    # Then each kind of lookup is one call: the route tables by id (and the main table's VPC), the ACLs, the groups'
    # interfaces, the instances by subnet and by VPC, then the scan's one DescribeInstances
    lookups = [n for n in api_calls.names() if n in ("DescribeRouteTables", "DescribeNetworkAcls", "DescribeInstances")]
    assert lookups.count("DescribeNetworkAcls") == 2  # the resolution's, then the scan's
    assert lookups.count("DescribeRouteTables") == 3  # by id, the main table's VPC, then the scan's
    assert lookups.count("DescribeInstances") == 3  # by subnet, by VPC (main table), then the scan's by id
    assert fleet.fixed(ec2, fleet.a)


# ---- bad input -----------------------------------------------------------------------------------------------------
def test_a_mixed_batch_processes_the_good_records_and_fails_each_bad_one(account, fleet, ec2, invoke, logs):
    # Given an instance that no longer exists, and a batch mixing good and bad records
    (gone,) = launch_drifted(account, fleet.net.public_subnet_id, fleet.net.app_group_id)
    ec2.terminate_instances(InstanceIds=[gone])
    unknown_call = sample("cloudtrail-delete-route.json")
    unknown_call["detail"]["eventName"] = "TerminateInstances"
    launched_nothing = run_instances(fleet.a)
    del launched_nothing["detail"]["responseElements"]["instancesSet"]
    bodies = [
        state_change(fleet.a),  # 1 good
        "{not json",  # 2 malformed
        json.dumps({"hello": "world"}),  # 3 not an EventBridge event
        unknown_call,  # 4 an API call eic-guard does not take
        state_change(fleet.a, account=FOREIGN),  # 5 a foreign account
        state_change(gone),  # 6 an instance that no longer exists: nothing to do
        launched_nothing,  # 7 a CloudTrail record without the ids it must carry
    ]

    # When the batch reaches the function
    response = invoke(*bodies)

    # Then each bad record, and only those, is a batch item failure, each with one clear log line
    assert response == failures(2, 3, 4, 5, 7)
    lines = {line["message_id"]: line["reason"] for line in logs.lines("change event failed")}
    assert sorted(lines) == [message_id(n) for n in (2, 3, 4, 5, 7)]
    assert lines[message_id(2)].startswith("malformed event: not an EventBridge event")
    assert lines[message_id(4)] == "malformed event: eventName 'TerminateInstances' is not one eic-guard checks after"
    assert lines[message_id(5)] == f"foreign account {FOREIGN}: not in EIC_GUARD_ACCOUNTS"
    assert "instancesSet.items is missing" in lines[message_id(7)]
    # And the good ones are done: a fixed, the vanished instance simply absent; nothing else changed
    assert logs.batch_done()["checked"] == {message_id(1): [fleet.a], message_id(6): []}
    assert fleet.fixed(ec2, fleet.a)
    assert fleet.untouched(ec2, fleet.c) and fleet.untouched(ec2, fleet.b)


def test_a_batch_of_only_bad_records_fails_every_record_without_raising(invoke, api_calls):
    # Given a batch in which no record can be used
    # When it reaches the function
    response = invoke("", "[]", state_change("i-0123456789abcdef0", account=FOREIGN))

    # Then every record is a failure (the queue redelivers them, then the dead-letter queue keeps them); no EC2 call
    assert response == failures(1, 2, 3)
    assert no_call_but_identity(api_calls)


def test_an_unreadable_ip_ranges_state_fails_the_records_to_check(fleet, ec2, invoke, logs):
    # Given the state table gone
    boto3.client("dynamodb", REGION).delete_table(TableName=TABLE)

    # When an event arrives
    response = invoke(state_change(fleet.a))

    # Then its record fails (to be delivered again) and nothing is changed
    assert response == failures(1)
    (line,) = logs.lines("change event failed")
    assert line["reason"].startswith("the ip-ranges state cannot be read")
    assert fleet.untouched(ec2, fleet.a)


def test_a_corrupt_ip_ranges_state_fails_the_records_to_check_naming_what_is_wrong(fleet, ec2, invoke, logs):
    # Given a state item that is valid JSON with a prefix that is not a CIDR
    document = json.dumps({"sync_token": "1787411825", "current": {REGION: ["1.2.3.4/33"]}})
    boto3.client("dynamodb", REGION).put_item(
        TableName=TABLE,
        Item={"id": {"S": STATE_ITEM_ID}, "sync_token": {"S": "1787411825"}, "document": {"S": document}},
    )

    # When an event arrives
    response = invoke(state_change(fleet.a))

    # Then its record fails (delivered again once the nightly run or a refresh has rebuilt the state), nothing changed
    assert response == failures(1)
    (line,) = logs.lines("change event failed")
    assert line["reason"] == (
        "the ip-ranges state is corrupt (current: '1.2.3.4/33' is not a CIDR prefix: '1.2.3.4/33' does not appear "
        "to be an IPv4 or IPv6 network): the nightly run or a refresh rebuilds it"
    )
    assert fleet.untouched(ec2, fleet.a)


def test_an_event_outside_the_configured_regions_is_ignored(fleet, invoke, api_calls, logs):
    # Given an event from a region eic-guard does not scan
    # When it reaches the function
    response = invoke(state_change(fleet.a, region="eu-west-1"))

    # Then it is ignored, no EC2 call
    assert response == failures()
    assert logs.lines("change event ignored")[0]["why"] == "region eu-west-1 is not in EIC_GUARD_REGIONS"
    assert no_call_but_identity(api_calls)


def test_a_second_identical_batch_changes_nothing(fleet, ec2, invoke, api_calls, deployed):
    # Given a batch that fixed an instance
    batch = [state_change(fleet.a), metadata_options_event(fleet.a)]
    assert invoke(*batch) == failures()
    assert fleet.fixed(ec2, fleet.a)
    stored = reports(deployed["bucket"])
    api_calls.clear()

    # When the same batch arrives again (SQS delivers at least once)
    response = invoke(*batch)

    # Then it succeeds without a single write, and stores no report (nothing changed, nothing wrong)
    assert response == failures()
    assert api_calls.writes() == []
    assert reports(deployed["bucket"]) == stored


# ---- mode, alerts, metrics -----------------------------------------------------------------------------------------
def test_report_mode_plans_the_fixes_and_alerts(fleet, ec2, invoke, api_calls, monkeypatch, deployed):
    # Given report mode
    monkeypatch.setenv("EIC_GUARD_MODE", "report")

    # When an event about the drifted instance arrives
    response = invoke(state_change(fleet.a))

    # Then no EC2 write is made: the report plans the fixes, and the alert says the instance needs attention
    assert response == failures()
    assert [n for n in api_calls.writes() if n not in ("PutObject", "Publish")] == []
    assert api_calls.count("Publish") == 1
    assert fleet.untouched(ec2, fleet.a)
    (key,) = reports(deployed["bucket"])
    report = json.loads(boto3.client("s3", REGION).get_object(Bucket=deployed["bucket"], Key=key)["Body"].read())
    assert report["instances"][0]["checks"]["imds-enabled"]["status"] == "would-fix"


def test_an_instance_that_stays_noncompliant_raises_one_alert(fleet, invoke, api_calls):
    # Given an opted-in instance in a subnet without an internet route (eic-guard cannot fix that)
    # When its state-change event arrives
    response = invoke(state_change(fleet.b))

    # Then one alert names it
    assert response == failures()
    (publish,) = [params for name, params in api_calls.calls if name == "Publish"]
    assert fleet.b in publish["Message"]
    assert publish["Subject"] == "eic-guard: 1 instance(s) need attention after a change"


def test_metrics_have_their_own_trigger_and_never_scan_completed(fleet, invoke, capsys):
    # Given a batch with one event to check and one to ignore
    # When it reaches the function
    invoke(state_change(fleet.a), create_tags(fleet.a, key="Name"))

    # Then the summary counters carry Trigger=on-change, the event counts are OnChange*, and no ScanCompleted
    blobs = emf_blobs(capsys.readouterr().out)
    (summary,) = [b for b in blobs if "InstancesScanned" in b]
    assert summary["Trigger"] == "on-change"
    assert (summary["InstancesScanned"], summary["InstancesFixed"]) == ([1.0], [1.0])
    (counts,) = [b for b in blobs if "OnChangeEvents" in b]
    assert (counts["OnChangeEvents"], counts["OnChangeEventsIgnored"], counts["OnChangeChecks"]) == (
        [2.0],
        [1.0],
        [1.0],
    )
    assert "Trigger" not in counts
    assert not [b for b in blobs if "ScanCompleted" in b]


# ---- member accounts -----------------------------------------------------------------------------------------------
def test_a_member_account_event_is_checked_through_the_member_role(deployed, invoke, api_calls, monkeypatch):
    # Given a configured member account with a drifted opted-in instance
    monkeypatch.setenv("EIC_GUARD_ACCOUNTS", MEMBER)
    member = SimulatedAccount.of(member_session(MEMBER, "eic-guard-member"), REGION)
    register_al2023(MEMBER)
    net = member.network()
    (instance,) = launch_drifted(member, net.public_subnet_id, net.app_group_id)
    api_calls.clear()

    # When its event reaches the function
    response = invoke(state_change(instance, account=MEMBER))

    # Then the function enters the account through the member role, under an eic-guard session, and fixes it
    assert response == failures()
    (assume,) = [params for name, params in api_calls.calls if name == "AssumeRole"]
    assert assume["RoleArn"] == f"arn:aws:iam::{MEMBER}:role/eic-guard-member"
    assert assume["RoleSessionName"] == f"eic-guard-{REQUEST_ID}"
    assert MANAGED_GROUP in group_names(member.ec2, instance)
    assert metadata_endpoint(member.ec2, instance) == "enabled"


def test_a_member_account_that_cannot_be_entered_fails_only_its_records(
    fleet, ec2, invoke, api_calls, monkeypatch, logs
):
    # Given a member account whose role STS refuses, and a batch with an event from it and one from this account
    monkeypatch.setenv("EIC_GUARD_ACCOUNTS", f"{ACCOUNT},{MEMBER}")
    FaultInjector().install(monkeypatch).error("AssumeRole", "AccessDenied", service="sts")

    # When the batch arrives
    response = invoke(state_change("i-0123456789abcdef0", account=MEMBER), state_change(fleet.a))

    # Then the member's record fails, naming the account; this account's instance is fixed
    assert response == failures(1)
    (line,) = logs.lines("change event failed")
    assert line["reason"].startswith(f"{MEMBER}/{REGION} not checked: cannot enter account {MEMBER}")
    assert fleet.fixed(ec2, fleet.a)
    # And no alert: the failed record is delivered again, then kept by the dead-letter queue (whose alarm alerts)
    assert api_calls.count("Publish") == 0


# ---- Security Hub ---------------------------------------------------------------------------------------------------
def test_findings_are_imported_for_the_checked_instances_only(fleet, invoke, api_calls, monkeypatch):
    # Given Security Hub findings enabled, and an event about b (which stays non-compliant: no internet route)
    monkeypatch.setenv("EIC_GUARD_SECURITY_HUB_FINDINGS", "enabled")

    # When the event reaches the function
    response = invoke(state_change(fleet.b))

    # Then b's failing checks are imported as findings, and only b's
    assert response == failures()
    imports = [params for name, params in api_calls.calls if name == "BatchImportFindings"]
    findings = [f for params in imports for f in params["Findings"]]
    assert findings and all(f["Id"].startswith(f"eic-guard/{ACCOUNT}/{REGION}/{fleet.b}/") for f in findings)
    assert {f["Compliance"]["Status"] for f in findings} == {"FAILED"}


# ---- the opt-in tag is an access boundary (issue 16) ---------------------------------------------------------------
def alerts_sent(api_calls) -> list[dict]:
    return [params for name, params in api_calls.calls if name == "Publish"]


@pytest.mark.parametrize("key", [TAG_KEY, "EIC-Guard:Managed"], ids=["as-configured", "other-letter-case"])
def test_adding_the_opt_in_tag_is_alerted_naming_who_added_it(fleet, ec2, invoke, api_calls, deployed, key):
    # Given a person's role session tagging the instance that was not opted in, with the opt-in key in some letter case
    ec2.create_tags(Resources=[fleet.c], Tags=[{"Key": key, "Value": "true"}])
    body = create_tags(fleet.c, key=key)
    actor = body["detail"]["userIdentity"]["arn"]

    # When its CreateTags event reaches the function
    response = invoke(body)

    # Then one alert names the instance, the tag as written, the caller and the time, whatever the check found
    assert response == failures()
    [alert] = [a for a in alerts_sent(api_calls) if "opt-in tag" in a["Subject"]]
    assert alert["Subject"] == "eic-guard: the opt-in tag was added to 1 instance(s)"
    assert f"{fleet.c} ({ACCOUNT} {REGION}): {key}=true added by {actor} at 2026-08-22T15:" in alert["Message"]
    assert alert["TopicArn"] == deployed["topic"]


def test_an_opt_in_by_eic_guard_itself_or_another_tag_is_not_alerted(fleet, invoke, api_calls, deployed):
    # Given a CreateTags of another tag, and one of the opt-in tag made by eic-guard's own role
    other = create_tags(fleet.c, key="Owner")
    own = as_identity(create_tags(fleet.c), f"arn:aws:sts::{ACCOUNT}:assumed-role/x/y", OWN_ROLES[0])

    # When they reach the function
    invoke(other, own)

    # Then no opt-in alert goes out
    assert [a for a in alerts_sent(api_calls) if "opt-in tag" in a["Subject"]] == []


def test_with_security_hub_an_opt_in_is_also_a_finding_in_the_instances_account(
    fleet, ec2, invoke, api_calls, monkeypatch
):
    # Given Security Hub findings enabled, and the opt-in tag added to an instance
    monkeypatch.setenv("EIC_GUARD_SECURITY_HUB_FINDINGS", "enabled")
    boto3.client("securityhub", REGION).enable_security_hub(EnableDefaultStandards=False)
    ec2.create_tags(Resources=[fleet.c], Tags=[{"Key": TAG_KEY, "Value": "true"}])
    body = create_tags(fleet.c)

    # When its event reaches the function
    invoke(body)

    # Then a LOW finding about that instance names the caller, and is not a compliance check
    found = boto3.client("securityhub", REGION).get_findings()["Findings"]
    [finding] = [f for f in found if f["GeneratorId"] == "eic-guard/opt-in"]
    assert finding["Id"] == f"eic-guard/{ACCOUNT}/{REGION}/{fleet.c}/opt-in/{body['detail']['eventID']}"
    assert finding["Resources"][0]["Id"] == f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{fleet.c}"
    assert finding["ProductFields"]["eic-guard/Actor"] == body["detail"]["userIdentity"]["arn"]
    assert finding["FindingProviderFields"]["Severity"] == {"Label": "LOW"}
    assert "Compliance" not in finding


# ---- member accounts' events (issue 16) -----------------------------------------------------------------------------
def test_in_organization_mode_only_the_organizations_accounts_events_are_admitted(fleet, invoke, logs, monkeypatch):
    # Given organization mode, an organization with one member account, and an account outside it
    monkeypatch.setenv("EIC_GUARD_ACCOUNTS", "organization")
    organizations = boto3.client("organizations", REGION)
    organizations.create_organization(FeatureSet="ALL")
    member = organizations.create_account(Email="member@example.com", AccountName="member")["CreateAccountStatus"][
        "AccountId"
    ]

    # When an event of each reaches the function
    response = invoke(state_change("i-0123456789abcdef0", account=member), state_change(fleet.a, account=FOREIGN))

    # Then the member's is admitted (its account entered, its instance absent there) and the outsider's fails
    assert response == failures(2)
    [line] = logs.lines("change event failed")
    assert line["reason"] == f"foreign account {FOREIGN}: not an ACTIVE account of the organization"
    assert logs.batch_done()["checked"] == {message_id(1): []}
