"""The darkload report: does the shadow's closed partition hold exactly the sampled subset of the primary's?

Ingest mirrors the events whose id :func:`sampled` picks (a stable hash of the id) to the shadow
stream, which has its own delivery and closing into the sink's ``darkload/`` prefix. For a partition that
both streams closed, the report reads both sides' final parts and compares ids and counts.

Bounded memory: both sides' parts are sharded by a prefix of the bits of ``crc32(id)`` (``part-s<bits>-…``),
so one shard of the coarser side is exactly the union of the finer side's shards it prefixes. The report
walks the shards at the smaller of the two shard counts and, per shard, holds the shadow's ids of that
shard only (a sample of one shard of the primary), while the primary's lines stream past — never a whole
partition's ids. The comparison itself (:func:`compare_ids`) is pure.

A mismatch raises one owner-routed alert per partition (claimed by a ``create`` in
``gabo_darkload_alerts``, published to ``ferry-alerts`` like every alert the notify function routes).

A closed partition does not change, so its comparison is kept (``gabo_darkload_results``, valid while
both sides' ``closed_at`` and the fraction are the ones it was computed for) and a report of the recent
partitions computes only the new ones, within a time budget: what does not fit is reported ``pending``
(run the report again).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from ferry import log
from ferry.domain import periods
from ferry.domain.manifests import EventType, events_endpoint
from ferry.errors import BadRequest, Conflict, FerryError
from ferry.gabo.closing.merge import gzip_chunks, line_fields
from ferry.gabo.delivery.sink import Sink
from ferry.gabo.names import DARKLOAD, PRIMARY, STREAMS, final_prefix, sampled, shard_labels
from ferry.gabo.tables import parquet
from ferry.notify import messages as msgs
from ferry.store.base import Op

if TYPE_CHECKING:
    from ferry.broker.base import Publisher
    from ferry.gabo.state import GaboState
    from ferry.store.base import DocumentStore
    from ferry.store.manifests import ManifestRecord

logger = log.get("gabo.darkload")


class Streams(Protocol):
    """What the report uses of Gabo's facade (``ferry.gabo.service.Gabo``): a type, each stream's records
    and sink, the store its results are kept in and the publisher of its alerts."""

    store: DocumentStore
    publisher: Publisher

    def event_type(self, name: str) -> tuple[EventType, ManifestRecord]: ...

    def state_of(self, stream: str) -> GaboState: ...

    def sink_of(self, stream: str) -> Sink: ...

MAX_NAMED = 20  # ids named per side of a mismatch (every one is counted)
ALERTS, RESULTS = "gabo_darkload_alerts", "gabo_darkload_results"
RECENT = 10  # partitions reported when none is named
BUDGET_S = 60.0  # of comparing per report (the API function's timeout is 120 s)


@dataclass
class Comparison:
    """The shadow against the sampled subset of the primary, for one shard or a whole partition."""

    primary: int = 0   # ids the primary closed
    sampled: int = 0   # of those, the ids sampling mirrors to the shadow
    shadow: int = 0    # ids the shadow closed
    missing: int = 0   # sampled primary ids the shadow lacks
    extra: int = 0     # shadow ids that are not sampled primary ids
    missing_ids: list[str] = field(default_factory=list)
    extra_ids: list[str] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return self.missing == 0 and self.extra == 0

    def add(self, other: Comparison, cap: int = MAX_NAMED) -> None:
        for k in ("primary", "sampled", "shadow", "missing", "extra"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.missing_ids = (self.missing_ids + other.missing_ids)[:cap]
        self.extra_ids = (self.extra_ids + other.extra_ids)[:cap]

    def to_dict(self) -> dict[str, Any]:
        return {"primary_events": self.primary, "sampled_events": self.sampled, "shadow_events": self.shadow,
                "missing": self.missing, "extra": self.extra, "missing_ids": self.missing_ids,
                "extra_ids": self.extra_ids}


def compare_ids(shadow_ids: Iterable[str], primary_ids: Iterable[str], fraction: float,
                cap: int = MAX_NAMED) -> Comparison:
    """Compare one shard: ``shadow_ids`` (held as a set: the shadow's ids of the shard) with the ids of
    ``primary_ids`` that :func:`sampled` picks at ``fraction`` (streamed). Names up to ``cap`` ids per
    side: missing ones in the primary's order, extra ones smallest first."""
    shadow = set(shadow_ids)
    out = Comparison(shadow=len(shadow))
    for i in primary_ids:
        out.primary += 1
        if not sampled(i, fraction):
            continue
        out.sampled += 1
        if i in shadow:
            shadow.discard(i)
            continue
        out.missing += 1
        if len(out.missing_ids) < cap:
            out.missing_ids.append(i)
    out.extra = len(shadow)
    out.extra_ids = heapq.nsmallest(cap, shadow)
    return out


def closed_ids(sink: Sink, prefix: str, shard: str) -> Iterator[str]:
    """The ids of a closed partition's parts of ``shard`` (every finer shard it prefixes), streamed."""
    for key in sink.list(f"{prefix}part-s{shard}"):
        if key.endswith(parquet.EXTENSION):
            yield from parquet.ids(sink.read(key))
            continue
        for lines in gzip_chunks(sink.read(key)):
            for ln in lines:
                yield line_fields(ln)[0].decode()


def compare_partition(primary: Sink, shadow: Sink, prefix: str, primary_bits: int, shadow_bits: int,
                      fraction: float, cap: int = MAX_NAMED) -> Comparison:
    """Shard by shard at the smaller shard count of the two sides (see the module's docstring)."""
    total = Comparison()
    for b in shard_labels(min(primary_bits, shadow_bits)):
        total.add(compare_ids(closed_ids(shadow, prefix, b), closed_ids(primary, prefix, b), fraction, cap), cap)
    return total


def report(g: Streams, name: str, now: datetime, partition: str | None = None, limit: int = RECENT,
           budget_s: float = BUDGET_S) -> dict[str, Any]:
    """Per closed partition of ``name`` (``partition``, or those of the last ``limit`` periods before now):
    the shadow's ids and counts against the sampled subset of the primary's; a mismatch alerts the owner
    once per partition.

    Raises:
        NotFound: no such event type. BadRequest: it has no shadow, or ``partition`` is not one of its.
    """
    et, _ = g.event_type(name)
    if et.spec.darkload <= 0:
        raise BadRequest(f"event type {name} is not darkloaded (spec.darkload is 0): there is no shadow to compare")
    cadence = periods.partitioning(et.spec.partitioning)
    if partition:
        try:
            starts = [cadence.parse(partition)]
        except ValueError as exc:
            raise BadRequest(f"not a partition of {name} ({et.spec.partitioning}): {exc}") from None
    else:
        starts = []
        t = cadence.floor(now)
        while len(starts) < limit:
            t = cadence.prev(t)
            starts.append(t)
    sides = {s: g.state_of(s).closed(name, starts) for s in STREAMS}
    kept = g.store.get_many(RESULTS, [result_id(name, cadence.format(t)) for t in starts])
    deadline = time.monotonic() + budget_s
    rows = []
    for start in starts:
        docs = {s: sides[s].get(start) for s in STREAMS}
        if not partition and not any(docs.values()):
            continue  # before the type, or never staged on either side
        rows.append(_partition_row(g, et, cadence, start, docs, now, kept, deadline))
    mismatched = [r for r in rows if r["state"] == "mismatch"]
    return {"event_type": name, "fraction": et.spec.darkload, "partitions": rows,
            "summary": {"compared": sum(r["state"] != "pending" for r in rows), "mismatched": len(mismatched),
                        "pending": sum(r["state"] == "pending" for r in rows)}}


def result_id(name: str, param: str) -> str:
    return f"{name}~{param.replace('/', '_')}"


def _partition_row(g: Streams, et: EventType, cadence: periods.Cadence, start: datetime,
                   docs: dict[str, dict[str, Any] | None], now: datetime, kept: dict[str, dict[str, Any]],
                   deadline: float) -> dict[str, Any]:
    param = cadence.format(start)
    waiting = [s for s, d in docs.items() if (d or {}).get("state") != "closed"]
    if waiting:
        return {"partition": param, "state": "pending",
                "reason": f"not closed yet: {' and '.join(waiting)}" + (" (the shadow)" if waiting == [DARKLOAD]
                                                                        else "")}
    version = "|".join(str((docs[s] or {}).get("closed_at")) for s in STREAMS) + f"|{et.spec.darkload}"
    known = kept.get(result_id(et.name, param))
    if known is not None and known.get("version") == version:
        return {**known["row"], **({"alerted": False} if known["row"]["state"] == "mismatch" else {})}
    if time.monotonic() >= deadline:
        return {"partition": param, "state": "pending",
                "reason": "not compared yet: this report's time budget was spent on other partitions (run it again)"}
    bits = {s: int((d or {}).get("bits") or 0) for s, d in docs.items()}
    cmp = compare_partition(g.sink_of(PRIMARY), g.sink_of(DARKLOAD),
                            final_prefix(et.name, start, cadence), bits[PRIMARY], bits[DARKLOAD],
                            et.spec.darkload)
    row: dict[str, Any] = {"partition": param, "state": "match" if cmp.matches else "mismatch", **cmp.to_dict(),
                           "primary_shards": 1 << bits[PRIMARY], "shadow_shards": 1 << bits[DARKLOAD],
                           "compared_shards": 1 << min(bits.values())}
    g.store.write([Op.set(RESULTS, result_id(et.name, param), {
        "event_type": et.name, "partition": param, "version": version, "at": now, "row": row})])
    if not cmp.matches:
        row["alerted"] = alert(g, et, param, cmp, now)
    return row


def summary(et: EventType, param: str, cmp: Comparison) -> str:
    parts = []
    if cmp.missing:
        parts.append(f"{cmp.missing:,} sampled event(s) missing from the shadow (first: {', '.join(cmp.missing_ids[:5])})")
    if cmp.extra:
        parts.append(f"{cmp.extra:,} shadow event(s) not in the primary (first: {', '.join(cmp.extra_ids[:5])})")
    return (f"darkload of {events_endpoint(et.name)} {param} does not match: {'; '.join(parts)} — shadow "
            f"{cmp.shadow:,}, sampled primary {cmp.sampled:,} of {cmp.primary:,}")


def alert(g: Streams, et: EventType, param: str, cmp: Comparison, now: datetime) -> bool:
    """Alert the type's owner of a mismatch, once per partition. Returns whether this call raised it."""
    key = result_id(et.name, param)
    text = summary(et, param, cmp)
    try:
        g.store.write([Op.create(ALERTS, key, {"event_type": et.name, "partition": param, "at": now,
                                                        "summary": text, **cmp.to_dict()})])
    except Conflict:
        return False  # raised already, by an earlier report
    endpoint = events_endpoint(et.name)
    try:
        g.publisher.publish(msgs.ALERTS_TOPIC, [msgs.alert_message(
            et.metadata.owner, f"darkload:{endpoint}@{param}", text, severity="warning", kind="darkload",
            subject=endpoint, source="ferry-gabo", details={"partition": param, **cmp.to_dict()})])
    except FerryError:
        g.store.write([Op.delete(ALERTS, key)])  # not raised: the next report tries again
        raise
    log.event(logger, log.WARNING, text, labels={"event_type": et.name, "owner": et.metadata.owner,
                                                  "parameter": param})
    return True
