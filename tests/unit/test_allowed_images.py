"""al2023-ami under both AllowedImages policies: `al2023` (AL2023 standard only) and `eic-preinstalled` (every image
the EC2 User Guide lists with EC2 Instance Connect pre-installed, recognised by owner AND name)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eic_guard.checks import al2023_ami
from eic_guard.cli import build_parser
from eic_guard.errors import ConfigurationError
from eic_guard.settings import Settings

from tests.unit.snapshots import ACCOUNT, AMAZON, context, image, instance, snapshot

REAL_IMAGES = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "ami" / "describe-images-amazon-linux-latest-us-east-1.json").read_text()
)
POLICIES = ("al2023", "eic-preinstalled")
CANONICAL = "099720109477"
CANONICAL_OWNERS = ("099720109477", "513442679011", "837727238323")  # aws, aws-us-gov, aws-cn
MARKETPLACE = "679593333241"
ECS_OWNER = "591542846629"  # owner of every ECS-optimized image in moto 5.2.5's real dump (see ECS_OPTIMIZED)
AL2023_ALLOWS = "AllowedImages=al2023 allows AL2023 standard from Amazon"
PREINSTALLED_ALLOWS = (
    "AllowedImages=eic-preinstalled allows AL2023 standard and Amazon Linux 2 2.0.20190618 or later from Amazon, "
    "Ubuntu 20.04 or later server from Canonical"
)
ALLOWS = {"al2023": AL2023_ALLOWS, "eic-preinstalled": PREINSTALLED_ALLOWS}


def real(prefix: str) -> list[dict]:
    return [i for i in REAL_IMAGES if i["name"].startswith(prefix)]


AL2023_STANDARD = real("al2023-ami-2023.")
AL2023_MINIMAL = real("al2023-ami-minimal-")
AMAZON_LINUX_2 = [i for i in real("amzn2-ami-") if "minimal" not in i["name"]]
AMAZON_LINUX_2_MINIMAL = real("amzn2-ami-minimal-")
AMAZON_LINUX_1 = real("amzn-ami-")

# Amazon Linux 2 names of 2019 had no `.N` build suffix; these are real (DescribeImages answers quoted in public
# repositories, e.g. ImageLocation "amazon/amzn2-ami-hvm-2.0.20190508-x86_64-gp2", OwnerId 137112412989, created
# 2019-05-09). 2.0.20180810 is in moto's amis.json. 2.0.20190618 is the first release with EIC pre-installed.
AL2_FIRST_WITH_EIC = "amzn2-ami-hvm-2.0.20190618-x86_64-gp2"
AL2_TOO_OLD = ("amzn2-ami-hvm-2.0.20190508-x86_64-gp2", "amzn2-ami-hvm-2.0.20180810-x86_64-gp2")
# Canonical's published pattern ubuntu/images/hvm-ssd[-gp3]/ubuntu-<codename>-<YY.MM>-<arch>-server-<serial>
# (https://documentation.ubuntu.com/aws/en/latest/aws-how-to/instances/find-ubuntu-images/); each name below was
# published (quoted with owner 099720109477 in public repositories, or in eic_guard.demo).
UBUNTU_WITH_EIC = {
    "ubuntu/images/hvm-ssd/ubuntu-focal-20.04-amd64-server-20231025": "20.04",
    "ubuntu/images/hvm-ssd/ubuntu-focal-20.04-arm64-server-20230517": "20.04",
    "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240927": "22.04",
    "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20250305": "24.04",
    "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-arm64-server-20250821": "24.04",
}
UBUNTU_TOO_OLD = {
    "ubuntu/images/hvm-ssd/ubuntu-bionic-18.04-amd64-server-20190429": "18.04",
    "ubuntu/images/hvm-ssd/ubuntu-bionic-18.04-amd64-server-20190212.1": "18.04",
    "ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-20170721": "16.04",
}
UBUNTU_VARIANTS = {
    "ubuntu-minimal/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-minimal-20251210": ("ubuntu-minimal", "Minimal"),
    "ubuntu-pro-server/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-pro-server-20260923": ("ubuntu-pro", "Pro"),
    "ubuntu-eks/k8s_1.31/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20250804": ("ubuntu-eks", "EKS"),
}
# Real ECS-optimized names, all owned by 591542846629 (moto 5.2.5 moto/ec2/resources/ecs/optimized_amis/us-east-1,
# dumped from AWS by moto's maintainers).
ECS_OPTIMIZED = (
    "al2023-ami-ecs-hvm-2023.0.20260707-kernel-6.1-x86_64",
    "amzn2-ami-ecs-hvm-2.0.20260909-x86_64-ebs",
    "amzn2-ami-ecs-kernel-5.10-hvm-2.0.20251112-x86_64-ebs",
    "amzn-ami-2018.03.20240131-amazon-ecs-optimized",
)


def evaluate(img, policy: str):
    inst = instance(image_id=img.image_id)
    return al2023_ami.evaluate(inst, context(snapshot(inst, images=(img,)), allowed_images=policy))


def from_fixture(raw: dict):
    return image(raw["name"], image_id=raw["ami_id"], owner=raw["owner_id"], state=raw["state"])


def reason(img, problem: str, policy: str) -> str:
    owner = f"but by {img.owner_id}" if "is not owned by" in problem else f"(owner {img.owner_id})"
    return f"{img.image_id} ({img.name}) {problem} {owner}; {ALLOWS[policy]}"


def test_the_real_fixture_has_every_amazon_family():
    # Given the real us-east-1 Amazon Linux images / When / Then: the tests below cover each family
    assert min(map(len, (AL2023_STANDARD, AL2023_MINIMAL, AMAZON_LINUX_2, AMAZON_LINUX_2_MINIMAL))) >= 2
    assert AMAZON_LINUX_1 and {i["owner_id"] for i in REAL_IMAGES} == {AMAZON}
    assert {al2023_ami.family_of(i["name"]).name for i in AMAZON_LINUX_2} == {"amazon-linux-2"}


def test_the_default_policy_is_al2023():
    # Given settings that say nothing about images / When / Then
    assert Settings.build(regions=("us-east-1",)).allowed_images == "al2023"


# ---------------------------------------------------------------- passes


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("raw", AL2023_STANDARD, ids=lambda i: i["name"])
def test_real_al2023_standard_passes_both_policies(raw, policy):
    # Given a real AL2023 standard image owned by Amazon
    img = from_fixture(raw)

    # When
    result = evaluate(img, policy)

    # Then
    assert (result.status, result.reason, result.kind, result.fix) == ("pass", raw["name"], None, None)


@pytest.mark.parametrize("raw", AMAZON_LINUX_2, ids=lambda i: i["name"])
def test_real_amazon_linux_2_passes_only_eic_preinstalled(raw):
    # Given a real, current Amazon Linux 2 image (2.0.20260727, standard or kernel 5.10)
    img = from_fixture(raw)

    # When
    preinstalled, al2023 = evaluate(img, "eic-preinstalled"), evaluate(img, "al2023")

    # Then EIC ships in it, but it is not AL2023
    assert (preinstalled.status, preinstalled.reason) == ("pass", raw["name"])
    assert al2023.status == "fail"
    assert al2023.reason == reason(img, "is not Amazon Linux 2023 standard", "al2023")
    assert al2023.fact("family") == "amazon-linux-2" and al2023.fact("version") == "2.0.20260727"


def test_amazon_linux_2_2_0_20190618_is_the_first_that_passes():
    # Given the first Amazon Linux 2 release with EIC pre-installed
    img = image(AL2_FIRST_WITH_EIC)

    # When / Then
    assert evaluate(img, "eic-preinstalled").status == "pass"
    assert evaluate(img, "al2023").status == "fail"


@pytest.mark.parametrize("owner", CANONICAL_OWNERS)
@pytest.mark.parametrize(("name", "version"), UBUNTU_WITH_EIC.items(), ids=list(UBUNTU_WITH_EIC))
def test_ubuntu_20_04_and_later_from_canonical_passes_only_eic_preinstalled(name, version, owner):
    # Given an Ubuntu 20.04+ server image from Canonical's account of any partition
    img = image(name, image_id="ami-0ubuntu", owner=owner)

    # When
    preinstalled, al2023 = evaluate(img, "eic-preinstalled"), evaluate(img, "al2023")

    # Then
    assert (preinstalled.status, preinstalled.reason) == ("pass", name)
    assert al2023.status == "fail"
    assert al2023.reason == reason(img, "is not owned by Amazon (137112412989)", "al2023")
    assert (al2023.fact("family"), al2023.fact("version")) == ("ubuntu", version)


# ---------------------------------------------------------------- failures under both policies


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("raw", AL2023_MINIMAL, ids=lambda i: i["name"])
def test_real_al2023_minimal_fails_both_policies(raw, policy):
    # Given a real AL2023 minimal image (no EIC agent)
    img = from_fixture(raw)

    # When
    result = evaluate(img, policy)

    # Then
    assert result.status == "fail"
    assert result.reason == reason(img, "is AL2023 minimal, which does not include EC2 Instance Connect", policy)
    assert (result.kind, result.fact("family"), result.fix) == ("ami-not-allowed", "al2023-minimal", None)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("raw", AMAZON_LINUX_2_MINIMAL + AMAZON_LINUX_1, ids=lambda i: i["name"])
def test_real_amazon_linux_2_minimal_and_the_first_amazon_linux_fail_both_policies(raw, policy):
    # Given a real Amazon Linux 2 minimal or Amazon Linux (1) image
    img = from_fixture(raw)

    # When
    result = evaluate(img, policy)

    # Then
    minimal = "minimal" in raw["name"] and raw["name"].startswith("amzn2-")
    family = "amazon-linux-2-minimal" if minimal else "amazon-linux"
    problem = {
        "al2023": "is not Amazon Linux 2023 standard",
        "eic-preinstalled": "is Amazon Linux 2 minimal, not listed with EC2 Instance Connect pre-installed"
        if minimal
        else "is the first Amazon Linux, not listed with EC2 Instance Connect pre-installed",
    }[policy]
    assert result.status == "fail"
    assert result.reason == reason(img, problem, policy)
    assert (result.kind, result.fact("family")) == ("ami-not-allowed", family)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", AL2_TOO_OLD)
def test_amazon_linux_2_before_2_0_20190618_fails_both_policies(name, policy):
    # Given an Amazon Linux 2 release from before EIC was pre-installed
    img = image(name)

    # When
    result = evaluate(img, policy)

    # Then
    version = name.split("-hvm-")[1].split("-")[0]
    problem = {
        "al2023": "is not Amazon Linux 2023 standard",
        "eic-preinstalled": f"is Amazon Linux 2 {version}, older than 2.0.20190618",
    }[policy]
    assert result.status == "fail"
    assert result.reason == reason(img, problem, policy)
    assert (result.fact("family"), result.fact("version")) == ("amazon-linux-2", version)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(("name", "version"), UBUNTU_TOO_OLD.items(), ids=list(UBUNTU_TOO_OLD))
def test_ubuntu_before_20_04_fails_both_policies(name, version, policy):
    # Given an Ubuntu 18.04 or 16.04 server image from Canonical
    img = image(name, image_id="ami-0ubuntu", owner=CANONICAL)

    # When
    result = evaluate(img, policy)

    # Then
    problem = {
        "al2023": "is not owned by Amazon (137112412989)",
        "eic-preinstalled": f"is Ubuntu {version}, older than 20.04",
    }[policy]
    assert result.status == "fail"
    assert result.reason == reason(img, problem, policy)
    assert (result.kind, result.fact("family"), result.fact("version")) == ("ami-not-allowed", "ubuntu", version)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("owner", [ACCOUNT, MARKETPLACE, AMAZON, "000000000000"])
def test_an_ubuntu_name_from_another_owner_fails_both_policies(owner, policy):
    # Given the exact name of a Canonical Ubuntu 22.04 image, registered by someone else (a copy, a Marketplace
    # listing, anyone who picked the name)
    img = image("ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240927", image_id="ami-0copy", owner=owner)

    # When
    result = evaluate(img, policy)

    # Then the owner decides
    problem = {
        "al2023": "is not owned by Amazon (137112412989)" if owner != AMAZON else "is not Amazon Linux 2023 standard",
        "eic-preinstalled": "is not owned by Canonical (099720109477, 513442679011, 837727238323)",
    }[policy]
    assert result.status == "fail"
    assert result.reason == reason(img, problem, policy)
    assert (result.fact("owner_id"), result.fact("family")) == (owner, "ubuntu")


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", [AL2023_STANDARD[0]["name"], AMAZON_LINUX_2[0]["name"], AL2_FIRST_WITH_EIC])
@pytest.mark.parametrize("owner", [ACCOUNT, CANONICAL, MARKETPLACE])
def test_an_amazon_linux_name_from_another_owner_fails_both_policies(name, owner, policy):
    # Given the exact name of a real Amazon image, registered by someone else
    img = image(name, image_id="ami-0copy", owner=owner)

    # When
    result = evaluate(img, policy)

    # Then
    assert result.status == "fail"
    assert result.reason == reason(img, "is not owned by Amazon (137112412989)", policy)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(("name", "family_and_variant"), UBUNTU_VARIANTS.items(), ids=list(UBUNTU_VARIANTS))
def test_ubuntu_minimal_pro_and_eks_images_fail_both_policies(name, family_and_variant, policy):
    # Given a Canonical image that is not the standard server image (the User Guide names no variant)
    family, variant = family_and_variant
    img = image(name, image_id="ami-0variant", owner=CANONICAL)

    # When
    result = evaluate(img, policy)

    # Then
    problem = {
        "al2023": "is not owned by Amazon (137112412989)",
        "eic-preinstalled": f"is an Ubuntu {variant} image, not a standard Ubuntu server image",
    }[policy]
    assert result.status == "fail"
    assert result.reason == reason(img, problem, policy)
    assert result.fact("family") == family


@pytest.mark.parametrize("owner", [ECS_OWNER, AMAZON])
@pytest.mark.parametrize("name", ECS_OPTIMIZED)
def test_ecs_optimized_images_fail_eic_preinstalled_whoever_owns_them(name, owner):
    # Given a real ECS-optimized image name (the User Guide: EIC to be installed by hand)
    img = image(name, image_id="ami-0ecs", owner=owner)

    # When
    result = evaluate(img, "eic-preinstalled")

    # Then
    problem = "is ECS-optimized, which does not include EC2 Instance Connect"
    assert result.reason == reason(img, problem, "eic-preinstalled")
    assert (result.status, result.kind, result.fact("family")) == ("fail", "ami-not-allowed", "ecs-optimized")


@pytest.mark.parametrize(
    "name",
    [
        "RHEL-7.4_HVM_GA-20170808-x86_64-2-Hourly2-GP2",
        "Windows_Server-2016-English-Full-Base-2017.10.13",
        "Deep Learning AMI Ubuntu Linux - 2.4_Oct2017",
        "ubuntu-22.04-custom",
        "debian-12-amd64-20250316-2053",
    ],
)
@pytest.mark.parametrize("owner", [AMAZON, CANONICAL, ACCOUNT])
def test_any_other_image_fails_eic_preinstalled(name, owner):
    # Given an image of no listed family (real names from moto's amis.json, or an own golden image)
    img = image(name, image_id="ami-0other", owner=owner)

    # When
    result = evaluate(img, "eic-preinstalled")

    # Then
    assert result.status == "fail"
    problem = "is not an image listed with EC2 Instance Connect pre-installed"
    assert result.reason == reason(img, problem, "eic-preinstalled")
    assert result.fact("family") == "other"


@pytest.mark.parametrize(
    ("name", "owner", "problem", "family"),
    [
        # a suffix, an instance-store image, a daily build: nothing published says these carry EIC
        (
            "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240927-hardened",
            CANONICAL,
            "is not a standard Ubuntu server image name",
            "ubuntu",
        ),
        (
            "ubuntu/images/hvm-instance/ubuntu-focal-20.04-amd64-server-20231025",
            CANONICAL,
            "is not a standard Ubuntu server image name",
            "ubuntu",
        ),
        (
            "ubuntu/images-testing/hvm-ssd/ubuntu-jammy-daily-amd64-server-20240927",
            CANONICAL,
            "is not a standard Ubuntu server image name",
            "ubuntu",
        ),
        (
            "amzn2-ami-hvm-2.0.20260727.0-x86_64-gp2-SQL_2017_Express-2026.08.01",
            AMAZON,
            "is not a standard Amazon Linux 2 image name",
            "amazon-linux-2",
        ),
    ],
)
def test_names_off_the_published_pattern_fail_eic_preinstalled(name, owner, problem, family):
    # Given a name of a listed family that does not follow the family's published pattern
    img = image(name, image_id="ami-0odd", owner=owner)

    # When
    result = evaluate(img, "eic-preinstalled")

    # Then
    assert result.status == "fail"
    assert result.reason == reason(img, problem, "eic-preinstalled")
    assert result.fact("family") == family and result.fact("version") is None


# ---------------------------------------------------------------- kind and facts


@pytest.mark.parametrize("policy", POLICIES)
def test_a_not_allowed_image_carries_every_fact_the_guidance_needs(policy):
    # Given a real Amazon Linux 2 minimal image
    [raw] = [i for i in AMAZON_LINUX_2_MINIMAL if i["name"] == "amzn2-ami-minimal-hvm-2.0.20260727.0-x86_64-ebs"]
    img = from_fixture(raw)

    # When
    result = evaluate(img, policy)

    # Then
    assert result.kind == "ami-not-allowed"
    assert result.facts == (
        ("image_id", raw["ami_id"]),
        ("image_name", raw["name"]),
        ("owner_id", AMAZON),
        ("family", "amazon-linux-2-minimal"),
        ("allowed_images", policy),
        ("preinstalled", "no"),
    )


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("state", ["deregistered", "failed", "disabled"])
def test_an_unusable_image_is_ami_unknown_with_what_is_known(state, policy):
    # Given the instance's AMI in a non-available state
    img = image(AMAZON_LINUX_2[0]["name"], image_id="ami-0gone", state=state)

    # When
    result = evaluate(img, policy)

    # Then the reason stays `ami-unknown` and the facts say what the image was
    assert (result.status, result.reason, result.kind) == ("fail", "ami-unknown", "ami-unknown")
    assert dict(result.facts) == {
        "image_id": "ami-0gone",
        "image_name": AMAZON_LINUX_2[0]["name"],
        "owner_id": AMAZON,
        "family": "amazon-linux-2",
        "version": "2.0.20260727",
        "allowed_images": policy,
        "state": state,
    }


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("image_id", ["ami-0deregistered", None])
def test_an_absent_image_is_ami_unknown(image_id, policy):
    # Given an AMI DescribeImages no longer returns (or an instance without image id)
    inst = instance(image_id=image_id)

    # When
    result = al2023_ami.evaluate(inst, context(snapshot(inst, images=()), allowed_images=policy))

    # Then
    assert (result.status, result.reason, result.kind) == ("fail", "ami-unknown", "ami-unknown")
    assert result.facts == (("image_id", image_id or ""), ("allowed_images", policy))


@pytest.mark.parametrize(
    ("name", "family"),
    [
        (AL2023_STANDARD[0]["name"], "al2023"),
        (AL2023_MINIMAL[0]["name"], "al2023-minimal"),
        (ECS_OPTIMIZED[0], "ecs-optimized"),
        (AMAZON_LINUX_2[0]["name"], "amazon-linux-2"),
        (AMAZON_LINUX_2_MINIMAL[0]["name"], "amazon-linux-2-minimal"),
        (AMAZON_LINUX_1[0]["name"], "amazon-linux"),
        (next(iter(UBUNTU_WITH_EIC)), "ubuntu"),
        *((name, family) for name, (family, _) in UBUNTU_VARIANTS.items()),
        ("suse-sles-12-sp3-v20170907-hvm-ssd-x86_64", "other"),
    ],
)
def test_every_family_is_named_from_the_image_name(name, family):
    # Given / When / Then: the family slugs the guidance relies on
    assert al2023_ami.family_of(name).name == family
    assert family in al2023_ami.FAMILIES


# ---------------------------------------------------------------- the setting and the CLI flag


@pytest.mark.parametrize("value", POLICIES)
def test_the_environment_variable_selects_the_policy(value):
    # Given / When
    settings = Settings.from_env({"AWS_REGION": "us-east-1", "EIC_GUARD_ALLOWED_IMAGES": value})

    # Then
    assert settings.allowed_images == value


@pytest.mark.parametrize("value", ["ubuntu", "AL2023", "eic_preinstalled", "all"])
def test_an_unknown_policy_is_a_configuration_error_naming_the_variable(value):
    # Given an EIC_GUARD_ALLOWED_IMAGES value that is not a policy
    env = {"AWS_REGION": "us-east-1", "EIC_GUARD_ALLOWED_IMAGES": value}

    # When
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(env)

    # Then the one-line message names the variable and the accepted values
    message = str(caught.value)
    assert "EIC_GUARD_ALLOWED_IMAGES" in message and "'al2023'" in message and "'eic-preinstalled'" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("argv", "expected"), [([], None), (["--allowed-images", "eic-preinstalled"], "eic-preinstalled")]
)
def test_scan_takes_allowed_images(argv, expected):
    # Given / When
    args = build_parser().parse_args(["scan", *argv])

    # Then without the flag the environment (or the default) decides
    assert args.allowed_images == expected


def test_scan_refuses_an_unknown_allowed_images_value(capsys):
    # Given / When
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["scan", "--allowed-images", "ubuntu"])

    # Then argparse's usage error, exit 2, names the choices
    assert caught.value.code == 2
    assert "'al2023', 'eic-preinstalled'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "owner", "preinstalled"),
    [
        ("amzn2-ami-hvm-2.0.20260727.0-x86_64-gp2", AMAZON, "yes"),
        ("amzn2-ami-hvm-2.0.20180810-x86_64-gp2", AMAZON, "no"),
        ("ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240927", "099720109477", "yes"),
        ("ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240927", "123456789012", "no"),
    ],
)
def test_an_image_refused_by_al2023_says_whether_it_ships_eic_after_all(name, owner, preinstalled):
    # Given an Amazon Linux 2 or Ubuntu image under the default policy
    img = image(name, owner=owner)

    # When
    result = evaluate(img, "al2023")

    # Then it fails, and says whether AllowedImages=eic-preinstalled would accept it (the guidance offers it only then)
    assert (result.status, result.fact("preinstalled")) == ("fail", preinstalled)
