"""The scaler's pure core: how many delivery workers a type gets, and the fair split of a shared capacity."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ScaleInputs:
    """What the scaler knows of one event type's backlog (None = not known from this source)."""

    current: int
    min_workers: int
    max_workers: int
    undelivered: int | None = None          # messages waiting (Cloud Monitoring num_undelivered_messages)
    oldest_age_s: float | None = None       # oldest unacked message age (metric, or the workers' lag)
    drained: bool = False                   # the latest worker runs found the subscription empty
    saturated: bool = False                 # the latest runs ended their budget still pulling full batches
    rate_per_worker: float | None = None    # events/s one worker moved (from pull statistics)
    budget_s: float = 60.0                  # one work order's time budget
    target_age_s: float = 120.0             # the lag the scaler aims to stay under
    source: str = "pull"                    # where the backlog was read: pull statistics or Cloud Monitoring
    sampled_at: str | None = None           # when that reading was true

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class ScaleDecision:
    workers: int
    reason: str
    inputs: ScaleInputs = field(repr=False)


def decide_workers(i: ScaleInputs) -> ScaleDecision:
    """How many delivery work orders to run in parallel for one type, within [min, max].

    Known backlog and per-worker rate: enough workers to clear it within one budget. Otherwise by lag:
    double while the oldest event is older than the target, step down when it is well under it, and
    fall to the minimum when the workers report the subscription drained.
    """
    lo, hi = i.min_workers, max(i.min_workers, i.max_workers)
    current = max(i.current, lo)

    def clamp(n: int) -> int:
        return max(lo, min(hi, n))

    if i.drained and not i.undelivered:
        return ScaleDecision(clamp(lo), "drained: the subscription was empty", i)
    if i.undelivered is not None and i.rate_per_worker:
        need = math.ceil(i.undelivered / max(1.0, i.rate_per_worker * i.budget_s))
        return ScaleDecision(clamp(need), f"backlog {i.undelivered} at {i.rate_per_worker:.0f}/s per worker", i)
    if i.saturated:
        return ScaleDecision(clamp(max(current * 2, current + 1)),
                             "backlog remains: workers ended their budget still pulling full batches", i)
    if i.oldest_age_s is not None and i.oldest_age_s > i.target_age_s:
        return ScaleDecision(clamp(max(current * 2, current + 1)),
                             f"lag {i.oldest_age_s:.0f}s over target {i.target_age_s:.0f}s", i)
    if i.oldest_age_s is not None and i.oldest_age_s < i.target_age_s / 4:
        return ScaleDecision(clamp(current - 1), f"lag {i.oldest_age_s:.0f}s well under target", i)
    if i.undelivered == 0:
        return ScaleDecision(clamp(lo), "no backlog", i)
    return ScaleDecision(clamp(current), "steady", i)


# ------------------------------------------------------------------------------------- fair delivery

def fair_shares(wanted: Mapping[str, int], capacity: int | None, start: int = 0) -> dict[str, int]:
    """Split ``capacity`` parallel delivery workers among types by max-min fairness: every type that
    wants workers gets one before any type gets a second, and so on; no type gets more than it wants.

    ``capacity`` None: no limit (each type gets what it wants). With more hungry types than capacity,
    who goes first rotates with ``start`` (the scaler passes the minute), so none waits more than a few
    ticks.
    """
    if capacity is None:
        return dict(wanted)
    names = sorted(wanted)
    k = start % len(names) if names else 0
    names = names[k:] + names[:k]
    out = {t: 0 for t in wanted}
    left = max(0, capacity)
    while left > 0:
        hungry = [t for t in names if out[t] < wanted[t]]
        if not hungry:
            break
        for t in hungry[:left]:
            out[t] += 1
        left -= min(left, len(hungry))
    return out


def interleave(orders: Mapping[str, Sequence[Any]], start: int = 0) -> list[Any]:
    """Round-robin across types (from the ``start``-th, rotating each tick), so that a queue of work
    orders never holds one type's whole batch ahead of another type's first order."""
    names = sorted(orders)
    if not names:
        return []
    k = start % len(names)
    names = names[k:] + names[:k]
    out: list[Any] = []
    for i in range(max(len(v) for v in orders.values())):
        out.extend(orders[n][i] for n in names if i < len(orders[n]))
    return out
