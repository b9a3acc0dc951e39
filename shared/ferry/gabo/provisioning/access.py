"""Access on an event type's own Pub/Sub resources, granted when they are created.

Event types are applied after the deploy, so their topics and subscriptions cannot be named in
``infra/``; instead the accounts declaring ``event_type_access`` there get ``pubsub.publisher`` on the
type's topics / ``pubsub.subscriber`` on its subscriptions, on those resources only, when Gabo
provisions them (at apply, or when the reconcile recreates them). Nobody gets Pub/Sub roles on the
project, so no Gabo identity can publish to a topic it was not given (``ferry-partitions``, whose
messages record landings, in particular). The Pub/Sub service agent gets what dead-lettering needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ferry.gabo.delivery.broker import DeliveryBroker, ResourceKind
from ferry.gabo.names import STREAMS, Names

if TYPE_CHECKING:
    from ferry.config import Settings

PUBLISHER, SUBSCRIBER = "roles/pubsub.publisher", "roles/pubsub.subscriber"


@dataclass(frozen=True)
class Grant:
    kind: ResourceKind
    name: str
    role: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class Access:
    """Who gets what on an event type's own Pub/Sub resources (IAM members): ``publishers`` on its
    topics, ``subscribers`` on its subscriptions, and the Pub/Sub service agent what dead-lettering
    needs (publish on the dead-letter topic, subscribe on the delivery subscription). Empty locally."""

    publishers: tuple[str, ...] = ()
    subscribers: tuple[str, ...] = ()
    agent: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> Access:
        def split(v: str) -> tuple[str, ...]:
            return tuple(x.strip() for x in v.split(",") if x.strip())

        return cls(split(settings.gabo_publishers), split(settings.gabo_subscribers), settings.pubsub_agent.strip())

    def grants(self, n: Names, topics: Sequence[str], subscriptions: Sequence[str]) -> list[Grant]:
        """The grants on ``topics`` and ``subscriptions`` (all of them the type ``n``'s own)."""
        out = []
        # the primary's and the darkload shadow's dead-lettering alike
        streams = [Names(n.event_type, stream) for stream in STREAMS]
        dead_letters, deliveries = {x.dead_letter for x in streams}, {x.subscription for x in streams}
        for t in topics:
            members = self.publishers + ((self.agent,) if self.agent and t in dead_letters else ())
            if members:
                out.append(Grant("topic", t, PUBLISHER, members))
        for s in subscriptions:
            members = self.subscribers + ((self.agent,) if self.agent and s in deliveries else ())
            if members:
                out.append(Grant("subscription", s, SUBSCRIBER, members))
        return out


def grant(broker: DeliveryBroker, grants: Sequence[Grant]) -> dict[str, bool]:
    """Make ``grants`` (idempotent); returns ``grant:<resource>:<role>`` → whether it changed a policy."""
    return {f"grant:{g.name}:{g.role.rsplit('.', 1)[-1]}": broker.grant(g.kind, g.name, g.role, g.members)
            for g in grants}
