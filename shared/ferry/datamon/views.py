"""What people read: incidents, acknowledging them, and the unified view of every endpoint."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ferry.clock import iso
from ferry.datamon import domain, silences
from ferry.datamon.repository import DatamonRepository
from ferry.errors import NotFound, ValidationError

if TYPE_CHECKING:
    from ferry.services.authz import Authorizer
    from ferry.store.base import DocumentStore


def _alert_api(doc: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "kind", "dedup_key", "endpoint", "partition", "owner", "level", "severity", "tier", "open",
            "acked", "acked_by", "acked_at", "opened_at", "escalated_at", "notified_at", "resolved_at", "seq",
            "summary", "count", "oldest", "newest", "held", "records", "expected_records", "missing", "accepted")
    return {k: iso(doc.get(k)) for k in keys if k in doc}


SEVERITY_RANK = {"critical": 0, "error": 1, "warning": 2, "info": 3}
DEFAULT_LIMIT = 50


def alerts(store: DocumentStore, *, owner: str | None = None, endpoint: str | None = None,
           severity: str | None = None, limit: int = DEFAULT_LIMIT, include_closed: bool = False) -> dict[str, Any]:
    """Incidents — open ones, or all with ``include_closed`` — most severe and newest first, at most
    ``limit``; ``severity`` keeps those at least that severe. ``total`` counts all that matched."""
    docs = DatamonRepository(store).list_alerts(owner, open_only=not include_closed, endpoint=endpoint)
    if severity is not None:
        docs = [d for d in docs if SEVERITY_RANK.get(d.get("severity", ""), 9) <= SEVERITY_RANK.get(severity, 9)]
    docs.sort(key=lambda d: str(d.get("opened_at") or ""), reverse=True)
    docs.sort(key=lambda d: (not d.get("open"), SEVERITY_RANK.get(d.get("severity", ""), 9)))
    return {"items": [_alert_api(d) for d in docs[:limit]], "total": len(docs), "limit": limit}


def ack(store: DocumentStore, authorizer: Authorizer, ids: Sequence[str] = (), *, endpoint: str | None = None, owner: str | None = None,
        actor: str | None, now: datetime) -> dict[str, Any]:
    """Acknowledge incidents — by id, or every open one of an endpoint or owner: they are not
    re-notified any more (escalation and resolution still are). A low-volume alert has nothing that
    resolves it later: acknowledging it closes it.

    Raises:
        NotFound: an id names no incident (nothing is changed then).
        Forbidden: the actor is not in an owning team (nor an admin); nothing is changed.
        ValidationError: nothing to acknowledge was named.
    """
    repo = DatamonRepository(store)
    if not ids and endpoint is None and owner is None:
        raise ValidationError("name incidents to acknowledge (ids, --endpoint or --owner)",
                              [{"field": "ids", "reason": "required"}])
    found = repo.alerts(list(ids))
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound(f"alert(s) {', '.join(map(repr, missing))} not found", {"alerts": missing})
    docs = dict(found)
    if endpoint is not None or owner is not None:
        docs.update({d["id"]: d for d in repo.list_alerts(owner, open_only=True, endpoint=endpoint)})
    authorizer.check(actor, sorted({str(d.get("owner") or "") for d in docs.values()}),
                              "acknowledge alerts of")
    patch = {"acked": True, "acked_by": actor, "acked_at": now}
    closes = {"open": False, "resolved_at": now}
    todo = [i for i, d in docs.items() if not d.get("acked")]
    repo.write([repo.alert_patch_op(i, {**patch, **(closes if docs[i].get("kind") == "low_volume" else {})})
                for i in todo])
    for i in todo:
        docs[i].update(patch)
    return {"items": [_alert_api({"id": i, **d}) for i, d in sorted(docs.items())], "acknowledged": len(todo)}


def status_row(name: str, doc: dict[str, Any], now: datetime, active: Any = ()) -> dict[str, Any] | None:
    """One endpoint's row of the unified view from its summary document (None: not registered yet);
    ``active``: the silences in force (``silences.active``)."""
    if "partitioning" not in doc:
        return None
    policy = domain.Policy.from_doc({**doc, "name": name})
    summary = domain.Summary.from_doc(doc, domain.EPOCH)
    open_states = [domain.current_state(policy, e, now) for e in summary.open]
    strip = list(summary.strip)
    seen = {d["partition"] for d in strip}
    strip += [{"partition": e.partition, "state": s.value} for e, s in zip(summary.open, open_states, strict=True)
              if e.partition not in seen]
    strip = sorted(strip, key=lambda d: d["partition"])[-domain.STRIP:]
    state = domain.worst(open_states) or domain.State(summary.state if summary.state in (
        domain.State.OK.value, domain.State.LANDED_LATE.value) else domain.State.PENDING.value)
    latest = doc.get("latest") or {}
    lag = int((now - domain._utc(latest["end"])).total_seconds()) if latest.get("end") else None  # type: ignore[operator]
    return {"endpoint": name, "owner": policy.owner, "partitioning": policy.partitioning,
            "timezone": policy.timezone, "last_landed": latest.get("partition"),
            "landed_at": iso(latest.get("landed_at")), "lag_seconds": lag, "state": state.value,
            "open_alerts": 1 if summary.incident else 0,
            "incident": _incident_view(summary.incident),
            "silenced": getattr(silences.matching(list(active), policy), "id", None),
            "open_partitions": [{"partition": e.partition, "state": s.value}
                                for e, s in zip(summary.open, open_states, strict=True)],
            "recent": strip, "severity": policy.severity, "upstream": list(policy.upstream),
            "error": doc.get("error")}


def status(store: DocumentStore, *, now: datetime, owner: str | None = None) -> dict[str, Any]:
    """The unified view: every endpoint with owner, partitioning, last landed partition, lag, state,
    open alerts and recent partitions, worst first; an event type's endpoint also shows its periods
    held open for accepted events that are missing (``missing_events``, Gabo's ledger alerts). Reads
    one summary per endpoint and one query of the open missing-events alerts."""
    active = silences.active(store, now)
    rows = [row for name, doc in DatamonRepository(store).all_summaries(owner).items()
            if (row := status_row(name, doc, now, active)) is not None]
    missing: dict[str, list[dict[str, Any]]] = {}
    for d in DatamonRepository(store).open_missing_events(owner):
        missing.setdefault(str(d.get("endpoint")), []).append(
            {"alert": d.get("id"), "partition": d.get("partition"), "missing": d.get("missing"),
             "accepted": d.get("accepted"), "opened_at": iso(d.get("opened_at")), "summary": d.get("summary")})
    for r in rows:
        r["missing_events"] = sorted(missing.get(r["endpoint"], []), key=lambda m: str(m["partition"]))
        r["open_alerts"] += len(r["missing_events"])
    rows.sort(key=lambda r: (domain.RANK[domain.State(r["state"])], -r["open_alerts"], r["endpoint"]))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    return {"now": now.isoformat(), "owner": owner, "counts": counts, "endpoints": rows,
            "silences": silences.listing(store, now, owner)}


def _incident_view(i: domain.Incident | None) -> dict[str, Any] | None:
    if i is None:
        return None
    return {"id": i.id, "level": i.level.value, "count": i.count, "oldest": i.oldest, "newest": i.newest,
            "acked": i.acked, "held": i.held, "opened_at": iso(i.opened_at)}
