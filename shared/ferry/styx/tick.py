"""The tick (Cloud Scheduler, every minute; ``ferry tick``; ``POST /v1/tick``).

One tick: poll executions in flight (ends, starts, timeouts) -> natural triggers due -> backfill
progress -> dequeue and submit QUEUED instances whose delay passed (dependencies, resource pools,
global concurrency, submission rate: ``dequeue``, slots from ``slots``). It stops at a time budget; the
next tick continues.

Reads grow with the work due: due workflows come from one range query on their stored next trigger
time, queued instances from one on ``due_at``, executions in flight from one on ``poll_at``.

Safe when two ticks overlap: each change is a commit guarded by the next event id (see
``repository``); the loser of a race gets Conflict, writes nothing and moves on. Slots are claimed in
the same commit as the dequeue and released in the same commit as the end, so none can leak.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ferry import log
from ferry.domain import periods
from ferry.domain.manifests import Workflow
from ferry.errors import Conflict
from ferry.store.base import Op, write_all_or_each
from ferry.store.manifests import ManifestRepository
from ferry.styx import machine as m
from ferry.styx.dequeue import DequeueStage, log_failure
from ferry.styx.failures import FailureAlerts
from ferry.styx.repository import WORKFLOWS, StyxRepository
from ferry.styx.scheduling import due_periods, fire_time, policy_of, smear
from ferry.styx.service import StyxService
from ferry.styx.stages import TickLimits, TickReport

if TYPE_CHECKING:
    from ferry.bootstrap import Services

logger = log.get("styx.tick")

class Tick:
    """One tick of Styx's service ``styx`` within ``limits``."""

    def __init__(self, styx: StyxService, limits: TickLimits) -> None:
        self.styx = styx
        self.store = styx.store
        self.repo: StyxRepository = styx.repo
        self.limits = limits
        self._workflows: dict[str, Workflow | None] = {}
        self.failures = FailureAlerts(styx.store, styx.publisher)
        self.triggered_teams: set[str] = set()  # teams whose workflows this tick triggered (fair queues)

    def run(self, now: datetime, budget: float = 45.0) -> TickReport:
        """One tick at ``now``, for at most ``budget`` seconds of wall time."""
        started = time.monotonic()
        # stages stop starting work a tenth of the budget early (at most 5 s): launches in flight, their
        # records and the failure alerts finish within it, so the tick ends inside its budget
        self.deadline = started + budget - min(5.0, budget / 10)
        # natural triggers take at most half of it: the dequeue stage always gets its turn (a peak
        # larger than a tick can trigger continues in the next tick, its first stage after polling)
        self.trigger_deadline = started + budget / 2
        report = TickReport()
        with ThreadPoolExecutor(self.limits.threads) as executor:
            self.executor = executor  # the stages' threads (not a concurrency pool: see ``slots``)
            for stage in (self.poll, self.trigger_natural, self.progress_backfills, self.dequeue):
                if time.monotonic() >= self.deadline:
                    report.budget_exhausted = True
                    break
                at = time.monotonic()
                stage(now, report)
                report.stage_seconds[stage.__name__] = round(time.monotonic() - at, 3)
        at = time.monotonic()
        try:
            alerted = self.failures.flush(now)
            report.alerts_triggered, report.alerts_resolved = alerted["trigger"], alerted["resolve"]
            report.alerts_renotified = alerted["renotify"]
        except Exception as exc:  # the ends are committed; their alerts are the next end's or the sweep's
            report.add("errors")
            log_failure(logger, "settling failure alerts failed", exc)
        report.stage_seconds["alerts"] = round(time.monotonic() - at, 3)
        report.seconds = round(time.monotonic() - started, 3)
        log.event(logger, log.INFO, "tick", **report.to_dict())
        return report

    def in_budget(self, report: TickReport) -> bool:
        if time.monotonic() >= self.deadline:
            report.budget_exhausted = True
            return False
        return True

    @property
    def manifests(self) -> ManifestRepository:
        return self.styx.manifests

    def workflows(self, names: set[str]) -> dict[str, Workflow | None]:
        missing = sorted(n for n in names if n not in self._workflows)
        if missing:
            found = self.styx.manifests.get_many("Workflow", missing)
            for n in missing:
                self._workflows[n] = found[n].model_as(Workflow) if n in found else None
        return {n: self._workflows[n] for n in names}

    # -- 1. executions in flight ------------------------------------------------------------------
    def poll(self, now: datetime, report: TickReport) -> None:
        runs = self.repo.holding(self.limits.holding)
        if not runs:
            return
        wfs = self.workflows({r.workflow for r in runs})
        list(self.executor.map(lambda r: self._poll_one(r, wfs.get(r.workflow), now, report), runs))

    def _poll_one(self, run: m.Run, wf: Workflow | None, now: datetime, report: TickReport) -> None:
        if not self.in_budget(report):
            return  # the next tick polls it
        policy = policy_of(wf.spec) if wf else m.Policy()
        try:
            if run.state in (m.State.PREPARE, m.State.SUBMITTING):
                if run.updated_at and now - run.updated_at > self.limits.submission_lost:
                    self.recover(run, wf, policy, now, report)
                return
            if run.state not in (m.State.SUBMITTED, m.State.RUNNING) or not run.handle:
                return
            status = self.styx.launcher.poll(run.handle)
            if status.phase == "ended":
                ran = status.ran_seconds
                if status.exit_code is not None:
                    self.apply(run, m.Terminate(f"exited {status.exit_code}", exit_code=status.exit_code,
                                                ran_seconds=ran), now, policy, wf)
                else:
                    self.apply(run, m.RunError(status.message or "ended without an exit code", ran_seconds=ran),
                               now, policy, wf)
                report.add("ended")
            elif run.deadline is not None and now >= run.deadline:
                self.apply(run, m.Timeout(f"ran longer than {wf.spec.timeout if wf else 'its timeout'}"
                                          "; execution cancelled"), now, policy, wf)
                report.add("timed_out")
            elif status.phase == "running" and run.state == m.State.SUBMITTED:
                self.apply(run, m.Started("execution started"), now, policy, wf)
                report.add("started")
        except Conflict:
            report.add("conflicts")
        except Exception as exc:  # one instance's failure (a launcher that cannot tell, a bug) is its own
            report.add("errors")
            log_failure(logger, f"poll of {run.id} ({run.execution_id}) failed", exc)

    def recover(self, run: m.Run, wf: Workflow | None, policy: m.Policy, now: datetime, report: TickReport) -> None:
        """An instance whose submission is unrecorded past the lost-submission window: its tick died,
        or is only slow (stalled, a launch call that hangs). Elapsed time alone decides nothing: the
        execution id was fixed in the dequeue commit, so the launcher is asked. Started: adopted.
        Not started: launched again under the same id (no try spent) — a launch is idempotent per
        execution id, so a stalled tick that wakes and launches it too starts nothing more, and its
        ``submitted`` commit, conditional on the instance it read, loses to ours and cancels nothing
        (``DequeueStage.record_submitted``). Every write here is conditional too: two recovering ticks
        race on the next event id and one wins."""
        if not run.execution_id or run.state != m.State.SUBMITTING:
            # PREPARE: dequeued without an execution id (nothing can have been launched)
            self.apply(run, m.RunError("submission lost before an execution id was fixed"), now, policy, wf)
            return
        launcher_wf = wf.name if wf else run.workflow
        found = self.styx.launcher.find(launcher_wf, run.execution_id)
        if found is not None:
            self.apply(run, m.Submitted(f"adopted {run.execution_id}: it was launched, its submission record "
                                        "was lost", handle=found.handle, log_uri=found.log_uri), now, policy, wf)
            report.add("adopted")
            return
        if wf is None:
            self.apply(run, m.RunError("submission lost and its workflow deleted"), now, policy, wf)
            return
        leased = time.monotonic() + self.lease.total_seconds()
        again = self.apply(run, m.Resubmit(f"submission lost before its launch: launching {run.execution_id} "
                                           "again (no try spent)", execution_id=run.execution_id), now, policy, wf)
        report.add("resubmitted")
        stage = DequeueStage(self, report)
        launched = stage.launch(again, wf, now, leased)
        if launched is not None:
            stage.record_submitted([launched], now)

    @property
    def lease(self) -> timedelta:
        """How long after its commit a submission may still be launched by the tick that made it."""
        return self.limits.submission_lost / 2

    def apply(self, run: m.Run, event: m.Event, now: datetime, policy: m.Policy, wf: Workflow | None,
               extra: list[Op] | None = None, new: bool = False) -> m.Run:
        applied = self.styx.commit(run, event, now, policy, extra or [], new=new)
        self.styx.carry_out(applied, wf, now)
        self.failures.record(applied.run, applied.log, wf, now)
        return applied.run

    # -- 2. natural triggers ------------------------------------------------------------------------
    def trigger_natural(self, now: datetime, report: TickReport) -> None:
        """Every due workflow, a page of ``due_workflows`` at a time until none is left (the :00 peak
        is triggered in one tick) or the budget ends."""
        seen: set[str] = set()
        while self.in_budget(report) and time.monotonic() < getattr(self, "trigger_deadline", self.deadline):
            due = self.repo.due_workflows(now, self.limits.due_workflows)
            fresh = [(name, state) for name, state in due if name not in seen]
            if fresh:
                self._trigger_page(fresh, now, report)
                seen.update(name for name, _ in fresh)
            if len(due) < self.limits.due_workflows or not fresh:
                return  # all due ones seen (a workflow far behind catches up ``catch_up`` a tick)

    def _trigger_page(self, due: list[tuple[str, dict[str, Any]]], now: datetime, report: TickReport) -> None:
        """Trigger a page of due workflows without reading their instances first: a natural trigger's
        instance is new, so it is created (a create precondition). Only a workflow whose commit finds
        an instance already there (triggered ad hoc or by a backfill before its time, or by a racing
        tick) reads it and decides again (``_trigger_read``) — one read less per due instance."""
        plans = [_TriggerPlan.of(name, state, now, self.limits.catch_up) for name, state in due]
        self.triggered_teams.update(str(state["team"]) for _, state in due if state.get("team"))
        for plan in plans:
            plan.ops = self._trigger_ops(plan, {}, now)

        def one(plan: _TriggerPlan) -> bool:
            try:
                self.store.write(plan.ops)
                return True
            except Conflict:
                pass
            existing = self.repo.get_many([m.instance_id(plan.name, plan.cadence.format(p)) for p in plan.todo])
            plan.ops = self._trigger_ops(plan, existing, now)
            try:
                self.store.write(plan.ops)
                return True
            except Conflict:
                report.add("conflicts")  # another tick triggered it meanwhile: theirs stands
                return False
        committed = write_all_or_each(self.store, plans, lambda pl: pl.ops, one=one, batch_ops=450)
        report.triggered += sum(pl.count for pl in committed.items)
        report.conflicts += committed.conflicts

    def _trigger_ops(self, plan: _TriggerPlan, existing: dict[str, m.Run], now: datetime) -> list[Op]:
        ops: list[Op] = []
        plan.count = 0
        team = plan.state.get("team")
        for p in plan.todo:
            parameter = plan.cadence.format(p)
            before = existing.get(m.instance_id(plan.name, parameter))
            if before is not None and before.active:
                log.event(logger, log.WARNING, f"{plan.name} {parameter}: natural trigger skipped, instance is "
                          f"{before.state}", labels={"workflow": plan.name, "parameter": parameter})
                continue
            trig = m.Trigger("natural", f"natural-{parameter}")
            base = before or m.Run(plan.name, parameter)
            if team and base.team != team:
                base = replace(base, team=team)
            adv = m.advance(base, m.TriggerExecution("natural trigger", trigger=trig), now, m.Policy())
            ops += self.repo.commit_ops(before, adv.log, now)
            plan.count += 1
        ops.append(Op.set(WORKFLOWS, plan.name, {"next_period": plan.cadence.format(plan.nxt),
                                                 "next_due": fire_time(plan.cadence, plan.offset, plan.nxt)
                                                 + smear(plan.name, self.limits.smear_s), "updated_at": now},
                          merge=True))
        return ops

    # -- 3. backfills ----------------------------------------------------------------------------------
    def progress_backfills(self, now: datetime, report: TickReport) -> None:
        from ferry.styx.backfills import progress

        for bf in self.repo.active_backfills():
            if not self.in_budget(report):
                return
            try:
                report.backfill_triggered += progress(self.styx, bf, now)
            except Exception as exc:  # one backfill's failure is its own: the others (and the stages) go on
                report.add("errors")
                log_failure(logger, f"progress of backfill {bf['id']} failed", exc)

    # -- 4. dequeue and submit (``dequeue``) -----------------------------------------------------------
    def dequeue(self, now: datetime, report: TickReport) -> None:
        DequeueStage(self, report).run(now)


@dataclass
class _TriggerPlan:
    """One due workflow's natural triggers this tick: its periods due and its next period after them."""

    name: str
    state: dict[str, Any]
    cadence: periods.Cadence
    offset: timedelta
    todo: list[datetime]
    nxt: datetime
    ops: list[Op] = field(default_factory=list)
    count: int = 0

    @classmethod
    def of(cls, name: str, state: dict[str, Any], now: datetime, catch_up: int) -> _TriggerPlan:
        cadence = periods.schedule(state["schedule"], state["timezone"])
        offset = periods.parse_duration(state["offset"])
        todo, nxt = due_periods(cadence, offset, cadence.parse(state["next_period"]), now, catch_up)
        return cls(name, state, cadence, offset, todo, nxt)


def tick(services: Services, now: datetime | None = None, budget: float = 45.0) -> TickReport:
    """Run one tick with the process's launcher (what the scheduler's function and the API call): an entry
    point's, on the composition root's services."""
    return Tick(services.styx, TickLimits.from_settings(services.settings)).run(now or services.clock.now(), budget)
