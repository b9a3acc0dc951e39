"""The one clock all Ferry code reads time through."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock for tests: stands still until told to move."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._at = at
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._at

    def set(self, at: datetime) -> None:
        with self._lock:
            self._at = at

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._at += delta
            return self._at


def parse_instant(raw: str, what: str = "the instant") -> datetime:
    """An aware ISO 8601 instant (``Z`` allowed). Raises BadRequest (400) if ``raw`` is not one."""
    from ferry.errors import BadRequest

    try:
        at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{what} is not an ISO instant: {raw!r}") from None
    if at.tzinfo is None:
        raise BadRequest(f"{what} needs a time zone")
    return at


def requested_now(raw: str | None, clock: Clock, allowed: bool, what: str = "X-Ferry-Now") -> datetime:
    """``now`` for one request: the clock's, or — in a local stack started with
    FERRY_ALLOW_CLOCK_OVERRIDE=1 (``allowed``) — the instant the request names (the ``X-Ferry-Now``
    header, a message's ``ferry_now`` attribute). A bad instant is a BadRequest wherever it comes from."""
    if allowed and raw:
        return parse_instant(raw, what)
    return clock.now()


def iso(value: Any) -> Any:
    """A datetime as ISO 8601 text for an API answer; anything else (None too) as it is."""
    return value.isoformat() if isinstance(value, datetime) else value
