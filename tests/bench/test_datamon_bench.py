"""Benchmark: one SLA evaluation of 10,000 endpoints against the Firestore emulator.

Half hourly, half daily, 30 days of history each, 1% late (their last three partitions missing).
History is represented the way the evaluator keeps it — a per-endpoint summary whose watermark says
"everything before this has landed" — so nothing of it is read. Every endpoint has a deadline in the
evaluation's window (its newest partition reaches its warn time), which is the worst case.
Aim: reads <= 2 x due partitions + endpoints with a deadline in the window; a second evaluation with
nothing new does no writes. Figures are printed (``make bench`` runs with -s).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from ferry.bootstrap import Services, bootstrap
from ferry.clock import FixedClock
from ferry.config import Settings
from ferry.datamon import domain, evaluation
from ferry.datamon.repository import ENDPOINTS, META, PARTITIONS, partition_id
from ferry.store.base import Op

pytestmark = [pytest.mark.bench, pytest.mark.emulator]

N = int(os.environ.get("DATAMON_BENCH_ENDPOINTS", "10000"))
NOW = datetime(2026, 11, 26, 12, 5, tzinfo=UTC)


def _seed(svc: Services) -> tuple[int, int]:
    ops: list[Op] = [Op.set(META, "evaluator", {"synced_until": NOW})]
    late = 0
    for i in range(N):
        hourly = i % 2 == 0
        is_late = i % 100 == 7
        late += is_late
        policy = domain.Policy(
            f"ep-{i:05d}", f"team-{i % 50:02d}", "hourly" if hourly else "daily", "UTC",
            NOW - timedelta(days=30),
            timedelta(minutes=5) if hourly else timedelta(hours=12),
            timedelta(hours=2) if hourly else timedelta(hours=14), "page" if i % 3 else "ticket")
        cadence = policy.cadence
        newest = cadence.prev(cadence.floor(NOW))  # the newest ended partition: 11:00 / 2026-11-25
        missing = [newest - k * (newest - cadence.prev(newest)) for k in range(3)] if is_late else []
        watermark = min(missing) if missing else newest
        c = domain.clocks(policy, watermark)
        summary = domain.Summary(watermark, next_check=c.warn_at or c.late_at, state="ok",
                                 strip=[{"partition": cadence.format(cadence.prev(watermark)), "state": "ok"}])
        doc = {**policy.to_doc(), **summary.to_doc(), "registered_at": NOW - timedelta(days=30),
               "upstream_all": [],
               "latest": {"partition": cadence.format(cadence.prev(watermark)), "start": cadence.prev(watermark),
                          "end": watermark, "landed_at": watermark + timedelta(minutes=1)}}
        ops.append(Op.set(ENDPOINTS, policy.name, doc))
        if not is_late:
            p = cadence.format(newest)
            ops.append(Op.set(PARTITIONS, partition_id(policy.name, p), {
                "endpoint": policy.name, "partition": p, "start": newest, "end": cadence.next(newest),
                "landed_at": cadence.next(newest) + timedelta(minutes=1), "landings": 1}))
    svc.store.write(ops)
    return len(ops), late


def test_evaluate_10k_endpoints(emulators, project_id: str) -> None:  # type: ignore[no-untyped-def]
    from ferry.store.firestore import FirestoreStore

    svc = bootstrap(Settings(project=project_id, store="firestore", broker="memory"),
                    store=FirestoreStore(project_id), clock=FixedClock(NOW))
    t0 = time.monotonic()
    seeded, late = _seed(svc)
    seed_s = time.monotonic() - t0

    t0 = time.monotonic()
    first = evaluation.evaluate(svc.store, svc.publisher, now=NOW)
    first_s = time.monotonic() - t0
    t0 = time.monotonic()
    second = evaluation.evaluate(svc.store, svc.publisher, now=NOW + timedelta(minutes=1))
    second_s = time.monotonic() - t0

    due_partitions = first["partitions"]
    budget = 2 * due_partitions + first["endpoints"]
    print(f"\n[datamon bench] {N} endpoints (hourly+daily, 30 days history, {late} late); "
          f"seeded {seeded} docs in {seed_s:.1f}s")
    print(f"[datamon bench] evaluation 1: {first_s:.2f}s wall, {first['endpoints']} endpoints due, "
          f"{due_partitions} partitions, {first['reads']} reads, {first['writes']} writes, "
          f"notifications {first['notifications']}; reads/budget = {first['reads'] / budget:.2f} "
          f"(budget 2 x due partitions + endpoints = {budget})")
    print(f"[datamon bench] evaluation 2 (nothing new): {second_s:.2f}s wall, {second['endpoints']} endpoints "
          f"(open ones), {second['reads']} reads, {second['writes']} writes")
    assert first["endpoints"] == N
    assert first["notifications"]["trigger"] == late  # one incident per late endpoint, not one per partition
    assert first["reads"] <= budget
    assert second["writes"] == 0 and second["notifications"] == {"trigger": 0, "escalate": 0, "resolve": 0,
                                                                  "renotify": 0}
    assert second["reads"] <= 2 * second["partitions"] + second["endpoints"] + 4
