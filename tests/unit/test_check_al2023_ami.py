"""al2023-ami: only Amazon Linux 2023 standard, owned by Amazon, ships the EIC agent (docs/architecture.md §2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eic_guard.checks import al2023_ami

from tests.unit.snapshots import AMAZON, context, image, instance, snapshot

REAL_IMAGES = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "ami" / "describe-images-amazon-linux-latest-us-east-1.json").read_text()
)


def real(predicate) -> list[dict]:
    return [i for i in REAL_IMAGES if predicate(i["name"])]


STANDARD = real(lambda n: n.startswith("al2023-ami-2023."))
MINIMAL = real(lambda n: n.startswith("al2023-ami-minimal-"))
OLDER = real(lambda n: n.startswith(("amzn2-", "amzn-ami-")))


def evaluate_image(img):
    inst = instance(image_id=img.image_id)
    return al2023_ami.evaluate(inst, context(snapshot(inst, images=(img,))))


def test_fixture_has_every_family():
    # Given the real us-east-1 Amazon Linux images
    # When / Then: the parametrized tests below cover each family
    assert len(STANDARD) >= 4 and len(MINIMAL) >= 4 and len(OLDER) >= 4
    assert {i["owner_id"] for i in REAL_IMAGES} == {AMAZON}


@pytest.mark.parametrize("raw", STANDARD, ids=lambda i: i["name"])
def test_real_al2023_standard_images_pass(raw):
    # Given a real AL2023 standard image owned by Amazon
    img = image(raw["name"], image_id=raw["ami_id"], owner=raw["owner_id"], state=raw["state"])

    # When
    result = evaluate_image(img)

    # Then
    assert result.status == "pass"
    assert result.reason == raw["name"]


@pytest.mark.parametrize("raw", MINIMAL, ids=lambda i: i["name"])
def test_real_al2023_minimal_images_fail(raw):
    # Given a real AL2023 minimal image (no EIC agent)
    img = image(raw["name"], image_id=raw["ami_id"], owner=raw["owner_id"])

    # When
    result = evaluate_image(img)

    # Then
    assert result.status == "fail"
    assert "minimal" in result.reason
    assert result.fix is None


@pytest.mark.parametrize("raw", OLDER, ids=lambda i: i["name"])
def test_real_amazon_linux_2_and_1_images_fail(raw):
    # Given a real Amazon Linux 2 or Amazon Linux (1) image
    img = image(raw["name"], image_id=raw["ami_id"], owner=raw["owner_id"])

    # When
    result = evaluate_image(img)

    # Then
    assert result.status == "fail"
    assert result.reason == (
        f"{raw['ami_id']} ({raw['name']}) is not Amazon Linux 2023 standard (owner {AMAZON}); "
        "AllowedImages=al2023 allows AL2023 standard from Amazon"
    )
    assert result.kind == "ami-not-allowed"


def test_ecs_optimized_al2023_fails():
    # Given an ECS-optimized AL2023 image owned by Amazon
    img = image("al2023-ami-ecs-hvm-2023.0.20240101-kernel-6.1-x86_64")

    # When
    result = evaluate_image(img)

    # Then
    assert result.status == "fail"
    assert "ECS-optimized" in result.reason


@pytest.mark.parametrize("owner", ["123456789012", "679593333241", ""])
def test_look_alike_name_from_another_owner_fails(owner):
    # Given the exact name of a real AL2023 image, published by someone else
    img = image(STANDARD[0]["name"], owner=owner)

    # When
    result = evaluate_image(img)

    # Then
    assert result.status == "fail"
    assert "not owned by Amazon" in result.reason


@pytest.mark.parametrize("state", ["deregistered", "failed", "disabled"])
def test_unusable_image_is_ami_unknown(state):
    # Given the instance's AMI in a non-available state
    img = image(state=state)

    # When
    result = evaluate_image(img)

    # Then
    assert result.status == "fail"
    assert result.reason == "ami-unknown"


@pytest.mark.parametrize("image_id", ["ami-0deregistered", None])
def test_absent_image_is_ami_unknown_not_a_crash(image_id):
    # Given an AMI DescribeImages no longer returns (or an instance without image id)
    inst = instance(image_id=image_id)

    # When
    result = al2023_ami.evaluate(inst, context(snapshot(inst, images=())))

    # Then
    assert result.status == "fail"
    assert result.reason == "ami-unknown"
    assert result.fix is None
