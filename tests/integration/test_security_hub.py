"""Security Hub findings on moto (docs/architecture.md §11): what a scan imports, read back with GetFindings, and what
the ledger in the reports bucket (or the CLI's file) remembers between runs.

moto 5.2.5's BatchImportFindings checks only that each finding names a resource, and never refuses a batch of more
than 100 (botocore validates the minimum only): the payloads are asserted from the recorded calls. Where moto differs
from Security Hub's documented behaviour (Workflow and the top-level Severity/Types on an update, BatchUpdateFindings),
tests/moto_security_hub.py makes it answer as AWS does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from eic_guard.aws.clients import AwsClients
from eic_guard.aws.credentials import AccountClients
from eic_guard.cli import main
from eic_guard.fanout.local import run_job, run_scan
from eic_guard.fanout.plan import plan_run
from eic_guard.fanout.worker import run_target
from eic_guard.observability import metrics
from eic_guard.outputs.security_hub import (
    FINDING_TYPE,
    LEDGER_SCHEMA,
    RECOMMENDATION_LIMIT,
    REFRESH_AFTER,
    FileLedger,
    FindingScope,
    LedgerChanges,
    S3Ledger,
    sync_findings,
)
from eic_guard.settings import Settings
from eic_guard.simulated import SimulatedAccount, ssh_from

from tests.conftest import EIC_US_EAST_1, EIC_US_EAST_1_V6, IP_RANGES, REGION
from tests.faults.injector import FaultInjector

ACCOUNT = "123456789012"  # moto's default account
LEDGER_KEY = f"findings/{ACCOUNT}/{REGION}.json"
ISO_Z = "%Y-%m-%dT%H:%M:%S.%fZ"
FIXABLE = ("eic-ssh-ingress", "imds-enabled")


# ---- helpers -----------------------------------------------------------------------------------------------------
def findings_settings(mode: str = "remediate", **values) -> Settings:
    return Settings.build(regions=(REGION,), mode=mode, security_hub_findings="enabled", **values)


def scan(ranges, mode: str = "remediate", **values):
    return run_scan(AwsClients(), findings_settings(mode, **values), ranges)


def worker_document(ranges, settings: Settings) -> dict:
    """The target worker's result document for the caller's own account and REGION (what Aggregate reads)."""
    clients = AwsClients()
    plan = plan_run("scan", settings, clients, ranges=ranges)
    accounts = AccountClients(clients, plan.run_id, settings.member_role_name)
    [target] = plan.targets
    return run_target(plan, target, "apply", accounts.for_account, settings)


def hub_findings(securityhub=None) -> dict[str, dict]:
    """Every finding in the account's Security Hub (REGION), by id."""
    securityhub = securityhub or boto3.client("securityhub", REGION)
    pages = securityhub.get_paginator("get_findings").paginate()
    return {f["Id"]: f for page in pages for f in page["Findings"]}


def finding_id(instance_id: str, check_id: str, account_id: str = ACCOUNT) -> str:
    return f"eic-guard/{account_id}/{REGION}/{instance_id}/{check_id}"


def imports(api_calls) -> list[list[dict]]:
    """The Findings of each BatchImportFindings call, in order."""
    return [params["Findings"] for name, params in api_calls.calls if name == "BatchImportFindings"]


def ledger(bucket: str, key: str = LEDGER_KEY) -> dict:
    return json.loads(boto3.client("s3", REGION).get_object(Bucket=bucket, Key=key)["Body"].read())


def ledger_writes(api_calls) -> list[str]:
    return [p["Key"] for name, p in api_calls.calls if name == "PutObject" and p["Key"].startswith("findings/")]


def entry(report, instance_id):
    [found] = [e for e in report.instances if e.instance_id == instance_id]
    return found


def drifted(account: SimulatedAccount, net, count: int = 1, **kwargs) -> list[str]:
    """Opted-in, public, AL2023, but no SSH rule for EIC and the metadata endpoint off: both fixable."""
    return account.launch(
        image_id=account.al2023_ami(),
        subnet_id=net.public_subnet_id,
        group_ids=[net.app_group_id],
        public_ip=True,
        imds="disabled",
        count=count,
        **kwargs,
    )


def blocked(account: SimulatedAccount, net) -> str:
    """Drifted, but in the subnet without an internet route: nothing can be fixed (docs/architecture.md §4)."""
    instance = account.launch_drifted(net, subnet_id=net.private_subnet_id)
    return instance


def compliant(account: SimulatedAccount, net) -> str:
    ssh = account.security_group(net, "eic-ssh", [ssh_from(EIC_US_EAST_1, EIC_US_EAST_1_V6)])
    [instance] = account.launch(
        image_id=account.al2023_ami(), subnet_id=net.public_subnet_id, group_ids=[ssh], public_ip=True
    )
    return instance


@pytest.fixture
def hub(aws):
    """Security Hub enabled in the caller's account and REGION."""
    securityhub = boto3.client("securityhub", REGION)
    securityhub.enable_security_hub(EnableDefaultStandards=False)
    return securityhub


@pytest.fixture
def clean_metrics():
    metrics.clear_metrics()
    yield metrics
    metrics.clear_metrics()


# ---- findings for failing checks ----------------------------------------------------------------------------------
def test_failing_checks_become_findings_with_the_documented_fields(account, hub, runs_bucket, ranges_2026):
    # Given a drifted instance, a compliant one, and an untagged drifted one
    net = account.network()
    [instance] = drifted(account, net)
    fine = compliant(account, net)
    [untagged] = drifted(account, net, opted_in=False)

    # When a report-mode scan runs with Security Hub findings enabled
    report = scan(ranges_2026, mode="report", reports_bucket=runs_bucket)

    # Then Security Hub holds exactly one finding per (instance, check) that does not pass
    found = hub_findings(hub)
    assert sorted(found) == [finding_id(instance, c) for c in FIXABLE]
    assert not [i for i in found if fine in i or untagged in i]

    # And each carries the documented fields: the account's default product, the instance's ARN, the check's reason
    for check_id in FIXABLE:
        finding = found[finding_id(instance, check_id)]
        assert finding["SchemaVersion"] == "2018-10-08"
        assert finding["ProductArn"] == f"arn:aws:securityhub:{REGION}:{ACCOUNT}:product/{ACCOUNT}/default"
        assert finding["GeneratorId"] == f"eic-guard/{check_id}"
        assert finding["AwsAccountId"] == ACCOUNT
        assert finding["Types"] == [FINDING_TYPE]
        assert finding["Types"][0].startswith("Software and Configuration Checks/")
        assert finding["CreatedAt"] == finding["UpdatedAt"]
        assert datetime.strptime(finding["CreatedAt"], ISO_Z)
        assert finding["Severity"] == {"Label": "MEDIUM"}
        assert finding["Title"].startswith("EC2 Instance Connect prerequisite: ")
        reason = entry(report, instance).checks[check_id].reason
        assert finding["Description"] == f"{reason}. eic-guard fixes this in remediate mode."
        # the check's guidance (docs/architecture.md §5b) is the recommendation, its documentation URL the
        # recommendation's URL
        guidance, advice = entry(report, instance).checks[check_id].guidance, finding["Remediation"]["Recommendation"]
        assert guidance and advice["Text"] == guidance[:RECOMMENDATION_LIMIT]
        assert advice["Url"].startswith("https://docs.aws.amazon.com/") and advice["Url"] in guidance
        assert finding["Resources"] == [
            {
                "Type": "AwsEc2Instance",
                "Id": f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance}",
                "Partition": "aws",
                "Region": REGION,
            }
        ]
        assert finding["Compliance"] == {"Status": "FAILED"}
        assert finding["Workflow"] == {"Status": "NEW"}
        assert finding["RecordState"] == "ACTIVE"
        assert finding["ProductFields"]["eic-guard/RunId"] == report.run_id

    # And the ledger in the reports bucket remembers both as open, with their CreatedAt
    stored = ledger(runs_bucket)
    assert stored["schema"] == LEDGER_SCHEMA
    assert {k: v["created_at"] for k, v in stored["open"].items()} == {i: found[i]["CreatedAt"] for i in sorted(found)}


def test_a_finding_names_the_instance_in_its_description_and_resource_tags(account, hub, runs_bucket, ranges_2026):
    # Given a drifted instance named web-1, with an owner tag and a tag that is not one of the owner tags
    net = account.network()
    [instance] = drifted(account, net, name="web-1", tags={"Owner": "alice", "CostCenter": "42"})

    # When a report-mode scan runs with Security Hub findings enabled
    scan(ranges_2026, mode="report", reports_bucket=runs_bucket)

    # Then each finding's Description starts with the name, and its resource carries the Name and owner tags only
    found = hub_findings(hub)
    for check_id in FIXABLE:
        finding = found[finding_id(instance, check_id)]
        assert finding["Description"].startswith(f"web-1 ({instance}): ")
        assert finding["Resources"][0]["Tags"] == {"Name": "web-1", "Owner": "alice"}
        assert finding["Title"].startswith("EC2 Instance Connect prerequisite: ")  # the same for every instance


def test_a_scan_imports_ssh_open_to_the_world_as_a_warning_finding(account, hub, runs_bucket, ranges_2026):
    # Given a compliant instance named web-open-world whose group allows TCP 22 from 0.0.0.0/0
    net = account.network()
    world = account.security_group(net, "ssh-world", [ssh_from("0.0.0.0/0")])
    [instance] = account.launch(
        image_id=account.al2023_ami(),
        subnet_id=net.public_subnet_id,
        group_ids=[world],
        public_ip=True,
        name="web-open-world",
    )

    # When a report-mode scan runs with Security Hub findings enabled
    report = scan(ranges_2026, mode="report", reports_bucket=runs_bucket)

    # Then its only finding is the warning's: Compliance WARNING, LOW, naming the group; the ledger keeps it open
    assert entry(report, instance).checks["eic-ssh-ingress"].status == "pass"
    warning_id = finding_id(instance, "warning:ssh-open-to-internet")
    found = hub_findings(hub)
    assert list(found) == [warning_id]
    assert found[warning_id]["Compliance"] == {"Status": "WARNING"}
    assert found[warning_id]["Severity"]["Label"] == "LOW"
    assert found[warning_id]["Description"].startswith(f"web-open-world ({instance}): ")
    assert world in found[warning_id]["Description"]
    assert list(ledger(runs_bucket)["open"]) == [warning_id]


def test_a_warning_is_a_finding_of_its_own_until_it_is_gone(hub, tmp_path, api_calls):
    # Given an instance whose eic-ssh-ingress passes through a rule open to the whole internet (a report entry)
    world_open = "ssh-open-to-internet: sg-0open allows TCP 22 from 0.0.0.0/0"
    passing = {c: {"status": "pass", "reason": None} for c in ("public-ipv4", "eic-ssh-ingress", "imds-enabled")}
    instance = {
        "instance_id": "i-0warned",
        "account_id": ACCOUNT,
        "region": REGION,
        "vpc_id": "vpc-1",
        "verdict": "compliant",
        "checks": passing,
        "actions": [],
        "name": "web-open-world",
        "tags": {"Team": "payments"},
        "warnings": [world_open],
    }
    ledger_file = FileLedger(tmp_path, ACCOUNT, REGION)
    scope = FindingScope(ACCOUNT, REGION)
    warning_id = finding_id("i-0warned", "warning:ssh-open-to-internet")
    securityhub = boto3.Session().client("securityhub", REGION)  # recorded by api_calls

    # When its findings are synced, again unchanged, and once more after the rule was narrowed
    first = sync_findings(securityhub, ledger_file, scope, [instance], run_id="run-1")
    opened, first_imports = hub_findings(hub)[warning_id], imports(api_calls)
    api_calls.clear()
    again = sync_findings(securityhub, ledger_file, scope, [instance], run_id="run-2")
    repeated = imports(api_calls)
    sync_findings(securityhub, ledger_file, scope, [{**instance, "warnings": []}], run_id="run-3")
    resolved = hub_findings(hub)[warning_id]

    # Then the warning was one LOW finding, Compliance WARNING, about the named instance, the only one imported
    assert (first.imported, [[f["Id"] for f in batch] for batch in first_imports]) == (1, [[warning_id]])
    assert list(hub_findings(hub)) == [warning_id]
    assert opened["Compliance"] == {"Status": "WARNING"} and opened["Severity"]["Label"] == "LOW"
    assert (opened["Workflow"], opened["RecordState"]) == ({"Status": "NEW"}, "ACTIVE")
    assert opened["Description"] == "web-open-world (i-0warned): sg-0open allows TCP 22 from 0.0.0.0/0"
    assert opened["Resources"][0]["Tags"] == {"Name": "web-open-world", "Team": "payments"}
    # And the unchanged second sync imported nothing
    assert (again.imported, again.unchanged, repeated) == (0, 1, [])
    # And once the warning was gone its finding was resolved, keeping its CreatedAt, and the ledger forgot it
    assert resolved["Compliance"] == {"Status": "PASSED"} and resolved["Workflow"] == {"Status": "RESOLVED"}
    assert resolved["CreatedAt"] == opened["CreatedAt"]
    assert ledger_file.load() == {}


def test_fixed_checks_resolve_their_findings_and_keep_created_at(account, hub, runs_bucket, api_calls, ranges_2026):
    # Given a drifted instance whose findings a report-mode scan imported
    net = account.network()
    [instance] = drifted(account, net)
    scan(ranges_2026, mode="report", reports_bucket=runs_bucket)
    before = hub_findings(hub)
    api_calls.clear()

    # When a remediate scan fixes it
    report = scan(ranges_2026, reports_bucket=runs_bucket)

    # Then both fixes are made and both findings are PASSED and RESOLVED in one call, created when they first failed
    assert {c: entry(report, instance).checks[c].status for c in FIXABLE} == {c: "fixed" for c in FIXABLE}
    [call] = imports(api_calls)
    assert sorted(f["Id"] for f in call) == sorted(before)
    after = hub_findings(hub)
    for fid, finding in after.items():
        assert finding["Compliance"] == {"Status": "PASSED"}
        assert finding["Workflow"] == {"Status": "RESOLVED"}
        assert finding["RecordState"] == "ACTIVE"
        assert finding["FindingProviderFields"]["Severity"] == {"Label": "INFORMATIONAL"}
        assert finding["CreatedAt"] == before[fid]["CreatedAt"]
        assert finding["UpdatedAt"] > before[fid]["UpdatedAt"]
        assert finding["Description"].startswith("Fixed by eic-guard")

    # And the ledger has nothing open any more, so the next scan imports nothing at all
    assert ledger(runs_bucket)["open"] == {}
    api_calls.clear()
    scan(ranges_2026, reports_bucket=runs_bucket)
    assert imports(api_calls) == []
    assert ledger_writes(api_calls) == []


def in_default_views(finding: dict) -> bool:
    """Security Hub's default findings views and Insights: active findings whose workflow is NEW or NOTIFIED."""
    return finding["RecordState"] == "ACTIVE" and finding["Workflow"]["Status"] in ("NEW", "NOTIFIED")


def test_a_fixed_checks_finding_leaves_security_hubs_default_views(account, hub, runs_bucket, api_calls, ranges_2026):
    # Given a drifted instance whose two fixable findings a report-mode scan put in the default views
    net = account.network()
    [instance] = drifted(account, net)
    scan(ranges_2026, mode="report", reports_bucket=runs_bucket)
    assert sorted(fid for fid, f in hub_findings(hub).items() if in_default_views(f)) == sorted(
        finding_id(instance, c) for c in FIXABLE
    )
    api_calls.clear()

    # When a remediate scan fixes both checks
    scan(ranges_2026, reports_bucket=runs_bucket)

    # Then both findings leave the default views: imported PASSED (Security Hub ignores the import's Workflow for a
    # finding that exists), then set RESOLVED with one BatchUpdateFindings call in the instance's account
    assert [fid for fid, f in hub_findings(hub).items() if in_default_views(f)] == []
    [update] = [params for name, params in api_calls.calls if name == "BatchUpdateFindings"]
    assert sorted(i["Id"] for i in update["FindingIdentifiers"]) == sorted(finding_id(instance, c) for c in FIXABLE)
    assert update["Workflow"] == {"Status": "RESOLVED"}


def test_a_failure_that_comes_back_reopens_the_same_finding(account, ec2, hub, runs_bucket, ranges_2026):
    # Given a drifted instance fixed by a remediate scan (FAILED then PASSED)
    net = account.network()
    [instance] = drifted(account, net)
    scan(ranges_2026, mode="report", reports_bucket=runs_bucket)
    scan(ranges_2026, reports_bucket=runs_bucket)

    # When its metadata endpoint is turned off again and a report-mode scan runs
    ec2.modify_instance_metadata_options(InstanceId=instance, HttpEndpoint="disabled", HttpTokens="required")
    scan(ranges_2026, mode="report", reports_bucket=runs_bucket)

    # Then the same finding is FAILED and NEW again (a new occurrence), the other stays resolved
    found = hub_findings(hub)
    assert len(found) == 2
    assert found[finding_id(instance, "imds-enabled")]["Compliance"] == {"Status": "FAILED"}
    assert found[finding_id(instance, "imds-enabled")]["Workflow"] == {"Status": "NEW"}
    assert found[finding_id(instance, "eic-ssh-ingress")]["Compliance"] == {"Status": "PASSED"}
    assert list(ledger(runs_bucket)["open"]) == [finding_id(instance, "imds-enabled")]


# ---- no change of state -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["report", "remediate"])
def test_a_second_identical_scan_imports_nothing(account, hub, runs_bucket, api_calls, ranges_2026, mode):
    # Given an instance eic-guard cannot fix (no internet route) whose findings one scan imported
    net = account.network()
    instance = blocked(account, net)
    scan(ranges_2026, mode=mode, reports_bucket=runs_bucket)
    first = hub_findings(hub)
    assert sorted(first) == [finding_id(instance, c) for c in ("eic-ssh-ingress", "imds-enabled", "internet-route")]
    api_calls.clear()

    # When the same scan runs again
    scan(ranges_2026, mode=mode, reports_bucket=runs_bucket)

    # Then no finding is imported and the ledger is not rewritten: Security Hub is exactly as it was
    assert imports(api_calls) == []
    assert ledger_writes(api_calls) == []
    assert hub_findings(hub) == first


def test_unchanged_open_findings_are_refreshed_once_they_are_due(account, hub, runs_bucket, api_calls, ranges_2026):
    # Given open findings last imported REFRESH_AFTER ago (Security Hub deletes a finding 90 days after UpdatedAt)
    net = account.network()
    instance = blocked(account, net)
    scan(ranges_2026, reports_bucket=runs_bucket)
    first = hub_findings(hub)
    stored = ledger(runs_bucket)
    aged = (datetime.now(UTC) - REFRESH_AFTER - timedelta(hours=1)).isoformat()
    for record in stored["open"].values():
        record["imported_at"] = aged
    boto3.client("s3", REGION).put_object(Bucket=runs_bucket, Key=LEDGER_KEY, Body=json.dumps(stored).encode())
    api_calls.clear()

    # When the same scan runs
    scan(ranges_2026, reports_bucket=runs_bucket)

    # Then each is imported again, once, still FAILED, with the same CreatedAt and a later UpdatedAt
    [call] = imports(api_calls)
    assert sorted(f["Id"] for f in call) == sorted(first)
    for fid, finding in hub_findings(hub).items():
        assert finding["Compliance"] == {"Status": "FAILED"}
        assert finding["CreatedAt"] == first[fid]["CreatedAt"]
        assert finding["UpdatedAt"] > first[fid]["UpdatedAt"]
    assert instance in call[0]["Id"]
    # And the ledger records the refresh, so the scan after imports nothing
    api_calls.clear()
    scan(ranges_2026, reports_bucket=runs_bucket)
    assert imports(api_calls) == []


# ---- batches ------------------------------------------------------------------------------------------------------
def test_more_than_100_failing_pairs_are_imported_in_batches_of_at_most_100(
    account, hub, runs_bucket, api_calls, ranges_2026
):
    # Given 60 drifted instances: 120 failing (instance, check) pairs in report mode
    net = account.network()
    fleet = drifted(account, net, count=60)
    api_calls.clear()

    # When a report-mode scan runs
    scan(ranges_2026, mode="report", reports_bucket=runs_bucket)

    # Then two calls of 100 and 20 findings import them all, each once
    calls = imports(api_calls)
    assert [len(c) for c in calls] == [100, 20]
    ids = [f["Id"] for c in calls for f in c]
    assert sorted(ids) == sorted(finding_id(i, c) for i in fleet for c in FIXABLE)
    assert len(hub_findings(hub)) == 120

    # And resolving them after a remediate scan is batched the same way
    api_calls.clear()
    scan(ranges_2026, reports_bucket=runs_bucket)
    assert [len(c) for c in imports(api_calls)] == [100, 20]
    assert {f["Compliance"]["Status"] for f in hub_findings(hub).values()} == {"PASSED"}


# ---- instances that leave the scope -------------------------------------------------------------------------------
def test_findings_of_gone_untagged_and_excluded_instances_are_archived(account, ec2, hub, runs_bucket, ranges_2026):
    # Given three drifted instances whose findings a report-mode scan imported
    net = account.network()
    gone, untagged, excluded = drifted(account, net, count=3)
    scan(ranges_2026, mode="report", reports_bucket=runs_bucket)
    before = hub_findings(hub)
    assert len(before) == 6

    # When one is terminated, one loses its opt-in tag, one is excluded, and a scan runs
    ec2.terminate_instances(InstanceIds=[gone])
    ec2.delete_tags(Resources=[untagged], Tags=[{"Key": "eic-guard:managed"}])
    ec2.create_tags(Resources=[excluded], Tags=[{"Key": "eic-guard:exclude", "Value": "database host"}])
    scan(ranges_2026, reports_bucket=runs_bucket)

    # Then every finding is archived, NOT_AVAILABLE (nothing was checked), created when it first failed
    after = hub_findings(hub)
    for fid, finding in after.items():
        assert finding["RecordState"] == "ARCHIVED"
        assert finding["Compliance"] == {"Status": "NOT_AVAILABLE"}
        assert finding["CreatedAt"] == before[fid]["CreatedAt"]
    assert "database host" in after[finding_id(excluded, "imds-enabled")]["Description"]
    assert "no longer in eic-guard's scope" in after[finding_id(gone, "imds-enabled")]["Description"]
    # And nothing is open any more
    assert ledger(runs_bucket)["open"] == {}


# ---- failures never fail the scan ---------------------------------------------------------------------------------
def test_an_import_failure_is_counted_and_the_scan_completes(
    account, hub, runs_bucket, ranges_2026, monkeypatch, clean_metrics
):
    # Given an instance eic-guard cannot fix, and Security Hub refusing every import
    net = account.network()
    instance = blocked(account, net)
    faults = FaultInjector().install(monkeypatch)
    refusal = faults.error(
        "BatchImportFindings",
        "InvalidAccessException",
        service="securityhub",
        message="Account 123456789012 is not subscribed to AWS Security Hub",
        status=401,
    )
    settings = findings_settings(reports_bucket=runs_bucket)

    # When the target worker runs a remediate scan
    document = worker_document(ranges_2026, settings)

    # Then the scan completes with its report entry, and the document counts the three refused findings
    assert (document["status"], document["error"]) == ("ok", None)
    assert [e["instance_id"] for e in document["instances"]] == [instance]
    assert document["security_hub"] == {
        "imported": 0,
        "resolved": 0,
        "archived": 0,
        "unchanged": 0,
        "failed": 3,
        "calls": 1,
        "errors": ["InvalidAccessException: Account 123456789012 is not subscribed to AWS Security Hub"],
        "ledger": f"s3://{runs_bucket}/{LEDGER_KEY}",
    }
    # And the EMF metric SecurityHubImportFailures counts them
    assert clean_metrics.metric_set["SecurityHubImportFailures"]["Value"] == [3.0]
    # And nothing is remembered as open: no ledger was written
    with pytest.raises(boto3.client("s3", REGION).exceptions.NoSuchKey):
        ledger(runs_bucket)

    # When Security Hub accepts imports again and the next run comes
    faults.rules.remove(refusal)
    again = worker_document(ranges_2026, settings)

    # Then the three findings are imported
    assert (again["security_hub"]["imported"], again["security_hub"]["failed"]) == (3, 0)
    assert len(hub_findings(hub)) == 3


def test_a_finding_refused_by_id_is_the_only_one_tried_again(
    account, hub, runs_bucket, api_calls, ranges_2026, monkeypatch
):
    # Given an instance eic-guard cannot fix, and Security Hub refusing its internet-route finding in FailedFindings
    net = account.network()
    instance = blocked(account, net)
    refused = finding_id(instance, "internet-route")

    def refuse_one(parsed):
        parsed.update(
            FailedCount=1,
            SuccessCount=parsed["SuccessCount"] - 1,
            FailedFindings=[{"Id": refused, "ErrorCode": "InvalidInput", "ErrorMessage": "Invalid Input"}],
        )

    faults = FaultInjector().install(monkeypatch)
    rule = faults.rewrite("BatchImportFindings", refuse_one, service="securityhub", times=1)
    settings = findings_settings(reports_bucket=runs_bucket)

    # When the worker scans
    document = worker_document(ranges_2026, settings)

    # Then two are imported, one failed, and only the two are remembered as open
    assert (document["security_hub"]["imported"], document["security_hub"]["failed"]) == (2, 1)
    assert document["security_hub"]["errors"] == [f"InvalidInput: Invalid Input ({refused})"]
    assert refused not in ledger(runs_bucket)["open"]
    assert len(rule.hits) == 1

    # And the next run imports the refused one only
    api_calls.clear()
    worker_document(ranges_2026, settings)
    assert [[f["Id"] for f in call] for call in imports(api_calls)] == [[refused]]


# ---- where the ledger lives ---------------------------------------------------------------------------------------
def test_findings_are_off_by_default(account, hub, runs_bucket, api_calls, ranges_2026):
    # Given a drifted instance and the default settings
    net = account.network()
    drifted(account, net)
    api_calls.clear()

    # When a report-mode scan runs
    run_scan(AwsClients(), Settings.build(regions=(REGION,), mode="report", reports_bucket=runs_bucket), ranges_2026)

    # Then Security Hub is not called and no ledger is written
    assert [n for n, _ in api_calls.calls if n in ("BatchImportFindings", "GetObject")] == []
    assert ledger_writes(api_calls) == []
    assert hub_findings(hub) == {}


def test_the_cli_without_a_bucket_keeps_its_ledger_in_the_home_directory(
    account, hub, monkeypatch, tmp_path, ranges_2026
):
    # Given no reports bucket (the CLI) and a home directory
    monkeypatch.setenv("HOME", str(tmp_path))
    net = account.network()
    [instance] = drifted(account, net)

    # When a report-mode scan and then a remediate scan run
    scan(ranges_2026, mode="report")
    path = tmp_path / ".eic-guard" / "findings" / ACCOUNT / f"{REGION}.json"
    opened = json.loads(path.read_text())["open"]
    scan(ranges_2026)

    # Then the ledger file remembered the open findings, so the fixes resolved them
    assert sorted(opened) == [finding_id(instance, c) for c in FIXABLE]
    assert json.loads(path.read_text())["open"] == {}
    assert {f["Compliance"]["Status"] for f in hub_findings(hub).values()} == {"PASSED"}


def open_record(instance_id: str) -> dict:
    return {"instance_id": instance_id, "check_id": "imds-enabled", "created_at": "2026-08-23T02:00:00.000Z"}


def test_the_s3_ledger_applies_its_changes_to_a_copy_written_meanwhile(runs_bucket):
    # Given a ledger read by one writer, then rewritten by another (a concurrent event-driven check, say)
    s3 = boto3.client("s3", REGION)
    now = datetime.now(UTC)
    first = S3Ledger(s3, runs_bucket, ACCOUNT, REGION)
    first.load()
    first.save(LedgerChanges(opened={"a": open_record("i-a")}), now)
    assert first.load() == {"a": open_record("i-a")}
    other = S3Ledger(s3, runs_bucket, ACCOUNT, REGION)
    other.load()
    other.save(LedgerChanges(opened={"b": open_record("i-b")}), now)

    # When the first writer saves its own changes (its copy is stale now: the conditional put refuses it once)
    first.save(LedgerChanges(opened={"c": open_record("i-c")}, closed={"a"}), now)

    # Then both writers' changes are kept
    assert ledger(runs_bucket)["open"] == {"b": open_record("i-b"), "c": open_record("i-c")}


def test_a_new_s3_ledger_is_never_written_over_one_created_meanwhile(runs_bucket):
    # Given two writers that both found no ledger, one of which then created it
    s3 = boto3.client("s3", REGION)
    now = datetime.now(UTC)
    first, other = S3Ledger(s3, runs_bucket, ACCOUNT, REGION), S3Ledger(s3, runs_bucket, ACCOUNT, REGION)
    assert first.load() == other.load() == {}
    other.save(LedgerChanges(opened={"b": open_record("i-b")}), now)

    # When the other one saves (If-None-Match refuses the create)
    first.save(LedgerChanges(opened={"a": open_record("i-a")}), now)

    # Then the ledger holds both
    assert sorted(ledger(runs_bucket)["open"]) == ["a", "b"]


# ---- member accounts ----------------------------------------------------------------------------------------------
def test_a_member_accounts_findings_are_imported_in_that_account(aws, runs_bucket, ranges_2026):
    # Given a member account (entered through the member role) with Security Hub on and a drifted instance
    organizations = boto3.client("organizations", REGION)
    organizations.create_organization(FeatureSet="ALL")
    member = organizations.create_account(AccountName="m", Email="m@example.com")["CreateAccountStatus"]["AccountId"]
    credentials = boto3.client("sts", REGION).assume_role(
        RoleArn=f"arn:aws:iam::{member}:role/eic-guard-member", RoleSessionName="test-setup"
    )["Credentials"]
    session = boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=REGION,
    )
    member_hub = session.client("securityhub", REGION)
    member_hub.enable_security_hub(EnableDefaultStandards=False)
    account = SimulatedAccount.of(session, REGION)
    net = account.network()
    [instance] = drifted(account, net)

    # When the management account runs a report-mode scan of that member
    settings = findings_settings("report", reports_bucket=runs_bucket, accounts=member)
    run_job("scan", settings, AwsClients(), ranges=ranges_2026)

    # Then the findings are in the member's Security Hub, under the member's account and default product
    found = hub_findings(member_hub)
    assert sorted(found) == [finding_id(instance, c, member) for c in FIXABLE]
    for finding in found.values():
        assert finding["AwsAccountId"] == member
        assert finding["ProductArn"] == f"arn:aws:securityhub:{REGION}:{member}:product/{member}/default"
        assert finding["Resources"][0]["Id"] == f"arn:aws:ec2:{REGION}:{member}:instance/{instance}"
    # And none in the management account's; the ledger is in the central bucket, under the member's account
    assert hub_findings(boto3.client("securityhub", REGION)) == {}
    assert sorted(ledger(runs_bucket, f"findings/{member}/{REGION}.json")["open"]) == sorted(found)


def test_the_cli_scan_with_security_hub_imports_the_findings(account, ec2, tmp_path, monkeypatch, capsys):
    # Given a drifted opted-in instance and a home directory for the CLI's findings ledger
    monkeypatch.setenv("HOME", str(tmp_path))
    net = account.network()
    instance = account.launch_drifted(net)
    snapshot = str(IP_RANGES / "ip-ranges-2026-08-22.json")

    # When `eic-guard scan --security-hub` runs (report mode)
    code = main(["scan", "--region", REGION, "--ip-ranges", snapshot, "--security-hub", "--format", "json"])

    # Then the report is on standard output as usual and each failing check is a FAILED finding in Security Hub
    assert code == 1
    assert json.loads(capsys.readouterr().out)["summary"]["noncompliant"] == 1
    found = boto3.client("securityhub", REGION).get_findings()["Findings"]
    assert {f["Id"] for f in found} == {
        f"eic-guard/123456789012/{REGION}/{instance}/eic-ssh-ingress",
        f"eic-guard/123456789012/{REGION}/{instance}/imds-enabled",
    }
    assert {f["Compliance"]["Status"] for f in found} == {"FAILED"}
