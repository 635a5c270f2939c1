"""template.yaml, event-driven checks and Security Hub (docs/architecture.md §10, §11): the EventBridge rules and
their patterns, the queue, its dead-letter queue and policy, OnChangeFunction's event source, environment and least
privilege, and the Security Hub statements of the worker, the on-change function and the member role.

The patterns are held to the samples of events/ with a small matcher for the operators they use (exact values,
`exists: false`, nested objects, a field of the objects inside an array, which EventBridge matches when any element
has it: its Event Ruler flattens arrays of objects into the fields of each element). cfn-lint validates their
syntax (test_template.py runs it on the whole template).
"""

from __future__ import annotations

import copy
import json

import pytest
from eic_guard.changes.actors import OWN_ROLE_ARNS_ENV, OwnRoles
from eic_guard.changes.events import API_CALLS as READ_CALLS
from eic_guard.changes.events import Actor
from eic_guard.outputs.security_hub import IMPORT_PERMISSIONS, LEDGER_PERMISSIONS, RESOLVE_PERMISSIONS

from tests.template.cfn import (
    PSEUDO,
    ROOT,
    allowed_actions,
    as_list,
    is_ec2_write,
    parameter_values,
    physical,
    render,
    resolve,
    resources,
    role_statements,
    statements_granting,
    template,
)
from tests.template.event_patterns import matches

EVENTS = ROOT / "events"
RULES = ("OnChangeInstanceStateRule", "OnChangeApiCallRule", "OnChangeOptInTagRule")
# Every call changes/events.py reads but CreateTags (the opt-in tag rule's own).
API_CALLS = tuple(sorted(set(READ_CALLS) - {"CreateTags"}))
OWN_ROLES = (
    "OnChangeFunctionRole",
    "ScanTargetFunctionRole",
    "RefreshFunctionRole",
    "PlanFunctionRole",
    "AggregateFunctionRole",
)
SWITCHES = [
    {"Mode": mode, "RemediatePublicIp": public_ip, "TagInstances": tags, "SecurityHubFindings": hub}
    for mode in ("report", "remediate")
    for public_ip in ("true", "false")
    for tags in ("true", "false")
    for hub in ("enabled", "disabled")
]


def switch_id(switches: dict[str, str]) -> str:
    return "-".join(f"{k[0]}{v[0]}" for k, v in switches.items())


def sample(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def _leaf_values(node, key: str) -> list:
    """Every value of `key` inside `node`, through objects and arrays (for arrays of objects)."""
    if isinstance(node, list):
        return [v for item in node for v in _leaf_values(item, key)]
    if isinstance(node, dict):
        return [node[key]] if key in node else []
    return []


def patterns(**overrides: str) -> dict[str, dict]:
    params = parameter_values(**overrides)
    return {rule: resolve(resources()[rule]["Properties"]["EventPattern"], params) for rule in RULES}


def test_the_matcher_handles_arrays_of_objects_and_exists_false():
    # Given a pattern on a field of the objects inside an array, and one that needs a field absent
    pattern = {"a": {"items": {"key": ["k"]}}, "b": [{"exists": False}]}

    # Then any element with the value matches, none does not, and the field must be absent
    assert matches(pattern, {"a": {"items": [{"key": "x"}, {"key": "k"}]}})
    assert not matches(pattern, {"a": {"items": [{"key": "x"}]}})
    assert not matches(pattern, {"a": {"items": [{"key": "k"}]}, "b": "AccessDenied"})
    assert not matches(pattern, {"a": {}})


@pytest.mark.parametrize(
    ("sample_name", "rule"),
    [
        ("ec2-instance-state-change-aws-doc.json", "OnChangeInstanceStateRule"),
        *((p.name, "OnChangeOptInTagRule") for p in sorted(EVENTS.glob("cloudtrail-create-tags*.json"))),
        *(
            (p.name, "OnChangeApiCallRule")
            for p in sorted(EVENTS.glob("cloudtrail-*.json"))
            if not p.name.startswith("cloudtrail-create-tags")
        ),
    ],
)
def test_each_sample_event_matches_its_rule_and_no_other(sample_name, rule):
    # Given a sample event of events/ and the rules' patterns with the default opt-in tag
    event = sample(sample_name)

    # When each rule's pattern is matched against it
    matched = [name for name, pattern in patterns().items() if matches(pattern, event)]

    # Then exactly its rule takes it (eic-guard's own calls too: the handler ignores them, by role)
    assert matched == [rule]


def test_the_api_call_rule_lists_every_event_the_handler_reads_and_a_sample_exists_for_each():
    # Given the API-call rule's pattern
    pattern = patterns()["OnChangeApiCallRule"]

    # Then it names exactly the calls changes/events.py reads (CreateTags has its own rule), each with a sample
    assert sorted(pattern["detail"]["eventName"]) == sorted(API_CALLS)
    assert {"CreateNetworkAclEntry", "DeleteNetworkAclEntry", "DisassociateAddress", "DetachInternetGateway"} <= set(
        API_CALLS
    )
    names = {sample(p.name)["detail"]["eventName"] for p in EVENTS.glob("cloudtrail-*.json")}
    assert set(API_CALLS) <= names


@pytest.mark.parametrize("sample_name", sorted(p.name for p in EVENTS.glob("cloudtrail-*.json")))
def test_a_failed_api_call_matches_no_rule(sample_name):
    # Given a sample CloudTrail event whose call failed
    event = sample(sample_name)
    event["detail"]["errorCode"] = "Client.UnauthorizedOperation"
    event["detail"]["errorMessage"] = "You are not authorized to perform this operation."

    # Then no rule takes it
    assert [name for name, pattern in patterns().items() if matches(pattern, event)] == []


@pytest.mark.parametrize("state", ["stopping", "stopped", "shutting-down", "terminated"])
def test_an_instance_that_is_not_starting_matches_no_rule(state):
    # Given the state-change sample for a state other than pending/running
    event = sample("ec2-instance-state-change-aws-doc.json")
    event["detail"]["state"] = state

    # Then no rule takes it; "running" still does
    assert [name for name, pattern in patterns().items() if matches(pattern, event)] == []
    event["detail"]["state"] = "running"
    assert [name for name, pattern in patterns().items() if matches(pattern, event)] == ["OnChangeInstanceStateRule"]


def test_the_opt_in_tag_rule_follows_the_tag_key_parameter():
    # Given the CreateTags sample with another tag among its tags, and a stack with another opt-in key
    event = sample("cloudtrail-create-tags.json")
    items = event["detail"]["requestParameters"]["tagSet"]["items"]
    items.insert(0, {"key": "Name", "value": "web"})
    custom = patterns(TagKey="team:eic")["OnChangeOptInTagRule"]

    # Then the default key matches wherever it is in the array, another key does not, and the stack's key does
    assert matches(patterns()["OnChangeOptInTagRule"], event)
    assert not matches(custom, event)
    items[1]["key"] = "team:eic"
    assert matches(custom, event)
    other = copy.deepcopy(event)
    other["detail"]["requestParameters"]["tagSet"]["items"] = [{"key": "Name", "value": "web"}]
    assert not matches(custom, other)
    assert _leaf_values(event["detail"]["requestParameters"]["tagSet"]["items"], "key") == ["Name", "team:eic"]


def test_every_rule_is_on_the_default_bus_takes_this_accounts_events_and_dead_letters_what_it_cannot_send():
    for rule in RULES:
        properties = resources()[rule]["Properties"]
        assert "EventBusName" not in properties
        assert properties["State"] == "ENABLED"
        assert properties["EventPattern"]["account"] == [{"Ref": "AWS::AccountId"}]
        [target] = properties["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": ["OnChangeQueue", "Arn"]}
        assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["EventDeliveryDeadLetterQueue", "Arn"]}}
        assert not {"Input", "InputPath", "InputTransformer"} & set(target)


@pytest.mark.parametrize(
    "sample_name", ["ec2-instance-state-change-aws-doc.json", "cloudtrail-revoke-security-group-ingress.json"]
)
def test_another_accounts_event_on_the_default_bus_matches_no_rule(sample_name):
    # Given a sample event of another account (the member accounts' come on their own bus)
    event = sample(sample_name)
    event["account"] = "999999999999"

    # Then no rule of the default bus takes it
    assert [name for name, pattern in patterns().items() if matches(pattern, event)] == []


def test_the_opt_in_tag_rule_takes_the_key_in_any_letter_case():
    # Given the CreateTags sample with the opt-in key spelt otherwise (IAM compares condition key names without case)
    event = sample("cloudtrail-create-tags-other-case.json")

    # Then the opt-in tag rule takes it, and only it
    assert [name for name, pattern in patterns().items() if matches(pattern, event)] == ["OnChangeOptInTagRule"]


# ---------------------------------------------------------------- the queue


def test_the_queue_is_encrypted_and_hands_failures_to_an_encrypted_dead_letter_queue():
    queue = resources()["OnChangeQueue"]["Properties"]
    dead = resources()["OnChangeDeadLetterQueue"]["Properties"]
    function = resources()["OnChangeFunction"]["Properties"]

    assert queue["SqsManagedSseEnabled"] is True and dead["SqsManagedSseEnabled"] is True
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["OnChangeDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 5,
    }
    assert dead["MessageRetentionPeriod"] == 14 * 24 * 3600
    # AWS's advice for an SQS event source: a visibility timeout of at least six times the function's timeout
    assert queue["VisibilityTimeout"] >= 6 * function["Timeout"]


def test_the_function_reads_the_queue_in_small_batches_with_partial_failures():
    [source] = resources()["OnChangeFunction"]["Properties"]["Events"].values()

    assert source["Type"] == "SQS"
    assert source["Properties"] == {
        "Queue": {"Fn::GetAtt": ["OnChangeQueue", "Arn"]},
        "BatchSize": 10,
        "MaximumBatchingWindowInSeconds": 5,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "ScalingConfig": {"MaximumConcurrency": 5},
    }


@pytest.mark.parametrize("accounts", ["", "111111111111"], ids=["own-account", "member-accounts"])
def test_only_this_stacks_rules_may_send_to_the_queue(accounts):
    # Given the queue policy, with and without the member accounts' rule
    stack = render(parameter_values(Accounts=accounts))
    policy = stack.resources["OnChangeQueuePolicy"]["Properties"]
    allow, deny, insecure = policy["PolicyDocument"]["Statement"]
    rules = [stack.physical(r, "Arn") for r in RULES] + (
        [stack.physical("MemberChangeEventsRule", "Arn")] if accounts else []
    )

    # Then EventBridge may send from exactly those rules, and every other sender is refused, even one of this account
    # whose own policy would allow it (no forged event reaches the function)
    assert (allow["Effect"], allow["Principal"], allow["Action"]) == (
        "Allow",
        {"Service": "events.amazonaws.com"},
        "sqs:SendMessage",
    )
    assert allow["Condition"] == {"ArnEquals": {"aws:SourceArn": rules}}
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", "sqs:SendMessage")
    assert deny["Condition"] == {"ArnNotEquals": {"aws:SourceArn": rules}}
    assert insecure["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_member_accounts_events_come_on_a_bus_only_they_may_put_on():
    # Given a stack over an organization, and one over listed accounts
    organization = render(parameter_values(Accounts="organization", OrganizationId="o-exampleorg1"))
    listed = render(parameter_values(Accounts="111111111111,222222222222"))

    # When their member event bus policies and rules are read
    def bus(stack):
        [statement] = stack.resources["MemberEventBus"]["Properties"]["Policy"]["Statement"]
        return statement, stack.resources["MemberChangeEventsRule"]["Properties"]

    org_statement, org_rule = bus(organization)
    listed_statement, listed_rule = bus(listed)

    # Then only the organization's accounts (aws:PrincipalOrgID), or the listed ones (aws:PrincipalAccount), may put
    # events there, and the rule sends the member accounts' changes to the same queue
    assert org_statement["Action"] == "events:PutEvents"
    assert org_statement["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": "o-exampleorg1"}}
    assert listed_statement["Condition"] == {"StringEquals": {"aws:PrincipalAccount": ["111111111111", "222222222222"]}}
    assert listed_rule["EventPattern"]["account"] == ["111111111111", "222222222222"]
    assert org_rule["EventPattern"]["account"] == [{"anything-but": [organization.pseudo["AWS::AccountId"]]}]
    [target] = listed_rule["Targets"]
    assert target["Arn"] == listed.physical("OnChangeQueue", "Arn")
    assert "MemberEventBus" not in render(parameter_values()).resources


@pytest.mark.parametrize(
    "sample_name",
    ["ec2-instance-state-change-aws-doc.json", "cloudtrail-create-tags.json"]
    + [p.name for p in sorted(EVENTS.glob("cloudtrail-*.json")) if p.name != "cloudtrail-create-tags.json"],
)
def test_the_member_bus_rule_takes_what_the_member_stacks_forward_from_the_listed_accounts(sample_name):
    # Given a sample event, as a listed member account forwards it
    stack = render(parameter_values(Accounts="111111111111"))
    pattern = stack.resources["MemberChangeEventsRule"]["Properties"]["EventPattern"]
    event = sample(sample_name)
    event["account"] = "111111111111"

    # Then the member bus rule takes it, and not from an account the stack does not cover
    assert matches(pattern, event)
    event["account"] = "999999999999"
    assert not matches(pattern, event)


def test_a_dead_lettered_event_raises_an_alarm_to_the_alerts_topic():
    alarm = resources()["OnChangeDeadLetterAlarm"]["Properties"]

    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["OnChangeDeadLetterQueue", "QueueName"]}}
    ]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
    assert alarm["AlarmActions"] == [{"Ref": "AlertsTopic"}]


# ---------------------------------------------------------------- the function


def test_the_function_is_its_handler_with_the_layer_and_its_own_log_group():
    function = resources()["OnChangeFunction"]["Properties"]
    log_group = resources()[function["LoggingConfig"]["LogGroup"]["Ref"]]

    assert (function["CodeUri"], function["Handler"], function["Timeout"], function["MemorySize"]) == (
        "functions/on_change/",
        "app.lambda_handler",
        120,
        512,
    )
    assert (ROOT / "functions/on_change/requirements.txt").is_file()
    assert function["Layers"] == [{"Ref": "EicGuardLayer"}]
    assert log_group["Type"] == "AWS::Logs::LogGroup"
    assert log_group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    others = {
        resources()[r.removesuffix("Role")]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"] for r in OWN_ROLES[1:]
    }
    assert function["LoggingConfig"]["LogGroup"]["Ref"] not in others


def test_the_function_has_the_workers_settings_and_names_every_own_role():
    # Given the rendered stack with Security Hub on
    stack = render(parameter_values(SecurityHubFindings="enabled", Mode="report"))

    # When the two functions' environments are compared
    on_change = stack.environment("OnChangeFunction")
    worker = stack.environment("ScanTargetFunction")

    # Then the on-change function has every setting of the worker, the same values, plus its own role list
    assert {k: v for k, v in on_change.items() if k != OWN_ROLE_ARNS_ENV} == worker
    assert worker["EIC_GUARD_SECURITY_HUB_FINDINGS"] == "enabled"
    arns = on_change[OWN_ROLE_ARNS_ENV].split(",")
    assert arns == [stack.physical(r, "Arn") for r in OWN_ROLES]

    # And the handler takes each as its own: a session of any of them is ignored
    own = OwnRoles.from_env(on_change["EIC_GUARD_MEMBER_ROLE_NAME"], on_change)
    for arn in arns:
        name = arn.rsplit("/", 1)[1]
        session = f"arn:aws:sts::{PSEUDO['AWS::AccountId']}:assumed-role/{name}/some-session"
        assert own.made(Actor(arn=session, issuer_arn=arn))


def test_the_on_change_role_makes_no_ec2_write_in_report_mode():
    statements = role_statements("OnChangeFunction", parameter_values(Mode="report", RemediatePublicIp="true"))

    assert sorted(a for a in allowed_actions(statements) if is_ec2_write(a)) == []


def test_the_on_change_role_writes_only_its_reports_the_ledger_and_reads_only_the_state():
    params = parameter_values(SecurityHubFindings="enabled")
    statements = role_statements("OnChangeFunction", params)
    bucket = physical("ReportsBucket", "Arn")

    puts = sorted(r for s in statements_granting("s3:PutObject", statements) for r in as_list(s["Resource"]))
    gets = sorted(r for s in statements_granting("s3:GetObject", statements) for r in as_list(s["Resource"]))
    [state] = statements_granting("dynamodb:GetItem", statements)

    assert puts == [f"{bucket}/findings/*", f"{bucket}/reports/on-change/*"]
    assert gets == [f"{bucket}/findings/*"]
    assert as_list(state["Action"]) == ["dynamodb:GetItem"]
    assert state["Resource"] == physical("StateTable", "Arn")


# ---------------------------------------------------------------- Security Hub


@pytest.mark.parametrize("function_id", ["ScanTargetFunction", "OnChangeFunction"])
def test_security_hub_imports_only_into_this_accounts_default_product_and_only_when_enabled(function_id):
    account, partition = PSEUDO["AWS::AccountId"], PSEUDO["AWS::Partition"]
    enabled = role_statements(function_id, parameter_values(SecurityHubFindings="enabled"))
    disabled = role_statements(function_id, parameter_values(SecurityHubFindings="disabled"))

    [import_] = [s for s in enabled if set(as_list(s["Action"])) & set(IMPORT_PERMISSIONS)]
    [resolve_] = [s for s in enabled if set(as_list(s["Action"])) & set(RESOLVE_PERMISSIONS)]
    [ledger] = [s for s in enabled if s.get("Sid") == "ReadWriteFindingsLedger"]

    assert import_["Resource"] == f"arn:{partition}:securityhub:*:{account}:product/{account}/default"
    assert resolve_["Resource"] == f"arn:{partition}:securityhub:*:{account}:hub/default"
    assert sorted(as_list(ledger["Action"])) == sorted(LEDGER_PERMISSIONS)
    assert ledger["Resource"] == f"{physical('ReportsBucket', 'Arn')}/findings/*"
    assert not allowed_actions(disabled) & set(IMPORT_PERMISSIONS)
    assert not [s for s in disabled if s.get("Sid") == "ReadWriteFindingsLedger"]


def test_nothing_expires_the_findings_ledger():
    rules = resources()["ReportsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]

    for rule in rules:
        if "ExpirationInDays" in rule or "ExpirationDate" in rule:
            prefix = rule.get("Prefix", rule.get("Filter", {}).get("Prefix", ""))
            assert prefix and not "findings/".startswith(prefix), rule


# ---------------------------------------------------------------- observability and outputs


def test_errors_alarm_counts_the_on_change_functions_failures():
    alarm = resources()["ErrorsAlarm"]["Properties"]
    queries = {m["Id"]: m for m in alarm["Metrics"]}
    [expression] = [m["Expression"] for m in alarm["Metrics"] if m.get("ReturnData", True)]

    assert "on_change_errors" in expression
    metric = queries["on_change_errors"]["MetricStat"]["Metric"]
    assert (metric["Namespace"], metric["MetricName"]) == ("AWS/Lambda", "Errors")
    assert metric["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "OnChangeFunction"}}]


def test_dashboard_shows_the_event_counters_and_the_on_change_summary():
    body = json.loads(render(parameter_values()).resources["EicGuardDashboard"]["Properties"]["DashboardBody"])
    series = [m for w in body["widgets"] for m in w.get("properties", {}).get("metrics", [])]
    plain = {tuple(x for x in m if not isinstance(x, dict)) for m in series}

    this_stack = ("service", "eic-guard", "Stack", PSEUDO["AWS::StackName"])
    for name in ("OnChangeEvents", "OnChangeEventsIgnored", "OnChangeEventsFailed"):
        assert ("EicGuard", name, *this_stack) in plain
    for name in ("InstancesScanned", "InstancesFixed", "InstancesNoncompliant", "Errors"):
        assert ("EicGuard", name, *this_stack, "Trigger", "on-change") in plain


def test_outputs_expose_the_on_change_pieces():
    outputs = template()["Outputs"]

    assert outputs["OnChangeFunctionArn"]["Value"] == {"Fn::GetAtt": ["OnChangeFunction", "Arn"]}
    assert outputs["OnChangeQueueUrl"]["Value"] == {"Ref": "OnChangeQueue"}
    assert outputs["OnChangeDeadLetterQueueUrl"]["Value"] == {"Ref": "OnChangeDeadLetterQueue"}
