"""Gabo's documents per collection on the Firestore emulator (issue 23, item 7): a soak of simulated minutes
— what the scheduler does each minute (scale, one delivery run per type, the scheduled close with its
cleanup) for an idle PT1M type and a busy one (6 requests of 10 events a minute) — then the cleanup once
the retention has passed. Prints the counts, the per-minute growth per type and the steady state per type
(growth × retention) that the cleanup holds it to. ``FERRY_SOAK_MINUTES`` sets the soak (default 30)."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.memory_sink import MemorySink
from tests.unit.gabo.test_gabo_accepted_delivered import Lands

from ferry.bootstrap import bootstrap
from ferry.clock import FixedClock
from ferry.config import Settings
from ferry.domain.manifests import EventType
from ferry.gabo import retention
from ferry.gabo.delivery.broker import MemoryBroker
from ferry.gabo.delivery.service import WorkOrder

pytestmark = pytest.mark.emulator

MINUTES = int(os.environ.get("FERRY_SOAK_MINUTES", "30"))
T0 = datetime(2026, 11, 26, 14, 0, 0, tzinfo=UTC)
COLLECTIONS = ("gabo_runs", "gabo_scaling", "gabo_closing", "gabo_close_shards", "gabo_closed", "gabo_close_waits",
               "gabo_finishers", "gabo_ledger", "gabo_delivered", "gabo_cursors", "gabo_deleted_types")
# how long each collection's documents are kept after the cleanup (retention.py)
KEPT = {"gabo_runs": retention.RUN_RETENTION, "gabo_scaling": retention.SCALING_RETENTION,
        "gabo_closing": retention.CLOSING_RETENTION, "gabo_close_shards": retention.CLOSING_RETENTION,
        "gabo_close_waits": retention.CLOSING_RETENTION, "gabo_finishers": retention.CLOSING_RETENTION,
        "gabo_ledger": retention.CLOSING_RETENTION, "gabo_delivered": retention.CLOSING_RETENTION,
        "gabo_closed": retention.CLOSED_RETENTION}


def per_type(store: Any) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for c in COLLECTIONS:
        for doc_id, doc in store.query(c):
            name = doc.get("event_type") or doc_id.split("~")[0]
            out.setdefault(name, {}).setdefault(c, 0)
            out[name][c] += 1
    return out


@pytest.mark.unindexed_queries  # counting whole collections; the cleanup's own queries are indexed
def test_documents_per_collection_after_a_soak_and_after_the_cleanup(emulators: Any, project_id: str,
                                                                     tmp_path: Path) -> None:
    from ferry.store.firestore import FirestoreStore

    clock = FixedClock(T0)
    broker = MemoryBroker(clock)
    store = FirestoreStore(project_id)
    svc = bootstrap(Settings(store="memory", broker="memory", sink="file:///unused"), store=store, clock=clock,
                    broker=broker, sink=MemorySink(), datamon=Lands())
    g = svc.gabo
    types = [EventType.model_validate({"metadata": {"name": n, "owner": "team-a"},
                                       "spec": {"schema": {"type": "object"}, "partitioning": "PT1M",
                                                "close_after": "PT10S"}}) for n in ("idle", "busy")]
    svc.apply.apply(types, T0)  # type: ignore[arg-type]
    started = time.monotonic()
    for m in range(MINUTES):
        base = T0 + timedelta(minutes=m)
        for k in range(6):
            at = base + timedelta(seconds=10 * k + 1)
            g.ingest(json.dumps([{"type": "busy", "id": f"e{m}-{k}-{i}", "payload": {"n": i}}
                                 for i in range(10)]).encode(), at)
        clock.set(base + timedelta(seconds=55))
        g.scale(clock.now(), publish=False)
        for et in types:
            g.deliver(WorkOrder(event_type=et.name, budget_s=1, until_drained=True))
        clock.set(base + timedelta(seconds=59))
        g.close(clock.now(), inline=True)
        g.cleanup(clock.now())  # what the scheduled close runs after deciding
    soak_s = time.monotonic() - started
    soaked = per_type(store)
    end = T0 + timedelta(minutes=MINUTES)  # the last periods close too (what is not closed stays owed)
    clock.set(end + timedelta(seconds=20))
    for et in types:
        g.deliver(WorkOrder(event_type=et.name, budget_s=1, until_drained=True))
    clock.set(end + timedelta(seconds=40))
    g.close(clock.now(), inline=True)

    def cleaned(at: datetime) -> dict[str, dict[str, int]]:
        for _ in range(20):  # bounded per run: until a run deletes nothing
            out = g.cleanup(at)
            if not out["deleted"] and not out["abandoned_runs"]:
                break
        return per_type(store)

    day = cleaned(T0 + timedelta(minutes=MINUTES) + timedelta(days=1, minutes=5))
    week = cleaned(T0 + timedelta(minutes=MINUTES) + timedelta(days=7, minutes=5))
    print(f"\nsoak: {MINUTES} simulated minutes on the Firestore emulator in {soak_s:.0f} s (2 PT1M types)")
    for name in ("idle", "busy"):
        rate = {c: n / MINUTES for c, n in soaked.get(name, {}).items()}
        steady = {c: round(r * KEPT[c].total_seconds() / 60) for c, r in rate.items() if c in KEPT}
        print(f"  {name}: after the soak {soaked.get(name)}")
        print(f"  {name}: per minute {({c: round(r, 2) for c, r in rate.items()})}; per day without cleanup "
              f"{sum(r for c, r in rate.items() if c in KEPT) * 1440:.0f} documents")
        print(f"  {name}: after the cleanup +1 day {day.get(name)}, +7 days {week.get(name)}")
        print(f"  {name}: steady state with the cleanup {steady} = {sum(steady.values())} documents")
    for name in ("idle", "busy"):
        assert set(week.get(name, {})) <= {"gabo_cursors"}, week
        left = day.get(name, {})
        assert not {"gabo_closing", "gabo_close_shards", "gabo_ledger", "gabo_delivered"} & set(left), left
