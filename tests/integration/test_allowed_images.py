"""AllowedImages end to end: `eic-guard scan` against moto's real us-east-1 Amazon Linux images, the policy coming
from EIC_GUARD_ALLOWED_IMAGES or `--allowed-images`."""

from __future__ import annotations

import json

import pytest
from eic_guard.cli import main
from eic_guard.simulated import ssh_from

from tests.conftest import EIC_US_EAST_1, IP_RANGES, REGION

SNAPSHOT = str(IP_RANGES / "ip-ranges-2026-08-22.json")


def launch(account, image_id: str) -> str:
    """An instance that passes every other check: public IP, SSH from EIC, IMDS on, IGW route, default NACL."""
    net = account.network()
    eic_ssh = account.security_group(net, "eic-ssh", [ssh_from(EIC_US_EAST_1)])
    [instance] = account.launch(
        image_id=image_id, subnet_id=net.public_subnet_id, group_ids=[eic_ssh], public_ip=True, imds="enabled"
    )
    return instance


def scan(capsys, *extra: str) -> tuple[int, dict]:
    code = main(["scan", "--region", REGION, "--ip-ranges", SNAPSHOT, "--format", "json", *extra])
    return code, json.loads(capsys.readouterr().out)


def amazon_linux_2_images(ec2) -> list[dict]:
    """moto's us-east-1 Amazon Linux 2 images (owner 137112412989), oldest release first: the name carries the date.
    moto holds a real current one (its SSM/DescribeImages dump) and amzn2-ami-hvm-2.0.20180810-x86_64-gp2."""
    images = ec2.describe_images(
        Owners=["137112412989"], Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-2.0.*-x86_64-gp2"]}]
    )["Images"]
    return sorted(images, key=lambda i: i["Name"])


@pytest.fixture
def amazon_linux_2(account, ec2) -> tuple[str, str]:
    """An instance of the newest Amazon Linux 2 image moto carries."""
    image_id = amazon_linux_2_images(ec2)[-1]["ImageId"]
    return launch(account, image_id), image_id


def test_amazon_linux_2_fails_by_default_and_passes_with_eic_preinstalled(amazon_linux_2, api_calls, capsys):
    # Given an otherwise compliant Amazon Linux 2 instance
    instance, image_id = amazon_linux_2

    # When scanning with the default policy, then with --allowed-images eic-preinstalled
    default_code, default = scan(capsys)
    preinstalled_code, preinstalled = scan(capsys, "--allowed-images", "eic-preinstalled")

    # Then only the AMI check changes its verdict, and nothing is ever written
    [before] = default["instances"]
    assert (default_code, before["instance_id"], before["verdict"]) == (1, instance, "noncompliant")
    assert before["checks"]["al2023-ami"]["status"] == "fail"
    reason = before["checks"]["al2023-ami"]["reason"]
    assert (
        reason.startswith(f"{image_id} (amzn2-ami-hvm-2.0.")
        and ") is not Amazon Linux 2023 standard (owner 137112412989)" in reason
    )
    assert reason.endswith("; AllowedImages=al2023 allows AL2023 standard from Amazon")
    [after] = preinstalled["instances"]
    assert (preinstalled_code, after["verdict"], after["checks"]["al2023-ami"]["status"]) == (0, "compliant", "pass")
    assert api_calls.writes() == []


@pytest.mark.parametrize(
    ("env", "flag", "expected_code"), [("eic-preinstalled", None, 0), ("eic-preinstalled", "al2023", 1)]
)
def test_the_environment_sets_the_policy_and_the_flag_overrides_it(
    amazon_linux_2, capsys, monkeypatch, env, flag, expected_code
):
    # Given EIC_GUARD_ALLOWED_IMAGES, as the functions receive it from the AllowedImages parameter
    monkeypatch.setenv("EIC_GUARD_ALLOWED_IMAGES", env)

    # When
    code, report = scan(capsys, *(("--allowed-images", flag) if flag else ()))

    # Then
    assert code == expected_code
    assert report["instances"][0]["checks"]["al2023-ami"]["status"] == ("pass" if expected_code == 0 else "fail")


def test_amazon_linux_2_from_before_2_0_20190618_fails_eic_preinstalled(account, ec2, capsys):
    # Given an instance of moto's Amazon Linux 2 2.0.20180810 image, owned by Amazon
    [oldest, *newer] = amazon_linux_2_images(ec2)
    assert oldest["Name"] == "amzn2-ami-hvm-2.0.20180810-x86_64-gp2" and newer
    launch(account, oldest["ImageId"])

    # When
    code, report = scan(capsys, "--allowed-images", "eic-preinstalled")

    # Then
    assert code == 1
    assert report["instances"][0]["checks"]["al2023-ami"]["reason"] == (
        f"{oldest['ImageId']} (amzn2-ami-hvm-2.0.20180810-x86_64-gp2) is Amazon Linux 2 2.0.20180810, older than "
        "2.0.20190618 (owner 137112412989); AllowedImages=eic-preinstalled allows AL2023 standard and Amazon "
        "Linux 2 2.0.20190618 or later from Amazon, Ubuntu 20.04 or later server from Canonical"
    )


def test_an_ubuntu_name_registered_in_the_account_fails_eic_preinstalled(account, capsys):
    # Given an image named exactly like Canonical's Ubuntu 22.04 but owned by this account
    image_id = account.own_image("ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240927")
    launch(account, image_id)

    # When
    code, report = scan(capsys, "--allowed-images", "eic-preinstalled")

    # Then the owner decides
    assert code == 1
    reason = report["instances"][0]["checks"]["al2023-ami"]["reason"]
    assert "is not owned by Canonical (099720109477, 513442679011, 837727238323) but by 123456789012" in reason


def test_an_unknown_policy_is_a_configuration_error(account, api_calls, capsys, monkeypatch):
    # Given a misspelt EIC_GUARD_ALLOWED_IMAGES
    monkeypatch.setenv("EIC_GUARD_ALLOWED_IMAGES", "ubuntu")

    # When
    code = main(["scan", "--region", REGION, "--ip-ranges", SNAPSHOT])

    # Then exit 2 with one line naming the variable, before any AWS call
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith("eic-guard: error:") and "EIC_GUARD_ALLOWED_IMAGES" in captured.err
    assert api_calls.calls == []
