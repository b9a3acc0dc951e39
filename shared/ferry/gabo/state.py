"""Gabo's state in the document store: worker runs (pull statistics), closed partitions, cursors, scaling.

Collections: ``gabo_runs`` (one document per delivery run, written by that run only — no hot
documents), ``gabo_closed`` (one per closed partition, id ``<type>~<key>``), ``gabo_cursors`` (one per
type: the first period not yet known closed; written by the closer only), ``gabo_scaling`` (one per
decision).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ferry.gabo.core import parse_iso, partition_key
from ferry.store.base import Doc, DocumentStore, Op, Where

RUNS, CLOSED, CURSORS, SCALING = "gabo_runs", "gabo_closed", "gabo_cursors", "gabo_scaling"


def closed_id(event_type: str, start: datetime) -> str:
    return f"{event_type}~{partition_key(start)}"


class GaboState:
    def __init__(self, store: DocumentStore) -> None:
        self.store = store

    # runs -------------------------------------------------------------------------------------------
    def save_run(self, run_id: str, doc: Doc) -> None:
        self.store.write([Op.set(RUNS, run_id, doc)])

    def recent_runs(self, event_type: str, since: datetime) -> list[Doc]:
        rows = self.store.query(RUNS, [Where("event_type", "==", event_type), Where("updated_at", ">=", since)],
                                order_by="updated_at")
        return [d for _, d in rows]

    # closed partitions ------------------------------------------------------------------------------
    def closed(self, event_type: str, starts: Sequence[datetime]) -> dict[datetime, Doc]:
        ids = {closed_id(event_type, s): s for s in starts}
        found = self.store.get_many(CLOSED, list(ids)) if ids else {}
        return {ids[k]: v for k, v in found.items()}

    def mark_closed(self, event_type: str, start: datetime, doc: Doc) -> None:
        self.store.write([Op.set(CLOSED, closed_id(event_type, start), doc)])

    def cursor(self, event_type: str) -> datetime | None:
        doc = self.store.get(CURSORS, event_type)
        return parse_iso(doc["next"]) if doc and doc.get("next") else None

    def set_cursor(self, event_type: str, next_start: datetime, now: datetime) -> None:
        self.store.write([Op.set(CURSORS, event_type, {"next": next_start.isoformat(), "updated_at": now})])

    # scaling ----------------------------------------------------------------------------------------
    def record_decision(self, event_type: str, now: datetime, doc: dict[str, Any]) -> None:
        self.store.write([Op.set(SCALING, f"{event_type}~{now.strftime('%Y%m%dT%H%M%S.%f')}",
                                 {"event_type": event_type, "at": now, **doc})])

    def last_decision(self, event_type: str, now: datetime) -> Doc | None:
        rows = self.store.query(SCALING, [Where("event_type", "==", event_type),
                                          Where("at", ">=", now - timedelta(days=1))], order_by="at",
                                descending=True, limit=1)
        return rows[0][1] if rows else None
