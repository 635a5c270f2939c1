"""Every IAM action each function may call, declared next to the code that calls it.

A test holds template.yaml to these sets, and tests/template/test_calls_against_roles.py holds the calls the
handlers really make to the roles template.yaml renders.
"""

from __future__ import annotations

from .checks import required_actions

# refresh.py: one filtered describe per region, then authorize/revoke on eic-guard's own groups.
REFRESH_EC2 = (
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeManagedPrefixLists",
    "ec2:GetManagedPrefixListEntries",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:RevokeSecurityGroupIngress",
)
# state.py: the scan's nightly catch-up reads the state item (consistent read) and replaces it with a conditional put.
SCAN_STATE_TABLE = ("dynamodb:GetItem", "dynamodb:PutItem")
# The refresh: the same state item, plus Powertools idempotency records (put/get/update/delete), same table.
REFRESH_STATE_TABLE = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
# publish.py: the run's report to the bucket, one alert message to the topic.
REPORTS_BUCKET = ("s3:PutObject",)
ALERTS_TOPIC = ("sns:Publish",)
# publish.py: eic-guard:status and eic-guard:checked-at on opted-in instances (remediate mode, TagInstances on).
INSTANCE_STATUS_TAGS = ("ec2:CreateTags",)


def scan_function_actions(remediate: bool = True) -> set[str]:
    """The nightly scan: the checks (and their fixes), the refresh catch-up, state, reports, alerts, tags."""
    actions = required_actions(remediate) | set(REFRESH_EC2[:3]) | set(SCAN_STATE_TABLE) | set(REPORTS_BUCKET)
    actions |= set(ALERTS_TOPIC)
    if remediate:  # report mode writes nothing to EC2: the catch-up plans its rule changes, status tags are off
        actions |= set(REFRESH_EC2) | set(INSTANCE_STATUS_TAGS)
    return actions


def refresh_function_actions() -> set[str]:
    return set(REFRESH_EC2) | set(REFRESH_STATE_TABLE) | set(REPORTS_BUCKET) | set(ALERTS_TOPIC)
