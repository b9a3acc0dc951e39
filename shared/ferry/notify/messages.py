"""Notifications as they travel, and the bodies each channel type receives (pure: data in, JSON out).

A notification on the alerts topic is a PagerDuty Events v2–shaped event with the owning team
(``owner``); any subsystem may publish one (see :func:`alert_message`). The ``notify`` function turns
it into one body per channel of the owning team whose ``min_severity`` it reaches.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ferry.broker.base import Message
from ferry.domain.manifests import SEVERITIES, Channel

ALERTS_TOPIC = "ferry-alerts"
WEBHOOK_SCHEMA = "ferry.notification/v1"
Severity = Literal["info", "warning", "error", "critical"]
RANK = {s: i for i, s in enumerate(SEVERITIES)}
# Slack's limits: header text 150 characters, section text 3000, a field 2000, at most 10 fields.
SLACK_HEADER, SLACK_TEXT, SLACK_FIELD, SLACK_FIELDS = 150, 3000, 2000, 10


class AlertEvent(BaseModel):
    """A notification on the alerts topic (unknown fields are ignored: producers may add more)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    dedup_key: str = Field(min_length=1, max_length=255)
    event_action: Literal["trigger", "acknowledge", "resolve"]
    severity: Severity
    summary: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    source: str = "ferry"
    payload: dict[str, Any] = Field(default_factory=dict)
    custom_details: dict[str, Any] = Field(default_factory=dict)

    @property
    def kind(self) -> str:
        """What the alert is about (``late-data``, ``low_volume``, ...): PagerDuty's ``class``."""
        return str(self.payload.get("class") or self.custom_details.get("class") or "alert")

    @property
    def subject(self) -> str:
        """The thing alerted on (the endpoint for Datamon): PagerDuty's ``component``."""
        return str(self.payload.get("component") or self.custom_details.get("endpoint") or self.dedup_key)


def alert_message(owner: str, dedup_key: str, summary: str, *, severity: Severity = "error",
                  action: Literal["trigger", "resolve"] = "trigger", kind: str = "alert", subject: str | None = None,
                  source: str = "ferry", details: dict[str, Any] | None = None,
                  notification_id: str | None = None) -> Message:
    """A message for the alerts topic that ``notify`` routes to ``owner``'s channels.

    Any subsystem alerts its owners this way: publish the result to ``ALERTS_TOPIC``. ``dedup_key``
    names the problem (a trigger and its resolve share it); ``notification_id`` names this one
    notification (default: a hash of the body, so a republished message is the same notification).
    """
    event = {"dedup_key": dedup_key, "event_action": action, "severity": severity, "summary": summary,
             "source": source, "owner": owner,
             "payload": {"summary": summary, "severity": severity, "source": source,
                         "component": subject or dedup_key, "group": owner, "class": kind},
             "custom_details": dict(details or {})}
    data = json.dumps(event, default=str, sort_keys=True).encode()
    attributes = {"dedup_key": dedup_key, "event_action": action, "owner": owner, "severity": severity,
                  "notification_id": notification_id or notification_id_of(data, {})}
    return Message(data, attributes)


def notification_id_of(data: bytes, attributes: dict[str, str]) -> str:
    """The notification's identity: the producer's ``notification_id``, else a hash of its bytes."""
    given = attributes.get("notification_id")
    if given:
        return given
    return "sha-" + hashlib.sha256(data).hexdigest()[:32]


def routes(channels: list[Channel], event: AlertEvent) -> list[Channel]:
    """The channels whose ``min_severity`` the event reaches (a resolve follows its trigger's severity)."""
    return [c for c in channels if RANK[event.severity] >= RANK[c.min_severity]]


# -- bodies ----------------------------------------------------------------------------------------

def pagerduty_body(event: AlertEvent, routing_key: str) -> dict[str, Any]:
    """A PagerDuty Events API v2 event (``POST /v2/enqueue``); ``dedup_key`` makes repeats harmless."""
    body: dict[str, Any] = {"routing_key": routing_key, "event_action": event.event_action,
                            "dedup_key": event.dedup_key}
    if event.event_action == "trigger":
        body["payload"] = {"summary": event.summary[:1024], "source": event.source, "severity": event.severity,
                           "component": event.subject, "group": event.owner, "class": event.kind,
                           "custom_details": event.custom_details}
        body["client"] = "Ferry"
    return body


def _mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def title(event: AlertEvent) -> str:
    if event.event_action == "resolve":
        return f"Resolved: {event.subject}"
    what = {"late-data": "Late data", "low_volume": "Low volume"}.get(event.kind, event.kind.replace("_", " "))
    return f"{what} ({event.severity}): {event.subject}"


def slack_body(event: AlertEvent) -> dict[str, Any]:
    """A Slack incoming-webhook message in Block Kit: header, summary with fields, context."""
    details = event.custom_details
    fields = [("Owner", event.owner), ("Severity", event.severity), ("Transition", details.get("transition")),
              ("Partitions", details.get("late_partitions")), ("Oldest", details.get("oldest")),
              ("Newest", details.get("newest")), ("Partition", details.get("partition")),
              ("Deadline", details.get("deadline"))]
    shown = [{"type": "mrkdwn", "text": f"*{k}*\n{_mrkdwn(str(v))}"[:SLACK_FIELD]}
             for k, v in fields if v not in (None, "")][:SLACK_FIELDS]
    section: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": _mrkdwn(event.summary)[:SLACK_TEXT]}}
    if shown:
        section["fields"] = shown
    return {
        "text": _mrkdwn(f"{title(event)} — {event.summary}")[:SLACK_TEXT],  # the notification's fallback
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title(event)[:SLACK_HEADER], "emoji": True}},
            section,
            {"type": "context", "elements": [{"type": "mrkdwn", "text": _mrkdwn(
                f"{event.source} · dedup key {event.dedup_key}")[:SLACK_FIELD]}]},
        ],
    }


def webhook_body(event: AlertEvent, notification_id: str, team: str, channel: str) -> dict[str, Any]:
    """The generic webhook's JSON body (its schema is documented in docs/datamon.md)."""
    return {"schema": WEBHOOK_SCHEMA, "id": notification_id, "team": team, "channel": channel,
            "event_action": event.event_action, "severity": event.severity, "summary": event.summary,
            "dedup_key": event.dedup_key, "kind": event.kind, "subject": event.subject, "source": event.source,
            "details": event.custom_details}
