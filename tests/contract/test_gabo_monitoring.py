"""Gabo's Cloud Monitoring backlog source against a local gRPC fake of ``MetricService.ListTimeSeries``.

The real ``monitoring_v3.MetricServiceClient`` sends its requests over gRPC to ``tests/fakes/monitoring.py``:
the tests check the filter and interval it sends, that the scaler's decision follows the metrics, and
that closing refuses a period while a message older than its end is unacked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.fakes import monitoring

from fakes.styx_launcher import FakeDatamon
from ferry.bootstrap import bootstrap
from ferry.clock import FixedClock
from ferry.config import Settings
from ferry.domain.manifests import EventType
from ferry.gabo.delivery.broker import MemoryBroker
from ferry.gabo.delivery.service import WorkOrder
from ferry.gabo.delivery.sink import LocalSink
from ferry.gabo.scaling.backlog import OLDEST_AGE, UNDELIVERED, CloudMonitoringBacklog
from ferry.gabo.service import Gabo
from ferry.store.memory import MemoryStore

T0 = datetime(2026, 11, 26, 14, 5, 10, tzinfo=UTC)
SUB = "gabo-play-delivery"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Gabo, MemoryBroker, monitoring.FakeMetricService, FixedClock]]:
    clock = FixedClock(T0)
    broker = MemoryBroker(clock)
    with monitoring.serve() as (fake, client):
        svc = bootstrap(Settings(store="memory", broker="memory", sink=f"file://{tmp_path}/sink", project="ferry-test",
                                 backlog="monitoring"), store=MemoryStore(), clock=clock, broker=broker,
                        sink=LocalSink(tmp_path / "sink"), datamon=FakeDatamon("gabo"),
                        backlog_source=CloudMonitoringBacklog("ferry-test", client))
        g = svc.gabo
        et = EventType.model_validate({"metadata": {"name": "play", "owner": "team-a"},
                                       "spec": {"schema": {"type": "object"}, "partitioning": "PT1M",
                                                "close_after": "PT10S", "min_workers": 1, "max_workers": 8}})
        svc.apply.apply([et], T0)
        broker.ensure_topic("gabo-work-orders")
        yield g, broker, fake, clock


def metrics(fake: monitoring.FakeMetricService, at: datetime, undelivered: int, age_s: int) -> None:
    fake.add(UNDELIVERED, SUB, at, undelivered)
    fake.add(OLDEST_AGE, SUB, at, age_s)


def test_requests_name_the_metric_the_subscription_and_the_last_five_minutes(env: Any) -> None:
    g, _, fake, clock = env
    now = clock.now()
    metrics(fake, now - timedelta(minutes=3), 900, 400)
    metrics(fake, now - timedelta(minutes=1), 1200, 460)       # the latest point wins
    metrics(fake, now - timedelta(minutes=7), 5, 1)            # outside the window
    fake.add(UNDELIVERED, "gabo-other-delivery", now - timedelta(seconds=30), 7)  # another subscription
    b = g.backlog_source.backlog("play", now)
    assert (b.source, b.messages, b.oldest_age_s, b.sampled_at) == ("monitoring", 1200, 460.0,
                                                                     now - timedelta(minutes=1))
    assert not b.drained
    sent = {r.filter.split('"')[1]: r for r in fake.requests}
    assert set(sent) == {UNDELIVERED, OLDEST_AGE}
    for metric, r in sent.items():
        assert r.name == "projects/ferry-test"
        assert r.filter == (f'metric.type = "{metric}" AND resource.type = "pubsub_subscription" '
                            f'AND resource.labels.subscription_id = "{SUB}"')
        assert r.interval.end_time == now and r.interval.start_time == now - timedelta(minutes=5)
        assert r.view == r.TimeSeriesView.FULL


def test_scaler_follows_the_metrics_up_and_down(env: Any) -> None:
    g, broker, fake, clock = env
    # a worker's run reports its rate: 100 events/s
    g.state.save_run("r1", {"event_type": "play", "updated_at": T0, "finished_at": T0, "rate": 100.0})
    clock.set(T0 + timedelta(minutes=1))
    metrics(fake, clock.now() - timedelta(seconds=40), 20_000, 300)   # 20k waiting; 100/s × 50 s per worker
    up = g.scale(clock.now(), budget_s=50)[0]
    assert up["workers"] == 4 and "backlog 20000" in up["reason"]
    assert up["inputs"]["source"] == "monitoring" and up["inputs"]["undelivered"] == 20_000
    clock.set(T0 + timedelta(minutes=2))
    metrics(fake, clock.now() - timedelta(seconds=40), 60_000, 900)   # the backlog grows
    more = g.scale(clock.now(), budget_s=50)[0]
    assert more["workers"] == 8
    clock.set(T0 + timedelta(minutes=3))
    metrics(fake, clock.now() - timedelta(seconds=40), 0, 0)          # drained
    down = g.scale(clock.now(), budget_s=50)[0]
    assert down["workers"] == 1 and "drained" in down["reason"]
    orders = [json.loads(m.data) for m in broker.topics["gabo-work-orders"]]
    assert len(orders) == 4 + 8 + 1 and {o["event_type"] for o in orders} == {"play"}


def test_scaler_without_a_rate_doubles_on_lag_and_steps_down(env: Any) -> None:
    g, _, fake, clock = env
    metrics(fake, clock.now() - timedelta(seconds=30), 5000, 600)     # lag 600 s over the 100 s target
    assert g.scale(clock.now(), budget_s=50)[0]["workers"] == 2
    clock.set(T0 + timedelta(minutes=1))
    metrics(fake, clock.now() - timedelta(seconds=30), 30, 10)        # lag well under the target
    assert g.scale(clock.now(), budget_s=50)[0]["workers"] == 1


def test_closing_refuses_while_a_message_older_than_the_end_is_unacked(env: Any) -> None:
    g, broker, fake, clock = env
    g.ingest(b"\n".join(json.dumps({"type": "play", "id": f"e{i}", "payload": {}}).encode() for i in range(20)), T0)
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    # the workers drained the subscription — the pull statistics alone would close 14:05 now
    clock.set(datetime(2026, 11, 26, 14, 8, tzinfo=UTC))
    assert g.state.recent_runs("play", T0 - timedelta(hours=1))[-1].get("drained_at")
    # Cloud Monitoring: at 14:07:40 a message published 150 s before (14:05:10) was still unacked
    metrics(fake, datetime(2026, 11, 26, 14, 7, 40, tzinfo=UTC), 1, 150)
    rep = g.close(clock.now(), inline=True)[0]
    assert rep.closed == [] and "2026-11-26T14:05" in rep.waiting
    assert rep.watermark == "2026-11-26T14:04:10.000000Z"   # 14:07:40 − 150 s − 60 s publish slack
    # the next point: nothing unacked at 14:08:30 → every event received before 14:07:30 is written
    clock.set(datetime(2026, 11, 26, 14, 9, tzinfo=UTC))
    metrics(fake, datetime(2026, 11, 26, 14, 8, 30, tzinfo=UTC), 0, 0)
    rep = g.close(clock.now(), inline=True)[0]  # shards merged here
    closed = {c.partition: c for c in rep.closed}
    assert closed["2026-11-26T14:05"].events == 20
    assert closed["2026-11-26T14:06"].events == 0            # ended 14:07, before the watermark
    assert "2026-11-26T14:07" in rep.waiting                  # ends 14:08, after it
    assert rep.watermark == "2026-11-26T14:07:30.000000Z"


def test_no_metric_point_or_no_permission_means_wait(env: Any) -> None:
    g, _, fake, clock = env
    g.ingest(json.dumps({"type": "play", "id": "e1", "payload": {}}).encode(), T0)
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    clock.set(T0 + timedelta(minutes=5))
    rep = g.close(clock.now())[0]        # no point in the window: no evidence, nothing closes
    assert rep.closed == [] and rep.watermark is None
    fake.deny = True
    metrics(fake, clock.now() - timedelta(seconds=30), 0, 0)
    rep = g.close(clock.now())[0]
    assert rep.closed == [] and rep.watermark is None
    # the scaler still decides, on what the workers report, and records that the metric was unavailable
    d = g.scale(clock.now(), budget_s=50)[0]
    assert d["inputs"]["source"] == "monitoring-unavailable" and d["workers"] >= 1


def test_the_darkload_shadow_reads_its_own_subscription(env: Any) -> None:
    """The shadow's watermark and backlog come from gabo-<type>-shadow-delivery, never the primary's."""
    g, _, fake, clock = env
    now = clock.now()
    metrics(fake, now - timedelta(minutes=1), 50, 600)  # the primary lags
    fake.add(UNDELIVERED, "gabo-play-shadow-delivery", now - timedelta(minutes=1), 0)
    fake.add(OLDEST_AGE, "gabo-play-shadow-delivery", now - timedelta(minutes=1), 0)
    shadow = g.backlog_source.for_stream("darkload")
    b = shadow.backlog("play", now)
    assert (b.messages, b.oldest_age_s, b.drained) == (0, 0.0, True)
    assert shadow.watermark("play", now) == now - timedelta(minutes=2)  # the sample time less the publish slack
    assert g.backlog_source.watermark("play", now) == now - timedelta(minutes=12)  # the primary's own
    assert {r.filter.rsplit('"', 2)[1] for r in fake.requests} == {SUB, "gabo-play-shadow-delivery"}
