"""The events that can break EIC or need a check (docs/architecture.md §10), parsed from the SQS message body (the
EventBridge event) into one `ChangeEvent`: who made the change, where, and the resources it names.

Two kinds reach the queue: EC2 "Instance State-change Notification" (`pending`, `running`) and CloudTrail's "AWS API
Call via CloudTrail" for the EC2 calls listed in `API_CALLS`. EC2 logs the older Query API calls with camelCase
request parameters and `{"items": [...]}` lists (RunInstances, CreateTags, ModifyNetworkInterfaceAttribute...) and the
newer ones wrapped in their request shape (`ModifyInstanceMetadataOptionsRequest.InstanceId`,
`ModifySecurityGroupRulesRequest.GroupId`); both are read here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..events import InvalidEvent

STATE_CHANGE = "EC2 Instance State-change Notification"
API_CALL = "AWS API Call via CloudTrail"
CHECKED_STATES = ("pending", "running")
EC2_SOURCE = "aws.ec2"
EC2_EVENT_SOURCE = "ec2.amazonaws.com"
_ID = {
    "instance": "i",
    "network interface": "eni",
    "security group": "sg",
    "route table": "rtb",
    "subnet": "subnet",
    "network ACL": "acl",
    "network ACL association": "aclassoc",
    "VPC": "vpc",
    "instance connect endpoint": "eice",
}


@dataclass(frozen=True)
class Actor:
    """Who made a CloudTrail-logged call: `userIdentity.arn` and, for a role session, the role's ARN."""

    arn: str | None = None
    issuer_arn: str | None = None


@dataclass(frozen=True)
class ChangeEvent:
    """One event, reduced to what decides the instances to check. `skip` says why it needs no check at all."""

    event_id: str
    name: str  # the CloudTrail eventName, or "state-change:<state>"
    account_id: str
    region: str
    actor: Actor = Actor()
    instance_ids: tuple[str, ...] = ()
    interface_ids: tuple[str, ...] = ()
    group_ids: tuple[str, ...] = ()
    group_names: tuple[str, ...] = ()
    route_table_ids: tuple[str, ...] = ()
    subnet_ids: tuple[str, ...] = ()
    network_acl_ids: tuple[str, ...] = ()
    acl_association_ids: tuple[str, ...] = ()  # the subnet associations a ReplaceNetworkAclAssociation made
    vpc_ids: tuple[str, ...] = ()  # every opted-in instance of these VPCs (an internet gateway detached)
    # The change names no resource left to follow (an address or route table association that no longer exists):
    # every opted-in instance of the region is checked.
    whole_region: bool = False
    # Instances the call opted in (the opt-in tag key, in any letter case, with the opt-in value): an access boundary
    # change, alerted with its actor whatever the check finds (README "Threat model").
    opted_in: tuple[str, ...] = ()
    opt_in_tag: tuple[str, str] | None = None  # the key and value as the call wrote them
    event_time: str | None = None
    trail_event_id: str | None = None  # CloudTrail's eventID: what a person looks the call up by
    skip: str | None = None


class _Envelope(BaseModel):
    """The EventBridge event (the SQS message body)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str = Field(min_length=1)
    detail_type: str = Field(alias="detail-type")
    source: str
    account: str = Field(pattern=r"^\d{12}$")
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")
    detail: dict[str, Any]


class _ApiCall(BaseModel):
    """The CloudTrail record in `detail` of an "AWS API Call via CloudTrail" event."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    event_source: str = Field(alias="eventSource")
    event_name: str = Field(alias="eventName")
    user_identity: dict[str, Any] = Field(default_factory=dict, alias="userIdentity")
    request: dict[str, Any] | None = Field(default=None, alias="requestParameters")
    response: dict[str, Any] | None = Field(default=None, alias="responseElements")
    error_code: str | None = Field(default=None, alias="errorCode")
    event_time: str | None = Field(default=None, alias="eventTime")
    trail_event_id: str | None = Field(default=None, alias="eventID")


def parse_change(body: str | bytes | dict, tag_key: str, tag_value: str = "true") -> ChangeEvent:
    """The change an SQS message body announces; InvalidEvent (a bad record) when it is not one eic-guard takes."""
    try:
        raw = json.loads(body) if isinstance(body, str | bytes) else body
        envelope = _Envelope.model_validate(raw)
    except (ValueError, ValidationError) as exc:
        raise InvalidEvent(f"not an EventBridge event: {_first_error(exc)}") from None
    if envelope.source != EC2_SOURCE:
        raise InvalidEvent(f"source {envelope.source!r} is not {EC2_SOURCE!r}")
    base = {"event_id": envelope.id, "account_id": envelope.account, "region": envelope.region}
    if envelope.detail_type == STATE_CHANGE:
        return _state_change(envelope.detail, base)
    if envelope.detail_type == API_CALL:
        return _api_call(envelope.detail, base, (tag_key, tag_value))
    raise InvalidEvent(f"detail-type {envelope.detail_type!r} is neither {STATE_CHANGE!r} nor {API_CALL!r}")


def _state_change(detail: dict[str, Any], base: dict[str, str]) -> ChangeEvent:
    state = detail.get("state")
    if not isinstance(state, str):
        raise InvalidEvent("state-change event without detail.state")
    instance_id = _id(detail.get("instance-id"), "instance", "detail.instance-id")
    skip = None if state in CHECKED_STATES else f"state {state} is not checked"
    return ChangeEvent(name=f"state-change:{state}", instance_ids=(instance_id,), skip=skip, **base)


def _api_call(detail: dict[str, Any], base: dict[str, str], opt_in: tuple[str, str]) -> ChangeEvent:
    try:
        call = _ApiCall.model_validate(detail)
    except ValidationError as exc:
        raise InvalidEvent(f"not a CloudTrail record: {_first_error(exc)}") from None
    if call.event_source != EC2_EVENT_SOURCE:
        raise InvalidEvent(f"eventSource {call.event_source!r} is not {EC2_EVENT_SOURCE!r}")
    mapping = API_CALLS.get(call.event_name)
    if mapping is None:
        raise InvalidEvent(f"eventName {call.event_name!r} is not one eic-guard checks after")
    actor = _actor(call.user_identity)
    common = {"name": call.event_name, "actor": actor, "event_time": call.event_time, **base}
    common["trail_event_id"] = call.trail_event_id
    if call.error_code:  # the call failed: nothing changed
        return ChangeEvent(skip=f"the call failed ({call.error_code})", **common)
    fields = mapping(call.request or {}, call.response or {}, opt_in)
    return ChangeEvent(**common, **fields)


def _actor(identity: dict[str, Any]) -> Actor:
    context = identity.get("sessionContext")
    issuer = context.get("sessionIssuer") if isinstance(context, dict) else None
    issuer_arn = issuer.get("arn") if isinstance(issuer, dict) else None
    arn = identity.get("arn")
    return Actor(arn if isinstance(arn, str) else None, issuer_arn if isinstance(issuer_arn, str) else None)


# ---- the ids each call names ---------------------------------------------------------------------------------------
def _id(value: Any, kind: str, where: str) -> str:
    prefix = _ID[kind]
    if not isinstance(value, str) or not re.fullmatch(rf"{prefix}-[0-9a-f]{{8,17}}", value):
        raise InvalidEvent(f"{where} is not a valid {kind} id: {value!r}")
    return value


def _items(container: Any, key: str, field: str, where: str) -> list[Any]:
    """The `field` of every entry of EC2's logged list `container[key].items`."""
    listed = container.get(key) if isinstance(container, dict) else None
    items = listed.get("items") if isinstance(listed, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise InvalidEvent(f"{where}.{key}.items is missing or not a list")
    return [i.get(field) for i in items]


def _wrapped(request: dict[str, Any], wrapper: str) -> dict[str, Any]:
    """The request parameters of a call EC2 logs wrapped in its request shape (or flat, as older records have it)."""
    inner = request.get(wrapper)
    return inner if isinstance(inner, dict) else request


def _opt_in_tag(tags: Any, opt_in: tuple[str, str]) -> tuple[str, str] | None:
    """The opt-in tag among `tags` ([{"key", "value"}]) as written, its key in any letter case: IAM compares condition
    key names case-insensitively, so `EIC-Guard:Managed=true` satisfies the ConnectPolicy's condition too."""
    key, value = opt_in
    for tag in tags if isinstance(tags, list) else ():
        if isinstance(tag, dict) and str(tag.get("key", "")).lower() == key.lower() and tag.get("value") == value:
            return str(tag["key"]), str(tag["value"])
    return None


def _run_instances(request: dict, response: dict, opt_in: tuple[str, str]) -> dict:
    ids = _items(response, "instancesSet", "instanceId", "responseElements")
    if not ids:
        raise InvalidEvent("RunInstances launched no instance (responseElements.instancesSet.items is empty)")
    instance_ids = tuple(_id(i, "instance", "instancesSet.items[].instanceId") for i in ids)
    specifications = (request.get("tagSpecificationSet") or {}).get("items") or ()
    tags = [
        t
        for spec in specifications
        if isinstance(spec, dict) and spec.get("resourceType") == "instance"
        for t in spec.get("tags") or ()
    ]
    tag = _opt_in_tag(tags, opt_in)
    launched_opted_in = {"opted_in": instance_ids, "opt_in_tag": tag} if tag else {}
    return {"instance_ids": instance_ids, **launched_opted_in}


def _create_tags(request: dict, response: dict, opt_in: tuple[str, str]) -> dict:
    resources = _items(request, "resourcesSet", "resourceId", "requestParameters")
    keys = _items(request, "tagSet", "key", "requestParameters")
    if opt_in[0].lower() not in {str(k).lower() for k in keys}:
        return {"skip": f"no {opt_in[0]} tag among the tags"}
    ids = tuple(_id(r, "instance", "resourcesSet.items[].resourceId") for r in resources if str(r).startswith("i-"))
    if not ids:
        return {"skip": "no instance among the tagged resources"}
    tag = _opt_in_tag(request["tagSet"]["items"], opt_in)
    return {"instance_ids": ids, "opted_in": ids if tag else (), "opt_in_tag": tag}


def _instance_attribute(request: dict, response: dict, opt_in: tuple[str, str]) -> dict:
    return {"instance_ids": (_id(request.get("instanceId"), "instance", "requestParameters.instanceId"),)}


def _metadata_options(request: dict, response: dict, opt_in: tuple[str, str]) -> dict:
    inner = _wrapped(request, "ModifyInstanceMetadataOptionsRequest")
    instance_id = inner.get("InstanceId", inner.get("instanceId"))
    return {"instance_ids": (_id(instance_id, "instance", "ModifyInstanceMetadataOptionsRequest.InstanceId"),)}


def _interface_attribute(request: dict, response: dict, opt_in: tuple[str, str]) -> dict:
    eni = _id(request.get("networkInterfaceId"), "network interface", "requestParameters.networkInterfaceId")
    return {"interface_ids": (eni,)}


def _group(request: dict, response: dict, opt_in: tuple[str, str]) -> dict:
    """RevokeSecurityGroupIngress and DeleteSecurityGroup name the group by id, or by name (default VPC)."""
    if request.get("groupId") is None and isinstance(request.get("groupName"), str) and request["groupName"]:
        return {"group_names": (request["groupName"],)}
    return {"group_ids": (_id(request.get("groupId"), "security group", "requestParameters.groupId"),)}


def _group_rules(request: dict, response: dict, opt_in: tuple[str, str]) -> dict:
    inner = _wrapped(request, "ModifySecurityGroupRulesRequest")
    group_id = inner.get("GroupId", inner.get("groupId"))
    return {"group_ids": (_id(group_id, "security group", "ModifySecurityGroupRulesRequest.GroupId"),)}


def _associate_route_table(request: dict, response: dict, opt_in: tuple[str, str]) -> dict:
    _id(request.get("routeTableId"), "route table", "requestParameters.routeTableId")
    if request.get("subnetId") is None and request.get("gatewayId") is not None:
        return {"skip": "a gateway route table association (no subnet)"}
    return {"subnet_ids": (_id(request.get("subnetId"), "subnet", "requestParameters.subnetId"),)}


def _route(request: dict, response: dict, opt_in: tuple[str, str]) -> dict:
    return {"route_table_ids": (_id(request.get("routeTableId"), "route table", "requestParameters.routeTableId"),)}


def _acl_entry(request: dict, response: dict, opt_in: tuple[str, str]) -> dict:
    return {"network_acl_ids": (_id(request.get("networkAclId"), "network ACL", "requestParameters.networkAclId"),)}


def _acl_association(request: dict, response: dict, opt_in: tuple[str, str]) -> dict:
    fields = _acl_entry(request, response, opt_in)
    new = response.get("newAssociationId")
    if new is not None:
        fields["acl_association_ids"] = (_id(new, "network ACL association", "responseElements.newAssociationId"),)
    return fields


def _whole_region(request: dict, response: dict, opt_in: tuple[str, str]) -> dict:
    """DisassociateAddress and DisassociateRouteTable name an association that no longer exists: its instance or
    subnet cannot be looked up any more, so every opted-in instance of the region is checked (one paginated
    DescribeInstances, and these calls are rare)."""
    association = request.get("associationId") or request.get("publicIp")
    if not isinstance(association, str) or not association:
        raise InvalidEvent("requestParameters names no association (associationId or publicIp)")
    return {"whole_region": True}


def _route_table_association(request: dict, response: dict, opt_in: tuple[str, str]) -> dict:
    """ReplaceRouteTableAssociation: the subnets now associated with the new table (or the VPC's main ones)."""
    return _route(request, response, opt_in)


def _detach_gateway(request: dict, response: dict, opt_in: tuple[str, str]) -> dict:
    return {"vpc_ids": (_id(request.get("vpcId"), "VPC", "requestParameters.vpcId"),)}


def _endpoint_vpc(response: dict, wrapper: str) -> dict:
    """The VPC of the endpoint a Create/DeleteInstanceConnectEndpoint answer describes: EC2 logs these newer calls
    wrapped in their response shape (`CreateInstanceConnectEndpointResponse.instanceConnectEndpoint.vpcId`); read flat
    and in either letter case too. Every opted-in instance of that VPC is checked: its endpoint path just appeared or
    went (docs/architecture.md §13). An answer without one (e.g. a record CloudTrail trimmed) checks the region."""
    inner = _wrapped(response, wrapper)
    endpoint = inner.get("instanceConnectEndpoint", inner.get("InstanceConnectEndpoint"))
    vpc = endpoint.get("vpcId", endpoint.get("VpcId")) if isinstance(endpoint, dict) else None
    if vpc is None:
        return {"whole_region": True}
    return {"vpc_ids": (_id(vpc, "VPC", f"{wrapper}.instanceConnectEndpoint.vpcId"),)}


def _endpoint_id(request: dict, wrapper: str) -> str:
    inner = _wrapped(request, wrapper)
    value = inner.get("InstanceConnectEndpointId", inner.get("instanceConnectEndpointId"))
    return _id(value, "instance connect endpoint", f"{wrapper}.InstanceConnectEndpointId")


def _create_endpoint(request: dict, response: dict, opt_in: tuple[str, str]) -> dict:
    return _endpoint_vpc(response, "CreateInstanceConnectEndpointResponse")


def _delete_endpoint(request: dict, response: dict, opt_in: tuple[str, str]) -> dict:
    _endpoint_id(request, "DeleteInstanceConnectEndpointRequest")
    return _endpoint_vpc(response, "DeleteInstanceConnectEndpointResponse")


def _modify_endpoint(request: dict, response: dict, opt_in: tuple[str, str]) -> dict:
    """ModifyInstanceConnectEndpoint (its groups, PreserveClientIp, IP address type) answers only `true`: the VPC is
    not in the record, so the region's opted-in instances are checked (the call is rare)."""
    _endpoint_id(request, "ModifyInstanceConnectEndpointRequest")
    return {"whole_region": True}


API_CALLS: dict[str, Callable[[dict, dict, tuple[str, str]], dict]] = {
    "RunInstances": _run_instances,
    "CreateTags": _create_tags,
    "ModifyNetworkInterfaceAttribute": _interface_attribute,
    "ModifyInstanceAttribute": _instance_attribute,
    "ModifyInstanceMetadataOptions": _metadata_options,
    "RevokeSecurityGroupIngress": _group,
    "ModifySecurityGroupRules": _group_rules,
    "DeleteSecurityGroup": _group,
    "AssociateRouteTable": _associate_route_table,
    "ReplaceRoute": _route,
    "DeleteRoute": _route,
    "ReplaceNetworkAclEntry": _acl_entry,
    "CreateNetworkAclEntry": _acl_entry,
    "DeleteNetworkAclEntry": _acl_entry,
    "ReplaceNetworkAclAssociation": _acl_association,
    "DisassociateAddress": _whole_region,
    "ReplaceRouteTableAssociation": _route_table_association,
    "DisassociateRouteTable": _whole_region,
    "DetachInternetGateway": _detach_gateway,
    "CreateInstanceConnectEndpoint": _create_endpoint,
    "DeleteInstanceConnectEndpoint": _delete_endpoint,
    "ModifyInstanceConnectEndpoint": _modify_endpoint,
}


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc']) or 'event'}: {first['msg']}"
    return str(exc)
