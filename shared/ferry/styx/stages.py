"""What the tick and its stages share: the tick's limits, the report its stages count in, and the part
of the tick a stage uses (``TickRun``: the tick implements it; ``dequeue`` runs against it), so that the
dequeue stage does not import the tick that runs it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from ferry.domain.manifests import Workflow
from ferry.store.base import DocumentStore, Op
from ferry.store.manifests import ManifestRepository
from ferry.styx import machine as m

if TYPE_CHECKING:
    from ferry.config import Settings
    from ferry.styx.repository import StyxRepository
    from ferry.styx.service import StyxService


@dataclass(frozen=True)
class TickLimits:
    max_active: int = 1000
    # submissions per UTC minute, whatever the number of ticks (tokens styx_rate/{minute}#{n})
    submissions_per_minute: int = 600
    gate_recheck: timedelta = timedelta(seconds=60)
    catch_up: int = 100            # natural triggers per workflow per tick, when far behind
    due_workflows: int = 200      # due workflows per page of the natural-trigger stage (its budget checks)
    queued: int = 1000
    holding: int = 5000
    threads: int = 8
    # A submission unrecorded for this long is looked for (``recover``); the submitting tick launches
    # only within half of it (its lease), so a late launch cannot meet the recovering one.
    submission_lost: timedelta = timedelta(minutes=2)
    smear_s: int = 0               # FERRY_STYX_SMEAR_S: natural triggers spread over this many seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> TickLimits:
        """The limits the deployment sets (``FERRY_STYX_*``, read once by ``Settings``)."""
        return cls(max_active=settings.styx_max_active, submissions_per_minute=settings.styx_submit_rate,
                   gate_recheck=timedelta(seconds=settings.styx_gate_recheck_s), threads=settings.styx_threads,
                   submission_lost=timedelta(seconds=settings.styx_submission_lost_s),
                   smear_s=settings.styx_smear_s)


@dataclass
class TickReport:
    triggered: int = 0
    dequeued: int = 0
    submitted: int = 0
    launch_failed: int = 0
    started: int = 0
    ended: int = 0
    timed_out: int = 0
    gated: int = 0
    waiting_for_slots: int = 0
    backfill_triggered: int = 0
    conflicts: int = 0
    adopted: int = 0      # lost submissions whose execution had started: recorded, not launched again
    lease_expired: int = 0  # not launched: this tick stalled past its lease (a later tick recovers them)
    left_to_others: int = 0  # launched, but another tick had recorded the same execution: left running
    resubmitted: int = 0  # lost submissions whose execution had not started: launched under the same id
    throttled: int = 0    # launches the platform refused for a quota (429): requeued, no try spent
    alerts_triggered: int = 0   # failure incidents opened (one per workflow: docs/styx.md)
    alerts_renotified: int = 0
    alerts_resolved: int = 0
    errors: int = 0       # instances whose poll or dequeue failed unexpectedly (logged; the rest went on)
    budget_exhausted: bool = False
    rate_limited: bool = False  # this minute's submissions are used up (by this tick or others)
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage (and alerts)

    def add(self, name: str, n: int = 1) -> None:
        """Count ``n`` more of ``name`` (the tick's threads count concurrently)."""
        with _REPORT_LOCK:
            setattr(self, name, getattr(self, name) + n)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_REPORT_LOCK = threading.Lock()


class TickRun(Protocol):
    """The running tick as its stages see it."""

    styx: StyxService
    repo: StyxRepository
    store: DocumentStore
    limits: TickLimits
    executor: ThreadPoolExecutor
    triggered_teams: set[str]  # teams whose workflows this tick triggered (the queue reads them)

    @property
    def lease(self) -> timedelta: ...

    @property
    def manifests(self) -> ManifestRepository: ...

    def in_budget(self, report: TickReport) -> bool: ...

    def workflows(self, names: set[str]) -> dict[str, Workflow | None]: ...

    def apply(self, run: m.Run, event: m.Event, now: datetime, policy: m.Policy, wf: Workflow | None,
              extra: list[Op] | None = None, new: bool = False) -> m.Run: ...
