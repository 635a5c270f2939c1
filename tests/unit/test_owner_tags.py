"""Who an instance is (docs/architecture.md §5b): its Name tag and the configured owner tags go from the instance to
the report."""

from __future__ import annotations

from datetime import date

import pytest
from eic_guard.checks import CheckContext
from eic_guard.engine import evaluate_instance
from eic_guard.errors import ConfigurationError
from eic_guard.models import EicPrefixes, Instance, TargetSnapshot
from eic_guard.outputs.report import instance_entry
from eic_guard.settings import Settings

REGION = "us-east-1"


def instance(tags: dict[str, str]) -> Instance:
    return Instance(
        instance_id="i-0123456789abcdef0",
        state="running",
        vpc_id="vpc-1",
        subnet_id="subnet-1",
        image_id="ami-1",
        tags=tuple(tags.items()),
        public_ip="203.0.113.10",
        instance_group_ids=(),
        network_interfaces=(),
        http_endpoint="enabled",
        http_tokens="required",
    )


def entry_for(inst: Instance, settings: Settings) -> dict:
    snapshot = TargetSnapshot("123456789012", REGION, (inst,), {}, {}, (), (), {}, {})
    outcome = evaluate_instance(inst, CheckContext(snapshot, EicPrefixes(REGION), settings), date(2026, 12, 2))
    return instance_entry(outcome)


def test_name_and_default_owner_tags_are_reported_and_other_tags_are_not():
    # Given an instance with a Name, both default owner tags and an unrelated tag
    inst = instance({"Name": "web-1", "Owner": "alice@example.com", "Team": "payments", "CostCenter": "42"})

    # When it is evaluated with the default settings
    entry = entry_for(inst, Settings.build(regions=(REGION,)))

    # Then its entry names it and its owners, and nothing else of its tags
    assert (entry["name"], entry["tags"]) == ("web-1", {"Owner": "alice@example.com", "Team": "payments"})


def test_configured_owner_tags_replace_the_defaults_and_missing_ones_are_left_out():
    # Given OwnerTags=CostCenter,Owner and an instance without a Name or an Owner tag
    settings = Settings.from_env({"EIC_GUARD_REGIONS": REGION, "EIC_GUARD_OWNER_TAGS": "CostCenter, Owner"})
    inst = instance({"Team": "payments", "CostCenter": "42"})

    # When it is evaluated
    entry = entry_for(inst, settings)

    # Then only the configured tags it carries are reported, and its name is null
    assert settings.owner_tags == ("CostCenter", "Owner")
    assert (entry["name"], entry["tags"]) == (None, {"CostCenter": "42"})


def test_an_excluded_instance_is_still_named():
    # Given an excluded instance with a Name and an Owner
    inst = instance({"Name": "vendor-box", "Owner": "vendor", "eic-guard:exclude": "vendor appliance"})

    # When it is evaluated
    entry = entry_for(inst, Settings.build(regions=(REGION,)))

    # Then it is excluded, and the report still says who it is
    assert (entry["excluded_reason"], entry["name"], entry["tags"]) == (
        "vendor appliance",
        "vendor-box",
        {"Owner": "vendor"},
    )


def test_more_than_ten_owner_tags_is_a_configuration_error():
    # Given eleven owner tags
    keys = ",".join(f"Tag{n}" for n in range(11))

    # When the settings are read, Then they are refused naming the variable
    with pytest.raises(ConfigurationError, match="EIC_GUARD_OWNER_TAGS"):
        Settings.from_env({"EIC_GUARD_REGIONS": REGION, "EIC_GUARD_OWNER_TAGS": keys})
