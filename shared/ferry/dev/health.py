"""Whether the local stack's push subscriptions deliver: each one checked end to end.

A running process is not a working stack: a push subscription whose endpoint lacks the stack's secret
(or points at a dead port) is refused on every push, for good, while every component looks alive. For
each Pub/Sub-triggered function of ``infra/`` this reads its subscription back from the Pub/Sub
emulator and sends a probe push to the endpoint that subscription holds — the same URL and credentials
the emulator's pushes carry — as a Pub/Sub push envelope with the ``ferry_probe`` attribute, which the
function admits like any push and acks without handling (``ferry.api.push``). 2xx is healthy; anything
else (401/403: wrong or no secret, connection refused, no subscription) is broken.
"""

from __future__ import annotations

import base64
import os
import uuid
from typing import Any

import httpx

from ferry.dev import layout
from ferry.infra.pubsub import PROBE_ATTRIBUTE, push_config_matches, push_subscription_request


def _subscriber(pubsub_host: str) -> Any:
    from google.cloud import pubsub_v1

    before = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = pubsub_host  # the client reads it when it is built
    try:
        return pubsub_v1.SubscriberClient()
    finally:
        if before is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST")
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = before


def probe_envelope(subscription: str) -> dict[str, Any]:
    """A Pub/Sub push envelope carrying nothing but the probe mark."""
    return {"message": {"data": base64.b64encode(b"{}").decode(), "attributes": {PROBE_ATTRIBUTE: "1"},
                        "messageId": f"probe-{uuid.uuid4().hex}"},
            "subscription": subscription}


def push_health(state: dict[str, Any], timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """One row per push subscription of the stack: ``subscription``, ``function``, ``endpoint`` (without
    its secret), ``status`` (the probe's HTTP status, or None), ``ok`` and ``problem`` (why not)."""
    from google.api_core import exceptions as gexc


    infra = layout.load_infra(state)
    urls = layout.function_urls(state)
    project, secret = state["project"], str(state.get("stack_secret") or "")
    rows: list[dict[str, Any]] = []
    subscriber = _subscriber(state["env"]["PUBSUB_EMULATOR_HOST"])
    try:
        with httpx.Client(timeout=timeout_s) as http:
            for fn, trig in infra.push_subscriptions():
                row: dict[str, Any] = {"subscription": trig.subscription, "function": fn.name, "topic": trig.topic,
                                       "endpoint": None, "status": None, "ok": False, "problem": None}
                rows.append(row)
                path = f"projects/{project}/subscriptions/{trig.subscription}"
                try:
                    have = subscriber.get_subscription(request={"subscription": path}, timeout=timeout_s)
                except gexc.NotFound:
                    row["problem"] = "the subscription does not exist"
                    continue
                except gexc.GoogleAPICallError as exc:
                    row["problem"] = f"the Pub/Sub emulator did not answer: {exc}"
                    continue
                endpoint = have.push_config.push_endpoint
                row["endpoint"] = endpoint.split("?", 1)[0]
                if not endpoint:
                    row["problem"] = "not a push subscription"
                    continue
                try:
                    resp = http.post(endpoint, json=probe_envelope(path))
                    row["status"] = resp.status_code
                except httpx.HTTPError as exc:
                    row["problem"] = f"the push endpoint did not answer: {exc}"
                    continue
                if not 200 <= resp.status_code < 300:
                    row["problem"] = f"the function refuses this subscription's pushes ({resp.status_code})"
                    continue
                if fn.name in urls and secret and not push_config_matches(
                        have.push_config, push_subscription_request(trig, project, urls[fn.name],
                                                                    secret=secret)["push_config"]):
                    row["problem"] = "its push config is not the one `ferry dev up` makes"
                    continue
                row["ok"] = True
    finally:
        subscriber.close()
    return rows
