"""Slot claiming: the concurrency pools an instance draws from when it is dequeued.

A pool is a Resource's concurrency (``resource.<name>``), the global limit (``global``), one backfill
(``backfill.<id>``) or a minute's submission rate (``rate.<minute>``). A slot is a document
``<pool>#<n>`` in ``styx_slots`` (rate tokens in ``styx_rate``), created in the same commit as the
dequeue and deleted in the same commit as the end, so a slot is never held by an instance that no
longer runs. ``Claims`` hands slots to the dequeue stage's threads without handing one out twice.
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from ferry.styx.repository import StyxRepository

GLOBAL_POOL = "global"
RATE_PREFIX = "rate."  # the submission tokens of a minute, as a pool: rate.2026-11-26T13:05#n


@dataclass(frozen=True)
class Pool:
    """A concurrency pool and the slot numbers taken in it."""

    name: str
    size: int
    used: frozenset[int]

    def free(self, taken: set[int] | frozenset[int] = frozenset()) -> list[int]:
        """The slot numbers free, skipping ``taken`` too. A pool that shrank (a lowered concurrency, a
        submission rate slowed after a 429) may have slots taken above its size: they count, so
        fewer than ``size`` are ever taken."""
        in_use = self.used | taken
        room = self.size - len(in_use)
        return [n for n in range(self.size) if n not in in_use][:max(0, room)]


def slot_id(pool: str, number: int) -> str:
    return f"{pool}#{number}"


def choose(pools: Sequence[Pool], taken: dict[str, set[int]]) -> list[str] | None:
    """One free slot in every pool (skipping the ones this tick already took), or None if any is full.

    A random one of the first free slots: two ticks racing rarely pick the same one (a collision
    costs a retry)."""
    out = []
    for pool in pools:
        free = pool.free(taken.get(pool.name, set()))
        if not free:
            return None
        out.append(slot_id(pool.name, random.choice(free[:32])))
    return out


def minutes_between(earlier: str, later: str) -> int:
    """Whole minutes from ``earlier`` to ``later`` (both ``YYYY-MM-DDTHH:MM``, UTC)."""
    from datetime import datetime

    fmt = "%Y-%m-%dT%H:%M"
    return int((datetime.strptime(later, fmt) - datetime.strptime(earlier, fmt)).total_seconds() // 60)


def effective_rate(configured: int, throttle: dict[str, Any] | None, minute: str) -> int:
    """The submissions allowed in ``minute``: the configured rate, unless the platform answered 429
    recently. In the minute of the 429 only what was left (``rate``: half of what had been used by
    then, so that minute is spent); then it grows back by a tenth of the configured rate a minute
    (multiplicative decrease, additive increase)."""
    if not throttle or "throttled_minute" not in throttle:
        return configured
    since = minutes_between(throttle["throttled_minute"], minute)
    if since < 0:
        return configured
    return min(configured, int(throttle["rate"]) + since * max(1, configured // 10))


def held_and_tokens(slots: Sequence[str]) -> tuple[tuple[str, ...], list[tuple[str, int]]]:
    """Split claimed ``slots`` into the pool slots held until the end and the (minute, n) rate tokens."""
    held = tuple(s for s in slots if not s.startswith(RATE_PREFIX))
    tokens = [s[len(RATE_PREFIX):].rsplit("#", 1) for s in slots if s.startswith(RATE_PREFIX)]
    return held, [(minute, int(n)) for minute, n in tokens]


WRITES = "+w"  # the write tokens' minute key: ``2026-11-26T13:05+w`` sorts inside its minute (expired with it)


class ApiTokens:
    """A per-minute Admin API quota for a launcher's own requests (CreateJob and DeleteJob: Cloud Run's
    "Write requests per minute per region"; RunJob's "Job run requests" are the dequeue's ``rate``
    tokens), shared by every tick and process: token ``n`` of a minute is the document
    ``styx_rate/{minute}+w#{n}``, created with a must-not-exist precondition — no transaction (the
    Firestore emulator deadlocks concurrent transactions on one document); two takers of one number:
    one commit fails and picks again. Past minutes' tokens expire with the submission tokens.
    """

    def __init__(self, repo: StyxRepository, rate: int, clock: Any) -> None:
        self.repo, self.rate, self.clock = repo, rate, clock

    def take(self, what: str) -> bool:
        """One token of this UTC minute for ``what``; False when the minute's are spent."""
        from ferry.errors import Conflict

        now = self.clock.now()
        minute = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") + WRITES
        for _ in range(20):  # a lost race re-reads: only a minute with no number left says no
            free = Pool(RATE_PREFIX + minute, self.rate, frozenset(self.repo.used_rate(minute))).free()
            if not free:
                return False
            try:
                self.repo.store.write(self.repo.rate_ops(minute, random.choice(free), what, now))
                return True
            except Conflict:
                continue
        return False


class Claims:
    """The pools one dequeue stage draws slots from, shared by its threads.

    Each pool's used slots are read once (and again after a conflict); ``held`` are the slots this
    tick's threads have claimed or are committing, so two threads never pick the same one. A commit
    that fails gives its slots back. Every dequeue also takes a token of the minute's submission rate
    (pool ``rate.<minute>``, documents in ``styx_rate``): other ticks' tokens count, so the rate is
    global; two ticks picking the same token make one commit fail, and it looks again.
    """

    def __init__(self, repo: StyxRepository, minute: str, rate: int) -> None:
        self.repo = repo
        self.rate_pool = RATE_PREFIX + minute
        self.minute = minute
        self.rate = rate
        self.pools: dict[str, Pool] = {}
        self.held: dict[str, set[int]] = defaultdict(set)
        self.lock = threading.Lock()

    def used(self) -> int:
        """Tokens of this minute taken so far (by any tick, as far as this one knows)."""
        with self.lock:
            pool = self.pools.get(self.rate_pool)
            return len((pool.used if pool else frozenset()) | self.held[self.rate_pool])

    @property
    def exhausted(self) -> bool:
        """No submission token of this minute is left (as far as this tick knows)."""
        pool = self.pools.get(self.rate_pool)
        return pool is not None and len(pool.used | self.held[self.rate_pool]) >= self.rate

    def tokens_left(self) -> int:
        """This minute's submission tokens not taken yet (read once; shared with ``reserve``)."""
        with self.lock:
            if self.rate_pool not in self.pools:
                self.pools[self.rate_pool] = self._load(self.rate_pool, self.rate)
            return max(0, self.rate - len(self.pools[self.rate_pool].used | self.held[self.rate_pool]))

    def _load(self, name: str, size: int) -> Pool:
        used = self.repo.used_rate(self.minute) if name == self.rate_pool else self.repo.used_slots(name)
        return Pool(name, size, frozenset(used))

    def reserve(self, sizes: dict[str, int], refresh: bool = False) -> list[str] | None:
        """A submission token and one free slot in each pool (name -> size); None if one is full."""
        with self.lock:
            wanted = {self.rate_pool: self.rate, **sizes}
            for name, size in wanted.items():
                if refresh or name not in self.pools:
                    self.pools[name] = self._load(name, size)
            slots = choose([self.pools[name] for name in wanted], self.held)
            if slots is None:
                return None
            for s in slots:
                pool, n = s.rsplit("#", 1)
                self.held[pool].add(int(n))
            return slots

    def release(self, slots: Sequence[str]) -> None:
        """The commit that claimed ``slots`` failed: they (and the token) are free again."""
        with self.lock:
            for s in slots:
                pool, n = s.rsplit("#", 1)
                self.held[pool].discard(int(n))
