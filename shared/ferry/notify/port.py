"""What other subsystems may use of notifications: the health of the teams' channels, and the sweep
of deliveries that stopped without a trace (run by Datamon's evaluation).

(The other half of the port is :mod:`ferry.notify.messages`: the message any subsystem publishes to
the alerts topic.) Datamon's status shows channels whose last delivery failed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ferry.notify.records import CHANNELS
from ferry.store.base import DocumentStore, Where


def failing_channels(store: DocumentStore) -> list[dict[str, Any]]:
    """Channels whose last delivery failed (``ferry status`` shows them), by team and name."""
    rows = []
    for _, d in store.query(CHANNELS, [Where("failing", "==", True)]):
        rows.append({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in d.items()})
    return sorted(rows, key=lambda r: (r.get("team", ""), r.get("channel", "")))


def sweep_stuck(store: DocumentStore, publisher: Any, now: datetime, max_attempts: int) -> dict[str, Any]:
    """Retry or dead-letter the deliveries stuck ``failed``/``sending`` past their retry window
    (:mod:`ferry.notify.sweep`); returns counts and the deliveries touched."""
    from ferry.notify.sweep import sweep

    done = sweep(store, publisher, now, max_attempts)
    return {"retried": sum(d.action == "retried" for d in done),
            "dead_lettered": sum(d.action == "dead_lettered" for d in done),
            "deliveries": [d.delivery for d in done]}


def stuck_deliveries(store: DocumentStore, now: datetime) -> list[dict[str, Any]]:
    """Deliveries silent past their retry window (``ferry status`` shows them until the sweep acts)."""
    from ferry.notify.sweep import last_activity, stuck

    return [{"delivery": did, "team": d.get("team"), "channel": d.get("channel"), "status": d.get("status"),
             "attempts": d.get("attempts"), "since": (last_activity(d) or now).isoformat(), "error": d.get("error")}
            for did, d in stuck(store, now)]


def reopen_delivery(store: DocumentStore, data: bytes, attributes: dict[str, str], now: datetime) -> str | None:
    """Make the delivery a notify dead letter names (its ``channel`` attribute, ``team:name``) deliverable
    again — ``failed`` with its attempts reset — so a replayed notification is tried on that channel
    (the channels already delivered stay delivered). Returns the delivery's id, None without a channel."""
    from ferry.notify.messages import notification_id_of
    from ferry.notify.sweep import DELIVERIES
    from ferry.store.base import Op

    channel = attributes.get("channel") or ""
    if ":" not in channel or channel.endswith(":-"):
        return None  # unrouted: no delivery was ever claimed
    did = f"{notification_id_of(data, attributes)}~{channel}"
    if store.get(DELIVERIES, did) is not None:
        store.write([Op.set(DELIVERIES, did, {"status": "failed", "attempts": 0, "swept_at": now}, merge=True)])
    return did
