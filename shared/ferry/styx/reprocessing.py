"""Reprocessing downstream of an endpoint: ``ferry backfill create --downstream-of ENDPOINT START END``.

Every workflow that depends on the endpoint, directly or through other workflows' outputs, gets a
backfill of the range, created in dependency order and tracked together as one reprocessing
(``styx_reprocessings/{id}``: the workflows in order, each with its backfill).

Order comes from the data, not from timing: the partitions the downstream workflows produced in the
range are invalidated first (Datamon: no longer landed), so each instance's upstream gate holds it
QUEUED until the partitions it depends on have re-landed — wf2 of A -> wf1 -> B -> wf2 -> C runs for
a day only after wf1 re-landed B for that day. Idempotent enough to retry: a second request for the
same range is refused while the first one's backfills still have those partitions to run.
"""

from __future__ import annotations

import secrets
from collections import deque
from datetime import datetime
from typing import Any

from ferry.domain.manifests import Endpoint, Workflow
from ferry.errors import BadRequest, NotFound
from ferry.store.base import Op
from ferry.styx import backfills
from ferry.styx.scheduling import backfill_partitions
from ferry.styx.service import StyxService, slug

REPROCESSINGS = "styx_reprocessings"
MAX_WORKFLOWS = 200


def downstream(styx: StyxService, endpoint: str) -> list[tuple[str, str | None]]:
    """Workflows depending on ``endpoint`` directly or transitively, upstream ones first
    (``(workflow, produces)``); a cycle is broken at the first workflow seen again."""
    edges: dict[str, set[str]] = {}
    produces: dict[str, str | None] = {}
    queue, seen_endpoints = deque([endpoint]), {endpoint}
    while queue:
        name = queue.popleft()
        for wf, out in styx.datamon.consumers(name):
            if wf not in produces:
                if len(produces) >= MAX_WORKFLOWS:
                    raise BadRequest(f"more than {MAX_WORKFLOWS} workflows downstream of {endpoint}")
                produces[wf] = out
            if out and out not in seen_endpoints:
                seen_endpoints.add(out)
                queue.append(out)
    by_output = {out: wf for wf, out in produces.items() if out}
    for wf in produces:
        rec = styx.manifests.get("Workflow", wf)
        model = rec.model() if rec else None
        deps = model.spec.depends_on if isinstance(model, Workflow) else []
        edges[wf] = {by_output[d] for d in deps if d in by_output and by_output[d] != wf}
    order: list[str] = []
    pending = dict(edges)
    while pending:
        ready = sorted(w for w, ups in pending.items() if not (ups & set(pending)))
        if not ready:
            ready = [sorted(pending)[0]]
        for w in ready:
            order.append(w)
            pending.pop(w)
    return [(w, produces[w]) for w in order]


def _range_for(wf: Workflow, lo: datetime, hi: datetime) -> tuple[str, str]:
    """The workflow's parameters covering [lo, hi): floor of lo, ceiling of hi."""
    cadence = wf.spec.cadence()
    first = cadence.floor(lo)
    last = cadence.floor(hi)
    if last < hi:
        last = cadence.next(last)
    return cadence.format(first), cadence.format(last)


def create(styx: StyxService, endpoint: str, start: str, end: str, now: datetime, concurrency: int = 1,
           description: str = "", actor: str | None = None) -> dict[str, Any]:
    """Re-run everything downstream of ``endpoint`` for [start, end) (partitions of the endpoint).

    Raises:
        NotFound: unknown endpoint. BadRequest: bad bounds, or nothing depends on the endpoint.
        Forbidden: the actor may not backfill one of the workflows (nothing is created).
        Conflict: a workflow has active instances or backfills in range (nothing is created).
    """
    rec = styx.manifests.get("Endpoint", endpoint)
    if rec is None:
        raise NotFound(f"endpoint {endpoint!r} not found")
    styx.authorizer.check(actor, [rec.owner], "reprocess downstream of")
    model = rec.model()
    assert isinstance(model, Endpoint)
    cadence = model.spec.cadence()
    try:
        backfill_partitions(cadence, start, end)
        lo, hi = cadence.parse(start), cadence.parse(end)
    except ValueError as exc:
        raise BadRequest(f"reprocessing of {endpoint}: {exc}") from None
    chain = downstream(styx, endpoint)
    if not chain:
        raise BadRequest(f"no workflow depends on {endpoint} (directly or through other workflows)")
    rp_id = f"rp-{slug(endpoint)[:40]}-{now.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(2)}"
    plans = []
    for wf_name, _ in chain:  # every check before anything is written
        wf, owner = styx.workflow(wf_name)
        styx.authorizer.check(actor, [owner], "backfill")
        first, last = _range_for(wf, lo, hi)
        backfills.check(styx, wf, first, last, False)
        plans.append((wf, first, last))
    for wf, first, last in plans:
        if wf.spec.produces:
            out_rec = styx.manifests.get("Endpoint", wf.spec.produces)
            out_model = out_rec.model() if out_rec else None
            if isinstance(out_model, Endpoint):
                out_cadence = out_model.spec.cadence()
                wf_cadence = wf.spec.cadence()
                for p in backfill_partitions(wf_cadence, first, last):
                    styx.datamon.invalidate(wf.spec.produces, out_cadence.format(wf_cadence.parse(p)),
                                            reason=f"reprocessing {rp_id} of {endpoint} [{start}, {end})",
                                            actor=actor, now=now, check=False)
    made = []
    for wf, first, last in plans:
        bf = backfills.create(styx, wf.name, first, last, now, concurrency, False,
                              description, {}, actor,
                              group=rp_id)
        made.append({"workflow": wf.name, "backfill": bf["id"], "start": first, "end": last})
    styx.store.write([Op.create(REPROCESSINGS, rp_id, {
        "id": rp_id, "endpoint": endpoint, "start": start, "end": end, "workflows": made, "created_at": now,
        "created_by": actor, "description": description})])
    return show(styx, rp_id)


def show(styx: StyxService, rp_id: str) -> dict[str, Any]:
    """A reprocessing with the progress of each workflow's backfill, in dependency order."""
    doc = styx.store.get(REPROCESSINGS, rp_id)
    if doc is None:
        raise NotFound(f"reprocessing {rp_id!r} not found")
    rows = []
    for w in doc["workflows"]:
        bf = backfills.show(styx, w["backfill"])
        rows.append({"workflow": w["workflow"], "backfill": w["backfill"], "start": w["start"], "end": w["end"],
                     "state": bf["state"], "finished": bf["finished"], "total": bf["total"], "counts": bf["counts"]})
    state = "active" if any(r["state"] == "active" for r in rows) else "done"
    return {"id": rp_id, "endpoint": doc["endpoint"], "start": doc["start"], "end": doc["end"], "state": state,
            "created_by": doc.get("created_by"),
            "created_at": doc["created_at"].isoformat() if isinstance(doc["created_at"], datetime)
            else doc["created_at"], "workflows": rows,
            "finished": sum(r["finished"] for r in rows), "total": sum(r["total"] for r in rows)}
