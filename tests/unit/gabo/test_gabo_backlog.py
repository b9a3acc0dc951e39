"""Gabo's backlog sources: the pure parts (metric watermark, filter) and the choice from settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ferry.bootstrap import bootstrap
from ferry.clock import FixedClock
from ferry.config import Settings
from ferry.domain import periods
from ferry.errors import InfraError
from ferry.gabo.closing.decide import PUBLISH_SLACK, closable, metric_watermark
from ferry.gabo.scaling.backlog import CloudMonitoringBacklog, PullStatsBacklog, metric_filter, open_backlog
from ferry.gabo.state import GaboState
from ferry.store.memory import MemoryStore

T = datetime(2026, 11, 26, 14, 8, 30, tzinfo=UTC)


def test_metric_watermark_is_sample_time_minus_age_minus_publish_slack() -> None:
    assert metric_watermark(0, T) == T - PUBLISH_SLACK          # nothing unacked
    assert metric_watermark(150, T) == T - timedelta(seconds=150) - PUBLISH_SLACK
    assert metric_watermark(150, T, timedelta(0)) == T - timedelta(seconds=150)
    assert metric_watermark(-3, T, timedelta(0)) == T                 # a negative reading is no younger


def test_closable_with_a_metric_watermark_needs_the_oldest_unacked_younger_than_the_end() -> None:
    cadence = periods.partitioning("PT1M")
    start = datetime(2026, 11, 26, 14, 5, tzinfo=UTC)   # ends 14:06
    now = datetime(2026, 11, 26, 14, 9, tzinfo=UTC)
    grace = timedelta(seconds=10)
    # sampled 14:08:30: oldest unacked is 90 s old → published 14:07:00 → minus 60 s slack = 14:06:00 ≥ end
    assert closable(start, cadence, grace, now, metric_watermark(90, T)) is not None
    assert closable(start, cadence, grace, now, metric_watermark(91, T)) is None
    # the grace rule still holds whatever the metric says
    assert closable(start, cadence, grace, datetime(2026, 11, 26, 14, 6, 5, tzinfo=UTC),
                         metric_watermark(0, T)) is None


def test_metric_filter_names_metric_resource_and_subscription() -> None:
    assert metric_filter("m/x", "gabo-a-delivery") == (
        'metric.type = "m/x" AND resource.type = "pubsub_subscription" '
        'AND resource.labels.subscription_id = "gabo-a-delivery"')


def test_the_source_is_chosen_from_settings_in_one_place() -> None:
    state = GaboState(MemoryStore())
    assert isinstance(open_backlog("pull", state, "p"), PullStatsBacklog)
    src = open_backlog("monitoring", state, "p")
    assert isinstance(src, CloudMonitoringBacklog) and src.project == "p"
    with pytest.raises(InfraError, match="FERRY_BACKLOG"):
        open_backlog("metrics", state, "p")
    for kind, cls in (("pull", PullStatsBacklog), ("monitoring", CloudMonitoringBacklog)):
        svc = bootstrap(Settings(store="memory", broker="memory", backlog=kind), clock=FixedClock(T))
        assert isinstance(svc.gabo.backlog_source, cls)


def test_default_is_pull(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FERRY_BACKLOG", raising=False)
    assert Settings().backlog == "pull"
    monkeypatch.setenv("FERRY_BACKLOG", "monitoring")
    assert Settings().backlog == "monitoring"


def test_pull_stats_backlog_reads_the_latest_runs() -> None:
    state = GaboState(MemoryStore())
    src = PullStatsBacklog(state)
    assert src.backlog("a", T) == src.backlog("a", T, 2)
    assert not src.backlog("a", T).drained and src.backlog("a", T).sampled_at is None
    state.save_run("r1", {"event_type": "a", "updated_at": T, "finished_at": T - timedelta(seconds=5),
                          "saturated": True})
    state.save_run("r2", {"event_type": "a", "updated_at": T, "finished_at": T, "drained_at": T})
    one, two = src.backlog("a", T, 1), src.backlog("a", T, 2)
    assert (one.drained, one.saturated, one.sampled_at, one.source) == (True, False, T, "pull")
    assert (two.drained, two.saturated) == (False, True)
    assert (one.messages, one.oldest_age_s) == (None, None)   # pull statistics do not count messages
