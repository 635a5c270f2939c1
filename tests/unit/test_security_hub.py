"""Security Hub findings, the pure parts: the ASFF document, what a scan imports, batching, the ledger file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from eic_guard.budget import Deadline
from eic_guard.errors import ConfigurationError
from eic_guard.observability import metrics
from eic_guard.outputs import security_hub
from eic_guard.outputs.security_hub import (
    BATCH_LIMIT,
    FINDING_TYPE,
    PREREQUISITES_URL,
    REFRESH_AFTER,
    FileLedger,
    FindingScope,
    LedgerUnavailable,
    SyncOutcome,
    batches,
    build_finding,
    import_findings,
    partition_of,
    plan_findings,
    publish_target_findings,
    sync_findings,
)
from eic_guard.settings import Settings

ACCOUNT = "111122223333"
REGION = "eu-west-1"
SCOPE = FindingScope(ACCOUNT, REGION)
NOW = datetime(2026, 8, 23, 2, 0, tzinfo=UTC)
EARLIER = "2026-08-01T02:00:00.000Z"
ISO_Z = "%Y-%m-%dT%H:%M:%S.%fZ"


# ---- helpers -----------------------------------------------------------------------------------------------------
def entry(instance_id: str, verdict: str = "noncompliant", excluded_reason: str | None = None, **checks) -> dict:
    """A report instance entry; `checks` maps a check id (underscores for dashes) to (status, reason)."""
    return {
        "instance_id": instance_id,
        "account_id": ACCOUNT,
        "region": REGION,
        "vpc_id": "vpc-1",
        "verdict": verdict,
        "checks": {k.replace("_", "-"): {"status": s, "reason": r} for k, (s, r) in checks.items()},
        "actions": [],
        "excluded_reason": excluded_reason,
    }


def known(instance_id: str, check_id: str, *, fingerprint: str = "old", imported_at: str = EARLIER) -> dict:
    """A ledger entry for an open finding."""
    return {
        "instance_id": instance_id,
        "check_id": check_id,
        "created_at": EARLIER,
        "imported_at": imported_at,
        "fingerprint": fingerprint,
    }


def ledger_of(*items: dict) -> dict[str, dict]:
    return {SCOPE.finding_id(i["instance_id"], i["check_id"]): i for i in items}


def ledger_file(directory, *items: dict) -> FileLedger:
    """A ledger file holding `items` as its open findings."""
    ledger = FileLedger(directory, ACCOUNT, REGION)
    ledger.path.parent.mkdir(parents=True)
    ledger.path.write_text(json.dumps({"schema": security_hub.LEDGER_SCHEMA, "open": ledger_of(*items)}))
    return ledger


def plan(entries, open_findings=None, **options):
    return plan_findings(SCOPE, entries, open_findings or {}, now=NOW, run_id="run-1", **options)


def by_id(planned) -> dict[str, dict]:
    return {p.finding_id: p.finding for p in planned.findings}


class FakeSecurityHub:
    """Records BatchImportFindings payloads and BatchUpdateFindings requests; answers imports with what
    `answer(findings)` returns, or raises `error`; updates with `update(request)` (default: every finding updated)."""

    def __init__(self, answer=None, error: Exception | None = None, update=None):
        self.batches: list[list[dict]] = []
        self.updates: list[dict] = []
        self.answer = answer or (lambda findings: {"FailedCount": 0, "SuccessCount": len(findings)})
        self.update = update or (lambda request: {"ProcessedFindings": request["FindingIdentifiers"]})
        self.error = error

    def batch_import_findings(self, Findings):
        self.batches.append(Findings)
        if self.error is not None:
            raise self.error
        return self.answer(Findings)

    def batch_update_findings(self, **request):
        self.updates.append(request)
        return self.update(request)


def client_error(code: str, message: str = "refused") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "BatchImportFindings")


@pytest.fixture
def clean_metrics():
    metrics.clear_metrics()
    yield metrics
    metrics.clear_metrics()


# ---- the finding document -----------------------------------------------------------------------------------------
def test_a_failing_check_is_a_finding_with_every_documented_field():
    # Given an instance whose metadata endpoint is off (report mode: eic-guard would fix it)
    entries = [entry("i-0a", imds_enabled=("would-fix", "metadata endpoint is disabled"))]

    # When the scan's findings are planned
    [planned] = plan(entries).findings

    # Then the finding says so in ASFF, under the account's default product, about the instance's ARN
    finding = planned.finding
    assert finding == {
        "SchemaVersion": "2018-10-08",
        "Id": f"eic-guard/{ACCOUNT}/{REGION}/i-0a/imds-enabled",
        "ProductArn": f"arn:aws:securityhub:{REGION}:{ACCOUNT}:product/{ACCOUNT}/default",
        "ProductName": "eic-guard",
        "GeneratorId": "eic-guard/imds-enabled",
        "AwsAccountId": ACCOUNT,
        "CreatedAt": "2026-08-23T02:00:00.000Z",
        "UpdatedAt": "2026-08-23T02:00:00.000Z",
        "Title": "EC2 Instance Connect prerequisite: instance metadata service enabled",
        "Description": "metadata endpoint is disabled. eic-guard fixes this in remediate mode.",
        "Remediation": {
            "Recommendation": {"Text": security_hub.CHECK_TEXT["imds-enabled"].recommendation, "Url": PREREQUISITES_URL}
        },
        "ProductFields": {
            "eic-guard/CheckId": "imds-enabled",
            "eic-guard/Status": "would-fix",
            "eic-guard/RunId": "run-1",
        },
        "Resources": [
            {
                "Type": "AwsEc2Instance",
                "Id": f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0a",
                "Partition": "aws",
                "Region": REGION,
            }
        ],
        "Compliance": {"Status": "FAILED"},
        "Workflow": {"Status": "NEW"},
        "RecordState": "ACTIVE",
        "FindingProviderFields": {"Severity": {"Label": "MEDIUM"}, "Types": [FINDING_TYPE]},
    }
    assert FINDING_TYPE.startswith("Software and Configuration Checks/")
    # (Severity and Types are the provider's in FindingProviderFields only: the top-level ones are the customer's)
    assert not {"Severity", "Types"} & set(finding)


@pytest.mark.parametrize(
    ("region", "partition", "asff_partition"),
    [
        ("us-east-1", "aws", "aws"),
        ("ap-southeast-6", "aws", "aws"),
        ("cn-north-1", "aws-cn", "aws-cn"),
        ("us-gov-west-1", "aws-us-gov", "aws-us-gov"),
        ("us-isob-east-1", "aws-iso-b", None),
        ("us-iso-east-1", "aws-iso", None),
    ],
)
def test_product_and_resource_arns_name_the_regions_partition(region, partition, asff_partition):
    # Given a target in a region of some partition
    scope = FindingScope(ACCOUNT, region)

    # When a finding is built there
    finding = build_finding(
        scope,
        "i-0a",
        "al2023-ami",
        "FAILED",
        status="fail",
        description="x",
        created_at="t",
        updated_at="t",
        run_id="r",
    ).finding

    # Then every ARN carries that partition, and the resource's Partition says it when ASFF's enum has it (aws,
    # aws-cn, aws-us-gov) and is left out otherwise (the ARN names it)
    assert partition_of(region) == partition
    assert finding["ProductArn"] == f"arn:{partition}:securityhub:{region}:{ACCOUNT}:product/{ACCOUNT}/default"
    assert finding["Resources"][0]["Id"] == f"arn:{partition}:ec2:{region}:{ACCOUNT}:instance/i-0a"
    assert finding["Resources"][0].get("Partition") == asff_partition


def test_an_over_long_reason_is_clipped_to_asffs_limits():
    # Given a reason longer than ASFF's 1,024-character Description
    entries = [entry("i-0a", network_acl=("fail", "x" * 5000))]

    # When the finding is built
    [planned] = plan(entries).findings

    # Then its Description and recommendation fit
    assert len(planned.finding["Description"]) == 1024
    assert planned.finding["Description"].endswith("…")
    assert len(planned.finding["Remediation"]["Recommendation"]["Text"]) <= 512


def test_the_fingerprint_ignores_timestamps_and_run_id_but_not_content():
    # Given the same failure built at two times by two runs, and a changed reason
    def build(description, stamp, run_id):
        return build_finding(
            SCOPE,
            "i-0a",
            "imds-enabled",
            "FAILED",
            status="fail",
            description=description,
            created_at=stamp,
            updated_at=stamp,
            run_id=run_id,
        )

    first, later, changed = build("off", "t1", "r1"), build("off", "t2", "r2"), build("unknown", "t1", "r1")

    # Then only the content changes the fingerprint
    assert first.fingerprint == later.fingerprint
    assert first.fingerprint != changed.fingerprint


def test_the_checks_own_guidance_is_the_recommendation_when_the_report_has_one():
    # Given a report entry whose check carries guidance (docs/architecture.md §5b, issue 11)
    failing = entry("i-0a", imds_enabled=("fail", "off"))
    failing["checks"]["imds-enabled"]["guidance"] = "Turn IMDS on: https://docs.aws.amazon.com/x"

    # When the finding is built
    [planned] = plan([failing]).findings

    # Then the guidance is the recommendation's text, and the URL it names the recommendation's URL
    assert planned.finding["Remediation"]["Recommendation"] == {
        "Text": "Turn IMDS on: https://docs.aws.amazon.com/x",
        "Url": "https://docs.aws.amazon.com/x",
    }


def test_long_guidance_is_clipped_to_512_characters_and_its_url_kept_whole():
    # Given guidance of 700 characters whose documentation URL comes last, followed by a full stop
    url = "https://docs.aws.amazon.com/vpc/latest/userguide/nacl-rules.html"
    guidance = "Allow TCP 22 in from the EIC prefix. " * 18 + f"See {url}."
    failing = entry("i-0a", network_acl=("fail", "rule 50 denies"))
    failing["checks"]["network-acl"]["guidance"] = guidance

    # When the finding is built
    [planned] = plan([failing]).findings
    advice = planned.finding["Remediation"]["Recommendation"]

    # Then the text is the guidance clipped to ASFF's 512 characters, and the URL is whole, without the full stop
    assert len(guidance) > 700 and len(advice["Text"]) == 512
    assert advice["Text"] == guidance[:511] + "…"
    assert advice["Url"] == url


def test_without_guidance_the_checks_own_text_and_the_prerequisites_page_are_the_recommendation():
    # Given a failing check without guidance
    # When the finding is built
    [planned] = plan([entry("i-0a", imds_enabled=("fail", "off"))]).findings

    # Then the recommendation is the check's own text and the prerequisites page
    assert planned.finding["Remediation"]["Recommendation"] == {
        "Text": security_hub.CHECK_TEXT["imds-enabled"].recommendation,
        "Url": PREREQUISITES_URL,
    }


def test_a_finding_names_the_instance_in_its_description_and_resource_tags_but_not_its_title():
    # Given a failing check of an instance named web-1 with owner tags, one of them blank, and one named nothing
    named = {**entry("i-0a", imds_enabled=("fail", "off")), "name": "web-1", "tags": {"Owner": "alice", "Team": " "}}
    anonymous = entry("i-0b", imds_enabled=("fail", "off"))

    # When their findings are built
    findings = by_id(plan([named, anonymous]))
    web, other = findings[SCOPE.finding_id("i-0a", "imds-enabled")], findings[SCOPE.finding_id("i-0b", "imds-enabled")]

    # Then the named one's Description leads with the name, its resource carries the Name and the non-blank owner tag
    assert web["Description"] == "web-1 (i-0a): off"
    assert web["Resources"][0]["Tags"] == {"Name": "web-1", "Owner": "alice"}
    # And the anonymous one has neither; both keep the check's title (Security Hub groups findings by Title)
    assert other["Description"] == "off" and "Tags" not in other["Resources"][0]
    assert web["Title"] == other["Title"] == security_hub.CHECK_TEXT["imds-enabled"].title


# ---- warnings -----------------------------------------------------------------------------------------------------
WORLD_OPEN = "ssh-open-to-internet: sg-0open allows TCP 22 from 0.0.0.0/0"
WORLD_OPEN_V6 = "ssh-open-to-internet: sg-0other allows TCP 22 from ::/0"
WIDER = "ssh-wider-than-eic: sg-0wide allows TCP 22 from 18.0.0.0/8, wider than 18.206.107.24/29"
WARNING_ID = SCOPE.finding_id("i-0a", "warning:ssh-open-to-internet")


def warned(*warnings: str, **checks) -> dict:
    """A compliant instance named web-open-world with these warnings."""
    checks = checks or {"eic_ssh_ingress": ("pass", "sg-0open allows TCP 22 from 18.206.107.24/29")}
    return {**entry("i-0a", verdict="compliant", **checks), "name": "web-open-world", "warnings": list(warnings)}


def test_a_warning_is_a_low_warning_finding_of_its_own():
    # Given an instance whose eic-ssh-ingress passes through a rule open to the whole internet
    # When its findings are planned
    [planned] = plan([warned(WORLD_OPEN)]).findings

    # Then the one finding is the warning's: its own Id, Compliance WARNING, Severity LOW, open, about the instance
    finding = planned.finding
    assert (planned.finding_id, planned.check_id, planned.state) == (
        WARNING_ID,
        "warning:ssh-open-to-internet",
        "WARNING",
    )
    assert finding["Id"] == f"eic-guard/{ACCOUNT}/{REGION}/i-0a/warning:ssh-open-to-internet"
    assert finding["GeneratorId"] == "eic-guard/warning:ssh-open-to-internet"
    assert finding["Compliance"] == {"Status": "WARNING"}
    assert finding["FindingProviderFields"]["Severity"] == {"Label": "LOW"} and "Severity" not in finding
    assert (finding["Workflow"], finding["RecordState"]) == ({"Status": "NEW"}, "ACTIVE")
    assert finding["Title"] == "EC2 Instance Connect: SSH (TCP 22) open to the whole internet"
    assert finding["Description"] == "web-open-world (i-0a): sg-0open allows TCP 22 from 0.0.0.0/0"
    assert finding["Resources"][0]["Tags"] == {"Name": "web-open-world"}
    assert finding["ProductFields"] == {
        "eic-guard/CheckId": "eic-ssh-ingress",
        "eic-guard/Warning": "ssh-open-to-internet",
        "eic-guard/Status": "pass",
        "eic-guard/RunId": "run-1",
    }
    assert finding["Remediation"]["Recommendation"]["Url"] == PREREQUISITES_URL
    assert "0.0.0.0/0" in finding["Remediation"]["Recommendation"]["Text"]


def test_warnings_of_one_code_are_one_finding_and_a_wider_range_is_informational():
    # Given an instance open to the world through two groups, and through a range wider than the EIC prefix
    # When its findings are planned
    findings = by_id(plan([warned(WORLD_OPEN, WIDER, WORLD_OPEN_V6)]))

    # Then there is one finding per code: the world-open one names both groups; the wider one is INFORMATIONAL
    assert sorted(findings) == [WARNING_ID, SCOPE.finding_id("i-0a", "warning:ssh-wider-than-eic")]
    assert findings[WARNING_ID]["Description"] == (
        "web-open-world (i-0a): sg-0open allows TCP 22 from 0.0.0.0/0; sg-0other allows TCP 22 from ::/0"
    )
    wider = findings[SCOPE.finding_id("i-0a", "warning:ssh-wider-than-eic")]
    assert wider["FindingProviderFields"]["Severity"] == {"Label": "INFORMATIONAL"}
    assert wider["Compliance"] == {"Status": "WARNING"}


def test_an_unchanged_open_warning_is_not_imported_again_until_it_is_due():
    # Given the warning's finding as last imported (its fingerprint), 1 day ago and REFRESH_AFTER ago
    [planned] = plan([warned(WORLD_OPEN)]).findings
    fresh = known(
        "i-0a",
        "warning:ssh-open-to-internet",
        fingerprint=planned.fingerprint,
        imported_at=security_hub.asff_time(NOW - timedelta(days=1)),
    )
    stale = {**fresh, "imported_at": security_hub.asff_time(NOW - REFRESH_AFTER)}

    # When the same scan is planned against each
    # Then the fresh one is left alone and the stale one imported again with its CreatedAt
    left = plan([warned(WORLD_OPEN)], ledger_of(fresh))
    assert (left.findings, left.unchanged) == ([], 1)
    [again] = plan([warned(WORLD_OPEN)], ledger_of(stale)).findings
    assert (again.state, again.finding["CreatedAt"]) == ("WARNING", EARLIER)


def test_a_warning_that_is_gone_is_resolved_unless_a_check_erred():
    # Given an open warning finding, and a scan of the instance without the warning; then one where a check errs
    open_findings = ledger_of(known("i-0a", "warning:ssh-open-to-internet"))
    gone = warned()
    unsure = warned(eic_ssh_ingress=("error", "DescribeSecurityGroups: Throttling"))

    # When each is planned
    [resolved] = plan([gone], open_findings).findings
    kept = [p for p in plan([unsure], open_findings).findings if p.check_id.startswith("warning:")]

    # Then the first resolves the finding (PASSED, RESOLVED, INFORMATIONAL, its CreatedAt kept)
    assert (resolved.finding_id, resolved.state) == (WARNING_ID, "PASSED")
    finding = resolved.finding
    assert (finding["Compliance"], finding["Workflow"]) == ({"Status": "PASSED"}, {"Status": "RESOLVED"})
    assert (finding["FindingProviderFields"]["Severity"], finding["CreatedAt"]) == ({"Label": "INFORMATIONAL"}, EARLIER)
    assert finding["Title"] == "EC2 Instance Connect: SSH (TCP 22) open to the whole internet"
    # And the second leaves it open: the check that finds it could not look
    assert kept == []


def test_the_warning_of_a_gone_or_excluded_instance_is_archived():
    # Given open warning findings of an instance gone and of one now excluded
    open_findings = ledger_of(
        known("i-0a", "warning:ssh-open-to-internet"), known("i-0b", "warning:ssh-wider-than-eic")
    )
    entries = [entry("i-0b", verdict="excluded", excluded_reason="database host")]

    # When the scan is planned
    findings = by_id(plan(entries, open_findings))

    # Then both are archived under the warning's title
    for finding_id, title in (
        (WARNING_ID, "EC2 Instance Connect: SSH (TCP 22) open to the whole internet"),
        (SCOPE.finding_id("i-0b", "warning:ssh-wider-than-eic"), security_hub.WARNING_TEXT["ssh-wider-than-eic"].title),
    ):
        assert findings[finding_id]["RecordState"] == "ARCHIVED"
        assert findings[finding_id]["Compliance"] == {"Status": "NOT_AVAILABLE"}
        assert findings[finding_id]["Title"] == title


def test_sync_records_an_imported_warning_in_the_ledger(tmp_path):
    # Given an empty ledger file and an instance passing with a world-open rule
    ledger = FileLedger(tmp_path, ACCOUNT, REGION)
    hub = FakeSecurityHub()

    # When the findings are synced twice
    first = sync_findings(hub, ledger, SCOPE, [warned(WORLD_OPEN)], run_id="run-1", now=NOW)
    second = sync_findings(hub, ledger, SCOPE, [warned(WORLD_OPEN)], run_id="run-2", now=NOW + timedelta(hours=1))

    # Then the first imported it and the ledger holds it as open; the second imported nothing
    assert (first.imported, first.calls, second.imported, second.unchanged, second.calls) == (1, 1, 0, 1, 0)
    record = json.loads(ledger.path.read_text())["open"][WARNING_ID]
    assert (record["instance_id"], record["check_id"]) == ("i-0a", "warning:ssh-open-to-internet")


# ---- what a scan imports ------------------------------------------------------------------------------------------
def test_only_checks_that_do_not_pass_become_findings():
    # Given one instance with every kind of status
    entries = [
        entry(
            "i-0a",
            public_ipv4=("not-applicable", "instance is stopped"),
            eic_ssh_ingress=("fixed", "TCP 22 not allowed"),
            al2023_ami=("fail", "ubuntu is not Amazon Linux 2023 standard"),
            imds_enabled=("error", "enable-imds failed: UnauthorizedOperation"),
            internet_route=("pass", "rtb-1 0.0.0.0/0 -> igw-1"),
            network_acl=("would-fix", "whatever"),
        )
    ]

    # When its findings are planned without any open finding
    planned = plan(entries)

    # Then fail, error and would-fix are FAILED findings (the AMI one LOW), nothing else is imported
    findings = by_id(planned)
    assert sorted(findings) == [SCOPE.finding_id("i-0a", c) for c in ("al2023-ami", "imds-enabled", "network-acl")]
    assert {f["Compliance"]["Status"] for f in findings.values()} == {"FAILED"}
    assert findings[SCOPE.finding_id("i-0a", "al2023-ami")]["FindingProviderFields"]["Severity"] == {"Label": "LOW"}
    assert findings[SCOPE.finding_id("i-0a", "imds-enabled")]["Description"] == (
        "eic-guard could not complete this check: enable-imds failed: UnauthorizedOperation"
    )


def test_an_unchanged_open_finding_is_not_imported_again_until_it_is_due():
    # Given a failure already imported with this very content, recently
    entries = [entry("i-0a", imds_enabled=("fail", "metadata endpoint is disabled"))]
    [first] = plan(entries).findings
    recent = (NOW - timedelta(days=1)).isoformat()
    open_findings = ledger_of(known("i-0a", "imds-enabled", fingerprint=first.fingerprint, imported_at=recent))

    # When the same scan is planned again
    again = plan(entries, open_findings)

    # Then nothing is imported: no change of state
    assert (again.findings, again.unchanged) == ([], 1)

    # And once REFRESH_AFTER has passed since its import it is imported again, keeping its CreatedAt
    stale = (NOW - REFRESH_AFTER).isoformat()
    open_findings = ledger_of(known("i-0a", "imds-enabled", fingerprint=first.fingerprint, imported_at=stale))
    [refreshed] = plan(entries, open_findings).findings
    assert refreshed.finding["CreatedAt"] == EARLIER
    assert refreshed.finding["UpdatedAt"] == "2026-08-23T02:00:00.000Z"
    assert refreshed.finding["Compliance"] == {"Status": "FAILED"}


def test_a_changed_open_finding_is_imported_again_with_its_created_at():
    # Given an open finding whose reason has changed since it was imported
    entries = [entry("i-0a", imds_enabled=("fail", "metadata endpoint is unknown"))]
    open_findings = ledger_of(known("i-0a", "imds-enabled", fingerprint="something else"))

    # When the scan is planned
    [planned] = plan(entries, open_findings).findings

    # Then it is imported, still FAILED, created when it first failed
    assert planned.state == "FAILED"
    assert planned.finding["CreatedAt"] == EARLIER


@pytest.mark.parametrize("status", ["pass", "fixed", "not-applicable"])
def test_an_open_finding_whose_check_no_longer_fails_is_resolved(status):
    # Given an open finding whose check now passes, was fixed, or no longer applies
    entries = [entry("i-0a", verdict="compliant", imds_enabled=(status, "metadata endpoint is disabled"))]
    open_findings = ledger_of(known("i-0a", "imds-enabled"))

    # When the scan is planned
    [planned] = plan(entries, open_findings).findings

    # Then the finding is PASSED and RESOLVED, INFORMATIONAL, still ACTIVE, created when it first failed
    finding = planned.finding
    assert planned.state == "PASSED"
    assert (finding["Compliance"], finding["Workflow"], finding["RecordState"]) == (
        {"Status": "PASSED"},
        {"Status": "RESOLVED"},
        "ACTIVE",
    )
    assert finding["FindingProviderFields"]["Severity"] == {"Label": "INFORMATIONAL"} and "Severity" not in finding
    assert finding["CreatedAt"] == EARLIER
    assert finding["ProductFields"]["eic-guard/Status"] == status


def test_a_passing_check_without_an_open_finding_imports_nothing():
    # Given a compliant instance and an empty ledger
    entries = [entry("i-0a", verdict="compliant", imds_enabled=("pass", "metadata endpoint enabled"))]

    # When the scan is planned
    # Then nothing is imported (a finding exists only for what has failed)
    assert plan(entries).findings == []


def test_open_findings_of_gone_and_excluded_instances_are_archived():
    # Given open findings of an instance no longer in the scan and of one now excluded
    entries = [entry("i-0b", verdict="excluded", excluded_reason="database host")]
    open_findings = ledger_of(known("i-0a", "imds-enabled"), known("i-0b", "eic-ssh-ingress"))

    # When the scan is planned
    findings = by_id(plan(entries, open_findings))

    # Then both are archived: nothing was checked, so their compliance is NOT_AVAILABLE
    gone = findings[SCOPE.finding_id("i-0a", "imds-enabled")]
    excluded = findings[SCOPE.finding_id("i-0b", "eic-ssh-ingress")]
    for finding in (gone, excluded):
        assert finding["RecordState"] == "ARCHIVED"
        assert finding["Compliance"] == {"Status": "NOT_AVAILABLE"}
        assert finding["CreatedAt"] == EARLIER
    assert "no longer in eic-guard's scope" in gone["Description"]
    assert "database host" in excluded["Description"]


def test_a_partial_scan_resolves_and_archives_only_its_own_instances():
    # Given an event-driven check of i-0a only, and open findings of i-0a (gone) and of i-0c (not checked)
    open_findings = ledger_of(known("i-0a", "imds-enabled"), known("i-0c", "imds-enabled"))

    # When the partial scan (which found nothing) is planned
    findings = by_id(plan([], open_findings, instance_ids={"i-0a"}))

    # Then only i-0a's finding is archived
    assert list(findings) == [SCOPE.finding_id("i-0a", "imds-enabled")]


def test_a_check_missing_from_a_scanned_instance_keeps_its_finding():
    # Given an instance that vanished during the run, with only some checks decided, and open findings for others
    entries = [entry("i-0a", verdict="error", imds_enabled=("error", "instance vanished during the run"))]
    open_findings = ledger_of(known("i-0a", "network-acl"))

    # When the scan is planned
    findings = by_id(plan(entries, open_findings))

    # Then the undecided check's finding is left as it is (neither resolved nor archived)
    assert SCOPE.finding_id("i-0a", "network-acl") not in findings


def test_without_the_ledger_only_failing_checks_are_imported():
    # Given an unreadable ledger: nothing is known to be open
    entries = [entry("i-0a", imds_enabled=("fail", "off"))]

    # When planned without resolving
    planned = plan(entries, {}, resolve=False)

    # Then the failing check is imported, nothing is archived
    assert [p.state for p in planned.findings] == ["FAILED"]


# ---- batches and failures -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("count", "sizes"), [(0, []), (1, [1]), (100, [100]), (101, [100, 1]), (250, [100, 100, 50])])
def test_batches_never_exceed_100(count, sizes):
    # Given `count` items
    # When they are batched
    # Then every batch holds at most 100, in order
    assert [len(b) for b in batches(list(range(count)))] == sizes
    assert [x for b in batches(list(range(count))) for x in b] == list(range(count))
    assert BATCH_LIMIT == 100


def failing_findings(count: int):
    entries = [entry(f"i-{n:04x}", imds_enabled=("fail", "off")) for n in range(count)]
    return plan(entries).findings


def test_import_sends_at_most_100_findings_per_call():
    # Given 250 failing (instance, check) pairs
    planned = failing_findings(250)
    hub, outcome = FakeSecurityHub(), SyncOutcome()

    # When they are imported
    accepted = import_findings(hub, planned, outcome)

    # Then three calls of 100, 100 and 50 carry them all
    assert [len(b) for b in hub.batches] == [100, 100, 50]
    assert len(accepted) == 250
    assert (outcome.calls, outcome.failed, outcome.errors) == (3, 0, [])


def test_an_api_error_fails_its_batch_only_and_is_counted():
    # Given Security Hub refusing the first call only (not subscribed in that region, say)
    planned = failing_findings(150)
    refused_once = iter([client_error("InvalidAccessException", "Account is not subscribed to AWS Security Hub")])

    def answer(findings):
        error = next(refused_once, None)
        if error is not None:
            raise error
        return {"FailedCount": 0, "SuccessCount": len(findings)}

    hub, outcome = FakeSecurityHub(answer), SyncOutcome()

    # When they are imported
    accepted = import_findings(hub, planned, outcome)

    # Then the first batch's 100 findings are failed and the second batch's 50 accepted
    assert outcome.failed == 100
    assert len(accepted) == 50
    assert outcome.errors == ["InvalidAccessException: Account is not subscribed to AWS Security Hub"]


def test_findings_refused_in_failed_findings_are_counted_and_the_rest_accepted():
    # Given Security Hub refusing one finding of three, by id
    planned = failing_findings(3)
    refused = planned[1].finding_id

    def answer(findings):
        return {
            "FailedCount": 1,
            "SuccessCount": len(findings) - 1,
            "FailedFindings": [{"Id": refused, "ErrorCode": "InvalidInput", "ErrorMessage": "Invalid Input"}],
        }

    outcome = SyncOutcome()

    # When they are imported
    accepted = import_findings(FakeSecurityHub(answer), planned, outcome)

    # Then the two others are accepted and the refused one is counted with its reason
    assert [p.finding_id for p in accepted] == [planned[0].finding_id, planned[2].finding_id]
    assert outcome.failed == 1
    assert outcome.errors == [f"InvalidInput: Invalid Input ({refused})"]


def test_a_failed_count_without_ids_fails_the_whole_batch():
    # Given an answer counting a failure it does not name
    planned = failing_findings(2)
    outcome = SyncOutcome()

    # When they are imported
    accepted = import_findings(FakeSecurityHub(lambda f: {"FailedCount": 1, "SuccessCount": 1}), planned, outcome)

    # Then none is taken as imported (the next run tries them all again)
    assert (accepted, outcome.failed) == ([], 2)


def test_a_connection_error_is_counted_like_an_api_error():
    # Given an unreachable endpoint
    outcome = SyncOutcome()
    hub = FakeSecurityHub(error=EndpointConnectionError(endpoint_url="https://securityhub.eu-west-1.amazonaws.com"))

    # When findings are imported
    accepted = import_findings(hub, failing_findings(2), outcome)

    # Then they are failed with the error named
    assert (accepted, outcome.failed) == ([], 2)
    assert outcome.errors[0].startswith("EndpointConnectionError: ")


# ---- the ledger ---------------------------------------------------------------------------------------------------
def test_sync_records_what_was_imported_and_forgets_what_was_resolved(tmp_path):
    # Given a ledger file with one open finding, and a scan where it passes while another check fails
    ledger = ledger_file(tmp_path, known("i-0a", "al2023-ami"))
    entries = [entry("i-0a", al2023_ami=("pass", "al2023-ami-2023.1"), imds_enabled=("fail", "off"))]
    hub = FakeSecurityHub()

    # When the findings are synced
    outcome = sync_findings(hub, ledger, SCOPE, entries, run_id="run-1", now=NOW)

    # Then one FAILED and one PASSED finding went in one import, the PASSED one was then marked RESOLVED with
    # BatchUpdateFindings (the import's Workflow counts only for a new finding), and the ledger holds only the open one
    assert (outcome.imported, outcome.resolved, outcome.archived, outcome.failed, outcome.calls) == (1, 1, 0, 0, 2)
    assert hub.updates == [
        {
            "FindingIdentifiers": [{"Id": SCOPE.finding_id("i-0a", "al2023-ami"), "ProductArn": SCOPE.product_arn}],
            "Workflow": {"Status": "RESOLVED"},
            "Note": {"Text": "Resolved by eic-guard: the check passes again, or was fixed.", "UpdatedBy": "eic-guard"},
        }
    ]
    stored = json.loads(ledger.path.read_text())
    assert stored["schema"] == security_hub.LEDGER_SCHEMA
    assert list(stored["open"]) == [SCOPE.finding_id("i-0a", "imds-enabled")]
    record = stored["open"][SCOPE.finding_id("i-0a", "imds-enabled")]
    assert record["created_at"] == record["imported_at"] == "2026-08-23T02:00:00.000Z"
    assert (record["instance_id"], record["check_id"]) == ("i-0a", "imds-enabled")
    assert list(tmp_path.glob(f"{ACCOUNT}/.*")) == []  # no temporary file left behind


@pytest.mark.parametrize(
    "update",
    [
        lambda request: {
            "ProcessedFindings": [],
            "UnprocessedFindings": [
                {"FindingIdentifier": i, "ErrorCode": "FindingNotFound", "ErrorMessage": "Finding Not Found"}
                for i in request["FindingIdentifiers"]
            ],
        },
        lambda request: (_ for _ in ()).throw(client_error("AccessDeniedException", "not authorized")),
    ],
    ids=["unprocessed", "refused"],
)
def test_a_finding_security_hub_did_not_resolve_stays_open_for_the_next_run(tmp_path, update):
    # Given an open finding whose check passes now, and Security Hub importing it but not updating its workflow
    ledger = ledger_file(tmp_path, known("i-0a", "al2023-ami"))
    entries = [entry("i-0a", al2023_ami=("pass", "al2023-ami-2023.1"))]
    hub = FakeSecurityHub(update=update)

    # When the findings are synced
    outcome = sync_findings(hub, ledger, SCOPE, entries, run_id="run-1", now=NOW)

    # Then it is counted as failed with the reason, and the ledger keeps it open: the next run imports and resolves it
    # again rather than leaving it NEW in Security Hub's default views
    assert (outcome.resolved, outcome.failed) == (0, 1)
    assert outcome.errors and ("FindingNotFound" in outcome.errors[0] or "AccessDenied" in outcome.errors[0])
    assert list(json.loads(ledger.path.read_text())["open"]) == [SCOPE.finding_id("i-0a", "al2023-ami")]
    again = sync_findings(FakeSecurityHub(), ledger, SCOPE, entries, run_id="run-2", now=NOW)
    assert (again.resolved, again.failed) == (1, 0)
    assert json.loads(ledger.path.read_text())["open"] == {}


def test_a_failed_import_leaves_the_ledger_as_it_was(tmp_path):
    # Given an open finding that now passes, and Security Hub refusing every call
    ledger = ledger_file(tmp_path, known("i-0a", "al2023-ami"))
    before = ledger.path.read_text()
    entries = [entry("i-0a", al2023_ami=("pass", "ok"), imds_enabled=("fail", "off"))]

    # When the findings are synced
    outcome = sync_findings(
        FakeSecurityHub(error=client_error("AccessDeniedException")), ledger, SCOPE, entries, run_id="run-1", now=NOW
    )

    # Then both imports are counted as failed and the ledger is untouched (both are tried again next run)
    assert (outcome.imported, outcome.resolved, outcome.failed) == (0, 0, 2)
    assert ledger.path.read_text() == before


def test_an_unreadable_ledger_still_imports_failures_and_is_never_overwritten(tmp_path):
    # Given a ledger file that is not a ledger
    ledger = FileLedger(tmp_path, ACCOUNT, REGION)
    ledger.path.parent.mkdir(parents=True)
    ledger.path.write_text("{not json")
    entries = [entry("i-0a", imds_enabled=("fail", "off"))]

    # When the findings are synced
    outcome = sync_findings(FakeSecurityHub(), ledger, SCOPE, entries, run_id="run-1", now=NOW)

    # Then the failure is imported, the problem is said, and the file is left for a person to look at
    assert outcome.imported == 1
    assert "is not JSON" in outcome.errors[0] and "no finding resolved" in outcome.errors[0]
    assert ledger.path.read_text() == "{not json"
    with pytest.raises(LedgerUnavailable):
        ledger.load()


@pytest.mark.parametrize(
    "document",
    [
        {"schema": "something/else", "open": {}},
        {"schema": security_hub.LEDGER_SCHEMA},
        {"schema": security_hub.LEDGER_SCHEMA, "open": {"x": {"instance_id": "i-0a"}}},
        [],
    ],
    ids=["other-schema", "no-open", "record-without-fields", "not-an-object"],
)
def test_a_ledger_that_is_not_one_is_refused(tmp_path, document):
    # Given a ledger file holding something else
    ledger = FileLedger(tmp_path, ACCOUNT, REGION)
    ledger.path.parent.mkdir(parents=True)
    ledger.path.write_text(json.dumps(document))

    # When it is read
    # Then it is refused (and so never written over by a sync)
    with pytest.raises(LedgerUnavailable):
        ledger.load()


def test_the_cli_ledger_lives_under_the_home_directory(monkeypatch, tmp_path):
    # Given a home directory and settings without a reports bucket
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = Settings.build(regions=(REGION,))

    # When the ledger of a target is chosen
    ledger = security_hub.ledger_for(object(), settings, ACCOUNT, REGION)

    # Then it is ~/.eic-guard/findings/<account>/<region>.json
    assert isinstance(ledger, FileLedger)
    assert ledger.path == tmp_path / ".eic-guard" / "findings" / ACCOUNT / f"{REGION}.json"


# ---- the worker's entry and settings ------------------------------------------------------------------------------
def test_a_bug_while_publishing_is_counted_never_raised(clean_metrics):
    # Given clients that cannot even be built
    def clients_for(account_id):
        raise RuntimeError("no clients today")

    entries = [entry("i-0a", imds_enabled=("fail", "off"), network_acl=("pass", "ok"))]
    settings = Settings.build(regions=(REGION,), security_hub_findings="enabled")

    # When the worker publishes the target's findings
    document = publish_target_findings(clients_for, ACCOUNT, ACCOUNT, REGION, settings, entries, run_id="run-1")

    # Then the failing pair is counted as failed, the error named, and the metric recorded
    assert document["failed"] == 1
    assert document["errors"] == ["RuntimeError: no clients today"]
    assert clean_metrics.metric_set["SecurityHubImportFailures"]["Value"] == [1.0]


def test_a_worker_out_of_time_imports_nothing_and_fails_nothing(clean_metrics):
    # Given a worker whose time is inside its reserve
    called = []

    def clients_for(account_id):
        called.append(account_id)
        raise AssertionError("no client may be built")

    deadline = Deadline(lambda: 10.0, reserve=60.0)
    settings = Settings.build(regions=(REGION,), security_hub_findings="enabled")

    # When it would publish
    document = publish_target_findings(
        clients_for,
        ACCOUNT,
        ACCOUNT,
        REGION,
        settings,
        [entry("i-0a", imds_enabled=("fail", "off"))],
        run_id="run-1",
        deadline=deadline,
    )

    # Then it leaves them to the next round or run: no call, no failure, no metric
    assert called == []
    assert (document["imported"], document["failed"]) == (0, 0)
    assert "out of time" in document["errors"][0]
    assert "SecurityHubImportFailures" not in clean_metrics.metric_set


def test_security_hub_findings_are_off_unless_enabled():
    # Given no setting, then the environment variable
    # When settings are read
    # Then findings are disabled by default, enabled by EIC_GUARD_SECURITY_HUB_FINDINGS, and nothing else is taken
    assert Settings.from_env({"AWS_REGION": REGION}).security_hub_findings == "disabled"
    enabled = Settings.from_env({"AWS_REGION": REGION, "EIC_GUARD_SECURITY_HUB_FINDINGS": "enabled"})
    assert enabled.security_hub_findings == "enabled"
    with pytest.raises(ConfigurationError, match="EIC_GUARD_SECURITY_HUB_FINDINGS"):
        Settings.from_env({"AWS_REGION": REGION, "EIC_GUARD_SECURITY_HUB_FINDINGS": "yes"})


def test_timestamps_are_utc_iso_8601_with_z():
    # Given a moment in another time zone
    moment = datetime(2026, 8, 23, 4, 0, 0, 123456, tzinfo=UTC).astimezone()

    # When written for ASFF
    written = security_hub.asff_time(moment)

    # Then it is UTC, millisecond precision, suffixed Z
    assert written == "2026-08-23T04:00:00.123Z"
    assert datetime.strptime(written, ISO_Z).replace(tzinfo=UTC) == moment.replace(microsecond=123000)


def test_a_finding_names_the_instances_connect_path():
    # Given an endpoint-path instance (docs/architecture.md §13) failing a check and carrying a warning, and an
    # instance of a report without paths
    on_path = {**entry("i-0e", endpoint_ssh_ingress=("fail", "no rule from sg-0eice")), "connect_path": "endpoint"}
    on_path["warnings"] = ["ssh-open-to-internet: sg-0open allows TCP 22 from 0.0.0.0/0"]
    older = entry("i-0a", imds_enabled=("fail", "metadata endpoint is disabled"))

    # When their findings are planned
    findings = by_id(plan([on_path, older]))

    # Then the endpoint instance's findings say its path in ProductFields; the other's have no such field
    ours = [f for i, f in findings.items() if "/i-0e/" in i]
    assert len(ours) == 2
    assert {f["ProductFields"]["eic-guard/ConnectPath"] for f in ours} == {"endpoint"}
    assert "eic-guard/ConnectPath" not in findings[SCOPE.finding_id("i-0a", "imds-enabled")]["ProductFields"]
