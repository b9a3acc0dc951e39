"""Gabo's operations, the ones entry points call, on the adapters the composition root built.

``Gabo`` is the facade, built from its ports (``Services.gabo`` builds it on the root's); ``ingest``,
``deliver``, ``close`` and ``scale`` are what the API routes, the CLI (through the API) and the Cloud
Functions call.

Over 400 lines: the one place where the rooms meet (each operation is a few lines handing the ports to
the room's service; the scaler's and the cleanup's bodies are the longest). Its next split is the scaling
operations (``scale``, ``backlog``, ``capacity``) into ``scaling/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ferry import log
from ferry.broker.base import Message
from ferry.domain import periods
from ferry.domain.manifests import EventType, events_endpoint
from ferry.errors import BadRequest, FerryError, InfraError, NotFound
from ferry.gabo.closing.service import (
    CLOSE_ORDERS_TOPIC,
    ClosedPartition,
    CloseGate,
    CloseOrder,
    Closer,
    CloseReport,
    CompletionGate,
    complete_always,
)
from ferry.gabo.delivery.broker import DeliveryBroker
from ferry.gabo.delivery.service import DeliveryReport, DeliveryWorker, OffsetClock, WorkOrder
from ferry.gabo.delivery.sink import Sink, within
from ferry.gabo.envelopes import iso, parse_body, parse_iso
from ferry.gabo.ingest.ledger import InFlightGate, Ledger, LedgerGate
from ferry.gabo.names import (
    DARKLOAD,
    PRIMARY,
    STREAMS,
    WORK_ORDERS_TOPIC,
    parse_partition_key,
    shard_bits_for,
    sink_root,
    staging_prefix,
    streams_of,
)
from ferry.gabo.scaling.backlog import Backlog, BacklogSource
from ferry.gabo.scaling.capacity import Capacity, CapacityInputs, plan
from ferry.gabo.scaling.scaler import ScaleInputs, decide_workers, fair_shares, interleave
from ferry.gabo.state import GaboState
from ferry.gabo.tables.bigquery import Tables
from ferry.notify import messages as msgs
from ferry.store.base import Op
from ferry.store.manifests import ManifestRecord, ManifestRepository

if TYPE_CHECKING:
    from ferry.broker.base import Publisher
    from ferry.clock import Clock
    from ferry.datamon.port import Datamon
    from ferry.gabo.ingest.service import IngestResult
    from ferry.gabo.provisioning.access import Access
    from ferry.store.base import DocumentStore

logger = log.get("gabo")
# How far back the darkload shadow's first close looks for empty periods to close (see _close_stream).
SHADOW_CATCH_UP = timedelta(days=1)


class Gabo:
    """Gabo's operations on the ports they use.

    Args:
        store: the document store (Gabo's records, the ledger, the manifests).
        publisher: where events, work orders, close orders and alerts are published.
        broker: the types' topics and subscriptions, and the pull of delivery and replay.
        sink: where staging objects and closed partitions are written.
        backlog_source: the scaler's and the closer's view of a subscription's backlog.
        datamon: Datamon's port, where a closed period lands.
        clock: the time of delivery runs.
        project: the cloud project the reconcile names resources in.
        access: who publishes to and subscribes from a type's resources.
        tables: where a Parquet type's table is kept (BigQuery in a deployment; None locally).
    """

    def __init__(self, *, store: DocumentStore, publisher: Publisher, broker: DeliveryBroker, sink: Sink,
                 backlog_source: BacklogSource, datamon: Datamon, clock: Clock, project: str,
                 access: Access, tables: Tables | None = None) -> None:
        self.store = store
        self.manifests = ManifestRepository(store)
        self.publisher = publisher
        self.broker = broker
        self.sink = sink
        self.backlog_source = backlog_source
        self.datamon = datamon
        self.clock = clock
        self.project = project
        self.access = access
        # The deployment's BigQuery tables (None locally): a closed period is loaded after its _SUCCESS.
        self.tables = tables
        # Completeness joins closing here: the ingest ledger's gate (see ferry.gabo.ingest.ledger).
        self.close_gate: CloseGate = LedgerGate(Ledger(store),
                                                lambda topic, messages: publisher.publish(topic, messages))
        self.completion_gate: CompletionGate = complete_always
        # The darkload shadow closes on its own watermark once no ingest into the period is in flight; it
        # never waits for (nor alerts on) the primary's completeness: the darkload report compares them.
        self.shadow_gate: CloseGate = InFlightGate(Ledger(store))

    @property
    def state(self) -> GaboState:
        return GaboState(self.store)

    def state_of(self, stream: str) -> GaboState:
        """The records of ``stream`` (the primary's, or the darkload shadow's collections)."""
        return GaboState(self.store, stream)

    def sink_of(self, stream: str) -> Sink:
        """Where ``stream`` stages and closes: the sink, or its ``darkload/`` prefix for the shadow."""
        return within(self.sink, sink_root(stream))

    def event_type(self, name: str) -> tuple[EventType, ManifestRecord]:
        rec = self.manifests.get("EventType", name)
        if rec is None:
            raise NotFound(f"event type {name!r} not found (apply an EventType named {name})")
        return rec.model_as(EventType), rec

    def event_types(self, name: str | None = None) -> list[tuple[EventType, ManifestRecord]]:
        if name:
            return [self.event_type(name)]
        return [(r.model_as(EventType), r) for r in self.manifests.all("EventType")]

    # ------------------------------------------------------------------------------------ operations
    def ingest(self, raw: bytes, now: datetime, stamp: Callable[[], datetime] | None = None) -> IngestResult:
        """Parse a body (JSON array or NDJSON) and ingest it, recording it in the ledger. Raises
        BadRequest on a malformed body."""
        from ferry.gabo.ingest.service import IngestService  # jsonschema: not for delivery workers

        items = parse_body(raw)
        return IngestService(self.manifests, self.publisher,
                             Ledger(self.store)).ingest(items, now, stamp)

    def warm(self) -> None:
        """Build the clients a delivery run uses and open the store's connection: process start-up (paid
        once per process or function instance), so that a run's timing is its work."""
        from ferry.gabo.delivery.broker import PubSubBroker
        from ferry.gabo.state import RUNS

        if isinstance(self.broker, PubSubBroker):
            _ = self.broker.subscriber
        self.store.get(RUNS, "-warm-up-")

    def deliver(self, order: WorkOrder, now: datetime | None = None) -> DeliveryReport:
        """Run one delivery work order (``now`` shifts this run's clock: local time travel only)."""
        et, _ = self.event_type(order.event_type)
        clock = OffsetClock(now, self.clock) if now is not None else self.clock
        if order.stream != PRIMARY and et.spec.darkload <= 0:
            raise BadRequest(f"event type {et.name} has no darkload shadow (spec.darkload is 0)")
        if order.shard_bits is None:
            order = order.model_copy(update={"shard_bits": self.shard_bits(et, clock.now(), order.stream)})
        worker = DeliveryWorker(self.broker, self.sink_of(order.stream), lambda: self.publisher,
                                self.state_of(order.stream), clock)
        return worker.run(order, et)

    def shard_bits(self, et: EventType, now: datetime, stream: str = PRIMARY) -> int:
        """The stream's staging shards per period (as bits): ``spec.shards`` (the shadow's
        ``spec.darkload_shards``, else ``spec.shards``), or what the scaler last chose from the stream's
        volume (see :func:`shard_bits_for`)."""
        fixed = _fixed_shards(et, stream)
        if fixed:
            return fixed.bit_length() - 1
        last = self.state_of(stream).last_decision(et.name, now)
        return int((last or {}).get("shard_bits") or 0)

    def closer(self, stream: str = PRIMARY) -> Closer:
        """The closer of ``stream``: the primary lands in Datamon behind the ledger's gates; the darkload
        shadow closes into its prefix with records of its own, lands nothing and alerts nobody."""
        def publish(orders: list[CloseOrder]) -> None:
            self.publisher.publish(CLOSE_ORDERS_TOPIC, [
                Message(o.model_dump_json().encode(), {"event_type": o.event_type, "stream": o.stream})
                for o in orders])

        if stream == PRIMARY:
            return Closer(self.sink, self.state, self.datamon, self.backlog_source, publish, self.close_gate,
                          completion_gate=self.completion_gate, tables=self.tables)
        return Closer(self.sink_of(stream), self.state_of(stream), None, self.backlog_source.for_stream(stream),
                      publish, self.shadow_gate)

    def close(self, now: datetime, name: str | None = None, inline: bool = False) -> list[CloseReport]:
        """Decide what may close, for one type or all, and order the shards' merges (``inline``: merge them
        here, in turn). Safe to run twice or concurrently with delivery and with itself."""
        closers = {s: self.closer(s) for s in STREAMS}
        if inline:
            for c in closers.values():
                c.publish = None
        else:
            for c in closers.values():
                c.held = []  # every type decided first, then their orders published interleaved
        reports = []
        for et, rec in self.event_types(name):
            rep = self._close_stream(closers[PRIMARY], et, rec, now)
            if et.spec.darkload > 0:  # after the primary, apart from it: its trouble is its own
                rep.darkload = self._close_stream(closers[DARKLOAD], et, rec, now).to_dict()
            reports.append(rep)
        if not inline:
            for c in closers.values():
                try:
                    c.publish_held(rotate=int(now.timestamp() // 60))
                except InfraError as exc:  # the claims stay unordered: the next close orders them again
                    log.event(logger, log.ERROR, f"publishing close orders failed: {exc}", labels={"stream": c.stream})
        return reports

    def _close_stream(self, closer: Closer, et: EventType, rec: ManifestRecord, now: datetime) -> CloseReport:
        # A shadow starting on an old type walks its empty periods back to a day at most (the primary's
        # closing covers the type's whole life; the shadow's first events are new ones).
        since = rec.created_at if closer.stream == PRIMARY else max(rec.created_at, now - SHADOW_CATCH_UP)
        try:
            return closer.close(et, now, since)
        except Exception as exc:  # one type's trouble never holds the others up
            log.event(logger, log.ERROR if closer.stream == PRIMARY else log.WARNING,
                      f"closing {closer.what(et.name)} failed: {exc}", labels={"event_type": et.name,
                                                                              "stream": closer.stream})
            rep = CloseReport(et.name)
            rep.open.append({"partition": None, "state": "error", "reason": f"{type(exc).__name__}: {exc}"})
            return rep

    def close_shard(self, order: CloseOrder, now: datetime) -> ClosedPartition | None:
        """One close order: merge a shard; complete the period if it was the last (the close-shard function)."""
        et, _ = self.event_type(order.event_type)
        return self.closer(order.stream).run_shard(et, order, now)

    def outstanding(self, et: EventType, created_at: datetime, now: datetime) -> dict[str, int]:
        """What deleting ``et`` now would throw away: accepted events in periods not closed yet (from the
        ledger: as ingest counted them, retries included), how many of those were delivered, and
        staging objects waiting for a close."""
        cadence = periods.partitioning(et.spec.partitioning)
        cursor = self.state.cursor(et.name) or cadence.floor(created_at)
        ledger = Ledger(self.store)
        accepted = ledger.accepted_since(et.name, cursor)
        starts = [parse_partition_key(k) for k in accepted]
        closed = set(self.state.closed(et.name, starts))
        unclosed = {k: n for k, n, s in zip(accepted, accepted.values(), starts, strict=True) if s not in closed}
        delivered = sum(ledger.delivered_count(et.name, parse_partition_key(k)) for k in unclosed)
        staged = len(self.sink.list(staging_prefix(et.name)))
        total = sum(unclosed.values())
        return {"unclosed_periods": len(unclosed), "accepted": total, "delivered": min(delivered, total),
                "undelivered": max(0, total - delivered), "staging_objects": staged}

    def drain(self, et: EventType, created_at: datetime, now: datetime, budget_s: float = 50.0) -> dict[str, Any]:
        """Deliver until the ledger says every accepted event is delivered (or ``budget_s`` is spent),
        then close every period up to the current one (the ledger's gate is the evidence); returns
        what was done and what is still outstanding."""
        worker = DeliveryWorker(self.broker, self.sink, lambda: self.publisher, self.state,
                                self.clock)
        end = time.monotonic() + budget_s
        written, runs = 0, 0
        while True:
            left = max(1.0, end - time.monotonic())
            written += worker.run(WorkOrder(event_type=et.name, budget_s=left, until_drained=True), et).written
            runs += 1
            if self.outstanding(et, created_at, now)["undelivered"] == 0 or time.monotonic() >= end:
                break
            time.sleep(0.5)  # a subscription's first answers can be empty on a loaded service
        closer = self.closer()
        closer.publish = None  # merged here, in this request: the delete waits for it
        report = closer.close(et, now, created_at, drain=True)
        return {"delivered": written, "runs": runs, "close": report.to_dict(),
                "outstanding": self.outstanding(et, created_at, now)}

    def cleanup(self, now: datetime) -> dict[str, Any]:
        """Delete the records whose retention passed, bounded per run (see :mod:`ferry.gabo.retention`):
        the applied types' (each stream), then every record of the types deleted longer ago than
        ``DELETED_RETENTION``. One type's trouble never stops the others'."""
        from ferry.gabo import retention

        out = retention.Cleaned()
        applied = set()
        for et, rec in self.event_types():
            applied.add(et.name)
            cadence = periods.partitioning(et.spec.partitioning)
            for stream in streams_of(et.spec.darkload):
                try:
                    retention.clean_stream(self.state_of(stream), et.name, cadence, cadence.floor(rec.created_at),
                                           now, out, ledger=stream == PRIMARY)
                except Exception as exc:  # noqa: BLE001 - the next run tries again
                    log.event(logger, log.WARNING, f"cleaning up {et.name} failed: {exc}",
                              labels={"event_type": et.name, "stream": stream})
        for doc_id, doc in self.store.query(retention.DELETED_TYPES):
            if doc.get("event_type") in applied or now < _utc(doc["keep_until"]):
                continue
            if retention.clean_deleted(self.store, doc["event_type"], out):
                self.store.write([Op.delete(retention.DELETED_TYPES, doc_id)])
                out.deleted_types.append(doc["event_type"])
        return out.to_dict()

    def reconcile(self, now: datetime) -> dict[str, Any]:
        """Recreate missing topics and subscriptions (``infra/``'s and the applied types'); see
        :mod:`ferry.gabo.provisioning.reconcile`. Returns what it recreated."""
        from ferry.gabo.provisioning.reconcile import FORCED_DELETES, declared, reconcile, stack_secret

        infra, urls = declared()
        from ferry.gabo.retention import DELETED_TYPES

        forced = [d for _, d in self.store.query(FORCED_DELETES)]
        deleted = [d for _, d in self.store.query(DELETED_TYPES)]
        return reconcile(self.broker, infra, [et for et, _ in self.event_types()], urls,
                         self.project, forced, now,
                         self.access, deleted,
                         secret=stack_secret()).to_dict()

    def dead_letters(self) -> list[dict[str, Any]]:
        """Every hold subscription (infra/'s dead-letter topics, each type's quarantine and dead letters)
        with how many messages it keeps (see :mod:`ferry.gabo.replay.holds`)."""
        from concurrent.futures import ThreadPoolExecutor

        from ferry.gabo.provisioning.reconcile import declared
        from ferry.gabo.replay import holds

        infra, _ = declared()

        def row(h: holds.Hold) -> dict[str, Any]:
            try:
                n: int | None = holds.count(self.broker, h)
            except FerryError:
                n = None  # a hold the reconcile has not (re)created yet
            return {"subscription": h.subscription, "topic": h.topic, "event_type": h.event_type,
                    "messages": n, "capped": n == holds.COUNT_CAP}

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(row, holds.holds(infra, [et for et, _ in self.event_types()])))

    def replay_dead_letters(self, topic: str, now: datetime) -> dict[str, Any]:
        """Publish what an infra/ dead-letter topic's hold keeps back where it came from."""
        from ferry.gabo.provisioning.reconcile import declared
        from ferry.gabo.replay import holds
        from ferry.notify.port import reopen_delivery

        infra, _ = declared()
        if infra is None:
            raise NotFound("no infra/ description here: its dead-letter topics are unknown")
        return holds.replay(self.broker, self.publisher, self.store, infra, topic,
                            reopen_delivery, now)

    def replay(self, name: str, source: str, now: datetime, since: datetime | None = None) -> dict[str, Any]:
        """Replay the type's quarantined or dead-lettered events that are valid now (see ``replay``)."""
        from ferry.gabo.replay.service import replay

        return replay(self, name, source, now, since)

    def darkload_report(self, name: str, now: datetime, partition: str | None = None) -> dict[str, Any]:
        """The darkload shadow's closed partitions against the sampled subset of the primary's (one, or
        the recent ones); a mismatch alerts the owner once per partition (see ``ferry.gabo.darkload.service``)."""
        from ferry.gabo.darkload.service import report

        return report(self, name, now, partition)

    def set_aside(self, name: str, source: str = "quarantine", limit: int = 20) -> dict[str, Any]:
        """Samples of the type's quarantined (or dead-lettered) messages with their reasons."""
        from ferry.gabo.replay.service import samples

        return samples(self, name, source, limit)

    def scale(self, now: datetime, name: str | None = None, budget_s: float = 50.0,
              publish: bool = True, capacity: int | None = None) -> list[dict[str, Any]]:
        """Decide, per type, how many delivery work orders run in parallel; share the delivery
        function's ``capacity`` fairly among the types (one each before any gets two); publish the
        orders interleaved across types; record why."""
        types = self.event_types(name)
        tick = int(now.timestamp() // 60)
        queue: list[WorkOrder] = []
        records: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in STREAMS}
        left = capacity
        # The primaries first; the darkload shadows share only the capacity the primaries leave.
        for stream in STREAMS:
            decided = []
            for et, _ in types:
                if stream in streams_of(et.spec.darkload):
                    inputs = self.backlog(et, now, budget_s, stream)
                    decided.append((et, inputs, decide_workers(inputs), self.choose_shard_bits(et, inputs, stream)))
            shares = fair_shares({et.name: d.workers for et, _, d, _ in decided}, left, start=tick)
            orders = {et.name: [WorkOrder(event_type=et.name, budget_s=budget_s, worker=i, shard_bits=bits,
                                          stream=stream)
                                for i in range(shares[et.name])] for et, _, _, bits in decided}
            queue += interleave(orders, start=tick)
            left = None if left is None else max(0, left - sum(shares.values()))
            for et, inputs, decision, bits in decided:
                granted = shares[et.name]
                reason = decision.reason if granted == decision.workers else (
                    f"{decision.reason}; fair share of the delivery capacity {capacity}: {granted} of {decision.workers}")
                record = {"workers": granted, "wanted": decision.workers, "reason": reason,
                          "inputs": inputs.to_dict(), "published": publish, "shard_bits": bits}
                self.state_of(stream).record_decision(et.name, now, record)
                log.event(logger, log.INFO, f"scale {et.name}{'' if stream == PRIMARY else ' (darkload)'}: "
                          f"{granted} worker(s) — {reason}", labels={"event_type": et.name, "stream": stream},
                          inputs=inputs.to_dict())
                records[stream][et.name] = record
        if publish and queue:
            self.publisher.publish(WORK_ORDERS_TOPIC, [
                Message(o.model_dump_json().encode(), {"event_type": o.event_type, "stream": o.stream}) for o in queue])
        out = []
        for et, _ in types:
            shadow = records[DARKLOAD].get(et.name)
            out.append({"event_type": et.name, **records[PRIMARY][et.name],
                        **({"darkload": shadow} if shadow is not None else {})})
        if publish:
            try:
                self.capacity_alerts(self.capacity(now, name), now)
            except InfraError as exc:  # the capacity check never holds up scaling
                log.event(logger, log.WARNING, f"capacity check failed: {exc}")
        return out

    def choose_shard_bits(self, et: EventType, inputs: ScaleInputs, stream: str = PRIMARY) -> int:
        """Shards per period from the volume: what the workers can move at the most workers allowed, over
        one period (the most a period can hold while delivery keeps up), so each shard's merge stays
        within ``SHARD_EVENTS`` events. ``spec.shards`` (the shadow: ``spec.darkload_shards``) overrides."""
        fixed = _fixed_shards(et, stream)
        if fixed:
            return fixed.bit_length() - 1
        cadence = periods.partitioning(et.spec.partitioning)
        start = cadence.floor(parse_partition_key("20260101T0000"))
        width = (cadence.next(start) - start).total_seconds()
        rate = (inputs.rate_per_worker or 0.0) * max(1, inputs.current)
        return shard_bits_for(rate * width)

    def progress(self, name: str, since: datetime, now: datetime) -> dict[str, Any]:
        """What became of events received since ``since`` (a load run's view): delivered (the runs' written
        counts, redeliveries included), runs still working, and each period's closing state and counts."""
        et, _ = self.event_type(name)
        runs = self.state.recent_runs(name, since)
        cadence = periods.partitioning(et.spec.partitioning)
        starts: list[datetime] = []
        t = cadence.floor(since)
        while t <= now and len(starts) < 1000:
            starts.append(t)
            t = cadence.next(t)
        closed = self.state.closed(name, starts)
        claims = self.state.claims(name, starts)
        parts = []
        for s in starts:
            doc = closed.get(s) or claims.get(s)
            if doc is not None:
                parts.append({"partition": cadence.format(s), "state": doc.get("state"), "events": doc.get("events"),
                              "duplicates_dropped": doc.get("duplicates_dropped"),
                              "late_events": doc.get("late_events"), "shards": doc.get("shards")})
        return {"event_type": name, "delivered": sum(int(r.get("written") or 0) for r in runs),
                "runs": len(runs), "running": sum(1 for r in runs if not r.get("finished_at")),
                "partitions": parts}

    def capacity(self, now: datetime, name: str | None = None) -> list[Capacity]:
        """Per type: the observed rate, per-worker throughput, workers now and at 10× the peak, headroom,
        shards per period and the close cost per shard at 10×, and a verdict (``ferry.gabo.scaling.capacity``)."""
        return [plan(self.capacity_inputs(et, now)) for et, _ in self.event_types(name)]

    def capacity_inputs(self, et: EventType, now: datetime) -> CapacityInputs:
        """From the delivery runs of the last hour (one document per run) and the shard merges of the last
        day (one per shard): no counter document that every worker writes."""
        runs = [r for r in self.state.recent_runs(et.name, now - timedelta(hours=1)) if r.get("written")]
        windows = {"1m": 60.0, "5m": 300.0, "60m": 3600.0}
        rate, bps = {}, {}
        for w, secs in windows.items():
            inside = [r for r in runs if _utc(r["updated_at"]) >= now - timedelta(seconds=secs)]
            rate[w] = round(sum(int(r["written"]) for r in inside) / secs, 2)
            bps[w] = round(sum(int(r.get("bytes") or 0) for r in inside) / secs, 1)
        buckets: dict[int, int] = {}  # the busiest minute of the hour
        for r in runs:
            b = int((now - _utc(r["updated_at"])).total_seconds() // 60)
            buckets[b] = buckets.get(b, 0) + int(r["written"])
        peak = max([v / 60.0 for v in buckets.values()] + [rate["1m"]])
        saturated = [float(r["rate"]) for r in runs if r.get("saturated") and r.get("rate")]
        anyrate = [float(r["rate"]) for r in runs if r.get("rate")]
        per_worker = max(saturated) if saturated else (max(anyrate) if anyrate else None)
        merges = self.state.recent_shards(et.name, now - timedelta(days=1))
        speeds = [int(d["events"]) / float(d["seconds"]) for d in merges if d.get("seconds") and d.get("events")]
        last = self.state.last_decision(et.name, now)
        cadence = periods.partitioning(et.spec.partitioning)
        start = cadence.floor(now)
        return CapacityInputs(et.name, et.metadata.owner, rate, bps, round(peak, 2), per_worker, bool(saturated),
                              et.spec.min_workers, et.spec.max_workers,
                              int(last["workers"]) if last else et.spec.min_workers,
                              (cadence.next(start) - start).total_seconds(),
                              round(max(speeds), 1) if speeds else None, len(runs))

    def capacity_alerts(self, caps: list[Capacity], now: datetime) -> int:
        """An owner-routed alert on ``ferry-alerts`` (the path Datamon's alerts take) for each type without
        10× headroom — once per type and day (a ``create`` claims it)."""
        from ferry.errors import Conflict
        from ferry.store.base import Op

        sent = 0
        for c in caps:
            if c.ok is not False:
                continue
            key = f"capacity:{events_endpoint(c.event_type)}:{now:%Y-%m-%d}"
            try:
                self.store.write([Op.create("gabo_capacity_alerts", key.replace("/", "_"),
                                                     {"event_type": c.event_type, "at": now, "verdict": c.verdict})])
            except Conflict:
                continue
            summary = f"{events_endpoint(c.event_type)}: {c.verdict} (peak {c.peak_eps:.0f} events/s, owner {c.owner})"
            m = msgs.alert_message(c.owner, key, summary, severity="warning", kind="capacity",
                                   subject=events_endpoint(c.event_type), source="ferry-gabo", details=c.to_dict())
            self.publisher.publish(msgs.ALERTS_TOPIC, [
                Message(m.data, {**m.attributes, "endpoint": events_endpoint(c.event_type)})])
            log.event(logger, log.WARNING, summary, labels={"event_type": c.event_type, "owner": c.owner},
                      capacity=c.to_dict())
            sent += 1
        return sent

    def delivery_capacity(self) -> int | None:
        """How many work orders the delivery function runs at once (``max_instances × concurrency`` of
        ``deliver`` in ``infra/``), or None when unknown."""
        from ferry.gabo.provisioning.reconcile import declared

        infra, local = declared()
        fn = next((f for f in infra.functions if f.name == "deliver"), None) if infra else None
        if fn is None:
            return None
        if local:  # the local stack runs one instance of max(4, concurrency) threads (dev.stack.function_env)
            return max(4, fn.concurrency)
        return fn.max_instances * fn.concurrency

    def backlog(self, et: EventType, now: datetime, budget_s: float, stream: str = PRIMARY) -> ScaleInputs:
        """Scaler inputs: the backlog from the backlog source (Cloud Monitoring's ``num_undelivered_messages``
        and ``oldest_unacked_message_age`` in the cloud; the workers' pull statistics locally), and the
        per-worker rate from the workers' own reports in both cases."""
        state = self.state_of(stream)
        last = state.last_decision(et.name, now)
        current = int(last["workers"]) if last else et.spec.min_workers
        source = self.backlog_source if stream == PRIMARY else self.backlog_source.for_stream(stream)
        try:
            b = source.backlog(et.name, now, current)
        except InfraError as exc:  # no metric: the rate and lag rules still work on what runs report
            log.event(logger, log.WARNING, f"backlog of {et.name} unknown: {exc}", labels={"event_type": et.name})
            b = Backlog(f"{source.kind}-unavailable")
        runs = [r for r in state.recent_runs(et.name, now - timedelta(minutes=15)) if r.get("finished_at")]
        latest = sorted(runs, key=lambda r: r["finished_at"])[-max(1, current):] if runs else []
        rates = [float(r.get("rate") or 0) for r in latest if r.get("rate")]
        return ScaleInputs(current=current, min_workers=et.spec.min_workers, max_workers=et.spec.max_workers,
                                undelivered=b.messages, oldest_age_s=b.oldest_age_s,
                                drained=b.drained, saturated=b.saturated,
                                rate_per_worker=(sum(rates) / len(rates)) if rates else None,
                                budget_s=budget_s, target_age_s=max(60.0, 2 * budget_s),
                                source=b.source, sampled_at=iso(b.sampled_at) if b.sampled_at else None)


def _fixed_shards(et: EventType, stream: str) -> int | None:
    """The shard count the type fixes for ``stream`` (None: chosen from the volume)."""
    if stream != PRIMARY and et.spec.darkload_shards:
        return et.spec.darkload_shards
    return et.spec.shards


def _utc(v: Any) -> datetime:
    return v if isinstance(v, datetime) else parse_iso(str(v))


def decode_work_order(data: bytes) -> WorkOrder:
    return WorkOrder.model_validate(json.loads(data))


def decode_close_order(data: bytes) -> CloseOrder:
    return CloseOrder.model_validate(json.loads(data))


__all__ = ["Gabo", "decode_work_order", "decode_close_order"]
