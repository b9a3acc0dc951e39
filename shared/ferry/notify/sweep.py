"""Notifications that stopped without a trace: found, retried or dead-lettered, and shown.

A delivery record left ``failed`` (Pub/Sub never redelivered: the subscription gave up, the emulator lost
the message, the function was killed between attempts) or ``sending`` (notify was killed mid-POST) would
stay so forever. Every evaluation (``POST /v1/evaluate``, every five minutes) sweeps them: a record whose
last attempt is older than ``STUCK_AFTER`` — longer than Pub/Sub's retry window (max backoff 300 s plus
the function's 120 s timeout, several times over) — is either

- **retried**: the notification (its message, kept on the record when it was claimed) is published
  again to ``ferry-alerts``; the channels already delivered answer "duplicate", this one gets its next
  attempt (a ``sending`` claim older than the lease is taken over); or
- **dead-lettered**: when its attempts are spent (or its message was not kept: a record of before this
  sweep), it is marked ``dead``, published to ``ferry-alerts-dead-letter`` (held there, replayable) and its
  channel shows failing in ``ferry status``.

Idempotent: a retried record is stamped ``swept_at`` and not retried again within ``STUCK_AFTER``; a
dead one is never looked at again.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from ferry import log
from ferry.broker.base import Message, Publisher
from ferry.notify import messages as msgs
from ferry.notify.records import CHANNELS, DELIVERIES
from ferry.store.base import DocumentStore, Op, Where

logger = log.get("notify.sweep")
DEAD_LETTER_TOPIC = "ferry-alerts-dead-letter"
STUCK_AFTER = timedelta(minutes=15)


@dataclass(frozen=True)
class Swept:
    delivery: str
    action: Literal["retried", "dead_lettered"]
    status: str
    attempts: int


def last_activity(doc: dict[str, Any]) -> datetime | None:
    """When the delivery last did something: its failure, its claim, or the sweep's last retry."""
    times = [t for t in (doc.get("failed_at"), doc.get("claimed_at"), doc.get("swept_at")) if isinstance(t, datetime)]
    return max(times) if times else None


def is_stuck(doc: dict[str, Any], now: datetime, stuck_after: timedelta = STUCK_AFTER) -> bool:
    """A delivery not done (``failed``/``sending``) and silent for longer than its retry window (pure)."""
    if doc.get("status") not in ("failed", "sending"):
        return False
    last = last_activity(doc)
    return last is None or last <= now - stuck_after


def decide(doc: dict[str, Any], max_attempts: int) -> Literal["retried", "dead_lettered"]:
    """Retry while attempts are left and the message was kept; else dead-letter (pure)."""
    if int(doc.get("attempts") or 0) >= max_attempts or not doc.get("message"):
        return "dead_lettered"
    return "retried"


def stuck(store: DocumentStore, now: datetime, stuck_after: timedelta = STUCK_AFTER) -> list[tuple[str, dict[str, Any]]]:
    """The stuck deliveries (two equality queries: ``failed``, ``sending``)."""
    found = []
    for status in ("failed", "sending"):
        found += [(did, d) for did, d in store.query(DELIVERIES, [Where("status", "==", status)])
                  if is_stuck(d, now, stuck_after)]
    return found


def sweep(store: DocumentStore, publisher: Publisher, now: datetime, max_attempts: int,
          stuck_after: timedelta = STUCK_AFTER) -> list[Swept]:
    """Retry or dead-letter every stuck delivery (see the module). Returns what it did."""
    out: list[Swept] = []
    for did, doc in stuck(store, now, stuck_after):
        action = decide(doc, max_attempts)
        attempts = int(doc.get("attempts") or 0)
        data, attributes = _message(doc)
        labels = {"owner": doc.get("team", ""), "channel": doc.get("channel", ""), "component": "notify"}
        if action == "retried":
            publisher.publish(msgs.ALERTS_TOPIC, [Message(data, {**attributes, "swept": "1"})])
            store.write([Op.set(DELIVERIES, did, {"swept_at": now, "sweeps": int(doc.get("sweeps") or 0) + 1},
                                merge=True)])
            log.event(logger, log.WARNING, f"delivery {did} silent since {last_activity(doc)} ({doc.get('status')}, "
                                           f"{attempts}/{max_attempts}): notification published again", labels=labels)
        else:
            error = f"stuck {doc.get('status')} since {last_activity(doc)} after {attempts} attempt(s)"
            if doc.get("error"):
                error += f": {doc['error']}"
            publisher.publish(DEAD_LETTER_TOPIC, [Message(data, {
                **attributes, "channel": f"{doc.get('team')}:{doc.get('channel')}", "error": error[:500],
                "attempts": str(attempts)})])
            store.write([
                Op.set(DELIVERIES, did, {"status": "dead", "swept_at": now, "error": error[:500]}, merge=True),
                Op.set(CHANNELS, f"{doc.get('team')}:{doc.get('channel')}", {
                    "team": doc.get("team"), "channel": doc.get("channel"), "type": doc.get("type"),
                    "failing": True, "last_error": error[:500], "last_failure_at": now,
                    "last_dead_lettered_at": now}, merge=True)])
            log.event(logger, log.CRITICAL, f"delivery {did}: {error}; dead-lettered", labels=labels)
        out.append(Swept(did, action, str(doc.get("status")), attempts))
    return out


def kept_message(data: bytes, attributes: dict[str, str]) -> dict[str, Any]:
    """What a delivery record keeps of its notification so the sweep can publish it again."""
    return {"data": base64.b64encode(data).decode(), "attributes": dict(attributes)}


def _message(doc: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    kept = doc.get("message")
    if isinstance(kept, dict) and kept.get("data"):
        return base64.b64decode(kept["data"]), {str(k): str(v) for k, v in (kept.get("attributes") or {}).items()}
    # a record of before the sweep kept no message: dead-letter what it knows
    known = {k: doc.get(k) for k in ("notification", "team", "channel", "dedup_key", "event_action")}
    return json.dumps(known, default=str).encode(), {"notification_id": str(doc.get("notification") or "")}
