"""The connect path of an instance: how EC2 Instance Connect reaches it (docs/architecture.md §13).

`public`: the instance's public IPv4 address, TCP 22 from the regional EIC ranges, an internet route (the EC2 User
Guide's "Connect using EC2 Instance Connect"). `endpoint`: an EC2 Instance Connect Endpoint in its VPC, which proxies
TCP from the endpoint's network interface to the instance's private address (the EC2 User Guide's "Connect to your
instances using EC2 Instance Connect Endpoint",
https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/connect-with-ec2-instance-connect-endpoint.html).

The setting `ConnectPath` chooses (`auto` by default) and the instance tag `eic-guard:connect-path` (`public` or
`endpoint`) overrides it; any other tag value is an error for that instance, which is then neither checked nor changed.
`auto`: an instance with a public IPv4 address takes the public path; one without takes the endpoint path when its VPC
has an endpoint (one that exists: being created, or created) or `CreateEndpoints` is on, else the public path (so
today's behaviour and the Elastic IP opt-in stay). A stopped instance has no auto-assigned address while stopped: it
takes the endpoint path only when its VPC has an endpoint, never because of CreateEndpoints.
"""

from __future__ import annotations

from ..models import CheckResult, Instance
from ..settings import CONNECT_PATH_TAG, CONNECT_PATHS
from .base import CheckContext, not_applicable

PUBLIC = "public"
ENDPOINT = "endpoint"
STOPPED = ("stopped", "stopping")


def tag_error(instance: Instance) -> str | None:
    """Why the instance's eic-guard:connect-path tag is unusable, or None (no tag, or a valid one)."""
    value = instance.tag(CONNECT_PATH_TAG)
    if value is None or value in CONNECT_PATHS:
        return None
    return (
        f"{CONNECT_PATH_TAG}={value!r} is not a connect path (use {' or '.join(CONNECT_PATHS)}): the instance is "
        "neither checked nor changed"
    )


def connect_path(instance: Instance, ctx: CheckContext) -> str:
    """`public` or `endpoint` for this instance (a bad tag is ignored here: see tag_error)."""
    key = ("connect-path", instance.instance_id)
    known = ctx.memo.get(key)
    if known is None:
        known = ctx.memo[key] = _decide(instance, ctx)
    return known


def _decide(instance: Instance, ctx: CheckContext) -> str:
    tagged = instance.tag(CONNECT_PATH_TAG)
    if tagged in CONNECT_PATHS:
        return tagged
    chosen = ctx.settings.connect_path
    if chosen != "auto":
        return chosen
    if instance.public_ipv4:
        return PUBLIC
    if ctx.snapshot.endpoint_for(instance.vpc_id) is not None:
        return ENDPOINT
    if ctx.settings.create_endpoints and instance.state not in STOPPED:
        # A stopped instance's missing address says nothing (an auto-assigned one exists only while it runs): it
        # does not make eic-guard create an endpoint.
        return ENDPOINT
    return PUBLIC


def elsewhere(path: str) -> CheckResult:
    """The result of a check of the other path for an instance that takes `path`."""
    return not_applicable(f"the instance takes the {path} connect path")
