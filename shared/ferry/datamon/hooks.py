"""What applying Endpoints and Workflows does to Datamon: each endpoint's policy in its summary, and
workflows' lineage, written in the apply's own batches."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ferry.datamon import domain
from ferry.datamon.repository import ENDPOINTS, LINEAGE
from ferry.store.base import Op


class DatamonApplyHook:
    """Writes each applied endpoint's policy into its summary (due at once), and workflows' lineage
    (``depends_on`` → ``produces``) into the produced endpoint's summary, in the apply's own batches.

    The evaluator's manifest sync catches endpoints written any other way. Merges only: the
    evaluator's fields (open partitions, alerts, watermark of an unchanged endpoint) are kept.
    """

    def check(self, manifests: Sequence[Any], repo: Any) -> list[Any]:
        return []

    def ops(self, changes: Sequence[Any], now: datetime) -> list[Op]:
        ops: list[Op] = []
        for c in changes:
            if c.manifest.kind == "Endpoint":
                if c.action == "deleted":
                    ops.append(Op.delete(ENDPOINTS, c.manifest.name))
                    continue
                rec = c.record
                policy = domain.Policy.from_spec(rec.name, rec.owner or "", c.manifest.spec, rec.generation)
                doc = policy.to_doc()
                doc.update({"registered_at": rec.created_at, "landed_beyond": [], "next_check": domain.EPOCH,
                            "watermark": domain.first_expected(policy, domain._utc(rec.created_at) or now)})
                ops.append(Op.set(ENDPOINTS, rec.name, doc, merge=True))
            elif c.manifest.kind == "Workflow":
                old = c.previous.manifest.get("spec", {}).get("produces") if c.previous else None
                new = None if c.action == "deleted" else c.manifest.spec.produces
                if old and old != new:
                    ops.append(Op.set(ENDPOINTS, old, {"derived_upstream": {c.manifest.name: []},
                                                       "next_check": domain.EPOCH}, merge=True))
                if new:
                    ops.append(Op.set(ENDPOINTS, new, {"derived_upstream": {c.manifest.name:
                                                                            list(c.manifest.spec.depends_on)},
                                                       "next_check": domain.EPOCH}, merge=True))
                    ops.append(Op.set(LINEAGE, c.manifest.name, {"produces": new,
                                                                 "depends_on": list(c.manifest.spec.depends_on)}))
        return ops

    def after(self, changes: Sequence[Any], now: datetime) -> None:
        return None
