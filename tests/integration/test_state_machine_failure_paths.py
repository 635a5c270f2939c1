"""Nothing lost on any failure path (issue 19, item 3), through the deployed state machine executed by moto's Step
Functions engine (tests/step_functions.py): a result object that cannot be read, and one that cannot be written
after the target's fixes were made. Each asserts the execution's status, the report in S3, the alert and EC2 after."""

from __future__ import annotations

import json

from botocore.exceptions import ClientError
from eic_guard.fanout import steps

from tests.aws_views import metadata_endpoint
from tests.conftest import REGION
from tests.integration import test_state_machine_runs as runs
from tests.integration.test_state_machine_runs import NO_METRICS, OTHER_REGION, report_targets

pytestmark = NO_METRICS
ORIGINAL_PUT = steps.RunObjects.put


# The runs' own fixtures: one fleet (a fixable and a compliant instance), one ip-ranges snapshot served.
fleet = runs.fleet
ip_ranges_url = runs.ip_ranges_url


def result_objects(monkeypatch, region: str, what) -> None:
    """The run's result objects of `region`: `what(document)` returns the body to store instead, or raises."""

    def put(self, name: str, document):
        if name.startswith("results/") and f"/{region}/" in name:
            body = what(document)
            self.s3.put_object(Bucket=self.bucket, Key=self.key(name), Body=body)
            return self.key(name)
        return ORIGINAL_PUT(self, name, document)

    monkeypatch.setattr(steps.RunObjects, "put", put)


def refused(document) -> bytes:
    raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied by the bucket policy"}}, "PutObject")


def test_an_unreadable_result_object_is_its_targets_error_and_the_execution_reports_the_rest(
    state_machine,
    fleet,
    ec2,
    ip_ranges_url,
    monkeypatch,
):
    # Given a stack scanning two regions, and the second region's result object stored as `[1, 2]` (another layer
    # version's worker, a hand edit...)
    monkeypatch.setenv("EIC_GUARD_REGIONS", f"{REGION},{OTHER_REGION}")
    _, fixable, compliant = fleet
    result_objects(monkeypatch, OTHER_REGION, lambda document: b"[1, 2]")
    machine = state_machine()

    # When the nightly execution runs
    run = machine.run({"job": "scan"})

    # Then it succeeds; the report lists the first region's instances and the second region's unreadable result
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert run.output["targets"] == {"ok": 1, "error": 1, "incomplete": 0}
    report = machine.report(run)
    assert report_targets(report) == {
        REGION: ("ok", None),
        OTHER_REGION: ("error", "result object unreadable: Input should be an object"),
    }
    assert {i["instance_id"]: i["verdict"] for i in report["instances"]} == {fixable: "fixed", compliant: "compliant"}
    assert metadata_endpoint(ec2, fixable) == "enabled"
    # And the alert names the unreadable target
    [alert] = machine.alerts()
    assert f"{OTHER_REGION} could not be scanned: result object unreadable: Input should be an object" in alert


def test_a_result_object_that_cannot_be_written_is_reported_scanned_result_lost_with_the_changes_made(
    state_machine,
    fleet,
    ec2,
    ip_ranges_url,
    monkeypatch,
):
    # Given S3 refusing the worker's result object after the fixes are made
    _, fixable, _ = fleet
    result_objects(monkeypatch, REGION, refused)
    machine = state_machine()

    # When the nightly execution runs
    run = machine.run({"job": "scan"})

    # Then it succeeds, the map item did not fail, and the fixes are made in EC2
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert machine.failures("ScanTargetFunction") == []
    [worker] = machine.outputs("ScanTargetFunction")  # the batch's output names where the record is kept
    [kept_as] = worker["results_lost"]
    assert worker["results_lost_total"] == 1 and kept_as.startswith("lost#")
    item = machine.client("dynamodb").get_item(TableName=machine.state_table, Key={"id": {"S": kept_as}})["Item"]
    record = json.loads(item["document"]["S"])
    assert record["changes"] >= 2
    assert metadata_endpoint(ec2, fixable) == "enabled"
    # And the report says the target was scanned and its result lost, with the changes made (not "not scanned")
    report = machine.report(run)
    [(status, error)] = report_targets(report).values()
    assert status == "error"
    changes = record["changes"]
    assert error.startswith(f"scanned, result lost, {changes} changes made, 2 instances checked;"), error
    assert "AccessDenied" in error
    made = {(a["action"], a["resource"], a["status"]) for a in report["target_actions"]}
    assert ("enable-imds", fixable, "done") in made and len(report["target_actions"]) == changes
    # And so does the alert
    [alert] = machine.alerts()
    assert f"{REGION} scanned, result lost" in alert and f"enable-imds {fixable} (done)" in alert
    assert "could not be scanned" not in alert

    # And the next night, S3 writable again, both instances are reported compliant and nothing more is changed
    monkeypatch.setattr(steps.RunObjects, "put", ORIGINAL_PUT)
    again = machine.run({"job": "scan"})
    assert again.status == "SUCCEEDED" and again.output["targets"] == {"ok": 1, "error": 0, "incomplete": 0}
    assert (again.output["summary"]["compliant"], again.output["summary"]["fixed"]) == (2, 0)
    assert json.dumps(machine.report(again)["target_actions"]) == "[]"
