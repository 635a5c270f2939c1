"""Settings: defaults, EIC_GUARD_* parsing and one-line errors naming the variable (docs/architecture.md §5)."""

from __future__ import annotations

import pytest
from eic_guard.errors import ConfigurationError
from eic_guard.settings import AWS_IP_SPACE_TOPIC, Settings


def test_defaults():
    # Given only a region
    # When
    settings = Settings.build(regions=("us-east-1",))

    # Then: the documented defaults (other settings may be added later)
    documented = {
        "tag_key": "eic-guard:managed",
        "tag_value": "true",
        "regions": ("us-east-1",),
        "mode": "remediate",
        "ingress_source": "cidr",
        "remediate_public_ip": False,
        "stale_prefix_grace_hours": 24,
        "state_table": None,
        "reports_bucket": None,
        "alerts_topic_arn": None,
        "ip_ranges_topic_arns": (AWS_IP_SPACE_TOPIC,),
    }
    assert {k: v for k, v in settings.model_dump().items() if k in documented} == documented
    assert settings.remediate is True


def test_from_env_defaults_regions_to_the_stacks_region():
    # Given no EIC_GUARD_* variable
    # When
    settings = Settings.from_env({"AWS_REGION": "eu-west-1"})

    # Then
    assert settings.regions == ("eu-west-1",)
    assert settings.mode == "remediate"


def test_from_env_parses_every_kind_of_value():
    # Given every setting as a template parameter would pass it
    env = {
        "AWS_REGION": "eu-west-1",
        "EIC_GUARD_TAG_KEY": "team:eic",
        "EIC_GUARD_TAG_VALUE": "yes",
        "EIC_GUARD_REGIONS": "us-east-1, eu-central-1 ,,us-east-1",
        "EIC_GUARD_MODE": "report",
        "EIC_GUARD_INGRESS_SOURCE": "prefix-list",
        "EIC_GUARD_REMEDIATE_PUBLIC_IP": "true",
        "EIC_GUARD_STALE_PREFIX_GRACE_HOURS": "48",
        "EIC_GUARD_STATE_TABLE": "eic-guard-state",
        "EIC_GUARD_REPORTS_BUCKET": "eic-guard-reports",
        "EIC_GUARD_ALERTS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:alerts",
        "EIC_GUARD_IP_RANGES_TOPIC_ARNS": "arn:aws:sns:us-east-1:123456789012:a,arn:aws:sns:us-east-1:123456789012:b",
    }

    # When
    settings = Settings.from_env(env)

    # Then
    assert settings.tag_key == "team:eic" and settings.tag_value == "yes"
    assert settings.regions == ("us-east-1", "eu-central-1")
    assert settings.mode == "report" and settings.remediate is False
    assert settings.ingress_source == "prefix-list"
    assert settings.remediate_public_ip is True
    assert settings.stale_prefix_grace_hours == 48
    assert (settings.state_table, settings.reports_bucket) == ("eic-guard-state", "eic-guard-reports")
    assert settings.alerts_topic_arn == "arn:aws:sns:us-east-1:123456789012:alerts"
    assert settings.ip_ranges_topic_arns == (
        "arn:aws:sns:us-east-1:123456789012:a",
        "arn:aws:sns:us-east-1:123456789012:b",
    )


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("false", False), ("True", True), ("0", False)])
def test_from_env_booleans(raw, expected):
    # Given RemediatePublicIp as text
    env = {"AWS_REGION": "us-east-1", "EIC_GUARD_REMEDIATE_PUBLIC_IP": raw}

    # When / Then
    assert Settings.from_env(env).remediate_public_ip is expected


def test_empty_variables_mean_the_default():
    # Given optional template parameters left empty
    env = {"AWS_REGION": "us-east-1", "EIC_GUARD_STATE_TABLE": "", "EIC_GUARD_MODE": "", "EIC_GUARD_REGIONS": ""}

    # When
    settings = Settings.from_env(env)

    # Then
    assert settings.state_table is None
    assert settings.mode == "remediate"
    assert settings.regions == ("us-east-1",)


def test_overrides_win_and_none_overrides_are_ignored():
    # Given mode=remediate in the environment, a CLI asking for report and an unset region option
    env = {"AWS_REGION": "us-east-1", "EIC_GUARD_MODE": "remediate"}

    # When
    settings = Settings.from_env(env, mode="report", regions=None)

    # Then
    assert settings.mode == "report"
    assert settings.regions == ("us-east-1",)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EIC_GUARD_MODE", "audit"),
        ("EIC_GUARD_REGIONS", "us-east-1,Mars"),
        ("EIC_GUARD_REGIONS", "us-east"),
        ("EIC_GUARD_STALE_PREFIX_GRACE_HOURS", "-1"),
        ("EIC_GUARD_STALE_PREFIX_GRACE_HOURS", "a day"),
        ("EIC_GUARD_INGRESS_SOURCE", "prefixlist"),
        ("EIC_GUARD_REMEDIATE_PUBLIC_IP", "maybe"),
    ],
)
def test_bad_setting_is_a_one_line_configuration_error_naming_the_variable(variable, value):
    # Given one bad variable
    env = {"AWS_REGION": "us-east-1", variable: value}

    # When
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(env)

    # Then
    message = str(caught.value)
    assert variable in message
    assert "\n" not in message


@pytest.mark.parametrize("regions", ["eu-west-9", "us-east-1,xx-north-1", "us-gov-east-3"])
def test_a_well_formed_region_the_sdk_does_not_know_is_refused(regions):
    # Given region names of the right shape that exist in no partition
    env = {"AWS_REGION": "us-east-1", "EIC_GUARD_REGIONS": regions}

    # When
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(env)

    # Then the message names the variable and the unknown region, on one line
    message = str(caught.value)
    assert "EIC_GUARD_REGIONS" in message and "unknown region" in message
    assert regions.split(",")[-1] in message and "\n" not in message


@pytest.mark.parametrize("region", ["us-gov-west-1", "cn-north-1", "ap-southeast-6", "eu-central-2"])
def test_regions_of_every_partition_are_accepted(region):
    assert Settings.from_env({"EIC_GUARD_REGIONS": region}).regions == (region,)


def test_no_region_at_all_is_a_configuration_error():
    # Given neither EIC_GUARD_REGIONS nor AWS_REGION / AWS_DEFAULT_REGION
    # When
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({})

    # Then
    assert "EIC_GUARD_REGIONS" in str(caught.value)


def test_unknown_setting_is_refused():
    # Given a typo in a setting name passed by code
    # When / Then
    with pytest.raises(ConfigurationError, match="REMEDIATE_PUBLIC_IPS"):
        Settings.build(regions=("us-east-1",), remediate_public_ips=True)
