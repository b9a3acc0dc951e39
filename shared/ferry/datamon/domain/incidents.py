"""Incidents: one open incident per endpoint (and its tier) grouping its late partitions — no storms.

The endpoint's unlanded partitions at warn or late are the incident's members (count, oldest,
newest). The incident is triggered when the first one reaches its clock, escalated when it first
holds a late one while at warn, re-notified every ``renotify_after`` while nobody acknowledged it,
and resolved when its last member lands. Members joining or landing in between update the incident
without a notification. Partitions whose deadline passed before the endpoint was registered are
history: shown as late, members only with ``alert_on_history``.

While a silence matches, notifications are held (the decision says so); a trigger held back is sent
as a re-notification once the silence is over and the incident is still open.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ferry.datamon.domain.alerts import Action, pagerduty_severity
from ferry.datamon.domain.sla import Level, Policy, _utc

CLASS_LATE = "late-data"
CLASS_LOW_VOLUME = "low_volume"


@dataclass(frozen=True)
class Member:
    """A partition of the incident: unlanded and past its warn (or late) clock."""

    partition: str
    start: datetime
    level: Level


@dataclass(frozen=True)
class Incident:
    """An endpoint's open incident, as its summary remembers it."""

    id: str
    number: int
    level: Level
    seq: int
    opened_at: datetime
    notified_at: datetime
    count: int
    oldest: str
    newest: str
    acked: bool = False
    held: bool = False  # the last notification was held back by a silence
    sent: bool = True   # some notification of it went out (else its resolve is held too)

    def to_doc(self) -> dict[str, Any]:
        return {"id": self.id, "number": self.number, "level": self.level.value, "seq": self.seq,
                "opened_at": self.opened_at, "notified_at": self.notified_at, "count": self.count,
                "oldest": self.oldest, "newest": self.newest, "acked": self.acked, "held": self.held,
                "sent": self.sent}

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> Incident:
        opened, notified = _utc(d["opened_at"]), _utc(d["notified_at"])
        assert opened is not None and notified is not None
        return cls(d["id"], int(d["number"]), Level(d["level"]), int(d["seq"]), opened, notified, int(d["count"]),
                   d["oldest"], d["newest"], bool(d.get("acked")), bool(d.get("held")), bool(d.get("sent", True)))


def incident_id(endpoint: str, number: int) -> str:
    """Deterministic: overlapping evaluators that open the same incident compute the same id."""
    return f"{endpoint}~{number}"


@dataclass(frozen=True)
class IncidentDecision:
    """An incident transition: what to notify (unless ``held``) and the incident it leaves (None once
    resolved). ``incident`` is the state after the transition; for a resolve, the one resolved."""

    action: Action
    incident: Incident
    after: Incident | None
    severity: str
    summary: str
    at: datetime
    tier: str
    held: bool = False
    kind: str = CLASS_LATE
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def claim_id(self) -> str:
        return f"{self.incident.id}#{self.incident.seq}"

    @property
    def dedup_key(self) -> str:
        return self.incident.id

    def to_event(self, policy: Policy, source: str = "ferry-datamon") -> dict[str, Any]:
        """The PagerDuty Events v2–shaped message on the alerts topic (``owner`` routes it)."""
        i = self.incident
        return {
            "dedup_key": self.dedup_key, "event_action": "resolve" if self.action is Action.RESOLVE else "trigger",
            "severity": self.severity, "summary": self.summary, "source": source, "owner": policy.owner,
            "payload": {"summary": self.summary, "severity": self.severity, "source": source,
                        "component": policy.name, "group": policy.owner, "class": self.kind},
            "custom_details": {"endpoint": policy.name, "incident": i.id, "transition": self.action.value,
                               "level": i.level.value, "late_partitions": i.count, "oldest": i.oldest,
                               "newest": i.newest, "severity_tier": self.tier,
                               "opened_at": i.opened_at.isoformat(), **self.details},
        }


def _summary(policy: Policy, action: Action, i: Incident) -> str:
    span = i.oldest if i.count == 1 else f"{i.count} partitions, oldest {i.oldest}, newest {i.newest}"
    if action is Action.RESOLVE:
        return f"{policy.name} resolved: every late partition landed ({span})"
    what = "late" if i.level is Level.LATE else "at warning"
    prefix = {Action.ESCALATE: "escalated: ", Action.RENOTIFY: "still open: "}.get(action, "")
    return f"{prefix}{policy.name} is {what}: {span} not landed (owner {policy.owner})"


def decide_incident(policy: Policy, incident: Incident | None, members: list[Member], number: int,
                    now: datetime, *, acked: bool = False, silenced: bool = False) -> tuple[Incident | None, IncidentDecision | None]:
    """The endpoint's incident after this evaluation, and its transition (or None).

    Args:
        incident: the open incident as stored (None: none open).
        members: the unlanded partitions at warn or late that may notify (history excluded).
        number: incidents opened for this endpoint so far (the next one is ``number + 1``).
        acked: someone acknowledged the open incident (read when a re-notification is due).
        silenced: a silence matches the endpoint now: triggers, escalations and re-notifications are held.
    """
    if incident is not None and acked and not incident.acked:
        incident = replace(incident, acked=True)
    if not members:
        if incident is None:
            return None, None
        # A trigger that was never sent needs no resolve either.
        return None, _decision(policy, Action.RESOLVE, replace(incident, seq=incident.seq + 1), None, now,
                               held=not incident.sent)
    ordered = sorted(members, key=lambda m: m.start)
    lvl = Level.LATE if any(m.level is Level.LATE for m in ordered) else Level.WARN
    count, oldest, newest = len(ordered), ordered[0].partition, ordered[-1].partition
    if incident is None:
        opened = Incident(incident_id(policy.name, number + 1), number + 1, lvl, 1, now, now, count, oldest, newest,
                          held=silenced, sent=not silenced)
        return opened, _decision(policy, Action.TRIGGER, opened, opened, now, held=silenced)
    current = replace(incident, count=count, oldest=oldest, newest=newest)
    if incident.level is Level.WARN and lvl is Level.LATE:
        action = Action.ESCALATE
    elif not incident.acked and (incident.held and not silenced or now - incident.notified_at >= policy.renotify_after):
        action = Action.RENOTIFY
    else:
        return current, None
    after = replace(current, level=lvl, seq=incident.seq + 1, notified_at=now, held=silenced,
                    sent=incident.sent or not silenced)
    return after, _decision(policy, action, after, after, now, held=silenced)


def _decision(policy: Policy, action: Action, incident: Incident, after: Incident | None, now: datetime,
              held: bool) -> IncidentDecision:
    return IncidentDecision(action, incident, after, pagerduty_severity(policy, incident.level),
                            _summary(policy, action, incident), now, policy.severity, held)


# -- volume ----------------------------------------------------------------------------------------

def volume_slots(policy: Policy, start: datetime) -> list[str]:
    """The partitions a landing's records are compared with: the last ``volume_window`` ones of the
    same slot (``volume_season`` apart, e.g. the same weekday), not before the endpoint's start."""
    cadence = policy.cadence
    out = []
    for k in range(1, policy.volume_window + 1):
        t = cadence.floor(start - k * policy.volume_season)
        if policy.start is not None and t < cadence.floor(policy.start):
            break
        out.append(cadence.format(t))
    return out


def low_volume(policy: Policy, partition: str, records: int, history: list[int], now: datetime,
               silenced: bool = False) -> IncidentDecision | None:
    """A ``low_volume`` alert when ``records`` is below ``min_ratio`` x the median of ``history``
    (the same slot's recent records; nothing to compare with: no alert)."""
    if policy.min_ratio is None or not history:
        return None
    usual = float(statistics.median(history))
    if usual <= 0 or records >= policy.min_ratio * usual:
        return None
    ratio = records / usual
    alert = Incident(f"{policy.name}@{partition}~{CLASS_LOW_VOLUME}", 0, Level.LATE, 1, now, now, 1, partition,
                     partition, held=silenced, sent=not silenced)
    summary = (f"{policy.name} {partition} landed with {records} records, {ratio:.0%} of the usual {usual:g} "
               f"(median of {len(history)} same-slot partitions; minimum {policy.min_ratio:.0%}) (owner {policy.owner})")
    severity = "info" if policy.severity == "info" else "error"
    return IncidentDecision(Action.TRIGGER, alert, None, severity, summary, now, policy.severity, silenced,
                            CLASS_LOW_VOLUME, {"partition": partition, "records": records, "expected_records": usual,
                                               "ratio": round(ratio, 4), "min_ratio": policy.min_ratio,
                                               "compared_with": len(history)})
