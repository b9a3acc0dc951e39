"""Datamon's documents, through the DocumentStore port.

Collections:
- ``datamon_partitions/{endpoint}@{partition}``: one landed partition (first landing time, stats,
  re-landings). Never read in bulk: the evaluator reads only the ids it needs (``get_many``).
- ``datamon_endpoints/{endpoint}``: the per-endpoint summary the evaluator keeps (spec snapshot,
  watermark of contiguous landed partitions, open partitions, ``next_check``); evaluation queries
  ``next_check <= now`` so reads grow with what is due or open, not with history.
- ``datamon_alerts/{endpoint}~{n}``: the endpoint's n-th incident (its late partitions: count, oldest,
  newest); ``{endpoint}@{partition}~low_volume``: a low-volume landing.
- ``datamon_notifications/{alert}#{n}``: claims, created with ``Op.create`` before a notification is
  published, so two evaluators never notify the same transition twice (``held`` ones were silenced).
- ``datamon_silences/{id}``: silences of an endpoint or an owner, until their end.
- ``datamon_meta/evaluator``: the manifest sync cursor.
- ``datamon_lineage/{workflow}``: what a workflow produces from what (lineage for ``at_risk``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ferry.datamon.domain import Action, Policy
from ferry.datamon.domain.incidents import IncidentDecision
from ferry.store.base import Doc, DocumentStore, Op, Where

PARTITIONS = "datamon_partitions"
ENDPOINTS = "datamon_endpoints"
ALERTS = "datamon_alerts"
NOTIFICATIONS = "datamon_notifications"
SILENCES = "datamon_silences"
META = "datamon_meta"
LINEAGE = "datamon_lineage"


def partition_id(endpoint: str, partition: str) -> str:
    # Endpoint names never contain '@' (manifests.NAME_PATTERN), so the id splits unambiguously.
    return f"{endpoint}@{partition}"


def incident_document(policy: Policy, d: IncidentDecision) -> Doc:
    """The fields of the incident document that decision ``d`` leaves behind (merged into it)."""
    i = d.incident
    doc: Doc = {"id": i.id, "kind": d.kind, "endpoint": policy.name, "owner": policy.owner,
                "dedup_key": d.dedup_key, "level": i.level.value, "severity": d.severity, "tier": d.tier,
                "summary": d.summary, "seq": i.seq, "count": i.count, "oldest": i.oldest, "newest": i.newest,
                "held": d.held}
    if d.kind == "low_volume":
        doc.update({"partition": i.oldest, "records": d.details.get("records"),
                    "expected_records": d.details.get("expected_records")})
    if not d.held:
        doc["notified_at"] = d.at
    if d.action is Action.TRIGGER:
        doc.update({"open": True, "opened_at": d.at, "acked": False, "resolved_at": None})
    elif d.action is Action.RESOLVE:
        doc.update({"open": False, "resolved_at": d.at})
    elif d.action is Action.ESCALATE:
        doc["escalated_at"] = d.at
    return doc


class DatamonRepository:
    """Every read and write of Datamon's collections (the services never name a collection)."""

    def __init__(self, store: DocumentStore) -> None:
        self.store = store

    def write(self, ops: Sequence[Op]) -> int:
        return self.store.write(ops) if ops else 0

    # -- partitions ------------------------------------------------------------------------------
    def partitions(self, endpoint: str, partitions: Sequence[str]) -> dict[str, Doc]:
        """Landed partitions among ``partitions``, by partition (one batched read)."""
        ids = [partition_id(endpoint, p) for p in partitions]
        found = self.store.get_many(PARTITIONS, ids)
        return {d["partition"]: d for d in found.values()}

    def partitions_multi(self, wanted: Mapping[str, Sequence[str]]) -> dict[str, dict[str, Doc]]:
        """Landed partitions of many endpoints in one batched read: {endpoint: {partition: doc}}."""
        ids = [partition_id(e, p) for e, ps in wanted.items() for p in ps]
        out: dict[str, dict[str, Doc]] = {e: {} for e in wanted}
        for doc in self.store.get_many(PARTITIONS, ids).values():
            out.setdefault(doc["endpoint"], {})[doc["partition"]] = doc
        return out

    def create_partition(self, doc: Doc) -> None:
        """The first landing (``Op.create``: Conflict when the partition has landed before)."""
        self.store.write([Op.create(PARTITIONS, partition_id(doc["endpoint"], doc["partition"]), doc)])

    def update_partition(self, endpoint: str, partition: str, change: Callable[[Doc | None], Doc]) -> Doc:
        """Re-land in a (small) transaction: ``change`` maps the stored document to the new one."""
        pid = partition_id(endpoint, partition)

        def run(txn: Any) -> Doc:
            updated = change(txn.get(PARTITIONS, pid))
            txn.set(PARTITIONS, pid, updated)
            return updated

        return self.store.transaction(run)  # type: ignore[no-any-return]

    # -- endpoint summaries -----------------------------------------------------------------------
    def summary(self, name: str) -> Doc | None:
        return self.store.get(ENDPOINTS, name)

    def summaries(self, names: Sequence[str]) -> dict[str, Doc]:
        return self.store.get_many(ENDPOINTS, names) if names else {}

    def summaries_due(self, now: datetime) -> dict[str, Doc]:
        """Summaries whose ``next_check`` has come (reads grow with what is due or open)."""
        return dict(self.store.query(ENDPOINTS, [Where("next_check", "<=", now)], order_by="next_check"))

    def downstream_of(self, endpoint: str) -> dict[str, Doc]:
        """Summaries of the endpoints with ``endpoint`` upstream (declared or derived)."""
        return dict(self.store.query(ENDPOINTS, [Where("upstream_all", "array_contains", endpoint)]))

    def all_summaries(self, owner: str | None = None) -> dict[str, Doc]:
        where = [Where("owner", "==", owner)] if owner else []
        out: dict[str, Doc] = {}
        after = None
        while True:
            rows = self.store.query(ENDPOINTS, where, limit=1000, start_after=after)
            out.update(rows)
            if len(rows) < 1000:
                return out
            after = rows[-1][0]

    @staticmethod
    def summary_op(name: str, patch: Doc) -> Op:
        """Merge ``patch`` into the summary (the evaluator's other fields are kept)."""
        return Op.set(ENDPOINTS, name, patch, merge=True)

    @staticmethod
    def delete_summary_op(name: str) -> Op:
        return Op.delete(ENDPOINTS, name)

    # -- the manifest sync's cursor and lineage ---------------------------------------------------------
    def sync_cursor(self) -> datetime | None:
        return (self.store.get(META, "evaluator") or {}).get("synced_until")

    @staticmethod
    def sync_cursor_op(at: datetime) -> Op:
        return Op.set(META, "evaluator", {"synced_until": at}, merge=True)

    def lineage(self, workflows: Sequence[str]) -> dict[str, Doc]:
        return self.store.get_many(LINEAGE, workflows) if workflows else {}

    @staticmethod
    def lineage_op(workflow: str, produces: str | None, depends_on: Sequence[str]) -> Op:
        return Op.set(LINEAGE, workflow, {"produces": produces, "depends_on": list(depends_on)})

    # -- alerts ------------------------------------------------------------------------------------
    def alert(self, id: str) -> Doc | None:
        return self.store.get(ALERTS, id)

    def alerts(self, ids: Sequence[str]) -> dict[str, Doc]:
        return self.store.get_many(ALERTS, ids) if ids else {}

    def list_alerts(self, owner: str | None = None, open_only: bool = True, limit: int = 1000,
                    endpoint: str | None = None) -> list[Doc]:
        where = [Where("owner", "==", owner)] if owner else []
        if endpoint:
            where.append(Where("endpoint", "==", endpoint))
        if open_only:
            where.append(Where("open", "==", True))
        return [d for _, d in self.store.query(ALERTS, where, limit=limit)]

    def open_missing_events(self, owner: str | None = None, limit: int = 1000) -> list[Doc]:
        """Open alerts of accepted events missing from a period (Gabo's ledger check raises them):
        one query, equality filters only, however many endpoints there are."""
        where = [Where("state", "==", "missing"), Where("open", "==", True)]
        if owner:
            where.insert(0, Where("owner", "==", owner))
        return [d for _, d in self.store.query(ALERTS, where, limit=limit)]

    @staticmethod
    def alert_op(policy: Policy, d: IncidentDecision) -> Op:
        """What decision ``d`` leaves on its incident document (merged)."""
        return Op.set(ALERTS, d.incident.id, incident_document(policy, d), merge=True)

    @staticmethod
    def alert_patch_op(id: str, patch: Doc) -> Op:
        return Op.set(ALERTS, id, patch, merge=True)

    # -- notification claims (the outbox) -----------------------------------------------------------
    @staticmethod
    def claim_op(claim_id: str, doc: Doc) -> Op:
        """Claim a notification exactly once (``Op.create``: Conflict when another evaluator did)."""
        return Op.create(NOTIFICATIONS, claim_id, doc)

    @staticmethod
    def sent_op(claim_id: str) -> Op:
        return Op.set(NOTIFICATIONS, claim_id, {"sent": True}, merge=True)

    def unsent_claims(self, limit: int = 500) -> list[tuple[str, Doc]]:
        return self.store.query(NOTIFICATIONS, [Where("sent", "==", False)], limit=limit)

    def held_claims(self, alert: str) -> list[Doc]:
        """Notifications of an incident held back by a silence."""
        return [d for _, d in self.store.query(NOTIFICATIONS, [Where("alert", "==", alert)]) if d.get("held")]

    # -- silences ------------------------------------------------------------------------------------
    def active_silences(self, now: datetime) -> list[Doc]:
        """Silences whose end is after ``now`` (one query)."""
        return [d for _, d in self.store.query(SILENCES, [Where("until", ">", now)])]

    def silence(self, id: str) -> Doc | None:
        return self.store.get(SILENCES, id)

    @staticmethod
    def silence_create_op(id: str, doc: Doc) -> Op:
        return Op.create(SILENCES, id, doc)

    @staticmethod
    def silence_patch_op(id: str, patch: Doc) -> Op:
        return Op.set(SILENCES, id, patch, merge=True)
