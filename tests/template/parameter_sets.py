"""The stack configurations the IAM tests render and run: each mode and switch that changes a role."""

from __future__ import annotations

from dataclasses import dataclass

from tests.template.cfn import parameter_values

STACK_REGION = "us-east-1"  # the recorder runs the handlers on moto there (moto's default account is PSEUDO's)


@dataclass(frozen=True)
class ParameterSet:
    id: str
    function_id: str  # the function run with it: "ScanFunction" or "RefreshFunction"
    overrides: tuple[tuple[str, str], ...]

    @property
    def params(self) -> dict[str, str]:
        return parameter_values(**dict(self.overrides))

    @property
    def role_id(self) -> str:
        return f"{self.function_id}Role"


PARAMETER_SETS = (
    # Report mode with every remediation switch on: the switches must not give the role (or the code) any write.
    ParameterSet(
        "report", "ScanFunction", (("Mode", "report"), ("RemediatePublicIp", "true"), ("TagInstances", "true"))
    ),
    # A grace of 0 h: the catch-up revokes our rule for a prefix the file no longer lists, in the same run.
    ParameterSet(
        "remediate",
        "ScanFunction",
        (("Mode", "remediate"), ("RemediatePublicIp", "false"), ("StalePrefixGraceHours", "0")),
    ),
    ParameterSet("remediate-elastic-ip", "ScanFunction", (("Mode", "remediate"), ("RemediatePublicIp", "true"))),
    ParameterSet("prefix-list", "ScanFunction", (("Mode", "remediate"), ("IngressSource", "prefix-list"))),
    # Regions not starting with the stack's region: the state table still lives in the stack's region.
    ParameterSet(
        "regions-elsewhere-first",
        "ScanFunction",
        (("Mode", "remediate"), ("RemediatePublicIp", "true"), ("Regions", f"eu-west-1,{STACK_REGION}")),
    ),
    ParameterSet("refresh", "RefreshFunction", (("StalePrefixGraceHours", "0"),)),
    ParameterSet("refresh-regions-elsewhere-first", "RefreshFunction", (("Regions", f"eu-west-1,{STACK_REGION}"),)),
)
