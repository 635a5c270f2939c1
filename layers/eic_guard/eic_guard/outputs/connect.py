"""The command a person runs to connect to a compliant instance (docs/architecture.md §13), shown in every output.

`aws ec2-instance-connect ssh` (AWS CLI v2, awscli/customizations/ec2instanceconnect/ssh.py;
https://docs.aws.amazon.com/cli/latest/reference/ec2-instance-connect/ssh.html) pushes a one-time key with
SendSSHPublicKey and opens the SSH session: `--connection-type direct` to the instance's public address (the public
path), `eice` through the EC2 Instance Connect Endpoint of its VPC, which the CLI finds itself with
DescribeInstanceConnectEndpoints (the endpoint path; ConnectPolicy grants both calls). The CLI's default, `auto`,
picks by the addresses the instance has and "might change" (its own help text recommends setting the type
explicitly), so the command always names the path eic-guard checked.
"""

from __future__ import annotations

CONNECTION_TYPES = {"public": "direct", "endpoint": "eice"}
CONNECTABLE = ("compliant", "fixed")


def connect_command(instance_id: str, region: str, connect_path: str | None, verdict: str) -> str | None:
    """The exact command for an instance that is compliant or was fixed; None for any other (it would not work)."""
    if verdict not in CONNECTABLE or connect_path not in CONNECTION_TYPES:
        return None
    return (
        f"aws ec2-instance-connect ssh --instance-id {instance_id} --region {region} "
        f"--connection-type {CONNECTION_TYPES[connect_path]}"
    )
