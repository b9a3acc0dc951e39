"""The tick (Cloud Scheduler, every minute; ``ferry tick``; ``POST /v1/tick``).

One tick: poll executions in flight (ends, starts, timeouts) -> natural triggers due -> backfill
progress -> dequeue and submit QUEUED instances whose delay passed (dependencies, resource pools,
global concurrency, submission rate). It stops at a time budget; the next tick continues.

Reads grow with the work due: due workflows come from one range query on their stored next trigger
time, queued instances from one on ``due_at``, executions in flight from one on ``poll_at``.

Safe when two ticks overlap: each change is a commit guarded by the next event id (see
``repository``); the loser of a race gets Conflict, writes nothing and moves on. Slots are claimed in
the same commit as the dequeue and released in the same commit as the end, so none can leak.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ferry import log
from ferry.domain import periods
from ferry.domain.manifests import Workflow
from ferry.errors import Conflict, FerryError
from ferry.store.base import Op
from ferry.styx import machine as m
from ferry.styx.launchers import Launched, Launcher
from ferry.styx.repository import WORKFLOWS, StyxRepository
from ferry.styx.scheduling import Pool, due_periods, fire_time, policy_of, slot_id
from ferry.styx.service import Applied, LandedFn, LandFn, StyxService, slug
from ferry.wiring import Services

logger = log.get("styx.tick")

GLOBAL_POOL = "global"
RATE_PREFIX = "rate."  # the submission tokens of a minute, as a pool: rate.2026-11-26T13:05#n
SUBMISSION_LOST_AFTER = timedelta(minutes=2)


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, "") or default)


@dataclass(frozen=True)
class TickLimits:
    max_active: int = field(default_factory=lambda: _env_int("FERRY_STYX_MAX_ACTIVE", 1000))
    # submissions per UTC minute, whatever the number of ticks (tokens styx_rate/{minute}#{n})
    submissions_per_minute: int = field(default_factory=lambda: _env_int("FERRY_STYX_SUBMIT_RATE", 600))
    gate_recheck: timedelta = field(default_factory=lambda: timedelta(seconds=_env_int("FERRY_STYX_GATE_RECHECK_S", 60)))
    catch_up: int = 100            # natural triggers per workflow per tick, when far behind
    due_workflows: int = 1000
    queued: int = 1000
    holding: int = 5000
    threads: int = field(default_factory=lambda: _env_int("FERRY_STYX_THREADS", 8))


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
    budget_exhausted: bool = False
    rate_limited: bool = False  # this minute's submissions are used up (by this tick or others)
    seconds: float = 0.0

    def add(self, name: str, n: int = 1) -> None:
        """Count ``n`` more of ``name`` (the tick's threads count concurrently)."""
        with _REPORT_LOCK:
            setattr(self, name, getattr(self, name) + n)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_REPORT_LOCK = threading.Lock()


class Tick:
    def __init__(self, services: Services, launcher: Launcher | None = None, landed: LandedFn | None = None,
                 land: LandFn | None = None, limits: TickLimits | None = None) -> None:
        self.services = services
        self.styx = StyxService(services, launcher, landed, land)
        self.repo: StyxRepository = self.styx.repo
        self.limits = limits or TickLimits()
        self._workflows: dict[str, Workflow | None] = {}

    def run(self, now: datetime, budget: float = 45.0) -> TickReport:
        """One tick at ``now``, for at most ``budget`` seconds of wall time."""
        started = time.monotonic()
        self.deadline = started + budget
        report = TickReport()
        with ThreadPoolExecutor(self.limits.threads) as pool:
            self.pool = pool
            for stage in (self.poll, self.trigger_natural, self.progress_backfills, self.dequeue):
                if time.monotonic() >= self.deadline:
                    report.budget_exhausted = True
                    break
                stage(now, report)
        report.seconds = round(time.monotonic() - started, 3)
        log.event(logger, 20, "tick", **report.to_dict())
        return report

    def _in_budget(self, report: TickReport) -> bool:
        if time.monotonic() >= self.deadline:
            report.budget_exhausted = True
            return False
        return True

    def workflows(self, names: set[str]) -> dict[str, Workflow | None]:
        missing = sorted(n for n in names if n not in self._workflows)
        if missing:
            found = self.services.manifests.get_many("Workflow", missing)
            for n in missing:
                self._workflows[n] = found[n].model() if n in found else None  # type: ignore[assignment]
        return {n: self._workflows[n] for n in names}

    # -- 1. executions in flight ------------------------------------------------------------------
    def poll(self, now: datetime, report: TickReport) -> None:
        runs = self.repo.holding(self.limits.holding)
        if not runs:
            return
        wfs = self.workflows({r.workflow for r in runs})
        list(self.pool.map(lambda r: self._poll_one(r, wfs.get(r.workflow), now, report), runs))

    def _poll_one(self, run: m.Run, wf: Workflow | None, now: datetime, report: TickReport) -> None:
        policy = policy_of(wf.spec) if wf else m.Policy()
        try:
            if run.state in (m.State.PREPARE, m.State.SUBMITTING):
                if run.updated_at and now - run.updated_at > SUBMISSION_LOST_AFTER:
                    self._apply(run, m.Event(m.On.RUN_ERROR, "submission lost (the submitting tick stopped)"),
                                now, policy, wf)
                return
            if run.state not in (m.State.SUBMITTED, m.State.RUNNING) or not run.handle:
                return
            try:
                status = self.styx.launcher.poll(run.handle)
            except FerryError as exc:
                logger.warning("poll of %s failed: %s", run.execution_id, exc.message)
                return
            if status.phase == "ended":
                if status.exit_code is not None:
                    self._apply(run, m.Event(m.On.TERMINATE, f"exited {status.exit_code}",
                                             exit_code=status.exit_code), now, policy, wf)
                else:
                    self._apply(run, m.Event(m.On.RUN_ERROR, status.message or "ended without an exit code"),
                                now, policy, wf)
                report.add("ended")
            elif run.deadline is not None and now >= run.deadline:
                self._apply(run, m.Event(m.On.TIMEOUT, f"ran longer than {wf.spec.timeout if wf else 'its timeout'}"
                                         "; execution cancelled"), now, policy, wf)
                report.add("timed_out")
            elif status.phase == "running" and run.state == m.State.SUBMITTED:
                self._apply(run, m.Event(m.On.STARTED, "execution started"), now, policy, wf)
                report.add("started")
        except Conflict:
            report.add("conflicts")

    def _apply(self, run: m.Run, event: m.Event, now: datetime, policy: m.Policy, wf: Workflow | None,
               extra: list[Op] | None = None, new: bool = False) -> m.Run:
        applied = self.styx.commit(run, event, now, policy, extra or [], new=new)
        self.styx.carry_out(applied, wf, now)
        return applied.run

    # -- 2. natural triggers ------------------------------------------------------------------------
    def trigger_natural(self, now: datetime, report: TickReport) -> None:
        due = self.repo.due_workflows(now, self.limits.due_workflows)
        if not due:
            return
        plans: list[tuple[str, dict[str, Any], list[datetime], datetime]] = []
        for name, state in due:
            cadence = periods.schedule(state["schedule"], state["timezone"])
            offset = periods.parse_duration(state["offset"])
            start = cadence.parse(state["next_period"])
            todo, nxt = due_periods(cadence, offset, start, now, self.limits.catch_up)
            plans.append((name, state, todo, nxt))
        ids = [m.instance_id(name, periods.schedule(s["schedule"], s["timezone"]).format(p))
               for name, s, todo, _ in plans for p in todo]
        existing = self.repo.get_many(ids)
        batches: list[tuple[list[Op], int]] = []
        for name, state, todo, nxt in plans:
            cadence = periods.schedule(state["schedule"], state["timezone"])
            offset = periods.parse_duration(state["offset"])
            ops: list[Op] = []
            count = 0
            for p in todo:
                parameter = cadence.format(p)
                before = existing.get(m.instance_id(name, parameter))
                if before is not None and before.active:
                    log.event(logger, 30, f"{name} {parameter}: natural trigger skipped, instance is {before.state}",
                              labels={"workflow": name, "parameter": parameter})
                    continue
                trig = m.Trigger("natural", f"natural-{parameter}")
                adv = m.advance(before or m.Run(name, parameter),
                                m.Event(m.On.TRIGGER_EXECUTION, "natural trigger", trigger=trig), now, m.Policy())
                ops += self.repo.commit_ops(before, adv.log, now)
                count += 1
            ops.append(Op.set(WORKFLOWS, name, {"next_period": cadence.format(nxt),
                                                "next_due": fire_time(cadence, offset, nxt), "updated_at": now},
                              merge=True))
            batches.append((ops, count))
        # One commit for all when nobody races us; per workflow when someone does (their trigger wins).
        flat = [op for b, _ in batches for op in b]
        if len(flat) <= 450:
            try:
                self.services.store.write(flat)
                report.triggered += sum(n for _, n in batches)
                return
            except Conflict:
                report.conflicts += 1
        for b, n in batches:
            try:
                self.services.store.write(b)
                report.triggered += n
            except Conflict:
                report.conflicts += 1

    # -- 3. backfills ----------------------------------------------------------------------------------
    def progress_backfills(self, now: datetime, report: TickReport) -> None:
        from ferry.styx.backfills import progress

        for bf in self.repo.active_backfills():
            if not self._in_budget(report):
                return
            report.backfill_triggered += progress(self.styx, bf, now)

    # -- 4. dequeue and submit --------------------------------------------------------------------------
    def dequeue(self, now: datetime, report: TickReport) -> None:
        """Dequeue the QUEUED instances due and launch them.

        Gates are checked in the thread pool. Slots are chosen in due order; the dequeue+submit commits
        of up to ``CHUNK_OPS`` writes go out as one batched commit, and their launches start in the
        pool as soon as it lands; the ``submitted`` commits are batched the same way. A batch is
        atomic: when another writer got to one of its instances (or slots) first, nothing of it is
        written and each of its instances is committed on its own (the loser of a race moves on).
        So a Firestore commit is spent per ~40 instances, not two per instance.
        """
        queued = self.repo.queued_due(now, self.limits.queued)
        if not queued:
            return
        wfs = self.workflows({r.workflow for r in queued})
        resource_names = sorted({res for wf in wfs.values() if wf for res in wf.spec.resources})
        resources = self.services.manifests.get_many("Resource", resource_names) if resource_names else {}
        minute = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
        self.repo.expire_rate(minute)
        claims = _Claims(self.repo, minute, self.limits.submissions_per_minute)
        admitted = self.pool.map(lambda run: self._admit(run, wfs.get(run.workflow), resources, now, report), queued)
        launches: list[Future[_Launch | None]] = []
        chunk: list[_Dequeue] = []
        chunk_ops = FIRST_CHUNK_OPS  # a small first batch, so the first launches start early
        for item in admitted:
            if item is None:
                continue
            if not self._in_budget(report):
                break
            slots = claims.reserve(item.sizes)
            if slots is None:
                if claims.exhausted:
                    report.rate_limited = True
                    break
                report.add("waiting_for_slots")
                continue
            item.plan(self.styx, slots, now)
            chunk.append(item)
            if sum(len(d.ops) for d in chunk) >= chunk_ops:
                launches += self._dequeue_chunk(chunk, claims, now, report)
                chunk, chunk_ops = [], min(2 * chunk_ops, CHUNK_OPS)
        if chunk:
            launches += self._dequeue_chunk(chunk, claims, now, report)
        done: list[_Launch] = []
        for f in as_completed(launches):
            result = f.result()
            if result is not None:
                done.append(result)
            if len(done) >= SUBMITTED_BATCH:
                self._submitted(done, now, report)
                done = []
        self._submitted(done, now, report)

    def _admit(self, run: m.Run, wf: Workflow | None, resources: dict[str, Any], now: datetime,
               report: TickReport) -> _Dequeue | None:
        """Whether ``run`` may be dequeued now (halting it if its workflow is gone or disabled, sending
        it back to wait if an upstream partition has not landed); the pools it needs if so."""
        if run.state != m.State.QUEUED or not self._in_budget(report):
            return None
        try:
            if wf is None:
                self._apply(run, m.Event(m.On.HALT, "workflow deleted"), now, m.Policy(), None)
                return None
            policy = policy_of(wf.spec)
            if not wf.spec.enabled and run.trigger and run.trigger.type == "natural":
                self._apply(run, m.Event(m.On.HALT, "workflow disabled"), now, policy, wf)
                return None
            if wf.spec.depends_on:
                missing = self.styx.gate(wf, run.parameter)
                if missing:
                    report.add("gated")
                    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
                    self._apply(run, m.Event(m.On.RETRY_AFTER, f"waiting for upstream partitions: {shown}",
                                             delay=self.limits.gate_recheck), now, policy, wf)
                    return None
        except Conflict:
            report.add("conflicts")
            return None
        sizes = {GLOBAL_POOL: self.limits.max_active}
        for res in wf.spec.resources:
            rec = resources.get(res)
            sizes[f"resource.{res}"] = rec.manifest["spec"]["concurrency"] if rec else 0
        return _Dequeue(run, wf, policy, sizes)

    def _dequeue_chunk(self, chunk: list[_Dequeue], claims: _Claims, now: datetime,
                       report: TickReport) -> list[Future[_Launch | None]]:
        """Commit a chunk of dequeues in one batch (each on its own after a conflict); launch the ones
        committed. Returns the launches under way."""
        try:
            self.services.store.write([op for d in chunk for op in d.ops])
        except Conflict:
            report.add("conflicts")
            for d in chunk:
                claims.release(d.slots)
            committed = [d for d in chunk if self._dequeue_alone(d, claims, now, report)]
        except BaseException:
            for d in chunk:
                claims.release(d.slots)
            raise
        else:
            committed = chunk
        out = []
        for d in committed:
            assert d.applied is not None
            self.styx.logged(d.applied)
            report.add("dequeued")
            out.append(self.pool.submit(self._launch, d.applied.run, d.wf, now, report))
        return out

    def _dequeue_alone(self, d: _Dequeue, claims: _Claims, now: datetime, report: TickReport) -> bool:
        """Commit one dequeue; after a conflict, look again. False if it is not ours to launch."""
        for attempt in range(3):
            slots = claims.reserve(d.sizes, refresh=attempt > 0)
            if slots is None:
                if claims.exhausted:
                    report.rate_limited = True
                else:
                    report.add("waiting_for_slots")
                return False
            d.plan(self.styx, slots, now)
            try:
                self.services.store.write(d.ops)
                return True
            except Conflict:
                claims.release(slots)
                report.add("conflicts")
                fresh = self.repo.get(d.run.workflow, d.run.parameter)
                if fresh is None or fresh.state != m.State.QUEUED or fresh.counter != d.run.counter:
                    return False  # another tick took it
                # a slot was taken under us: look at the pools again
            except BaseException:
                claims.release(slots)
                raise
        return False

    def _launch(self, run: m.Run, wf: Workflow, now: datetime, report: TickReport) -> _Launch | None:
        """Start the execution; the ``submitted`` commit is left to the caller (batched)."""
        policy = policy_of(wf.spec)
        assert run.execution_id
        spec = self.styx.launch_spec(wf, run, run.execution_id)
        try:
            launched = self.styx.launcher.launch(spec)
        except FerryError as exc:
            report.add("launch_failed")
            try:
                self._apply(run, m.Event(m.On.RUN_ERROR, f"launch failed: {exc.message}"), now, policy, wf)
            except Conflict:
                report.add("conflicts")
            return None
        return _Launch(run, wf, policy, launched)

    def _submitted(self, done: list[_Launch], now: datetime, report: TickReport) -> None:
        """Record launched executions as SUBMITTED: one batch, or one by one after a conflict."""
        if not done:
            return
        planned = [(x, *self.styx.plan(x.run, self._submitted_event(x), now, x.policy)) for x in done]
        try:
            self.services.store.write([op for _, _, ops in planned for op in ops])
        except Conflict:
            report.add("conflicts")
            for x in done:
                try:
                    self._apply(x.run, self._submitted_event(x), now, x.policy, x.wf)
                    report.add("submitted")
                except Conflict:  # halted meanwhile: do not leave the execution running
                    report.add("conflicts")
                    self.styx.launcher.cancel(x.launched.handle)
            return
        for x, applied, _ in planned:
            self.styx.logged(applied)
            self.styx.carry_out(applied, x.wf, now)
        report.add("submitted", len(done))

    @staticmethod
    def _submitted_event(x: _Launch) -> m.Event:
        return m.Event(m.On.SUBMITTED, f"submitted {x.run.execution_id}", handle=x.launched.handle,
                       log_uri=x.launched.log_uri)


CHUNK_OPS = 200       # writes per batched dequeue commit (~40 instances; Firestore takes 500)
FIRST_CHUNK_OPS = 25  # the first batches are smaller: (~5, 10, 20 instances) launches start sooner
SUBMITTED_BATCH = 50  # launched executions recorded per batched commit


@dataclass
class _Dequeue:
    """One instance on its way out of the queue: what it needs, then its planned commit."""

    run: m.Run
    wf: Workflow
    policy: m.Policy
    sizes: dict[str, int]
    slots: list[str] = field(default_factory=list)
    applied: Applied | None = None
    ops: list[Op] = field(default_factory=list)

    def plan(self, styx: StyxService, slots: list[str], now: datetime) -> None:
        """Dequeue (claiming ``slots``: pool slots, held until the end, and a submission token) and
        submit, in one commit guarded by the next event id."""
        execution_id = f"{slug(self.run.workflow)}-{slug(self.run.parameter)}-{self.run.counter + 2}"
        held = tuple(s for s in slots if not s.startswith(RATE_PREFIX))
        tokens = [s[len(RATE_PREFIX):].rsplit("#", 1) for s in slots if s.startswith(RATE_PREFIX)]
        events = [m.Event(m.On.DEQUEUE, "dequeued", slots=held),
                  m.Event(m.On.SUBMIT, f"submitting {execution_id}", execution_id=execution_id,
                          image=self.wf.spec.image)]
        extra = [op for minute, n in tokens for op in StyxRepository.rate_ops(minute, int(n), self.run.id, now)]
        self.slots = slots
        self.applied, self.ops = styx.plan(self.run, events, now, self.policy, extra)


@dataclass(frozen=True)
class _Launch:
    run: m.Run
    wf: Workflow
    policy: m.Policy
    launched: Launched


class _Claims:
    """The pools one dequeue stage draws slots from, shared by its threads.

    Each pool's used slots are read once (and again after a conflict); ``held`` are the slots this
    tick's threads have claimed or are committing, so two threads never pick the same one. A commit
    that fails gives its slots back. Every dequeue also takes a token of the minute's submission rate
    (pool ``rate.<minute>``, documents in ``styx_rate``): other ticks' tokens count, so the rate is
    global; two ticks picking the same token make one commit fail, and it looks again.
    """

    def __init__(self, repo: StyxRepository, minute: str, rate: int) -> None:
        self.repo = repo
        self.rate_pool = RATE_PREFIX + minute
        self.minute = minute
        self.rate = rate
        self.pools: dict[str, Pool] = {}
        self.held: dict[str, set[int]] = defaultdict(set)
        self.lock = threading.Lock()

    @property
    def exhausted(self) -> bool:
        """No submission token of this minute is left (as far as this tick knows)."""
        pool = self.pools.get(self.rate_pool)
        return pool is not None and len(pool.used | self.held[self.rate_pool]) >= self.rate

    def _load(self, name: str, size: int) -> Pool:
        used = self.repo.used_rate(self.minute) if name == self.rate_pool else self.repo.used_slots(name)
        return Pool(name, size, frozenset(used))

    def reserve(self, sizes: dict[str, int], refresh: bool = False) -> list[str] | None:
        """A submission token and one free slot in each pool (name -> size); None if one is full."""
        with self.lock:
            wanted = {self.rate_pool: self.rate, **sizes}
            for name, size in wanted.items():
                if refresh or name not in self.pools:
                    self.pools[name] = self._load(name, size)
            slots = _choose([self.pools[name] for name in wanted], self.held)
            if slots is None:
                return None
            for s in slots:
                pool, n = s.rsplit("#", 1)
                self.held[pool].add(int(n))
            return slots

    def release(self, slots: list[str]) -> None:
        """The commit that claimed ``slots`` failed: they (and the token) are free again."""
        with self.lock:
            for s in slots:
                pool, n = s.rsplit("#", 1)
                self.held[pool].discard(int(n))


def _choose(pools: list[Pool], taken: dict[str, set[int]]) -> list[str] | None:
    out = []
    for p in pools:
        free = [n for n in p.free() if n not in taken.get(p.name, set())]
        if not free:
            return None
        # A random free slot: two ticks racing rarely pick the same one (a collision costs a retry).
        out.append(slot_id(p.name, random.choice(free[:32])))
    return out


def tick(services: Services, now: datetime | None = None, budget: float = 45.0) -> TickReport:
    """Run one tick with the process's launcher (what the scheduler's function and the API call)."""
    return Tick(services).run(now or services.clock.now(), budget)
