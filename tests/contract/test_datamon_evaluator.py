"""Datamon against the Firestore emulator: landing, evaluation, and two evaluators at once."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ferry.bootstrap import Services, bootstrap
from ferry.clock import FixedClock
from ferry.config import Settings
from ferry.datamon import evaluation, landing, views
from ferry.domain.manifests import KINDS
from ferry.errors import ValidationError
from ferry.gabo.delivery.broker import MemoryBroker

pytestmark = pytest.mark.emulator
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def services(project_id: str) -> Services:
    from ferry.store.firestore import FirestoreStore

    return bootstrap(Settings(project=project_id, store="firestore", broker="memory"),
                     store=FirestoreStore(project_id), clock=FixedClock(T0))


def sent(svc: Services) -> list[dict[str, Any]]:
    pub = svc.broker
    assert isinstance(pub, MemoryBroker)
    return [json.loads(m.data) for m in pub.take("ferry-alerts")]


@pytest.fixture
def svc(emulators, project_id: str) -> Services:  # type: ignore[no-untyped-def]
    s = services(project_id)
    docs = [{"kind": "Endpoint", "metadata": {"name": f"e{i}", "owner": "team-a"},
             "spec": {"partitioning": "hourly", "start": "2026-11-26T06:00:00Z", "sla": {"error_after": "PT1H"}}}
            for i in range(5)]
    # registered at 06:00: the partitions late at 12:00 are not history
    s.apply.apply([KINDS["Endpoint"].model_validate(d) for d in docs], T0 - timedelta(hours=6))  # type: ignore[misc]
    return s


def test_land_is_idempotent_on_firestore(svc: Services) -> None:
    first = landing.land(svc.store, "e0", "2026-11-26T06", now=T0, records=1)
    again = landing.land(svc.store, "e0", "2026-11-26T06", now=T0 + timedelta(minutes=5), records=2)
    assert again["relanded"] and again["landed_at"] == first["landed_at"] and again["landings"] == 2
    with pytest.raises(ValidationError):
        landing.land(svc.store, "e0", "2026-11-26T05", now=T0)
    assert landing.landed(svc.store, "e0", ["2026-11-26T05", "2026-11-26T06"]) == {"2026-11-26T06"}


def test_lifecycle_and_quiet_second_evaluation(svc: Services) -> None:
    r = evaluation.evaluate(svc.store, svc.publisher, now=T0)
    assert r["notifications"]["trigger"] == 5  # one incident per endpoint: 06..10 late at 12:00 (11 pending)
    incidents = views.alerts(svc.store)["items"]
    assert len(incidents) == 5 and {i["count"] for i in incidents} == {5} and len(sent(svc)) == 5
    landing.land(svc.store, "e3", "2026-11-26T08", now=T0)
    evaluation.evaluate(svc.store, svc.publisher, now=T0 + timedelta(minutes=1))
    assert sent(svc) == []  # the landing updated the incident without a notification
    assert views.alerts(svc.store, endpoint="e3")["items"][0]["count"] == 4
    for h in (6, 7, 9, 10):
        landing.land(svc.store, "e3", f"2026-11-26T{h:02d}", now=T0)
    evaluation.evaluate(svc.store, svc.publisher, now=T0 + timedelta(minutes=1, seconds=30))
    resolves = [e for e in sent(svc) if e["event_action"] == "resolve"]
    assert [e["dedup_key"] for e in resolves] == ["e3~1"]
    before = svc.store.stats.snapshot()
    r = evaluation.evaluate(svc.store, svc.publisher, now=T0 + timedelta(minutes=2))
    assert sent(svc) == [] and svc.store.stats.since(before)["writes"] == 0 and r["writes"] == 0
    view = views.status(svc.store, now=T0 + timedelta(minutes=2))
    assert sorted(row["state"] for row in view["endpoints"]) == ["late"] * 4 + ["pending"]  # e3: 11 not due yet


def test_two_evaluators_at_once_notify_once(svc: Services, project_id: str) -> None:
    evaluation.evaluate(svc.store, svc.publisher, now=T0 - timedelta(hours=5))  # registers the endpoints, nothing due yet
    sent(svc)
    others = [services(project_id) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def run(s: Services) -> None:
        try:
            barrier.wait()
            results.append(evaluation.evaluate(s.store, s.publisher, now=T0))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    keys = [e["dedup_key"] for s in others for e in sent(s) if e["event_action"] == "trigger"]
    assert len(keys) == 5 and len(set(keys)) == 5, f"duplicates: {len(keys) - len(set(keys))}"
    # A third evaluation afterwards sends nothing either.
    assert evaluation.evaluate(svc.store, svc.publisher, now=T0 + timedelta(minutes=1))["notifications"]["trigger"] == 0
