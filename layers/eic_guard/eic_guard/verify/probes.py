"""The verify job's probes (docs/architecture.md §16): in one target, each call the nightly run may make, made so
that nothing changes — every write with `DryRun=True` on real opted-in resources, every read with a small page.

EC2 answers a DryRun write with `DryRunOperation` when the caller may make it and `UnauthorizedOperation` when it
may not (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/CommonParameters.html, DryRun). The list of actions
comes from eic_guard.permissions.CALLS (`granted`), so verify probes exactly what the code calls: an action without
a probe here is reported `untested` (and tests/unit/test_verify_probes.py fails on it).

Each write probe restates what the resource already has where it can (the interface's current groups, the
instance's current metadata tokens, a rule the managed group already allows; the revoke names a rule it does not
have), so that even an endpoint that ignored DryRun would change nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..aws.gateway import error_code, ssh_by_reference
from ..outputs.publish import CHECKED_AT_TAG, STATUS_TAG
from ..ranges.managed_group import EIC_PREFIX_LIST
from ..settings import MANAGED_BY_TAG, MANAGED_GROUP_NAME, PUBLIC_IP_TAG, Settings

ALLOWED, DENIED, UNTESTED, ERROR = "allowed", "denied", "untested", "error"
# What each service answers a caller its policies do not allow.
DENIED_CODES = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "AuthFailure"})
# The services whose calls the worker (or the member role) makes inside a scanned account: what the job probes.
IN_ACCOUNT_SERVICES = ("ec2", "iam", "securityhub")
SAMPLE = 5  # resources read per kind: a probe needs one, a few let it prefer the one a write would not change
# A documentation range (RFC 5737), in no security group: the revoke probe's rule (and the authorize probe's when the
# run has no EIC prefix for the region). DryRun only.
PLACEHOLDER_CIDR = "192.0.2.0/29"


@dataclass(frozen=True)
class Probe:
    """What one call answered in one target."""

    action: str
    outcome: str  # ALLOWED, DENIED, UNTESTED, ERROR
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"action": self.action, "outcome": self.outcome, "detail": self.detail}


@dataclass
class Target:
    """One target's clients and the real resources the probes act on (read by the read probes)."""

    ec2: Any
    iam: Any
    securityhub: Any
    region: str
    settings: Settings
    eic_prefix: str | None
    instances: list[dict] = field(default_factory=list)
    managed_groups: list[dict] = field(default_factory=list)
    addresses: list[dict] = field(default_factory=list)
    prefix_list_id: str | None = None

    def instance(self, prefer: Callable[[dict], bool] = lambda _: True) -> dict | None:
        return next((i for i in self.instances if prefer(i)), self.instances[0] if self.instances else None)

    def managed_group(self, vpc_id: str | None = None) -> dict | None:
        return next((g for g in self.managed_groups if vpc_id in (None, g.get("VpcId"))), None)


def _tags(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", ())}


def _primary_interface(instance: dict) -> dict | None:
    interfaces = instance.get("NetworkInterfaces", ())
    return next((n for n in interfaces if n.get("Attachment", {}).get("DeviceIndex") == 0), None)


class Untested(Exception):
    """The target has no resource this probe could act on (it is reported, never guessed at)."""


# ---- reads (the first ones also find the resources the writes act on) ----------------------------------------
def describe_instances(t: Target) -> str:
    key, value = t.settings.tag_key, t.settings.tag_value
    filters = [
        {"Name": f"tag:{key}", "Values": [value]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
    ]
    answer = t.ec2.describe_instances(Filters=filters, MaxResults=SAMPLE)
    t.instances = [i for r in answer.get("Reservations", ()) for i in r.get("Instances", ())][:SAMPLE]
    return f"{len(t.instances)}{'+' if answer.get('NextToken') else ''} opted-in instances read"


def describe_security_groups(t: Target) -> str:
    key, value = MANAGED_BY_TAG
    filters = [{"Name": f"tag:{key}", "Values": [value]}, {"Name": "group-name", "Values": [MANAGED_GROUP_NAME]}]
    t.managed_groups = t.ec2.describe_security_groups(Filters=filters, MaxResults=SAMPLE)["SecurityGroups"]
    return f"{len(t.managed_groups)} {MANAGED_GROUP_NAME} groups read"


def describe_addresses(t: Target) -> str:
    key, value = MANAGED_BY_TAG
    t.addresses = t.ec2.describe_addresses(Filters=[{"Name": f"tag:{key}", "Values": [value]}])["Addresses"]
    return f"{len(t.addresses)} eic-guard Elastic IPs read"


def describe_images(t: Target) -> str:
    instance = t.instance()
    if instance is not None:
        t.ec2.describe_images(ImageIds=[instance["ImageId"]])
        return f"{instance['ImageId']} read"
    t.ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": ["al2023-ami-2023.*"]}], MaxResults=5)
    return "Amazon Linux 2023 images read"


def describe_managed_prefix_lists(t: Target) -> str:
    """The region's EIC prefix list when it has one, else any list (GetManagedPrefixListEntries is granted on every
    prefix list: a checked group may reference any)."""
    name = EIC_PREFIX_LIST.format(region=t.region)
    lists = t.ec2.describe_managed_prefix_lists(MaxResults=100).get("PrefixLists", ())
    eic = next((p for p in lists if p.get("PrefixListName") == name), None)
    chosen = eic or (lists[0] if lists else None)
    t.prefix_list_id = chosen["PrefixListId"] if chosen else None
    return f"{name}: {eic['PrefixListId'] if eic else 'not in this region'}"


def get_managed_prefix_list_entries(t: Target) -> str:
    if t.prefix_list_id is None:
        raise Untested("no prefix list in this region to read")
    t.ec2.get_managed_prefix_list_entries(PrefixListId=t.prefix_list_id, MaxResults=5)
    return f"{t.prefix_list_id} entries read"


def describe_network_interfaces(t: Target) -> str:
    instance = t.instance(_primary_interface)
    interface = _primary_interface(instance) if instance else None
    if interface is None:
        t.ec2.describe_network_interfaces(MaxResults=5)
        return "network interfaces read"
    filters = [{"Name": "network-interface-id", "Values": [interface["NetworkInterfaceId"]]}]
    t.ec2.describe_network_interfaces(Filters=filters)
    return f"{interface['NetworkInterfaceId']} read"


def simple_read(method: str, what: str, **params: Any) -> Callable[[Target], str]:
    def probe(t: Target) -> str:
        client = t.iam if method == "list_account_aliases" else t.ec2
        getattr(client, method)(**params)
        return what

    return probe


def describe_hub(t: Target) -> str:
    """Security Hub enabled in the target (the findings are imported there)."""
    t.securityhub.describe_hub()
    return "Security Hub is enabled"


# ---- writes, DryRun ----------------------------------------------------------------------------------------------
def _source_rule(source: dict, key: str) -> list[dict]:
    return [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, key: [source]}]


def _rule_the_group_has(t: Target, group: dict) -> list[dict]:
    """One TCP 22 source the group already allows (authorizing it again would change nothing), else the region's EIC
    prefix (what the refresh adds anyway)."""
    for permission in group.get("IpPermissions", ()):
        if permission.get("IpProtocol") != "tcp" or permission.get("FromPort") != 22 or permission.get("ToPort") != 22:
            continue
        for key, field_ in (("IpRanges", "CidrIp"), ("Ipv6Ranges", "CidrIpv6"), ("PrefixListIds", "PrefixListId")):
            for source in permission.get(key, ()):
                return _source_rule({field_: source[field_]}, key)
    return _source_rule({"CidrIp": t.eic_prefix or PLACEHOLDER_CIDR}, "IpRanges")


def _group_or_untested(t: Target) -> dict:
    group = t.managed_group()
    if group is None:
        raise Untested(f"no {MANAGED_GROUP_NAME} group in this region yet (the first remediate scan creates one)")
    return group


def authorize_ingress(t: Target) -> str:
    group = _group_or_untested(t)
    rule = _rule_the_group_has(t, group)
    t.ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=rule, DryRun=True)
    return group["GroupId"]


def revoke_ingress(t: Target) -> str:
    """A rule the group does not have (a documentation range): revoking it would change nothing."""
    group = _group_or_untested(t)
    rule = _source_rule({"CidrIp": PLACEHOLDER_CIDR}, "IpRanges")
    t.ec2.revoke_security_group_ingress(GroupId=group["GroupId"], IpPermissions=rule, DryRun=True)
    return group["GroupId"]


def _instance_or_untested(t: Target, prefer: Callable[[dict], bool] = lambda _: True) -> dict:
    instance = t.instance(prefer)
    if instance is None:
        raise Untested(f"no opted-in instance ({t.settings.tag_key}={t.settings.tag_value}) in this region")
    return instance


def create_security_group(t: Target) -> str:
    instance = _instance_or_untested(t, lambda i: bool(i.get("VpcId")))
    key, value = MANAGED_BY_TAG
    tags = [{"Key": key, "Value": value}, {"Key": "Name", "Value": MANAGED_GROUP_NAME}]
    t.ec2.create_security_group(
        GroupName=MANAGED_GROUP_NAME,
        Description="eic-guard: SSH from the regional EC2 Instance Connect ranges only",
        VpcId=instance["VpcId"],
        TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
        DryRun=True,
    )
    return f"{MANAGED_GROUP_NAME} in {instance['VpcId']}, tagged on create"


def create_tags(t: Target) -> str:
    """The status tags on an opted-in instance (the other CreateTags are tag-on-create, probed with their create)."""
    if not (t.settings.remediate and t.settings.tag_instances):
        return create_security_group(t)
    instance = _instance_or_untested(t)
    current = _tags(instance)
    tags = [{"Key": k, "Value": current.get(k, "verify")} for k in (STATUS_TAG, CHECKED_AT_TAG)]
    t.ec2.create_tags(Resources=[instance["InstanceId"]], Tags=tags, DryRun=True)
    return f"{STATUS_TAG}, {CHECKED_AT_TAG} on {instance['InstanceId']}"


def modify_interface(t: Target) -> str:
    instance = _instance_or_untested(t, lambda i: _primary_interface(i) is not None)
    interface = _primary_interface(instance)
    if interface is None:
        raise Untested(f"{instance['InstanceId']} has no network interface")
    groups = [g["GroupId"] for g in interface.get("Groups", ())]  # restated as they are: a no-op if ever made
    t.ec2.modify_network_interface_attribute(
        NetworkInterfaceId=interface["NetworkInterfaceId"], Groups=groups, DryRun=True
    )
    return f"{interface['NetworkInterfaceId']} of {instance['InstanceId']}"


def modify_metadata_options(t: Target) -> str:
    def enabled(instance: dict) -> bool:
        return instance.get("MetadataOptions", {}).get("HttpEndpoint") == "enabled"

    instance = _instance_or_untested(t, enabled)
    tokens = instance.get("MetadataOptions", {}).get("HttpTokens", "required")
    t.ec2.modify_instance_metadata_options(
        InstanceId=instance["InstanceId"], HttpEndpoint="enabled", HttpTokens=tokens, DryRun=True
    )
    return f"{instance['InstanceId']} (HttpEndpoint=enabled, HttpTokens={tokens} kept)"


def allocate_address(t: Target) -> str:
    key, value = MANAGED_BY_TAG
    spec = [{"ResourceType": "elastic-ip", "Tags": [{"Key": key, "Value": value}]}]
    t.ec2.allocate_address(Domain="vpc", TagSpecifications=spec, DryRun=True)
    return "an Elastic IP tagged on allocate"


def _address_or_untested(t: Target, associated: bool = False) -> dict:
    address = next((a for a in t.addresses if not associated or a.get("AssociationId")), None)
    if address is None:
        raise Untested(f"no {'associated ' if associated else ''}eic-guard Elastic IP in this region")
    return address


def associate_address(t: Target) -> str:
    address = _address_or_untested(t)
    key, value = PUBLIC_IP_TAG
    instance = _instance_or_untested(t, lambda i: _tags(i).get(key) == value and _primary_interface(i) is not None)
    interface = _primary_interface(instance)
    if _tags(instance).get(key) != value or interface is None:
        raise Untested(f"no opted-in instance tagged {key}={value} in this region")
    t.ec2.associate_address(
        AllocationId=address["AllocationId"], NetworkInterfaceId=interface["NetworkInterfaceId"], DryRun=True
    )
    return f"{address['AllocationId']} to {interface['NetworkInterfaceId']}"


def disassociate_address(t: Target) -> str:
    address = _address_or_untested(t, associated=True)
    t.ec2.disassociate_address(AssociationId=address["AssociationId"], DryRun=True)
    return address["AssociationId"]


def release_address(t: Target) -> str:
    address = _address_or_untested(t)
    t.ec2.release_address(AllocationId=address["AllocationId"], DryRun=True)
    return address["AllocationId"]


# ---- the endpoint path (docs/architecture.md §13) -----------------------------------------------------------------
def authorize_egress(t: Target) -> str:
    """An egress rule of an eic-guard group (what the endpoint path's egress fix adds to eic-guard-eice): the statement
    allows egress edits of ManagedBy=eic-guard groups only, whichever rule. The probe restates one the group already
    has (its default allow-all, say), else TCP 22 to itself by reference, so that it would change nothing if made."""
    group = _group_or_untested(t)
    existing = next(iter(group.get("IpPermissionsEgress", ())), None)
    rule = [_restated(existing)] if existing else [ssh_by_reference(group["GroupId"])]
    t.ec2.authorize_security_group_egress(GroupId=group["GroupId"], IpPermissions=rule, DryRun=True)
    return group["GroupId"]


def revoke_egress(t: Target) -> str:
    """What a new eic-guard-eice loses (its default allow-all egress), probed with a rule no group has (TCP 22 to a
    documentation range): revoking it would change nothing."""
    group = _group_or_untested(t)
    rule = [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": PLACEHOLDER_CIDR}]}]
    t.ec2.revoke_security_group_egress(GroupId=group["GroupId"], IpPermissions=rule, DryRun=True)
    return group["GroupId"]


def _restated(permission: dict) -> dict:
    """An IpPermissions entry as DescribeSecurityGroups gives it, reduced to what a request takes."""
    rule = {k: permission[k] for k in ("IpProtocol", "FromPort", "ToPort") if k in permission}
    for key, fields in (
        ("IpRanges", ("CidrIp",)),
        ("Ipv6Ranges", ("CidrIpv6",)),
        ("PrefixListIds", ("PrefixListId",)),
        ("UserIdGroupPairs", ("GroupId",)),
    ):
        sources = [{f: source[f] for f in fields if f in source} for source in permission.get(key, ())]
        if sources:
            rule[key] = sources[:1]
            return rule
    return rule


def create_instance_connect_endpoint(t: Target) -> str:
    """An endpoint in an opted-in instance's subnet with an eic-guard group, tagged on create (CreateEndpoints)."""
    instance = _instance_or_untested(t, lambda i: bool(i.get("SubnetId")))
    group = t.managed_group(instance.get("VpcId"))
    if group is None:
        raise Untested(f"no {MANAGED_GROUP_NAME} group in {instance.get('VpcId')} to create the endpoint with")
    key, value = MANAGED_BY_TAG
    tags = [{"Key": key, "Value": value}, {"Key": "Name", "Value": "eic-guard-eice"}]
    t.ec2.create_instance_connect_endpoint(
        SubnetId=instance["SubnetId"],
        SecurityGroupIds=[group["GroupId"]],
        PreserveClientIp=False,
        TagSpecifications=[{"ResourceType": "instance-connect-endpoint", "Tags": tags}],
        DryRun=True,
    )
    return f"an endpoint in {instance['SubnetId']}, tagged on create"


def create_network_interface(t: Target) -> str:
    """The endpoint's interface, which the EC2 User Guide has the caller of CreateInstanceConnectEndpoint allowed."""
    instance = _instance_or_untested(t, lambda i: bool(i.get("SubnetId")))
    group = t.managed_group(instance.get("VpcId"))
    if group is None:
        raise Untested(f"no {MANAGED_GROUP_NAME} group in {instance.get('VpcId')} for the interface")
    t.ec2.create_network_interface(SubnetId=instance["SubnetId"], Groups=[group["GroupId"]], DryRun=True)
    return f"an interface in {instance['SubnetId']}"


def service_linked_role(_: Target) -> str:
    raise Untested(
        "IAM has no DryRun; the first endpoint's creation proves it (it exists once the account has had one)"
    )


def no_dry_run(service: str) -> Callable[[Target], str]:
    def probe(_: Target) -> str:
        raise Untested(f"{service} has no DryRun; securityhub:DescribeHub and the next scan's import prove it")

    return probe


# In the order they run: the reads that find resources before the writes that use them.
PROBES: dict[str, Callable[[Target], str]] = {
    "ec2:DescribeInstances": describe_instances,
    "ec2:DescribeSecurityGroups": describe_security_groups,
    "ec2:DescribeAddresses": describe_addresses,
    "ec2:DescribeImages": describe_images,
    "ec2:DescribeRouteTables": simple_read("describe_route_tables", "route tables read", MaxResults=5),
    "ec2:DescribeNetworkAcls": simple_read("describe_network_acls", "network ACLs read", MaxResults=5),
    "ec2:DescribeManagedPrefixLists": describe_managed_prefix_lists,
    "ec2:GetManagedPrefixListEntries": get_managed_prefix_list_entries,
    "ec2:DescribeTags": simple_read("describe_tags", "tags read", MaxResults=5),
    "ec2:DescribeNetworkInterfaces": describe_network_interfaces,
    "ec2:DescribeInstanceConnectEndpoints": simple_read(
        "describe_instance_connect_endpoints", "EC2 Instance Connect Endpoints read", MaxResults=5
    ),
    "iam:ListAccountAliases": simple_read("list_account_aliases", "account alias read"),
    "securityhub:DescribeHub": describe_hub,
    "ec2:AuthorizeSecurityGroupIngress": authorize_ingress,
    "ec2:RevokeSecurityGroupIngress": revoke_ingress,
    "ec2:CreateSecurityGroup": create_security_group,
    "ec2:CreateTags": create_tags,
    "ec2:ModifyNetworkInterfaceAttribute": modify_interface,
    "ec2:ModifyInstanceMetadataOptions": modify_metadata_options,
    "ec2:AllocateAddress": allocate_address,
    "ec2:AssociateAddress": associate_address,
    "ec2:DisassociateAddress": disassociate_address,
    "ec2:ReleaseAddress": release_address,
    "ec2:AuthorizeSecurityGroupEgress": authorize_egress,
    "ec2:RevokeSecurityGroupEgress": revoke_egress,
    "ec2:CreateInstanceConnectEndpoint": create_instance_connect_endpoint,
    "ec2:CreateNetworkInterface": create_network_interface,
    "iam:CreateServiceLinkedRole": service_linked_role,
    "securityhub:BatchImportFindings": no_dry_run("Security Hub"),
    "securityhub:BatchUpdateFindings": no_dry_run("Security Hub"),
}
WRITES = frozenset(a for a in PROBES if not a.split(":")[1].startswith(("Describe", "Get", "List")))


def run_probe(action: str, target: Target) -> Probe:
    """One action in one target; never raises (every outcome is the probe's)."""
    probe = PROBES.get(action)
    if probe is None:
        return Probe(action, UNTESTED, "verify has no probe for this action")
    try:
        detail = probe(target)
    except Untested as exc:
        return Probe(action, UNTESTED, str(exc))
    except ClientError as exc:
        code = error_code(exc)
        if code == "DryRunOperation":
            return Probe(action, ALLOWED, "DryRunOperation")
        if code in DENIED_CODES:
            return Probe(action, DENIED, f"{code}: {_message(exc)}")
        if action == "securityhub:DescribeHub" and code == "InvalidAccessException":
            return Probe(action, ERROR, f"Security Hub is not enabled here ({code})")
        return Probe(action, ERROR, f"{code}: {_message(exc)}")
    except BotoCoreError as exc:
        return Probe(action, ERROR, f"{type(exc).__name__}: {exc}")
    if action in WRITES:  # EC2 never answers a DryRun write with success: this endpoint ignored DryRun
        return Probe(action, ERROR, f"{detail}: the endpoint ignored DryRun=True and made the call")
    return Probe(action, ALLOWED, detail)


def _message(exc: ClientError) -> str:
    message = exc.response.get("Error", {}).get("Message", "")
    return " ".join(message.split())[:300]


def probe_order(actions: set[str]) -> list[str]:
    """The actions to probe, reads first (they find the resources), unknown ones last."""
    known = [a for a in PROBES if a in actions]
    return known + sorted(actions - set(known))
