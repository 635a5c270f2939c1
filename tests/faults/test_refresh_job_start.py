"""The deployed SNS refresh advances the ip-ranges state, then starts the state machine's refresh job. When
StartExecution fails (throttled past its retries, a service error), SNS delivers the notification again; by then the
state already holds the synctoken, so the retry must still start the job (an execution named after the synctoken,
so never twice) rather than answer "duplicate" and leave every account's groups to the nightly run."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime

import boto3
import pytest
import responses
from botocore.exceptions import ClientError
from eic_guard.ranges.state import DynamoDbStateStore
from eic_guard.settings import IP_RANGES_URL

from functions.refresh import app as refresh_app
from tests.conftest import EIC_US_EAST_1, REGION, create_state_table
from tests.faults.conftest import NEWEST_TOKEN, ip_ranges_file
from tests.faults.injector import FaultInjector
from tests.lambda_runtime import REFRESH_ARN, FakeLambdaContext, with_message

TABLE = "eic-guard-state"
FILE = ip_ranges_file(NEWEST_TOKEN, {REGION: (EIC_US_EAST_1,)})


def notification(raw: bytes) -> dict:
    created = datetime.fromtimestamp(NEWEST_TOKEN, UTC).strftime("%Y-%m-%d-%H-%M-%S")
    message = {"create-time": created, "synctoken": str(NEWEST_TOKEN), "md5": hashlib.md5(raw).hexdigest()}
    return with_message(message)


def invoke(evt: dict, request_id: str) -> dict:
    context = FakeLambdaContext(
        function_name="eic-guard-refresh", invoked_function_arn=REFRESH_ARN, aws_request_id=request_id
    )
    return refresh_app.lambda_handler(copy.deepcopy(evt), context)


@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
def test_a_refresh_job_that_failed_to_start_is_started_by_the_retried_delivery_and_only_once(
    faults: FaultInjector, aws, monkeypatch
):
    # Given a deployed refresh (state table, state machine) and AWS serving a new file
    store = DynamoDbStateStore(create_state_table(TABLE), TABLE)
    monkeypatch.setenv("EIC_GUARD_STATE_TABLE", TABLE)
    monkeypatch.setenv("EIC_GUARD_REGIONS", REGION)
    stepfunctions = boto3.client("stepfunctions", REGION)
    machine = stepfunctions.create_state_machine(
        name="eic-guard",
        definition=json.dumps({"StartAt": "Plan", "States": {"Plan": {"Type": "Pass", "End": True}}}),
        roleArn="arn:aws:iam::123456789012:role/eic-guard-state-machine",
    )["stateMachineArn"]
    monkeypatch.setenv("EIC_GUARD_STATE_MACHINE_ARN", machine)
    evt = notification(FILE)
    refused = faults.error("StartExecution", "ServiceUnavailable", service="stepfunctions", status=503, times=1)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as http:
        http.add(responses.GET, IP_RANGES_URL, body=FILE)

        # When the first delivery advances the state but cannot start the job
        with pytest.raises(ClientError, match="ServiceUnavailable"):
            invoke(evt, "first-delivery")
        assert len(refused.hits) == 1
        assert store.load().sync_token == str(NEWEST_TOKEN)
        assert stepfunctions.list_executions(stateMachineArn=machine)["executions"] == []

        # And SNS delivers it again, then once more
        retried = invoke(evt, "retry")
        again = invoke(evt, "third-delivery")

    # Then the retry started the job, and the third delivery found it started rather than starting another
    [execution] = stepfunctions.list_executions(stateMachineArn=machine)["executions"]
    assert execution["name"] == f"refresh-{NEWEST_TOKEN}"
    assert (retried["status"], retried["execution"]) == ("started", execution["executionArn"])
    assert again["execution"] == execution["executionArn"]
