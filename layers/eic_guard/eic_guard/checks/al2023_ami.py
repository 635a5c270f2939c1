"""al2023-ami: Amazon Linux 2023 standard AMIs ship the EC2 Instance Connect agent."""

from __future__ import annotations

import re

from ..models import CheckResult, Instance
from .base import CheckContext, failed, passed

ID = "al2023-ami"
PERMISSIONS = ("ec2:DescribeImages",)
REMEDIATION_PERMISSIONS: tuple[str, ...] = ()
AMAZON_OWNER_ID = "137112412989"
_STANDARD_NAME = re.compile(r"^al2023-ami-2023\.")
UNKNOWN = "ami-unknown"


def evaluate(instance: Instance, ctx: CheckContext) -> CheckResult:
    image = ctx.snapshot.images.get(instance.image_id or "")
    if image is None or image.state not in ("available", "deprecated"):
        return failed(UNKNOWN)
    if image.owner_id != AMAZON_OWNER_ID:
        return failed(f"{image.image_id} ({image.name}) is not owned by Amazon ({AMAZON_OWNER_ID})")
    if not image.name.startswith("al2023-ami-"):
        return failed(f"{image.name} is not Amazon Linux 2023 standard")
    if "minimal" in image.name:
        return failed(f"{image.name} is AL2023 minimal, which does not include EC2 Instance Connect")
    if "ecs" in image.name:
        return failed(f"{image.name} is ECS-optimized, not AL2023 standard")
    if not _STANDARD_NAME.match(image.name):
        return failed(f"{image.name} is not Amazon Linux 2023 standard")
    return passed(image.name)


def remediate(fix, instance, remediator, actions) -> None:  # pragma: no cover - never asked: no Fix is returned
    raise NotImplementedError(f"{ID} cannot be remediated in place")
