"""The account alias (docs/architecture.md §5b): asked once per account and run, never a reason to fail; a refusal is
remembered, a transient failure is not."""

from __future__ import annotations

import boto3
from botocore.stub import Stubber
from eic_guard.aws.clients import AwsClients


def clients_with(*answers: dict | str) -> tuple[AwsClients, Stubber]:
    """AwsClients whose IAM client answers ListAccountAliases with `answers` in order (a str is an error code)."""
    clients = AwsClients(boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"))
    stubber = Stubber(clients.client("iam"))
    for answer in answers:
        if isinstance(answer, str):
            stubber.add_client_error("list_account_aliases", service_error_code=answer, http_status_code=403)
        else:
            stubber.add_response("list_account_aliases", answer)
    stubber.activate()
    return clients, stubber


def test_the_alias_is_asked_once_and_kept():
    # Given an account whose alias is payments-prod
    clients, stubber = clients_with({"AccountAliases": ["payments-prod"], "IsTruncated": False})

    # When two targets of the run ask for it
    first, second = clients.account_alias(), clients.account_alias()

    # Then IAM was asked once, and both got the alias
    assert (first, second) == ("payments-prod", "payments-prod")
    stubber.assert_no_pending_responses()


def test_an_account_without_alias_is_none():
    clients, _ = clients_with({"AccountAliases": [], "IsTruncated": False})
    assert clients.account_alias() is None


def test_a_refusal_is_remembered_for_the_run():
    # Given a role that may not read the alias (a member stack not yet updated)
    clients, stubber = clients_with("AccessDenied")

    # When two targets ask
    answers = [clients.account_alias(), clients.account_alias()]

    # Then the account has no name and IAM was asked once (the second answer comes from memory)
    assert answers == [None, None]
    stubber.assert_no_pending_responses()


def test_throttling_is_not_remembered_and_a_later_target_gets_the_alias():
    # Given IAM throttles the first request (a stubbed answer: the SDK's retries are not involved) and answers the next
    clients, stubber = clients_with("Throttling", {"AccountAliases": ["payments-prod"], "IsTruncated": False})

    # When two targets ask
    answers = [clients.account_alias(), clients.account_alias()]

    # Then the first target's report lacks the name, the second has it
    assert answers == [None, "payments-prod"]
    stubber.assert_no_pending_responses()
