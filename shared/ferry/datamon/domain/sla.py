"""SLA clocks: which partitions are expected, when they warn and are late, and their states.

A partition's clock starts when its period ends:
``warn_at = end + warn_after`` and ``late_at = end + error_after`` (the deadline). With
``calendar: weekdays`` partitions whose period starts on a local Saturday or Sunday are not expected,
and a warn/deadline instant that falls on a weekend moves to the following Monday 00:00 local, so
nobody is paged over the weekend.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ferry.domain import periods
from ferry.domain.manifests import EndpointSpec

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# How far back the evaluator looks when an endpoint declares no start, and the most partitions it
# tracks as open per endpoint (older missing partitions are given up and counted as ``abandoned``).
MAX_OPEN = 500


class State(enum.StrEnum):
    PENDING = "pending"
    WARN = "warn"
    LATE = "late"
    OK = "ok"
    LANDED_LATE = "landed_late"
    AT_RISK = "at_risk"


# Worst first (the unified view sorts by this).
RANK = {State.LATE: 0, State.AT_RISK: 1, State.WARN: 2, State.PENDING: 3, State.LANDED_LATE: 4, State.OK: 5}
OPEN_STATES = (State.PENDING, State.WARN, State.LATE, State.AT_RISK)


class Level(enum.StrEnum):
    """How far past its clock an unlanded partition is (what an alert is raised at)."""

    NONE = "none"
    WARN = "warn"
    LATE = "late"


@dataclass(frozen=True)
class Policy:
    """An endpoint's SLA as the evaluator needs it (a snapshot of the manifest)."""

    name: str
    owner: str
    partitioning: str = "daily"
    timezone: str = "UTC"
    start: datetime | None = None
    warn_after: timedelta | None = None
    error_after: timedelta = timedelta(hours=4)
    severity: str = "page"
    calendar: str = "all"
    renotify_after: timedelta = timedelta(hours=4)
    upstream: tuple[str, ...] = ()
    generation: int = 0
    alert_on_history: bool = False
    registered_at: datetime | None = None  # partitions late before it are history (not notified by default)
    min_ratio: float | None = None         # the volume check (None: off)
    volume_window: int = 4
    volume_season: timedelta = timedelta(days=7)

    @classmethod
    def from_spec(cls, name: str, owner: str, spec: EndpointSpec, generation: int = 0,
                  extra_upstream: Iterable[str] = ()) -> Policy:
        sla = spec.sla
        upstream = tuple(dict.fromkeys([*spec.upstream, *extra_upstream]))
        vol = spec.volume
        return cls(name, owner, spec.partitioning, spec.timezone, spec.start,
                   periods.parse_duration(sla.warn_after) if sla.warn_after else None,
                   periods.parse_duration(sla.error_after), sla.severity, sla.calendar,
                   periods.parse_duration(sla.renotify_after), upstream, generation, sla.alert_on_history, None,
                   vol.min_ratio if vol else None, vol.window if vol else 4,
                   periods.parse_duration(vol.season) if vol else timedelta(days=7))

    @property
    def cadence(self) -> periods.Cadence:
        return periods.partitioning(self.partitioning, self.timezone)

    def to_doc(self) -> dict[str, Any]:
        return {"name": self.name, "owner": self.owner, "partitioning": self.partitioning,
                "timezone": self.timezone, "start": self.start,
                "warn_after": self.warn_after.total_seconds() if self.warn_after is not None else None,
                "error_after": self.error_after.total_seconds(), "severity": self.severity,
                "calendar": self.calendar, "renotify_after": self.renotify_after.total_seconds(),
                "upstream": list(self.upstream), "generation": self.generation,
                "alert_on_history": self.alert_on_history, "min_ratio": self.min_ratio,
                "volume_window": self.volume_window, "volume_season": self.volume_season.total_seconds()}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Policy:
        return cls(doc["name"], doc.get("owner") or "", doc.get("partitioning", "daily"),
                   doc.get("timezone", "UTC"), _utc(doc.get("start")),
                   timedelta(seconds=doc["warn_after"]) if doc.get("warn_after") is not None else None,
                   timedelta(seconds=doc.get("error_after", 14400)), doc.get("severity", "page"),
                   doc.get("calendar", "all"), timedelta(seconds=doc.get("renotify_after", 14400)),
                   tuple(dict.fromkeys([*(doc.get("upstream") or ()),
                                        *(u for deps in (doc.get("derived_upstream") or {}).values() for u in deps)])),
                   int(doc.get("generation", 0)), bool(doc.get("alert_on_history")), _utc(doc.get("registered_at")),
                   doc.get("min_ratio"), int(doc.get("volume_window") or 4),
                   timedelta(seconds=doc.get("volume_season") or 7 * 86400))

    def history(self, late_at: datetime) -> bool:
        """A partition late before the endpoint was registered: shown, notified only if asked for."""
        return not self.alert_on_history and self.registered_at is not None and late_at < self.registered_at


def _utc(t: Any) -> datetime | None:
    if t is None:
        return None
    if isinstance(t, str):
        t = datetime.fromisoformat(t.replace("Z", "+00:00"))
    return datetime.fromtimestamp(t.timestamp(), UTC)  # plain datetime (Firestore returns a subclass)


def parse_partition(policy: Policy, partition: str) -> datetime:
    """Start of the period ``partition`` names for this endpoint.

    Raises:
        ValueError: not a parameter of the endpoint's partitioning, before its ``start``, or a period that
            ends past the year 9999.
    """
    cadence = policy.cadence
    try:
        start = cadence.parse(partition)
        cadence.next(start)  # its end must be an instant too (9999-12-31T23's is not)
    except OverflowError:
        raise ValueError(f"partition {partition} ends beyond the last instant a date can hold") from None
    if policy.start is not None and start < cadence.floor(policy.start):
        raise ValueError(f"partition {partition} is before the endpoint's start "
                         f"{cadence.format(cadence.floor(policy.start))}")
    return start


def first_expected(policy: Policy, registered_at: datetime) -> datetime:
    """The first partition start that is expected: ``start``, else the period of registration."""
    return policy.cadence.floor(policy.start or registered_at)


def _is_weekend(policy: Policy, t: datetime) -> bool:
    return t.astimezone(periods.zone(policy.timezone)).weekday() >= 5


def expected(policy: Policy, t: datetime) -> bool:
    return policy.calendar != "weekdays" or not _is_weekend(policy, t)


def business_instant(policy: Policy, t: datetime) -> datetime:
    """``t``, or with ``calendar: weekdays`` the next Monday 00:00 local if ``t`` is on a weekend."""
    if policy.calendar != "weekdays" or not _is_weekend(policy, t):
        return t
    tz = periods.zone(policy.timezone)
    local = t.astimezone(tz)
    monday = local.date() + timedelta(days=7 - local.weekday())
    return datetime(monday.year, monday.month, monday.day, tzinfo=tz).astimezone(UTC)


@dataclass(frozen=True)
class Clocks:
    start: datetime
    end: datetime
    warn_at: datetime | None
    late_at: datetime


def clocks(policy: Policy, start: datetime) -> Clocks:
    end = policy.cadence.next(start)
    warn_at = business_instant(policy, end + policy.warn_after) if policy.warn_after is not None else None
    late_at = business_instant(policy, end + policy.error_after)
    if warn_at is not None and warn_at > late_at:
        warn_at = late_at
    return Clocks(start, end, warn_at, late_at)


def ended(policy: Policy, first: datetime, now: datetime, limit: int = MAX_OPEN) -> list[datetime]:
    """Expected partition starts from ``first`` whose period has ended by ``now`` (at most ``limit``,
    the newest ones)."""
    cadence = policy.cadence
    last_start = cadence.prev(cadence.floor(now))  # the newest period that has ended
    if last_start < first:
        return []
    out: list[datetime] = []
    t = last_start
    while t >= first and len(out) < limit:
        if expected(policy, t):
            out.append(t)
        t = cadence.prev(t)
    out.reverse()
    return out


def level(c: Clocks, now: datetime) -> Level:
    if now >= c.late_at:
        return Level.LATE
    if c.warn_at is not None and now >= c.warn_at:
        return Level.WARN
    return Level.NONE


def state(c: Clocks, landed_at: datetime | None, now: datetime, upstream_late: bool = False) -> State:
    """The SLA state of one partition.

    ``at_risk`` is the early warning: a partition it needs upstream is late while its own deadline
    has not passed yet.
    """
    if landed_at is not None:
        return State.LANDED_LATE if landed_at > c.late_at else State.OK
    lvl = level(c, now)
    if lvl is Level.LATE:
        return State.LATE
    if upstream_late:
        return State.AT_RISK
    return State.WARN if lvl is Level.WARN else State.PENDING


def next_transition(c: Clocks, now: datetime) -> datetime | None:
    """When an unlanded partition's state next changes by time alone (None once late)."""
    for t in (c.warn_at, c.late_at):
        if t is not None and t > now:
            return t
    return None


def overlaps(a_start: datetime, a_end: datetime, b_start: datetime, b_end: datetime) -> bool:
    return a_start < b_end and b_start < a_end


def worst(states: Sequence[State]) -> State | None:
    return min(states, key=lambda s: RANK[s]) if states else None
