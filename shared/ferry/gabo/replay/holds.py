"""Every dead letter someone reads: the hold subscriptions, counted, and replayed.

A hold is the subscription that keeps what reaches a topic nobody else reads: each dead-letter topic of
``infra/`` (``ferry-dead-letter``: work orders, close orders, landings; ``ferry-alerts-dead-letter``:
notifications — ``infra.model.Infra.dead_letter_holds``) and each event type's quarantine and
dead-letter topics (``…-quarantine-hold``, ``…-dead-letter-hold``). ``ferry dead-letters`` (and ``ferry
status``) count what each holds; ``ferry replay --dead-letters TOPIC`` publishes an infra hold's messages
back where they came from (an event type's are replayed, re-validated, with ``ferry replay TYPE --from
dead-letter``):

- a message Pub/Sub dead-lettered carries ``CloudPubSubDeadLetterSourceSubscription``: it goes back to
  that subscription's topic (``infra/``'s push triggers and subscriptions name it);
- a notification notify dead-lettered itself carries ``channel`` (``team:name``): it goes back to
  ``ferry-alerts`` with that delivery reopened (``ferry.notify.port.reopen_delivery``), so the failed
  channel is tried again and the channels already delivered are not;
- anything else is left in the hold and counted ``unroutable``.

Once each: a message is acknowledged only after its publish succeeded; a crash in between publishes it
again on the next replay (every consumer is idempotent: work orders, close orders, landings and
notifications all are).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ferry.broker.base import Message, Publisher
from ferry.domain.manifests import EventType
from ferry.errors import BadRequest
from ferry.gabo.delivery.broker import DeliveryBroker
from ferry.gabo.names import Names, streams_of
from ferry.infra.model import Infra
from ferry.store.base import DocumentStore

SOURCE_SUBSCRIPTION = "CloudPubSubDeadLetterSourceSubscription"
ALERTS_TOPIC = "ferry-alerts"
COUNT_CAP = 1000
BATCH = 500
# What dead-lettering added to a message: dropped when it goes back.
DEAD_LETTER_ATTRIBUTES = ("channel", "error", "attempts", "swept")


@dataclass(frozen=True)
class Hold:
    subscription: str
    topic: str
    event_type: str | None = None  # None: one of infra/'s dead-letter topics


def holds(infra: Infra | None, event_types: Sequence[EventType]) -> list[Hold]:
    """Every hold subscription: infra/'s dead-letter holds, then each type's quarantine and dead-letter holds."""
    out = [Hold(s.name, s.topic) for s in (infra.dead_letter_holds() if infra else [])]
    for et in event_types:
        n = Names(et.name)
        held = [n.quarantine] + [Names(et.name, s).dead_letter for s in streams_of(et.spec.darkload)]
        out += [Hold(n.hold(t), t, et.name) for t in held]
    return out


def count(broker: DeliveryBroker, hold: Hold, cap: int = COUNT_CAP) -> int:
    """How many messages ``hold`` keeps (at most ``cap``; a lower bound: pulled without waiting and
    handed straight back)."""
    return broker.count_available(hold.subscription, cap)


def source_topics(infra: Infra) -> dict[str, str]:
    """subscription → its topic, for every subscription of ``infra/`` that dead-letters."""
    out = {trig.subscription: trig.topic for _, trig in infra.push_subscriptions()}
    out.update({s.name: s.topic for s in infra.subscriptions if s.dead_letter_topic})
    return out


def replay(broker: DeliveryBroker, publisher: Publisher, store: DocumentStore, infra: Infra, topic: str,
           reopen: Any, now: datetime, limit: int = 100_000) -> dict[str, Any]:
    """Publish the messages held for dead-letter topic ``topic`` of ``infra/`` back where they came from.

    ``reopen(store, data, attributes, now)``: reopens the dead notification delivery a notify dead letter names
    (``ferry.notify.port.reopen_delivery``).
    Returns counts: replayed (per target topic), unroutable (left in the hold).
    Raises BadRequest: ``topic`` is not one of infra/'s dead-letter topics.
    """
    by_topic = {h.topic: h for h in holds(infra, [])}
    by_sub = {h.subscription: h for h in by_topic.values()}
    hold = by_topic.get(topic) or by_sub.get(topic)
    if hold is None:
        raise BadRequest(f"{topic!r} is not a dead-letter topic of infra/ (one of: {', '.join(sorted(by_topic))}); "
                         "an event type's dead letters replay with `ferry replay TYPE --from dead-letter`")
    sources = source_topics(infra)
    replayed: dict[str, int] = {}
    unroutable: list[str] = []
    seen: set[str] = set()
    while sum(replayed.values()) + len(unroutable) < limit:
        batch = [p for p in broker.pull(hold.subscription, BATCH, timeout_s=5.0) if p.message_id not in seen]
        if not batch:
            break
        done: list[str] = []
        for p in batch:
            seen.add(p.message_id)
            attrs = dict(p.attributes)
            source = attrs.get(SOURCE_SUBSCRIPTION, "").rsplit("/", 1)[-1]
            target = sources.get(source) if source else (ALERTS_TOPIC if attrs.get("channel") else None)
            if target is None:
                unroutable.append(p.ack_id)
                continue
            if target == ALERTS_TOPIC and attrs.get("channel"):
                reopen(store, p.data, attrs, now)
            clean = {k: v for k, v in attrs.items()
                     if not k.startswith("CloudPubSubDeadLetter") and k not in DEAD_LETTER_ATTRIBUTES}
            publisher.publish(target, [Message(p.data, {**clean, "replayed": "1"})])
            done.append(p.ack_id)
            replayed[target] = replayed.get(target, 0) + 1
        if done:
            broker.ack(hold.subscription, done)
    if unroutable:
        broker.extend(hold.subscription, unroutable, 0)  # left where they were
    return {"topic": hold.topic, "subscription": hold.subscription, "replayed": sum(replayed.values()),
            "to": replayed, "unroutable": len(unroutable)}
