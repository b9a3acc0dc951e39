"""Alert decisions: one alert per (endpoint, partition), notified on its transitions only.

An unlanded partition that reaches its warn or late clock opens an alert (``trigger``); a warn alert
whose partition becomes late is escalated; an open alert nobody acknowledged is re-notified every
``renotify_after``; the landing resolves it. The decisions are typed values: the service turns them
into stored documents and PagerDuty Events v2–shaped messages.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from ferry.datamon.domain.sla import Level, Policy, State, _utc


class Action(enum.StrEnum):
    TRIGGER = "trigger"
    ESCALATE = "escalate"
    RESOLVE = "resolve"
    RENOTIFY = "renotify"


@dataclass(frozen=True)
class OpenAlert:
    """What an endpoint's summary remembers of a partition's open alert."""

    level: Level
    seq: int
    notified_at: datetime
    opened_at: datetime
    acked: bool = False

    def to_doc(self) -> dict[str, Any]:
        return {"level": self.level.value, "seq": self.seq, "notified_at": self.notified_at,
                "opened_at": self.opened_at, "acked": self.acked}

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> OpenAlert:
        notified = _utc(d["notified_at"])
        assert notified is not None
        return cls(Level(d["level"]), int(d.get("seq", 0)), notified, _utc(d.get("opened_at")) or notified,
                   bool(d.get("acked")))


@dataclass(frozen=True)
class Notify:
    action: Action
    level: Level


def decide(alert: OpenAlert | None, lvl: Level, landed: bool, now: datetime, renotify_after: timedelta) -> Notify | None:
    """The alert transition for one partition, or None. Notifications happen on transitions only."""
    if alert is None:
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


@dataclass(frozen=True)
class Decision:
    """One alert transition: the notification to send (after claiming it) and what the alert record
    becomes (the service writes it as the alert document)."""

    notification: Notification
    seq: int
    level: Level
    state: State            # the partition's SLA state when decided
    start: datetime         # the partition's period start
    deadline: datetime      # its late instant
    at: datetime            # when decided (notified_at; opened_at, escalated_at or resolved_at)
    tier: str               # the endpoint's severity tier (page | ticket | info)
    landed_at: datetime | None = None  # resolve: when the partition landed

    @property
    def action(self) -> Action:
        return self.notification.action

    @property
    def pages_late(self) -> bool:
        """A late partition's trigger or escalation (logged at error level; the rest at warning)."""
        return self.level is Level.LATE and self.action is not Action.RESOLVE


def alert_after(alert: OpenAlert | None, d: Decision) -> OpenAlert | None:
    """The partition's open alert once ``d`` is notified (None once resolved)."""
    if d.action is Action.RESOLVE:
        return None
    if alert is None or d.action is Action.TRIGGER:
        return OpenAlert(d.level, d.seq, d.at, d.at)
    return replace(alert, level=d.level, seq=d.seq, notified_at=d.at)
