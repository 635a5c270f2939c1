"""template.yaml: the refresh function and its role, its dead-letter queue, the state table, the reports bucket and
the alerts topic, the rule that data-plane permissions always name this stack's own resource, and each function's
timeout against the reserve its handler keeps."""

from __future__ import annotations

import pytest
from eic_guard.aws.clients import CONNECT_TIMEOUT, READ_TIMEOUT
from eic_guard.budget import FINISH_RESERVE, PLAN_RESERVE, REFRESH_RESERVE, WORKER_RESERVE
from eic_guard.permissions import REFRESH, Deployment, granted
from eic_guard.ranges.ip_ranges import FETCH_ATTEMPTS, FETCH_TIMEOUT
from eic_guard.settings import AWS_IP_SPACE_TOPIC

from tests.template.cfn import (
    PSEUDO,
    ROOT,
    allowed_actions,
    as_list,
    condition_holds,
    environment,
    parameter_values,
    physical,
    render,
    resolve,
    resource_exists,
    resources,
    role_statements,
    statements_granting,
    string_equals,
)

FULL_REMEDIATION = {"Mode": "remediate", "RemediatePublicIp": "true", "TagInstances": "true"}
FOURTEEN_DAYS = 14 * 24 * 3600


def refresh() -> dict:
    return resources()["RefreshFunction"]["Properties"]


# ---------------------------------------------------------------- refresh function


def test_refresh_function_is_the_refresh_handler_with_the_layer_and_its_own_log_group():
    # Given the refresh function and the log group it names
    function = refresh()
    log_group = resources()[function["LoggingConfig"]["LogGroup"]["Ref"]]

    # When its code, handler and limits are read
    code_dir = ROOT / function["CodeUri"]

    # Then it runs functions/refresh/app.lambda_handler from the layer, for up to 300 s, logging to a group of
    # its own that expires
    assert function["CodeUri"] == "functions/refresh/"
    assert function["Handler"] == "app.lambda_handler"
    assert (code_dir / "app.py").is_file() and (code_dir / "requirements.txt").is_file()
    assert function["Timeout"] == 300
    assert function["Layers"] == [{"Ref": "EicGuardLayer"}]
    assert log_group["Type"] == "AWS::Logs::LogGroup"
    assert log_group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert resolve(log_group["Properties"]["LogGroupName"], parameter_values()) == "/aws/lambda/eic-guard/refresh"


def test_refresh_subscribes_to_the_aws_ip_space_topic_in_us_east_1():
    # Given the refresh function's events
    events = refresh()["Events"]

    # When its SNS events are read
    sns = [e["Properties"] for e in events.values() if e["Type"] == "SNS"]

    # Then there is exactly one, on AWS's AmazonIpSpaceChanged topic, subscribed cross-region from us-east-1
    # whatever the stack's own region (here PSEUDO's, not us-east-1)
    assert len(events) == 1
    assert sns == [{"Topic": AWS_IP_SPACE_TOPIC, "Region": "us-east-1"}]
    assert PSEUDO["AWS::Region"] != "us-east-1"


def test_a_failed_notification_is_retried_twice_then_kept_in_the_dead_letter_queue():
    # Given the refresh function's asynchronous invocation settings and the queue they name
    config = refresh()["EventInvokeConfig"]
    on_failure = config["DestinationConfig"]["OnFailure"]
    queue = resources()["RefreshDeadLetterQueue"]

    # When the destination and retry policy are read
    destination = on_failure["Destination"]

    # Then it retries twice, gives up within SNS/Lambda's 6 h, and sends the failed event to the SQS queue,
    # which is encrypted and keeps messages 14 days
    assert config["MaximumRetryAttempts"] == 2
    assert 60 <= config["MaximumEventAgeInSeconds"] <= 21600
    assert on_failure["Type"] == "SQS"
    assert destination == {"Fn::GetAtt": ["RefreshDeadLetterQueue", "Arn"]}
    assert queue["Type"] == "AWS::SQS::Queue"
    assert queue["Properties"]["SqsManagedSseEnabled"] is True
    assert queue["Properties"]["MessageRetentionPeriod"] == FOURTEEN_DAYS


@pytest.mark.parametrize("mode", ["report", "remediate"])
def test_refresh_role_grants_exactly_the_refresh_actions_whatever_the_scan_mode(mode):
    # Given the actions permissions.py declares for the refresh
    needed = set(granted(REFRESH, Deployment(mode=mode)))

    # When the refresh role is resolved in either scan mode
    statements = role_statements("RefreshFunction", parameter_values(Mode=mode))

    # Then it grants exactly those (Mode is the scan's: the refresh always updates the managed groups), and is
    # the same document in both modes
    assert sorted(allowed_actions(statements) ^ needed) == []
    assert statements == role_statements("RefreshFunction", parameter_values(Mode="remediate"))


def test_refresh_calls_no_ec2_and_starts_only_this_stacks_state_machine():
    # Given the refresh role with two configured regions and every remediation switch on
    params = parameter_values(Regions="eu-west-1,us-east-1", **FULL_REMEDIATION)
    statements = role_statements("RefreshFunction", params)

    # When its EC2 and Step Functions statements are read
    ec2 = [a for a in allowed_actions(statements) if a.startswith("ec2:")]
    starting = statements_granting("states:StartExecution", statements)

    # Then it has no EC2 action at all (the state machine's refresh job updates every account's managed groups),
    # and it may start executions of this stack's state machine only, which it is told through its environment
    assert ec2 == []
    assert [as_list(s["Resource"]) for s in starting] == [[physical("EicGuardStateMachine")]]
    assert [s for s in statements if s["Effect"] == "Deny"] == []
    assert resolve(environment("RefreshFunction")["EIC_GUARD_STATE_MACHINE_ARN"], params) == physical(
        "EicGuardStateMachine"
    )


# ---------------------------------------------------------------- data-plane permissions name this stack's resources


RUNS = physical("ReportsBucket", "Arn") + "/runs/*"
REPORTS = physical("ReportsBucket", "Arn") + "/reports/*"
# What each function may touch in the data plane: this stack's table, bucket (prefix) and topic only.
DATA_RESOURCES = {
    "PlanFunction": {"dynamodb": [physical("StateTable", "Arn")], "s3": [RUNS]},
    "ScanTargetFunction": {
        "dynamodb": [physical("StateTable", "Arn")],
        "s3": [RUNS, physical("ReportsBucket", "Arn") + "/tables/findings/*"],
    },
    "AggregateFunction": {
        "dynamodb": [physical("StateTable", "Arn")],
        "s3": [RUNS, physical("ReportsBucket", "Arn"), REPORTS],
        "sns": [physical("AlertsTopic")],
    },
    "RefreshFunction": {
        "dynamodb": [physical("StateTable", "Arn")],
        "s3": [REPORTS],
        "sns": [physical("AlertsTopic")],
    },
}


@pytest.mark.parametrize("function_id", sorted(DATA_RESOURCES))
def test_table_bucket_and_topic_permissions_name_the_specific_resource(function_id):
    # Given the resources each data-plane service may touch for this function
    expected = DATA_RESOURCES[function_id]

    # When every Allow statement of the role that grants a DynamoDB, S3 or SNS action is read
    statements = role_statements(function_id, parameter_values(**FULL_REMEDIATION))
    data = [
        s
        for s in statements
        if s["Effect"] == "Allow" and any(a.split(":")[0] in ("dynamodb", "s3", "sns") for a in as_list(s["Action"]))
    ]

    # Then each statement is about one service and names exactly the expected resources (never "*")
    granted: dict[str, list[str]] = {}
    for statement in data:
        (service,) = {a.split(":")[0] for a in as_list(statement["Action"])}
        granted.setdefault(service, []).extend(as_list(statement["Resource"]))
    assert {service: sorted(resources_) for service, resources_ in granted.items()} == {
        service: sorted(resources_) for service, resources_ in expected.items()
    }


def test_the_worker_may_write_only_lost_result_records_into_the_state_table():
    # Given the worker role's statements that grant a DynamoDB action
    statements = role_statements("ScanTargetFunction", parameter_values(**FULL_REMEDIATION))
    [statement] = [s for s in statements if any(a.startswith("dynamodb:") for a in as_list(s["Action"]))]

    # Then it is PutItem alone, on items whose key begins with lost# (never the ip-ranges or alert state items)
    assert statement["Effect"] == "Allow" and as_list(statement["Action"]) == ["dynamodb:PutItem"]
    assert statement["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["lost#*"]}}


def test_listing_the_bucket_is_limited_to_the_runs_prefix():
    # Given the aggregate role, the only one that lists the reports bucket
    statements = role_statements("AggregateFunction", parameter_values())

    # When the statements granting s3:ListBucket are read
    listing = statements_granting("s3:ListBucket", statements)

    # Then the listing is on the bucket, for keys under runs/ only (the run's result objects)
    assert [(as_list(s["Resource"]), s["Condition"]) for s in listing] == [
        ([physical("ReportsBucket", "Arn")], {"StringLike": {"s3:prefix": "runs/*"}})
    ]


# ---------------------------------------------------------------- state table


def test_state_table_is_on_demand_encrypted_recoverable_and_retained():
    # Given the state table
    table = resources()["StateTable"]
    properties = table["Properties"]

    # When its key, billing, backup, encryption and TTL are read
    key_schema = properties["KeySchema"]

    # Then it is keyed on "id" (the state item and Powertools idempotency records), pay-per-request, with
    # point-in-time recovery, SSE, TTL on "expiration", and kept when the stack goes
    assert table["Type"] == "AWS::DynamoDB::Table"
    assert key_schema == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert properties["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "S"}]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"]["SSEEnabled"] is True
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")


# ---------------------------------------------------------------- reports bucket


def test_reports_bucket_is_versioned_encrypted_private_and_retained():
    # Given the reports bucket
    bucket = resources()["ReportsBucket"]
    properties = bucket["Properties"]

    # When its versioning, encryption, public access and ownership settings are read
    encryption = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]

    # Then every one is on, and the bucket outlives the stack
    assert bucket["Type"] == "AWS::S3::Bucket"
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert encryption and all(
        rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms") for rule in encryption
    )
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert properties["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert (bucket["DeletionPolicy"], bucket["UpdateReplacePolicy"]) == ("Retain", "Retain")


def test_reports_expire_after_report_retention_days_runs_and_old_versions_after_30_days():
    # Given the bucket's lifecycle rules
    rules = resources()["ReportsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]

    # When the rules that expire current objects and noncurrent versions are picked out
    expiring = {r["Prefix"]: r["ExpirationInDays"] for r in rules if "ExpirationInDays" in r}
    noncurrent = [r for r in rules if "NoncurrentVersionExpiration" in r]

    # Then reports/ expires after the ReportRetentionDays parameter (400 by default), the fan-out's working objects
    # (runs/) after 30 days, and old versions after 30 days
    assert all(r["Status"] == "Enabled" for r in rules)
    # (the Athena table's rows, tables/findings/, as long as the reports they come from)
    assert expiring == {
        "reports/": {"Ref": "ReportRetentionDays"},
        "tables/findings/": {"Ref": "ReportRetentionDays"},
        "runs/": 30,
    }
    assert parameter_values()["ReportRetentionDays"] == "400"
    assert [r["NoncurrentVersionExpiration"] for r in noncurrent] == [{"NoncurrentDays": 30}]


def test_reports_bucket_policy_denies_every_request_without_tls():
    # Given the bucket policies that apply to the reports bucket
    policies = [r for r in resources().values() if r["Type"] == "AWS::S3::BucketPolicy"]
    policies = [p for p in policies if p["Properties"]["Bucket"] == {"Ref": "ReportsBucket"}]

    # When its Deny statements are read
    assert len(policies) == 1
    document = resolve(policies[0]["Properties"]["PolicyDocument"], parameter_values())
    denies = [s for s in document["Statement"] if s["Effect"] == "Deny"]

    # Then one denies everything to everyone on the bucket and its objects when the request is not TLS
    bucket_arn = physical("ReportsBucket", "Arn")
    assert any(
        s["Principal"] == "*"
        and as_list(s["Action"]) == ["s3:*"]
        and sorted(as_list(s["Resource"])) == [bucket_arn, f"{bucket_arn}/*"]
        and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in denies
    )


# ---------------------------------------------------------------- alerts topic


def test_alerts_topic_is_encrypted_with_a_key_cloudwatch_alarms_can_use():
    # Given the alerts topic and the key it names
    topic = resources()["AlertsTopic"]
    key_id = topic["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key = resources()[key_id]

    # When the key policy is resolved
    statements = resolve(key["Properties"]["KeyPolicy"], parameter_values())["Statement"]
    for_cloudwatch = [s for s in statements if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
    for_sns = [s for s in statements if s.get("Principal") == {"AWS": "*"}]

    # Then it is a rotating customer managed key (alias/aws/sns would silently drop every alarm notification)
    # that CloudWatch alarms may use, and other principals only through SNS from this account
    assert key["Type"] == "AWS::KMS::Key"
    assert key["Properties"]["EnableKeyRotation"] is True
    assert len(for_cloudwatch) == 1
    assert set(for_cloudwatch[0]["Action"]) == {"kms:GenerateDataKey", "kms:Decrypt"}
    # ... this account's alarms only (a confused deputy in another account cannot use it)
    assert for_cloudwatch[0]["Condition"] == {
        "StringEquals": {"aws:SourceAccount": PSEUDO["AWS::AccountId"]},
        "ArnLike": {"aws:SourceArn": f"arn:aws:cloudwatch:{PSEUDO['AWS::Region']}:{PSEUDO['AWS::AccountId']}:alarm:*"},
    }
    # ... and no statement grants a wildcard action of KMS but the account's own administration of its key
    wildcards = [a for s in statements for a in as_list(s["Action"]) if a.endswith("*")]
    assert wildcards == ["kms:*"]
    assert len(for_sns) == 1
    assert string_equals(for_sns[0]) == {
        "kms:CallerAccount": PSEUDO["AWS::AccountId"],
        "kms:ViaService": f"sns.{PSEUDO['AWS::Region']}.amazonaws.com",
    }


def test_alerts_topic_policy_lets_this_accounts_alarms_publish_and_denies_publishing_without_tls():
    # Given the topic policy of the alerts topic
    policies = [r for r in resources().values() if r["Type"] == "AWS::SNS::TopicPolicy"]
    assert [p["Properties"]["Topics"] for p in policies] == [[{"Ref": "AlertsTopic"}]]
    statements = resolve(policies[0]["Properties"]["PolicyDocument"], parameter_values())["Statement"]

    # When its Allow and Deny statements are read
    allows = [s for s in statements if s["Effect"] == "Allow"]
    denies = [s for s in statements if s["Effect"] == "Deny"]

    # Then only CloudWatch alarms of this account are allowed in (the roles publish through IAM), and nothing
    # may publish without TLS
    topic = physical("AlertsTopic")
    account, region = PSEUDO["AWS::AccountId"], PSEUDO["AWS::Region"]
    assert len(allows) == 1
    assert allows[0]["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert (allows[0]["Action"], allows[0]["Resource"]) == ("sns:Publish", topic)
    assert allows[0]["Condition"] == {
        "StringEquals": {"aws:SourceAccount": account},
        "ArnLike": {"aws:SourceArn": f"arn:aws:cloudwatch:{region}:{account}:alarm:*"},
    }
    assert len(denies) == 1
    assert (denies[0]["Principal"], denies[0]["Action"], denies[0]["Resource"]) == ("*", "sns:Publish", topic)
    assert denies[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


@pytest.mark.parametrize(("email", "subscribed"), [("", False), ("ops@example.com", True)])
def test_alert_email_is_subscribed_only_when_given(email, subscribed):
    # Given an AlertEmail value
    params = parameter_values(AlertEmail=email)

    # When the e-mail subscriptions that exist with it are listed
    subscriptions = [
        resolve(r["Properties"], params)
        for logical_id, r in resources().items()
        if r["Type"] == "AWS::SNS::Subscription" and resource_exists(logical_id, params)
    ]

    # Then there is one to that address on the alerts topic, or none when the parameter is empty (the default)
    assert parameter_values()["AlertEmail"] == ""
    expected = [{"TopicArn": physical("AlertsTopic"), "Protocol": "email", "Endpoint": email}] if subscribed else []
    assert subscriptions == expected
    assert condition_holds("HasAlertEmail", params) is subscribed


@pytest.mark.parametrize(
    ("function_id", "reserve", "downloads"),
    [
        ("PlanFunction", PLAN_RESERVE, True),  # the nightly catch-up downloads ip-ranges.json
        ("RefreshFunction", REFRESH_RESERVE, True),
        ("ScanTargetFunction", WORKER_RESERVE, False),
    ],
)
def test_each_function_timeout_leaves_work_time_after_the_reserve_that_outlasts_a_hung_call(
    function_id, reserve, downloads
):
    # Given the function's Lambda timeout and the reserve its handler keeps (eic_guard.budget)
    timeout = resources()[function_id]["Properties"]["Timeout"]
    one_hung_attempt = CONNECT_TIMEOUT + READ_TIMEOUT

    # Then an attempt started just before the reserve ends before finishing must start, finishing (the result
    # object, the report, the alert) ends before Lambda's own timeout even if one call hangs, and a hung download
    # (every attempt) fits in the work time
    assert reserve - FINISH_RESERVE >= one_hung_attempt
    assert one_hung_attempt <= FINISH_RESERVE
    assert timeout - reserve >= (FETCH_ATTEMPTS * sum(FETCH_TIMEOUT) if downloads else one_hung_attempt)


def test_aggregate_keeps_a_hung_call_inside_its_timeout():
    # Given the aggregate function's timeout (its handler works until FINISH_RESERVE)
    timeout = resources()["AggregateFunction"]["Properties"]["Timeout"]

    # Then after any call that hangs, the report and the alert still have the finishing reserve
    assert timeout - FINISH_RESERVE >= CONNECT_TIMEOUT + READ_TIMEOUT


# ---------------------------------------------------------------- reports as evidence


def test_every_request_to_the_reports_bucket_is_logged_to_a_bucket_only_s3_logging_writes():
    # Given the reports bucket and its access-log bucket
    stack = render(parameter_values())
    reports = stack.resources["ReportsBucket"]["Properties"]
    logs = stack.resources["AccessLogsBucket"]["Properties"]
    [policy] = [
        r["Properties"]["PolicyDocument"]
        for r in stack.resources.values()
        if r["Type"] == "AWS::S3::BucketPolicy" and r["Properties"]["Bucket"] == stack.physical("AccessLogsBucket")
    ]

    # Then S3 server access logging writes every request to the log bucket, which is private, encrypted, kept as long
    # as the reports, and writable by S3's log delivery only for this account's reports bucket
    assert reports["LoggingConfiguration"] == {
        "DestinationBucketName": stack.physical("AccessLogsBucket"),
        "LogFilePrefix": "reports-bucket/",
    }
    assert logs["PublicAccessBlockConfiguration"] == reports["PublicAccessBlockConfiguration"]
    assert logs["BucketEncryption"] == reports["BucketEncryption"]
    [expiry] = logs["LifecycleConfiguration"]["Rules"]
    assert expiry["ExpirationInDays"] == parameter_values()["ReportRetentionDays"]
    [allow] = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert allow["Condition"] == {
        "ArnLike": {"aws:SourceArn": stack.physical("ReportsBucket", "Arn")},
        "StringEquals": {"aws:SourceAccount": stack.pseudo["AWS::AccountId"]},
    }


@pytest.mark.parametrize(("days", "locked"), [("0", False), ("400", True)])
def test_report_object_lock_is_optional_and_in_governance_mode(days, locked):
    # Given ReportObjectLockDays off (0) and set
    reports = render(parameter_values(ReportObjectLockDays=days)).resources["ReportsBucket"]["Properties"]

    # Then the bucket has Object Lock only when set, every version kept that many days in governance mode (a report
    # cannot be silently rewritten or deleted; versioning stays on, which Object Lock needs)
    assert reports["VersioningConfiguration"] == {"Status": "Enabled"}
    if not locked:
        assert "ObjectLockEnabled" not in reports and "ObjectLockConfiguration" not in reports
        return
    assert reports["ObjectLockEnabled"] is True
    assert reports["ObjectLockConfiguration"] == {
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": days}},
    }
