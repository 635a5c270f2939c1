"""Read-backs of AWS state (moto) as plain values, for assertions: an instance's primary ENI and metadata options,
the ingress rules of a security group."""

from __future__ import annotations

import json

import boto3

from tests.conftest import REGION

# The sources of an ingress permission: (list key, id key within an entry).
CIDR_AND_PREFIX_LIST_SOURCES = (("IpRanges", "CidrIp"), ("Ipv6Ranges", "CidrIpv6"), ("PrefixListIds", "PrefixListId"))
ALL_SOURCES = (*CIDR_AND_PREFIX_LIST_SOURCES, ("UserIdGroupPairs", "GroupId"))


def describe_instance(ec2, instance_id: str) -> dict:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def primary_eni(ec2, instance_id: str) -> dict:
    """The ENI at device index 0."""
    enis = describe_instance(ec2, instance_id)["NetworkInterfaces"]
    return min(enis, key=lambda n: n["Attachment"]["DeviceIndex"])


def primary_eni_id(ec2, instance_id: str) -> str:
    return primary_eni(ec2, instance_id)["NetworkInterfaceId"]


def eni_groups(ec2, instance_id: str) -> list[str]:
    """The groups of the primary ENI (moto does not update the instance-level list, docs/architecture.md §8)."""
    return [g["GroupId"] for g in primary_eni(ec2, instance_id)["Groups"]]


def metadata_options(ec2, instance_id: str) -> dict:
    return describe_instance(ec2, instance_id)["MetadataOptions"]


def metadata_endpoint(ec2, instance_id: str) -> str:
    """HttpEndpoint of the instance's metadata options: "enabled" or "disabled"."""
    return metadata_options(ec2, instance_id)["HttpEndpoint"]


def ingress_rules(group: dict, sources=CIDR_AND_PREFIX_LIST_SOURCES) -> set[tuple]:
    """Every ingress rule of a described group, from `sources`, as (protocol, from port, to port, source,
    description)."""
    rules = set()
    for p in group["IpPermissions"]:
        key = (p["IpProtocol"], p.get("FromPort"), p.get("ToPort"))
        for entries, source in sources:
            rules.update((*key, r[source], r.get("Description")) for r in p.get(entries, ()))
    return rules


def ingress_of(group_id: str, region: str = REGION) -> set[tuple]:
    """`ingress_rules` of the group `group_id`, described in `region`."""
    group = boto3.client("ec2", region).describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    return ingress_rules(group)


def sns_deliveries(sqs, queue_url: str) -> list[dict]:
    """Every SNS delivery a queue subscribed to a topic has received since the last call (each deleted once read)."""
    received = []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages"):
        for message in batch:
            received.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return received
