"""Delivery's pure core: what a pulled message is (event or poison), when a batch is full, when a pull
shows a backlog, how a batch is grouped into periods.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ferry.domain import periods
from ferry.gabo.envelopes import line_limit, parse_iso


@dataclass(frozen=True)
class BatchLimits:
    """A batch is flushed when any bound is reached; memory stays within ``max_bytes`` (plus one pull)."""

    max_messages: int = 20_000
    max_bytes: int = 64 * 1024 * 1024
    max_age_s: float = 10.0

    def full(self, count: int, size: int, age_s: float) -> bool:
        return count >= self.max_messages or size >= self.max_bytes or age_s >= self.max_age_s


# Pub/Sub answers a synchronous pull with at most 1000 messages, the emulator with at most 100: a pull
# that returns this many (or all it asked for) found more waiting than one answer carries.
FULL_PULL = 100


def pull_full(got: int, want: int) -> bool:
    """Did a pull of ``want`` messages that returned ``got`` leave a backlog behind (as far as it can tell)?"""
    return got >= min(want, FULL_PULL)


# A full pull is no backlog by itself: at the head of the subscription a pull brings what arrived while
# the previous one was under way, so at 1,500 events/s a 70 ms pull comes back with the emulator's 100.
# Behind is a full pull whose oldest event was received longer than this before the pull began.
BEHIND_LAG_S = 1.0


def pull_behind(got: int, want: int, lag_s: float | None) -> bool:
    """A full pull of events received more than ``BEHIND_LAG_S`` before it: the worker is behind the
    arrivals (a backlog waits), not merely keeping pace with them."""
    return pull_full(got, want) and lag_s is not None and lag_s > BEHIND_LAG_S


@dataclass(slots=True)
class Pulled:
    """One message as pulled: what the worker needs of it (read-only by convention: not frozen, because
    a frozen dataclass's constructor costs four times as much, and workers build one per message)."""

    ack_id: str
    message_id: str
    data: bytes
    attributes: Mapping[str, str]  # from Pub/Sub: the protobuf's own map (a dict copy costs ~1 µs each)
    publish_time: datetime
    delivery_attempt: int = 0


@dataclass(frozen=True)
class Accepted:
    message: Pulled
    event_id: str
    received_at: datetime


@dataclass(frozen=True)
class Poison:
    message: Pulled
    reason: str


def classify(m: Pulled, event_type: str, max_event_bytes: int) -> Accepted | Poison:
    """Is a pulled message a deliverable event of ``event_type``? Poison goes to the dead-letter topic."""
    v = verdict(m, event_type, max_event_bytes)
    if isinstance(v, str):
        return Poison(m, v)
    return Accepted(m, v[1], v[0])


def _refuse_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


_STRICT = json.JSONDecoder(parse_constant=_refuse_constant)  # NaN, Infinity, -Infinity: not JSON


def verdict(m: Pulled, event_type: str, max_event_bytes: int) -> tuple[datetime, str] | str:
    """:func:`classify` without the wrapping (a worker calls it per message): the receive time and id of
    a deliverable event, or the reason the message is poison."""
    if len(m.data) > line_limit(max_event_bytes):  # the bound every line of a valid event is within
        return f"oversized: {len(m.data)} bytes > {line_limit(max_event_bytes)} (max_event_bytes {max_event_bytes})"
    try:
        doc = _STRICT.decode(m.data.decode())  # decoded here: json's encoding sniffing of bytes costs more
    except ValueError:  # UnicodeDecodeError and NaN/Infinity included
        return "unparseable: not JSON"
    if type(doc) is not dict or type(doc.get("id")) is not str or "payload" not in doc:
        return "unparseable: not an event line {id, payload, ...}"
    if doc.get("type", event_type) != event_type:
        return f"wrong type {doc.get('type')!r} on the topic of {event_type!r}"
    raw = m.attributes.get("received_at") or doc.get("received_at")
    try:
        return (parse_iso(raw) if type(raw) is str else m.publish_time), doc["id"]
    except ValueError:
        return f"unparseable: received_at {raw!r}"


def group_by_partition(events: Iterable[Accepted], cadence: periods.Cadence) -> dict[datetime, list[Accepted]]:
    groups: dict[datetime, list[Accepted]] = {}
    for e in events:
        groups.setdefault(cadence.floor(e.received_at), []).append(e)
    return groups


