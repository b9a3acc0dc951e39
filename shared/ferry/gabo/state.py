"""Gabo's state in the document store: worker runs (pull statistics), closed partitions, cursors, scaling.

Collections: ``gabo_runs`` (one document per delivery run, written by that run only — no hot
documents), ``gabo_closing`` (the claim of one close of a period, id ``<type>~<key>``, created once:
one close per period at a time), ``gabo_close_shards`` (one per shard of a claimed period, written by
that shard's worker), ``gabo_closed`` (the completion record of a closed partition, created once —
whoever creates it writes ``_SUCCESS`` and lands), ``gabo_finishers`` (takeovers of a crashed
completion, one per attempt), ``gabo_cursors`` (one per type: the first period not yet known closed;
written by the closer only), ``gabo_scaling`` (one per decision).

The darkload shadow of a type (``names.DARKLOAD``) keeps the same records in collections of its own
(``gabo_darkload_runs``, ``gabo_darkload_closed``, …): its runs never move the primary's watermark, its
claims and completions never stand for the primary's.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ferry.gabo.envelopes import parse_iso
from ferry.gabo.names import PRIMARY, partition_key
from ferry.store.base import Doc, DocumentStore, Op, Where

RUNS, CLOSED, CURSORS, SCALING = "gabo_runs", "gabo_closed", "gabo_cursors", "gabo_scaling"
CLOSING, SHARDS, FINISHERS, WAITS = "gabo_closing", "gabo_close_shards", "gabo_finishers", "gabo_close_waits"


def closed_id(event_type: str, start: datetime) -> str:
    return f"{event_type}~{partition_key(start)}"


def shard_id(event_type: str, start: datetime, shard: str) -> str:
    return f"{closed_id(event_type, start)}~s{shard}"


def collection(name: str, stream: str = PRIMARY) -> str:
    """The collection of ``name`` (one of this module's) for ``stream``: ``gabo_runs`` → ``gabo_darkload_runs``."""
    return name if stream == PRIMARY else name.replace("gabo_", f"gabo_{stream}_", 1)


class GaboState:
    def __init__(self, store: DocumentStore, stream: str = PRIMARY) -> None:
        self.store = store
        self.stream = stream
        c = functools.partial(collection, stream=stream)
        self.runs_c, self.closed_c, self.cursors_c, self.scaling_c = c(RUNS), c(CLOSED), c(CURSORS), c(SCALING)
        self.closing_c, self.shards_c, self.finishers_c, self.waits_c = c(CLOSING), c(SHARDS), c(FINISHERS), c(WAITS)

    # runs -------------------------------------------------------------------------------------------
    def save_run(self, run_id: str, doc: Doc) -> None:
        self.store.write([Op.set(self.runs_c, run_id, doc)])

    def recent_runs(self, event_type: str, since: datetime) -> list[Doc]:
        rows = self.store.query(self.runs_c, [Where("event_type", "==", event_type), Where("updated_at", ">=", since)],
                                order_by="updated_at")
        return [d for _, d in rows]

    # closed partitions ------------------------------------------------------------------------------
    def closed(self, event_type: str, starts: Sequence[datetime]) -> dict[datetime, Doc]:
        ids = {closed_id(event_type, s): s for s in starts}
        found = self.store.get_many(self.closed_c, list(ids)) if ids else {}
        return {ids[k]: v for k, v in found.items()}

    def mark_closed(self, event_type: str, start: datetime, doc: Doc) -> None:
        self.store.write([Op.set(self.closed_c, closed_id(event_type, start), doc)])

    def create_closed(self, event_type: str, start: datetime, doc: Doc) -> None:
        """The completion record, once. Raises Conflict when it exists (another run completes it)."""
        self.store.write([Op.create(self.closed_c, closed_id(event_type, start), doc)])

    def update_closed(self, event_type: str, start: datetime, doc: Doc) -> None:
        self.store.write([Op.set(self.closed_c, closed_id(event_type, start), doc, merge=True)])

    def take_over(self, event_type: str, start: datetime, attempt: int, doc: Doc) -> None:
        """Claim attempt ``attempt`` at completing a period whose finisher went silent. Raises Conflict."""
        self.store.write([Op.create(self.finishers_c, f"{closed_id(event_type, start)}~{attempt}", doc)])

    # claims and shards ------------------------------------------------------------------------------
    def claims(self, event_type: str, starts: Sequence[datetime]) -> dict[datetime, Doc]:
        ids = {closed_id(event_type, s): s for s in starts}
        found = self.store.get_many(self.closing_c, list(ids)) if ids else {}
        return {ids[k]: v for k, v in found.items()}

    def claim(self, event_type: str, start: datetime, doc: Doc) -> None:
        """One close of a period at a time. Raises Conflict when another run holds (or held) it."""
        self.store.write([Op.create(self.closing_c, closed_id(event_type, start), doc)])

    def update_claim(self, event_type: str, start: datetime, doc: Doc) -> None:
        self.store.write([Op.set(self.closing_c, closed_id(event_type, start), doc, merge=True)])

    def release_claim(self, event_type: str, start: datetime, labels: Sequence[str], reason: str,
                      now: datetime) -> None:
        """Give a claimed period back (its merge may not complete yet): shard records first, then the claim,
        so that a later close claims it afresh. The reason stays in ``gabo_close_waits``."""
        self.store.write([Op.delete(self.shards_c, shard_id(event_type, start, b)) for b in labels])
        self.store.write([Op.set(self.waits_c, closed_id(event_type, start), {"event_type": event_type, "reason": reason,
                                                                       "at": now}),
                          Op.delete(self.closing_c, closed_id(event_type, start))])

    def shards(self, event_type: str, start: datetime, labels: Sequence[str]) -> dict[str, Doc]:
        ids = {shard_id(event_type, start, b): b for b in labels}
        found = self.store.get_many(self.shards_c, list(ids)) if ids else {}
        return {ids[k]: v for k, v in found.items()}

    def save_shard(self, event_type: str, start: datetime, shard: str, doc: Doc) -> None:
        self.store.write([Op.set(self.shards_c, shard_id(event_type, start, shard), doc, merge=True)])

    def recent_shards(self, event_type: str, since: datetime) -> list[Doc]:
        """Shard merges recorded since ``since`` (their counts and seconds: the capacity model)."""
        rows = self.store.query(self.shards_c, [Where("event_type", "==", event_type), Where("finished_at", ">=", since)],
                                order_by="finished_at", descending=True, limit=200)
        return [d for _, d in rows]

    def cursor(self, event_type: str) -> datetime | None:
        """The first period of ``event_type`` not known closed (every one before it is)."""
        return self.cursor_state(event_type)[0]

    def cursor_state(self, event_type: str) -> tuple[datetime | None, datetime | None, list[datetime]]:
        """``(next, scan, stuck)``: every period before ``next`` is closed; from ``next`` to ``scan`` every
        one is closed but those in ``stuck`` (ended, yet held: by a gate, a claim, a completion); from
        ``scan`` on nothing was decided yet. A record of an older version has ``next`` alone."""
        doc = self.store.get(self.cursors_c, event_type) or {}
        nxt = parse_iso(doc["next"]) if doc.get("next") else None
        scan = parse_iso(doc["scan"]) if doc.get("scan") else nxt
        return nxt, scan, [parse_iso(s) for s in doc.get("stuck") or []]

    def set_cursor(self, event_type: str, next_start: datetime, now: datetime, scan: datetime | None = None,
                   stuck: Sequence[datetime] = ()) -> None:
        self.store.write([Op.set(self.cursors_c, event_type, {  # merged: the cleanup keeps its pointers here
            "next": next_start.isoformat(), "scan": (scan or next_start).isoformat(),
            "stuck": [s.isoformat() for s in stuck], "updated_at": now}, merge=True)])

    # scaling ----------------------------------------------------------------------------------------
    def record_decision(self, event_type: str, now: datetime, doc: dict[str, Any]) -> None:
        self.store.write([Op.set(self.scaling_c, f"{event_type}~{now.strftime('%Y%m%dT%H%M%S.%f')}",
                                 {"event_type": event_type, "at": now, **doc})])

    def last_decision(self, event_type: str, now: datetime) -> Doc | None:
        rows = self.store.query(self.scaling_c, [Where("event_type", "==", event_type),
                                          Where("at", ">=", now - timedelta(days=1))], order_by="at",
                                descending=True, limit=1)
        return rows[0][1] if rows else None
