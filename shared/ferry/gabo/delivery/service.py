"""Delivery: pull an event type's subscription, write gzip NDJSON staging objects, ack after the write.

Idempotent by construction: a staging object's name is a hash of its messages' ids, so a batch that is
redelivered whole (worker crashed after the write, before the ack) overwrites its own object; a batch
redelivered in a different composition yields another object and closing drops the duplicate ids.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ferry import log
from ferry.broker.base import Message, Publisher
from ferry.clock import Clock
from ferry.domain import periods
from ferry.domain.manifests import EventType
from ferry.gabo.closing.formats.ndjson import GzipLines
from ferry.gabo.delivery.batching import BatchLimits, Poison, Pulled, pull_behind, verdict
from ferry.gabo.delivery.broker import DeliveryBroker, Unanswered
from ferry.gabo.delivery.sink import Sink
from ferry.gabo.envelopes import parse_iso
from ferry.gabo.ingest import ledger
from ferry.gabo.names import MAX_SHARD_BITS, PRIMARY, STREAM_PATTERN, Names, shard_labels, staging_name
from ferry.gabo.state import GaboState

logger = log.get("gabo.delivery")

# The delivery subscription's ack deadline. Short on purpose: workers extend their leases while they
# work, and a crashed worker's messages come back after this long (see docs/gabo.md).
ACK_DEADLINE_S = 15
PULL_MAX = 1000
# How long one pull may wait for messages. The emulator answers an empty pull about a second before the
# client's deadline (at once for 1 s or less); an order that stops when drained waits only that long.
PULL_WAIT_S = (1.0, 5.0)
DRAIN_WAIT_S = 2.0
# Every order gets an answered pull before its budget may end it (however slow its start), but gives up
# after this many pulls without an answer.
MAX_UNANSWERED = 3
# Staging objects of one flush written at once (a sharded batch writes one object per shard).
WRITE_THREADS = 16
# Leases are extended every third of the ack deadline (and before a flush of a batch older than that).
EXTEND_EVERY_S = ACK_DEADLINE_S / 3
# A sharded batch holds up to min(shards, this) times ``max_messages``: a flush writes one object per
# shard, and each object has a fixed cost (open, fsync, rename, directory fsync; one request on GCS; one
# more object for closing to list and read), so a batch spread over 32 shards flushes less often and
# its objects stay sizeable. Such a batch is flushed before its leases would need extending (extending
# 100k leases is 100 requests): its age bound is at most 0.9 of EXTEND_EVERY_S. The byte bound is unchanged.
SHARDED_BATCH_FACTOR = 8


class WorkOrder(BaseModel):
    """What a delivery worker is asked to do (the JSON of a message on ``gabo-work-orders``)."""

    model_config = ConfigDict(extra="forbid")

    event_type: str
    budget_s: float = Field(default=50.0, gt=0, le=3600, description="stop pulling after this long")
    max_messages: int = Field(default=20_000, ge=1, le=1_000_000)
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024)
    max_age_s: float = Field(default=10.0, gt=0, le=600)
    until_drained: bool = Field(default=False, description="stop at the first empty pull (ferry deliver)")
    worker: int = 0
    shard_bits: int | None = Field(default=None, ge=0, le=MAX_SHARD_BITS,
                                   description="staging shards per period = 2**shard_bits (default: the type's)")
    stream: str = Field(pattern=STREAM_PATTERN,
        default=PRIMARY, description="the type's primary delivery, or its darkload shadow's")

    def limits(self) -> BatchLimits:
        factor = min(1 << (self.shard_bits or 0), SHARDED_BATCH_FACTOR)
        if factor == 1:
            return BatchLimits(self.max_messages, self.max_bytes, self.max_age_s)
        return BatchLimits(min(self.max_messages * factor, 1_000_000), self.max_bytes,
                                min(self.max_age_s, 0.9 * EXTEND_EVERY_S))


@dataclass
class DeliveryReport:
    event_type: str
    run_id: str
    pulls: int = 0
    pulled: int = 0
    written: int = 0
    bytes: int = 0  # of the events written (their lines)
    dead_lettered: int = 0
    objects: list[str] = field(default_factory=list)
    drained: bool = False
    saturated: bool = False
    seconds: float = 0.0
    active_seconds: float = 0.0  # start → last write acked (without the closing empty pull's wait)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["objects"] = len(self.objects)
        return out


class OffsetClock:
    """System time shifted so that it reads ``at`` now (a worker run for a time-travelling test/demo)."""

    def __init__(self, at: datetime, base: Clock) -> None:
        self._base = base
        self._offset = at - base.now()

    def now(self) -> datetime:
        return self._base.now() + self._offset


class _Batch:
    """What a worker holds between two flushes: the ack ids, and the events already compressed per period.

    A pulled message is classified and its line written into the gzip stream of its receive-time period as
    soon as it arrives; the batch keeps only its ack id and message id (and poison messages whole, for
    the dead-letter topic). Memory holds compressed bytes, never the raw batch next to its output.
    """

    def __init__(self, event_type: EventType, cadence: periods.Cadence, shard_bits: int = 0) -> None:
        self.event_type = event_type
        self.cadence = cadence
        self.shard_bits = shard_bits
        self.ack_ids: list[str] = []
        # per (period start, shard): the message ids and the compressed lines
        self.groups: dict[tuple[datetime, str], tuple[list[str], GzipLines]] = {}
        # per period, the ledger digests of the event ids this batch stages
        self.digests: dict[datetime, bytearray] = {}
        self.poison: list[Poison] = []
        self.size = 0
        self.started = 0.0
        self.oldest: datetime | None = None
        self.pull_oldest: datetime | None = None  # the oldest receive time of the last pull taken in

    def __len__(self) -> int:
        return len(self.ack_ids)

    def add(self, messages: list[Pulled]) -> bool:
        """Take ``messages`` in. Returns True when they lowered the oldest receive time held."""
        if not self.ack_ids:
            self.started = time.monotonic()
        name, max_bytes = self.event_type.name, self.event_type.spec.max_event_bytes
        oldest = self.oldest
        pull_oldest: datetime | None = None
        lines: dict[tuple[datetime, str], list[bytes]] = {}  # this pull's lines per group: one compressor call each
        starts: dict[datetime, datetime] = {}  # ingest stamps a whole request with one received_at
        verdict_of, ack_ids, groups, size = verdict, self.ack_ids, self.groups, 0
        bits = self.shard_bits
        labels, shift = shard_labels(bits), 32 - bits
        digests, hashed = self.digests, ledger.hashed
        for m in messages:
            ack_ids.append(m.ack_id)
            size += len(m.data)
            v = verdict_of(m, name, max_bytes)
            if isinstance(v, str):  # poison: why. Not delivered: the ledger counts only what reaches staging,
                self.poison.append(Poison(m, v))  # so an accepted event dead-lettered keeps its period open
                received = _received(m)
            else:
                received = v[0]
                start = starts.get(received)
                if start is None:
                    start = starts[received] = self.cadence.floor(received)
                buf = digests.get(start)
                if buf is None:
                    buf = digests[start] = bytearray()
                h, d = hashed(v[1])  # the shard hash and the ledger digest, in one pass
                buf += d
                gk = (start, labels[h >> shift])
                group = groups.get(gk)
                if group is None:
                    group = groups[gk] = ([], GzipLines())
                group[0].append(m.message_id)
                lines.setdefault(gk, []).append(m.data)
            if pull_oldest is None or received < pull_oldest:
                pull_oldest = received
                if oldest is None or received < oldest:
                    oldest = received
        self.size += size
        for gk, group_lines in lines.items():
            groups[gk][1].add_many(group_lines)
        lowered = oldest is not None and oldest != self.oldest
        self.oldest, self.pull_oldest = oldest, pull_oldest
        return lowered


class DeliveryWorker:
    def __init__(self, broker: DeliveryBroker, sink: Sink, publisher: Callable[[], Publisher], state: GaboState,
                 clock: Clock) -> None:
        """``publisher`` is called only when a poison message is to be dead-lettered (the client is costly)."""
        self.broker = broker
        self.sink = sink
        self._publisher = publisher
        self.state = state
        self.clock = clock

    def run(self, order: WorkOrder, event_type: EventType) -> DeliveryReport:
        """Deliver until the budget is spent (or, with ``until_drained``, the subscription is empty).

        Raises:
            NotFound: the type's subscription does not exist.
            InfraError: a write, publish or ack failed (unacked messages are redelivered).
        """
        names = Names(event_type.name, order.stream)
        cadence = periods.partitioning(event_type.spec.partitioning)
        limits = order.limits()
        run_id = f"{event_type.name}-{self.clock.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        report = DeliveryReport(event_type.name, run_id)
        started = time.monotonic()
        deadline = started + order.budget_s
        batch = _Batch(event_type, cadence, order.shard_bits or 0)
        last_extend = started
        last_pull_behind = False
        answered = False
        doc: dict[str, Any] = {"event_type": event_type.name, "run_id": run_id, "worker": order.worker,
                               "started_at": self.clock.now(), "finished_at": None, "drained_at": None,
                               "holding_oldest": None, "lease_until": None}

        def save(**changes: Any) -> None:
            doc.update(changes)
            now = self.clock.now()
            doc.update(updated_at=now, pulls=report.pulls, pulled=report.pulled, written=report.written,
                       bytes=report.bytes,
                       dead_lettered=report.dead_lettered, saturated=report.saturated,
                       rate=report.written / max(1e-3, time.monotonic() - started))
            self.state.save_run(run_id, doc)

        def flush() -> None:
            nonlocal batch, last_extend
            if batch:
                # The write below gets at least two thirds of a deadline: extend leases older than a third.
                if time.monotonic() - max(batch.started, last_extend) > EXTEND_EVERY_S:
                    self._extend(names.subscription, batch)
                    last_extend = time.monotonic()
                self._flush(batch, names, report, ledger_record=order.stream == PRIMARY)
                report.active_seconds = round(time.monotonic() - started, 3)
                batch = _Batch(event_type, cadence, order.shard_bits or 0)
            save(holding_oldest=None)

        # No record before the first pull: a run is of interest to the closer once it holds events (saved
        # as it does) and to the scaler once it has finished.
        with_labels = log.bind(event_type=event_type.name, run_id=run_id)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 and (answered or report.pulls >= MAX_UNANSWERED):
                    break
                want = min(PULL_MAX, limits.max_messages - len(batch))
                pull_at = self.clock.now()
                # While holding a batch, wait no longer than its age bound allows: an empty subscription
                # must not keep written-but-unflushed events from their staging object.
                wait = min(max(remaining, PULL_WAIT_S[0]), PULL_WAIT_S[1])
                if order.until_drained:
                    wait = min(wait, DRAIN_WAIT_S)
                if batch:
                    wait = min(wait, max(0.1, limits.max_age_s - (time.monotonic() - batch.started)))
                got = self.broker.pull(names.subscription, want, timeout_s=wait)
                report.pulls += 1
                answered = answered or not isinstance(got, Unanswered)
                if not got:
                    flush()
                    last_pull_behind = False
                    if isinstance(got, Unanswered):
                        continue  # no answer in time (a loaded service): no evidence the subscription is empty
                    # Every message available before pull_at was returned to us (none) or is held by a
                    # worker; ours are written and acked now: the closer's watermark may advance to pull_at.
                    save(drained_at=pull_at)
                    if order.until_drained:
                        report.drained = True
                        break
                    continue
                report.pulled += len(got)
                lowered = batch.add(got)
                lag = (pull_at - batch.pull_oldest).total_seconds() if batch.pull_oldest else None
                last_pull_behind = pull_behind(len(got), want, lag)
                if lowered:
                    # The closer may not pass the oldest event a live worker holds (a redelivered old
                    # event can arrive in any pull of a batch, not only its first).
                    save(holding_oldest=batch.oldest,
                         lease_until=self.clock.now() + timedelta(seconds=ACK_DEADLINE_S))
                del got
                if limits.full(len(batch), batch.size, time.monotonic() - batch.started):
                    flush()
                elif time.monotonic() - last_extend > EXTEND_EVERY_S:
                    self._extend(names.subscription, batch)
                    last_extend = time.monotonic()
                    save(lease_until=self.clock.now() + timedelta(seconds=ACK_DEADLINE_S))
            flush()
            report.saturated = last_pull_behind and not report.drained
        finally:
            report.seconds = round(time.monotonic() - started, 3)
            log.unbind(with_labels)
        save(finished_at=self.clock.now())
        log.event(logger, log.INFO, f"delivery run {run_id}: {report.written} written, {report.dead_lettered} dead-lettered",
                  labels={"event_type": event_type.name}, report=report.to_dict())
        return report

    def _extend(self, subscription: str, batch: _Batch) -> None:
        if batch:
            self.broker.extend(subscription, batch.ack_ids, ACK_DEADLINE_S)

    def _flush(self, batch: _Batch, names: Names, report: DeliveryReport, ledger_record: bool = True) -> None:
        if batch.poison:
            # Published (and confirmed) before the ack below: never dropped.
            self._publisher().publish(names.dead_letter, [
                Message(p.message.data, {**p.message.attributes, "event_type": names.event_type,
                                         "reason": p.reason, "source_message_id": p.message.message_id})
                for p in batch.poison])
            report.dead_lettered += len(batch.poison)
        writes = []
        for start, shard in sorted(batch.groups):
            ids, lines = batch.groups.pop((start, shard))
            writes.append((staging_name(names.event_type, start, ids, shard), lines.finish()))
            report.bytes += lines.raw_bytes
            report.written += len(ids)
            del lines
        # A sharded batch is one object per shard: written side by side (each write waits on the disk or
        # the network, not on this process), every one confirmed before the ack below.
        if len(writes) > 1:
            with ThreadPoolExecutor(min(WRITE_THREADS, len(writes))) as pool:
                list(pool.map(lambda w: self.sink.write(*w), writes))
        else:
            for key, data in writes:
                self.sink.write(key, data)
        report.objects += [key for key, _ in writes]
        del writes
        # What was delivered, for closing's completeness check (deterministic names: a redelivered batch
        # rewrites its own records). The darkload shadow's delivery is no evidence of the primary's.
        if ledger_record:
            ledger.Ledger(self.state.store).delivered(names.event_type, {
                start: (hashlib.sha256(d).hexdigest()[:24], bytes(d)) for start, d in batch.digests.items()})
        # Only now, with every object durable and every poison message confirmed on the dead-letter topic.
        self.broker.ack(names.subscription, batch.ack_ids)


def _received(m: Pulled) -> datetime:
    raw = m.attributes.get("received_at")
    try:
        return parse_iso(raw) if raw else m.publish_time
    except ValueError:
        return m.publish_time
