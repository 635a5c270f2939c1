"""Build realistic accounts in the simulator (moto): used by the demo, the tests and the benchmarks.

Only talks to whatever endpoint the client given points at; never used by the Lambda functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

AMAZON_OWNER_ID = "137112412989"
DEFAULT_TAG = ("eic-guard:managed", "true")
# The role AWS Organizations creates in every account it creates: how the management account administers it.
ORGANIZATION_ACCESS_ROLE = "OrganizationAccountAccessRole"


@dataclass
class Network:
    """A VPC with an internet gateway, a public and a private subnet."""

    vpc_id: str
    public_subnet_id: str
    private_subnet_id: str
    internet_gateway_id: str
    main_route_table_id: str
    public_route_table_id: str
    app_group_id: str
    extra: dict[str, str] = field(default_factory=dict)


class SimulatedAccount:
    """A thin builder over an EC2 client pointed at moto."""

    def __init__(self, ec2: Any, ssm: Any | None = None):
        self.ec2 = ec2
        self.ssm = ssm

    @classmethod
    def of(cls, session: Any, region: str) -> SimulatedAccount:
        """The account a boto3 session's credentials act in (e.g. a member_session)."""
        return cls(session.client("ec2", region_name=region), session.client("ssm", region_name=region))

    # ---- AMIs -------------------------------------------------------------------------------------------------
    def al2023_ami(self) -> str:
        """The real AL2023 AMI id: from the SSM public parameter when present, else from DescribeImages."""
        if self.ssm is not None:
            try:
                name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
                return self.ssm.get_parameter(Name=name)["Parameter"]["Value"]
            except Exception:  # noqa: BLE001 - newer regions have no such data in moto
                pass
        return self.amazon_image("al2023-ami-2023.*-x86_64")

    def amazon_image(self, name_pattern: str) -> str:
        images = self.ec2.describe_images(
            Owners=[AMAZON_OWNER_ID], Filters=[{"Name": "name", "Values": [name_pattern]}]
        )
        ordered = sorted(images["Images"], key=lambda i: i.get("CreationDate", ""), reverse=True)
        if not ordered:
            raise LookupError(f"no Amazon image named {name_pattern}")
        return ordered[0]["ImageId"]

    def own_image(self, name: str, description: str = "") -> str:
        """An AMI registered in this account (so not owned by Amazon)."""
        return self.ec2.register_image(
            Name=name,
            Description=description or name,
            Architecture="x86_64",
            RootDeviceName="/dev/xvda",
            VirtualizationType="hvm",
        )["ImageId"]

    # ---- networks ---------------------------------------------------------------------------------------------
    def network(self, cidr: str = "10.0.0.0/16", name: str = "demo") -> Network:
        ec2 = self.ec2
        vpc_id = ec2.create_vpc(CidrBlock=cidr, TagSpecifications=[_named("vpc", name)])["Vpc"]["VpcId"]
        base = cidr.split(".")
        public = ec2.create_subnet(
            VpcId=vpc_id,
            CidrBlock=f"{base[0]}.{base[1]}.1.0/24",
            TagSpecifications=[_named("subnet", f"{name}-public")],
        )["Subnet"]["SubnetId"]
        private = ec2.create_subnet(
            VpcId=vpc_id,
            CidrBlock=f"{base[0]}.{base[1]}.2.0/24",
            TagSpecifications=[_named("subnet", f"{name}-private")],
        )["Subnet"]["SubnetId"]
        ec2.modify_subnet_attribute(SubnetId=public, MapPublicIpOnLaunch={"Value": True})
        igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)
        tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]
        main = next(t["RouteTableId"] for t in tables if any(a.get("Main") for a in t.get("Associations", ())))
        public_rt = ec2.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"]
        ec2.create_route(RouteTableId=public_rt, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
        ec2.associate_route_table(RouteTableId=public_rt, SubnetId=public)
        app = ec2.create_security_group(GroupName=f"{name}-app", Description="application traffic", VpcId=vpc_id)[
            "GroupId"
        ]
        return Network(vpc_id, public, private, igw, main, public_rt, app)

    def security_group(self, network: Network, name: str, permissions: list[dict]) -> str:
        group_id = self.ec2.create_security_group(GroupName=name, Description=name, VpcId=network.vpc_id)["GroupId"]
        if permissions:
            self.ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=permissions)
        return group_id

    def block_ssh_in_nacl(self, vpc_id: str, subnet_id: str, rule_number: int = 50) -> str:
        """A custom NACL on `subnet_id` that denies TCP 22 before allowing everything else."""
        ec2 = self.ec2
        acl = ec2.create_network_acl(VpcId=vpc_id)["NetworkAcl"]["NetworkAclId"]
        for egress in (False, True):
            ec2.create_network_acl_entry(
                NetworkAclId=acl,
                RuleNumber=100,
                Protocol="-1",
                RuleAction="allow",
                Egress=egress,
                CidrBlock="0.0.0.0/0",
            )
        ec2.create_network_acl_entry(
            NetworkAclId=acl,
            RuleNumber=rule_number,
            Protocol="6",
            RuleAction="deny",
            Egress=False,
            CidrBlock="0.0.0.0/0",
            PortRange={"From": 22, "To": 22},
        )
        associations = ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])
        for existing in associations["NetworkAcls"]:
            for association in existing["Associations"]:
                if association["SubnetId"] == subnet_id:
                    ec2.replace_network_acl_association(
                        AssociationId=association["NetworkAclAssociationId"], NetworkAclId=acl
                    )
        return acl

    # ---- EC2 Instance Connect Endpoints (simulated_eice.py teaches moto the API) ----------------------------------
    def instance_connect_endpoint(
        self,
        subnet_id: str,
        group_ids: list[str] | None = None,
        *,
        preserve_client_ip: bool = False,
        ip_address_type: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> dict:
        """An endpoint in `subnet_id` with `group_ids` (none: the VPC's default group), as CreateInstanceConnectEndpoint
        answers it (`create-in-progress`; the next describe shows it `create-complete`)."""
        kwargs: dict[str, Any] = {"SubnetId": subnet_id, "PreserveClientIp": preserve_client_ip}
        if group_ids:
            kwargs["SecurityGroupIds"] = group_ids
        if ip_address_type:
            kwargs["IpAddressType"] = ip_address_type
        if tags:
            kwargs["TagSpecifications"] = [
                {"ResourceType": "instance-connect-endpoint", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ]
        return self.ec2.create_instance_connect_endpoint(**kwargs)["InstanceConnectEndpoint"]

    def egress_group(self, network: Network, name: str, permissions: list[dict]) -> str:
        """A group with exactly `permissions` as egress (its default allow-all egress rule revoked)."""
        group_id = self.ec2.create_security_group(GroupName=name, Description=name, VpcId=network.vpc_id)["GroupId"]
        self.ec2.revoke_security_group_egress(
            GroupId=group_id, IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
        )
        if permissions:
            self.ec2.authorize_security_group_egress(GroupId=group_id, IpPermissions=permissions)
        return group_id

    # ---- instances --------------------------------------------------------------------------------------------
    def launch_drifted(self, network: Network, *, subnet_id: str | None = None, public_ip: bool = True) -> str:
        """One opted-in AL2023 instance in `network` (its public subnet unless told) with only the application
        group (no SSH rule for EIC) and the metadata endpoint off (IMDSv2 required): what remediate mode fixes."""
        [instance] = self.launch(
            image_id=self.al2023_ami(),
            subnet_id=subnet_id or network.public_subnet_id,
            group_ids=[network.app_group_id],
            public_ip=public_ip,
            imds="disabled",
        )
        return instance

    def launch(
        self,
        *,
        image_id: str,
        subnet_id: str,
        group_ids: list[str],
        count: int = 1,
        tags: dict[str, str] | None = None,
        public_ip: bool | None = None,
        imds: str = "enabled",
        http_tokens: str = "required",
        opted_in: bool = True,
        name: str | None = None,
    ) -> list[str]:
        """Launch `count` instances; opted-in ones carry eic-guard:managed=true."""
        all_tags = dict(tags or {})
        if opted_in:
            all_tags.setdefault(*DEFAULT_TAG)
        if name:
            all_tags["Name"] = name
        kwargs: dict[str, Any] = {
            "ImageId": image_id,
            "MinCount": count,
            "MaxCount": count,
            "InstanceType": "t3.micro",
            "MetadataOptions": {"HttpEndpoint": imds, "HttpTokens": http_tokens},
        }
        if all_tags:
            kwargs["TagSpecifications"] = [
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in all_tags.items()]}
            ]
        if public_ip is None:
            kwargs.update(SubnetId=subnet_id, SecurityGroupIds=group_ids)
        else:
            kwargs["NetworkInterfaces"] = [
                {"DeviceIndex": 0, "SubnetId": subnet_id, "Groups": group_ids, "AssociatePublicIpAddress": public_ip}
            ]
        return [i["InstanceId"] for i in self.ec2.run_instances(**kwargs)["Instances"]]


# ---- organizations ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SimulatedOrganization:
    """An AWS Organization: its id, the management account (the caller's) and the member accounts by name."""

    id: str
    management_id: str
    members: dict[str, str]  # name -> account id, in creation order


def create_organization(organizations: Any, member_names: tuple[str, ...] | list[str]) -> SimulatedOrganization:
    """An organization run from the caller's account, with one new member account per name (moto creates them
    ACTIVE at once; AWS would create each one's OrganizationAccountAccessRole)."""
    organization = organizations.create_organization(FeatureSet="ALL")["Organization"]
    members = {}
    for name in member_names:
        status = organizations.create_account(Email=f"{name}@example.com", AccountName=name)["CreateAccountStatus"]
        members[name] = status["AccountId"]
    return SimulatedOrganization(organization["Id"], organization["MasterAccountId"], members)


def member_session(
    account_id: str,
    role_name: str = ORGANIZATION_ACCESS_ROLE,
    *,
    region: str = "us-east-1",
    endpoint_url: str | None = None,
    session_name: str = "eic-guard-simulated",
    source: Any = None,
) -> Any:
    """A boto3 session acting in `account_id`: the caller (`source`, default a new session) assumes its role
    (moto maps the temporary credentials to the role's account). `endpoint_url` defaults to AWS_ENDPOINT_URL.

    The new session shares the source's parsed service models (building them again costs ~0.2 s per session)."""
    import boto3
    import botocore.session

    source = source or boto3.Session(region_name=region)
    role_arn = f"arn:aws:iam::{account_id}:role/{role_name}"
    sts = source.client("sts", region_name=region, endpoint_url=endpoint_url)
    credentials = sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name)["Credentials"]
    member = botocore.session.Session()
    member.register_component("data_loader", source._session.get_component("data_loader"))
    member.set_credentials(credentials["AccessKeyId"], credentials["SecretAccessKey"], credentials["SessionToken"])
    return boto3.Session(botocore_session=member, region_name=region)


def create_member_role(iam: Any, role_name: str, trusted_account: str) -> str:
    """The member role the member StackSet deploys (member/template.yaml), trusting the central account; its ARN.

    moto does not evaluate IAM policies: the role is there to be found and used, its permissions are not tested."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{trusted_account}:root"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    role = iam.create_role(
        RoleName=role_name,
        AssumeRolePolicyDocument=json.dumps(trust),
        Description="eic-guard member role (simulated)",
    )["Role"]
    return role["Arn"]


def _named(resource_type: str, name: str) -> dict:
    return {"ResourceType": resource_type, "Tags": [{"Key": "Name", "Value": name}]}


def ssh_from(*cidrs: str, port_from: int = 22, port_to: int = 22, protocol: str = "tcp") -> dict:
    """An IpPermissions entry (IPv4 and IPv6 CIDRs are told apart by ':')."""
    permission: dict[str, Any] = {"IpProtocol": protocol}
    if protocol != "-1":
        permission.update(FromPort=port_from, ToPort=port_to)
    v4 = [{"CidrIp": c} for c in cidrs if ":" not in c]
    v6 = [{"CidrIpv6": c} for c in cidrs if ":" in c]
    if v4:
        permission["IpRanges"] = v4
    if v6:
        permission["Ipv6Ranges"] = v6
    return permission
