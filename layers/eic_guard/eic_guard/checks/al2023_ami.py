"""al2023-ami: the instance's image ships the EC2 Instance Connect agent (the check id is a contract; it predates the
`allowed_images` setting, EIC_GUARD_ALLOWED_IMAGES / template parameter AllowedImages).

- `al2023` (default, docs/architecture.md §2): Amazon Linux 2023 standard (`al2023-ami-2023.*`), owned by Amazon
  (137112412989), neither minimal nor ECS-optimized.
- `eic-preinstalled`: the images the EC2 User Guide lists as coming with EC2 Instance Connect pre-installed, as far
  as an image's owner and name prove it. "Install EC2 Instance Connect on your EC2 instances",
  https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-instance-connect-set-up.html : pre-installed on "AL2023
  standard AMI", "Amazon Linux 2 2.0.20190618 or later", "Ubuntu 20.04 or later" (and macOS Sonoma 14.2.1,
  Ventura 13.6.3, Monterey 12.7.2 or later); to be installed by hand on Amazon Linux 2 before 2.0.20190618, "AL2023
  minimal AMI or Amazon ECS-optimized AMI", CentOS Stream, RHEL, Ubuntu 16.04 and 18.04.
  Canonical's owner accounts (099720109477, GovCloud 513442679011, China 837727238323) and its name pattern
  `ubuntu/images/hvm-ssd[-gp3]/ubuntu-<codename>-<YY.MM>-<amd64|arm64>-server-<serial>`: "Find Ubuntu images on AWS",
  https://documentation.ubuntu.com/aws/en/latest/aws-how-to/instances/find-ubuntu-images/ .

Conservative on purpose: an image passes only when its owner AND its name match a listed family. Not recognised,
so failing: macOS (no published name pattern to match), Ubuntu minimal / Pro / EKS / daily images and AWS Marketplace
copies (owner 679593333241) - the User Guide names no variant and their package sets differ -, Amazon Linux 2
minimal and every image whose name does not follow the published pattern. Amazon's own images are recognised by
owner 137112412989 only (the commercial partition), as before this setting.

Every failure carries `kind` ("ami-unknown" or "ami-not-allowed") and the facts image_id, image_name, owner_id,
allowed_images and `family`, one of FAMILIES, so the guidance can say "relaunch from AL2023" or "install the
ec2-instance-connect package".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..models import CheckResult, Image, Instance
from .base import CheckContext, passed

ID = "al2023-ami"
TITLE = "The instance's image ships the EC2 Instance Connect agent (AllowedImages)"
PERMISSIONS = ("ec2:DescribeImages",)
REMEDIATION_PERMISSIONS: tuple[str, ...] = ()
AMAZON_OWNER_ID = "137112412989"
CANONICAL_OWNER_IDS = ("099720109477", "513442679011", "837727238323")  # aws, aws-us-gov, aws-cn
UNKNOWN = "ami-unknown"
NOT_ALLOWED = "ami-not-allowed"

FAMILIES = (
    "al2023",
    "al2023-minimal",
    "ecs-optimized",
    "amazon-linux-2",
    "amazon-linux-2-minimal",
    "amazon-linux",  # the first Amazon Linux (amzn-ami-*), end of life
    "ubuntu",
    "ubuntu-minimal",
    "ubuntu-pro",
    "ubuntu-eks",
    "other",
)
# The first releases the User Guide lists with EC2 Instance Connect pre-installed.
FIRST_AMAZON_LINUX_2 = "20190618"
FIRST_UBUNTU = (20, 4)
# Real names: amzn2-ami-hvm-2.0.20260727.0-x86_64-gp2, amzn2-ami-kernel-5.10-hvm-2.0.20260727.0-arm64-gp2
# (tests/fixtures/ami), amzn2-ami-hvm-2.0.20190618-x86_64-gp2 (2019 names had no `.N` build suffix).
_AMAZON_LINUX_2 = re.compile(
    r"^amzn2-ami-(?:kernel-\d+\.\d+-)?hvm-2\.0\.(?P<date>\d{8})(?:\.\d+)?-(?:x86_64|arm64)-(?:gp2|ebs)$"
)
_UBUNTU_SERVER = re.compile(
    r"^ubuntu/images/hvm-ssd(?:-gp3)?/ubuntu-[a-z]+-(?P<major>\d{2})\.(?P<minor>\d{2})-(?:amd64|arm64)-server-"
    r"\d{8}(?:\.\d+)?$"
)
_AL2023_STANDARD = re.compile(r"^al2023-ami-2023\.")

_ALLOWS = {
    "al2023": "AllowedImages=al2023 allows AL2023 standard from Amazon",
    "eic-preinstalled": "AllowedImages=eic-preinstalled allows AL2023 standard and Amazon Linux 2 2.0.20190618 or "
    "later from Amazon, Ubuntu 20.04 or later server from Canonical",
}
_NOT_AMAZON = f"is not owned by Amazon ({AMAZON_OWNER_ID})"
_NOT_CANONICAL = f"is not owned by Canonical ({', '.join(CANONICAL_OWNER_IDS)})"


@dataclass(frozen=True)
class Family:
    """What an image's name says it is (its owner is judged separately)."""

    name: str  # one of FAMILIES
    standard: bool = False  # the name follows the published pattern of the family's standard image
    version: str | None = None  # "2.0.20190618" (Amazon Linux 2) or "22.04" (Ubuntu)


_UBUNTU_VARIANTS = {"ubuntu-minimal": "Minimal", "ubuntu-pro": "Pro", "ubuntu-eks": "EKS"}


def family_of(name: str) -> Family:
    # "minimal" and "ecs" anywhere count: a variant mistaken for the standard image would pass wrongly.
    if name.startswith(("al2023-ami-", "amzn2-ami-", "amzn-ami-")) and "ecs" in name:
        return Family("ecs-optimized")
    if name.startswith("al2023-ami-"):
        if "minimal" in name:
            return Family("al2023-minimal")
        return Family("al2023", standard=bool(_AL2023_STANDARD.match(name)))
    if name.startswith("amzn2-ami-"):
        if "minimal" in name:
            return Family("amazon-linux-2-minimal")
        match = _AMAZON_LINUX_2.match(name)
        return Family("amazon-linux-2", True, f"2.0.{match['date']}") if match else Family("amazon-linux-2")
    if name.startswith("amzn-ami-"):
        return Family("amazon-linux")
    if name.startswith("ubuntu"):
        if "minimal" in name:
            return Family("ubuntu-minimal")
        if name.startswith("ubuntu-pro") or "-pro-" in name:
            return Family("ubuntu-pro")
        if name.startswith("ubuntu-eks"):
            return Family("ubuntu-eks")
        if name.startswith("ubuntu/"):
            match = _UBUNTU_SERVER.match(name)
            return Family("ubuntu", True, f"{match['major']}.{match['minor']}") if match else Family("ubuntu")
    return Family("other")


def evaluate(instance: Instance, ctx: CheckContext) -> CheckResult:
    policy = ctx.settings.allowed_images
    image = ctx.snapshot.images.get(instance.image_id or "")
    if image is None or image.state not in ("available", "deprecated"):
        return _unknown(instance, image, policy)
    family = family_of(image.name)
    problem = _al2023_problem(image, family) if policy == "al2023" else _preinstalled_problem(image, family)
    if problem is None:
        return passed(image.name)
    owner = f"but by {image.owner_id}" if problem in (_NOT_AMAZON, _NOT_CANONICAL) else f"(owner {image.owner_id})"
    # Whether the image ships EIC after all (AllowedImages=eic-preinstalled would pass it): guidance says so only then.
    preinstalled = _preinstalled_problem(image, family) is None
    return CheckResult(
        "fail",
        f"{image.image_id} ({image.name}) {problem} {owner}; {_ALLOWS[policy]}",
        kind=NOT_ALLOWED,
        facts=(*_facts(image.image_id, policy, image, family), ("preinstalled", "yes" if preinstalled else "no")),
    )


def _al2023_problem(image: Image, family: Family) -> str | None:
    if image.owner_id != AMAZON_OWNER_ID:
        return _NOT_AMAZON
    if family.name == "al2023-minimal":
        return "is AL2023 minimal, which does not include EC2 Instance Connect"
    if family.name == "ecs-optimized":
        return "is ECS-optimized, which does not include EC2 Instance Connect"
    if family.name != "al2023" or not family.standard:
        return "is not Amazon Linux 2023 standard"
    return None


def _preinstalled_problem(image: Image, family: Family) -> str | None:
    match family.name:
        case "al2023":
            return _al2023_problem(image, family)
        case "amazon-linux-2":
            if image.owner_id != AMAZON_OWNER_ID:
                return _NOT_AMAZON
            if not family.standard:
                return "is not a standard Amazon Linux 2 image name"
            if family.version < f"2.0.{FIRST_AMAZON_LINUX_2}":  # both 2.0.YYYYMMDD: text order is date order
                return f"is Amazon Linux 2 {family.version}, older than 2.0.{FIRST_AMAZON_LINUX_2}"
            return None
        case "ubuntu":
            if image.owner_id not in CANONICAL_OWNER_IDS:
                return _NOT_CANONICAL
            if not family.standard:
                return "is not a standard Ubuntu server image name"
            major, minor = (int(part) for part in family.version.split("."))
            if (major, minor) < FIRST_UBUNTU:
                return f"is Ubuntu {family.version}, older than 20.04"
            return None
        case "al2023-minimal":
            return "is AL2023 minimal, which does not include EC2 Instance Connect"
        case "ecs-optimized":
            return "is ECS-optimized, which does not include EC2 Instance Connect"
        case "amazon-linux-2-minimal":
            return "is Amazon Linux 2 minimal, not listed with EC2 Instance Connect pre-installed"
        case "amazon-linux":
            return "is the first Amazon Linux, not listed with EC2 Instance Connect pre-installed"
        case "ubuntu-minimal" | "ubuntu-pro" | "ubuntu-eks":
            return f"is an Ubuntu {_UBUNTU_VARIANTS[family.name]} image, not a standard Ubuntu server image"
        case _:
            return "is not an image listed with EC2 Instance Connect pre-installed"


def _unknown(instance: Instance, image: Image | None, policy: str) -> CheckResult:
    """Deregistered, disabled or no longer returned by DescribeImages: nothing says what it runs."""
    facts = _facts(instance.image_id or "", policy, image, family_of(image.name) if image else None)
    if image is not None:
        facts += (("state", image.state),)
    return CheckResult("fail", UNKNOWN, kind=UNKNOWN, facts=facts)


def _facts(image_id: str, policy: str, image: Image | None, family: Family | None) -> tuple[tuple[str, str], ...]:
    facts = [("image_id", image_id)]
    if image is not None and family is not None:
        facts += [("image_name", image.name), ("owner_id", image.owner_id), ("family", family.name)]
        if family.version:
            facts.append(("version", family.version))
    facts.append(("allowed_images", policy))
    return tuple(facts)


def remediate(fix, instance, remediator, actions) -> None:  # pragma: no cover - never asked: no Fix is returned
    raise NotImplementedError(f"{ID} cannot be remediated in place")
