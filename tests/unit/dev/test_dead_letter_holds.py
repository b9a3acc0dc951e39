"""Issue 23, finding 5: ``ferry-alerts-dead-letter`` and ``ferry-dead-letter`` had no subscription, so
everything dead-lettered there (notifications, work orders, close orders, landings) was dropped.

Now every dead-letter topic of ``infra/`` has a ``<topic>-hold`` pull subscription kept 7 days, created
by ``ferry dev up``, the reconcile and ``ferry deploy`` alike (``Infra.pull_subscriptions``).
"""

from __future__ import annotations

from ferry.broker.base import Message
from ferry.domain.periods import parse_duration
from ferry.gabo.delivery.broker import MemoryBroker
from ferry.gabo.provisioning.reconcile import reconcile
from ferry.infra import model


def test_every_dead_letter_topic_of_infra_has_a_hold() -> None:
    infra = model.load()
    assert {"ferry-dead-letter", "ferry-alerts-dead-letter"} <= set(infra.dead_letter_topics())
    holds = {s.topic: s for s in infra.pull_subscriptions()}
    for topic in infra.dead_letter_topics():
        assert topic in holds, f"{topic} has no subscription: what reaches it is dropped"
        assert parse_duration(holds[topic].retention).days == 7


def test_a_declared_subscription_on_a_dead_letter_topic_is_its_hold() -> None:
    infra = model.Infra.model_validate({
        "topics": [{"name": "events"}, {"name": "dead-letters"}],
        "subscriptions": [{"name": "events-pull", "topic": "events", "dead_letter_topic": "dead-letters"},
                          {"name": "dead-letters-audit", "topic": "dead-letters"}]})
    assert [s.name for s in infra.pull_subscriptions()] == ["events-pull", "dead-letters-audit"]


def test_the_reconcile_creates_the_holds_and_they_keep_what_is_dead_lettered() -> None:
    broker = MemoryBroker()
    reconcile(broker, model.load(), [])
    assert {"ferry-dead-letter-hold", "ferry-alerts-dead-letter-hold"} <= set(broker.subs)
    broker.publish("ferry-alerts-dead-letter", [Message(b'{"summary": "x"}', {"channel": "team-a:pager"})])
    [held] = broker.pull("ferry-alerts-dead-letter-hold", 10)
    assert held.data == b'{"summary": "x"}' and held.attributes["channel"] == "team-a:pager"
