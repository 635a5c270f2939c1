"""Reading the change events (docs/architecture.md §10) from the SQS message body: every sample of events/ gives the
resources it names, the events that need no check say why, and anything else is a bad record with a clear reason
(pure)."""

from __future__ import annotations

import copy
import json

import pytest
from eic_guard.changes.events import Actor, parse_change
from eic_guard.events import InvalidEvent

from tests.conftest import EVENTS
from tests.lambda_runtime import event

TAG_KEY = "eic-guard:managed"
INSTANCE = "i-0b22a22eec53b9321"
GROUP = "sg-0c8f3a1e5b2d74a96"
PERSON = Actor("arn:aws:sts::123456789012:assumed-role/Admin/alice", "arn:aws:iam::123456789012:role/Admin")


def parse(body) -> object:
    return parse_change(json.dumps(body) if isinstance(body, dict) else body, TAG_KEY)


# ---- every sample ----------------------------------------------------------------------------------------------------
SAMPLES = {
    "ec2-instance-state-change-aws-doc.json": ("state-change:pending", {"instance_ids": ("i-1234567890abcdef0",)}),
    "cloudtrail-run-instances.json": ("RunInstances", {"instance_ids": (INSTANCE,)}),
    "cloudtrail-create-tags.json": ("CreateTags", {"instance_ids": (INSTANCE,)}),
    "cloudtrail-modify-network-interface-attribute.json": (
        "ModifyNetworkInterfaceAttribute",
        {"interface_ids": ("eni-0e3f1a9c6b7d24a51",)},
    ),
    "cloudtrail-modify-instance-attribute.json": ("ModifyInstanceAttribute", {"instance_ids": (INSTANCE,)}),
    "cloudtrail-modify-instance-metadata-options.json": (
        "ModifyInstanceMetadataOptions",
        {"instance_ids": (INSTANCE,)},
    ),
    "cloudtrail-revoke-security-group-ingress.json": ("RevokeSecurityGroupIngress", {"group_ids": (GROUP,)}),
    "cloudtrail-modify-security-group-rules.json": ("ModifySecurityGroupRules", {"group_ids": (GROUP,)}),
    "cloudtrail-delete-security-group.json": ("DeleteSecurityGroup", {"group_ids": (GROUP,)}),
    "cloudtrail-associate-route-table.json": ("AssociateRouteTable", {"subnet_ids": ("subnet-0f1e2d3c4b5a69788",)}),
    "cloudtrail-replace-route.json": ("ReplaceRoute", {"route_table_ids": ("rtb-0d4c6b8a2e1f39577",)}),
    "cloudtrail-delete-route.json": ("DeleteRoute", {"route_table_ids": ("rtb-0d4c6b8a2e1f39577",)}),
    "cloudtrail-replace-network-acl-entry.json": (
        "ReplaceNetworkAclEntry",
        {"network_acl_ids": ("acl-0e7d5c3b1a9f84622",)},
    ),
    "cloudtrail-replace-network-acl-association.json": (
        "ReplaceNetworkAclAssociation",
        {"network_acl_ids": ("acl-0e7d5c3b1a9f84622",), "acl_association_ids": ("aclassoc-0e4f6a8b0c2d35791",)},
    ),
    # issue 16: the rest of what can break the network path, and the opt-in tag in another letter case
    "cloudtrail-create-network-acl-entry.json": (
        "CreateNetworkAclEntry",
        {"network_acl_ids": ("acl-0e7d5c3b1a9f84622",)},
    ),
    "cloudtrail-delete-network-acl-entry.json": (
        "DeleteNetworkAclEntry",
        {"network_acl_ids": ("acl-0e7d5c3b1a9f84622",)},
    ),
    "cloudtrail-replace-route-table-association.json": (
        "ReplaceRouteTableAssociation",
        {"route_table_ids": ("rtb-0a9b8c7d6e5f40312",)},
    ),
    "cloudtrail-disassociate-address.json": ("DisassociateAddress", {"whole_region": True}),
    "cloudtrail-disassociate-route-table.json": ("DisassociateRouteTable", {"whole_region": True}),
    "cloudtrail-detach-internet-gateway.json": ("DetachInternetGateway", {"vpc_ids": ("vpc-0a1b2c3d4e5f67890",)}),
    "cloudtrail-create-tags-other-case.json": (
        "CreateTags",
        {"instance_ids": (INSTANCE,), "opted_in": (INSTANCE,), "opt_in_tag": ("EIC-Guard:Managed", "true")},
    ),
    # docs/architecture.md §13: an endpoint appeared in or went from a VPC - every opted-in instance of it
    "cloudtrail-create-instance-connect-endpoint.json": (
        "CreateInstanceConnectEndpoint",
        {"vpc_ids": ("vpc-0a1b2c3d4e5f67890",)},
    ),
    "cloudtrail-delete-instance-connect-endpoint.json": (
        "DeleteInstanceConnectEndpoint",
        {"vpc_ids": ("vpc-0a1b2c3d4e5f67890",)},
    ),
    # its answer is only `true`: the region's opted-in instances
    "cloudtrail-modify-instance-connect-endpoint.json": ("ModifyInstanceConnectEndpoint", {"whole_region": True}),
}
SAMPLES["cloudtrail-run-instances.json"][1].update(opted_in=(INSTANCE,), opt_in_tag=(TAG_KEY, "true"))
SAMPLES["cloudtrail-create-tags.json"][1].update(opted_in=(INSTANCE,), opt_in_tag=(TAG_KEY, "true"))
NAMED = ("instance_ids", "interface_ids", "group_ids", "group_names", "route_table_ids", "subnet_ids")
NAMED += ("network_acl_ids", "acl_association_ids", "vpc_ids", "whole_region", "opted_in", "opt_in_tag")


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_sample_names_the_resources_it_changed(name):
    # Given a sample event as the queue delivers it (the message body is the EventBridge event's JSON text)
    body = (EVENTS / name).read_text()

    # When it is read
    change = parse(body)

    # Then it is the sample's call, in its account and region, naming exactly these resources, to be checked
    expected_name, expected = SAMPLES[name]
    assert (change.name, change.account_id, change.region, change.skip) == (
        expected_name,
        "123456789012",
        "us-east-1",
        None,
    )
    assert {k: getattr(change, k) for k in NAMED if getattr(change, k)} == expected


def test_every_cloudtrail_sample_of_events_is_read_here():
    # Given the CloudTrail samples of events/
    names = {p.name for p in EVENTS.glob("cloudtrail-*.json")} - {
        "cloudtrail-modify-network-interface-attribute-by-eic-guard.json"
    }

    # Then each is one of the samples above (a new sample is a new call the reader must know)
    assert sorted(names - set(SAMPLES)) == []


@pytest.mark.parametrize(
    ("tags", "opted_in"),
    [
        ([{"key": "eic-guard:managed", "value": "true"}], True),
        ([{"key": "EIC-GUARD:MANAGED", "value": "true"}], True),
        ([{"key": "eic-guard:managed", "value": "True"}], False),
        ([{"key": "eic-guard:managed", "value": "false"}], False),
    ],
)
def test_the_opt_in_tag_is_recognized_in_any_letter_case_with_the_exact_value(tags, opted_in):
    # Given a CreateTags of the opt-in key as IAM matches condition keys (any letter case) and values (exactly)
    body = copy.deepcopy(event("cloudtrail-create-tags.json"))
    body["detail"]["requestParameters"]["tagSet"]["items"] = tags

    # When it is read
    change = parse(body)

    # Then the instance is checked either way, and counted as opted in (an access boundary change) only when the
    # ConnectPolicy's condition would hold for it
    assert change.instance_ids == (INSTANCE,)
    assert change.opted_in == ((INSTANCE,) if opted_in else ())


def test_the_caller_of_an_api_call_is_its_session_and_role():
    # Given the RunInstances sample, made by a person's role session
    # When it is read
    change = parse(event("cloudtrail-run-instances.json"))

    # Then the actor is the session ARN and the role that issued it
    assert change.actor == PERSON
    assert change.event_id == "7e1f4b2a-0001-4c3d-9e8f-0a1b2c3d4e5f"


# ---- events that need no check -----------------------------------------------------------------------------------
def with_detail(name: str, **detail) -> dict:
    body = copy.deepcopy(event(name))
    body["detail"].update(detail)
    return body


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (with_detail("ec2-instance-state-change-aws-doc.json", state="stopped"), "state stopped is not checked"),
        (
            with_detail("cloudtrail-modify-instance-metadata-options.json", errorCode="Client.UnauthorizedOperation"),
            "the call failed (Client.UnauthorizedOperation)",
        ),
        (
            with_detail(
                "cloudtrail-create-tags.json",
                requestParameters={
                    "resourcesSet": {"items": [{"resourceId": INSTANCE}]},
                    "tagSet": {"items": [{"key": "Name", "value": "web"}]},
                },
            ),
            f"no {TAG_KEY} tag among the tags",
        ),
        (
            with_detail(
                "cloudtrail-create-tags.json",
                requestParameters={
                    "resourcesSet": {"items": [{"resourceId": "vol-0a1b2c3d4e5f67890"}]},
                    "tagSet": {"items": [{"key": TAG_KEY, "value": "true"}]},
                },
            ),
            "no instance among the tagged resources",
        ),
        (
            with_detail(
                "cloudtrail-associate-route-table.json",
                requestParameters={"routeTableId": "rtb-0d4c6b8a2e1f39577", "gatewayId": "igw-0a1b2c3d4e5f67890"},
            ),
            "a gateway route table association (no subnet)",
        ),
    ],
    ids=["stopped", "failed-call", "other-tag", "tagged-volume", "gateway-association"],
)
def test_an_event_that_needs_no_check_says_why(body, why):
    # Given an event that cannot have broken anything EIC needs
    # When it is read
    change = parse(body)

    # Then it is a change to skip, with the reason
    assert change.skip == why


# ---- other shapes EC2 logs -------------------------------------------------------------------------------------------
def test_a_flat_metadata_options_record_and_a_group_named_by_name_are_read():
    # Given the metadata-options call logged flat (older records) and a revoke naming its group by name
    flat = with_detail("cloudtrail-modify-instance-metadata-options.json", requestParameters={"instanceId": INSTANCE})
    by_name = with_detail(
        "cloudtrail-revoke-security-group-ingress.json", requestParameters={"groupName": "default", "ipPermissions": {}}
    )

    # When they are read
    # Then the instance and the group's name are found
    assert parse(flat).instance_ids == (INSTANCE,)
    assert parse(by_name).group_names == ("default",)


def test_a_network_acl_association_without_its_response_names_only_the_acl():
    # Given a ReplaceNetworkAclAssociation record without responseElements
    body = with_detail("cloudtrail-replace-network-acl-association.json", responseElements=None)

    # When it is read
    change = parse(body)

    # Then it names the ACL (every subnet of it is checked) and no association
    assert (change.network_acl_ids, change.acl_association_ids) == (("acl-0e7d5c3b1a9f84622",), ())


# ---- bad records -------------------------------------------------------------------------------------------------
def _without(name: str, *path: str) -> dict:
    body = copy.deepcopy(event(name))
    node = body
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "not an EventBridge event"),
        ("[]", "not an EventBridge event"),
        (json.dumps({"detail-type": "x"}), "not an EventBridge event: id: Field required"),
        ({**event("ec2-instance-state-change-aws-doc.json"), "account": "12345"}, "not an EventBridge event: account"),
        ({**event("ec2-instance-state-change-aws-doc.json"), "source": "aws.s3"}, "source 'aws.s3' is not 'aws.ec2'"),
        (
            {**event("ec2-instance-state-change-aws-doc.json"), "detail-type": "EBS Volume Notification"},
            "detail-type 'EBS Volume Notification' is neither",
        ),
        (
            _without("ec2-instance-state-change-aws-doc.json", "detail", "state"),
            "state-change event without detail.state",
        ),
        (
            with_detail("ec2-instance-state-change-aws-doc.json", **{"instance-id": "i-; DROP"}),
            "detail.instance-id is not a valid instance id: 'i-; DROP'",
        ),
        (_without("cloudtrail-run-instances.json", "detail", "eventName"), "not a CloudTrail record: eventName"),
        (
            with_detail("cloudtrail-run-instances.json", eventSource="s3.amazonaws.com"),
            "eventSource 's3.amazonaws.com'",
        ),
        (
            with_detail("cloudtrail-run-instances.json", eventName="StopInstances"),
            "eventName 'StopInstances' is not one",
        ),
        (
            _without("cloudtrail-run-instances.json", "detail", "responseElements", "instancesSet"),
            "responseElements.instancesSet.items is missing or not a list",
        ),
        (
            with_detail("cloudtrail-replace-route.json", requestParameters={"routeTableId": 42}),
            "requestParameters.routeTableId is not a valid route table id: 42",
        ),
        (
            with_detail("cloudtrail-modify-security-group-rules.json", requestParameters={}),
            "ModifySecurityGroupRulesRequest.GroupId is not a valid security group id: None",
        ),
    ],
    ids=[
        "not-json",
        "not-an-object",
        "no-id",
        "bad-account",
        "other-source",
        "other-detail-type",
        "no-state",
        "bad-instance-id",
        "no-event-name",
        "other-service",
        "other-call",
        "no-launched-ids",
        "bad-route-table-id",
        "no-group-id",
    ],
)
def test_a_bad_record_is_refused_with_a_clear_reason(body, message):
    # Given a record eic-guard cannot take
    # When it is read
    with pytest.raises(InvalidEvent) as refused:
        parse(body)

    # Then it is refused, saying what is wrong
    assert message in str(refused.value)


def test_an_endpoint_answer_without_its_vpc_checks_the_region():
    # Given a DeleteInstanceConnectEndpoint whose answer CloudTrail logged without the endpoint (a trimmed record)
    body = copy.deepcopy(event("cloudtrail-delete-instance-connect-endpoint.json"))
    body["detail"]["responseElements"] = {"DeleteInstanceConnectEndpointResponse": {"requestId": "r-1"}}

    # When it is read
    change = parse(body)

    # Then nothing can be followed to a VPC, so every opted-in instance of the region is checked
    assert (change.vpc_ids, change.whole_region, change.skip) == ((), True, None)


def test_a_flat_endpoint_record_in_either_letter_case_is_read():
    # Given the creation's answer flat (not wrapped in its response shape) with the API's PascalCase names
    body = copy.deepcopy(event("cloudtrail-create-instance-connect-endpoint.json"))
    body["detail"]["responseElements"] = {"InstanceConnectEndpoint": {"VpcId": "vpc-0123456789abcdef0"}}

    # When it is read
    change = parse(body)

    # Then its VPC is still the one checked
    assert change.vpc_ids == ("vpc-0123456789abcdef0",)


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        ("request", "sg-0a1b2c3d4e5f67890", "is not a valid instance connect endpoint id"),
        ("vpc", "subnet-0f1e2d3c4b5a69788", "is not a valid VPC id"),
    ],
)
def test_a_malformed_endpoint_record_is_a_bad_record(where, value, message):
    # Given a DeleteInstanceConnectEndpoint naming something else as its endpoint, or as the endpoint's VPC
    body = copy.deepcopy(event("cloudtrail-delete-instance-connect-endpoint.json"))
    detail = body["detail"]
    if where == "request":
        detail["requestParameters"]["DeleteInstanceConnectEndpointRequest"]["InstanceConnectEndpointId"] = value
    else:
        detail["responseElements"]["DeleteInstanceConnectEndpointResponse"]["instanceConnectEndpoint"]["vpcId"] = value

    # When it is read / Then it is refused as a bad record, naming the field
    with pytest.raises(InvalidEvent, match=message):
        parse(body)
