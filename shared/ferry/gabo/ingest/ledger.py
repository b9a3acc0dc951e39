"""The ingest ledger: what ingest accepted, per (request, event type) — never one hot document.

Ingest writes one ``gabo_ledger`` document per request and event type (chunks of ``CHUNK`` events):

1. before it stamps ``received_at`` and publishes, the document is created ``in_flight`` with ``since``
   (the earliest instant its events may be stamped at): while it is in flight, no period ending after
   ``since`` may close — a paused or slow ingest keeps its period open (the watermark covers
   stamp → publish);
2. while the events are published (the answer waits for both), the same document becomes ``accepted``
   with the period its events were stamped in, their count and an 8-byte digest of each accepted id
   (``digest``); a failed request deletes it.

Closing asks :meth:`Ledger.completeness` whether a period may close: not while an ingest into it is in
flight, and not while an accepted id is missing from what was delivered. It compares the two sides
shard by shard (:func:`compare_by_shard`): the documents are read a page at a time into 8 bytes per
digest, grouped by the shard bits the digests start with, and only one group at a time becomes sets. A document in flight for longer
than ``IN_FLIGHT_TTL`` (beyond any ingest's timeout) belongs to an ingest that died before its answer:
its events were never confirmed to a client, so they are not owed.
"""

from __future__ import annotations

import bisect
import hashlib
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ferry import log
from ferry.broker.base import Message
from ferry.domain import periods
from ferry.domain.manifests import SLA_SEVERITY, EventType
from ferry.errors import Conflict, FerryError
from ferry.gabo.names import partition_key
from ferry.notify import messages as msgs
from ferry.store.base import Doc, DocumentStore, Op, Where

logger = log.get("gabo.ledger")

LEDGER, DELIVERED = "gabo_ledger", "gabo_delivered"
# The longest an ingest request can live (the ingest function's timeout, infra/gabo.yaml) plus clock skew
# between its instance and the closer's: an in-flight record older than this belongs to a request that
# died before its answer — it holds its period no longer.
INGEST_TIMEOUT = timedelta(seconds=60)
IN_FLIGHT_TTL = INGEST_TIMEOUT + timedelta(seconds=10)
CHUNK = 100_000  # digests per document: 800 KB, below Firestore's 1 MiB
DIGEST = 8
PAGE = 50  # documents per read of a period's ledger: at most 40 MB of digests in flight, usually KBs


def digest(event_id: str) -> bytes:
    """8 bytes per id: ``crc32(id)`` (the bits that name its shard) then 4 bytes of blake2b."""
    return hashed(event_id)[1]


def hashed(event_id: str, crc32: Any = zlib.crc32, blake2b: Any = hashlib.blake2b) -> tuple[int, bytes]:
    """``(crc32(id), digest(id))``: the shard hash and the ledger digest of one id, computed once (delivery
    calls it per event; the defaults bind the hash functions for speed)."""
    raw = event_id.encode()
    h = crc32(raw)
    return h, h.to_bytes(4, "big") + blake2b(raw, digest_size=4).digest()


def digests(event_ids: Iterable[str]) -> set[bytes]:
    return {digest(i) for i in event_ids}


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _split(blob: bytes) -> list[bytes]:
    return [blob[i:i + DIGEST] for i in range(0, len(blob), DIGEST)]


def sorted_blob(blob: bytes) -> bytes:
    """The digests in order, so that closing groups them by shard a slice at a time."""
    return b"".join(sorted(_split(blob)))


class ShardedDigests:
    """Digests grouped by their first byte — the top 8 bits of ``crc32(id)``, so each of a period's
    shards (``k`` ≤ 8 bits) is a union of groups and each group lies within one shard (``k`` > 8): 8
    bytes per digest in one ``bytearray`` per group, no object per id. The completeness check turns one
    group at a time into a set (:func:`compare_by_shard`), so what it holds per id beyond those 8 bytes
    is bounded by one shard, not by the period."""

    GROUPS = 256

    def __init__(self) -> None:
        self.groups = [bytearray() for _ in range(self.GROUPS)]
        self.size = 0  # digests added (duplicates included)

    def add(self, blob: bytes) -> None:
        n = len(blob) // DIGEST
        groups, firsts = self.groups, bytes(blob[:n * DIGEST:DIGEST])  # each digest's group
        if firsts != bytes(sorted(firsts)):  # not written in order (older records): one by one
            for i in range(0, n * DIGEST, DIGEST):
                groups[blob[i]] += blob[i:i + DIGEST]
        else:  # written sorted (``sorted_blob``): one slice per group present
            pos = 0
            while pos < n:
                end = bisect.bisect_right(firsts, firsts[pos], pos)
                groups[firsts[pos]] += blob[pos * DIGEST:end * DIGEST]
                pos = end
        self.size += n

    def take(self, group: int) -> set[bytes]:
        """The distinct digests of one group, which is released."""
        blob, self.groups[group] = self.groups[group], bytearray()
        return set(_split(bytes(blob)))

    def distinct(self) -> int:
        return sum(len(set(_split(bytes(g)))) for g in self.groups)

    def __bool__(self) -> bool:
        return self.size > 0


def compare_by_shard(accepted: ShardedDigests, delivered: ShardedDigests) -> tuple[int, int, int]:
    """(distinct accepted, distinct delivered, accepted not delivered), group by group — at most one
    group's two sets exist at a time. Both arguments are consumed (emptied)."""
    n_accepted = n_delivered = n_missing = 0
    for group in range(ShardedDigests.GROUPS):
        want, have = accepted.take(group), delivered.take(group)
        n_accepted += len(want)
        n_delivered += len(have)
        n_missing += len(want - have)
        del want, have
    accepted.size = delivered.size = 0
    return n_accepted, n_delivered, n_missing


@dataclass
class PeriodLedger:
    """What ingest has told of one (type, period)."""

    accepted: ShardedDigests = field(default_factory=ShardedDigests)  # digests of the accepted ids
    requests: int = 0
    in_flight: list[str] = field(default_factory=list)  # ids of ledger documents still publishing

    @property
    def count(self) -> int:
        return self.accepted.distinct()


@dataclass(frozen=True)
class Completeness:
    """The ledger's verdict on one period: may it close, and if not, why."""

    accepted: int
    delivered: int
    missing: int
    in_flight: int

    @property
    def complete(self) -> bool:
        return self.missing == 0 and self.in_flight == 0

    def reason(self, event_type: str, period: str) -> str | None:
        if self.in_flight:
            return f"{self.in_flight} ingest request(s) into {event_type} {period} not yet confirmed"
        if self.missing:
            return f"{self.missing:,} accepted events of {event_type} {period} are missing"
        return None

    def to_dict(self) -> dict[str, int]:
        return {"accepted": self.accepted, "delivered": self.delivered, "missing": self.missing,
                "in_flight": self.in_flight}


class Ledger:
    def __init__(self, store: DocumentStore) -> None:
        self.store = store
        self._in_flight: dict[tuple[str, datetime], list[tuple[str, Doc]]] = {}

    # ingest's side ------------------------------------------------------------------------------------
    @staticmethod
    def doc_id(event_type: str, request_id: str, chunk: int = 0) -> str:
        return f"{event_type}~{request_id}" + (f"~{chunk}" if chunk else "")

    def begin(self, request_id: str, event_types: Sequence[str], since: datetime) -> None:
        """Register an ingest about to stamp and publish events of ``event_types`` (one commit).

        Idempotent: a request id is fresh per request; a retried request is a new one.
        """
        if event_types:
            self.store.write([Op.create(LEDGER, self.doc_id(t, request_id), {
                "event_type": t, "state": "in_flight", "since": since, "request": request_id})
                for t in event_types])

    @staticmethod
    def accepted_record(accepted: dict[str, tuple[datetime, list[str]]]) -> dict[str, tuple[datetime, int, bytes]]:
        """Per type: the period its events were stamped in, their count and their digests in order (what
        :meth:`confirm` writes; computed while the publishes are confirmed)."""
        return {t: (start, len(ids), b"".join(sorted(digest(i) for i in ids))) for t, (start, ids) in accepted.items()}

    def confirm(self, request_id: str, accepted: dict[str, tuple[datetime, int, bytes]], since: datetime,
                begun: Sequence[str]) -> None:
        """Every publish confirmed: record per type (``accepted_record``) the period its events were
        stamped in and their ids (one commit; a type of ``begun`` that accepted nothing is removed)."""
        ops: list[Op] = []
        for t in begun:
            if t not in accepted:
                ops.append(Op.delete(LEDGER, self.doc_id(t, request_id)))
        for t, (start, count, blob) in accepted.items():
            for n, i in enumerate(range(0, Ledger.chunks(count) * CHUNK, CHUNK)):  # each chunk in order too
                ops.append(Op.set(LEDGER, self.doc_id(t, request_id, n), {
                    "event_type": t, "state": "accepted", "since": since, "request": request_id,
                    "period": partition_key(start), "accepted": min(CHUNK, count - i),
                    "digests": blob[i * DIGEST:(i + CHUNK) * DIGEST]}))
        if ops:
            self.store.write(ops)

    def abandon(self, request_id: str, event_types: Sequence[str], chunks: dict[str, int] | None = None) -> None:
        """The request failed (the client was told so): nothing of it is owed — its documents go (``chunks``:
        per type, how many its accepted record took)."""
        self.store.write([Op.delete(LEDGER, self.doc_id(t, request_id, n))
                          for t in event_types for n in range(max(1, (chunks or {}).get(t, 1)))])

    @staticmethod
    def chunks(count: int) -> int:
        """Documents an accepted record of ``count`` ids takes."""
        return max(1, -(-count // CHUNK))

    # delivery's side ----------------------------------------------------------------------------------
    def delivered(self, event_type: str, records: dict[datetime, tuple[str, bytes]]) -> None:
        """Record, per period, the digests of the event ids one flush staged — only those: a dead-lettered
        event is not delivered — under the name of its staging object (before the ack; a redelivered batch
        rewrites its own record)."""
        ops = []
        for start, (name, blob) in records.items():
            key, blob = partition_key(start), sorted_blob(blob)
            for n, i in enumerate(range(0, max(1, len(blob)), CHUNK * DIGEST)):
                ops.append(Op.set(DELIVERED, f"{event_type}~{key}~{name}" + (f"~{n}" if n else ""), {
                    "event_type": event_type, "period": key, "count": len(blob[i:i + CHUNK * DIGEST]) // DIGEST,
                    "digests": blob[i:i + CHUNK * DIGEST]}))
        if ops:
            self.store.write(ops)

    def delivered_count(self, event_type: str, start: datetime) -> int:
        """Events delivered into a period, as delivery counted them (redeliveries included)."""
        return sum(int(d.get("count", 0)) for _, d in self.store.query(
            DELIVERED, [Where("event_type", "==", event_type), Where("period", "==", partition_key(start))]))

    def delivered_digests(self, event_type: str, start: datetime) -> ShardedDigests:
        out = ShardedDigests()
        for doc in self._paged(DELIVERED, [Where("event_type", "==", event_type),
                                           Where("period", "==", partition_key(start))]):
            out.add(doc.get("digests") or b"")
        return out

    def _paged(self, collection: str, where: list[Where]) -> Iterator[Doc]:
        """The matching documents a page at a time (``PAGE``, in id order): a period's ledger is never
        held as a list of documents, only as the digests taken from them."""
        after = None
        while True:
            rows = self.store.query(collection, where, limit=PAGE, start_after=after)
            for _, doc in rows:
                yield doc
            if len(rows) < PAGE:
                return
            after = rows[-1][0]

    # closing's side -----------------------------------------------------------------------------------
    def period(self, event_type: str, start: datetime, end: datetime, now: datetime) -> PeriodLedger:
        """The accepted ids of (``event_type``, period ``start``) and the ingests that may still stamp
        into it (in flight since before ``end``, not yet expired)."""
        out = PeriodLedger()
        for doc in self._paged(LEDGER, [Where("event_type", "==", event_type),
                                        Where("period", "==", partition_key(start))]):
            out.accepted.add(doc.get("digests") or b"")
            out.requests += 1
        out.in_flight = [i for i, doc in self.in_flight(event_type, now) if _utc(doc["since"]) < end]
        return out

    def in_flight(self, event_type: str, now: datetime) -> list[tuple[str, Doc]]:
        """Ingest requests of ``event_type`` registered and not yet confirmed, younger than the TTL (one
        query per type and instant: a close run asks once for all its periods)."""
        key = (event_type, now)
        if key not in self._in_flight:
            rows = self.store.query(LEDGER, [Where("event_type", "==", event_type),
                                             Where("state", "==", "in_flight")])
            self._in_flight = {key: [(i, d) for i, d in rows if _utc(d["since"]) + IN_FLIGHT_TTL > now]}
        return self._in_flight[key]

    def completeness(self, event_type: str, start: datetime, end: datetime, now: datetime) -> Completeness:
        """Compare what ingest accepted into a period with what delivery staged of it.

        Events delivered into another period (late ones moved on) count where ingest stamped them:
        delivery files an event under the period of its ``received_at``, as ingest does.
        """
        ledger = self.period(event_type, start, end, now)
        if not ledger.accepted:
            return Completeness(0, 0, 0, len(ledger.in_flight))
        accepted, delivered, missing = compare_by_shard(ledger.accepted, self.delivered_digests(event_type, start))
        return Completeness(accepted, delivered, missing, len(ledger.in_flight))

    def accepted_since(self, event_type: str, start: datetime) -> dict[str, int]:
        """Accepted events (as ingest counted them, retries included) per period key, from ``start`` on."""
        out: dict[str, int] = {}
        where = [Where("event_type", "==", event_type), Where("state", "==", "accepted"),
                 Where("period", ">=", partition_key(start))]
        for _, doc in self.store.query(LEDGER, where):
            out[doc["period"]] = out.get(doc["period"], 0) + int(doc.get("accepted", 0))
        return out


# A period short of accepted events waits; once it has waited this long past the moment it could have
# closed, its owners are alerted (once per period) with the shortfall.
MISSING_ALERT_AFTER = timedelta(minutes=10)
ALERTS = "datamon_alerts"  # the alerts `ferry alerts` lists, routed to the owning team


def shortfall_alert(et: EventType, period: str, verdict: Completeness, now: datetime) -> Doc:
    summary = (f"{verdict.missing:,} accepted events of {et.name} {period} are missing "
               f"({verdict.accepted:,} accepted, {verdict.accepted - verdict.missing:,} delivered): the period "
               "stays open, no _SUCCESS is written")
    return {"id": f"{et.endpoint_name}@{period}#missing", "endpoint": et.endpoint_name, "partition": period,
            "owner": et.metadata.owner, "level": "late", "severity": et.spec.sla.severity, "state": "missing",
            "summary": summary, "open": True, "opened_at": now, "notified_at": now, "acked": False,
            "resolved_at": None, "seq": 1, "missing": verdict.missing, "accepted": verdict.accepted}


class LedgerGate:
    """The close gate of the ledger: a period may close only when no ingest into it is in flight and
    every id ingest accepted into it reached staging (a dead-lettered one did not). Otherwise it waits, with
    the reason; a shortfall still there ``MISSING_ALERT_AFTER`` past the period's close time raises one
    owner-routed alert (created once, published to ``ferry-alerts``)."""

    def __init__(self, ledger: Ledger, publish: Callable[[str, list[Message]], Any] | None = None) -> None:
        self.ledger = ledger
        self.publish = publish

    def __call__(self, et: EventType, start: datetime, end: datetime, now: datetime) -> str | None:
        verdict = self.ledger.completeness(et.name, start, end, now)
        period = periods.partitioning(et.spec.partitioning).format(start)
        if verdict.missing and not verdict.in_flight:
            due = end + periods.parse_duration(et.spec.close_after) + MISSING_ALERT_AFTER
            if now >= due:
                self._alert(et, period, verdict, now)
        elif verdict.complete and verdict.accepted:
            self._resolve(et, period, now)
        return verdict.reason(et.name, period)

    def _resolve(self, et: EventType, period: str, now: datetime) -> None:
        aid = f"{et.endpoint_name}@{period}#missing"
        doc = self.ledger.store.get(ALERTS, aid)
        if doc is not None and doc.get("open"):
            self.ledger.store.write([Op.set(ALERTS, aid, {"open": False, "resolved_at": now}, merge=True)])
            self._publish(et, {**doc, "summary": f"the missing events of {et.name} {period} arrived: it closed"},
                          "resolve")

    def _alert(self, et: EventType, period: str, verdict: Completeness, now: datetime) -> None:
        doc = shortfall_alert(et, period, verdict, now)
        try:
            self.ledger.store.write([Op.create(ALERTS, doc["id"], doc)])
        except Conflict:
            return  # raised already (by this or an overlapping close)
        log.event(logger, 40, doc["summary"], labels={"event_type": et.name, "owner": et.metadata.owner})
        self._publish(et, doc, "trigger")

    def _publish(self, et: EventType, doc: Doc, action: Literal["trigger", "resolve"]) -> None:
        """The alert (or its resolution) as a notification the ``notify`` function routes to the owner's
        channels (one per action: its id is the alert's and the action)."""
        if self.publish is None:
            return
        severity = SLA_SEVERITY.get(et.spec.sla.severity, "error")
        m = msgs.alert_message(str(et.metadata.owner), doc["id"], doc["summary"], severity=severity, action=action,
                               kind="gabo.missing", subject=et.endpoint_name, source="ferry-gabo",
                               details={"partition": doc["partition"], "missing": doc["missing"],
                                        "accepted": doc["accepted"]},
                               notification_id=f"{doc['id']}:{action}")
        try:
            self.publish(msgs.ALERTS_TOPIC, [Message(m.data, {**m.attributes, "kind": "gabo.missing",
                                                              "alert": doc["id"]})])
        except FerryError as exc:  # the alert stands (listed by `ferry alerts`); the reconcile restores the topic
            log.event(logger, 40, f"alert {doc['id']} not published: {exc}", labels={"event_type": et.name})


class InFlightGate:
    """The darkload shadow's close gate: the first half of the ledger's rule only — no ingest into the
    period in flight (its sampled events may still be published). Whether every id arrived is what the
    darkload report then checks against the primary; the shadow never waits for it, nor alerts on it."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def __call__(self, et: EventType, start: datetime, end: datetime, now: datetime) -> str | None:
        flying = [i for i, doc in self.ledger.in_flight(et.name, now) if _utc(doc["since"]) < end]
        period = periods.partitioning(et.spec.partitioning).format(start)
        return Completeness(0, 0, 0, len(flying)).reason(et.name, period)
