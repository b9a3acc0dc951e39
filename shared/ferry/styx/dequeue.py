"""The tick's last stage: dequeue the QUEUED instances due and launch them.

Gates are checked in the tick's thread pool. Slots are chosen in due order (``slots.Claims``); the
dequeue+submit commits of up to ``CHUNK_OPS`` writes go out as one batched commit, and their launches
start in the pool as soon as it lands; the ``submitted`` commits are batched the same way. A batch is
atomic: when another writer got to one of its instances (or slots) first, nothing of it is written and
each of its instances is committed on its own (the loser of a race moves on). So a Firestore commit is
spent per ~40 instances, not two per instance.
"""

from __future__ import annotations

import hashlib
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ferry import log
from ferry.domain.manifests import Workflow
from ferry.errors import Conflict, FerryError
from ferry.store.base import Op
from ferry.styx import machine as m
from ferry.styx.launchers import Launched, Throttled
from ferry.styx.repository import StyxRepository, queue_of
from ferry.styx.scheduling import policy_of
from ferry.styx.service import Applied, StyxService, slug
from ferry.styx.slots import GLOBAL_POOL, Claims, effective_rate, held_and_tokens

if TYPE_CHECKING:
    from ferry.styx.stages import TickReport, TickRun

logger = log.get("styx.tick")

CHUNK_OPS = 200       # writes per batched dequeue commit (~40 instances; Firestore takes 500)
FIRST_CHUNK_OPS = 25  # the first batches are smaller: (~5, 10, 20 instances) launches start sooner
SUBMITTED_BATCH = 50  # launched executions recorded per batched commit
THROTTLED_DELAY = timedelta(seconds=60)  # a launch the platform refused for its quota waits this long
PROBE = 25            # due instances read in age order first: fewer means that is all of them
TEAMS_TTL = 300.0     # seconds a process keeps the list of teams (styx_teams) between ticks
MIN_EXAMINED = 50     # examined per tick when the queue is read per team, even with no token left
ROUNDS = 4            # rounds of per-team reads per tick


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
        execution_id = execution_id_of(self.run, self.run.counter + 2)
        held, tokens = held_and_tokens(slots)
        events = [m.Dequeue("dequeued", slots=held),
                  m.Submit(f"submitting {execution_id}", execution_id=execution_id, image=self.wf.spec.image)]
        extra = [op for minute, n in tokens for op in StyxRepository.rate_ops(minute, n, self.run.id, now)]
        self.slots = slots
        self.applied, self.ops = styx.plan(self.run, events, now, self.policy, extra)


@dataclass(frozen=True)
class _Launch:
    run: m.Run
    wf: Workflow
    policy: m.Policy
    launched: Launched


def execution_id_of(run: m.Run, submit_counter: int) -> str:
    """The id of the execution a ``submit`` event starts: the instance and that event's number in its
    log, so one per (instance, try) across all its triggers, and fixed in the dequeue commit before the
    launch — a tick that finds the submission record lost asks the launcher for exactly this id."""
    return f"{slug(run.workflow)}-{slug(run.parameter)}-{submit_counter}"


class DequeueStage:
    """One tick's dequeue stage (its thread pool, budget and workflow cache are the tick's)."""

    def __init__(self, tick: TickRun, report: TickReport) -> None:
        self.tick = tick
        self.styx = tick.styx
        self.store = tick.store
        self.report = report
        self.claims: Claims | None = None
        self.throttled = False  # a launch was refused for a quota: no more launches this tick

    def run(self, now: datetime) -> None:
        tick, report = self.tick, self.report
        minute = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
        rate = effective_rate(tick.limits.submissions_per_minute, tick.repo.throttle(), minute)
        claims = self.claims = Claims(tick.repo, minute, rate)
        queued = self.candidates(now, claims)
        if not queued:
            return
        wfs = tick.workflows({r.workflow for r in queued})
        queued = fair_order(queued, lambda r: r.team or getattr(getattr(wfs.get(r.workflow), "metadata", None),
                                                                "owner", None) or "", salt=minute)
        resource_names = sorted({res for wf in wfs.values() if wf for res in wf.spec.resources})
        resources = tick.manifests.get_many("Resource", resource_names) if resource_names else {}
        tick.repo.expire_rate(minute)
        admitted = tick.executor.map(lambda run: self._admit(run, wfs.get(run.workflow), resources, now), queued)
        launches: list[Future[_Launch | None]] = []
        chunk: list[_Dequeue] = []
        chunk_ops = FIRST_CHUNK_OPS  # a small first batch, so the first launches start early
        for item in admitted:
            if item is None:
                continue
            if not tick.in_budget(report):
                break
            if self.throttled:
                report.rate_limited = True
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
                launches += self._dequeue_chunk(chunk, claims, now)
                chunk, chunk_ops = [], min(2 * chunk_ops, CHUNK_OPS)
        if chunk:
            launches += self._dequeue_chunk(chunk, claims, now)
        done: list[_Launch] = []
        for f in as_completed(launches):
            result = f.result()
            if result is not None:
                done.append(result)
            if len(done) >= SUBMITTED_BATCH:
                self.record_submitted(done, now)
                done = []
        self.record_submitted(done, now)

    def candidates(self, now: datetime, claims: Claims) -> list[m.Run]:
        """The QUEUED instances due that this tick examines — never one team's backlog alone.

        A probe of the oldest due (``PROBE``) holds everything due when it is not full. When it is,
        one team's backlog could hide the rest, so the queue is read per team (``styx_teams``, and
        the teams in the probe) in rounds: each team with due work gets an equal share of what this
        tick can submit (the minute's submission tokens left), and the teams that had more than their
        share share what is left in the next round. Teams' scheduled work first; their backfills get
        what is left (``repository.queue_of``). Reads stay near what can be submitted plus one a team:
        a team's 3,000 due instances take their share, another team's 10 theirs."""
        repo, limits = self.tick.repo, self.tick.limits
        probe = repo.queued_due(now, min(PROBE, limits.queued))
        if len(probe) < min(PROBE, limits.queued):
            return probe
        teams = sorted(set(self._teams()) | {r.team for r in probe if r.team}
                       | {t for t in self.tick.triggered_teams if t})
        want = min(limits.queued, max(claims.tokens_left(), MIN_EXAMINED))
        found = self._rounds([queue_of(t, backfill=False) for t in teams], want, now)
        if len(found) < want:
            found += self._rounds([queue_of(t, backfill=True) for t in teams], want - len(found), now)
        seen = {r.id for r in found}
        # instances without a team (triggered before teams were recorded) are only in the probe
        return found + [r for r in probe if r.id not in seen and not r.team]

    def _teams(self) -> list[str]:
        """The teams that own workflows, read at most every ``TEAMS_TTL`` seconds per process (a team
        new since then is found by the probe, or by the natural triggers of this tick)."""
        store = self.tick.repo.store
        at, teams = _TEAMS.get(store, (0.0, []))
        if time.monotonic() - at > TEAMS_TTL:
            teams = self.tick.repo.teams()
            _TEAMS[store] = (time.monotonic(), teams)
        return teams

    def _rounds(self, queues: list[str], want: int, now: datetime) -> list[m.Run]:
        """Up to about ``want`` due instances of ``queues``, shared equally among the queues that
        have them (a queue short of its share leaves the rest to the others)."""
        repo = self.tick.repo
        got: dict[str, list[m.Run]] = {q: [] for q in queues}
        asked: dict[str, int] = dict.fromkeys(queues, 0)
        active = list(queues)
        for _ in range(ROUNDS):
            if not active or not self.tick.in_budget(self.report):
                break
            examined = sum(len(v) for v in got.values())
            share = max(1, -(-(want - examined) // len(active)))
            for q in active:
                asked[q] += share
            for q, page in self.tick.executor.map(lambda q: (q, repo.queued_due_in(q, now, asked[q])), active):
                got[q] = page
            active = [q for q in active if len(got[q]) >= asked[q]]  # these may have more
            if sum(len(v) for v in got.values()) >= want:
                break
        return [r for rs in got.values() for r in rs]

    def _admit(self, run: m.Run, wf: Workflow | None, resources: dict[str, Any], now: datetime) -> _Dequeue | None:
        """Whether ``run`` may be dequeued now (halting it if its workflow is gone or disabled, sending
        it back to wait if an upstream partition has not landed); the pools it needs if so."""
        tick, report = self.tick, self.report
        if run.state != m.State.QUEUED or not tick.in_budget(report):
            return None
        try:
            if wf is None:
                tick.apply(run, m.Halt("workflow deleted"), now, m.Policy(), None)
                return None
            policy = policy_of(wf.spec)
            if not wf.spec.enabled and run.trigger and run.trigger.type == "natural":
                tick.apply(run, m.Halt("workflow disabled"), now, policy, wf)
                return None
            if wf.spec.depends_on and not (run.trigger and run.trigger.ignore_deps):
                missing = self.styx.gate(wf, run.parameter)
                if missing:
                    report.add("gated")
                    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
                    tick.apply(run, m.RetryAfter(f"waiting for upstream partitions: {shown}",
                                            delay=tick.limits.gate_recheck), now, policy, wf)
                    return None
        except Conflict:
            report.add("conflicts")
            return None
        except Exception as exc:  # this instance's (its gate could not be read, a bug): it waits, the rest go on
            report.add("errors")
            log_failure(logger, f"dequeue of {run.id} failed", exc)
            try:
                tick.apply(run, m.RetryAfter(f"not dequeued: {describe(exc)}", delay=tick.limits.gate_recheck),
                           now, policy_of(wf.spec) if wf else m.Policy(), wf)
            except Exception as again:
                log_failure(logger, f"recording the failed dequeue of {run.id} failed", again)
            return None
        sizes = {GLOBAL_POOL: tick.limits.max_active}
        for res in wf.spec.resources:
            rec = resources.get(res)
            sizes[f"resource.{res}"] = rec.manifest["spec"]["concurrency"] if rec else 0
        return _Dequeue(run, wf, policy, sizes)

    def _dequeue_chunk(self, chunk: list[_Dequeue], claims: Claims, now: datetime) -> list[Future[_Launch | None]]:
        """Commit a chunk of dequeues in one batch (each on its own after a conflict); launch the ones
        committed, within their lease (from before the commit). Returns the launches under way."""
        leased = time.monotonic() + self.tick.lease.total_seconds()
        try:
            self.store.write([op for d in chunk for op in d.ops])
        except Conflict:
            self.report.add("conflicts")
            for d in chunk:
                claims.release(d.slots)
            committed = [d for d in chunk if self._dequeue_alone(d, claims, now)]
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
            self.report.add("dequeued")
            out.append(self.tick.executor.submit(self.launch, d.applied.run, d.wf, now, leased))
        return out

    def _dequeue_alone(self, d: _Dequeue, claims: Claims, now: datetime) -> bool:
        """Commit one dequeue; after a conflict, look again. False if it is not ours to launch."""
        report = self.report
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
                self.store.write(d.ops)
                return True
            except Conflict:
                claims.release(slots)
                report.add("conflicts")
                fresh = self.tick.repo.get(d.run.workflow, d.run.parameter)
                if fresh is None or fresh.state != m.State.QUEUED or fresh.counter != d.run.counter:
                    return False  # another tick took it
                # a slot was taken under us: look at the pools again
            except BaseException:
                claims.release(slots)
                raise
        return False

    def launch(self, run: m.Run, wf: Workflow, now: datetime, leased: float) -> _Launch | None:
        """Start the execution; the ``submitted`` commit is left to the caller (batched).

        ``leased``: the monotonic instant after which this tick no longer launches it (it stalled: a
        later tick may be recovering it; the instance is left SUBMITTING for that tick).

        Any error of this one launch (the platform refusing it, an env name the OS rejects, a bug) is
        this instance's: recorded as its ``runError`` (shown in its timeline), the others go on."""
        policy = policy_of(wf.spec)
        assert run.execution_id
        if time.monotonic() >= leased:
            self.report.add("lease_expired")
            log.event(logger, log.WARNING, f"{run.workflow} {run.parameter}: not launching {run.execution_id}, "
                      "this tick stalled past its lease (a later tick looks for it and launches it)",
                      labels={"workflow": run.workflow, "parameter": run.parameter})
            return None
        try:
            if self.throttled:  # a launch of this tick was refused for a quota: do not ask again now
                raise Throttled("not launched: the platform refused another launch of this tick for its quota")
            launched = self.styx.launcher.launch(self.styx.launch_spec(wf, run, run.execution_id))
        except Throttled as exc:
            self._requeue(run, wf, policy, exc, now)
            return None
        except Exception as exc:
            self.report.add("launch_failed")
            log_failure(logger, f"launch of {run.execution_id} failed", exc)
            try:
                self.tick.apply(run, m.RunError(f"launch failed: {describe(exc)}"), now, policy, wf)
            except Conflict:
                self.report.add("conflicts")
            except Exception as again:
                log_failure(logger, f"recording the failed launch of {run.execution_id} failed", again)
            return None
        return _Launch(run, wf, policy, launched)

    def _requeue(self, run: m.Run, wf: Workflow, policy: m.Policy, exc: Throttled, now: datetime) -> None:
        """The platform refused the launch for its quota and started nothing: the instance goes back
        to the queue (no try spent, slots released), and this tick launches no more (``stop``). A request
        rate exceeded (``slow_down``): the rate of the next minutes slows down (``slots.effective_rate``)."""
        self.report.add("throttled")
        first = exc.slow_down and not self.throttled
        self.throttled = self.throttled or exc.stop
        log.event(logger, log.WARNING, f"launch of {run.execution_id} refused for a quota; requeued: {exc.message}",
                  labels={"workflow": run.workflow, "parameter": run.parameter})
        try:
            self.tick.apply(run, m.Requeue(f"platform quota: {exc.message}; requeued, no try spent",
                                           delay=THROTTLED_DELAY), now, policy, wf)
        except Conflict:
            self.report.add("conflicts")
        except Exception as again:
            log_failure(logger, f"requeueing {run.execution_id} failed", again)
        if first:
            minute = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
            used = self.claims.used() if self.claims else 0
            try:
                self.tick.repo.record_throttle(minute, max(1, used // 2), now)
            except Exception as again:
                log_failure(logger, "recording the 429 failed", again)

    def record_submitted(self, done: list[_Launch], now: datetime) -> None:
        """Record launched executions as SUBMITTED: one batch, or one by one after a conflict."""
        if not done:
            return
        report = self.report
        planned = [(x, *self.styx.plan(x.run, _submitted_event(x), now, x.policy)) for x in done]
        try:
            self.store.write([op for _, _, ops in planned for op in ops])
        except Conflict:
            report.add("conflicts")
            for x in done:
                try:
                    self.tick.apply(x.run, _submitted_event(x), now, x.policy, x.wf)
                    report.add("submitted")
                except Conflict:
                    report.add("conflicts")
                    self._lost_race(x)
                except Exception as exc:
                    report.add("errors")
                    log_failure(logger, f"recording the launch of {x.run.execution_id} failed", exc)
            return
        for x, applied, _ in planned:
            self.styx.logged(applied)
            self.styx.carry_out(applied, x.wf, now)
        report.add("submitted", len(done))

    def _lost_race(self, x: _Launch) -> None:
        """Our ``submitted`` commit lost: the instance changed since we read it. Cancel what we launched
        only if the instance has left that execution (halted, say); if another tick adopted or
        relaunched the same execution id (we stalled past our lease), it is the instance's execution:
        leave it running. Decided on a fresh read, never on what this tick read before it stalled."""
        fresh = self.tick.repo.get(x.run.workflow, x.run.parameter)
        if fresh is not None and fresh.execution_id == x.run.execution_id and fresh.state in m.EXECUTING:
            self.report.add("left_to_others")
            return
        self._cancel(x)

    def _cancel(self, x: _Launch) -> None:
        try:
            self.styx.launcher.cancel(x.launched.handle)
        except Exception as exc:
            log_failure(logger, f"cancel of {x.run.execution_id} failed", exc)


_TEAMS: weakref.WeakKeyDictionary[Any, tuple[float, list[str]]] = weakref.WeakKeyDictionary()


def fair_order(runs: Sequence[m.Run], team_of: Callable[[m.Run], str], salt: str = "") -> list[m.Run]:
    """The order a tick hands out submission tokens and slots: scheduled work before backfills (a
    backfill gets the capacity left), and within each, one instance per team in turn (round-robin;
    a team's own oldest due first). The teams' turn order is shuffled by ``salt`` (the tick's minute),
    so when there are more teams than tokens no team is always last."""
    def rr(group: list[m.Run]) -> list[m.Run]:
        by_team: dict[str, list[m.Run]] = {}
        for r in sorted(group, key=lambda r: (r.due_at or datetime.min.replace(tzinfo=UTC), r.id)):
            by_team.setdefault(team_of(r), []).append(r)
        lanes = [by_team[t] for t in sorted(by_team, key=lambda t: hashlib.sha256(f"{salt}|{t}".encode()).digest())]
        return [lane[i] for i in range(max((len(x) for x in lanes), default=0)) for lane in lanes if i < len(lane)]
    scheduled = [r for r in runs if not r.backfill]
    return rr(scheduled) + rr([r for r in runs if r.backfill])


def _submitted_event(x: _Launch) -> m.Event:
    return m.Submitted(f"submitted {x.run.execution_id}", handle=x.launched.handle, log_uri=x.launched.log_uri)


def describe(exc: BaseException) -> str:
    """An error as an instance's timeline shows it: Ferry's own message, else the exception's type too."""
    return exc.message if isinstance(exc, FerryError) else f"{type(exc).__name__}: {exc}"


def log_failure(lg: logging.Logger, what: str, exc: Exception) -> None:
    """Log one instance's failure: a Ferry error as a warning, anything else with its stack trace."""
    if isinstance(exc, FerryError):
        lg.warning("%s: %s", what, exc.message)
    else:
        lg.error("%s: %s", what, describe(exc), exc_info=exc)
