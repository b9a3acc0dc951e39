"""Retention: Gabo's records are deleted once their use is over — a scheduled cleanup, bounded per run.

The scheduled ``close`` runs :func:`cleanup` after deciding (``POST /v1/close`` without a type). Per type
and stream it deletes, at most ``MAX_PERIODS`` periods' and ``MAX_DOCS`` documents' worth a collection
per run (a type far behind catches up over runs; see docs/gabo.md, "Retention"):

- the closing records of a period (claim ``gabo_closing``, shard records ``gabo_close_shards``,
  takeovers ``gabo_finishers``, waits ``gabo_close_waits``) and its ledger (``gabo_ledger``,
  ``gabo_delivered``): ``CLOSING_RETENTION`` after the period's end, once it closed (before the cursor);
- completion records (``gabo_closed``): ``CLOSED_RETENTION`` after the period's end, once closed;
- delivery runs (``gabo_runs``): ``RUN_RETENTION`` after their last update; a run silent for
  ``ABANDONED_AFTER`` (its worker was killed) is marked finished and ``abandoned`` — never "unfinished"
  forever; in-flight ledger records of requests that died: once past ``IN_FLIGHT_TTL`` twice;
- scaling decisions (``gabo_scaling``): ``SCALING_RETENTION``;
- a deleted type (``gabo_deleted_types``): ``DELETED_RETENTION`` after its deletion every record of it,
  then the deletion record (its topics and hold subscriptions go in the reconcile, at the same time).

Pure decisions (which periods, which cutoffs) are plain functions; ``cleanup`` carries them out on a
``DocumentStore``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ferry.domain import periods
from ferry.gabo.envelopes import parse_iso
from ferry.gabo.ingest.ledger import DELIVERED, IN_FLIGHT_TTL, LEDGER
from ferry.gabo.names import DARKLOAD, partition_key, shard_labels
from ferry.gabo.state import (
    CLOSED,
    CLOSING,
    CURSORS,
    FINISHERS,
    RUNS,
    SCALING,
    SHARDS,
    WAITS,
    GaboState,
    closed_id,
)
from ferry.store.base import DocumentStore, Op, Where

CLOSING_RETENTION = timedelta(days=1)
CLOSED_RETENTION = timedelta(days=2)  # read by id only: a redelivered order, a takeover, recent reports
RUN_RETENTION = timedelta(days=2)
SCALING_RETENTION = timedelta(days=2)
# A live delivery run saves its record at every pull that finds nothing, every flush and every lease
# extension (5 s): one silent this long was killed (the deliver function's timeout is 120 s).
ABANDONED_AFTER = timedelta(minutes=15)
DELETED_RETENTION = timedelta(days=7)  # as a delivery subscription's message retention
DELETED_TYPES = "gabo_deleted_types"
MAX_PERIODS = 200  # periods per type, stream and kind of record a run cleans
MAX_DOCS = 500  # documents a query of one run returns (and deletes)


@dataclass
class Cleaned:
    """What one cleanup deleted (documents per collection) and marked (abandoned runs)."""

    deleted: dict[str, int] = field(default_factory=dict)
    abandoned_runs: int = 0
    deleted_types: list[str] = field(default_factory=list)

    def count(self, collection: str, n: int) -> None:
        if n:
            self.deleted[collection] = self.deleted.get(collection, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return {"deleted": dict(sorted(self.deleted.items())), "abandoned_runs": self.abandoned_runs,
                "deleted_types": self.deleted_types}


def due_periods(cadence: periods.Cadence, cleaned: datetime, closed_before: datetime, now: datetime,
                retention: timedelta, limit: int = MAX_PERIODS) -> list[datetime]:
    """The periods from ``cleaned`` on whose records are due: closed (before ``closed_before``, the
    cursor) and ended ``retention`` ago; at most ``limit``."""
    out: list[datetime] = []
    t = cleaned
    while t < closed_before and cadence.next(t) <= now - retention and len(out) < limit:
        out.append(t)
        t = cadence.next(t)
    return out


def _delete(store: DocumentStore, collection: str, ids: Iterable[str], out: Cleaned) -> None:
    ops = [Op.delete(collection, i) for i in ids]
    for i in range(0, len(ops), 400):
        store.write(ops[i:i + 400])
    out.count(collection, len(ops))


def _pointer(doc: dict[str, Any] | None, key: str, default: datetime) -> datetime:
    raw = (doc or {}).get(key)
    return parse_iso(raw) if isinstance(raw, str) else default


def clean_stream(state: GaboState, name: str, cadence: periods.Cadence, first: datetime, now: datetime,
                 out: Cleaned, ledger: bool) -> None:
    """The records of one type's stream whose retention passed (see the module's docstring)."""
    store = state.store
    doc = store.get(state.cursors_c, name)
    nxt = _pointer(doc, "next", first)
    # closing records and the ledger of closed periods
    start = _pointer(doc, "cleaned", first)
    due = due_periods(cadence, start, nxt, now, CLOSING_RETENTION)
    if due:
        closed = state.closed(name, due)
        ids: dict[str, list[str]] = {state.closing_c: [], state.waits_c: [], state.shards_c: [], state.finishers_c: []}
        for s in due:
            rec = closed.get(s) or {}
            cid = closed_id(name, s)
            ids[state.closing_c].append(cid)
            ids[state.waits_c].append(cid)
            ids[state.shards_c] += [f"{cid}~s{b}" for b in shard_labels(int(rec.get("bits") or 0))]
            ids[state.finishers_c] += [f"{cid}~{n}" for n in range(2, int(rec.get("attempt") or 1) + 1)]
        for collection, batch in ids.items():
            _delete(store, collection, batch, out)
        store.write([Op.set(state.cursors_c, name, {"cleaned": cadence.next(due[-1]).isoformat()}, merge=True)])
        if ledger:
            upto = partition_key(cadence.next(due[-1]))
            rows = store.query(LEDGER, [Where("event_type", "==", name), Where("state", "==", "accepted"),
                                        Where("period", "<", upto)], limit=MAX_DOCS)
            _delete(store, LEDGER, [i for i, _ in rows], out)
            rows = store.query(DELIVERED, [Where("event_type", "==", name), Where("period", "<", upto)],
                               limit=MAX_DOCS)
            _delete(store, DELIVERED, [i for i, _ in rows], out)
    # completion records
    start = _pointer(doc, "closed_cleaned", first)
    due = due_periods(cadence, start, nxt, now, CLOSED_RETENTION)
    if due:
        _delete(store, state.closed_c, [closed_id(name, s) for s in due], out)
        store.write([Op.set(state.cursors_c, name, {"closed_cleaned": cadence.next(due[-1]).isoformat()},
                            merge=True)])
    # delivery runs: the killed ones marked, the old ones deleted
    silent = store.query(state.runs_c, [Where("event_type", "==", name), Where("finished_at", "==", None),
                                        Where("updated_at", "<", now - ABANDONED_AFTER)], limit=MAX_DOCS)
    if silent:
        store.write([Op.set(state.runs_c, i, {"finished_at": d.get("updated_at"), "abandoned": True,
                                              "abandoned_at": now, "holding_oldest": None}, merge=True)
                     for i, d in silent])
        out.abandoned_runs += len(silent)
    old = store.query(state.runs_c, [Where("event_type", "==", name), Where("updated_at", "<", now - RUN_RETENTION)],
                      order_by="updated_at", limit=MAX_DOCS)
    _delete(store, state.runs_c, [i for i, _ in old], out)
    old = store.query(state.scaling_c, [Where("event_type", "==", name), Where("at", "<", now - SCALING_RETENTION)],
                      order_by="at", descending=True, limit=MAX_DOCS)
    _delete(store, state.scaling_c, [i for i, _ in old], out)
    if ledger:  # in-flight records of requests that died (they stopped counting at IN_FLIGHT_TTL)
        rows = store.query(LEDGER, [Where("event_type", "==", name), Where("state", "==", "in_flight")], limit=MAX_DOCS)
        _delete(store, LEDGER, [i for i, d in rows if d["since"] + 2 * IN_FLIGHT_TTL < now], out)


# Every collection holding records of a type, by ``event_type`` (the primary's and the shadow's).
def _type_collections() -> list[str]:
    base = [RUNS, CLOSED, CLOSING, SHARDS, WAITS, SCALING]
    return [LEDGER, DELIVERED, *base, *(c.replace("gabo_", f"gabo_{DARKLOAD}_", 1) for c in base)]


def clean_deleted(store: DocumentStore, name: str, out: Cleaned) -> bool:
    """Every record of a deleted type (a query's worth per collection and run). True when none is left."""
    left = False
    for collection in _type_collections():
        rows = store.query(collection, [Where("event_type", "==", name)], limit=MAX_DOCS)
        _delete(store, collection, [i for i, _ in rows], out)
        left = left or len(rows) == MAX_DOCS
    if not left:
        cursors = [CURSORS, CURSORS.replace("gabo_", f"gabo_{DARKLOAD}_", 1)]
        for c in cursors:
            if store.get(c, name) is not None:
                _delete(store, c, [name], out)
        # takeovers name their period only: a deleted type's are found by id
        rows = store.query(FINISHERS, [Where("event_type", "==", name)], limit=MAX_DOCS)
        _delete(store, FINISHERS, [i for i, _ in rows], out)
    return not left


def deletion_record(name: str, now: datetime, topics: list[str], subscriptions: list[str]) -> dict[str, Any]:
    """What ``gabo_deleted_types/<name>`` holds: when, until when its resources and records are kept."""
    return {"event_type": name, "deleted_at": now, "keep_until": now + DELETED_RETENTION, "topics": topics,
            "subscriptions": subscriptions}
