"""Gabo takes what it uses: its facade runs on a store, a publisher and broker, a sink, a backlog source,
Datamon's port, a clock and its access — fakes and in-memory adapters of those, and nothing of the
composition root. Ingest, delivery and the close of one period, end to end, on them alone."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from fakes.memory_sink import MemorySink
from ferry.clock import FixedClock
from ferry.domain.manifests import EventType
from ferry.gabo.closing.service import CLOSE_ORDERS_TOPIC
from ferry.gabo.delivery.broker import MemoryBroker
from ferry.gabo.delivery.service import WorkOrder
from ferry.gabo.provisioning.access import Access
from ferry.gabo.provisioning.provision import provision
from ferry.gabo.scaling.backlog import PullStatsBacklog
from ferry.gabo.service import Gabo, decode_close_order
from ferry.gabo.state import GaboState
from ferry.store.manifests import ManifestRepository
from ferry.store.memory import MemoryStore

T0 = datetime(2026, 11, 26, 14, 5, 10, tzinfo=UTC)


class Lands:
    """Datamon's port, recording what Gabo lands."""

    def __init__(self) -> None:
        self.landed_partitions: list[tuple[str, str, int | None]] = []

    def land(self, endpoint: str, partition: str, **kwargs: Any) -> dict[str, Any]:
        self.landed_partitions.append((endpoint, partition, kwargs.get("records")))
        return {}

    def landed(self, endpoint: str, partitions: Any) -> set[str]:
        return set()


def test_gabo_ingests_delivers_and_closes_on_its_own_fakes() -> None:
    clock, store, lands = FixedClock(T0), MemoryStore(), Lands()
    broker = MemoryBroker(clock)  # the in-memory broker publishes too
    broker.ensure_topic(CLOSE_ORDERS_TOPIC)
    et = EventType.model_validate({"metadata": {"name": "play", "owner": "team-a"},
                                   "spec": {"schema": {"type": "object"}, "partitioning": "PT1M",
                                            "close_after": "PT10S"}})
    store.write([ManifestRepository.op_for(ManifestRepository.record_for(et, None, T0))])
    access = Access((), (), "")
    provision(broker, et, access)
    g = Gabo(store=store, publisher=broker, broker=broker, sink=MemorySink(), backlog_source=PullStatsBacklog(
        GaboState(store)), datamon=lands, clock=clock, project="ferry-test", access=access)

    events = [{"type": "play", "id": f"e{i}", "payload": {"n": i}} for i in range(5)]
    assert g.ingest(b"\n".join(json.dumps(e).encode() for e in events), T0).accepted == 5
    assert g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5)).written == 5
    clock.set(T0 + timedelta(minutes=2))
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))  # drained after the end: the watermark
    clock.set(T0 + timedelta(minutes=2, seconds=10))  # the drain has settled
    g.close(clock.now(), "play")
    for m in broker.topics[CLOSE_ORDERS_TOPIC]:  # what the close-shard function runs
        g.close_shard(decode_close_order(m.data), clock.now())
    # the period of the five events, and the empty one after it (every period lands, with 0 records)
    assert lands.landed_partitions == [("events.play", "2026-11-26T14:05", 5), ("events.play", "2026-11-26T14:06", 0)]
