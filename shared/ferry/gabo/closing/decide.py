"""Closing's pure core: the watermark, and whether (or why not yet) a period may close."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ferry import humane
from ferry.domain import periods
from ferry.gabo.envelopes import iso


@dataclass(frozen=True)
class Closable:
    start: datetime
    reason: str


def watermark(drains: Sequence[datetime], holders: Sequence[tuple[datetime, datetime | None]]) -> datetime | None:
    """The instant before which every received event is known to be written (acked) — from workers' reports.

    Args:
        drains: times at which a worker pulled and found the subscription empty (nothing available).
        holders: per unfinished worker run, (lease_until, oldest received_at it holds unacked or None).
    Returns:
        None when no drain was ever seen. Otherwise the latest drain ``D``, lowered to the oldest event
        still held by a worker whose lease outlives ``D`` (a lease that expired before ``D`` was
        redelivered and is covered by the drain: the subscription was empty then).
    """
    if not drains:
        return None
    d = max(drains)
    held = [oldest for lease_until, oldest in holders if oldest is not None and lease_until >= d]
    return min([d, *held])


# The longest an event can take from its ``received_at`` stamp to its publish (ingest stamps, then
# publishes and waits for the confirmation, within its function's 60 s timeout). Pub/Sub ages a message
# from its publish time, so the metric watermark steps back by this much.
PUBLISH_SLACK = timedelta(seconds=60)


def metric_watermark(oldest_age_s: float, sampled_at: datetime,
                     publish_slack: timedelta = PUBLISH_SLACK) -> datetime:
    """The watermark from Cloud Monitoring's ``oldest_unacked_message_age`` of the delivery subscription.

    At ``sampled_at`` the oldest unacked (available or leased) message was published ``oldest_age_s``
    before (0 when nothing is unacked), so everything published before ``sampled_at - age`` was acked,
    i.e. written. An event is published at most ``publish_slack`` after its ``received_at``: every event
    received before ``sampled_at - age - publish_slack`` is written. The sample time, not ``now``, counts:
    a point is up to minutes old when it becomes readable.
    """
    return sampled_at - timedelta(seconds=max(0.0, oldest_age_s)) - publish_slack


def closable(start: datetime, cadence: periods.Cadence, close_after: timedelta, now: datetime,
             mark: datetime | None) -> Closable | None:
    """A period may close once its end plus ``close_after`` has passed and every event received before
    its end is written (``mark`` — see :func:`watermark` — is at or after its end)."""
    end = cadence.next(start)
    if now < end + close_after:
        return None
    if mark is None or mark < end:
        return None
    return Closable(start, f"ended {iso(end)}, grace {periods.format_duration(close_after)} passed, "
                           f"all events received before the end are written (watermark {iso(mark)})")


def why_waiting(start: datetime, cadence: periods.Cadence, close_after: timedelta, now: datetime,
                mark: datetime | None) -> dict[str, Any]:
    """Why a period that may not close yet waits, and until when (None: until the evidence arrives)."""
    end = cadence.next(start)
    grace = periods.format_duration(close_after)
    if now < end + close_after:
        until = end + close_after
        return {"partition": cadence.format(start), "until": iso(until),
                "reason": f"its grace period ({grace} after it ends) runs until {iso(until)}, "
                          f"in {humane.duration((until - now).total_seconds())}"}
    if mark is None:
        return {"partition": cadence.format(start), "until": None,
                "reason": "no watermark yet: the delivery backlog is unknown (a delivery run reports it)"}
    return {"partition": cadence.format(start), "until": None,
            "reason": f"events received before its end ({iso(end)}) may still be undelivered: the watermark "
                      f"is {iso(mark)} ({humane.duration((end - mark).total_seconds())} behind)"}


def next_open(start: datetime, cadence: periods.Cadence, closed: set[datetime]) -> datetime:
    """The first period after ``start`` that is not closed (where a late staging object goes)."""
    t = cadence.next(start)
    while t in closed:
        t = cadence.next(t)
    return t


