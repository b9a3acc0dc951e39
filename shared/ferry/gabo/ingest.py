"""Ingest: validate a batch of event envelopes per event, publish the valid ones, quarantine the rest.

The answer is given only after every publish is confirmed (the publisher port waits on every future):
an event a client saw accepted is on its topic. A retried request republishes with the same event ids;
closing drops the duplicates.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jsonschema

from ferry import log
from ferry.broker.base import Message, Publisher
from ferry.domain.manifests import EventType
from ferry.gabo import core
from ferry.store.manifests import ManifestRepository

logger = log.get("gabo.ingest")


@dataclass(frozen=True)
class _Compiled:
    event_type: EventType
    validator: Any


_CACHE: dict[tuple[str, int, str], _Compiled] = {}
_CACHE_LOCK = threading.Lock()


def compiled(name: str, generation: int, manifest: dict[str, Any], fingerprint: str = "") -> _Compiled:
    """The type's validator, compiled once per (type, generation, fingerprint) and process (the
    fingerprint tells apart two stores — projects, tests — holding different types of one name)."""
    key = (name, generation, fingerprint)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is None:
        et = EventType.model_validate(manifest)
        cls = jsonschema.validators.validator_for(et.spec.schema_, default=jsonschema.Draft202012Validator)
        hit = _Compiled(et, cls(et.spec.schema_, format_checker=cls.FORMAT_CHECKER))
        with _CACHE_LOCK:
            _CACHE[key] = hit
    return hit


@dataclass
class IngestResult:
    received: int = 0
    accepted: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    quarantined: int = 0
    shadowed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"received": self.received, "accepted": self.accepted, "rejected_count": len(self.rejected),
                "rejected": self.rejected, "quarantined": self.quarantined, "shadowed": self.shadowed}


def sampled(event_id: str, fraction: float) -> bool:
    """Deterministic per id, so a retried request mirrors the same events."""
    if fraction <= 0:
        return False
    h = int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < fraction


class IngestService:
    def __init__(self, manifests: ManifestRepository, publisher: Publisher) -> None:
        self.manifests = manifests
        self.publisher = publisher

    def ingest(self, items: list[Any], now: datetime) -> IngestResult:
        """Validate and publish ``items`` (parsed envelopes); every publish confirmed before returning.

        Raises:
            InfraError: a publish was not confirmed (the client should retry the request).
        """
        result = IngestResult(received=len(items))
        received_at = core.iso(now)
        envelopes = [core.envelope(i) for i in items]
        wanted = sorted({e.type for e in envelopes if isinstance(e, core.Envelope)})
        records = self.manifests.get_many("EventType", wanted) if wanted else {}
        types = {n: compiled(n, r.generation, r.manifest, r.fingerprint) for n, r in records.items()}
        out: dict[str, list[Message]] = {}

        def reject(index: int, item: Any, env: core.Envelope | None, reason: str) -> None:
            result.rejected.append({"index": index, "id": env.id if env else _get(item, "id"),
                                    "type": env.type if env else _get(item, "type"), "reason": reason})
            t = types.get(env.type) if env else types.get(_get(item, "type") or "")
            if t is not None:  # an unknown type has no quarantine topic: the answer is the record
                attrs = {"event_type": t.event_type.name, "received_at": received_at, "reason": reason[:1000]}
                if env:
                    attrs["event_id"] = env.id
                out.setdefault(core.Names(t.event_type.name).quarantine, []).append(
                    Message(json.dumps(item, separators=(",", ":"), default=str).encode(), attrs))
                result.quarantined += 1

        for index, (item, env) in enumerate(zip(items, envelopes, strict=True)):
            if not isinstance(env, core.Envelope):
                reject(index, item, None, env)
                continue
            t = types.get(env.type)
            if t is None:
                reject(index, item, env, f"unknown event type {env.type!r}")
                continue
            size = len(json.dumps(env.payload, separators=(",", ":"), ensure_ascii=False).encode())
            if size > t.event_type.spec.max_event_bytes:
                reject(index, item, env, f"payload of {size} bytes exceeds max_event_bytes "
                                         f"{t.event_type.spec.max_event_bytes}")
                continue
            error = next(iter(t.validator.iter_errors(env.payload)), None)
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "(payload)"
                reject(index, item, env, f"schema: {where}: {error.message}"[:1000])
                continue
            names = core.Names(env.type)
            msg = Message(core.event_line(env, now),
                          {"event_type": env.type, "event_id": env.id, "received_at": received_at})
            out.setdefault(names.topic, []).append(msg)
            result.accepted += 1
            if sampled(env.id, t.event_type.spec.darkload):
                out.setdefault(names.shadow, []).append(msg)
                result.shadowed += 1
        for topic, messages in out.items():
            self.publisher.publish(topic, messages)
        if result.rejected:
            log.event(logger, 30, f"ingest rejected {len(result.rejected)} of {result.received} event(s)",
                      first=result.rejected[:3])
        return result


def _get(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, dict) else None
