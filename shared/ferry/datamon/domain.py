"""Datamon's pure core: expected partitions, SLA states and alert decisions, from data and ``now``.

Nothing here reads a clock or a store. A partition's clock starts when its period ends:
``warn_at = end + warn_after`` and ``late_at = end + error_after`` (the deadline). With
``calendar: weekdays`` partitions whose period starts on a local Saturday or Sunday are not expected,
and a warn/deadline instant that falls on a weekend moves to the following Monday 00:00 local, so
nobody is paged over the weekend.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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

    @classmethod
    def from_spec(cls, name: str, owner: str, spec: EndpointSpec, generation: int = 0,
                  extra_upstream: Iterable[str] = ()) -> Policy:
        sla = spec.sla
        upstream = tuple(dict.fromkeys([*spec.upstream, *extra_upstream]))
        return cls(name, owner, spec.partitioning, spec.timezone, spec.start,
                   periods.parse_duration(sla.warn_after) if sla.warn_after else None,
                   periods.parse_duration(sla.error_after), sla.severity, sla.calendar,
                   periods.parse_duration(sla.renotify_after), upstream, generation)

    @property
    def cadence(self) -> periods.Cadence:
        return periods.partitioning(self.partitioning, self.timezone)

    def to_doc(self) -> dict[str, Any]:
        return {"name": self.name, "owner": self.owner, "partitioning": self.partitioning,
                "timezone": self.timezone, "start": self.start,
                "warn_after": self.warn_after.total_seconds() if self.warn_after is not None else None,
                "error_after": self.error_after.total_seconds(), "severity": self.severity,
                "calendar": self.calendar, "renotify_after": self.renotify_after.total_seconds(),
                "upstream": list(self.upstream), "generation": self.generation}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Policy:
        return cls(doc["name"], doc.get("owner") or "", doc.get("partitioning", "daily"),
                   doc.get("timezone", "UTC"), _utc(doc.get("start")),
                   timedelta(seconds=doc["warn_after"]) if doc.get("warn_after") is not None else None,
                   timedelta(seconds=doc.get("error_after", 14400)), doc.get("severity", "page"),
                   doc.get("calendar", "all"), timedelta(seconds=doc.get("renotify_after", 14400)),
                   tuple(dict.fromkeys([*(doc.get("upstream") or ()),
                                        *(u for deps in (doc.get("derived_upstream") or {}).values() for u in deps)])),
                   int(doc.get("generation", 0)))


def _utc(t: Any) -> datetime | None:
    if t is None:
        return None
    if isinstance(t, str):
        t = datetime.fromisoformat(t.replace("Z", "+00:00"))
    return datetime.fromtimestamp(t.timestamp(), UTC)  # plain datetime (Firestore returns a subclass)


def parse_partition(policy: Policy, partition: str) -> datetime:
    """Start of the period ``partition`` names for this endpoint.

    Raises:
        ValueError: not a parameter of the endpoint's partitioning, or before its ``start``.
    """
    cadence = policy.cadence
    start = cadence.parse(partition)
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


# -- alerts ---------------------------------------------------------------------------------------

class Action(enum.StrEnum):
    TRIGGER = "trigger"
    ESCALATE = "escalate"
    RESOLVE = "resolve"
    RENOTIFY = "renotify"


@dataclass(frozen=True)
class AlertView:
    """What the alert decision needs to know of an existing alert."""

    level: Level
    open: bool
    acked: bool
    notified_at: datetime
    seq: int


@dataclass(frozen=True)
class Notify:
    action: Action
    level: Level


def decide(alert: AlertView | None, lvl: Level, landed: bool, now: datetime, renotify_after: timedelta) -> Notify | None:
    """The alert transition for one partition, or None. Notifications happen on transitions only."""
    if alert is None or not alert.open:
        if landed or lvl is Level.NONE:
            return None
        return Notify(Action.TRIGGER, lvl)
    if landed:
        return Notify(Action.RESOLVE, alert.level)
    if alert.level is Level.WARN and lvl is Level.LATE:
        return Notify(Action.ESCALATE, Level.LATE)
    if not alert.acked and now - alert.notified_at >= renotify_after:
        return Notify(Action.RENOTIFY, alert.level)
    return None


def pagerduty_severity(policy: Policy, lvl: Level) -> str:
    if lvl is Level.WARN or policy.severity == "info":
        return "warning" if policy.severity != "info" else "info"
    return {"page": "critical", "ticket": "error"}.get(policy.severity, "error")


@dataclass(frozen=True)
class Notification:
    """A PagerDuty Events v2–shaped message (what goes on the alerts topic)."""

    endpoint: str
    partition: str
    owner: str
    action: Action
    severity: str
    summary: str
    overdue_seconds: int
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def dedup_key(self) -> str:
        return f"{self.endpoint}/{self.partition}"

    def to_event(self, source: str = "ferry-datamon") -> dict[str, Any]:
        return {
            "dedup_key": self.dedup_key,
            "event_action": "resolve" if self.action is Action.RESOLVE else "trigger",
            "severity": self.severity,
            "summary": self.summary,
            "source": source,
            "owner": self.owner,
            "payload": {"summary": self.summary, "severity": self.severity, "source": source,
                        "component": self.endpoint, "group": self.owner, "class": "late-data"},
            "custom_details": {"endpoint": self.endpoint, "partition": self.partition,
                               "transition": self.action.value, "overdue_seconds": self.overdue_seconds,
                               **self.details},
        }


def summary_text(policy: Policy, partition: str, action: Action, lvl: Level, overdue: timedelta,
                 landed_late_by: timedelta | None = None) -> str:
    if action is Action.RESOLVE:
        late = (f"landed {int(landed_late_by.total_seconds() // 60)} minutes late"
                if landed_late_by is not None and landed_late_by > timedelta(0) else "landed")
        return f"{policy.name} {partition} {late}"
    what = "is late" if lvl is Level.LATE else "is at warning"
    prefix = {Action.ESCALATE: "escalated: ", Action.RENOTIFY: "still open: "}.get(action, "")
    return (f"{prefix}{policy.name} {partition} {what}: not landed "
            f"{int(overdue.total_seconds() // 60)} minutes after its period ended (owner {policy.owner})")


def worst(states: Sequence[State]) -> State | None:
    return min(states, key=lambda s: RANK[s]) if states else None


# -- one endpoint's evaluation ---------------------------------------------------------------------

STRIP = 24  # recent partitions kept for the heat strip


@dataclass
class Entry:
    """An expected partition that has not landed (yet), as the summary remembers it."""

    partition: str
    start: datetime
    state: State
    alert: dict[str, Any] | None = None  # {level, seq, notified_at, opened_at, acked}

    def to_doc(self) -> dict[str, Any]:
        return {"partition": self.partition, "start": self.start, "state": self.state.value, "alert": self.alert}

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> Entry:
        alert = dict(d["alert"]) if d.get("alert") else None
        if alert and alert.get("notified_at") is not None:
            alert["notified_at"] = _utc(alert["notified_at"])
        return cls(d["partition"], _utc(d["start"]), State(d["state"]), alert)  # type: ignore[arg-type]

    def alert_view(self) -> AlertView | None:
        if not self.alert:
            return None
        return AlertView(Level(self.alert["level"]), True, bool(self.alert.get("acked")),
                         self.alert["notified_at"], int(self.alert.get("seq", 0)))


@dataclass
class Summary:
    """The evaluator's per-endpoint state: everything before ``watermark`` has landed (or was given
    up); ``landed_beyond`` are landed partitions after it; ``open`` the unlanded expected ones."""

    watermark: datetime
    landed_beyond: list[str] = field(default_factory=list)
    open: list[Entry] = field(default_factory=list)
    strip: list[dict[str, str]] = field(default_factory=list)
    next_check: datetime = EPOCH
    state: str = State.PENDING.value
    open_alerts: int = 0

    def to_doc(self) -> dict[str, Any]:
        return {"watermark": self.watermark, "landed_beyond": list(self.landed_beyond),
                "open": [e.to_doc() for e in self.open], "strip": list(self.strip),
                "next_check": self.next_check, "state": self.state, "open_alerts": self.open_alerts}

    @classmethod
    def from_doc(cls, d: dict[str, Any], default_watermark: datetime) -> Summary:
        return cls(_utc(d.get("watermark")) or default_watermark, list(d.get("landed_beyond") or []),
                   [Entry.from_doc(e) for e in d.get("open") or []], list(d.get("strip") or []),
                   _utc(d.get("next_check")) or EPOCH, d.get("state", State.PENDING.value),
                   int(d.get("open_alerts", 0)))


@dataclass(frozen=True)
class Decision:
    """One notification to send (after claiming it) and the alert record it leaves behind."""

    notification: Notification
    seq: int
    alert: dict[str, Any]  # fields of the alert document to merge


@dataclass
class Outcome:
    summary: Summary
    decisions: list[Decision]
    states: dict[str, State]  # partition -> state of every partition looked at
    newly_late: bool


def _candidates(policy: Policy, s: Summary, now: datetime, bad: Sequence[tuple[datetime, datetime]]) -> list[datetime]:
    starts = ended(policy, s.watermark, now)
    current = policy.cadence.floor(now)
    if current >= s.watermark and expected(policy, current) and any(
            overlaps(current, policy.cadence.next(current), a, b) for a, b in bad):
        starts.append(current)  # at risk before its period even ends: the early warning
    return starts


def wanted(policy: Policy, s: Summary, now: datetime, bad: Sequence[tuple[datetime, datetime]] = ()) -> list[str]:
    """Partitions whose landing the evaluation must read (not yet known to have landed)."""
    known = set(s.landed_beyond)
    fmt = policy.cadence.format
    return [p for p in (fmt(t) for t in _candidates(policy, s, now, bad)) if p not in known]


def evaluate_endpoint(policy: Policy, s: Summary, landed: dict[str, datetime], acked: set[str],
                      bad: Sequence[tuple[datetime, datetime]], now: datetime) -> Outcome:
    """Give every expected partition of one endpoint its state and decide its alert transitions.

    Args:
        s: the summary as stored.
        landed: landing time of every partition of ``wanted`` that has landed.
        acked: partitions whose open alert has been acknowledged (read when a re-notify is due).
        bad: periods of upstream partitions that are late (or at risk themselves).
    """
    cadence = policy.cadence
    previous = {e.partition: e for e in s.open}
    known = set(s.landed_beyond)
    states: dict[str, State] = {}
    decisions: list[Decision] = []
    entries: list[Entry] = []
    newly_late = False
    landed_flags: list[tuple[datetime, str, bool]] = []
    stripped = {d["partition"]: d["state"] for d in s.strip}
    for start in _candidates(policy, s, now, bad):
        name = cadence.format(start)
        c = clocks(policy, start)
        upstream_late = any(overlaps(start, c.end, a, b) for a, b in bad)
        is_landed = name in known or name in landed
        landed_at = landed.get(name)
        prev = previous.pop(name, None)
        if name in known and landed_at is None:
            st = State(stripped.get(name, State.OK.value))  # landed earlier: keep the state it landed with
        else:
            st = state(c, landed_at if is_landed else None, now, upstream_late)
            if is_landed and landed_at is None:
                st = State.OK
        states[name] = st
        landed_flags.append((start, name, is_landed))
        lvl = level(c, now)
        view = prev.alert_view() if prev else None
        if view is not None and name in acked:
            view = AlertView(view.level, True, True, view.notified_at, view.seq)
        overdue = max(now - c.end, timedelta(0))
        note = decide(view, lvl, is_landed, now, policy.renotify_after)
        alert = dict(prev.alert) if prev and prev.alert else None
        if alert is not None and name in acked:
            alert["acked"] = True
        if note is not None:
            seq = (view.seq if view else 0) + 1
            late_by = (landed_at - c.late_at) if landed_at is not None else None
            severity = pagerduty_severity(policy, note.level)
            text = summary_text(policy, name, note.action, note.level, overdue, late_by)
            details: dict[str, Any] = {"state": st.value, "period_end": c.end.isoformat(),
                                       "deadline": c.late_at.isoformat(), "severity_tier": policy.severity}
            if late_by is not None:
                details["landed_late_seconds"] = max(0, int(late_by.total_seconds()))
            notification = Notification(policy.name, name, policy.owner, note.action, severity, text,
                                        int(overdue.total_seconds()) if not is_landed else
                                        max(0, int(((landed_at or now) - c.end).total_seconds())), details)
            record: dict[str, Any] = {"endpoint": policy.name, "partition": name, "owner": policy.owner,
                                      "dedup_key": notification.dedup_key, "level": note.level.value,
                                      "severity": severity, "summary": text, "seq": seq, "notified_at": now,
                                      "state": st.value, "start": start, "deadline": c.late_at,
                                      "overdue_seconds": notification.overdue_seconds,
                                      "tier": policy.severity}
            if note.action is Action.TRIGGER:
                record.update({"open": True, "opened_at": now, "acked": False, "resolved_at": None})
                alert = {"level": note.level.value, "seq": seq, "notified_at": now, "opened_at": now, "acked": False}
            elif note.action is Action.RESOLVE:
                record.update({"open": False, "resolved_at": now, "landed_at": landed_at})
                alert = None
            else:
                if note.action is Action.ESCALATE:
                    record["escalated_at"] = now
                    newly_late = True
                assert alert is not None
                alert.update({"level": note.level.value, "seq": seq, "notified_at": now})
            decisions.append(Decision(notification, seq, record))
        if note is not None and note.action is Action.TRIGGER and note.level is Level.LATE:
            newly_late = True
        if not is_landed:
            entries.append(Entry(name, start, st, alert))
        elif alert is not None and note is None:
            pass  # resolved above
    # Alerts on partitions no longer in the window (given up after MAX_OPEN) stay as they are.
    for leftover in previous.values():
        if leftover.alert:
            entries.append(leftover)
    entries.sort(key=lambda e: e.start)

    # Advance the watermark over the leading landed partitions.
    watermark = s.watermark
    beyond: list[str] = []
    advancing = True
    for start, name, is_landed in landed_flags:
        if advancing and is_landed:
            watermark = cadence.next(start)
            continue
        if advancing and not is_landed:
            advancing = False
            watermark = start
        if is_landed:
            beyond.append(name)
    if landed_flags and advancing:
        watermark = cadence.next(landed_flags[-1][0])
    elif not landed_flags:
        # Nothing expected since the watermark (weekend, or not ended): move it to the newest
        # candidate start not after now so that weekends are not walked again.
        watermark = s.watermark

    # An entry that left without landing (the current period, no longer at risk) leaves the strip too.
    gone = {p for p, e in previous.items() if not e.alert}
    strip = [d for d in s.strip if d["partition"] not in states and d["partition"] not in gone]
    strip += [{"partition": cadence.format(t), "state": states[cadence.format(t)].value}
              for t, _, _ in landed_flags]
    strip.sort(key=lambda d: d["partition"])
    strip = strip[-STRIP:]

    if entries:
        next_check = min(e.start for e in entries)  # open partitions are looked at every evaluation
    else:
        t = watermark
        while not expected(policy, t) or cadence.format(t) in beyond:
            t = cadence.next(t)
        c = clocks(policy, t)
        next_check = c.warn_at if c.warn_at is not None else c.late_at
    open_states = [e.state for e in entries]
    settled = [d["state"] for d in strip if d["state"] in (State.OK.value, State.LANDED_LATE.value)]
    strip_state = State(settled[-1]) if settled else State.PENDING
    worst_state = worst(open_states) or strip_state
    out = Summary(watermark, beyond, entries, strip, next_check, worst_state.value,
                  sum(1 for e in entries if e.alert))
    return Outcome(out, decisions, states, newly_late)


def current_state(policy: Policy, entry: Entry, now: datetime) -> State:
    """An open entry's state as of ``now`` (for views between evaluations)."""
    st = state(clocks(policy, entry.start), None, now, entry.state is State.AT_RISK)
    return st
