"""imds-enabled: EIC pushes the one-time key through the instance metadata service."""

from __future__ import annotations

from ..models import CheckResult, Fix, Instance
from .base import CheckContext, passed

ID = "imds-enabled"
TITLE = "The instance metadata service is enabled (EC2 Instance Connect pushes the one-time key through it)"
PERMISSIONS = ("ec2:DescribeInstances",)
REMEDIATION_PERMISSIONS = ("ec2:ModifyInstanceMetadataOptions",)
ENABLE_IMDS = "enable-imds"
IMDS_DISABLED = "imds-disabled"  # the failure kind


def evaluate(instance: Instance, ctx: CheckContext) -> CheckResult:
    if instance.http_endpoint == "enabled":
        return passed(f"metadata endpoint enabled (HttpTokens={instance.http_tokens})")
    fix = Fix(
        ENABLE_IMDS,
        instance.instance_id,
        f"ModifyInstanceMetadataOptions HttpEndpoint=enabled (HttpTokens stays {instance.http_tokens})",
        (("instance_id", instance.instance_id),),
    )
    endpoint = instance.http_endpoint or "unknown"
    facts = (
        ("instance_id", instance.instance_id),
        ("http_endpoint", endpoint),
        ("http_tokens", instance.http_tokens or "unknown"),
    )
    return CheckResult("fail", f"metadata endpoint is {endpoint}", fix, kind=IMDS_DISABLED, facts=facts)


def remediate(fix: Fix, instance: Instance, remediator, actions: list) -> None:
    """Enable the metadata endpoint; nothing else about the metadata options changes."""
    actions.append(remediator.gateway.enable_imds(instance.instance_id, instance.http_tokens))
