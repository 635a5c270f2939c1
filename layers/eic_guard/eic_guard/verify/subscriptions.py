"""The subscriptions: the refresh function hears AWS's AmazonIpSpaceChanged, and someone hears eic-guard's alerts."""

from __future__ import annotations

from typing import Any

from .checklist import FAIL, PASS, Item

IP_SPACE_CHANGED = "arn:aws:sns:us-east-1:806199016981:AmazonIpSpaceChanged"
IP_SPACE_REGION = "us-east-1"  # the topic's region: the subscription lives there, whatever the stack's region
PENDING = "PendingConfirmation"  # what SNS lists instead of the ARN of a subscription not confirmed yet
IP_RANGES_DOCS = "https://docs.aws.amazon.com/vpc/latest/userguide/aws-ip-ranges.html"
EMAIL_DOCS = "https://docs.aws.amazon.com/sns/latest/dg/sns-email-notifications.html"


def ip_space_item(sns_us_east_1: Any, refresh_function_arn: str | None) -> Item:
    """The refresh function among this account's subscriptions to AmazonIpSpaceChanged (template.yaml subscribes it
    with the SAM SNS event IpSpaceChanged, Region us-east-1; the subscription belongs to this account)."""
    subject = "AmazonIpSpaceChanged"
    if not refresh_function_arn:
        return Item("ip-space-subscription", FAIL, subject, "the stack has no RefreshFunctionArn output", fix=_REDEPLOY)
    found = []
    for page in sns_us_east_1.get_paginator("list_subscriptions").paginate():
        found += [s for s in page.get("Subscriptions", ()) if s.get("TopicArn") == IP_SPACE_CHANGED]
    mine = [s for s in found if _same_function(s.get("Endpoint", ""), refresh_function_arn)]
    if not mine:
        return Item(
            "ip-space-subscription",
            FAIL,
            subject,
            f"{_name(refresh_function_arn)} is not subscribed to {IP_SPACE_CHANGED}: AWS's range changes reach "
            "the managed groups only at the next nightly run",
            fix=_REDEPLOY,
            url=IP_RANGES_DOCS,
        )
    if mine[0].get("SubscriptionArn") == PENDING:
        return Item("ip-space-subscription", FAIL, subject, "the subscription is pending confirmation", fix=_REDEPLOY)
    return Item(
        "ip-space-subscription", PASS, subject, f"{_name(refresh_function_arn)} subscribed ({mine[0]['Protocol']})"
    )


def alerts_items(sns: Any, topic_arn: str | None) -> list[Item]:
    """At least one confirmed subscription to the alerts topic; each pending one named."""
    if not topic_arn:
        return [
            Item("alerts-subscription", FAIL, "alerts topic", "the stack has no AlertsTopicArn output", fix=_REDEPLOY)
        ]
    subscriptions = []
    for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn):
        subscriptions += page.get("Subscriptions", ())
    confirmed = [s for s in subscriptions if s.get("SubscriptionArn") != PENDING]
    pending = [s for s in subscriptions if s.get("SubscriptionArn") == PENDING]
    topic = topic_arn.rsplit(":", 1)[-1]
    items = [
        Item(
            "alerts-subscription",
            FAIL,
            f"{s.get('Protocol')}:{s.get('Endpoint')}",
            f"pending confirmation on {topic}: it receives no alert until confirmed",
            fix=f"open the confirmation message SNS sent to {s.get('Endpoint')} and confirm (it expires after 3 days; "
            "then subscribe again with AlertEmail or aws sns subscribe)",
            url=EMAIL_DOCS,
        )
        for s in pending
    ]
    if confirmed:
        who = ", ".join(f"{s.get('Protocol')}:{s.get('Endpoint')}" for s in confirmed[:3])
        more = f" and {len(confirmed) - 3} more" if len(confirmed) > 3 else ""
        items.insert(0, Item("alerts-subscription", PASS, topic, f"{len(confirmed)} confirmed: {who}{more}"))
    else:
        items.insert(
            0,
            Item(
                "alerts-subscription",
                FAIL,
                topic,
                "no confirmed subscription: nobody receives eic-guard's alerts (targets that failed, instances left "
                "open, ranges that vanished)",
                fix="sam deploy --parameter-overrides AlertEmail=you@example.com and confirm the mail, or subscribe "
                "your own endpoint to the AlertsTopicArn output",
                url=EMAIL_DOCS,
            ),
        )
    return items


_REDEPLOY = "deploy the stack again (sam deploy): template.yaml's RefreshFunction event IpSpaceChanged subscribes it"


def _name(function_arn: str) -> str:
    return function_arn.rsplit(":", 1)[-1]


def _same_function(endpoint: str, function_arn: str) -> bool:
    """A Lambda endpoint may name a version or alias of the function (arn:...:function:name:alias)."""
    return endpoint == function_arn or endpoint.startswith(function_arn + ":")
