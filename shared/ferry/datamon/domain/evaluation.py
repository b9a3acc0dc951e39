"""One endpoint's evaluation: every expected partition gets its SLA state and alert decision, and the
endpoint's summary (watermark, open partitions, heat strip, next check) moves on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ferry.datamon.domain.incidents import Incident, IncidentDecision, Member, decide_incident
from ferry.datamon.domain.sla import (
    EPOCH,
    Clocks,
    Level,
    Policy,
    State,
    _utc,
    clocks,
    ended,
    expected,
    level,
    overlaps,
    state,
    worst,
)

STRIP = 24  # recent partitions kept for the heat strip


@dataclass
class Entry:
    """An expected partition that has not landed (yet), as the summary remembers it."""

    partition: str
    start: datetime
    state: State

    def to_doc(self) -> dict[str, Any]:
        return {"partition": self.partition, "start": self.start, "state": self.state.value}

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> Entry:
        start = _utc(d["start"])
        assert start is not None
        return cls(d["partition"], start, State(d["state"]))


@dataclass
class Summary:
    """The evaluator's per-endpoint state: everything before ``watermark`` has landed (or was given
    up); ``landed_beyond`` are landed partitions after it; ``open`` the unlanded expected ones;
    ``incident`` the open incident (``incidents`` counts those ever opened: the next one's number)."""

    watermark: datetime
    landed_beyond: list[str] = field(default_factory=list)
    open: list[Entry] = field(default_factory=list)
    strip: list[dict[str, str]] = field(default_factory=list)
    next_check: datetime = EPOCH
    state: str = State.PENDING.value
    open_alerts: int = 0
    incident: Incident | None = None
    incidents: int = 0

    def to_doc(self) -> dict[str, Any]:
        return {"watermark": self.watermark, "landed_beyond": list(self.landed_beyond),
                "open": [e.to_doc() for e in self.open], "strip": list(self.strip),
                "next_check": self.next_check, "state": self.state, "open_alerts": self.open_alerts,
                "incident": self.incident.to_doc() if self.incident else None, "incidents": self.incidents}

    @classmethod
    def from_doc(cls, d: dict[str, Any], default_watermark: datetime) -> Summary:
        return cls(_utc(d.get("watermark")) or default_watermark, list(d.get("landed_beyond") or []),
                   [Entry.from_doc(e) for e in d.get("open") or []], list(d.get("strip") or []),
                   _utc(d.get("next_check")) or EPOCH, d.get("state", State.PENDING.value),
                   int(d.get("open_alerts", 0)), Incident.from_doc(d["incident"]) if d.get("incident") else None,
                   int(d.get("incidents", 0)))


@dataclass
class Outcome:
    summary: Summary
    decisions: list[IncidentDecision]
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


@dataclass(frozen=True)
class _Partition:
    """One candidate partition as this evaluation sees it."""

    name: str
    clocks: Clocks
    state: State
    landed: bool
    landed_at: datetime | None  # None when landed before this evaluation's reads


def _partition(policy: Policy, s: Summary, start: datetime, landed: dict[str, datetime],
               bad: Sequence[tuple[datetime, datetime]], now: datetime) -> _Partition:
    name = policy.cadence.format(start)
    c = clocks(policy, start)
    landed_at = landed.get(name)
    if name in s.landed_beyond and landed_at is None:  # landed earlier: keep the state it landed with
        stripped = {d["partition"]: d["state"] for d in s.strip}
        return _Partition(name, c, State(stripped.get(name, State.OK.value)), True, None)
    if name in landed:  # (a landing without a time counts as on time)
        return _Partition(name, c, state(c, landed_at, now) if landed_at else State.OK, True, landed_at)
    return _Partition(name, c, state(c, None, now, any(overlaps(start, c.end, a, b) for a, b in bad)), False, None)


def evaluate_endpoint(policy: Policy, s: Summary, landed: dict[str, datetime], acked: bool,
                      bad: Sequence[tuple[datetime, datetime]], now: datetime, silenced: bool = False) -> Outcome:
    """Give every expected partition of one endpoint its state and decide its incident's transition.

    Args:
        s: the summary as stored.
        landed: landing time of every partition of ``wanted`` that has landed.
        acked: the open incident has been acknowledged (read when a re-notify is due).
        bad: periods of upstream partitions that are late (or at risk themselves).
        silenced: a silence matches the endpoint: its notifications are held back.
    """
    previous = {e.partition: e for e in s.open}
    looked: list[tuple[datetime, _Partition]] = []
    entries: list[Entry] = []
    members: list[Member] = []
    newly_late = False
    for start in _candidates(policy, s, now, bad):
        p = _partition(policy, s, start, landed, bad, now)
        looked.append((start, p))
        prev = previous.pop(p.name, None)
        if p.landed:
            continue
        entries.append(Entry(p.name, start, p.state))
        lvl = level(p.clocks, now)
        if lvl is not Level.NONE and not policy.history(p.clocks.late_at):
            members.append(Member(p.name, start, lvl))
        newly_late = newly_late or (p.state is State.LATE and (prev is None or prev.state is not State.LATE))
    incident, decision = decide_incident(policy, s.incident, members, s.incidents, now, acked=acked,
                                         silenced=silenced)
    watermark, beyond = _advance(policy, s.watermark, looked)
    # An entry that left without landing (the current period, no longer at risk; one given up after
    # MAX_OPEN) leaves the strip too.
    strip = _strip(s, looked, set(previous))
    out = Summary(watermark, beyond, entries, strip, _next_check(policy, watermark, beyond, entries),
                  _worst(entries, strip).value, 1 if incident else 0, incident,
                  max(s.incidents, incident.number if incident else 0))
    return Outcome(out, [decision] if decision else [], {p.name: p.state for _, p in looked}, newly_late)


def _advance(policy: Policy, watermark: datetime, looked: list[tuple[datetime, _Partition]]) -> tuple[datetime, list[str]]:
    """Move the watermark over the leading landed partitions; the landed ones after it."""
    beyond: list[str] = []
    advancing = True
    for start, p in looked:
        if advancing and p.landed:
            watermark = policy.cadence.next(start)
            continue
        if advancing:
            advancing = False
            watermark = start
        if p.landed:
            beyond.append(p.name)
    # Nothing looked at (weekend, or not ended): the watermark stays, so weekends are not walked again.
    return watermark, beyond


def _strip(s: Summary, looked: list[tuple[datetime, _Partition]], gone: set[str]) -> list[dict[str, str]]:
    names = {p.name for _, p in looked}
    strip = [d for d in s.strip if d["partition"] not in names and d["partition"] not in gone]
    strip += [{"partition": p.name, "state": p.state.value} for _, p in looked]
    strip.sort(key=lambda d: d["partition"])
    return strip[-STRIP:]


def _next_check(policy: Policy, watermark: datetime, beyond: list[str], entries: list[Entry]) -> datetime:
    if entries:
        return min(e.start for e in entries)  # open partitions are looked at every evaluation
    cadence = policy.cadence
    t = watermark
    while not expected(policy, t) or cadence.format(t) in beyond:
        t = cadence.next(t)
    c = clocks(policy, t)
    return c.warn_at if c.warn_at is not None else c.late_at


def _worst(entries: list[Entry], strip: list[dict[str, str]]) -> State:
    settled = [d["state"] for d in strip if d["state"] in (State.OK.value, State.LANDED_LATE.value)]
    return worst([e.state for e in entries]) or (State(settled[-1]) if settled else State.PENDING)


def current_state(policy: Policy, entry: Entry, now: datetime) -> State:
    """An open entry's state as of ``now`` (for views between evaluations)."""
    return state(clocks(policy, entry.start), None, now, entry.state is State.AT_RISK)
