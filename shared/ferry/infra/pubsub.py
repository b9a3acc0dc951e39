"""The Pub/Sub requests for infra's subscriptions — one builder for ``ferry dev up`` (the emulator)
and ``ferry deploy`` (Google Cloud), so the local stack's subscriptions are the deployed ones."""

from __future__ import annotations

from typing import Any

from ferry.domain.periods import parse_duration
from ferry.infra.model import PubSubTrigger, Subscription

# Unacked messages of a push subscription are kept this long (Pub/Sub's maximum) while a function is down.
PUSH_RETENTION = "P7D"


def duration(iso: str) -> dict[str, int]:
    """An ISO 8601 duration as a protobuf Duration."""
    return {"seconds": int(parse_duration(iso).total_seconds())}


def topic_path(project: str, name: str) -> str:
    return f"projects/{project}/topics/{name}"


def pull_subscription_request(s: Subscription, project: str) -> dict[str, Any]:
    req: dict[str, Any] = {
        "name": f"projects/{project}/subscriptions/{s.name}",
        "topic": topic_path(project, s.topic),
        "ack_deadline_seconds": s.ack_deadline_seconds,
        "message_retention_duration": duration(s.retention),
        "expiration_policy": {},  # never expire, however quiet the topic
    }
    if s.dead_letter_topic:
        req["dead_letter_policy"] = {"dead_letter_topic": topic_path(project, s.dead_letter_topic),
                                     "max_delivery_attempts": s.max_delivery_attempts}
    return req


def push_subscription_request(trig: PubSubTrigger, project: str, endpoint: str,
                              oidc_account: str | None = None) -> dict[str, Any]:
    """The push subscription of a Pub/Sub-triggered function to ``endpoint``; in the cloud the push
    carries an OIDC token of ``oidc_account`` (the local stack's functions take no token)."""
    push: dict[str, Any] = {"push_endpoint": endpoint}
    if oidc_account:
        push["oidc_token"] = {"service_account_email": oidc_account, "audience": endpoint}
    return {
        "name": f"projects/{project}/subscriptions/{trig.subscription}",
        "topic": topic_path(project, trig.topic),
        # covers the function's timeout (the model refuses less): no redelivery mid-work
        "ack_deadline_seconds": trig.ack_deadline_seconds,
        "message_retention_duration": duration(PUSH_RETENTION),
        "push_config": push,
        "dead_letter_policy": {"dead_letter_topic": topic_path(project, trig.dead_letter_topic),
                               "max_delivery_attempts": trig.max_delivery_attempts},
        "retry_policy": {"minimum_backoff": {"seconds": trig.min_backoff_seconds},
                         "maximum_backoff": {"seconds": trig.max_backoff_seconds}},
        "expiration_policy": {},  # never expire, however quiet the topic
    }
