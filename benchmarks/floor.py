"""The floor: the least a scanner can do on this fleet, with bare boto3.

Per region it pages DescribeInstances (same filters as eic-guard), makes one DescribeSecurityGroups and one
DescribeImages over the union of ids, and computes three basic checks: a public IPv4 (not applicable while stopped),
TCP 22 allowed from every EIC IPv4 prefix by the primary ENI's groups, and an Amazon-owned AL2023 standard AMI.
No report, no exclusions, no route/NACL/IMDS checks, no writes. eic-guard's figures are given as ratios to this.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

SCANNED_STATES = ["pending", "running", "stopping", "stopped"]
AMAZON = "137112412989"
AL2023 = re.compile(r"^al2023-ami-2023\.")


def _ssh_sources(group: dict) -> list[Any]:
    sources = []
    for permission in group.get("IpPermissions", ()):
        protocol = str(permission.get("IpProtocol"))
        if protocol not in ("-1", "tcp", "6"):
            continue
        low, high = permission.get("FromPort"), permission.get("ToPort")
        if protocol != "-1" and low is not None and not (low <= 22 <= high):
            continue
        sources += [ipaddress.ip_network(r["CidrIp"], strict=False) for r in permission.get("IpRanges", ())]
    return sources


def scan_region(ec2: Any, eic: list[Any], tag: tuple[str, str]) -> dict[str, str]:
    """instance id -> "compliant" | "noncompliant" for one region."""
    rows = []
    group_ids: set[str] = set()
    image_ids: set[str] = set()
    filters = [{"Name": f"tag:{tag[0]}", "Values": [tag[1]]}, {"Name": "instance-state-name", "Values": SCANNED_STATES}]
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                enis = instance.get("NetworkInterfaces", ())
                primary = min(enis, key=lambda n: n["Attachment"]["DeviceIndex"], default=None)
                groups = tuple(g["GroupId"] for g in (primary["Groups"] if primary else instance["SecurityGroups"]))
                public = bool(instance.get("PublicIpAddress")) or any(
                    (n.get("Association") or {}).get("PublicIp") for n in enis
                )
                rows.append(
                    (instance["InstanceId"], instance["State"]["Name"], public, groups, instance.get("ImageId"))
                )
                group_ids.update(groups)
                image_ids.add(instance.get("ImageId"))
    sources = {}
    if group_ids:
        for group in ec2.describe_security_groups(GroupIds=sorted(group_ids))["SecurityGroups"]:
            sources[group["GroupId"]] = _ssh_sources(group)
    good_images = set()
    if image_ids:
        images = ec2.describe_images(
            Filters=[{"Name": "image-id", "Values": sorted(i for i in image_ids if i)}], IncludeDeprecated=True
        )["Images"]
        good_images = {
            i["ImageId"]
            for i in images
            if i.get("OwnerId") == AMAZON
            and AL2023.match(i.get("Name", ""))
            and "minimal" not in i["Name"]
            and "ecs" not in i["Name"]
        }
    covered: dict[tuple[str, ...], bool] = {}
    verdicts = {}
    for instance_id, state, public, groups, image_id in rows:
        if groups not in covered:
            allowed = [s for g in groups for s in sources.get(g, ())]
            covered[groups] = all(any(p.subnet_of(s) for s in allowed if s.version == p.version) for p in eic)
        ok = (public or state in ("stopped", "stopping")) and covered[groups] and image_id in good_images
        verdicts[instance_id] = "compliant" if ok else "noncompliant"
    return verdicts


def scan(
    session: Any,
    regions: list[str],
    eic_by_region: dict[str, list[Any]],
    tag: tuple[str, str] = ("eic-guard:managed", "true"),
) -> dict[str, str]:
    verdicts: dict[str, str] = {}
    for region in regions:
        verdicts.update(scan_region(session.client("ec2", region_name=region), eic_by_region[region], tag))
    return verdicts
