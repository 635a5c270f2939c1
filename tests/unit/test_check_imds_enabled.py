"""imds-enabled: EIC pushes the key through instance metadata; HttpTokens=required is fine (docs/architecture.md §2)."""

from __future__ import annotations

import pytest
from eic_guard.checks import imds_enabled

from tests.unit.snapshots import INSTANCE_ID, context, instance


@pytest.mark.parametrize("tokens", ["required", "optional"])
def test_enabled_endpoint_passes_whatever_the_tokens(tokens):
    # Given IMDS enabled
    inst = instance(http_endpoint="enabled", http_tokens=tokens)

    # When
    result = imds_enabled.evaluate(inst, context())

    # Then
    assert result.status == "pass"
    assert result.fix is None


def test_disabled_endpoint_fails_with_a_fix_that_keeps_tokens_required():
    # Given IMDS disabled with IMDSv2 enforced
    inst = instance(http_endpoint="disabled", http_tokens="required")

    # When
    result = imds_enabled.evaluate(inst, context())

    # Then
    assert result.status == "fail"
    assert result.reason == "metadata endpoint is disabled"
    assert result.fix.action == "enable-imds"
    assert result.fix.resource == INSTANCE_ID
    assert dict(result.fix.params) == {"instance_id": INSTANCE_ID}
    assert "HttpTokens stays required" in result.fix.detail


def test_unknown_endpoint_state_fails():
    # Given metadata options missing from the description
    inst = instance(http_endpoint=None, http_tokens=None)

    # When
    result = imds_enabled.evaluate(inst, context())

    # Then
    assert result.status == "fail"
    assert result.reason == "metadata endpoint is unknown"


def test_a_disabled_endpoint_has_the_kind_and_facts_the_guidance_needs():
    # When
    result = imds_enabled.evaluate(instance(http_endpoint="disabled", http_tokens="optional"), context())

    # Then
    assert result.kind == "imds-disabled"
    assert dict(result.facts) == {"instance_id": INSTANCE_ID, "http_endpoint": "disabled", "http_tokens": "optional"}
