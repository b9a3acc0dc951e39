"""The deploy plan's Pub/Sub steps, applied for real against the Pub/Sub emulator."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.cloud import pubsub_v1

from fakes.sample_infra import SAMPLE
from ferry.deploy import Applier, plan
from ferry.deploy.planning import function_url
from ferry.infra.model import Infra

pytestmark = pytest.mark.emulator
R = "europe-west1"
URLS = {"api": "https://api-x-ew.a.run.app", "tick": "https://tick-x-ew.a.run.app",
        "deliver": "https://deliver-x-ew.a.run.app"}


@pytest.fixture
def clients(emulators):  # type: ignore[no-untyped-def]
    pub, sub = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    yield pub, sub
    sub.close()
    pub.transport.close()


def _pubsub_steps(infra: Infra, project: str, tmp_path: Path):
    return [s for s in plan(infra, project, R, tmp_path, urls=URLS, project_number="1")
            if s.via == "pubsub"]


def test_topics_and_subscriptions_are_created_then_unchanged(clients, project_id: str, tmp_path: Path) -> None:
    pub, sub = clients
    steps = _pubsub_steps(Infra.model_validate(SAMPLE), project_id, tmp_path)
    # the declared pull subscription and the dead-letter topic's hold (every dead-letter topic has one)
    assert [s.kind for s in steps] == ["topic"] * 3 + ["subscription"] * 2 + ["push_subscription"]

    first = [Applier(publisher=pub, subscriber=sub).apply(s).action for s in steps]
    assert first == ["created"] * 6

    topics = {t.name.rsplit("/", 1)[1] for t in pub.list_topics(request={"project": f"projects/{project_id}"})}
    assert topics == {"events", "ferry-dead-letter", "alerts"}
    push = sub.get_subscription(request={"subscription": f"projects/{project_id}/subscriptions/events-deliver"})
    assert push.topic == f"projects/{project_id}/topics/events"
    assert push.ack_deadline_seconds == 300
    assert push.push_config.push_endpoint == URLS["deliver"]
    assert push.push_config.oidc_token.service_account_email == f"ferry-pubsub-push@{project_id}.iam.gserviceaccount.com"
    assert push.push_config.oidc_token.audience == function_url(project_id, R, "deliver")  # its FERRY_AUDIENCES
    assert push.dead_letter_policy.dead_letter_topic == f"projects/{project_id}/topics/ferry-dead-letter"
    assert push.dead_letter_policy.max_delivery_attempts == 7
    assert push.retry_policy.minimum_backoff.total_seconds() == 5
    assert push.retry_policy.maximum_backoff.total_seconds() == 120
    pull = sub.get_subscription(request={"subscription": f"projects/{project_id}/subscriptions/alerts-audit"})
    assert pull.ack_deadline_seconds == 30 and not pull.push_config.push_endpoint
    assert pull.dead_letter_policy.max_delivery_attempts == 10

    hold = sub.get_subscription(request={"subscription": f"projects/{project_id}/subscriptions/ferry-dead-letter-hold"})
    assert hold.topic == f"projects/{project_id}/topics/ferry-dead-letter"
    assert hold.message_retention_duration.total_seconds() == 7 * 86400

    second = [Applier(publisher=pub, subscriber=sub).apply(s).action for s in steps]
    assert second == ["unchanged"] * 6


def test_a_changed_ack_deadline_is_updated_in_place(clients, project_id: str, tmp_path: Path) -> None:
    pub, sub = clients
    for s in _pubsub_steps(Infra.model_validate(SAMPLE), project_id, tmp_path):
        Applier(publisher=pub, subscriber=sub).apply(s)

    changed = dict(SAMPLE)
    changed["functions"] = [dict(f) for f in SAMPLE["functions"]]
    deliver = changed["functions"][2]
    deliver["pubsub"] = {**deliver["pubsub"], "ack_deadline_seconds": 420}
    changed["subscriptions"] = [{**SAMPLE["subscriptions"][0], "ack_deadline_seconds": 45}]
    outcomes = {s.name: Applier(publisher=pub, subscriber=sub).apply(s)
                for s in _pubsub_steps(Infra.model_validate(changed), project_id, tmp_path)}
    assert {n: o.action for n, o in outcomes.items()} == {
        "events": "unchanged", "ferry-dead-letter": "unchanged", "alerts": "unchanged",
        "alerts-audit": "updated", "ferry-dead-letter-hold": "unchanged", "events-deliver": "updated"}
    assert outcomes["events-deliver"].detail == "ack_deadline_seconds"
    got = sub.get_subscription(request={"subscription": f"projects/{project_id}/subscriptions/events-deliver"})
    assert got.ack_deadline_seconds == 420
    assert got.push_config.push_endpoint == URLS["deliver"]  # the rest untouched
    got = sub.get_subscription(request={"subscription": f"projects/{project_id}/subscriptions/alerts-audit"})
    assert got.ack_deadline_seconds == 45
