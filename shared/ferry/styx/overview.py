"""When each workflow runs next, and how its last runs went (``ferry get workflows``, ``ferry get
workflow NAME``, the web view's workflow list).

The next natural trigger is what the tick itself reads: ``styx_workflows/{name}.next_due`` (the fire
time of ``next_period``, smear included; absent while disabled) — one read per workflow shown. The
last runs are the workflow's newest instances by parameter (one query of at most ``LAST_RUNS``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ferry.clock import iso
from ferry.errors import NotFound
from ferry.store.base import DocumentStore, Where
from ferry.store.manifests import ManifestRecord, ManifestRepository
from ferry.styx.repository import INSTANCES, WORKFLOWS

LAST_RUNS = 12


def next_runs(store: DocumentStore, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each workflow's next natural trigger: ``next_run`` (ISO time, None while disabled) and the
    parameter it runs (``next_parameter``). One batched read."""
    states = store.get_many(WORKFLOWS, list(names)) if names else {}
    out = {}
    for n in names:
        s = states.get(n) or {}
        due = s.get("next_due")
        out[n] = {"next_run": iso(_utc(due)) if due is not None else None,
                  "next_parameter": s.get("next_period") if due is not None else None}
    return out


def last_runs(store: DocumentStore, name: str, limit: int = LAST_RUNS) -> list[dict[str, Any]]:
    """The workflow's newest instances (by parameter, newest first): parameter, state, tries, when."""
    rows = store.query(INSTANCES, [Where("workflow", "==", name)], order_by="parameter", descending=True,
                       limit=limit)
    return [{"parameter": d["parameter"], "state": d["state"], "tries": d.get("tries", 0),
             "updated_at": iso(d.get("updated_at"))} for _, d in rows]


def with_status(rec: ManifestRecord, nxt: dict[str, Any], last: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The workflow as ``ferry get`` shows any object, its ``status`` extended with its next run (and
    its last runs)."""
    item = rec.to_api()
    item["status"] = {**item.get("status", {}), **nxt, **({"last_runs": last} if last is not None else {})}
    return item


def listing(store: DocumentStore, owner: str | None, limit: int, after: str | None) -> dict[str, Any]:
    page, token = ManifestRepository(store).list("Workflow", owner, limit, after)
    nxt = next_runs(store, [r.name for r in page])
    return {"items": [with_status(r, nxt[r.name]) for r in page], "next_page_token": token}


def one(store: DocumentStore, name: str) -> dict[str, Any]:
    rec = ManifestRepository(store).get("Workflow", name)
    if rec is None:
        raise NotFound(f"workflow {name!r} not found")
    return with_status(rec, next_runs(store, [name])[name], last_runs(store, name))


def _utc(v: Any) -> datetime:
    if isinstance(v, str):
        v = datetime.fromisoformat(v)
    return v if v.tzinfo else v.replace(tzinfo=UTC)
