"""Start a moto server on 127.0.0.1 for the benchmarks, with moto's quadratic lookups replaced (this process only).

Stock moto 5.x finds a resource's tags by scanning every tag of the account (`describe_tags` filtered on
`resource-id`) each time it serialises or filters a tagged resource, so one DescribeInstances over N instances costs
O(N^2) on the server. It also finds an instance or a network interface by walking all of them. None of this is
eic-guard's cost, and the benchmark measures the client in its own process anyway; the patches below only keep the
server from dominating wall time. They change no answer: the same tags, instances and interfaces are returned.

Run: `python -m benchmarks.moto_launcher` — prints `PORT <n>` on stdout once listening, serves until stdin closes.
"""

from __future__ import annotations

import logging
import sys


def patch_moto() -> None:
    """Replace moto's linear/quadratic lookups by dictionary lookups (same results)."""
    from moto.ec2.exceptions import InvalidInstanceIdError, InvalidNetworkInterfaceIdError
    from moto.ec2.models.amis import AmiBackend
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.models.elastic_network_interfaces import NetworkInterfaceBackend
    from moto.ec2.models.instances import InstanceBackend
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    def get_tags(self) -> list[dict[str, str]]:
        resource_id = getattr(self, "id", None)
        if not resource_id:
            return []
        tags = self.ec2_backend.tags.get(resource_id)  # .get: never inserts into moto's defaultdict
        if not tags:
            return []
        resource_type = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource_id), "")
        return [
            {"resource_id": resource_id, "key": k, "value": v, "resource_type": resource_type} for k, v in tags.items()
        ]

    def get_instance(self, instance_id: str):
        for reservation in self.reservations.values():
            for instance in reservation.instances:
                if instance.id == instance_id:
                    return instance
        raise InvalidInstanceIdError(instance_id)

    def get_network_interface(self, eni_id: str):
        eni = self.enis.get(eni_id)
        if eni is None or eni.id != eni_id:
            raise InvalidNetworkInterfaceIdError(eni_id)
        return eni

    original_describe_images = AmiBackend.describe_images

    def describe_images(self, ami_ids=None, filters=None, exec_users=None, owners=None):
        # RunInstances looks its AMI up once per launched instance with filters={"image-id": id}: answer that
        # exact question from the dict instead of filtering every public AMI moto knows.
        if not ami_ids and not exec_users and not owners and filters and list(filters) == ["image-id"]:
            wanted = filters["image-id"]
            wanted = [wanted] if isinstance(wanted, str) else list(wanted)
            if not any(ch in w for w in wanted for ch in "*?"):
                return [self.amis[w] for w in wanted if w in self.amis]
        return original_describe_images(self, ami_ids=ami_ids, filters=filters, exec_users=exec_users, owners=owners)

    TaggedEC2Resource.get_tags = get_tags
    AmiBackend.describe_images = describe_images
    InstanceBackend.get_instance = get_instance  # no copy of every reservation per lookup
    NetworkInterfaceBackend.get_network_interface = get_network_interface


def main() -> int:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    patched = "--stock" not in sys.argv
    if patched:
        patch_moto()
    from eic_guard import simulated_eice

    simulated_eice.install()  # the EC2 Instance Connect Endpoint API moto lacks: the scan describes endpoints
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    print(f"PORT {port} {'patched' if patched else 'stock'}", flush=True)
    try:
        sys.stdin.read()  # the harness closes our stdin (or kills us) when it is done
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
