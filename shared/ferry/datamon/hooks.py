"""What applying Endpoints and Workflows does to Datamon: each endpoint's policy in its summary, and
workflows' lineage, written in the apply's own batches."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ferry.datamon import domain
from ferry.datamon.repository import DatamonRepository
from ferry.domain.loading import Problem
from ferry.domain.manifests import Endpoint, Manifest, Workflow
from ferry.services.apply import Change
from ferry.store.base import Op
from ferry.store.manifests import ManifestRepository


class DatamonApplyHook:
    """Writes each applied endpoint's policy into its summary (due at once), and workflows' lineage
    (``depends_on`` → ``produces``) into the produced endpoint's summary, in the apply's own batches.

    The evaluator's manifest sync catches endpoints written any other way. Merges only: the
    evaluator's fields (open partitions, alerts, watermark of an unchanged endpoint) are kept.
    """

    def check(self, manifests: Sequence[Manifest], repo: ManifestRepository) -> list[Problem]:
        return []

    def ops(self, changes: Sequence[Change], now: datetime) -> list[Op]:
        ops: list[Op] = []
        summary_op = DatamonRepository.summary_op
        for c in changes:
            if isinstance(c.manifest, Endpoint):
                if c.action == "deleted":
                    ops.append(DatamonRepository.delete_summary_op(c.manifest.name))
                    continue
                rec = c.record
                policy = domain.Policy.from_spec(rec.name, rec.owner or "", c.manifest.spec, rec.generation)
                doc = policy.to_doc()
                doc.update({"registered_at": rec.created_at, "landed_beyond": [], "next_check": domain.EPOCH,
                            "watermark": domain.first_expected(policy, domain._utc(rec.created_at) or now)})
                ops.append(summary_op(rec.name, doc))
            elif isinstance(c.manifest, Workflow):
                old = c.previous.manifest.get("spec", {}).get("produces") if c.previous else None
                new = None if c.action == "deleted" else c.manifest.spec.produces
                if old and old != new:
                    ops.append(summary_op(old, {"derived_upstream": {c.manifest.name: []},
                                                "next_check": domain.EPOCH}))
                if new:
                    deps = list(c.manifest.spec.depends_on)
                    ops.append(summary_op(new, {"derived_upstream": {c.manifest.name: deps},
                                                "next_check": domain.EPOCH}))
                    ops.append(DatamonRepository.lineage_op(c.manifest.name, new, deps))
        return ops

    def after(self, changes: Sequence[Change], now: datetime) -> None:
        return None
