"""Pure scheduling math: when natural triggers fire, which partitions a backfill covers, which
upstream partitions gate an instance, and an instance's retry policy. Concurrency slots are in ``slots``.

A natural trigger for the period starting at P fires at ``end(P) + offset`` and stands for P: at
15:00 an hourly workflow gets parameter ``…T14`` (the hour that just ended), as in Styx.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from ferry.domain import periods
from ferry.domain.manifests import WorkflowSpec
from ferry.styx.machine import Policy


def policy_of(spec: WorkflowSpec) -> Policy:
    return Policy(max_tries=spec.retry.max_tries,
                  initial_backoff=periods.parse_duration(spec.retry.initial_backoff),
                  max_backoff=periods.parse_duration(spec.retry.max_backoff),
                  timeout=periods.parse_duration(spec.timeout))


def fire_time(cadence: periods.Cadence, offset: timedelta, period: datetime) -> datetime:
    return cadence.next(period) + offset


def first_period(cadence: periods.Cadence, offset: timedelta, now: datetime) -> datetime:
    """The earliest period whose trigger has not fired yet at ``now`` (a new workflow does not
    trigger its past: backfills are for that)."""
    p = cadence.prev(cadence.floor(now - offset))
    while fire_time(cadence, offset, p) <= now:
        p = cadence.next(p)
    return p


def due_periods(cadence: periods.Cadence, offset: timedelta, next_period: datetime, now: datetime,
                limit: int = 100) -> tuple[list[datetime], datetime]:
    """Periods from ``next_period`` whose trigger time has come (at most ``limit``), and the period
    to trigger after them."""
    out: list[datetime] = []
    p = next_period
    while fire_time(cadence, offset, p) <= now and len(out) < limit:
        out.append(p)
        p = cadence.next(p)
    return out, p


def backfill_partitions(cadence: periods.Cadence, start: str, end: str, reverse: bool = False) -> list[str]:
    """Parameters in [start, end), both aligned to the schedule. Raises ValueError with the reason."""
    try:
        lo = cadence.parse(start)
    except ValueError as exc:
        raise ValueError(f"start {start!r} is not aligned to the schedule: {exc}") from None
    try:
        hi = cadence.parse(end)
    except ValueError as exc:
        raise ValueError(f"end {end!r} is not aligned to the schedule: {exc}") from None
    if hi <= lo:
        raise ValueError(f"end {end} must be after start {start} (end is exclusive)")
    out = [cadence.format(p) for p in periods.periods(cadence, lo, hi)]
    return out[::-1] if reverse else out


def upstream_partitions(cadence: periods.Cadence, parameter: str, upstream: periods.Cadence) -> list[str]:
    """The upstream partitions that cover the same period as the instance ``parameter``.

    A daily workflow that depends on an hourly endpoint needs all 24 hours of its day; an hourly one
    that depends on a daily endpoint needs the day that contains its hour.
    """
    start = cadence.parse(parameter)
    end = cadence.next(start)
    first = upstream.floor(start)
    return [upstream.format(p) for p in periods.periods(upstream, first, end)]


def smear(workflow: str, seconds: int) -> timedelta:
    """A workflow's fixed delay of its natural triggers within ``seconds`` (0: none): the same for every
    period of the workflow, spread evenly across workflows by a hash of its name (``FERRY_STYX_SMEAR_S``)."""
    if seconds <= 0:
        return timedelta(0)
    digest = hashlib.sha256(workflow.encode()).digest()
    return timedelta(seconds=int.from_bytes(digest[:4], "big") % seconds)
