"""The evaluator's manifest sync: bring endpoint summaries up to date with the Endpoint and Workflow
manifests changed since the last sync, however they were written (``ferry apply``, or Gabo
registering ``events.<type>``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ferry.datamon import domain
from ferry.datamon.repository import DatamonRepository
from ferry.domain.manifests import Endpoint, retired
from ferry.store.base import Op
from ferry.store.manifests import ManifestRepository

if TYPE_CHECKING:
    from ferry.store.base import DocumentStore

# Manifests applied with a clock a little behind the evaluator's are still picked up.
SYNC_SLACK = timedelta(minutes=10)


def sync_manifests(store: DocumentStore, now: datetime) -> set[str]:
    """Bring the summaries' policies up to date with the endpoint and workflow manifests changed
    since the last sync (a query by ``updated_at``, so reads grow with changes, not with endpoints).

    Catches endpoints however they were written (``ferry apply``, or Gabo registering
    ``events.<type>``). Returns the names of endpoints (re)registered.
    """
    repo = DatamonRepository(store)
    manifests = ManifestRepository(store)
    cursor = domain._utc(repo.sync_cursor()) or domain.EPOCH
    changed = manifests.changed_since("Endpoint", cursor)
    workflows = manifests.changed_since("Workflow", cursor)
    ops: list[Op] = []
    touched: set[str] = set()
    newest = cursor
    if changed:
        current = repo.summaries([r.name for r in changed])
        for rec in changed:
            newest = max(newest, domain._utc(rec.updated_at) or newest)
            old = current.get(rec.name) or {}
            if retired(rec.model_as(Endpoint).metadata.labels):  # not evaluated: no summary
                if old:
                    ops.append(repo.delete_summary_op(rec.name))
                continue
            if old.get("generation") == rec.generation and "next_check" in old:
                continue
            policy = domain.Policy.from_spec(rec.name, rec.owner or "", rec.model_as(Endpoint).spec, rec.generation)
            doc = policy.to_doc()
            first = domain.first_expected(policy, domain._utc(rec.created_at) or now)
            doc.update({"registered_at": rec.created_at, "watermark": first, "landed_beyond": [],
                        "next_check": domain.EPOCH, "upstream_all": upstream_all(doc, old)})
            doc.setdefault("open", old.get("open") or [])
            ops.append(repo.summary_op(rec.name, doc))
            touched.add(rec.name)
    if workflows:
        lineage = repo.lineage([w.name for w in workflows])
        targets: dict[str, dict[str, list[str]]] = {}
        for rec in workflows:
            newest = max(newest, domain._utc(rec.updated_at) or newest)
            spec = rec.manifest.get("spec", {})
            produces, deps = spec.get("produces"), list(spec.get("depends_on") or [])
            old = lineage.get(rec.name) or {}
            if old.get("produces") == produces and old.get("depends_on") == deps:
                continue
            if old.get("produces") and old["produces"] != produces:
                targets.setdefault(old["produces"], {})[rec.name] = []
            if produces:
                targets.setdefault(produces, {})[rec.name] = deps
            ops.append(repo.lineage_op(rec.name, produces, deps))
        if targets:
            summaries = repo.summaries(sorted(targets))
            for name, derived in targets.items():
                old = summaries.get(name) or {}
                merged = {**(old.get("derived_upstream") or {}), **derived}
                patch = {"derived_upstream": merged, "next_check": domain.EPOCH,
                         "upstream_all": upstream_all({"upstream": old.get("upstream")}, {"derived_upstream": merged})}
                ops.append(repo.summary_op(name, patch))
                touched.add(name)
    # The cursor moves past a change only once the slack has passed (in one write), so a change
    # written late with an older clock is still seen, and quiet evaluations write nothing.
    if newest > cursor and now - SYNC_SLACK >= newest:
        ops.append(repo.sync_cursor_op(newest + timedelta(microseconds=1)))
    repo.write(ops)
    return touched


def upstream_all(doc: dict[str, Any], old: dict[str, Any]) -> list[str]:
    derived = (doc.get("derived_upstream") or old.get("derived_upstream") or {}).values()
    return list(dict.fromkeys([*(doc.get("upstream") or []), *(u for deps in derived for u in deps)]))
