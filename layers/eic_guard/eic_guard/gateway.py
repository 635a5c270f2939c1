"""Act: the few EC2 writes eic-guard makes. In report mode every write is planned, not made."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from .managed_group import RuleSet
from .models import ActionRecord, ManagedAddress
from .settings import MANAGED_BY_TAG, MANAGED_GROUP_NAME

VANISHED_CODES = frozenset(
    {
        "InvalidInstanceID.NotFound",
        "InvalidNetworkInterfaceID.NotFound",
        "InvalidInstanceID.Malformed",
    }
)
QUOTA_CODES = frozenset({"SecurityGroupsPerInterfaceLimitExceeded", "RulesPerSecurityGroupLimitExceeded"})


def error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "Unknown")


class Ec2Gateway:
    """Executes or plans writes, returning an ActionRecord for each."""

    def __init__(self, ec2: Any, region: str, dry_run: bool):
        self.ec2 = ec2
        self.region = region
        self.dry_run = dry_run

    def _record(self, action: str, resource: str, detail: str) -> ActionRecord:
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

    def authorize(self, group_id: str, rules: RuleSet) -> ActionRecord:
        detail = f"allow TCP 22 from {rules.describe()}"
        if not self.dry_run:
            try:
                self.ec2.authorize_security_group_ingress(
                    GroupId=group_id, IpPermissions=rules.ip_permissions(self.region)
                )
            except ClientError as exc:
                # Another run added the same rule first: the goal state is reached.
                if error_code(exc) != "InvalidPermission.Duplicate":
                    raise
        return self._record("authorize-ingress", group_id, detail)

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

    def set_interface_groups(self, eni_id: str, group_ids: list[str], added: str) -> ActionRecord:
        detail = f"attach {added} to {eni_id}, keeping {', '.join(g for g in group_ids if g != added) or 'no groups'}"
        if not self.dry_run:
            self.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni_id, Groups=group_ids)
        return self._record("attach-security-group", eni_id, detail)

    def enable_imds(self, instance_id: str, http_tokens: str | None) -> ActionRecord:
        # Only HttpEndpoint is sent, so HttpTokens, hop limit and tags-in-metadata stay as they are.
        if not self.dry_run:
            self.ec2.modify_instance_metadata_options(InstanceId=instance_id, HttpEndpoint="enabled")
        return self._record("enable-imds", instance_id, f"HttpEndpoint=enabled, HttpTokens stays {http_tokens}")

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
        except ClientError:
            # Never leave a paid, unattached address behind.
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
            f"release {address.public_ip}: its instance is gone or no longer opted in",
        )
