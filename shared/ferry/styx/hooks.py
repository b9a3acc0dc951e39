"""What applying and deleting Workflows does to Styx: the stored next trigger time of each workflow
(so the tick finds due workflows by one range query), and halting instances of disabled or deleted
workflows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from ferry.domain import periods
from ferry.domain.loading import Problem
from ferry.domain.manifests import Manifest, Workflow
from ferry.store.base import Op
from ferry.store.manifests import ManifestRepository
from ferry.styx.repository import TEAMS, WORKFLOWS
from ferry.styx.scheduling import fire_time, first_period, smear

if TYPE_CHECKING:
    from ferry.services.apply import Change
    from ferry.styx.service import StyxService

_TIMING = ("schedule", "timezone", "offset")


def trigger_state(wf: Workflow, now: datetime, smear_s: int = 0) -> dict[str, object]:
    """The workflow's trigger state from ``now`` on: its next period and when it fires (``smear_s``:
    ``FERRY_STYX_SMEAR_S``)."""
    cadence = wf.spec.cadence()
    offset = periods.parse_duration(wf.spec.offset)
    nxt = first_period(cadence, offset, now)
    doc: dict[str, object] = {"workflow": wf.name, "schedule": wf.spec.schedule, "timezone": wf.spec.timezone,
                              "offset": wf.spec.offset, "enabled": wf.spec.enabled,
                              "next_period": cadence.format(nxt), "updated_at": now, "team": wf.metadata.owner}
    if wf.spec.enabled:
        doc["next_due"] = fire_time(cadence, offset, nxt) + smear(wf.name, smear_s)
    return doc


class StyxApplyHook:
    """Styx's part of ``ferry apply``: ``smear_s`` spreads natural triggers; ``styx`` (asked only when a
    workflow is deleted or disabled) halts its active instances."""

    def __init__(self, smear_s: int, styx: Callable[[], StyxService]) -> None:
        self.smear_s = smear_s
        self.styx = styx

    def check(self, manifests: Sequence[Manifest], repo: ManifestRepository) -> list[Problem]:
        problems = []
        for i, man in enumerate(manifests):
            if isinstance(man, Workflow) and not man.spec.command and not man.spec.args:
                # Cloud Run would run the image's entrypoint; the local launcher needs something to run.
                continue
            if isinstance(man, Workflow) and "{}" in man.spec.command:
                problems.append(Problem("(input)", i, "spec.command",
                                        "the parameter placeholder {} belongs in args, not command",
                                        man.kind, man.name))
        return problems

    def ops(self, changes: Sequence[Change], now: datetime) -> list[Op]:
        out = []
        for c in changes:
            if not isinstance(c.manifest, Workflow):
                continue
            if c.action == "deleted":
                out.append(Op.delete(WORKFLOWS, c.manifest.name))
                continue
            if c.action == "unchanged":
                continue
            owner = c.manifest.metadata.owner
            out.append(Op.set(TEAMS, owner, {"team": owner, "updated_at": now}, merge=True))
            prev = c.previous.manifest.get("spec", {}) if c.previous else None
            spec = c.manifest.spec
            same_timing = prev is not None and all(prev.get(k) == getattr(spec, k) for k in _TIMING)
            if same_timing and prev is not None and prev.get("enabled", True) == spec.enabled:
                # keep the stored next trigger (a re-apply must not skip or repeat a period)
                out.append(Op.set(WORKFLOWS, c.manifest.name, {"team": owner}, merge=True))
                continue
            out.append(Op.set(WORKFLOWS, c.manifest.name,
                              trigger_state(c.manifest, now, self.smear_s)))
        return out

    def after(self, changes: Sequence[Change], now: datetime) -> None:
        styx = None
        for c in changes:
            if not isinstance(c.manifest, Workflow) or c.action == "unchanged":
                continue
            if c.action == "deleted" or not c.manifest.spec.enabled:
                styx = styx or self.styx()
                if c.action == "deleted":
                    styx.halt_active(c.manifest.name, now, "workflow deleted")
                else:
                    styx.halt_active(c.manifest.name, now, "workflow disabled", natural_only=True)
