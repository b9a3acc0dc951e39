"""The reconcile (self-healing Pub/Sub) and fair delivery scheduling, on fakes."""

from __future__ import annotations

import json
from typing import Any

from ferry.domain.manifests import EventType

from .test_gabo_service import T0, env  # noqa: F401  (env: the fixture)

__all__ = ["env"]


def test_reconcile_recreates_what_is_missing_and_only_that(env: Any) -> None:
    svc, g, broker, _, clock = env
    first = g.reconcile(clock.now())  # infra/'s topics and pull subscriptions appear once
    assert "gabo-work-orders" in first["topics"] and "ferry-alerts" in first["topics"]
    assert g.reconcile(clock.now()) == {"topics": [], "subscriptions": [], "expired": [], "notes": []}
    del broker.topics["gabo-play"], broker.topics["gabo-work-orders"]
    del broker.subs["gabo-play-delivery"], broker.subs["gabo-play-quarantine-hold"]
    again = g.reconcile(clock.now())
    assert sorted(again["topics"]) == ["gabo-play", "gabo-work-orders"]
    assert sorted(again["subscriptions"]) == ["gabo-play-delivery", "gabo-play-quarantine-hold"]
    assert broker.subs["gabo-play-delivery"].spec.dead_letter_topic == "gabo-play-dead-letter"


def test_one_types_backlog_does_not_starve_another(env: Any) -> None:
    """A type that wants many workers and one that wants one, on a delivery capacity of 4: both get
    work orders every tick, and the queue alternates them."""
    svc, g, broker, _, clock = env
    big = EventType.model_validate({"metadata": {"name": "big", "owner": "team-a"},
                                    "spec": {"partitioning": "PT1M", "min_workers": 30, "max_workers": 50}})
    svc.apply.apply([big], T0)
    g.reconcile(T0)
    decisions = {d["event_type"]: d for d in g.scale(T0, capacity=4)}
    assert decisions["big"]["wanted"] >= 30 and decisions["big"]["workers"] == 3
    assert decisions["play"]["workers"] == 1 and "fair share" in decisions["big"]["reason"]
    queue = [json.loads(m.data)["event_type"] for m in broker.topics["gabo-work-orders"]]
    assert sorted(queue) == ["big", "big", "big", "play"] and queue.index("play") <= 1
