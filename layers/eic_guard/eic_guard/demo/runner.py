"""`eic-guard demo`: the whole product end to end against a local simulated AWS (moto), no account needed.

It seeds an account with every kind of drift eic-guard knows (demo/scenarios.py), runs the real CLI three times
in-process (report, remediate, report) and then proves from the simulated AWS state that it fixed what it may fix
and touched nothing else. Then it does the same for an AWS Organization (docs/architecture.md §9), and last deploys
a simulated stack there and runs `eic-guard verify` on it (docs/architecture.md §16).
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import boto3

from ..errors import IpRangesError
from ..ranges import ip_ranges
from ..settings import MANAGED_GROUP_NAME
from ..simulated import SimulatedAccount
from .deployment import verify_act
from .environment import HTML_ENV, IP_RANGES_ENV, REGION, simulated_aws
from .organization import organization_act
from .proof import endpoint_problems, print_private_path, print_proof, report_problems, state_problems
from .scenarios import ACCOUNT_ALIAS, STAGING_NEW
from .seeding import DemoFleet, interface_groups, seed
from .transcript import Cli, heading, print_legend, redirect_stdout_and_capture, run_cli_scan

EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE = 0, 1, 2  # the demo's own: as expected, not as expected, no ip-ranges file
DEFAULT_IP_RANGES = Path(__file__).resolve().parents[4] / "tests/fixtures/ip-ranges/ip-ranges-2026-08-22.json"
DEFAULT_HTML = Path(".eic-guard/demo-report.html")
HEADINGS = (
    "1. report-only scan: what is wrong",
    "2. remediate: what eic-guard fixes",
    "3. final scan: what is left and why it cannot be fixed automatically",
)
CI_HEADING = "3b. the final scan as a CI job runs it: --fail-on warning --format sarif (SSH open to the internet fails)"
NEXT_NIGHT_HEADING = "4. the next night: a route is deleted in staging; the alert names only what is new"
CLEANUP_HEADING = "5. eic-guard cleanup --dry-run: what uninstalling would remove (nothing is changed)"
# The demo's stack has CreateEndpoints=true: a VPC whose private instance takes the endpoint path gets an EC2 Instance
# Connect Endpoint (docs/architecture.md §13; priv-no-endpoint).
SCAN_FLAGS = ("--create-endpoints",)


def next_night(cli: Cli, ec2, fleet: DemoFleet, ranges_path: Path, workdir: str) -> list[str]:
    """Someone deletes staging's default route; the next remediate scan alerts on those instances only (the rest
    persist and were alerted already), then one more scan alerts nothing."""
    heading(NEXT_NIGHT_HEADING)
    print(f"  ec2 delete-route --route-table-id {fleet.route_tables['staging']} --destination-cidr-block 0.0.0.0/0")
    ec2.delete_route(RouteTableId=fleet.route_tables["staging"], DestinationCidrBlock="0.0.0.0/0")
    alerted = io.StringIO()
    with redirect_stdout_and_capture(alerted):
        _, report = run_cli_scan(cli, ranges_path, Path(workdir, "night-2.json"), remediate=True)
    text = alerted.getvalue()
    print(text[text.index("alert") :] if "alert" in text else text, end="")
    problems = []
    newly = {e.name for e in report.instances if e.verdict == "noncompliant"} - noncompliant_before(fleet)
    if newly != set(STAGING_NEW):
        problems.append(f"the deleted route made {sorted(newly)} noncompliant, expected {sorted(STAGING_NEW)}")
    lines = [line for line in text.splitlines() if line.startswith("  | - ")]
    if sorted(n for n in STAGING_NEW if any(f"({n}" in line or f" {n} " in line for line in lines)) != sorted(
        STAGING_NEW
    ) or len(lines) != len(STAGING_NEW):
        problems.append(f"the next night's alert does not list exactly the staging instances: {lines}")
    print("the same night again:")
    again = io.StringIO()
    with redirect_stdout_and_capture(again):
        run_cli_scan(cli, ranges_path, Path(workdir, "night-2-again.json"), remediate=True)
    quiet = again.getvalue().rstrip().splitlines()[-1]
    print(f"  {quiet}")
    if not quiet.startswith("alert: none"):
        problems.append(f"a scan with nothing new still alerted: {quiet}")
    return problems


def noncompliant_before(fleet: DemoFleet) -> set[str]:
    return {s.name for s in fleet.instances.values() if s.final == "noncompliant"}


def cleanup_dry_run(cli: Cli, ec2, fleet: DemoFleet) -> list[str]:
    """`eic-guard cleanup --dry-run`: the plan an uninstall would carry out, and proof that nothing changed."""
    heading(CLEANUP_HEADING)
    before = interface_groups(ec2, list(fleet.instances))
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [MANAGED_GROUP_NAME]}])
    exit_code = cli(["cleanup", "--dry-run", "--region", REGION])
    print(f"(eic-guard cleanup exit code {exit_code})")
    after = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [MANAGED_GROUP_NAME]}])
    problems = []
    if interface_groups(ec2, list(fleet.instances)) != before or len(after["SecurityGroups"]) != len(
        groups["SecurityGroups"]
    ):
        problems.append("cleanup --dry-run changed the simulated account")
    if exit_code != 0:
        problems.append(f"cleanup --dry-run exited {exit_code}")
    return problems


def ci_view(cli: Cli, fleet: DemoFleet, ranges_path: Path, workdir: str) -> list[str]:
    """The final state scanned as a pipeline would: SARIF for the dashboard, and --fail-on warning makes the SSH rule
    open to 0.0.0.0/0 (a pass with a warning) fail the build. -q: a CI log gets errors only, the alert state is not
    touched."""
    heading(CI_HEADING)
    sarif = Path(workdir, "eic-guard.sarif")
    argv = ["scan", "--region", REGION, "--ip-ranges", str(ranges_path), "--fail-on", "warning"]
    argv += ["--format", "sarif", "--output", str(sarif), "-q"]
    shown = " ".join(argv).replace(str(ranges_path), ranges_path.name).replace(str(sarif), sarif.name)
    print(f"  eic-guard {shown}")
    exit_code = cli(argv)
    [run] = json.loads(sarif.read_text(encoding="utf-8"))["runs"]
    levels = Counter(result["level"] for result in run["results"])
    warned = sorted(
        f"{fleet.name(r['properties']['instanceId'])} ({r['ruleId']})"
        for r in run["results"]
        if r["level"] == "warning"
    )
    print(
        f"  exit code {exit_code}; SARIF 2.1.0: {len(run['tool']['driver']['rules'])} rules, {levels['error']} "
        f"failing (instance, check) results, {levels['warning']} warning: {', '.join(warned)}"
    )
    problems = []
    if exit_code != 1:
        problems.append(f"--fail-on warning exited {exit_code}, expected 1 (SSH open to the internet)")
    if warned != ["web-open-world (eic-ssh-ingress)"]:
        problems.append(f"the SARIF warnings are {warned}, expected web-open-world's")
    return problems


def html_report_path() -> Path:
    return Path(os.environ.get(HTML_ENV) or DEFAULT_HTML)


def ip_ranges_path() -> Path:
    return Path(os.environ.get(IP_RANGES_ENV) or DEFAULT_IP_RANGES)


def main(cli: Cli) -> int:
    """Run the demo through `cli` (the eic-guard command, in this process); 0 when everything behaved as expected,
    1 when not, 2 when the ip-ranges file is missing."""
    started = time.monotonic()
    path = ip_ranges_path()
    try:
        eic = ip_ranges.load(str(path)).for_region(REGION)
    except IpRangesError as exc:
        print(f"eic-guard demo: error: {exc} (set {IP_RANGES_ENV} to an ip-ranges.json file)", file=sys.stderr)
        return EXIT_USAGE
    if not eic.ipv4:
        print(f"eic-guard demo: error: {path} has no EC2_INSTANCE_CONNECT prefix for {REGION}", file=sys.stderr)
        return EXIT_USAGE
    html = html_report_path()  # read before the simulated environment drops every EIC_GUARD_* variable
    with simulated_aws() as endpoint, tempfile.TemporaryDirectory(prefix="eic-guard-demo-") as workdir:
        print(f"eic-guard demo: simulated AWS (moto) at {endpoint}, region {REGION}, ip-ranges {path.name}")
        ec2 = boto3.client("ec2", region_name=REGION)
        fleet = seed(SimulatedAccount(ec2, boto3.client("ssm", region_name=REGION)), eic)
        boto3.client("iam", region_name=REGION).create_account_alias(AccountAlias=ACCOUNT_ALIAS)
        print_legend(fleet)
        reports = []
        html.parent.mkdir(parents=True, exist_ok=True)
        for number, title in enumerate(HEADINGS):
            heading(title)
            last = number == len(HEADINGS) - 1
            reports.append(
                run_cli_scan(
                    cli,
                    path,
                    Path(workdir, f"scan-{number + 1}.json"),
                    remediate=number == 1,
                    html=html if last else None,
                    extra=SCAN_FLAGS,
                )
            )
        problems = report_problems(fleet, reports) + state_problems(ec2, fleet, eic) + endpoint_problems(ec2, fleet)
        print_proof(fleet, reports[-1][1], problems)
        print_private_path(fleet, reports)
        html.with_suffix(".json").write_text(Path(workdir, f"scan-{len(HEADINGS)}.json").read_text(encoding="utf-8"))
        print(f"HTML report of the final scan (opens offline): {html.resolve()} (JSON beside it)")
        problems += ci_view(cli, fleet, path, workdir)
        problems += next_night(cli, ec2, fleet, path, workdir)
        problems += cleanup_dry_run(cli, ec2, fleet)
        found, organization = organization_act(cli, endpoint, path, eic, workdir)
        problems += found + verify_act(cli, organization)
    print(f"(demo finished in {time.monotonic() - started:.1f}s)")
    return EXIT_UNEXPECTED if problems else EXIT_OK
