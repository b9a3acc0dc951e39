"""Ingest: validate a batch of event envelopes per event, publish the valid ones, quarantine the rest.

The answer is given only after every publish is confirmed (the publisher port waits on every future):
an event a client saw accepted is on its topic. A retried request republishes with the same event ids;
closing drops the duplicates.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ferry import log
from ferry.broker.base import Message, Publisher
from ferry.domain import periods, schemas
from ferry.domain.manifests import EventType
from ferry.gabo.envelopes import Envelope, encode_payload, envelope, event_line, iso, shown
from ferry.gabo.ingest.ledger import Ledger
from ferry.gabo.names import Names, sampled
from ferry.services.redaction import schema_reason
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
        hit = _Compiled(et, schemas.validator(et.spec.schema_))
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
    chunks: dict[str, int] = field(default_factory=dict)  # per type, the ledger documents its record takes

    def to_dict(self) -> dict[str, Any]:
        return {"received": self.received, "accepted": self.accepted, "rejected_count": len(self.rejected),
                "rejected": self.rejected, "quarantined": self.quarantined, "shadowed": self.shadowed}


class IngestService:
    def __init__(self, manifests: ManifestRepository, publisher: Publisher, ledger: Ledger | None = None,
                 overlap: bool = True) -> None:
        """``overlap`` False: the ledger's writes wait in line with the checks and the publish (how the
        ledger was first written; the benchmark measures both)."""
        self.manifests = manifests
        self.publisher = publisher
        self.ledger = ledger
        self.overlap = overlap

    def ingest(self, items: list[Any], now: datetime, stamp: Callable[[], datetime] | None = None,
               quarantine: bool = True, replayed: bool = False) -> IngestResult:
        """Validate and publish ``items`` (parsed envelopes); every publish confirmed before returning.
        The invalid ones are quarantined (unless ``quarantine`` is False: a replay leaves them where
        they were); ``replayed`` marks the accepted lines as replayed (``_SUCCESS`` counts them).

        With a ledger, the request is registered in flight (``since`` = ``now``; committed while the events
        are checked) before its events are stamped (``stamp()``, no earlier than ``now``) and published,
        and its accepted ids are recorded while they are published (the answer waits for both): closing
        never closes a period this request may still fill.

        Raises:
            InfraError: a publish was not confirmed (the client should retry the request).
        """
        result = IngestResult(received=len(items))
        envelopes = [_envelope(i) for i in items]
        wanted = sorted({e.type for e in envelopes if isinstance(e, Envelope)})
        request_id = uuid.uuid4().hex
        # The in-flight registration commits while the types are read and the events checked (a thread
        # of its own: the commit waits on the network, the checks on the CPU); the stamp is taken only
        # once it committed. It names the types the envelopes name (a few; a type that turns out unknown
        # is removed with the answer) — more than REGISTER_EARLY_MAX wait for the read to know them.
        early = self.ledger is not None and self.overlap and 0 < len(wanted) <= REGISTER_EARLY_MAX
        registered = _registrar().submit(self.ledger.begin, request_id, wanted, now) \
            if self.ledger is not None and early else None
        try:
            records = self.manifests.get_many("EventType", wanted) if wanted else {}
        except BaseException:
            self._abandon(registered, request_id, wanted)
            raise
        types: dict[str, _Compiled] = {}
        broken: dict[str, str] = {}  # a stored type that no longer compiles fails its events only
        for n, r in records.items():
            try:
                types[n] = compiled(n, r.generation, r.manifest, r.fingerprint)
            except Exception as exc:  # noqa: BLE001 - isolation: whatever it is, it is that type's
                broken[n] = f"event type {n!r} cannot be checked: {type(exc).__name__}: {exc}"[:1000]
        begun = wanted if early else sorted(types)
        if self.ledger is not None and begun and not early:
            if self.overlap:
                registered = _registrar().submit(self.ledger.begin, request_id, begun, now)
            else:
                self.ledger.begin(request_id, begun, now)
                registered = Future()
                registered.set_result(None)
        try:
            admitted, refused = self._check(items, envelopes, types, broken)
            if registered is not None:
                registered.result()
            self._publish(result, request_id, begun, registered, admitted, refused, types, now, stamp,
                          quarantine, replayed)
        except BaseException:
            # whatever failed after the registration (a check, the stamp, an encoding, a publish, the
            # record): the client is told to retry, and the request's ledger records go with it
            self._abandon(registered, request_id, begun, result.chunks)
            raise
        if result.rejected:
            log.event(logger, log.WARNING, f"ingest rejected {len(result.rejected)} of {result.received} event(s)",
                      first=result.rejected[:3])
        return result

    def _publish(self, result: IngestResult, request_id: str, begun: list[str], registered: Future[None] | None,
                 admitted: list[tuple[Envelope, _Compiled, bytes]],
                 refused: list[tuple[int, Any, Envelope | None, str]], types: dict[str, _Compiled],
                 now: datetime, stamp: Callable[[], datetime] | None, quarantine: bool, replayed: bool) -> None:
        """Stamp, publish the accepted events and the quarantined ones, and record what was accepted."""
        if stamp is not None:
            now = max(now, stamp())  # stamped after the registration committed: never before its ``since``
        received_at = iso(now)
        out: dict[str, list[Message]] = {}
        accepted_ids: dict[str, list[str]] = {}
        for index, item, env, reason in refused:
            type_ = env.type if env else _text(item, "type")
            result.rejected.append({"index": index, "id": env.id if env else _text(item, "id"),
                                    "type": type_, "reason": reason})
            t = types.get(type_) if type_ else None
            if t is not None and quarantine:  # an unknown type has no quarantine topic: the answer is the record
                attrs = {"event_type": t.event_type.name, "received_at": received_at, "reason": reason[:1000]}
                if env:
                    attrs["event_id"] = env.id
                out.setdefault(Names(t.event_type.name).quarantine, []).append(Message(_raw(item), attrs))
                result.quarantined += 1
        for env, t, payload in admitted:
            names = Names(env.type)
            msg = Message(event_line(env, now, replayed, payload),
                          {"event_type": env.type, "event_id": env.id, "received_at": received_at})
            out.setdefault(names.topic, []).append(msg)
            accepted_ids.setdefault(env.type, []).append(env.id)
            result.accepted += 1
            if sampled(env.id, t.event_type.spec.darkload):
                out.setdefault(names.shadow, []).append(msg)
                result.shadowed += 1
        stamped = {t: (periods.partitioning(types[t].event_type.spec.partitioning).floor(now), ids)
                   for t, ids in accepted_ids.items()}
        chunks = {t: Ledger.chunks(len(ids)) for t, ids in accepted_ids.items()}
        ledger = self.ledger
        # The accepted record is written while the events are published: the answer waits for both. Until
        # the publish is confirmed the record's ids count as missing (the period waits); a failed publish
        # deletes the record (the client is told to retry). Not when it mirrors events to a darkload
        # shadow: the shadow's closing knows only the in-flight half of the ledger, which must then last
        # until every publish is confirmed.
        recorded = _registrar().submit(
            lambda: ledger.confirm(request_id, Ledger.accepted_record(stamped), since=now, begun=begun)) \
            if ledger is not None and self.overlap and not result.shadowed else None
        result.chunks = chunks
        try:
            for topic, messages in out.items():
                self.publisher.publish(topic, messages)
            if recorded is not None:
                recorded.result()
            elif ledger is not None:
                ledger.confirm(request_id, Ledger.accepted_record(stamped), since=now, begun=begun)
        except BaseException:
            if recorded is not None:
                with contextlib.suppress(Exception):
                    recorded.result()  # the caller's deletion comes after the record's write
            raise

    @staticmethod
    def _check(items: list[Any], envelopes: list[Envelope | str], types: dict[str, _Compiled],
               broken: dict[str, str]) -> tuple[list[tuple[Envelope, _Compiled, bytes]],
                                              list[tuple[int, Any, Envelope | None, str]]]:
        """Each event admitted (with its type and its payload's bytes) or refused (index, item, envelope,
        reason), in order. The size and validity rule is the one delivery applies (``envelope``,
        ``encode_payload``, ``line_limit``): an admitted event's line is one delivery writes."""
        admitted: list[tuple[Envelope, _Compiled, bytes]] = []
        refused: list[tuple[int, Any, Envelope | None, str]] = []

        def check(env: Envelope | str) -> tuple[_Compiled, bytes] | tuple[None, str]:
            if not isinstance(env, Envelope):
                return None, env
            t = types.get(env.type)
            if t is None:
                return None, broken.get(env.type) or f"unknown event type {json.dumps(env.type)}"
            payload = encode_payload(env.payload)
            if isinstance(payload, str):
                return None, payload
            limit = t.event_type.spec.max_event_bytes
            if len(payload) > limit:
                return None, f"payload of {len(payload)} bytes exceeds max_event_bytes {limit}"
            # its line is at most line_limit(limit), the bound delivery checks: the envelope's fields are
            # bounded (envelopes.LINE_OVERHEAD; the worst case is asserted in test_gabo_envelope_properties)
            error = next(iter(t.validator.iter_errors(env.payload)), None)
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "(payload)"
                # the field path and the rule, never the payload's value (logs, quarantine attributes)
                return None, schema_reason(shown(where), str(error.validator), error.validator_value)
            return t, payload

        for index, (item, env) in enumerate(zip(items, envelopes, strict=True)):
            try:
                t, checked = check(env)
            except Exception as exc:  # noqa: BLE001 - one event's failure of any kind is its rejection
                t, checked = None, shown(f"could not be checked: {type(exc).__name__}: {exc}"[:1000])
            if t is not None and isinstance(env, Envelope) and isinstance(checked, bytes):
                admitted.append((env, t, checked))
            else:
                reason = checked
                refused.append((index, item, env if isinstance(env, Envelope) else None, str(reason)))
        return admitted, refused

    def _abandon(self, registered: Future[None] | None, request_id: str, begun: list[str],
                 chunks: dict[str, int] | None = None) -> None:
        """The request failed (the client is told to retry): its ledger records, if written, go."""
        if registered is None or self.ledger is None:
            return
        with contextlib.suppress(Exception):  # else its in-flight record expires (IN_FLIGHT_TTL)
            registered.result()
            self.ledger.abandon(request_id, begun, chunks or {})


REGISTER_EARLY_MAX = 16  # event types a request may register before they are read (else after)
_REGISTRAR: ThreadPoolExecutor | None = None
_REGISTRAR_LOCK = threading.Lock()


def _registrar() -> ThreadPoolExecutor:
    """The threads that commit ledger registrations beside the checks (one process-wide pool)."""
    global _REGISTRAR
    with _REGISTRAR_LOCK:
        if _REGISTRAR is None:
            _REGISTRAR = ThreadPoolExecutor(max_workers=16, thread_name_prefix="ledger-begin")
        return _REGISTRAR


def _envelope(item: Any) -> Envelope | str:
    try:
        return envelope(item)
    except Exception as exc:  # noqa: BLE001 - an envelope that breaks the check is its event's rejection
        return f"not an event envelope: {type(exc).__name__}"


def _text(item: Any, key: str) -> str | None:
    """A string field of a rejected item, for the answer (anything else is not echoed back)."""
    value = item.get(key) if isinstance(item, dict) else None
    return shown(value[:256]) if isinstance(value, str) else None


def _raw(item: Any) -> bytes:
    """The quarantined body: the item as JSON, or a note when it cannot be encoded (too deep...)."""
    try:
        return json.dumps(item, separators=(",", ":"), default=str).encode()
    except (RecursionError, ValueError, TypeError) as exc:
        return json.dumps({"unencodable": f"{type(exc).__name__}"}).encode()
