"""Replay what Gabo set aside: ``ferry replay TYPE --from quarantine|dead-letter [--since]`` and
``ferry get quarantine TYPE`` (samples with their reasons).

Quarantined events (rejected at ingest, kept by the ``…-quarantine-hold`` subscription) are
validated again against the type's current schema: the valid ones go through ingest (published to
the type's topic, delivered into the open period; a partition that already closed counts them late)
and are acknowledged; the still-invalid ones are left where they were. Dead-lettered messages (poison
at delivery) that are now deliverable are published back to the topic. Idempotent by event id: a
message is acknowledged only once its event is published, a replay of one twice is a duplicate id
that closing drops, and a second replay finds only what is still invalid.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ferry.broker.base import Message, Publisher
from ferry.errors import BadRequest
from ferry.gabo.delivery.batching import Pulled, verdict
from ferry.gabo.envelopes import parse_iso
from ferry.gabo.names import Names

if TYPE_CHECKING:
    from ferry.domain.manifests import EventType
    from ferry.gabo.delivery.broker import DeliveryBroker
    from ferry.store.base import DocumentStore
    from ferry.store.manifests import ManifestRecord, ManifestRepository


class SetAside(Protocol):
    """What replay uses of Gabo's facade (``ferry.gabo.service.Gabo``): a type, the broker its holds are
    pulled from, and what ingest needs to take the events again."""

    store: DocumentStore
    manifests: ManifestRepository
    publisher: Publisher
    broker: DeliveryBroker

    def event_type(self, name: str) -> tuple[EventType, ManifestRecord]: ...

Source = Literal["quarantine", "dead-letter"]
BATCH = 500
HOLD_S = 600  # the still-invalid are leased away while the replay runs, released when it ends


def _hold(name: str, source: str) -> str:
    n = Names(name)
    if source == "quarantine":
        return n.hold(n.quarantine)
    if source == "dead-letter":
        return n.hold(n.dead_letter)
    raise BadRequest(f"--from is quarantine or dead-letter, not {source!r}")


def _received(p: Pulled) -> datetime:
    raw = p.attributes.get("received_at")
    try:
        return parse_iso(raw) if raw else p.publish_time
    except ValueError:
        return p.publish_time


def replay(gabo: SetAside, name: str, source: str, now: datetime, since: datetime | None = None,
           limit: int = 100_000) -> dict[str, Any]:
    """Replay the type's quarantined (or dead-lettered) messages received since ``since``.

    Returns counts: pulled, replayed, still_invalid (with sample reasons), skipped (before ``since``).
    """
    et, _ = gabo.event_type(name)
    sub = _hold(et.name, source)
    names = Names(et.name)
    leased: list[str] = []
    counts = {"pulled": 0, "replayed": 0, "still_invalid": 0, "skipped": 0}
    reasons: dict[str, int] = {}
    try:
        while counts["pulled"] < limit:
            batch = list(gabo.broker.pull(sub, min(BATCH, limit - counts["pulled"]), timeout_s=2.0))
            if not batch:
                break
            counts["pulled"] += len(batch)
            wanted = [p for p in batch if since is None or _received(p) >= since]
            skipped = [p.ack_id for p in batch if since is not None and _received(p) < since]
            counts["skipped"] += len(skipped)
            if source == "quarantine":
                done, bad = _replay_quarantined(gabo, wanted, now)
            else:
                done, bad = _replay_dead_letters(gabo, names.topic, et.name, et.spec.max_event_bytes, wanted)
            for reason in bad.values():
                reasons[reason] = reasons.get(reason, 0) + 1
            counts["replayed"] += len(done)
            counts["still_invalid"] += len(bad)
            if done:
                gabo.broker.ack(sub, done)
            hold = skipped + list(bad)
            if hold:  # out of this replay's way until it ends
                gabo.broker.extend(sub, hold, HOLD_S)
                leased += hold
    finally:
        if leased:  # back where they were: visible to the next replay and to `ferry get quarantine`
            gabo.broker.extend(sub, leased, 0)
    samples = sorted(reasons.items(), key=lambda kv: -kv[1])[:10]
    return {"event_type": et.name, "from": source, "since": since.isoformat() if since else None, **counts,
            "reasons": [{"reason": r, "count": c} for r, c in samples]}


def _replay_quarantined(gabo: SetAside, pulled: Sequence[Pulled], now: datetime) -> tuple[list[str], dict[str, str]]:
    from ferry.gabo.ingest.service import IngestService

    items, index_of = [], []
    bad: dict[str, str] = {}
    for p in pulled:
        try:
            items.append(json.loads(p.data))
            index_of.append(p.ack_id)
        except ValueError:
            bad[p.ack_id] = "unparseable: not JSON"
    if not items:
        return [], bad
    from ferry.gabo.ingest.ledger import Ledger

    result = IngestService(gabo.manifests, gabo.publisher,
                           Ledger(gabo.store)).ingest(items, now, quarantine=False, replayed=True)
    rejected = {r["index"]: r["reason"] for r in result.rejected}
    done = [ack for i, ack in enumerate(index_of) if i not in rejected]
    bad.update({index_of[i]: reason for i, reason in rejected.items()})
    return done, bad


def _replay_dead_letters(gabo: SetAside, topic: str, event_type: str, max_bytes: int,
                         pulled: Sequence[Pulled]) -> tuple[list[str], dict[str, str]]:
    good: list[Pulled] = []
    bad: dict[str, str] = {}
    for p in pulled:
        v = verdict(p, event_type, max_bytes)
        if isinstance(v, str):
            bad[p.ack_id] = v
        else:
            good.append(p)
    if good:
        gabo.publisher.publish(topic, [
            Message(p.data, {k: v for k, v in p.attributes.items() if k != "reason"}) for p in good])
    return [p.ack_id for p in good], bad


def samples(gabo: SetAside, name: str, source: str = "quarantine", limit: int = 20) -> dict[str, Any]:
    """Up to ``limit`` set-aside messages with their reasons (looked at, then left where they were)."""
    et, _ = gabo.event_type(name)
    sub = _hold(et.name, source)
    pulled = list(gabo.broker.pull(sub, limit, timeout_s=2.0))
    try:
        items = []
        for p in pulled:
            try:
                doc = json.loads(p.data)
            except ValueError:
                doc = {}
            items.append({"event_id": p.attributes.get("event_id") or (doc.get("id") if isinstance(doc, dict) else None),
                          "reason": p.attributes.get("reason", ""), "received_at": p.attributes.get("received_at"),
                          "data": p.data[:300].decode(errors="replace")})
    finally:
        if pulled:
            gabo.broker.extend(sub, [p.ack_id for p in pulled], 0)
    return {"event_type": et.name, "from": source, "items": items, "more": len(pulled) >= limit}
