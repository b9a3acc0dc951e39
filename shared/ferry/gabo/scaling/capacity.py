"""The capacity model (pure): does an event type have 10× headroom, and if not, what to raise to what.

Inputs are measurements, never guesses: the ingest rate from the delivery runs' own documents (one per
run, written by that run — no hot document; delivered ≈ ingested while delivery keeps up, and a backlog
shows as the scaler's saturation), the per-worker delivery throughput from those runs, and the shard
merge throughput from the close-shard records. See docs/gabo.md, "Capacity".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ferry.gabo.names import shard_bits_for

# Alerts go where Datamon's do (owner-routed by the notification path that reads this topic).
HEADROOM = 10.0
# A shard's merge: the interpreter and clients, plus ~250 bytes per id held (measured: tests/bench).
MERGE_BASE_MB = 60.0
MERGE_BYTES_PER_ID = 270.0
CLOSE_SHARD_TIMEOUT_S = 540.0
MAX_WORKERS_LIMIT = 100


@dataclass(frozen=True)
class CapacityInputs:
    event_type: str
    owner: str
    rate_eps: dict[str, float]          # window ("1m", "5m", "60m") → events/s delivered
    rate_bps: dict[str, float]          # window → bytes/s delivered
    peak_eps: float                     # the busiest minute of the last hour
    per_worker_eps: float | None        # the fastest recent delivery run (saturated runs preferred)
    per_worker_saturated: bool          # measured on a run that ended its budget still pulling full batches
    min_workers: int
    max_workers: int
    current_workers: int
    period_s: float
    merge_eps: float | None = None      # one shard merge process, events/s (close-shard records)
    runs: int = 0


@dataclass
class Capacity:
    event_type: str
    owner: str
    rate_eps: dict[str, float]
    rate_bps: dict[str, float]
    peak_eps: float
    per_worker_eps: float | None
    per_worker_measured_on: str
    workers_now: int | None
    workers_at_10x: int | None
    max_workers: int
    current_workers: int
    headroom: float | None
    shards_per_period: int
    events_per_shard_at_10x: int
    close_s_per_shard: float | None
    memory_mb_per_shard: float
    verdict: str
    ok: bool | None
    raise_: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["raise"] = d.pop("raise_")
        return d


def plan(i: CapacityInputs) -> Capacity:
    """Workers needed now and at 10× the peak, the max_workers headroom, shards per period and the close
    cost per shard at 10×, and the verdict."""
    peak10 = HEADROOM * i.peak_eps
    per_period = peak10 * i.period_s
    bits = shard_bits_for(per_period)
    shards = 1 << bits
    per_shard = int(math.ceil(per_period / shards))
    memory = round(MERGE_BASE_MB + per_shard * MERGE_BYTES_PER_ID / 1024 / 1024, 1)
    close_s = round(per_shard / i.merge_eps, 1) if i.merge_eps else None
    raise_: dict[str, int] = {}
    if not i.per_worker_eps:
        return Capacity(i.event_type, i.owner, i.rate_eps, i.rate_bps, i.peak_eps, None, "no delivery run yet",
                        None, None, i.max_workers, i.current_workers, None, shards, per_shard, close_s, memory,
                        "unknown: no delivery run measured yet (run `ferry load` or wait for traffic)", None)
    w = i.per_worker_eps
    now_need = max(i.min_workers, math.ceil(i.rate_eps.get("1m", 0.0) / w))
    need10 = max(1, math.ceil(peak10 / w))
    headroom = round(i.max_workers * w / i.peak_eps, 1) if i.peak_eps > 0 else None
    problems = []
    if need10 > i.max_workers:
        raise_["max_workers"] = need10
        problems.append(f"raise max_workers from {i.max_workers} to {need10}"
                        + (f" (beyond the limit of {MAX_WORKERS_LIMIT}: make one worker faster)"
                           if need10 > MAX_WORKERS_LIMIT else ""))
    if close_s is not None and close_s > CLOSE_SHARD_TIMEOUT_S / 2:
        more = 1 << (bits + math.ceil(math.log2(close_s / (CLOSE_SHARD_TIMEOUT_S / 2))))
        raise_["shards"] = more
        problems.append(f"raise shards from {shards} to {more} (a shard's merge would take {close_s:.0f}s)")
    ok = not problems
    verdict = "10× headroom: yes" if ok else "10× headroom: no — " + "; ".join(problems)
    measured = "saturated run" if i.per_worker_saturated else "unsaturated run (a lower bound)"
    return Capacity(i.event_type, i.owner, i.rate_eps, i.rate_bps, i.peak_eps, round(w, 1), measured, now_need,
                    need10, i.max_workers, i.current_workers, headroom, shards, per_shard, close_s, memory, verdict,
                    ok, raise_)
