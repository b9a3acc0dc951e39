"""Self-healing Pub/Sub: recreate what should exist and does not, on every scale tick.

What should exist: the topics and pull subscriptions of ``infra/``, the push subscriptions of its
functions' Pub/Sub triggers where their URLs are known (the local stack, built by the one builder of
push subscriptions, :func:`ferry.infra.pubsub.push_subscription_request`; in the cloud ``ferry deploy``
converges them), and for every applied event type its topics and
subscriptions (:func:`ferry.gabo.provisioning.provision.provision`'s set) — except the delivery subscription of a
type deleted with ``--force``, which is kept until its retention ends and then deleted here; so are a
deleted type's remaining topics and hold subscriptions.

Idempotent by construction: it lists what exists (two list calls), creates only what is missing
(create-if-absent), and reports what it recreated — an empty report when nothing was missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ferry import log
from ferry.domain.manifests import EventType
from ferry.errors import InfraError
from ferry.gabo.delivery.broker import DeliveryBroker, SubscriptionSpec
from ferry.gabo.delivery.service import ACK_DEADLINE_S
from ferry.gabo.names import Names, streams_of
from ferry.gabo.provisioning.access import Access, grant
from ferry.infra.model import Infra
from ferry.infra.pubsub import push_subscription_request

logger = log.get("gabo.reconcile")

# Deletes given up with --force: who, when, what was outstanding, until when the subscription is kept.
FORCED_DELETES = "gabo_forced_deletes"


@dataclass
class Reconciled:
    topics: list[str] = field(default_factory=list)
    subscriptions: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)  # resources of deleted types whose retention ended, now gone
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"topics": self.topics, "subscriptions": self.subscriptions, "expired": self.expired,
                "notes": self.notes}


def wanted(infra: Infra | None, event_types: Iterable[EventType]) -> tuple[list[str], list[SubscriptionSpec]]:
    """Every topic and pull subscription that should exist (pure: from the declarations)."""
    topics: list[str] = []
    subs: list[SubscriptionSpec] = []
    if infra is not None:
        topics += [t.name for t in infra.topics]
        subs += [SubscriptionSpec(s.name, s.topic, ack_deadline_s=s.ack_deadline_seconds,
                                  dead_letter_topic=s.dead_letter_topic, max_delivery_attempts=s.max_delivery_attempts)
                 for s in infra.pull_subscriptions()]
    for et in event_types:
        et_topics, et_subs = type_resources(et)
        topics += et_topics
        subs += et_subs
    return list(dict.fromkeys(topics)), list({s.name: s for s in subs}.values())


def wanted_push(infra: Infra | None, push_urls: dict[str, str] | None, project: str,
                secret: str) -> list[dict[str, Any]]:
    """The push subscriptions of ``infra``'s Pub/Sub-triggered functions whose URLs are known (the local
    stack), as :func:`ferry.infra.pubsub.push_subscription_request` builds them for ``ferry dev up``: the
    same endpoint with the stack's ``secret``, the same dead-letter and retry policies."""
    if infra is None or not push_urls or not secret:
        return []
    return [push_subscription_request(trig, project, push_urls[fn.name], secret=secret)
            for fn, trig in infra.push_subscriptions() if fn.name in push_urls]


def type_resources(et: EventType) -> tuple[list[str], list[SubscriptionSpec]]:
    """One event type's topics and subscriptions (pure), per stream (the primary's, and the darkload
    shadow's when ``spec.darkload > 0``): the topic, its dead-letter topic, the delivery subscription
    with its dead-letter policy, a ``-hold`` subscription keeping the dead letters; and the quarantine
    topic with its hold (a topic without a subscription drops what is published to it)."""
    topics: list[str] = []
    subs: list[SubscriptionSpec] = []
    held = [Names(et.name).quarantine]
    for stream in streams_of(et.spec.darkload):
        n = Names(et.name, stream)
        topics += [n.topic, n.dead_letter]
        subs.append(SubscriptionSpec(n.subscription, n.topic, ack_deadline_s=ACK_DEADLINE_S,
                                     dead_letter_topic=n.dead_letter,
                                     max_delivery_attempts=et.spec.max_delivery_attempts))
        held.append(n.dead_letter)
    topics.append(held[0])
    subs += [SubscriptionSpec(Names(et.name).hold(t), t, ack_deadline_s=60) for t in held]
    return topics, subs


def reconcile(broker: DeliveryBroker, infra: Infra | None, event_types: Sequence[EventType],
              push_urls: dict[str, str] | None = None, project: str = "",
              forced: Sequence[dict[str, Any]] = (), now: datetime | None = None,
              access: Access = Access(), deleted: Sequence[dict[str, Any]] = (),
              secret: str = "") -> Reconciled:
    """Create the missing topics and subscriptions; delete kept subscriptions whose time is up.

    ``push_urls``/``secret``: the local stack's function URLs and secret — its push subscriptions are
    created when missing and their push config corrected when it is not the one ``ferry dev up`` makes
    (a repair that left them refusing every push is mended on the next tick).
    ``forced``: records of types deleted with ``--force`` (``subscription``, ``keep_until``).
    ``deleted``: records of deleted types (``retention.deletion_record``): once ``keep_until`` passed,
    and unless the type was applied again, their remaining subscriptions (the dead-letter and quarantine
    holds, a kept delivery subscription) and topics are deleted — what they held was kept as long as a
    subscription keeps messages.
    ``access``: granted again on an event type's resources this run recreated (a new resource has an
    empty policy).
    """
    out = Reconciled()
    topics, subs = wanted(infra, event_types)
    have_topics, have_subs = broker.existing()
    # a topic first, then what subscribes to it (a dead-letter topic before its subscription too)
    for t in topics:
        if t not in have_topics and broker.ensure_topic(t):
            out.topics.append(t)
    for s in subs:
        if s.name in have_subs:
            continue
        try:
            created = broker.ensure_subscription(s)
        except InfraError as exc:
            if not s.dead_letter_topic:
                raise
            # the emulator refuses some dead-letter policies: the subscription matters more
            out.notes.append(f"subscription {s.name}: created without its dead-letter policy ({exc.message})")
            created = broker.ensure_subscription(replace(s, dead_letter_topic=None))
        if created:
            out.subscriptions.append(s.name)
    for request in wanted_push(infra, push_urls, project, secret):
        # checked even when it exists: its endpoint may carry no (or another stack's) secret
        if broker.ensure_push_subscription(request):
            out.subscriptions.append(request["name"].rsplit("/", 1)[-1])
    remade = set(out.topics) | set(out.subscriptions)
    for et in event_types if remade else ():
        type_topics, type_subs = type_resources(et)
        grant(broker, access.grants(Names(et.name), [t for t in type_topics if t in remade],
                                    [s.name for s in type_subs if s.name in remade]))
    applied = {et.name for et in event_types}
    for rec in forced:
        name = rec.get("subscription")
        if not name or rec.get("event_type") in applied:
            continue  # re-applied: it is the type's own subscription again
        if now is not None and rec.get("keep_until") and now >= rec["keep_until"] and name in have_subs:
            broker.delete_subscription(name)
            out.expired.append(name)
    for rec in deleted:
        if rec.get("event_type") in applied or now is None or not rec.get("keep_until") or now < rec["keep_until"]:
            continue
        for name in rec.get("subscriptions") or []:
            if name in have_subs and broker.delete_subscription(name):
                out.expired.append(name)
        for name in rec.get("topics") or []:
            if name in have_topics and broker.delete_topic(name):
                out.expired.append(name)
    if out.topics or out.subscriptions:
        log.event(logger, 30, f"reconcile recreated {len(out.topics)} topic(s) and {len(out.subscriptions)} "
                  "subscription(s)", recreated=out.to_dict())
    return out


def stack_secret() -> str:
    """The local stack's secret (its push endpoints carry it), from its record under ``FERRY_HOME``; ""
    outside a local stack."""
    import os
    from pathlib import Path

    home = os.environ.get("FERRY_HOME")
    if not home:
        return ""
    from ferry.dev import stack

    state = stack.read_state(Path(home))
    return str((state or {}).get("stack_secret") or "")


def declared() -> tuple[Infra | None, dict[str, str] | None]:
    """``infra/`` and the push URLs of its functions: from the local stack's record when this process
    runs in one (``FERRY_HOME``), else the repository's ``infra/`` if present (no push URLs)."""
    import os
    from pathlib import Path

    from ferry.infra import model

    home = os.environ.get("FERRY_HOME")
    if home:
        from ferry.dev import stack

        state = stack.read_state(Path(home))
        if state is not None:
            return stack.load_infra(state), stack.function_urls(state)
    return (model.load() if model.DEFAULT_DIR.is_dir() else None), None
