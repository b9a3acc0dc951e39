"""The capacity model: verdicts from measured rates, and the inputs read from per-run documents."""

from __future__ import annotations

from typing import Any

from ferry.gabo.scaling.capacity import CapacityInputs, plan


def inputs(**kw: Any) -> CapacityInputs:
    base: dict[str, Any] = dict(event_type="play", owner="team-a", rate_eps={"1m": 100.0, "5m": 100.0, "60m": 80.0},
                                rate_bps={"5m": 3e4, "60m": 2.4e4}, peak_eps=120.0, per_worker_eps=1000.0,
                                per_worker_saturated=True, min_workers=1, max_workers=4, current_workers=1,
                                period_s=60.0, merge_eps=100_000.0)
    return CapacityInputs(**{**base, **kw})


def test_headroom_yes_when_max_workers_carry_ten_times_the_peak() -> None:
    c = plan(inputs())
    assert (c.workers_now, c.workers_at_10x, c.headroom, c.ok) == (1, 2, 33.3, True)
    assert c.verdict == "10× headroom: yes" and c.shards_per_period == 1


def test_what_to_raise_when_it_cannot_carry_ten_times() -> None:
    c = plan(inputs(peak_eps=900.0))  # 10× = 9000/s at 1000/s per worker → 9 workers
    assert c.ok is False and c.raise_ == {"max_workers": 9}
    assert "raise max_workers from 4 to 9" in c.verdict and c.headroom == 4.4


def test_shards_and_close_cost_at_ten_times() -> None:
    # 10 × 5000/s over a minute = 3M events a period → 32 shards of ~94k; at 10k events/s a shard's merge
    # takes ~9 s, well inside the close-shard function's time
    c = plan(inputs(peak_eps=5000.0, max_workers=100, merge_eps=10_000.0))
    assert (c.shards_per_period, c.events_per_shard_at_10x) == (32, 93750)
    assert c.close_s_per_shard == 9.4 and c.memory_mb_per_shard < 100 and c.ok
    slow = plan(inputs(peak_eps=5000.0, max_workers=100, merge_eps=300.0))
    assert slow.ok is False and slow.raise_["shards"] > 32


def test_unknown_without_a_delivery_run() -> None:
    c = plan(inputs(per_worker_eps=None))
    assert c.ok is None and c.verdict.startswith("unknown")
