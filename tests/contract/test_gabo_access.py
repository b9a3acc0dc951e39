"""The Pub/Sub broker's grants (an event type's own topics and subscriptions), with the real client
libraries against a local fake of Pub/Sub's IAM gRPC surface (the emulator has none)."""

from __future__ import annotations

import pytest

from fakes import pubsub_iam
from ferry.errors import InfraError
from ferry.gabo.delivery.broker import PubSubBroker
from ferry.gabo.names import Names
from ferry.gabo.provisioning.access import PUBLISHER, SUBSCRIBER, Access

P = "proj-1"
INGEST, WORKER = "serviceAccount:ferry-gabo-ingest@proj-1.iam.gserviceaccount.com", \
    "serviceAccount:ferry-gabo-worker@proj-1.iam.gserviceaccount.com"


@pytest.fixture
def iam():  # type: ignore[no-untyped-def]
    with pubsub_iam.serve() as (fake, pub, sub):
        yield fake, PubSubBroker(P, subscriber=sub, publisher=pub)


def test_grant_adds_members_once_and_keeps_the_rest(iam) -> None:  # type: ignore[no-untyped-def]
    fake, broker = iam
    topic = f"projects/{P}/topics/gabo-clicks"
    fake.add_resource(topic)
    fake.policies[topic].bindings.add(role=PUBLISHER, members=["user:ops@example.com"])
    assert broker.grant("topic", "gabo-clicks", PUBLISHER, [INGEST, WORKER]) is True
    assert fake.members(topic, PUBLISHER) == {"user:ops@example.com", INGEST, WORKER}
    assert len([b for b in fake.policies[topic].bindings if b.role == PUBLISHER]) == 1  # the binding, extended
    fake.requests.clear()
    assert broker.grant("topic", "gabo-clicks", PUBLISHER, [INGEST]) is False
    assert fake.requests == [("get", topic)]  # read, nothing to write


def test_grant_on_a_subscription_uses_its_own_policy(iam) -> None:  # type: ignore[no-untyped-def]
    fake, broker = iam
    sub, topic = f"projects/{P}/subscriptions/gabo-clicks-delivery", f"projects/{P}/topics/gabo-clicks"
    fake.add_resource(sub)
    fake.add_resource(topic)
    assert broker.grant("subscription", "gabo-clicks-delivery", SUBSCRIBER, [WORKER]) is True
    assert fake.members(sub, SUBSCRIBER) == {WORKER} and not fake.policies[topic].bindings


def test_a_concurrent_policy_change_is_kept_not_overwritten(iam) -> None:  # type: ignore[no-untyped-def]
    fake, broker = iam
    topic = f"projects/{P}/topics/gabo-clicks"
    fake.add_resource(topic)
    fake.race = (topic, "roles/pubsub.viewer", "user:someone@example.com")
    assert broker.grant("topic", "gabo-clicks", PUBLISHER, [INGEST]) is True
    assert [r for r in fake.requests] == [("get", topic), ("set", topic), ("get", topic), ("set", topic)]
    assert fake.members(topic, "roles/pubsub.viewer") == {"user:someone@example.com"}  # the other writer's
    assert fake.members(topic, PUBLISHER) == {INGEST}


def test_a_missing_resource_is_an_infra_error(iam) -> None:  # type: ignore[no-untyped-def]
    _, broker = iam
    with pytest.raises(InfraError, match="gabo-gone"):
        broker.grant("topic", "gabo-gone", PUBLISHER, [INGEST])


def test_provisioning_grants_go_through_the_real_client(iam) -> None:  # type: ignore[no-untyped-def]
    """What applying an EventType grants in the cloud, as requests the real client sends."""
    from ferry.gabo.provisioning.access import grant

    fake, broker = iam
    n = Names("clicks")
    topics, subs = [n.topic, n.dead_letter, n.quarantine], [n.subscription, n.hold(n.quarantine)]
    for t in topics:
        fake.add_resource(f"projects/{P}/topics/{t}")
    for s in subs:
        fake.add_resource(f"projects/{P}/subscriptions/{s}")
    agent = "serviceAccount:service-7@gcp-sa-pubsub.iam.gserviceaccount.com"
    changed = grant(broker, Access((INGEST, WORKER), (WORKER,), agent).grants(n, topics, subs))
    assert all(changed.values()) and len(changed) == 5
    assert fake.members(f"projects/{P}/topics/{n.dead_letter}", PUBLISHER) == {INGEST, WORKER, agent}
    assert fake.members(f"projects/{P}/subscriptions/{n.subscription}", SUBSCRIBER) == {WORKER, agent}
    assert fake.members(f"projects/{P}/subscriptions/{n.hold(n.quarantine)}", SUBSCRIBER) == {WORKER}
