"""The command a person runs to connect (outputs/connect.py, docs/architecture.md §13): the AWS CLI's
`ec2-instance-connect ssh` with the connection type of the path eic-guard checked (awscli ssh.py: direct | eice)."""

from __future__ import annotations

import pytest
from eic_guard.outputs.connect import connect_command


@pytest.mark.parametrize(
    ("path", "verdict", "expected"),
    [
        (
            "public",
            "compliant",
            "aws ec2-instance-connect ssh --instance-id i-0abc --region eu-west-1 --connection-type direct",
        ),
        (
            "endpoint",
            "fixed",
            "aws ec2-instance-connect ssh --instance-id i-0abc --region eu-west-1 --connection-type eice",
        ),
        ("endpoint", "noncompliant", None),
        ("public", "excluded", None),
        ("public", "error", None),
        (None, "compliant", None),
    ],
)
def test_only_a_connectable_instance_gets_the_command_of_its_path(path, verdict, expected):
    # Given an instance's path and verdict / When its command is asked for / Then it is the path's, or none
    assert connect_command("i-0abc", "eu-west-1", path, verdict) == expected
