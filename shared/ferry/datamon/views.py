"""What people read: open alerts, acknowledging one, and the unified view of every endpoint."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ferry.datamon import domain
from ferry.datamon.repository import DatamonRepository
from ferry.errors import NotFound

if TYPE_CHECKING:
    from ferry.bootstrap import Services


def _iso(v: Any) -> Any:
    if isinstance(v, datetime):
        return domain._utc(v).isoformat()  # type: ignore[union-attr]
    return v


def _alert_api(doc: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "dedup_key", "endpoint", "partition", "owner", "level", "severity", "tier", "state", "open",
            "acked", "acked_by", "acked_at", "opened_at", "escalated_at", "notified_at", "resolved_at",
            "landed_at", "overdue_seconds", "seq", "summary", "deadline")
    return {k: _iso(doc.get(k)) for k in keys if k in doc}


def alerts(services: Services, *, owner: str | None = None, include_closed: bool = False) -> list[dict[str, Any]]:
    """Open alerts (or all with ``include_closed``), most severe and oldest first."""
    docs = DatamonRepository(services.store).list_alerts(owner, open_only=not include_closed)
    rank = {"late": 0, "warn": 1}
    docs.sort(key=lambda d: (not d.get("open"), rank.get(d.get("level", ""), 2), str(d.get("id"))))
    return [_alert_api(d) for d in docs]


def ack(services: Services, alert: str, *, actor: str | None, now: datetime) -> dict[str, Any]:
    """Acknowledge an alert: it is not re-notified any more (escalation and resolution still are).

    Raises:
        NotFound: no such alert (ids look like ``endpoint@partition``; ``endpoint/partition`` works too).
        Forbidden: the actor is not in the owning team (nor an admin); nothing is changed.
    """
    aid = alert.replace("/", "@", 1) if "@" not in alert else alert
    repo = DatamonRepository(services.store)
    doc = repo.alert(aid)
    if doc is None:
        raise NotFound(f"alert {alert!r} not found", {"alert": alert})
    services.authorizer.check(actor, [doc.get("owner")], "acknowledge alerts of")
    if not doc.get("acked"):
        patch = {"acked": True, "acked_by": actor, "acked_at": now}
        repo.write([repo.alert_patch_op(aid, patch)])
        doc.update(patch)
    return _alert_api({"id": aid, **doc})


def status(services: Services, *, now: datetime, owner: str | None = None) -> dict[str, Any]:
    """The unified view: every endpoint with owner, partitioning, last landed partition, lag, state,
    open alerts and recent partitions, worst first. Reads one summary per endpoint."""
    rows = []
    for name, doc in DatamonRepository(services.store).all_summaries(owner).items():
        if "partitioning" not in doc:
            continue
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
        rows.append({"endpoint": name, "owner": policy.owner, "partitioning": policy.partitioning,
                     "timezone": policy.timezone, "last_landed": latest.get("partition"),
                     "landed_at": _iso(latest.get("landed_at")), "lag_seconds": lag, "state": state.value,
                     "open_alerts": sum(1 for e in summary.open if e.alert),
                     "open_partitions": [{"partition": e.partition, "state": s.value}
                                         for e, s in zip(summary.open, open_states, strict=True)],
                     "recent": strip, "severity": policy.severity, "upstream": list(policy.upstream)})
    rows.sort(key=lambda r: (domain.RANK[domain.State(r["state"])], -r["open_alerts"], r["endpoint"]))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    return {"now": now.isoformat(), "owner": owner, "counts": counts, "endpoints": rows}
