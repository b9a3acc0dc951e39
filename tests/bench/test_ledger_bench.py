"""The ingest ledger's cost, on the emulators, in one run (``make bench`` prints it):

- ingest with the ledger ÷ ingest without it (aim >= 0.9): the same IngestService, requests of 500
  events, alternating request by request which goes first (the shared machine's load drifts), after a
  warm-up round each; the ratio of summed times, and the median per-request ratio;
- Firestore writes per 1,000 events: ingest's ledger (2 per request and type: in flight, then
  accepted), delivery's records (1 per staging object, beside the run record), and closing's reads of
  the ledger for one period.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fakes.styx_launcher import FakeDatamon
from ferry.bootstrap import bootstrap
from ferry.config import Settings
from ferry.domain.manifests import EventType
from ferry.gabo import core
from ferry.gabo.delivery import WorkOrder
from ferry.gabo.ingest import IngestService
from ferry.gabo.ledger import Ledger
from ferry.gabo.service import Gabo

pytestmark = [pytest.mark.bench, pytest.mark.emulator]

N = int(os.environ.get("LEDGER_BENCH_EVENTS", "10000"))
BATCH = 500
SCHEMA = {"type": "object", "required": ["user_id", "ms"],
          "properties": {"user_id": {"type": "string"}, "ms": {"type": "integer", "minimum": 0}}}


@pytest.mark.timeout(1200)
def test_ledger_benchmarks(emulators: Any, project_id: str, tmp_path: Path) -> None:
    svc = bootstrap(Settings(project=project_id, store="firestore", broker="pubsub", sink=f"file://{tmp_path}/sink"),
                    datamon=FakeDatamon("gabo"))
    g = Gabo(svc)
    now = datetime.now(UTC)
    svc.apply.apply([EventType.model_validate({"metadata": {"name": n, "owner": "bench"},
                                               "spec": {"schema": SCHEMA, "partitioning": "PT1M",
                                                        "max_event_bytes": 8192}}) for n in ("lb", "lc")], now)

    def batches(tag: str, type_: str = "lb") -> list[list[Any]]:
        return [core.parse_body(b"\n".join(json.dumps({"type": type_, "id": f"{tag}-{b}-{i}",
                                                       "payload": {"user_id": "u", "ms": i}}).encode()
                                           for i in range(BATCH))) for b in range(N // BATCH)]

    with_ledger = IngestService(svc.manifests, svc.publisher, Ledger(svc.store))
    without = IngestService(svc.manifests, svc.publisher, None)

    def run(service: IngestService, tag: str, type_: str = "lb") -> float:
        work = batches(tag, type_)
        started = time.monotonic()
        for items in work:
            assert service.ingest(items, datetime.now(UTC)).accepted == BATCH
        return N / (time.monotonic() - started)

    # Request by request, alternating which goes first: the shared machine's load drifts within seconds,
    # so both sides see the same drift; the ratio is of the summed times.
    run(with_ledger, "warm-l")
    run(without, "warm-n")
    spent = {"ledger": 0.0, "none": 0.0}
    per_request: list[float] = []
    for i, (a, b) in enumerate(zip(batches("l"), batches("n"), strict=True)):
        pair = [("ledger", with_ledger, a), ("none", without, b)]
        took = {}
        for name, service, items in (pair if i % 2 == 0 else pair[::-1]):
            t = time.monotonic()
            assert service.ingest(items, datetime.now(UTC)).accepted == BATCH
            took[name] = time.monotonic() - t
        spent["ledger"] += took["ledger"]
        spent["none"] += took["none"]
        per_request.append(took["none"] / took["ledger"])
    figures: dict[str, Any] = {"ingest_with_ledger_eps": round(N / spent["ledger"]),
                               "ingest_without_eps": round(N / spent["none"]),
                               "ledger_ratio": round(spent["none"] / spent["ledger"], 2),
                               "median_request_ratio": round(statistics.median(per_request), 2)}

    # writes per 1,000 events: N events of another type through ingest, delivery and a close ---------
    before = svc.store.stats.snapshot()
    run(with_ledger, "count", "lc")
    ingest_writes = svc.store.stats.since(before)["writes"]
    before = svc.store.stats.snapshot()
    delivered = 0
    end = time.monotonic() + 600
    while time.monotonic() < end:
        rep = g.deliver(WorkOrder(event_type="lc", budget_s=30, until_drained=True))
        delivered += rep.written
        if rep.drained and delivered >= N:
            break
    delivery = svc.store.stats.since(before)
    before = svc.store.stats.snapshot()
    g.close(now + timedelta(minutes=30), "lc")
    closing = svc.store.stats.since(before)
    per_k = 1000 / N
    figures.update(ingest_ledger_writes_per_1000=round(ingest_writes * per_k, 2),
                   delivery_writes_per_1000=round(delivery["writes"] * 1000 / max(1, delivered), 2),
                   close_reads_per_1000=round(closing["reads"] * 1000 / max(1, delivered), 2),
                   delivered=delivered)
    print("\nLedger benchmark:", json.dumps(figures, indent=1))
    print(f"ingest with the ledger / without = {figures['ledger_ratio']} (aim >= 0.9); Firestore writes per "
          f"1,000 events: ingest {figures['ingest_ledger_writes_per_1000']}, delivery "
          f"{figures['delivery_writes_per_1000']}")
