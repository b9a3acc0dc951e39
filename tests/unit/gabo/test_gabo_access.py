"""Access on an event type's own Pub/Sub resources: granted by provisioning at apply and again by the
reconcile when it recreates them — never on another topic (the finding: ingest and the Gabo worker held
project-wide pubsub.publisher, so they could publish forged landings to ferry-partitions)."""

from __future__ import annotations

from pathlib import Path

from ferry.bootstrap import bootstrap
from ferry.clock import FixedClock
from ferry.config import Settings
from ferry.domain.manifests import EventType
from ferry.gabo.delivery.broker import MemoryBroker
from ferry.gabo.provisioning.access import PUBLISHER, SUBSCRIBER, Access
from ferry.store.memory import MemoryStore

from .test_gabo_service import T0

INGEST, WORKER, API = (f"serviceAccount:{a}@p.iam.gserviceaccount.com"
                       for a in ("ferry-gabo-ingest", "ferry-gabo-worker", "ferry-api"))
AGENT = "serviceAccount:service-1@gcp-sa-pubsub.iam.gserviceaccount.com"


def _services(tmp_path: Path, broker: MemoryBroker, **settings: str):  # type: ignore[no-untyped-def]
    return bootstrap(Settings(store="memory", broker="memory", sink=f"file://{tmp_path}/sink", **settings),
                     store=MemoryStore(), clock=FixedClock(T0), broker=broker)


def _type(name: str = "clicks", darkload: float = 0.0) -> EventType:
    return EventType.model_validate({"metadata": {"name": name, "owner": "team-a"},
                                     "spec": {"partitioning": "PT1M", "darkload": darkload}})


def test_apply_grants_the_declared_accounts_on_the_types_own_resources_only(tmp_path: Path) -> None:
    broker = MemoryBroker()
    broker.ensure_topic("ferry-partitions")
    svc = _services(tmp_path, broker, gabo_publishers=f"{INGEST},{WORKER},{API}", gabo_subscribers=f"{WORKER},{API}",
                    pubsub_agent=AGENT)
    svc.apply.apply([_type(darkload=0.5)], T0)
    topics = {name: roles for (kind, name), roles in broker.policies.items() if kind == "topic"}
    subs = {name: roles for (kind, name), roles in broker.policies.items() if kind == "subscription"}
    assert sorted(topics) == ["gabo-clicks", "gabo-clicks-dead-letter", "gabo-clicks-quarantine", "gabo-clicks-shadow",
                              "gabo-clicks-shadow-dead-letter"]
    assert all(roles == {PUBLISHER: {INGEST, WORKER, API} | ({AGENT} if t.endswith("dead-letter") else set())}
               for t, roles in topics.items()), topics
    assert subs["gabo-clicks-delivery"] == {SUBSCRIBER: {WORKER, API, AGENT}}  # the agent dead-letters from it
    assert subs["gabo-clicks-shadow-delivery"] == {SUBSCRIBER: {WORKER, API, AGENT}}  # the darkload shadow's too
    assert subs["gabo-clicks-quarantine-hold"] == {SUBSCRIBER: {WORKER, API}}
    assert ("topic", "ferry-partitions") not in broker.policies  # no landing topic, no other type's
    assert not [k for k in broker.policies if "clicks" not in k[1]]


def test_grants_are_idempotent_and_keep_what_is_there(tmp_path: Path) -> None:
    broker = MemoryBroker()
    svc = _services(tmp_path, broker, gabo_publishers=INGEST)
    svc.apply.apply([_type()], T0)
    broker.policies[("topic", "gabo-clicks")][PUBLISHER].add("user:owner@example.com")  # granted by hand
    from ferry.gabo.provisioning.provision import provision

    again = provision(broker, _type(), Access((INGEST,)))
    assert not [k for k, v in again.items() if v]  # nothing created, no policy changed
    assert broker.policies[("topic", "gabo-clicks")][PUBLISHER] == {INGEST, "user:owner@example.com"}


def test_locally_no_grant_is_made(tmp_path: Path) -> None:
    """The emulator has no IAM (its Get/SetIamPolicy answer UNIMPLEMENTED): without declared accounts no
    grant is attempted."""
    broker = MemoryBroker()
    _services(tmp_path, broker).apply.apply([_type()], T0)
    assert broker.policies == {}


def test_the_reconcile_grants_again_on_what_it_recreated(tmp_path: Path) -> None:
    broker = MemoryBroker()
    svc = _services(tmp_path, broker, gabo_publishers=INGEST, gabo_subscribers=WORKER, pubsub_agent=AGENT)
    svc.apply.apply([_type(), _type("views")], T0)
    g = svc.gabo
    g.reconcile(T0)
    del broker.topics["gabo-clicks"], broker.subs["gabo-clicks-delivery"]
    del broker.policies[("topic", "gabo-clicks")], broker.policies[("subscription", "gabo-clicks-delivery")]
    before = {k: {r: set(m) for r, m in v.items()} for k, v in broker.policies.items()}
    out = g.reconcile(T0)
    assert (out["topics"], out["subscriptions"]) == (["gabo-clicks"], ["gabo-clicks-delivery"])
    assert broker.policies[("topic", "gabo-clicks")] == {PUBLISHER: {INGEST}}
    assert broker.policies[("subscription", "gabo-clicks-delivery")] == {SUBSCRIBER: {WORKER, AGENT}}
    assert {k: v for k, v in broker.policies.items() if k in before} == before  # the rest untouched
