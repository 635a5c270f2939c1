"""EC2 Instance Connect Endpoints in the simulator: moto 5.2.5 has no such API (docs/architecture.md §8, §13).

`install()` teaches moto's EC2 the four endpoint calls, shaped by the EC2 API reference, so that both `mock_aws` and
a ThreadedMotoServer of this process answer them. Only the demo and the tests install it; the CLI and the functions
always call the real API. Everything lives in this one module: drop it when moto gains the API.

What it emulates, and where AWS says so:
- CreateInstanceConnectEndpoint
  (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateInstanceConnectEndpoint.html): `SubnetId`
  (required), `SecurityGroupIds` (at most 16, of the subnet's VPC; none = the VPC's default group),
  `PreserveClientIp` (default false; only on `ipv4` endpoints), `IpAddressType` (default from the subnet's CIDRs:
  `dualstack` with an IPv6 CIDR, else `ipv4`), `ClientToken` (the same token with the same request returns the same
  endpoint; with another request `IdempotentParameterMismatch`), `TagSpecifications` (resource type
  `instance-connect-endpoint`), `DryRun` (`DryRunOperation`). The answer is `create-in-progress`; a real network
  interface (type `ec2_instance_connect_endpoint`, requester-managed) is made in the subnet carrying the endpoint's
  groups.
- DescribeInstanceConnectEndpoints
  (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeInstanceConnectEndpoints.html): ids (an unknown
  one is `InvalidInstanceConnectEndpointId.NotFound`), filters `instance-connect-endpoint-id`, `state`, `subnet-id`,
  `vpc-id`, `tag:<key>`, `tag-key`, `tag-value` (values take EC2's `*` and `?` wildcards; another name is
  `InvalidParameterValue`), `MaxResults` 1-50 with `NextToken`, `DryRun`.
- DeleteInstanceConnectEndpoint
  (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DeleteInstanceConnectEndpoint.html): answers
  `delete-in-progress` (its network interface, with the endpoint's groups, still there); the endpoint then shows
  `delete-complete`, its interface gone, and stays listed.
- ModifyInstanceConnectEndpoint
  (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ModifyInstanceConnectEndpoint.html): groups, IP
  address type, PreserveClientIp, only on a `create-complete` endpoint; `update-in-progress`, then `update-complete`.
- The endpoint itself (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_Ec2InstanceConnectEndpoint.html),
  and the quotas of the EC2 User Guide's "Create an EC2 Instance Connect Endpoint" / "Quotas for EC2 Instance Connect
  Endpoint": one endpoint per VPC and 5 per account and Region. Both refuse with `ResourceLimitExceeded` ("You've
  reached the quota for the maximum number of Instance Connect Endpoints ..."), the code and wording AWS answers in
  practice (the API reference lists no dedicated code). An endpoint counts until it is `delete-complete` or
  `create-failed`.

Creation and deletion take minutes in AWS; here an endpoint moves on to its next state after `TRANSITION_SECONDS`
(0 by default: the next describe sees it done). `set_state` pins an endpoint's state (and message) for a test or a
demo scenario, e.g. a `create-failed` or a lasting `create-in-progress` endpoint.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

STATES = (
    "create-in-progress",
    "create-complete",
    "create-failed",
    "delete-in-progress",
    "delete-complete",
    "delete-failed",
    "update-in-progress",
    "update-complete",
    "update-failed",
)
NEXT_STATE = {
    "create-in-progress": "create-complete",
    "delete-in-progress": "delete-complete",
    "update-in-progress": "update-complete",
}
NOT_COUNTED = frozenset({"delete-complete", "create-failed"})  # no longer held against the quotas
PER_VPC = 1
PER_REGION = 5
MAX_GROUPS = 16
MAX_RESULTS = (1, 50)
DEFAULT_MAX_RESULTS = 50
TRANSITION_SECONDS = 0.0
RESOURCE_TYPE = "instance-connect-endpoint"
INTERFACE_TYPE = "ec2_instance_connect_endpoint"
FILTERS = ("instance-connect-endpoint-id", "state", "subnet-id", "vpc-id", "tag-key", "tag-value")

_INSTALL_LOCK = threading.Lock()
_installed = False


@dataclass
class Endpoint:
    """One endpoint as the backend keeps it."""

    id: str
    account_id: str
    region: str
    subnet_id: str
    vpc_id: str
    availability_zone: str
    availability_zone_id: str | None
    group_ids: list[str]
    preserve_client_ip: bool
    ip_address_type: str
    network_interface_id: str | None
    tags: list[dict[str, str]]
    created_at: datetime
    state: str = "create-in-progress"
    state_message: str | None = None
    changed_at: float = field(default_factory=time.monotonic)
    pinned: bool = False  # set_state: stays in its state
    backend: Any = field(default=None, repr=False, compare=False)  # moto's EC2 backend holding its interface

    def advance(self) -> None:
        """Move on to the next state once the transition time has passed (unless pinned)."""
        following = NEXT_STATE.get(self.state)
        if following and not self.pinned and time.monotonic() - self.changed_at >= TRANSITION_SECONDS:
            self.enter(following)

    def enter(self, state: str) -> None:
        """Take `state`; at delete-complete the network interface is gone (it lives until then, holding its groups)."""
        self.state, self.changed_at = state, time.monotonic()
        if state == "delete-complete" and self.network_interface_id and self.backend is not None:
            self.backend.enis.pop(self.network_interface_id, None)
            self.network_interface_id = None

    def shape(self) -> dict[str, Any]:
        """The Ec2InstanceConnectEndpoint structure of the API reference."""
        host = hashlib.sha256(self.id.encode()).hexdigest()[:8]
        dns = f"{self.id}.{host}.ec2-instance-connect-endpoint.{self.region}.amazonaws.com"
        fips = f"{self.id}.{host}.fips.ec2-instance-connect-endpoint.{self.region}.amazonaws.com"
        dual = f"{self.id}.{host}.ec2-instance-connect-endpoint.{self.region}.api.aws"
        dual_fips = f"{self.id}.{host}.fips.ec2-instance-connect-endpoint.{self.region}.api.aws"
        public = {"Ipv4": {"DnsName": dns, "FipsDnsName": fips}}
        if self.ip_address_type != "ipv4":
            public["Dualstack"] = {"DnsName": dual, "FipsDnsName": dual_fips}
        shape: dict[str, Any] = {
            "OwnerId": self.account_id,
            "InstanceConnectEndpointId": self.id,
            "InstanceConnectEndpointArn": f"arn:aws:ec2:{self.region}:{self.account_id}:{RESOURCE_TYPE}/{self.id}",
            "State": self.state,
            "DnsName": dns,
            "FipsDnsName": fips,
            "NetworkInterfaceIds": [self.network_interface_id] if self.network_interface_id else [],
            "VpcId": self.vpc_id,
            "AvailabilityZone": self.availability_zone,
            "CreatedAt": self.created_at,
            "SubnetId": self.subnet_id,
            "PreserveClientIp": self.preserve_client_ip,
            "SecurityGroupIds": list(self.group_ids),
            "Tags": [dict(t) for t in self.tags],
            "IpAddressType": self.ip_address_type,
            "PublicDnsNames": public,
        }
        if self.state_message:
            shape["StateMessage"] = self.state_message
        if self.availability_zone_id:
            shape["AvailabilityZoneId"] = self.availability_zone_id
        return shape


@dataclass
class _Store:
    """The endpoints of one (account, region) backend, in creation order, and the client tokens seen."""

    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    tokens: dict[str, tuple[tuple, str]] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)


def _store(backend: Any) -> _Store:
    """Kept on moto's backend object, so a moto reset (a new backend) starts with no endpoints."""
    store = getattr(backend, "_eic_guard_instance_connect_endpoints", None)
    if store is None:
        with _INSTALL_LOCK:
            store = getattr(backend, "_eic_guard_instance_connect_endpoints", None)
            if store is None:
                store = _Store()
                backend._eic_guard_instance_connect_endpoints = store
    return store


def _backend(account_id: str, region: str) -> Any:
    from moto.ec2.models import ec2_backends

    return ec2_backends[account_id][region]


# ---- helpers for tests and the demo (not API calls) ----------------------------------------------------------------
def set_state(account_id: str, region: str, endpoint_id: str, state: str, message: str | None = None) -> None:
    """Pin an endpoint in `state` (e.g. `create-failed` with AWS's message, or a lasting `create-in-progress`)."""
    if state not in STATES:
        raise ValueError(f"unknown endpoint state {state!r}")
    store = _store(_backend(account_id, region))
    with store.lock:
        endpoint = store.endpoints[endpoint_id]
        endpoint.enter(state)
        endpoint.state_message, endpoint.pinned = message, True


def release(account_id: str, region: str, endpoint_id: str) -> None:
    """Unpin an endpoint: it moves on from its state like any other."""
    store = _store(_backend(account_id, region))
    with store.lock:
        store.endpoints[endpoint_id].pinned = False


# ---- the API --------------------------------------------------------------------------------------------------------
def _error(code: str, message: str) -> Exception:
    from moto.ec2.exceptions import EC2ClientError

    return EC2ClientError(code, message)


def _new_id() -> str:
    import secrets

    return "eice-" + secrets.token_hex(9)[:17]


def _dry_run(response: Any) -> None:
    if response._get_param("DryRun", False):
        from moto.ec2.exceptions import DryRunClientError

        raise DryRunClientError()


def _tags(response: Any) -> list[dict[str, str]]:
    specs = response._get_param("TagSpecifications", []) or []
    tags: list[dict[str, str]] = []
    for spec in specs:
        if spec.get("ResourceType") != RESOURCE_TYPE:
            raise _error(
                "InvalidParameterValue",
                f"'{spec.get('ResourceType')}' is not a valid taggable resource type for this operation.",
            )
        tags.extend({"Key": t["Key"], "Value": t.get("Value", "")} for t in spec.get("Tags", ()))
    return tags


def _groups(backend: Any, group_ids: list[str], vpc_id: str) -> list[str]:
    if len(group_ids) > MAX_GROUPS:
        raise _error("InvalidParameterValue", f"You can specify at most {MAX_GROUPS} security groups.")
    if not group_ids:
        default = backend.get_default_security_group(vpc_id)
        return [default.id] if default is not None else []
    for group_id in group_ids:
        group = backend.get_security_group_from_id(group_id)
        if group is None:
            raise _error("InvalidGroup.NotFound", f"The security group '{group_id}' does not exist")
        if group.vpc_id != vpc_id:
            raise _error("InvalidParameter", f"Security group {group_id} and subnet belong to different networks.")
    return list(dict.fromkeys(group_ids))


def _subnet_ipv6(subnet: Any) -> bool:
    return bool(getattr(subnet, "ipv6_cidr_block_associations", None))


def _ip_address_type(requested: str | None, subnet: Any) -> str:
    has_ipv6 = _subnet_ipv6(subnet)
    if requested is None:
        return "dualstack" if has_ipv6 else "ipv4"
    if requested not in ("ipv4", "dualstack", "ipv6"):
        raise _error("InvalidParameterValue", f"Value ({requested}) for parameter IpAddressType is invalid.")
    if requested != "ipv4" and not has_ipv6:
        raise _error(
            "InvalidParameterCombination",
            f"The subnet {subnet.id} has no IPv6 CIDR block: IpAddressType {requested} needs one.",
        )
    return requested


def _check_preserve(preserve: bool, ip_address_type: str) -> None:
    if preserve and ip_address_type != "ipv4":
        raise _error(
            "InvalidParameterCombination",
            "PreserveClientIp is only supported on IPv4 EC2 Instance Connect Endpoints (IpAddressType ipv4).",
        )


def _counted(store: _Store) -> list[Endpoint]:
    for endpoint in store.endpoints.values():
        endpoint.advance()
    return [e for e in store.endpoints.values() if e.state not in NOT_COUNTED]


def create_instance_connect_endpoint(self: Any) -> Any:
    from moto.core.responses import ActionResult

    backend = self.ec2_backend
    subnet_id = self._get_param("SubnetId")
    if not subnet_id:
        raise _error("MissingParameter", "The request must contain the parameter SubnetId")
    requested_groups = list(self._get_param("SecurityGroupIds", []) or [])
    preserve = bool(self._get_param("PreserveClientIp", False))
    requested_type = self._get_param("IpAddressType")
    token = self._get_param("ClientToken")
    tags = _tags(self)
    subnet = backend.get_subnet(subnet_id)  # InvalidSubnetID.NotFound
    groups = _groups(backend, requested_groups, subnet.vpc_id)
    ip_address_type = _ip_address_type(requested_type, subnet)
    _check_preserve(preserve, ip_address_type)
    _dry_run(self)
    request = (subnet_id, tuple(sorted(requested_groups)), preserve, requested_type, repr(tags))
    store = _store(backend)
    with store.lock:
        if token and token in store.tokens:
            seen, endpoint_id = store.tokens[token]
            if seen != request:
                raise _error(
                    "IdempotentParameterMismatch",
                    "The client token you have provided is associated with a resource that was created with "
                    "different parameters.",
                )
            endpoint = store.endpoints[endpoint_id]
            endpoint.advance()
            return ActionResult({"InstanceConnectEndpoint": endpoint.shape(), "ClientToken": token})
        counted = _counted(store)
        if sum(e.vpc_id == subnet.vpc_id for e in counted) >= PER_VPC:
            raise _error(
                "ResourceLimitExceeded",
                "You've reached the quota for the maximum number of Instance Connect Endpoints for this VPC "
                f"({PER_VPC}). Delete unused Instance Connect Endpoints, or request a quota increase.",
            )
        if len(counted) >= PER_REGION:
            raise _error(
                "ResourceLimitExceeded",
                "You've reached the quota for the maximum number of Instance Connect Endpoints in this Region "
                f"({PER_REGION}). Delete unused Instance Connect Endpoints, or request a quota increase.",
            )
        endpoint_id = _new_id()
        eni = backend.create_network_interface(
            subnet,
            subnet.get_available_subnet_ip(instance=None),  # the subnet's next free address
            group_ids=groups,
            description=f"EC2 Instance Connect Endpoint {endpoint_id}",
        )
        eni.interface_type = INTERFACE_TYPE
        eni.requester_managed = True
        zone = getattr(subnet, "availability_zone", None) or f"{self.region}a"
        endpoint = Endpoint(
            id=endpoint_id,
            account_id=self.current_account,
            region=self.region,
            subnet_id=subnet.id,
            vpc_id=subnet.vpc_id,
            availability_zone=zone,
            availability_zone_id=getattr(subnet, "availability_zone_id", None),
            group_ids=groups,
            preserve_client_ip=preserve,
            ip_address_type=ip_address_type,
            network_interface_id=eni.id,
            tags=tags,
            created_at=datetime.now(UTC),
            backend=backend,
        )
        store.endpoints[endpoint_id] = endpoint
        if token:
            store.tokens[token] = (request, endpoint_id)
        answer: dict[str, Any] = {"InstanceConnectEndpoint": endpoint.shape()}
        if token:
            answer["ClientToken"] = token
        return ActionResult(answer)


def _matches(endpoint: Endpoint, name: str, values: list[str]) -> bool:
    def any_match(candidates: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(c, v) for c in candidates for v in values)

    tags = {t["Key"]: t["Value"] for t in endpoint.tags}
    if name.startswith("tag:"):
        key = name[4:]
        return key in tags and any_match([tags[key]])
    fields = {
        "instance-connect-endpoint-id": [endpoint.id],
        "state": [endpoint.state],
        "subnet-id": [endpoint.subnet_id],
        "vpc-id": [endpoint.vpc_id],
        "tag-key": list(tags),
        "tag-value": list(tags.values()),
    }
    return any_match(fields[name])


def _page_token(index: int) -> str:
    return base64.urlsafe_b64encode(f"eice-page:{index}".encode()).decode()


def _page_start(token: str | None) -> int:
    if not token:
        return 0
    try:
        prefix, index = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        if prefix == "eice-page" and int(index) >= 0:
            return int(index)
    except (ValueError, UnicodeDecodeError):
        pass
    raise _error("InvalidPaginationToken", f"Invalid pagination token: {token}")


def describe_instance_connect_endpoints(self: Any) -> Any:
    from moto.core.responses import ActionResult

    _dry_run(self)
    filters = {f["Name"]: list(f.get("Values", [])) for f in self._get_param("Filters", []) or []}
    for name in filters:
        if name not in FILTERS and not name.startswith("tag:"):
            raise _error("InvalidParameterValue", f"The filter '{name}' is invalid")
    ids = list(self._get_param("InstanceConnectEndpointIds", []) or [])
    max_results = self._get_param("MaxResults")
    if max_results is not None and not MAX_RESULTS[0] <= int(max_results) <= MAX_RESULTS[1]:
        raise _error(
            "InvalidParameterValue",
            f"Value ({max_results}) for parameter MaxResults is invalid. "
            f"Expecting a value between {MAX_RESULTS[0]} and {MAX_RESULTS[1]}.",
        )
    store = _store(self.ec2_backend)
    with store.lock:
        for endpoint in store.endpoints.values():
            endpoint.advance()
        missing = [i for i in ids if i not in store.endpoints]
        if missing:
            raise _error(
                "InvalidInstanceConnectEndpointId.NotFound",
                f"The instance connect endpoint ID '{missing[0]}' does not exist",
            )
        found = [
            e
            for e in store.endpoints.values()
            if (not ids or e.id in ids) and all(_matches(e, name, values) for name, values in filters.items())
        ]
        start = _page_start(self._get_param("NextToken"))
        size = int(max_results) if max_results is not None else DEFAULT_MAX_RESULTS
        page = found[start : start + size]
        answer: dict[str, Any] = {"InstanceConnectEndpoints": [e.shape() for e in page]}
        if start + size < len(found):
            answer["NextToken"] = _page_token(start + size)
        return ActionResult(answer)


def _endpoint(self: Any, store: _Store) -> Endpoint:
    endpoint_id = self._get_param("InstanceConnectEndpointId")
    if not endpoint_id:
        raise _error("MissingParameter", "The request must contain the parameter InstanceConnectEndpointId")
    if not endpoint_id.startswith("eice-"):
        raise _error(
            "InvalidInstanceConnectEndpointId.Malformed", f'Invalid id: "{endpoint_id}" (expecting "eice-...")'
        )
    endpoint = store.endpoints.get(endpoint_id)
    if endpoint is None:
        raise _error(
            "InvalidInstanceConnectEndpointId.NotFound",
            f"The instance connect endpoint ID '{endpoint_id}' does not exist",
        )
    endpoint.advance()
    return endpoint


def delete_instance_connect_endpoint(self: Any) -> Any:
    from moto.core.responses import ActionResult

    store = _store(self.ec2_backend)
    with store.lock:
        endpoint = _endpoint(self, store)
        _dry_run(self)
        if endpoint.state in ("delete-in-progress", "delete-complete"):
            return ActionResult({"InstanceConnectEndpoint": endpoint.shape()})
        endpoint.state_message, endpoint.pinned = None, False
        endpoint.enter("delete-in-progress")  # the interface goes at delete-complete
        return ActionResult({"InstanceConnectEndpoint": endpoint.shape()})


def modify_instance_connect_endpoint(self: Any) -> Any:
    from moto.core.responses import ActionResult

    backend = self.ec2_backend
    store = _store(backend)
    with store.lock:
        endpoint = _endpoint(self, store)
        if endpoint.state not in ("create-complete", "update-complete"):
            raise _error(
                "IncorrectState",
                f"The instance connect endpoint '{endpoint.id}' is in state {endpoint.state} and cannot be modified.",
            )
        requested_groups = self._get_param("SecurityGroupIds")
        groups = _groups(backend, list(requested_groups), endpoint.vpc_id) if requested_groups else None
        requested_type = self._get_param("IpAddressType")
        subnet = backend.get_subnet(endpoint.subnet_id)
        ip_address_type = _ip_address_type(requested_type, subnet) if requested_type else endpoint.ip_address_type
        preserve = self._get_param("PreserveClientIp")
        preserve = endpoint.preserve_client_ip if preserve is None else bool(preserve)
        _check_preserve(preserve, ip_address_type)
        _dry_run(self)
        if groups is not None:
            endpoint.group_ids = groups
            eni = backend.enis.get(endpoint.network_interface_id or "")
            if eni is not None:
                eni._group_set = [backend.get_security_group_from_id(g) for g in groups]
        endpoint.ip_address_type, endpoint.preserve_client_ip = ip_address_type, preserve
        endpoint.state, endpoint.changed_at = "update-in-progress", time.monotonic()
        return ActionResult({"Return": True})


def install() -> None:
    """Teach moto's EC2 the endpoint calls (idempotent; before or after any moto server or mock started)."""
    global _installed
    with _INSTALL_LOCK:
        if _installed:
            return
        from moto.ec2.responses import EC2Response

        EC2Response.create_instance_connect_endpoint = create_instance_connect_endpoint
        EC2Response.describe_instance_connect_endpoints = describe_instance_connect_endpoints
        EC2Response.delete_instance_connect_endpoint = delete_instance_connect_endpoint
        EC2Response.modify_instance_connect_endpoint = modify_instance_connect_endpoint
        _installed = True
