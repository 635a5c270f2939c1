"""The AllowedImages parameter: its values, where it reaches, and that the engine reads it as the setting."""

from __future__ import annotations

import tomllib

import pytest
from eic_guard.settings import Settings

from tests.template.cfn import ROOT, parameter_values, render, serverless_functions, template

# The functions that evaluate the checks; the plan, aggregate and refresh functions never do.
CHECKING_FUNCTIONS = ("ScanTargetFunction", "OnChangeFunction")


def test_allowed_images_is_a_choice_of_the_two_policies_defaulting_to_al2023():
    # Given the parameter
    spec = template()["Parameters"]["AllowedImages"]

    # When / Then: CloudFormation refuses any other value, and the default keeps today's behaviour
    assert spec["Type"] == "String"
    assert spec["AllowedValues"] == ["al2023", "eic-preinstalled"]
    assert spec["Default"] == "al2023"
    assert "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-instance-connect-set-up.html" in spec["Description"]


def test_allowed_images_is_in_a_parameter_group_of_the_console():
    # Given the console's parameter groups
    groups = template()["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]

    # When / Then: shown exactly once
    assert sum(group["Parameters"].count("AllowedImages") for group in groups) == 1


@pytest.mark.parametrize("value", ["al2023", "eic-preinstalled"])
def test_the_value_reaches_every_checking_function_as_the_engine_setting(value):
    # Given the stack as SAM renders it with AllowedImages=value
    stack = render(parameter_values(AllowedImages=value))

    for function_id in CHECKING_FUNCTIONS:
        # When the function's environment is read as Lambda receives it
        env = stack.environment(function_id)

        # Then the engine's settings carry the policy
        assert env["EIC_GUARD_ALLOWED_IMAGES"] == value
        assert Settings.from_env(env).allowed_images == value


def test_functions_that_run_no_check_do_not_get_the_setting():
    # Given the rendered stack with the default parameters
    stack = render(parameter_values())

    # When / Then
    others = sorted(set(serverless_functions()) - set(CHECKING_FUNCTIONS))
    assert others and [f for f in others if "EIC_GUARD_ALLOWED_IMAGES" in stack.environment(f)] == []


def test_samconfig_starts_guided_deploys_from_al2023():
    # Given samconfig.toml's deploy parameter overrides
    config = tomllib.loads((ROOT / "samconfig.toml").read_text(encoding="utf-8"))

    # When / Then
    assert "AllowedImages=al2023" in config["default"]["deploy"]["parameters"]["parameter_overrides"]
