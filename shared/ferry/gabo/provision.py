"""Self-service provisioning: applying an EventType creates its Pub/Sub resources and its endpoint.

An ApplyHook: ``ops`` writes endpoint ``events.<name>`` (SLA and partitioning of the type, owner of the
type) in the same batches as the manifest; ``after`` creates topics and subscriptions for every applied
type — unchanged ones too, so a deleted topic comes back on the next apply (create-if-absent is
idempotent). Deleting a type deletes its delivery subscription only: topics, staging and partitions stay.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, cast

from ferry import log
from ferry.domain.loading import Problem
from ferry.domain.manifests import Endpoint, EventType, Manifest, event_type_of
from ferry.gabo.broker import DeliveryBroker, SubscriptionSpec
from ferry.gabo.core import Names
from ferry.gabo.delivery import ACK_DEADLINE_S
from ferry.services.apply import Change
from ferry.store.base import Op
from ferry.store.manifests import ManifestRepository

if TYPE_CHECKING:
    from ferry.bootstrap import Services

logger = log.get("gabo.provision")


def endpoint_for(et: EventType, start: datetime) -> Endpoint:
    spec = et.spec
    return Endpoint.model_validate({
        "metadata": {"name": et.endpoint_name, "owner": et.metadata.owner,
                     "description": f"events of type {et.name}, delivered by Gabo",
                     "labels": {"source": "gabo"}},
        "spec": {"partitioning": spec.partitioning, "timezone": "UTC", "start": start,
                 "sla": spec.sla.model_dump(exclude_none=True)},
    })


def provision(broker: DeliveryBroker, et: EventType) -> dict[str, bool]:
    """Create what ``et`` needs (idempotent). Returns what was created."""
    n = Names(et.name)
    created: dict[str, bool] = {}
    topics = [n.topic, n.dead_letter, n.quarantine] + ([n.shadow] if et.spec.darkload > 0 else [])
    for t in topics:
        created[t] = broker.ensure_topic(t)
    created[n.subscription] = broker.ensure_subscription(SubscriptionSpec(
        n.subscription, n.topic, ack_deadline_s=ACK_DEADLINE_S, dead_letter_topic=n.dead_letter,
        max_delivery_attempts=et.spec.max_delivery_attempts))
    # A topic without a subscription drops what is published to it: hold dead letters and quarantine.
    for t in (n.dead_letter, n.quarantine) + ((n.shadow,) if et.spec.darkload > 0 else ()):
        created[n.hold(t)] = broker.ensure_subscription(SubscriptionSpec(n.hold(t), t, ack_deadline_s=60))
    return created


class GaboApplyHook:
    def __init__(self, services: Services) -> None:
        self.services = services

    def check(self, manifests: Sequence[Manifest], repo: ManifestRepository) -> list[Problem]:
        problems = []
        types = {m.name for m in manifests if isinstance(m, EventType)}
        for i, m in enumerate(manifests):
            owner_type = event_type_of(m.name) if m.kind == "Endpoint" else None
            if owner_type in types:
                problems.append(Problem("(input)", i, "metadata.name",
                                        f"endpoint {m.name} is registered by event type {owner_type}", m.kind, m.name))
        return problems

    def ops(self, changes: Sequence[Change], now: datetime) -> list[Op]:
        ops = []
        repo = self.services.manifests
        for c in changes:
            if not isinstance(c.manifest, EventType):
                continue
            name = c.manifest.endpoint_name
            if c.action == "deleted":
                continue  # the endpoint stays: its partitions are still data that others depend on
            prev = repo.get("Endpoint", name)
            start = prev.model_as(Endpoint).spec.start if prev else None
            ep = endpoint_for(c.manifest, start or _floor(c.manifest, now))
            if prev is None or prev.fingerprint != ep.fingerprint():
                ops.append(repo.op_for(repo.record_for(ep, prev, now)))
        return ops

    def after(self, changes: Sequence[Change], now: datetime) -> None:
        types = [c for c in changes if isinstance(c.manifest, EventType)]
        if not types:
            return  # no broker is built (nor connected) for applies without event types
        broker = self.services.broker
        for c in types:
            if c.action == "deleted":
                broker.delete_subscription(Names(c.manifest.name).subscription)
                log.event(logger, log.INFO, f"event type {c.manifest.name} deleted: delivery stopped, data kept",
                          labels={"event_type": c.manifest.name})
                continue
            created = provision(broker, cast(EventType, c.manifest))  # `types` holds EventTypes only
            if any(created.values()):
                log.event(logger, log.INFO, f"provisioned event type {c.manifest.name}",
                          labels={"event_type": c.manifest.name}, created=[k for k, v in created.items() if v])


def _floor(et: EventType, now: datetime) -> datetime:
    from ferry.domain import periods

    return periods.partitioning(et.spec.partitioning).floor(now)


