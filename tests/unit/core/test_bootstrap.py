"""The composition root: one broker in memory, adapters overridden by keyword, built once, on first use."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fakes.styx_launcher import FakeDatamon, FakeLauncher
from ferry.bootstrap import APPLY_HOOKS, PLATFORM_TOPICS, bootstrap, in_memory
from ferry.broker.base import Message
from ferry.clock import FixedClock
from ferry.config import Settings
from ferry.gabo.delivery.broker import MemoryBroker, SubscriptionSpec

T0 = datetime(2026, 11, 26, 12, tzinfo=UTC)


def test_in_memory_one_broker_publishes_and_is_gabos_broker() -> None:
    svc = in_memory(FixedClock(T0))
    assert isinstance(svc.broker, MemoryBroker) and svc.publisher is svc.broker
    assert set(PLATFORM_TOPICS) <= set(svc.broker.topics)
    svc.broker.ensure_topic("t")
    svc.broker.ensure_subscription(SubscriptionSpec("s", "t"))
    svc.publisher.publish("t", [Message(b"x")])
    assert [p.data for p in svc.broker.pull("s", 10)] == [b"x"]  # what is published is what Gabo pulls


def test_any_adapter_is_overridden_by_keyword_and_built_once() -> None:
    launcher, datamon = FakeLauncher(), FakeDatamon()
    svc = in_memory(FixedClock(T0), launcher=launcher, datamon=datamon)
    assert svc.launcher is launcher and svc.datamon is datamon
    assert svc.sink is svc.sink and svc.backlog_source is svc.backlog_source


def test_adapters_are_built_on_first_use_only() -> None:
    svc = bootstrap(Settings(store="memory", broker="memory", launcher="k8s"),  # type: ignore[arg-type]
                    clock=FixedClock(T0))
    assert svc.store is not None  # an unusable launcher setting fails when the launcher is used, not before
    with pytest.raises(ValueError, match="unknown launcher"):
        _ = svc.launcher


def test_apply_hooks_come_from_an_explicit_list() -> None:
    core = len(in_memory(apply_hooks=()).apply.hooks)  # the apply service's own reference checks
    assert len(in_memory().apply.hooks) == core + len(APPLY_HOOKS)


def test_tick_limits_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from ferry.styx.tick import TickLimits

    monkeypatch.setenv("FERRY_STYX_MAX_ACTIVE", "7")
    monkeypatch.setenv("FERRY_STYX_THREADS", "3")
    limits = TickLimits.from_settings(bootstrap(Settings(store="memory", broker="memory")).settings)
    assert (limits.max_active, limits.threads) == (7, 3)
