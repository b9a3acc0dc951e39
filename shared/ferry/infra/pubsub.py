"""The Pub/Sub requests for infra's subscriptions — one builder for ``ferry dev up`` (the emulator)
and ``ferry deploy`` (Google Cloud), so the local stack's subscriptions are the deployed ones."""

from __future__ import annotations

from typing import Any

from ferry.api.identity import SECRET_QUERY
from ferry.domain.periods import parse_duration
from ferry.errors import InfraError
from ferry.infra.model import PubSubTrigger, Subscription

# Unacked messages of a push subscription are kept this long (Pub/Sub's maximum) while a function is down.
PUSH_RETENTION = "P7D"
# A pushed message with this attribute is a health probe (``ferry dev status``, ``ferry.dev.health``): the
# function admits and decodes it like any push, then acks it (204) without handling it — it proves the
# push's endpoint and credentials only.
PROBE_ATTRIBUTE = "ferry_probe"


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


def push_endpoint(function_url: str, project: str, topic: str, secret: str | None = None) -> str:
    """Where a push subscription delivers: the function's URL itself in the cloud (the OIDC token's
    audience); locally ``<url>/projects/<p>/topics/<topic>?ferry_secret=<stack secret>`` — the topic in the
    path lets functions-framework build the CloudEvent's source from it, the stack's secret in the query is
    what admits the push (``ferry.api.identity``)."""
    if secret is None:
        return function_url
    return f"{function_url.rstrip('/')}/projects/{project}/topics/{topic}?{SECRET_QUERY}={secret}"


def push_subscription_request(trig: PubSubTrigger, project: str, function_url: str, *,
                              oidc_account: str | None = None, audience: str | None = None,
                              secret: str | None = None) -> dict[str, Any]:
    """The push subscription of a Pub/Sub-triggered function — the one builder of every push subscription:
    ``ferry deploy``, ``ferry dev up``, its repair and Gabo's reconcile all call it, so none of them can
    make one its function refuses.

    In the cloud (``oidc_account``) the push carries an OIDC token of that account whose audience is
    ``audience`` — the function's configured audience (its ``FERRY_AUDIENCES``, which the function checks;
    default: ``function_url``); locally (``secret``, the stack's) the endpoint carries the secret. Exactly one of the
    two: a push subscription that authenticates with neither would be refused 401 on every push, for good.

    Raises:
        InfraError: neither (or both) of ``oidc_account`` and a non-empty ``secret`` given.
    """
    if bool(oidc_account) == bool(secret):
        raise InfraError(f"push subscription {trig.subscription}: needs exactly one of an OIDC account (the cloud) "
                         "or the stack's secret (the local stack) — without either every push is refused")
    push: dict[str, Any] = {"push_endpoint": push_endpoint(function_url, project, trig.topic, secret or None)}
    if oidc_account:
        push["oidc_token"] = {"service_account_email": oidc_account, "audience": audience or function_url}
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


def push_config_matches(have: Any, want: dict[str, Any]) -> bool:
    """Whether an existing subscription's push config (a ``PushConfig`` message) is the wanted one (the
    ``push_config`` of :func:`push_subscription_request`): same endpoint, same OIDC identity and audience."""
    oidc = want.get("oidc_token") or {}
    token = getattr(have, "oidc_token", None)
    return (getattr(have, "push_endpoint", None) == want["push_endpoint"]
            and (getattr(token, "service_account_email", "") or "") == oidc.get("service_account_email", "")
            and (getattr(token, "audience", "") or "") == oidc.get("audience", ""))
