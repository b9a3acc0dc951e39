"""Landing partitions: what every producer reports through (the API, the CLI, the partitions topic,
and — through Datamon's port — Styx and Gabo), and which partitions have landed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ferry import log
from ferry.clock import iso
from ferry.datamon import domain
from ferry.datamon.repository import DatamonRepository
from ferry.domain.manifests import Endpoint
from ferry.errors import Conflict, NotFound, ValidationError
from ferry.store.base import DocumentStore
from ferry.store.manifests import ManifestRepository

if TYPE_CHECKING:
    pass

logger = log.get("datamon")
# Re-landings kept on a partition document (the newest ones).
MAX_RELANDINGS = 20


def policy_for(manifests: ManifestRepository, endpoint: str) -> domain.Policy:
    """The endpoint's SLA policy from its manifest.

    Raises:
        NotFound: no such endpoint.
    """
    rec = manifests.get("Endpoint", endpoint)
    if rec is None:
        raise NotFound(f"endpoint {endpoint!r} not found{manifests.did_you_mean('Endpoint', endpoint)}",
                       {"endpoint": endpoint})
    return domain.Policy.from_spec(rec.name, rec.owner or "", rec.model_as(Endpoint).spec, rec.generation)


def _check_stat(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise ValidationError(f"{name} must be a non-negative integer", [{"field": name, "reason": "negative"}])


def land(store: DocumentStore, endpoint: str, partition: str, *, now: datetime, records: int | None = None,
         bytes: int | None = None, location: str | None = None, source: str = "api",  # noqa: A002
         actor: str | None = None, allow_future: bool = False) -> dict[str, Any]:
    """Record that a partition of ``endpoint`` has landed.

    Idempotent: landing again keeps the first ``landed_at``, updates the stats and appends the
    re-landing to the document's ``relandings``. The first landing is claimed with ``Op.create``
    (lock-free); only re-landings run a (small) transaction.

    Returns:
        the partition record (``relanded`` says whether it had landed before).
    Raises:
        NotFound: unknown endpoint.
        ValidationError: ``partition`` is not a parameter of the endpoint's partitioning, or it is
            before the endpoint's start, or its period has not ended at ``now`` (unless
            ``allow_future``), or a stat is negative.
    """
    policy = policy_for(ManifestRepository(store), endpoint)
    try:
        start = domain.parse_partition(policy, partition)
    except ValueError as exc:
        raise ValidationError(str(exc), [{"field": "partition", "reason": str(exc)}]) from None
    _check_stat("records", records)
    _check_stat("bytes", bytes)
    end = policy.cadence.next(start)
    if end > now and not allow_future:
        raise ValidationError(f"partition {partition} of {endpoint} has not ended yet (its period ends at "
                              f"{end.isoformat()}); pass allow_future (ferry land --allow-future) to land it anyway",
                              [{"field": "partition", "reason": "period not ended"}])
    stats = {"records": records, "bytes": bytes, "location": location, "source": source, "actor": actor}
    doc: dict[str, Any] = {"endpoint": endpoint, "partition": partition, "start": start, "end": end,
                           "owner": policy.owner, "landed_at": now, "last_landed_at": now, "landings": 1,
                           "relandings": [], **stats}
    repo = DatamonRepository(store)
    try:
        repo.create_partition(doc)
        relanded = False
    except Conflict:
        def reland(stored: dict[str, Any] | None) -> dict[str, Any]:
            current = stored or doc
            updated = dict(current)
            updated.update({k: v for k, v in stats.items() if v is not None})
            updated["last_landed_at"] = now
            updated["landings"] = int(current.get("landings", 1)) + 1
            updated["relandings"] = [*(current.get("relandings") or []), {"at": now, **stats}][-MAX_RELANDINGS:]
            return updated

        doc = repo.update_partition(endpoint, partition, reland)
        relanded = True
    _note_latest(repo, endpoint, partition, start, end, doc["landed_at"])
    late_by = doc["landed_at"] - domain.clocks(policy, start).late_at
    log.event(logger, log.INFO, f"{endpoint} {partition} {'re-landed' if relanded else 'landed'}",
              labels={"endpoint": endpoint, "owner": policy.owner, "partition": partition},
              records=records, bytes=bytes, source=source)
    return _record(doc, relanded, late_by.total_seconds())


def _note_latest(repo: DatamonRepository, endpoint: str, partition: str, start: datetime, end: datetime,
                 landed_at: datetime) -> None:
    # The unified view shows the newest landed partition; a merge of one field never clobbers the
    # evaluator's fields. Two landings racing may leave the older one, which the evaluator corrects.
    current = repo.summary(endpoint) or {}
    latest = current.get("latest") or {}
    latest_start = domain._utc(latest.get("start"))
    if latest_start is None or latest_start < start:
        repo.write([repo.summary_op(endpoint, {"latest": {
            "partition": partition, "start": start, "end": end, "landed_at": landed_at}})])


def _record(doc: dict[str, Any], relanded: bool, late_seconds: float) -> dict[str, Any]:
    return {"endpoint": doc["endpoint"], "partition": doc["partition"], "landed_at": iso(doc["landed_at"]),
            "last_landed_at": iso(doc["last_landed_at"]), "landings": doc["landings"], "relanded": relanded,
            "records": doc.get("records"), "bytes": doc.get("bytes"), "location": doc.get("location"),
            "source": doc.get("source"), "late": late_seconds > 0,
            "late_seconds": max(0, int(late_seconds))}


def landed(store: DocumentStore, endpoint: str, partitions: Sequence[str]) -> set[str]:
    """Which of ``partitions`` of ``endpoint`` have landed (one batched read; unknown names are
    simply not landed)."""
    if not partitions:
        return set()
    return set(DatamonRepository(store).partitions(endpoint, partitions))
