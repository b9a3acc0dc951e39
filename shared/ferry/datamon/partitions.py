"""An endpoint's partitions: listing them, and invalidating a landed one (repair).

Invalidating moves the partition document to ``datamon_invalidations`` (who, why, when, what it
was) in one atomic write, so everything that asks "has it landed?" — the evaluator, Styx's upstream
gate, the web view — sees it missing again; the endpoint's summary is rewound to it, so the next
evaluation finds it late (and alerts its owner) until it lands again. Landing it again is a first
landing (a new document).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ferry.datamon import domain
from ferry.datamon.landing import policy_for
from ferry.datamon.repository import ENDPOINTS, LINEAGE, PARTITIONS, partition_id
from ferry.errors import BadRequest, ValidationError
from ferry.store.base import DocumentStore, Op, Where
from ferry.store.manifests import ManifestRepository

if TYPE_CHECKING:
    from ferry.services.authz import Authorizer

INVALIDATIONS = "datamon_invalidations"
MAX_LISTED = 1000


def _iso(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


def listing(store: DocumentStore, endpoint: str, *, now: datetime, start: str | None = None, end: str | None = None,
            limit: int = 200) -> list[dict[str, Any]]:
    """Landed partitions of ``endpoint`` in [start, end) (partition names), newest first, with their
    state (ok / landed_late), landing time, stats and lateness. At most ``limit`` reads.

    Raises:
        NotFound: unknown endpoint. BadRequest: a bound is not a partition of the endpoint.
    """
    policy = policy_for(ManifestRepository(store), endpoint)
    where = [Where("endpoint", "==", endpoint)]
    try:
        if start:
            where.append(Where("start", ">=", policy.cadence.parse(start)))
        if end:
            where.append(Where("start", "<", policy.cadence.parse(end)))
    except ValueError as exc:
        raise BadRequest(f"a bound is not a {policy.partitioning} partition of {endpoint}: {exc}") from None
    rows = store.query(PARTITIONS, where, order_by="start", descending=True, limit=min(limit, MAX_LISTED))
    out = []
    for _, d in rows:
        start_at = domain._utc(d["start"])
        deadline = domain.clocks(policy, start_at).late_at  # type: ignore[arg-type]
        landed_at = domain._utc(d.get("landed_at"))
        late = max(0, int((landed_at - deadline).total_seconds())) if landed_at else 0
        out.append({"endpoint": endpoint, "partition": d["partition"], "state": "landed_late" if late else "ok",
                    "landed_at": _iso(landed_at), "last_landed_at": _iso(d.get("last_landed_at")),
                    "landings": d.get("landings"), "records": d.get("records"), "bytes": d.get("bytes"),
                    "location": d.get("location"), "source": d.get("source"), "late_seconds": late,
                    "deadline": deadline.isoformat()})
    return out


def invalidate(store: DocumentStore, authorizer: Authorizer, endpoint: str, partition: str, *, reason: str, actor: str | None,
               now: datetime, check: bool = True) -> dict[str, Any]:
    """Mark a landed partition bad: it is no longer landed, and is late again until it re-lands.

    Idempotent: invalidating a partition that is not landed (any more) records nothing new and says so.
    ``check``: the owning team (or an admin) only.

    Returns:
        the invalidation record (``invalidated`` False when there was nothing landed to invalidate).
    Raises:
        NotFound: unknown endpoint. ValidationError: no reason, or not a partition of the endpoint.
        Forbidden: not the owning team.
    """
    if not reason.strip():
        raise ValidationError("an invalidation needs a reason (--reason)", [{"field": "reason", "reason": "empty"}])
    policy = policy_for(ManifestRepository(store), endpoint)
    if check:
        authorizer.check(actor, [policy.owner], "invalidate partitions of")
    try:
        start = domain.parse_partition(policy, partition)
    except ValueError as exc:
        raise ValidationError(str(exc), [{"field": "partition", "reason": str(exc)}]) from None
    pid = partition_id(endpoint, partition)
    doc = store.get(PARTITIONS, pid)
    record: dict[str, Any] = {"endpoint": endpoint, "partition": partition, "owner": policy.owner, "reason": reason, "by": actor,
              "at": now, "start": start}
    if doc is None:
        return {**{k: _iso(v) for k, v in record.items()}, "invalidated": False,
                "message": f"{endpoint} {partition} is not landed: nothing to invalidate"}
    record["previous"] = {k: doc.get(k) for k in ("landed_at", "last_landed_at", "landings", "records", "bytes",
                                                   "location", "source")}
    # One atomic write: the record exists iff the landing is gone (a concurrent invalidation of the
    # same landing fails on the create of the same id, leaving one record).
    iid = f"{pid}#{_iso(doc.get('landed_at'))}"
    store.write([Op.create(INVALIDATIONS, iid, record), Op.delete(PARTITIONS, pid)])
    summary = store.get(ENDPOINTS, endpoint) or {}
    watermark = domain._utc(summary.get("watermark"))
    patch: dict[str, Any] = {"next_check": domain.EPOCH,
                             "landed_beyond": [p for p in summary.get("landed_beyond") or [] if p != partition]}
    if watermark is None or start < watermark:
        patch["watermark"] = start
    store.write([Op.set(ENDPOINTS, endpoint, patch, merge=True)])
    return {**{k: _iso(v) for k, v in record.items() if k != "previous"}, "invalidated": True,
            "previous": {k: _iso(v) for k, v in record["previous"].items()}}


def invalidations(store: DocumentStore, endpoint: str, partitions: list[str]) -> dict[str, dict[str, Any]]:
    """The latest invalidation of each of ``partitions`` (one query per endpoint, bounded)."""
    if not partitions:
        return {}
    wanted = set(partitions)
    out: dict[str, dict[str, Any]] = {}
    for _, d in store.query(INVALIDATIONS, [Where("endpoint", "==", endpoint)], limit=200):
        if d["partition"] in wanted and (d["partition"] not in out or d["at"] > out[d["partition"]]["at"]):
            out[d["partition"]] = d
    return out


def consumers(store: DocumentStore, endpoint: str, limit: int = 200) -> list[tuple[str, str | None]]:
    """The workflows that depend on ``endpoint``, with what each produces (Datamon's lineage)."""
    return [(wf, d.get("produces")) for wf, d in
            store.query(LINEAGE, [Where("depends_on", "array_contains", endpoint)], limit=limit)]
