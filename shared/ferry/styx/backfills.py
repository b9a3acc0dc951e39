"""Backfills: run a workflow over a past range of partitions, at most ``concurrency`` at once.

A backfill's concurrency is a pool of slots (``backfill.<id>#n``) that each of its instances claims in
the commit that triggers it and releases in the commit that ends it (DONE/ERROR): never more than
``concurrency`` instances of a backfill are active, even with overlapping ticks. ``backfill retry``
re-queues failed instances through the same slots (its ``retries`` queue, run before new partitions).
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import datetime
from typing import Any

from ferry.clock import iso
from ferry.domain.manifests import Endpoint
from ferry.errors import BadRequest, Conflict, NotFound
from ferry.store.base import Op
from ferry.styx import machine as m
from ferry.styx.repository import BACKFILLS
from ferry.styx.scheduling import backfill_partitions
from ferry.styx.service import StyxService, slug
from ferry.styx.slots import slot_id


def pool_of(backfill_id: str) -> str:
    return f"backfill.{backfill_id}"


def create(styx: StyxService, workflow: str, start: str, end: str, now: datetime, concurrency: int = 1,
           reverse: bool = False, description: str = "", env: dict[str, str] | None = None,
           actor: str | None = None, group: str | None = None) -> dict[str, Any]:
    """Create a backfill of [start, end) (``group``: the reprocessing it belongs to).

    Raises:
        NotFound: unknown workflow.
        BadRequest: bounds not aligned to the schedule, end not after start, concurrency < 1, or a
            range that begins before the start of an endpoint the workflow depends on or produces.
        Conflict: a partition in range has an active instance or is in another active backfill.
    """
    wf, owner = styx.workflow(workflow)
    styx.authorizer.check(actor, [owner], "backfill")
    if concurrency < 1:
        raise BadRequest("concurrency must be at least 1")
    partitions = check(styx, wf, start, end, reverse)
    bf_id = f"bf-{slug(workflow)[:40]}-{now.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(2)}"
    doc = {"id": bf_id, "workflow": workflow, "start": start, "end": end, "partitions": partitions,
           "concurrency": concurrency, "reverse": reverse, "description": description, "env": dict(env or {}),
           "next_index": 0, "state": "active", "graceful": False, "skipped": [], "created_at": now,
           "created_by": actor, "updated_at": now, "group": group, "team": owner}
    styx.store.write([Op.create(BACKFILLS, bf_id, doc)])
    progress(styx, doc, now)
    return show(styx, bf_id)


def check(styx: StyxService, wf: Any, start: str, end: str, reverse: bool) -> list[str]:
    """The partitions of a backfill of ``wf`` over [start, end), or why it cannot be created."""
    workflow = wf.name
    try:
        partitions = backfill_partitions(wf.spec.cadence(), start, end, reverse)
    except ValueError as exc:
        raise BadRequest(f"backfill of {workflow}: {exc}") from None
    _check_within_start(styx, wf, partitions, reverse)
    if len(partitions) > 10_000:
        raise BadRequest(f"a backfill covers at most 10000 partitions, this one {len(partitions)}")
    runs = styx.repo.get_many([m.instance_id(workflow, p) for p in partitions])
    active = sorted(r.parameter for r in runs.values() if r.active)
    if active:
        raise Conflict(f"{len(active)} partition(s) of {workflow} in range are active: "
                       + ", ".join(active[:10]) + (" ..." if len(active) > 10 else ""), {"active": active})
    wanted = set(partitions)
    for other in styx.repo.backfills(workflow):
        if other["state"] == "active":
            overlap = sorted(wanted & set(other["partitions"][other["next_index"]:]))
            if overlap:
                raise Conflict(f"backfill {other['id']} is still to run {len(overlap)} of these partitions: "
                               + ", ".join(overlap[:10]), {"backfill": other["id"], "active": overlap})
    return partitions


def retry(styx: StyxService, bf_id: str, now: datetime, actor: str | None = None) -> dict[str, Any]:
    """Re-queue the backfill's instances that ended in ERROR (its owners only). They run again through
    the backfill's concurrency slots, as its own partitions do: appended to its ``retries`` (the tick
    triggers them first, each taking a slot), so never more than ``concurrency`` are active. The backfill
    is active again until they finish. Returns the backfill.

    Raises:
        NotFound: unknown backfill.
        Conflict: no failed instance to retry, or the backfill changed while this retry read it.
    """
    got = styx.store.get_versioned(BACKFILLS, [bf_id]).get(bf_id)
    if got is None:
        raise NotFound(f"backfill {bf_id!r} not found")
    bf, version = got
    _, owner = styx.workflow(bf["workflow"])
    styx.authorizer.check(actor, [owner], "retry")
    pending = set(bf.get("retries", [])[bf.get("retry_index", 0):])
    runs = styx.repo.get_many([m.instance_id(bf["workflow"], p) for p in bf["partitions"][:bf["next_index"]]])
    failed = sorted(r.parameter for r in runs.values()
                    if r.backfill == bf_id and r.state == m.State.ERROR and r.parameter not in pending)
    if not failed:
        raise Conflict(f"backfill {bf_id} has no failed instances to retry"
                       + (f" ({len(pending)} already waiting for a slot)" if pending else ""))
    # Conditional on the version read: two retries at once append once; a tick's progress writes only
    # the indexes, never the lists.
    styx.store.write([Op.set(BACKFILLS, bf_id, {**bf, "retries": [*bf.get("retries", []), *failed],
                                                         "retry_index": bf.get("retry_index", 0),
                                                         "state": "active", "updated_at": now},
                                      if_version=version)])
    fresh = styx.repo.backfill(bf_id)
    if fresh is not None:
        progress(styx, fresh, now)  # as many as there are free slots start now; the tick does the rest
    out = show(styx, bf_id)
    out["retried"] = failed
    return out


def _check_within_start(styx: StyxService, wf: Any, partitions: list[str], reverse: bool) -> None:
    """Refuse a range that begins before the ``start`` of an endpoint the workflow produces or depends
    on: those partitions can never land, so the backfill could never finish."""
    cadence = wf.spec.cadence()
    first = cadence.parse(partitions[-1] if reverse else partitions[0])
    names = [*wf.spec.depends_on, *([wf.spec.produces] if wf.spec.produces else [])]
    earliest, why = None, ""
    for name, rec in styx.manifests.get_many("Endpoint", names).items():
        model = rec.model_as(Endpoint)
        spec = model.spec
        if spec.start is not None:
            floor = spec.cadence().floor(spec.start)
            if earliest is None or floor > earliest:
                earliest, why = floor, name
    if earliest is None or first >= earliest:
        return
    valid = cadence.floor(earliest)
    if valid < earliest:
        valid = cadence.next(valid)
    raise BadRequest(f"backfill of {wf.name} starts at {cadence.format(first)}, before the start of endpoint "
                     f"{why} ({earliest.isoformat()}): the valid range begins at {cadence.format(valid)}",
                     {"valid_start": cadence.format(valid), "endpoint": why})


def progress(styx: StyxService, bf: dict[str, Any], now: datetime) -> int:
    """Trigger the backfill's retried instances, then its next partitions, while it has free slots.

    Each trigger takes a slot in the commit that triggers it (released when the instance ends) and moves
    the queue's index in the same commit: a concurrent tick's commit of the same instance fails.
    Returns how many were triggered."""
    pool = pool_of(bf["id"])
    used = set(styx.repo.used_slots(pool))
    free = [n for n in range(bf["concurrency"]) if n not in used]
    retries: list[str] = list(bf.get("retries") or [])
    partitions: list[str] = bf["partitions"]
    if bf["next_index"] >= len(partitions) and bf.get("retry_index", 0) >= len(retries):
        if not used:
            _finish(styx, bf["id"], now)
        return 0
    triggered = 0
    for queue, field in ((retries, "retry_index"), (partitions, "next_index")):
        index = int(bf.get(field) or 0)
        while free and index < len(queue):
            parameter = queue[index]
            before = styx.repo.get(bf["workflow"], parameter)
            bump = {field: index + 1, "updated_at": now}
            if field == "retry_index" and (before is None or before.backfill != bf["id"]
                                           or before.state != m.State.ERROR):
                # retried, re-triggered or halted by someone else since: not this backfill's to re-run
                styx.store.write([Op.set(BACKFILLS, bf["id"], bump, merge=True)])
                index += 1
                continue
            if field == "next_index" and before is not None and before.active:
                if before.backfill != bf["id"]:  # triggered by someone else since the backfill began
                    skipped = [*(bf.get("skipped") or []), parameter]
                    bf["skipped"] = skipped
                    styx.store.write([Op.set(BACKFILLS, bf["id"], {**bump, "skipped": skipped},
                                                      merge=True)])
                index += 1  # (or another tick triggered it for this backfill a moment ago: our read was older)
                continue
            slot = slot_id(pool, free[0])
            event = m.TriggerExecution(f"backfill {bf['id']}" + (" retried" if field == "retry_index" else ""),
                                       trigger=m.Trigger("backfill", bf["id"], dict(bf.get("env") or {})),
                                       slots=(slot,))
            try:
                base = before or m.Run(bf["workflow"], parameter)
                if bf.get("team") and base.team != bf["team"]:
                    base = replace(base, team=bf["team"])
                styx.commit(base, event, now, m.Policy(),
                            [Op.set(BACKFILLS, bf["id"], bump, merge=True)], new=before is None)
            except Conflict:
                return triggered  # another tick is progressing this backfill
            free.pop(0)
            index += 1
            triggered += 1
    return triggered


def _finish(styx: StyxService, bf_id: str, now: datetime) -> None:
    """Mark the backfill done — conditional on a fresh read, so a retry appended meanwhile keeps it active."""
    got = styx.store.get_versioned(BACKFILLS, [bf_id]).get(bf_id)
    if got is None:
        return
    bf, version = got
    if bf["state"] != "active" or bf.get("retry_index", 0) < len(bf.get("retries") or []):
        return
    try:
        styx.store.write([Op.set(BACKFILLS, bf_id, {**bf, "state": "done", "updated_at": now},
                                          if_version=version)])
    except Conflict:
        pass  # it changed since: the next tick looks again


def show(styx: StyxService, bf_id: str) -> dict[str, Any]:
    bf = styx.repo.backfill(bf_id)
    if bf is None:
        raise NotFound(f"backfill {bf_id!r} not found")
    runs = styx.repo.get_many([m.instance_id(bf["workflow"], p) for p in bf["partitions"]])
    skipped = set(bf.get("skipped") or [])
    retrying = set((bf.get("retries") or [])[bf.get("retry_index", 0):]) if bf["state"] == "active" else set()
    rows = []
    counts: dict[str, int] = {}
    for i, p in enumerate(bf["partitions"]):
        run = runs.get(m.instance_id(bf["workflow"], p))
        if i >= bf["next_index"]:
            state = "PENDING" if bf["state"] == "active" else "NOT_RUN"
        elif p in retrying:  # retried, waiting for one of the backfill's slots
            state = "PENDING"
        elif p in skipped:
            state = "SKIPPED"
        elif run is None or run.backfill != bf_id:
            state = "RETRIGGERED" if run else "UNKNOWN"
        else:
            state = str(run.state)
        counts[state] = counts.get(state, 0) + 1
        rows.append({"parameter": p, "state": state, "tries": run.tries if run else 0,
                     "exit_code": run.exit_code if run else None, "message": run.message if run else ""})
    out = {k: iso(v) for k, v in bf.items() if k != "partitions"}
    done = counts.get("DONE", 0) + counts.get("ERROR", 0) + counts.get("SKIPPED", 0)
    out.update({"partitions": rows, "counts": counts, "total": len(rows), "finished": done})
    return out


def halt(styx: StyxService, bf_id: str, now: datetime, graceful: bool = False, actor: str | None = None) -> dict[str, Any]:
    """Stop a backfill: no new partitions; halt its active instances (graceful: only those not yet
    executing, letting running ones finish)."""
    bf = styx.repo.backfill(bf_id)
    if bf is None:
        raise NotFound(f"backfill {bf_id!r} not found")
    _, owner = styx.workflow(bf["workflow"])
    styx.authorizer.check(actor, [owner], "halt")
    if bf["state"] != "active":
        raise Conflict(f"backfill {bf_id} is {bf['state']}, not active")
    styx.store.write([Op.set(BACKFILLS, bf_id, {"state": "halted", "graceful": graceful,
                                                         "halted_at": now, "updated_at": now}, merge=True)])
    runs = styx.repo.get_many([m.instance_id(bf["workflow"], p) for p in bf["partitions"][:bf["next_index"]]])
    for run in runs.values():
        if run.backfill == bf_id and run.active and (not graceful or run.state == m.State.QUEUED):
            try:
                styx.halt(run.workflow, run.parameter, now, reason=f"backfill {bf_id} halted", check=False)
            except Conflict:
                pass
    return show(styx, bf_id)


def listing(styx: StyxService, workflow: str | None = None) -> list[dict[str, Any]]:
    out = []
    for bf in styx.repo.backfills(workflow):
        out.append({"id": bf["id"], "workflow": bf["workflow"], "start": bf["start"], "end": bf["end"],
                    "concurrency": bf["concurrency"], "state": bf["state"], "next_index": bf["next_index"],
                    "total": len(bf["partitions"]), "description": bf.get("description", ""),
                    "created_at": iso(bf["created_at"])})
    return sorted(out, key=lambda b: b["created_at"], reverse=True)
