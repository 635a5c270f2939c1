"""Act: the few EC2 writes eic-guard makes. In report mode every write is planned, not made."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..models import ActionRecord, ManagedAddress, SecurityGroup
from ..observability import logger
from ..ranges.managed_group import RuleSet, current_rules
from ..settings import ENDPOINT_GROUP_NAME, MANAGED_BY_TAG, MANAGED_GROUP_NAME
from .inventory import FILTER_VALUES_PER_CALL, paginate, parse_security_group

VANISHED_CODES = frozenset(
    {
        "InvalidInstanceID.NotFound",
        "InvalidNetworkInterfaceID.NotFound",
        "InvalidInstanceID.Malformed",
    }
)
# ResourceLimitExceeded: what CreateInstanceConnectEndpoint answers at the one-per-VPC rule or the account's quota.
QUOTA_CODES = frozenset(
    {"SecurityGroupsPerInterfaceLimitExceeded", "RulesPerSecurityGroupLimitExceeded", "ResourceLimitExceeded"}
)
CREATE_ENDPOINT_ACTION = "create-instance-connect-endpoint"
# A fresh CreateInstanceConnectEndpoint answers create-in-progress (creation takes minutes), created at or after the
# request was sent. The same ClientToken returns the endpoint a racing run created first: one in another live state,
# or created before the request by more than this margin (CreatedAt is AWS's clock, to the second; ours may differ
# slightly), was not created by this request.
CREATED_BEFORE_MARGIN = timedelta(seconds=5)
# Metadata token settings eic-guard can restate; anything else (a value a newer API adds) is left untouched.
KNOWN_HTTP_TOKENS = ("required", "optional")
# AuthorizeSecurityGroupIngress fails whole on one duplicate: re-read and retry with what is missing, bounded.
DUPLICATE_RETRIES = 3


class RemediationRefused(Exception):
    """A fix eic-guard will not make: it would touch something it does not own, or rely on an API default."""


def error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "Unknown")


def vanished(resource: str, operation: str) -> ClientError:
    """The error EC2 gives for a resource that no longer exists, for one found missing on a re-read."""
    code = "InvalidNetworkInterfaceID.NotFound" if resource.startswith("eni-") else "InvalidInstanceID.NotFound"
    return ClientError({"Error": {"Code": code, "Message": f"{resource} no longer exists"}}, operation)


class Ec2Gateway:
    """Executes or plans writes, returning an ActionRecord for each."""

    def __init__(self, ec2: Any, region: str, dry_run: bool):
        self.ec2 = ec2
        self.region = region
        self.dry_run = dry_run

    def _record(self, action: str, resource: str, detail: str) -> ActionRecord:
        if not self.dry_run:
            # Logged as it happens: if the invocation dies later, the log still says what was changed.
            logger.info(
                "write done", extra={"action": action, "resource": resource, "region": self.region, "detail": detail}
            )
        return ActionRecord(action, resource, "planned" if self.dry_run else "done", detail)

    def create_managed_group(self, vpc_id: str) -> tuple[str, ActionRecord]:
        """Create eic-guard-ssh in `vpc_id`, tagged ManagedBy=eic-guard at creation (no egress change)."""
        detail = f"create {MANAGED_GROUP_NAME} in {vpc_id} tagged {'='.join(MANAGED_BY_TAG)}"
        if self.dry_run:
            return f"(new {MANAGED_GROUP_NAME} in {vpc_id})", self._record("create-security-group", vpc_id, detail)
        key, value = MANAGED_BY_TAG
        response = self.ec2.create_security_group(
            GroupName=MANAGED_GROUP_NAME,
            Description="eic-guard: SSH from the regional EC2 Instance Connect ranges only",
            VpcId=vpc_id,
            TagSpecifications=[
                {
                    "ResourceType": "security-group",
                    "Tags": [{"Key": key, "Value": value}, {"Key": "Name", "Value": MANAGED_GROUP_NAME}],
                }
            ],
        )
        return response["GroupId"], self._record("create-security-group", response["GroupId"], detail)

    def create_group(self, vpc_id: str, name: str, description: str) -> tuple[str, ActionRecord]:
        """Create one of eic-guard's groups of the endpoint path in `vpc_id`, tagged ManagedBy=eic-guard at creation."""
        detail = f"create {name} in {vpc_id} tagged {'='.join(MANAGED_BY_TAG)}"
        if self.dry_run:
            return f"(new {name} in {vpc_id})", self._record("create-security-group", vpc_id, detail)
        key, value = MANAGED_BY_TAG
        response = self.ec2.create_security_group(
            GroupName=name,
            Description=description,
            VpcId=vpc_id,
            TagSpecifications=[
                {
                    "ResourceType": "security-group",
                    "Tags": [{"Key": key, "Value": value}, {"Key": "Name", "Value": name}],
                }
            ],
        )
        return response["GroupId"], self._record("create-security-group", response["GroupId"], detail)

    def authorize_ssh_from_group(self, group_id: str, source_group_id: str) -> ActionRecord:
        """Allow TCP 22 in from `source_group_id` by reference (a rule that exists already counts as added)."""
        detail = f"allow TCP 22 from {source_group_id} (by reference)"
        if not self.dry_run:
            permission = ssh_by_reference(source_group_id)
            if not self._tolerating_duplicate(self.ec2.authorize_security_group_ingress, group_id, permission):
                detail = f"TCP 22 from {source_group_id} (by reference) already allowed (added meanwhile)"
        return self._record("authorize-ingress", group_id, detail)

    def authorize_ssh_egress_to_group(self, group_id: str, target_group_id: str) -> ActionRecord:
        """Allow TCP 22 out to `target_group_id` by reference (a rule that exists already counts as added)."""
        detail = f"allow TCP 22 out to {target_group_id} (by reference)"
        if not self.dry_run:
            permission = ssh_by_reference(target_group_id)
            if not self._tolerating_duplicate(self.ec2.authorize_security_group_egress, group_id, permission):
                detail = f"TCP 22 out to {target_group_id} (by reference) already allowed (added meanwhile)"
        return self._record("authorize-egress", group_id, detail)

    def revoke_default_egress(self, group_id: str) -> ActionRecord:
        """Remove the allow-all IPv4 egress rule EC2 gives every new group (eic-guard-eice allows TCP 22 out only)."""
        detail = "revoke the default egress rule (all traffic to 0.0.0.0/0)"
        if not self.dry_run:
            try:
                self.ec2.revoke_security_group_egress(
                    GroupId=group_id, IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
                )
            except ClientError as exc:
                if error_code(exc) != "InvalidPermission.NotFound":
                    raise
        return self._record("revoke-egress", group_id, detail)

    def _tolerating_duplicate(self, call, group_id: str, permission: dict) -> bool:
        """Whether the rule was added (False: it was there already, e.g. a racing run added it first)."""
        try:
            call(GroupId=group_id, IpPermissions=[permission])
        except ClientError as exc:
            if error_code(exc) != "InvalidPermission.Duplicate":
                raise
            return False
        return True

    def create_instance_connect_endpoint(
        self, subnet_id: str, group_id: str, client_token: str
    ) -> tuple[str, ActionRecord]:
        """Create an EC2 Instance Connect Endpoint: states every field it means (PreserveClientIp=false, ipv4), with
        the ClientToken that makes a retried or racing request return the same endpoint."""
        detail = (
            f"create an EC2 Instance Connect Endpoint in {subnet_id} with {group_id}, PreserveClientIp=false, "
            f"tagged {'='.join(MANAGED_BY_TAG)}"
        )
        if self.dry_run:
            return f"(new endpoint in {subnet_id})", self._record(CREATE_ENDPOINT_ACTION, subnet_id, detail)
        key, value = MANAGED_BY_TAG
        sent_at = now()
        response = self.ec2.create_instance_connect_endpoint(
            SubnetId=subnet_id,
            SecurityGroupIds=[group_id],
            PreserveClientIp=False,
            IpAddressType="ipv4",
            ClientToken=client_token,
            TagSpecifications=[
                {
                    "ResourceType": "instance-connect-endpoint",
                    "Tags": [{"Key": key, "Value": value}, {"Key": "Name", "Value": ENDPOINT_GROUP_NAME}],
                }
            ],
        )
        endpoint = response["InstanceConnectEndpoint"]
        endpoint_id, state = endpoint["InstanceConnectEndpointId"], endpoint.get("State", "unknown")
        if state not in ("create-in-progress", "create-complete", "update-in-progress", "update-complete"):
            raise RemediationRefused(
                f"the ClientToken {client_token} returned {endpoint_id}, which is {state}: AWS keeps a token for a "
                "while, a later run creates a new endpoint"
            )
        if _created_before(endpoint, sent_at):
            # Like a rule "already allowed (added meanwhile)": the fix is in place, this run did not make it.
            detail = f"EC2 Instance Connect Endpoint {endpoint_id} in {subnet_id} already created by a concurrent run"
            return endpoint_id, self._record(CREATE_ENDPOINT_ACTION, endpoint_id, f"{detail} ({state})")
        return endpoint_id, self._record(CREATE_ENDPOINT_ACTION, endpoint_id, f"{detail} ({state}, ready in minutes)")

    def authorize(self, group_id: str, rules: RuleSet) -> tuple[ActionRecord, RuleSet]:
        """Allow TCP 22 from `rules`; returns the record and the rules this call really added.

        EC2 refuses the whole request when one of its rules exists already (InvalidPermission.Duplicate, e.g.
        another run or a person added it since we read the group): re-read the group, add exactly what is missing.
        """
        if self.dry_run:
            return self._record("authorize-ingress", group_id, f"allow TCP 22 from {rules.describe()}"), rules
        missing = rules
        for _ in range(DUPLICATE_RETRIES):
            try:
                self.ec2.authorize_security_group_ingress(
                    GroupId=group_id, IpPermissions=missing.ip_permissions(self.region)
                )
                break
            except ClientError as exc:
                if error_code(exc) != "InvalidPermission.Duplicate":
                    raise
                missing = rules - current_rules(self.read_group(group_id))
                if not missing:
                    break
        else:
            raise RemediationRefused(f"{group_id} kept changing while TCP 22 rules were added to it")
        added = missing  # what the last, successful request carried (empty when nothing was left to add)
        if not added:
            detail = f"TCP 22 from {rules.describe()} already allowed (added meanwhile by someone else)"
        elif added == rules:
            detail = f"allow TCP 22 from {rules.describe()}"
        else:
            detail = f"allow TCP 22 from {added.describe()} ({(rules - added).describe()} added meanwhile)"
        return self._record("authorize-ingress", group_id, detail), added

    def read_group(self, group_id: str) -> SecurityGroup | None:
        """The group as it is now (a filter, so a deleted group is None rather than an error)."""
        found = paginate(
            self.ec2, "describe_security_groups", "SecurityGroups", Filters=[{"Name": "group-id", "Values": [group_id]}]
        )
        return next((parse_security_group(raw) for raw in found), None)

    def find_group_named_managed(self, vpc_id: str) -> SecurityGroup | None:
        """The VPC's eic-guard-ssh group as it is now, tagged or not (after a racing run created one)."""
        return self.find_group_named(vpc_id, MANAGED_GROUP_NAME)

    def find_group_named(self, vpc_id: str, name: str) -> SecurityGroup | None:
        """The VPC's group of that name as it is now, tagged or not (after a racing run created one)."""
        filters = [{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": [name]}]
        found = paginate(self.ec2, "describe_security_groups", "SecurityGroups", Filters=filters)
        return next((parse_security_group(raw) for raw in found), None)

    def interface_groups(self, eni_ids: list[str]) -> dict[str, tuple[str, ...]]:
        """The current security groups of up to 200 ENIs, one call; a vanished ENI is absent from the answer."""
        assert len(eni_ids) <= FILTER_VALUES_PER_CALL
        found = paginate(
            self.ec2,
            "describe_network_interfaces",
            "NetworkInterfaces",
            Filters=[{"Name": "network-interface-id", "Values": eni_ids}],
        )
        return {raw["NetworkInterfaceId"]: tuple(g["GroupId"] for g in raw.get("Groups", ())) for raw in found}

    def revoke(self, group_id: str, rules: RuleSet) -> ActionRecord:
        detail = f"revoke TCP 22 from {rules.describe()}"
        if not self.dry_run:
            try:
                self.ec2.revoke_security_group_ingress(
                    GroupId=group_id, IpPermissions=rules.ip_permissions(self.region)
                )
            except ClientError as exc:
                if error_code(exc) != "InvalidPermission.NotFound":
                    raise
        return self._record("revoke-ingress", group_id, detail)

    def set_interface_groups(self, eni_id: str, kept: tuple[str, ...], added: str) -> ActionRecord:
        """Attach `added` to the ENI; `kept` must be the ENI's groups as read just before (EC2 replaces the set)."""
        detail = f"attach {added} to {eni_id}, keeping {', '.join(kept) or 'no groups'}"
        if not self.dry_run:
            self.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni_id, Groups=[*kept, added])
        return self._record("attach-security-group", eni_id, detail)

    def enable_imds(self, instance_id: str, http_tokens: str | None) -> ActionRecord:
        """Enable the metadata endpoint, restating the current HttpTokens.

        EC2 gives an omitted HttpTokens a default (historically `optional`, i.e. IMDSv1), unlike HttpEndpoint and
        the hop limit, so the request states it; an unknown current value is not guessed at.
        """
        if http_tokens not in KNOWN_HTTP_TOKENS:
            raise RemediationRefused(f"the instance's current HttpTokens ({http_tokens}) is unknown, so not restated")
        if not self.dry_run:
            self.ec2.modify_instance_metadata_options(
                InstanceId=instance_id, HttpEndpoint="enabled", HttpTokens=http_tokens
            )
        return self._record("enable-imds", instance_id, f"HttpEndpoint=enabled, HttpTokens={http_tokens} (kept)")

    def associate_elastic_ip(self, eni_id: str) -> ActionRecord:
        if self.dry_run:
            return self._record(
                "associate-elastic-ip", eni_id, "allocate a ManagedBy=eic-guard Elastic IP and associate it"
            )
        key, value = MANAGED_BY_TAG
        address = self.ec2.allocate_address(
            Domain="vpc", TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": [{"Key": key, "Value": value}]}]
        )
        try:
            self.ec2.associate_address(AllocationId=address["AllocationId"], NetworkInterfaceId=eni_id)
        except (ClientError, BotoCoreError):
            # Never leave a paid, unattached address behind (nor when throttled until the target's time ran out:
            # aws/retries.ThrottledOutOfTime).
            self.ec2.release_address(AllocationId=address["AllocationId"])
            raise
        return self._record(
            "associate-elastic-ip", eni_id, f"associated {address['PublicIp']} ({address['AllocationId']})"
        )

    def release_address(self, address: ManagedAddress) -> ActionRecord:
        if not self.dry_run:
            if address.association_id:
                self.ec2.disassociate_address(AssociationId=address.association_id)
            self.ec2.release_address(AllocationId=address.allocation_id)
        return self._record(
            "release-elastic-ip",
            address.allocation_id,
            f"release {address.public_ip}: its instance is gone, no longer opted in or no longer allowed a public IP",
        )


def now() -> datetime:
    return datetime.now(UTC)


def _created_before(endpoint: dict, sent_at: datetime) -> bool:
    """Whether CreateInstanceConnectEndpoint returned an endpoint that existed before the request: its ClientToken is
    that of a racing run, which created it first."""
    if endpoint.get("State") != "create-in-progress":
        return True
    created = endpoint.get("CreatedAt")
    if not isinstance(created, datetime):
        return False
    return (created if created.tzinfo else created.replace(tzinfo=UTC)) < sent_at - CREATED_BEFORE_MARGIN


def ssh_by_reference(group_id: str) -> dict:
    """One IpPermissions entry: TCP 22 to or from `group_id` by reference (the endpoint path's rules)."""
    return {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "UserIdGroupPairs": [{"GroupId": group_id}]}
