"""``notify``: deliver each notification of the alerts topic to its owning team's channels.

Idempotent by construction: each (notification, channel) delivery is claimed by ``Op.create`` of
``notify_deliveries/{notification}~{team}:{channel}``; a redelivered message finds it ``delivered`` (or
``dead``) and posts nothing, and a claim still being worked on by another instance (a lease of
``LEASE``) makes this one nack instead of posting twice. PagerDuty's ``dedup_key`` makes the rare
repeat (an instance dying after the POST, before recording it) harmless there.

A failing channel is retried within the call (``HttpSender``), then by Pub/Sub redelivery (the call
raises); after ``max_attempts`` calls — or at once for an answer no retry can fix (a 4xx) — the
notification goes to the dead-letter topic ``ferry-alerts-dead-letter`` with the channel and the error,
and the channel is marked failing in ``notify_channels`` (``ferry status`` lists it) until a delivery
to it succeeds again. A message nobody can route is dead-lettered too: never dropped silently. A delivery that stops without
a trace (left ``failed`` or ``sending``: Pub/Sub never redelivered, notify was killed mid-POST) is found
by the sweep (:mod:`ferry.notify.sweep`, every evaluation) and retried or dead-lettered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pydantic

from ferry import log
from ferry.broker.base import Message, Publisher
from ferry.clock import Clock
from ferry.domain.manifests import Channel, Team, channel_secret_problem
from ferry.errors import Conflict, InfraError
from ferry.notify import messages as msgs
from ferry.notify.records import CHANNELS, DELIVERIES
from ferry.notify.secrets import SecretRefused, SecretStore, SecretUnavailable
from ferry.notify.sender import HttpSender, Sent
from ferry.notify.sweep import kept_message
from ferry.store.base import DocumentStore, Op
from ferry.store.manifests import ManifestRepository

logger = log.get("notify")
DEAD_LETTER_TOPIC = "ferry-alerts-dead-letter"
# A claim younger than this belongs to an instance still delivering it.
LEASE = timedelta(minutes=2)
MAX_ATTEMPTS = 4


class DeliveryPending(InfraError):
    """Some channel is to be retried later: the message is nacked and Pub/Sub redelivers it."""


def delivery_id(notification_id: str, team: str, channel: str) -> str:
    return f"{notification_id}~{team}:{channel}"


def channel_key(team: str, channel: str) -> str:
    return f"{team}:{channel}"


@dataclass
class Notifier:
    """Delivers notifications (the ``notify`` function's service)."""

    store: DocumentStore
    publisher: Publisher
    secrets: SecretStore
    clock: Clock
    sender: HttpSender
    pagerduty_url: str = "https://events.pagerduty.com/v2/enqueue"
    max_attempts: int = MAX_ATTEMPTS

    def handle(self, data: bytes, attributes: dict[str, str]) -> dict[str, Any]:
        """Deliver one message of the alerts topic to every channel of its owner it is routed to.

        Returns:
            the outcome per channel (``delivered``, ``duplicate``, ``dead_lettered``) and the notification id.
        Raises:
            DeliveryPending: a channel failed and is to be retried (the caller nacks the message).
            InfraError: the store or Pub/Sub failed (the caller nacks).
        """
        nid = msgs.notification_id_of(data, attributes)
        try:
            event = msgs.AlertEvent.model_validate_json(data)
        except (pydantic.ValidationError, ValueError) as exc:
            self._dead_letter(data, attributes, "-", f"not a notification: {exc}"[:500])
            log.event(logger, log.ERROR, f"dead-lettered a malformed notification {nid}", labels={"component": "notify"})
            return {"id": nid, "outcome": "malformed"}
        team = self._team(event.owner)
        channels = team.spec.channels if team else []
        if not channels:
            reason = "no such team" if team is None else "the team declares no channels"
            self._dead_letter(data, attributes, channel_key(event.owner, "-"), reason)
            self._health(event.owner, "-", "none", failing=True, error=f"unrouted: {reason}", dead_lettered=True)
            log.event(logger, log.ERROR, f"notification {nid} for {event.owner} has nowhere to go ({reason}): dead-lettered",
                      labels={"owner": event.owner, "component": "notify"}, dedup_key=event.dedup_key)
            return {"id": nid, "outcome": "unrouted", "channels": {}}
        outcomes = {c.name: self._deliver(event, nid, event.owner, c, data, attributes)
                    for c in msgs.routes(channels, event)}
        pending = sorted(n for n, o in outcomes.items() if o == "retry")
        if pending:
            raise DeliveryPending(f"notification {nid}: channel(s) {', '.join(pending)} of {event.owner} failed; "
                                  "retried on redelivery", {"channels": pending})
        return {"id": nid, "outcome": "done", "channels": outcomes}

    def _team(self, name: str) -> Team | None:
        rec = ManifestRepository(self.store).get("Team", name)
        if rec is None:
            return None
        model = rec.model()
        return model if isinstance(model, Team) else None

    # -- one channel -----------------------------------------------------------------------------

    def _deliver(self, event: msgs.AlertEvent, nid: str, team: str, channel: Channel, data: bytes,
                 attributes: dict[str, str]) -> str:
        did = delivery_id(nid, team, channel.name)
        now = self.clock.now()
        attempt = self._claim(did, nid, team, channel, event, now, kept_message(data, attributes))
        if attempt is None:
            return "duplicate"
        labels = {"owner": team, "channel": channel.name, "component": "notify"}
        try:
            url, body, headers = self._request(event, nid, team, channel)
            sent = self.sender.post(url, body, headers)
        except SecretUnavailable as exc:  # a refused reference: no retry can fix it
            sent = Sent(False, None, 0, exc.message, permanent=isinstance(exc, SecretRefused))
        done = self.clock.now()
        if sent.ok:
            self.store.write([
                Op.set(DELIVERIES, did, {"status": "delivered", "delivered_at": done, "http_status": sent.status,
                                         "tries": sent.tries, "error": None}, merge=True),
                self._health_op(team, channel.name, channel.type, failing=False, at=done)])
            log.event(logger, log.INFO, f"delivered {event.event_action} {event.dedup_key} to {team}:{channel.name}",
                      labels=labels, notification=nid, tries=sent.tries, attempt=attempt)
            return "delivered"
        dead = sent.permanent or attempt >= self.max_attempts
        self.store.write([
            Op.set(DELIVERIES, did, {"status": "dead" if dead else "failed", "failed_at": done,
                                     "http_status": sent.status, "tries": sent.tries, "error": sent.error}, merge=True),
            self._health_op(team, channel.name, channel.type, failing=True, at=done, error=sent.error,
                            dead_lettered=dead)])
        if dead:
            self._dead_letter(data, attributes, channel_key(team, channel.name), sent.error or "failed", attempt)
            log.event(logger, log.CRITICAL, f"channel {team}:{channel.name} failed {attempt} time(s): {event.dedup_key} "
                                  f"dead-lettered ({sent.error})", labels=labels, notification=nid)
            return "dead_lettered"
        log.event(logger, log.ERROR, f"channel {team}:{channel.name} failed (attempt {attempt}/{self.max_attempts}): "
                              f"{sent.error}", labels=labels, notification=nid)
        return "retry"

    def _claim(self, did: str, nid: str, team: str, channel: Channel, event: msgs.AlertEvent,
               now: datetime, message: dict[str, Any]) -> int | None:
        """This call's attempt number for the delivery, or None when it is done already.

        Raises:
            DeliveryPending: another instance holds a fresh claim (it is delivering right now).
        """
        doc: dict[str, Any] = {"notification": nid, "team": team, "channel": channel.name, "type": channel.type,
               "dedup_key": event.dedup_key, "event_action": event.event_action, "status": "sending",
               "attempts": 1, "claimed_at": now,
               "message": message}  # kept for the sweep (ferry.notify.sweep) should Pub/Sub never redeliver
        try:
            self.store.write([Op.create(DELIVERIES, did, doc)])
            return 1
        except Conflict:
            pass
        current = self.store.get(DELIVERIES, did) or {}
        if current.get("status") in ("delivered", "dead"):
            return None

        def take(txn: Any) -> int | None:
            cur: dict[str, Any] = txn.get(DELIVERIES, did) or doc
            if cur.get("status") in ("delivered", "dead"):
                return None
            claimed = cur.get("claimed_at")
            if cur.get("status") == "sending" and claimed is not None and claimed > now - LEASE:
                return -1
            n = int(cur.get("attempts", 0)) + 1
            txn.set(DELIVERIES, did, {**cur, "status": "sending", "attempts": n, "claimed_at": now})
            return n

        if current.get("status") == "sending" and current.get("claimed_at") and current["claimed_at"] > now - LEASE:
            raise DeliveryPending(f"delivery {did} is in progress elsewhere")
        attempt = self.store.transaction(take)
        if attempt == -1:
            raise DeliveryPending(f"delivery {did} is in progress elsewhere")
        return attempt

    def _request(self, event: msgs.AlertEvent, nid: str, team: str,
                 channel: Channel) -> tuple[str, dict[str, Any], dict[str, str]]:
        # checked at apply too; again here: a Team stored before the rule, or an apply path that skipped it,
        # must not make notify read another team's secret or the stack's own
        why = channel_secret_problem(team, channel.secret)
        if why:
            raise SecretRefused(f"channel {team}:{channel.name}: {why}")
        secret = self.secrets.resolve(channel.secret)
        headers = {"User-Agent": "ferry-notify", "Idempotency-Key": f"{nid}~{channel.name}"}
        if channel.type == "pagerduty":
            return self.pagerduty_url, msgs.pagerduty_body(event, secret), headers
        if channel.type == "slack":
            return secret, msgs.slack_body(event), headers
        headers["X-Ferry-Notification"] = nid
        return secret, msgs.webhook_body(event, nid, team, channel.name), headers

    # -- records ---------------------------------------------------------------------------------

    def _health_op(self, team: str, channel: str, kind: str, *, failing: bool, at: datetime,
                   error: str | None = None, dead_lettered: bool = False) -> Op:
        doc: dict[str, Any] = {"team": team, "channel": channel, "type": kind, "failing": failing}
        if failing:
            doc.update({"last_error": error, "last_failure_at": at})
            if dead_lettered:
                doc["last_dead_lettered_at"] = at
        else:
            doc["last_delivered_at"] = at
        return Op.set(CHANNELS, channel_key(team, channel), doc, merge=True)

    def _health(self, team: str, channel: str, kind: str, **kw: Any) -> None:
        self.store.write([self._health_op(team, channel, kind, at=self.clock.now(), **kw)])

    def _dead_letter(self, data: bytes, attributes: dict[str, str], channel: str, error: str,
                     attempts: int = 0) -> None:
        extra = {"channel": channel, "error": error[:500], "attempts": str(attempts)}
        self.publisher.publish(DEAD_LETTER_TOPIC, [Message(data, {**attributes, **extra})])


_built: tuple[Any, Notifier] | None = None


def notifier(services: Any) -> Notifier:
    """The Notifier of ``services`` (built once per process: its HTTP client keeps connections)."""
    global _built
    if _built is None or _built[0] is not services:
        settings = services.settings
        _built = (services, Notifier(services.store, services.publisher, services.secrets, services.clock,
                                     HttpSender(), settings.pagerduty_url, settings.notify_max_attempts))
    return _built[1]


def handle_message(services: Any, data: bytes, attributes: dict[str, str]) -> dict[str, Any]:
    """The ``notify`` function's body: one message of the alerts topic (raises to nack it)."""
    result = notifier(services).handle(data, attributes)
    log.event(logger, log.INFO, f"notification {result['id']}: {result['outcome']}", labels={"component": "notify"},
              result=json.loads(json.dumps(result, default=str)))
    return result
