"""Hour closing, fanned out: decide what may close, merge each shard on its own, complete once.

Three steps (see docs/gabo.md, "Closing"):

1. ``Closer.close`` (the scheduled ``close``) decides, per type, which periods may close (grace,
   watermark, and ``CloseGate`` — the seam where a completeness check such as an ingest ledger joins),
   claims each with a ``gabo_closing`` document created once (one close per period at a time; an
   overlapping close skips what another holds) and publishes one :class:`CloseOrder` per shard of the
   period to ``gabo-close-orders``. It merges nothing itself but small periods (one shard of at most
   ``INLINE_MAX_OBJECTS`` staging objects), so a small type never waits behind a big one's shards.
2. ``Closer.run_shard`` (the ``close-shard`` function, one order) merges one shard's staging objects
   into its parts with bounded memory (:mod:`ferry.gabo.closing.merge`) and records the shard's counts.
3. The shard that finds every shard of its period recorded creates the completion record
   (``gabo_closed``, created once): only its creator writes ``_SUCCESS`` and lands the partition — one
   landing per period, ever. Staging objects are deleted last.

Crash-safe: a shard's output is deterministic in its inputs (a retried shard overwrites itself); a
crashed completion is taken over by the next scheduled close once its lease has passed (one takeover
per attempt, created once) and it lands only if Datamon has not seen the landing. A shard that keeps
failing leaves its period open, with its reason, in every close report. Staging objects of a closed
period that the marker does not list are late: they move to the next open period — never dropped.

Over 400 lines: deciding, ordering, completing and taking over are steps of one protocol over the same
records (claims, shard documents, the marker), kept together so its invariants read in one place; the
pure decisions are in ``decide.py``, the merge in ``merge.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ferry import log
from ferry.domain import periods
from ferry.domain.manifests import EventType, events_endpoint
from ferry.errors import Conflict, InfraError, NotFound
from ferry.gabo.closing.decide import closable, next_open, why_waiting
from ferry.gabo.closing.formats.parquet import parquet_parts
from ferry.gabo.closing.merge import MAX_PART_BYTES, ShardResult, merge_shard
from ferry.gabo.delivery.sink import Sink
from ferry.gabo.envelopes import iso, parse_iso
from ferry.gabo.names import (
    MAX_SHARD_BITS,
    PRIMARY,
    STREAM_PATTERN,
    SUCCESS,
    final_prefix,
    parse_partition_key,
    partition_key,
    shard_labels,
    shard_prefix,
    staging_prefix,
    staging_shard,
)
from ferry.gabo.scaling.backlog import BacklogSource, PullStatsBacklog
from ferry.gabo.scaling.scaler import interleave
from ferry.gabo.state import GaboState
from ferry.gabo.tables.bigquery import Tables

if TYPE_CHECKING:
    from ferry.clock import Clock
    from ferry.datamon.port import Datamon

logger = log.get("gabo.closing")

MAX_PERIODS_PER_RUN = 500  # periods not decided yet that one close run considers (a window)
MAX_STUCK = 500  # ended periods held back (gate, claim, completion) a close run reconsiders
CLOSE_ORDERS_TOPIC = "gabo-close-orders"
# A completion (marker, landing, records) takes seconds; one silent for this long crashed.
FINISH_LEASE = timedelta(minutes=2)
# Shards not recorded this long after their orders were published are ordered again (the claim holder
# crashed before publishing, or an order was dead-lettered); after MAX_ROUNDS the period stays open.
REORDER_AFTER = timedelta(minutes=15)
MAX_ROUNDS = 3
# A period of one shard with at most this many staging objects (a few delivery batches: tens of thousands
# of events at most, merged in about a second) is merged by the deciding close itself: a small type never
# waits behind the close-shard queue of a big one.
INLINE_MAX_OBJECTS = 4



class CloseGate(Protocol):
    """May this period close? The seam for completeness checks beyond the watermark (an ingest ledger
    comparing accepted with delivered counts). ``None`` lets it close; a string is why it waits."""

    def __call__(self, et: EventType, start: datetime, end: datetime, now: datetime) -> str | None: ...


def open_gate(et: EventType, start: datetime, end: datetime, now: datetime) -> str | None:
    return None


class CompletionGate(Protocol):
    """May this merged period complete? Asked after every shard merged, before the completion record is
    created, with the summed counts (``lines`` read, ``events`` kept, ``duplicates``, ``late``): the seam
    where a ledger compares what was merged with what ingest accepted. A string is why it may not: the
    claim and shard records are released, the period stays open with that reason, and a later close
    claims and merges it again (the merge is deterministic: the same inputs rewrite the same parts)."""

    def __call__(self, et: EventType, start: datetime, totals: dict[str, int], now: datetime) -> str | None: ...


def complete_always(et: EventType, start: datetime, totals: dict[str, int], now: datetime) -> str | None:
    return None


class CloseOrder(BaseModel):
    """One shard of one claimed period (the JSON of a message on ``gabo-close-orders``)."""

    model_config = ConfigDict(extra="forbid")

    event_type: str
    period: str = Field(description="the period's start, YYYYmmddTHHMM")
    shard: str = Field(default="", pattern="^[01]*$", description="the shard's hash bits")
    bits: int = Field(default=0, ge=0, le=MAX_SHARD_BITS)
    round: int = 0
    stream: str = Field(pattern=STREAM_PATTERN, default=PRIMARY,
                                                   description="the type's primary, or its darkload shadow")
    now: str | None = Field(default=None, description="the deciding close's clock (local time travel only)")

    @property
    def start(self) -> datetime:
        return parse_partition_key(self.period)

    def clock_now(self, clock: Clock, allow_clock_override: bool) -> datetime:
        """The worker's now: its clock, or (local stack, clock override allowed) no earlier than the
        deciding close's, so that a time-travelling close and its shards agree on leases."""
        now: datetime = clock.now()
        if self.now and allow_clock_override:
            return max(now, parse_iso(self.now))
        return now


@dataclass
class ClosedPartition:
    partition: str
    events: int
    duplicates: int
    late: int
    bytes: int
    parts: int
    location: str
    shards: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class CloseReport:
    event_type: str
    closed: list[ClosedPartition] = field(default_factory=list)
    ordered: list[dict[str, Any]] = field(default_factory=list)
    open: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    late_moved: int = 0
    cleaned: int = 0
    waiting: list[str] = field(default_factory=list)
    waits: list[dict[str, Any]] = field(default_factory=list)  # why and until when, for the first few
    watermark: str | None = None
    darkload: dict[str, Any] | None = None  # the darkload shadow's own report (types with spec.darkload > 0)

    def to_dict(self) -> dict[str, Any]:
        out = {"event_type": self.event_type, "closed": [c.to_dict() for c in self.closed],
               "ordered": self.ordered, "open": self.open, "skipped": self.skipped,
               "late_moved": self.late_moved, "cleaned": self.cleaned, "waiting": self.waiting[:20],
               "waits": self.waits[:20],
               "watermark": self.watermark}
        if self.darkload is not None:
            out["darkload"] = self.darkload
        return out


class Closer:
    def __init__(self, sink: Sink, state: GaboState, datamon: Datamon | None, backlog: BacklogSource | None = None,
                 publish: Callable[[list[CloseOrder]], None] | None = None, gate: CloseGate = open_gate,
                 max_part_bytes: int = MAX_PART_BYTES, completion_gate: CompletionGate = complete_always,
                 tables: Tables | None = None) -> None:
        """``publish`` hands shard orders to the close-shard workers (None: run them here, in turn);
        ``datamon`` is where a closed partition lands (a taken-over completion lands only if Datamon has
        no landing of it; None: nothing lands — the darkload shadow). The stream closed is ``state``'s
        (its records), in ``sink`` (the shadow's is the sink's ``darkload/`` prefix)."""
        self.sink = sink
        self.state = state
        self.stream = state.stream
        self.datamon = datamon
        self.backlog = backlog or PullStatsBacklog(state)
        self.publish = publish
        self.gate = gate
        self.completion_gate = completion_gate
        self.max_part_bytes = max_part_bytes
        self.tables = tables  # where a closed period is loaded into its table (deployed), after _SUCCESS
        # A list: orders are held (type, period, round, now, orders) until ``publish_held`` sends every
        # type's orders interleaved. None: each period's orders are published as it is decided.
        self.held: list[tuple[str, datetime, int, datetime, list[CloseOrder]]] | None = None

    def what(self, name: str) -> str:
        """What this closer closes, for logs and reasons: ``events.<type>``, or its darkload shadow."""
        return events_endpoint(name) if self.stream == PRIMARY else f"the darkload shadow of {events_endpoint(name)}"

    def watermark(self, event_type: str, now: datetime) -> datetime | None:
        """Every event received before it is written (see the backlog source); None (wait) if unknown."""
        try:
            return self.backlog.watermark(event_type, now)
        except InfraError as exc:  # no evidence → the period waits; the next run tries again
            log.event(logger, log.WARNING, f"no watermark for {event_type}: {exc}", labels={"event_type": event_type},
                      source=self.backlog.kind)
            return None

    # ------------------------------------------------------------------------------------ deciding
    def close(self, et: EventType, now: datetime, created_at: datetime | None = None,
              drain: bool = False) -> CloseReport:
        """Decide what of ``et`` may close at ``now``, claim it and order its shards; move late staging
        objects on; take over completions that went silent; report what stays open and why.

        ``drain`` (deleting the type with ``--drain``): every ended period, without grace nor watermark
        — the close gate (every accepted id delivered, no ingest in flight) is the evidence.
        """
        name = et.name
        cadence = periods.partitioning(et.spec.partitioning)
        close_after = periods.parse_duration(et.spec.close_after)
        report = CloseReport(name)
        mark = self.watermark(name, now)
        report.watermark = iso(mark) if mark else None

        staging: dict[datetime, list[str]] = {}
        depth: dict[datetime, int] = {}
        for key in self.sink.list(staging_prefix(name)):
            where = staging_shard(key, name)
            if where is None:
                continue
            staging.setdefault(where[0], []).append(key)
            depth[where[0]] = min(depth.get(where[0], MAX_SHARD_BITS), len(where[1]))
        # What this run decides (bounded: at most MAX_STUCK + MAX_PERIODS_PER_RUN periods, plus those with
        # staging objects): the ended periods held back earlier (``stuck``), and the next window of
        # periods not decided yet, from ``scan`` — so a stuck period never hides the ones after it, and a
        # type however far behind catches up a window per run without re-reading what closed.
        nxt, scan0, stuck0 = self.state.cursor_state(name)
        cursor = nxt or cadence.floor(created_at or now)
        scan = max(scan0 or cursor, cursor)
        stuck = {s for s in stuck0 if cursor <= s < scan}
        window: list[datetime] = []
        t = scan
        while t < cadence.floor(now) and len(window) < MAX_PERIODS_PER_RUN:
            window.append(t)
            t = cadence.next(t)
        window_end = t
        candidates = set(staging) | stuck | set(window)
        ordered = sorted(candidates)
        closed_docs = self.state.closed(name, ordered)
        claims = self.state.claims(name, ordered)
        done = {s for s, d in closed_docs.items() if d.get("state", "closed") == "closed"}

        def known_closed(s: datetime) -> bool:  # closed by an earlier run, as the cursor records
            return s < cursor or (s < scan and s not in stuck)

        closed = {s for s in candidates if known_closed(s)} | done
        held_by_time: list[datetime] = []  # periods that may not close yet by grace or watermark

        for start in ordered:
            keys = sorted(staging.get(start, []))
            if start in closed:
                self._late_and_clean(name, cadence, start, keys, closed_docs.get(start), closed, known_closed,
                                     staging, candidates, report)
                continue
            if start in closed_docs:  # completion under way, or crashed
                finished = self._take_over(et, cadence, start, closed_docs[start], now, report)
                if finished:
                    closed.add(start)
                continue
            if start in claims:
                finished = self._follow(et, cadence, start, claims[start], now, report)
                if finished:
                    closed.add(start)
                continue
            if (cadence.next(start) > now if drain else closable(start, cadence, close_after, now, mark) is None):
                held_by_time.append(start)
                report.waiting.append(cadence.format(start))
                if len(report.waits) < 20:
                    report.waits.append(why_waiting(start, cadence, close_after, now, mark))
                continue
            reason = self.gate(et, start, cadence.next(start), now)
            if reason is not None:
                report.open.append({"partition": cadence.format(start), "state": "waiting", "reason": reason})
                continue
            bits = depth.get(start, 0)
            try:
                self.state.claim(name, start, {"event_type": name, "partition": cadence.format(start),
                                               "bits": bits, "state": "merging", "claimed_at": now,
                                               "ordered_at": None, "round": 0})
            except Conflict:  # another close holds it
                report.skipped.append(cadence.format(start))
                continue
            inline = bits == 0 and len(keys) <= INLINE_MAX_OBJECTS
            finished = self._order(et, cadence, start, bits, 0, shard_labels(bits), now, report, inline=inline)
            if finished:
                closed.add(start)
        # The cursor: the window is decided up to its first period held by time (grace, watermark: every
        # later one is held too), and what ended but did not close before that is remembered as stuck.
        new_scan = min((s for s in held_by_time if s >= scan), default=window_end)
        held = sorted(s for s in candidates if cursor <= s < new_scan and s not in closed and not known_closed(s))
        if len(held) > MAX_STUCK:  # the rest are decided again from the window
            new_scan, held = held[MAX_STUCK], held[:MAX_STUCK]
        new_cursor = held[0] if held else new_scan
        if (new_cursor, new_scan, held) != (cursor, scan, sorted(stuck)) or nxt is None:
            self.state.set_cursor(name, new_cursor, now, new_scan, held)
        return report

    def _order(self, et: EventType, cadence: periods.Cadence, start: datetime, bits: int, rnd: int,
               labels: tuple[str, ...] | list[str], now: datetime, report: CloseReport, inline: bool = False) -> bool:
        orders = [CloseOrder(event_type=et.name, period=partition_key(start), shard=b, bits=bits, round=rnd,
                             stream=self.stream, now=iso(now)) for b in labels]
        report.ordered.append({"partition": cadence.format(start), "shards": 1 << bits, "ordered": len(orders),
                               "round": rnd})
        if self.publish is not None and not inline:
            if self.held is not None:  # marked ordered once published (publish_held)
                self.held.append((et.name, start, rnd, now, orders))
            else:
                self.publish(orders)
                self.state.update_claim(et.name, start, {"ordered_at": now, "round": rnd})
            return False
        self.state.update_claim(et.name, start, {"ordered_at": now, "round": rnd})
        finished = None
        for o in orders:
            try:
                finished = self.run_shard(et, o, now) or finished
            except Exception as exc:  # recorded on the shard; the period stays open, other types go on
                log.event(logger, log.ERROR if self.stream == PRIMARY else log.WARNING,
                          f"closing shard s{o.shard} of {self.what(et.name)} {cadence.format(start)} "
                          f"failed: {exc}", labels={"event_type": et.name, "stream": self.stream})
        if isinstance(finished, ClosedPartition):
            report.closed.append(finished)
            return True
        return False

    def publish_held(self, rotate: int = 0) -> int:
        """Publish the held orders of every type decided, interleaved across types (``interleave``:
        one order of each type before a second of any, who goes first rotating with ``rotate``), so a huge
        period's shards never queue ahead of a small type's one; then mark each period ordered. A crash
        before the publish leaves claims without ``ordered_at``: the next close orders them again."""
        held, self.held = self.held or [], []
        by_type: dict[str, list[CloseOrder]] = {}
        for name, _, _, _, orders in held:
            by_type.setdefault(name, []).extend(orders)
        queue = interleave(by_type, start=rotate)
        if queue and self.publish is not None:
            self.publish(queue)
        for name, start, rnd, now, _ in held:
            self.state.update_claim(name, start, {"ordered_at": now, "round": rnd})
        return len(queue)

    def _follow(self, et: EventType, cadence: periods.Cadence, start: datetime, claim: dict[str, Any],
                now: datetime, report: CloseReport) -> bool:
        """A claimed period not yet complete: finish it if every shard is recorded (its last shard's worker
        crashed before completing), order missing shards again when they are overdue, or report it open."""
        bits = int(claim.get("bits") or 0)
        labels = shard_labels(bits)
        docs = self.state.shards(et.name, start, labels)
        missing = [b for b in labels if not (docs.get(b) or {}).get("finished_at")]
        param = cadence.format(start)
        if not missing:
            c = self._complete(et, cadence, start, bits, docs, now)
            if c is not None:
                report.closed.append(c)
            return c is not None
        errors = sorted({str(d.get("error")) for d in docs.values() if d.get("error") and not d.get("finished_at")})
        rnd = int(claim.get("round") or 0)
        ordered_at = claim.get("ordered_at")
        overdue = ordered_at is None and now - _utc(claim.get("claimed_at"), now) > timedelta(minutes=1) or (
            ordered_at is not None and now - _utc(ordered_at, now) > REORDER_AFTER)
        state = "failing" if rnd + 1 >= MAX_ROUNDS and overdue else "merging"
        report.open.append({"partition": param, "state": state, "shards": len(labels),
                            "shards_done": len(labels) - len(missing),
                            "reason": "; ".join(errors)[:500] or f"{len(missing)} shard(s) not merged yet"})
        if overdue and rnd + 1 < MAX_ROUNDS:
            self._order(et, cadence, start, bits, rnd + 1, missing, now, report)
        if state == "failing" and claim.get("state") != "failing":
            self.state.update_claim(et.name, start, {"state": "failing", "reason": report.open[-1]["reason"]})
            log.event(logger, log.ERROR if self.stream == PRIMARY else log.WARNING,
                      f"closing {self.what(et.name)} {param} keeps failing: {report.open[-1]['reason']}",
                      labels={"event_type": et.name, "stream": self.stream, "parameter": param,
                              **({"endpoint": events_endpoint(et.name)} if self.stream == PRIMARY else {})})
        return False

    def _take_over(self, et: EventType, cadence: periods.Cadence, start: datetime, doc: dict[str, Any],
                   now: datetime, report: CloseReport) -> bool:
        """A completion record without ``state: closed``: its finisher is at work, or crashed. After its
        lease, the next attempt (created once) finishes it."""
        param = cadence.format(start)
        since = _utc(doc.get("finishing_since"), now)
        if now - since < FINISH_LEASE:
            report.open.append({"partition": param, "state": "completing", "reason": "being completed"})
            return False
        attempt = int(doc.get("attempt") or 1) + 1
        try:
            self.state.take_over(et.name, start, attempt, {"event_type": et.name, "at": now})
        except Conflict:
            report.skipped.append(param)
            return False
        self.state.update_closed(et.name, start, {"attempt": attempt, "finishing_since": now})
        bits = int(doc.get("bits") or 0)
        c = self._finish(et, cadence, start, bits, self.state.shards(et.name, start, shard_labels(bits)), now)
        report.closed.append(c)
        return True

    def _late_and_clean(self, name: str, cadence: periods.Cadence, start: datetime, keys: list[str],
                        doc: dict[str, Any] | None, closed: set[datetime], known_closed: Callable[[datetime], bool],
                        staging: dict[datetime, list[str]], candidates: set[datetime], report: CloseReport) -> None:
        if not keys:
            return
        merged = set((doc or {}).get("staging") or self._marker(name, start, cadence).get("staging", []))
        for key in keys:
            if key in merged:  # merged by a close that crashed before removing it
                self.sink.delete(key)
                report.cleaned += 1
                continue
            # late: received in a closed period → the next open one, in the same shard directory
            target = next_open(start, cadence, closed)
            while known_closed(target):
                target = next_open(target, cadence, closed)
            rel = key[len(staging_prefix(name, start)):]
            shard_dir, _, base = rel.rpartition("/")
            moved = f"{staging_prefix(name, target)}{shard_dir + '/' if shard_dir else ''}late-{base}"
            self.sink.write(moved, self.sink.read(key))
            self.sink.delete(key)
            staging.setdefault(target, []).append(moved)
            candidates.add(target)
            report.late_moved += 1

    def _marker(self, name: str, start: datetime, cadence: periods.Cadence) -> dict[str, Any]:
        """The ``_SUCCESS`` of a closed period (it lists the staging objects merged; the record does not:
        a large period's list outgrows a document)."""
        try:
            return dict(json.loads(self.sink.read(final_prefix(name, start, cadence) + SUCCESS)))
        except NotFound:
            return {}

    # ------------------------------------------------------------------------------------ one shard
    def run_shard(self, et: EventType, order: CloseOrder, now: datetime) -> ClosedPartition | None:
        """Merge one shard (what the close-shard function does with an order), record it, and complete the
        period when it was the last. Returns the closed partition when this call completed it.

        Raises:
            InfraError / any error: the shard failed (recorded on its document); the order is retried.
        """
        name, start, shard = et.name, order.start, order.shard
        cadence = periods.partitioning(et.spec.partitioning)
        if self.state.closed(name, [start]):
            return None  # completed (or being completed) by another run: a redelivered order
        prefix = final_prefix(name, start, cadence)
        keys = [k for k in self.sink.list(shard_prefix(name, start, shard) if shard
                                          else staging_prefix(name, start))
                if staging_shard(k, name) is not None]
        try:
            fmt = parquet_parts(et.spec.schema_, start) if et.spec.format == "parquet" else None
            result = merge_shard(self.sink, keys, prefix, shard, self.max_part_bytes, fmt=fmt)
        except NotFound:
            if self.state.closed(name, [start]):
                return None
            raise
        except Exception as exc:
            self.state.save_shard(name, start, shard, {"event_type": name, "error": f"{type(exc).__name__}: {exc}",
                                                        "failed_at": now, "round": order.round})
            raise
        self.state.save_shard(name, start, shard, {"event_type": name, **result.to_dict(), "error": None,
                                                    "finished_at": now, "round": order.round})
        log.event(logger, log.INFO, f"merged {self.what(name)} {cadence.format(start)} shard s{shard}: {result.events} events",
                  labels={"event_type": name, "parameter": cadence.format(start)},
                  shard=shard, duplicates=result.duplicates, parts=len(result.parts))
        docs = self.state.shards(name, start, shard_labels(order.bits))
        if len(docs) < 1 << order.bits or not all(d.get("finished_at") for d in docs.values()):
            return None
        return self._complete(et, cadence, start, order.bits, docs, now)

    # ------------------------------------------------------------------------------------ completion
    def _complete(self, et: EventType, cadence: periods.Cadence, start: datetime, bits: int,
                  docs: dict[str, dict[str, Any]], now: datetime) -> ClosedPartition | None:
        """Create the completion record (once); only its creator finishes."""
        shards = [docs[b] for b in shard_labels(bits)]
        totals = {k: sum(int(d[k]) for d in shards) for k in ("events", "duplicates", "late")}
        totals["lines"] = totals["events"] + totals["duplicates"]
        reason = self.completion_gate(et, start, totals, now)
        if reason is not None:
            self.state.release_claim(et.name, start, shard_labels(bits), reason, now)
            log.event(logger, log.WARNING, f"{self.what(et.name)} {cadence.format(start)} may not complete: {reason}",
                      labels={"event_type": et.name, "parameter": cadence.format(start)}, totals=totals)
            return None
        try:
            self.state.create_closed(et.name, start, {"event_type": et.name, "partition": cadence.format(start),
                                                      "state": "finishing", "bits": bits, "attempt": 1,
                                                      "finishing_since": now})
        except Conflict:
            return None
        return self._finish(et, cadence, start, bits, docs, now)

    def _load_table(self, et: EventType, cadence: periods.Cadence, start: datetime, parts: list[str]) -> None:
        """Make the closed period queryable in its table (deployed; after ``_SUCCESS``: never a partial
        period). A failure leaves the period closed (the files are the truth) and is logged as an error."""
        if self.tables is None or self.stream != PRIMARY or not parts:
            return
        try:
            self.tables.load_period(et.name, start, cadence.next(start) - start, [self.sink.uri(p) for p in parts])
        except Exception as exc:
            log.event(logger, log.ERROR, f"loading {self.what(et.name)} {cadence.format(start)} into its table "
                      f"failed: {exc}", labels={"event_type": et.name, "parameter": cadence.format(start)})

    def _finish(self, et: EventType, cadence: periods.Cadence, start: datetime, bits: int,
                docs: dict[str, dict[str, Any]], now: datetime) -> ClosedPartition:
        name, param = et.name, cadence.format(start)
        shards = [docs[b] for b in shard_labels(bits)]
        prefix = final_prefix(name, start, cadence)
        parts = sorted(p for d in shards for p in d["parts"])
        wanted = set(parts)
        for stale in self.sink.list(prefix):  # parts of an earlier attempt at another shard count
            if stale.rsplit("/", 1)[1].startswith("part-") and stale not in wanted:
                self.sink.delete(stale)
        staging = sorted(k for d in shards for k in d["staging"])
        totals = {k: sum(int(d[k]) for d in shards) for k in ("events", "duplicates", "late", "bytes")}
        replayed = sum(int(d.get("replayed", 0)) for d in shards)  # shard records of older versions have none
        marker = {"event_type": name, "partition": param, "events": totals["events"],
                  "duplicates_dropped": totals["duplicates"], "late_events": totals["late"],
                  "replayed_events": replayed,
                  "bytes": totals["bytes"], "parts": len(parts), "shards": len(shards),
                  "per_shard": {f"s{d['shard']}": {"events": d["events"], "duplicates": d["duplicates"],
                                                    "late": d["late"], "parts": len(d["parts"])} for d in shards},
                  "staging": staging, "closed_at": iso(now)}
        self.sink.write(prefix + SUCCESS, json.dumps(marker, indent=1).encode())
        location = self.sink.uri(prefix)
        self._load_table(et, cadence, start, [p for p in parts if p.endswith(".parquet")])
        endpoint = events_endpoint(name)
        if self.datamon is not None and not self.datamon.landed(endpoint, [param]):
            self.datamon.land(endpoint, param, now=now, records=totals["events"], bytes=totals["bytes"],
                              location=location, source="gabo")
        self.state.update_closed(name, start, {**{k: v for k, v in marker.items()
                                                  if k not in ("closed_at", "per_shard", "staging")},
                                               "state": "closed", "closed_at": now, "location": location})
        self.state.update_claim(name, start, {"state": "closed"})
        for k in staging:
            self.sink.delete(k)
        log.event(logger, log.INFO, f"closed {self.what(name)} {param}: {totals['events']} events in {len(shards)} shard(s)",
                  labels={"event_type": name, "stream": self.stream, "parameter": param,
                          **({"endpoint": endpoint} if self.datamon is not None else {})},
                  marker={k: v for k, v in marker.items() if k != "staging"})
        return ClosedPartition(param, totals["events"], totals["duplicates"], totals["late"], totals["bytes"],
                               len(parts), location, len(shards))


def _utc(value: Any, default: datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return parse_iso(value)
    return default


__all__ = ["Closer", "CloseOrder", "CloseReport", "ClosedPartition", "CloseGate", "ShardResult", "CLOSE_ORDERS_TOPIC"]
