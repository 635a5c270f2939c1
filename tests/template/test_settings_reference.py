"""The settings reference (cli/reference.py, README "Settings") against template.yaml and the CLI's parser: what
each setting's Source says is what the stack and the CLI do, and every template parameter is documented."""

from __future__ import annotations

import argparse
import re

import pytest
from eic_guard.cli import build_parser
from eic_guard.cli.reference import settings_rows
from eic_guard.settings import ENV_PREFIX, Settings, Source

from tests.template.cfn import ROOT, environment, referenced_names, resources, template

README = (ROOT / "README.md").read_text(encoding="utf-8")
FUNCTIONS = sorted(name for name, r in resources().items() if r["Type"] == "AWS::Serverless::Function")


def sources() -> dict[str, Source]:
    return {
        ENV_PREFIX + name.upper(): next(m for m in field.metadata if isinstance(m, Source))
        for name, field in Settings.model_fields.items()
    }


def fed_by() -> dict[str, set[str]]:
    """Each EIC_GUARD_* variable of any function, and the parameters, resources and pseudo parameters it is made of."""
    found: dict[str, set[str]] = {}
    for function_id in FUNCTIONS:
        for variable, value in environment(function_id).items():
            if variable.startswith(ENV_PREFIX):
                found.setdefault(variable, set()).update(referenced_names(value))
    return found


def test_every_setting_has_a_description_and_a_source():
    # Given the settings model
    # When / Then every field says what it means and where it is set (Source), so the reference can be generated
    missing = [
        name
        for name, field in Settings.model_fields.items()
        if not field.description or not any(isinstance(m, Source) for m in field.metadata)
    ]
    assert missing == []


@pytest.mark.parametrize("variable", sorted(sources()))
def test_a_settings_parameter_is_what_the_stack_passes_it_from(variable):
    # Given what the reference says sets the variable
    source = sources()[variable]
    feeds = fed_by().get(variable, set())

    # When / Then the template feeds it from that parameter (or, with no parameter, that resource), or from nothing
    if source.parameter:
        assert source.parameter in template()["Parameters"]
        assert source.parameter in feeds
    elif source.stack:
        assert source.stack in feeds
    else:
        assert feeds == set(), f"{variable} is set by the stack: give its Source a parameter or a stack value"


def test_every_template_parameter_is_in_the_readme():
    # Given the settings' parameters (the generated table) and the README's table of deployment-only parameters
    documented = {s.parameter for s in sources().values() if s.parameter}
    deploy_only = README[README.index("Parameters of the deployment only") : README.index("`Mode` is the nightly")]

    # When / Then every template parameter is one or the other
    undocumented = [
        p for p in template()["Parameters"] if p not in documented and not re.search(rf"`{p}`", deploy_only)
    ]
    assert undocumented == []


def test_every_flag_the_reference_names_exists():
    # Given the flags of every subcommand
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = {f for parser in commands.choices.values() for action in parser._actions for f in action.option_strings}

    # When / Then each flag a setting's Source names is one of them
    named = {f.split()[0] for s in sources().values() for f in s.flag.split(", ") if f}
    assert named - flags == set()
    assert {"--tag", "--region", "--remediate", "--account", "--organization", "--role-name"} <= named


def test_the_readme_shows_the_generated_settings_table():
    # Given the table generated from the settings model
    rows = settings_rows()

    # When / Then every variable is a row of the README, with its default and its meaning
    for row in rows:
        assert f"| `{row.variable}` |" in README
        assert row.meaning in README
