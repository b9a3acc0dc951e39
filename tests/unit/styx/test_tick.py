"""The tick and execution control against the in-memory store and a fake launcher."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from ferry.errors import BadRequest, Conflict, NotFound, ValidationError
from ferry.styx import machine as m
from ferry.styx.repository import EVENTS, SLOTS, WORKFLOWS
from ferry.styx.tick import Tick, TickLimits

from .conftest import apply, resource, workflow

P = "2026-11-26T12"


def at(clock, hh: int, mm: int = 0, ss: int = 0) -> None:
    clock.set(clock.now().replace(hour=hh, minute=mm, second=ss))


def test_apply_stores_the_next_trigger_and_reapply_keeps_it(svc, clock) -> None:
    apply(svc, workflow("agg"))
    state = svc.store.get(WORKFLOWS, "agg")
    assert state["next_period"] == P and state["next_due"] == clock.now().replace(hour=13, minute=0, second=0)
    clock.advance(timedelta(hours=3))
    apply(svc, workflow("agg", env={"X": "1"}))  # not a timing change
    assert svc.store.get(WORKFLOWS, "agg")["next_period"] == P
    apply(svc, workflow("agg", env={"X": "1"}, enabled=False))
    assert "next_due" not in svc.store.get(WORKFLOWS, "agg")


def test_natural_trigger_launches_with_env_and_parameter(svc, clock, tick, launcher) -> None:
    apply(svc, workflow("agg", env={"MODE": "full", "FERRY_WORKFLOW": "user-value"}))
    at(clock, 12, 59)
    assert tick().triggered == 0 and not launcher.launched
    at(clock, 13, 0, 5)
    report = tick()
    assert report.triggered == 1 and report.submitted == 1
    spec = launcher.launched[0]
    assert spec.args == ["--p", P] and spec.command == ["python", "job.py"]
    assert spec.env["MODE"] == "full" and spec.env["FERRY_WORKFLOW"] == "agg"  # FERRY_* win
    assert spec.env["FERRY_PARAMETER"] == P and spec.env["FERRY_TRIGGER_TYPE"] == "natural"
    assert spec.env["FERRY_TRIES"] == "1" and spec.env["FERRY_EXECUTION_ID"] == spec.execution_id
    assert tick().triggered == 0  # the period fired once
    assert len(launcher.launched) == 1


def test_catch_up_triggers_each_missed_period(svc, clock, tick, launcher) -> None:
    apply(svc, workflow("agg"))
    at(clock, 16, 0, 1)
    assert tick().triggered == 4
    assert sorted(s.parameter for s in launcher.launched) == [f"2026-11-26T{h}" for h in (12, 13, 14, 15)]


def test_exit_20_then_0(svc, clock, tick, launcher, styx) -> None:
    apply(svc, workflow("agg"))
    at(clock, 13, 0, 5)
    tick()
    launcher.finish(launcher.launched[0], 20)
    tick()
    run = styx.instance("agg", P)
    assert run.state == m.State.QUEUED and run.spent == 0 and run.tries == 1
    assert run.due_at == clock.now() + timedelta(minutes=10)
    clock.advance(timedelta(minutes=9))
    tick()
    assert len(launcher.launched) == 1
    clock.advance(timedelta(minutes=1))
    tick()
    assert len(launcher.launched) == 2 and launcher.launched[1].env["FERRY_TRIES"] == "2"
    launcher.finish(launcher.launched[1], 0)
    tick()
    assert styx.instance("agg", P).state == m.State.DONE
    tl = styx.timeline("agg", P)["triggers"][0]
    assert [e["exit_code"] for e in tl["executions"]] == [20, 0]
    retry = tl["executions"][0]["statuses"][-1]
    assert retry["event"] == "retryAfter" and retry["delay_seconds"] == 600 and "no try spent" in retry["message"]


def test_exit_50_is_error_after_one_try(svc, clock, tick, launcher, styx) -> None:
    apply(svc, workflow("agg"))
    at(clock, 13, 0, 5)
    tick()
    launcher.finish(launcher.launched[0], 50)
    tick()
    run = styx.instance("agg", P)
    assert run.state == m.State.ERROR and run.tries == 1 and run.exit_code == 50


def test_exit_1_always_gives_up_after_max_tries_with_growing_delays(svc, clock, tick, launcher, styx) -> None:
    apply(svc, workflow("agg"))
    at(clock, 13, 0, 5)
    tick()
    for _ in range(10):
        running = launcher.running()
        if running:
            launcher.finish(running[0], 1)
        tick()
        clock.advance(timedelta(minutes=5))
    run = styx.instance("agg", P)
    assert run.state == m.State.ERROR and run.tries == 3 and len(launcher.launched) == 3
    statuses = [s for e in styx.timeline("agg", P)["triggers"][0]["executions"] for s in e["statuses"]]
    delays = [s["delay_seconds"] for s in statuses if s["event"] == "retryAfter"]
    assert len(delays) == 2 and delays[0] < delays[1]
    assert statuses[-1]["event"] == "stop"


def test_timeout_cancels_fails_and_retries(svc, clock, tick, launcher, styx) -> None:
    apply(svc, workflow("agg", timeout="PT10M"))
    at(clock, 13, 0, 5)
    tick()
    clock.advance(timedelta(minutes=5))
    tick()
    assert styx.instance("agg", P).state == m.State.RUNNING
    clock.advance(timedelta(minutes=6))
    report = tick()
    assert report.timed_out == 1 and launcher.cancelled == ["exec-1"]
    run = styx.instance("agg", P)
    assert run.state == m.State.QUEUED and run.spent == 1
    events = [e["event"] for e in styx.repo.events("agg", P)]
    assert events[-2:] == ["timeout", "retryAfter"]


def test_launch_failure_is_a_run_error(svc, clock, tick, launcher, styx) -> None:
    apply(svc, workflow("agg"))
    at(clock, 13, 0, 5)
    launcher.fail_next = "image not found"
    assert tick().launch_failed == 1
    run = styx.instance("agg", P)
    assert run.state == m.State.QUEUED and "image not found" in run.message


def test_resource_pool_limits_and_releases(svc, clock, tick, launcher, styx) -> None:
    apply(svc, resource("slots", 1), workflow("a", resources=["slots"]), workflow("b", resources=["slots"]))
    at(clock, 13, 0, 5)
    report = tick()
    assert report.submitted == 1 and report.waiting_for_slots == 1
    from ferry.styx import resources

    assert [u["usage"]["in_use"] for u in resources.listing(svc.store)] == [1]
    launcher.finish(launcher.launched[0], 0)
    tick()
    assert len(launcher.launched) == 2
    assert resources.one(svc.store, "slots")["usage"]["holders"] == [f"{launcher.launched[1].workflow}@2026-11-26T12"]
    launcher.finish(launcher.launched[1], 0)
    tick()
    assert svc.store.query(SLOTS) == []


def test_global_concurrency(svc, clock, tick, launcher) -> None:
    apply(svc, *(workflow(f"w{i}") for i in range(5)))
    at(clock, 13, 0, 5)
    assert tick(TickLimits(max_active=2)).submitted == 2
    assert len(launcher.running()) == 2


def test_missing_resource_is_a_validation_error_at_apply(svc) -> None:
    with pytest.raises(ValidationError) as err:
        apply(svc, workflow("a", resources=["nope"]))
    assert "nope" in str(err.value.details)
    assert svc.store.get(WORKFLOWS, "a") is None


def test_depends_on_waits_for_upstream_then_runs(svc, clock, tick, launcher, datamon, styx) -> None:
    apply(svc, {"apiVersion": "ferry/v1", "kind": "Endpoint", "metadata": {"name": "up", "owner": "team-a"},
                "spec": {"partitioning": "hourly"}},
          {"apiVersion": "ferry/v1", "kind": "Endpoint", "metadata": {"name": "down-out", "owner": "team-a"},
           "spec": {"partitioning": "hourly"}},
          workflow("down", depends_on=["up"], produces="down-out"))
    at(clock, 13, 0, 5)
    report = tick()
    assert report.gated == 1 and not launcher.launched
    assert "up 2026-11-26T12" in styx.instance("down", P).message
    datamon.partitions.add(("up", P))
    clock.advance(timedelta(minutes=1))
    tick()
    assert len(launcher.launched) == 1
    launcher.finish(launcher.launched[0], 0)
    tick()
    assert datamon.landings == [("down-out", P)]


def test_trigger_retry_halt_and_bad_inputs(svc, clock, tick, launcher, styx) -> None:
    apply(svc, workflow("agg"))
    now = clock.now()
    run = styx.trigger("agg", "2026-11-20T05", now, {"K": "V"})
    assert run.state == m.State.QUEUED and run.trigger.type == "adhoc"
    with pytest.raises(Conflict):
        styx.trigger("agg", "2026-11-20T05", now)
    with pytest.raises(NotFound):
        styx.trigger("nope", "2026-11-20T05", now)
    with pytest.raises(BadRequest):
        styx.trigger("agg", "2026-11-20", now)
    tick()
    assert launcher.launched[0].env["K"] == "V"
    halted = styx.halt("agg", "2026-11-20T05", now)
    assert halted.state == m.State.ERROR and launcher.cancelled == ["exec-1"]
    with pytest.raises(m.IllegalTransition) as err:
        styx.halt("agg", "2026-11-20T05", now)
    assert err.value.http_status == 409
    assert styx.retry("agg", "2026-11-20T05", now).state == m.State.QUEUED
    tick()
    assert len(launcher.launched) == 2


def test_disable_halts_natural_instances_and_delete_halts_all(svc, clock, tick, launcher, styx) -> None:
    apply(svc, workflow("agg"))
    at(clock, 13, 0, 5)
    tick()
    styx.trigger("agg", "2026-11-20T05", clock.now())
    apply(svc, workflow("agg", enabled=False))
    assert styx.instance("agg", P).state == m.State.ERROR
    assert styx.instance("agg", "2026-11-20T05").state == m.State.QUEUED
    svc.apply.delete("Workflow", "agg", clock.now())
    assert styx.instance("agg", "2026-11-20T05").state == m.State.ERROR
    assert svc.store.get(WORKFLOWS, "agg") is None


def test_event_log_is_contiguous(svc, clock, tick, launcher, styx) -> None:
    apply(svc, workflow("agg"))
    at(clock, 13, 0, 5)
    tick()
    launcher.finish(launcher.launched[0], 1)
    tick()
    events = styx.repo.events("agg", P)
    assert [e["counter"] for e in events] == list(range(1, len(events) + 1))
    assert styx.instance("agg", P).counter == len(events)
    assert [e["event"] for e in events] == ["triggerExecution", "dequeue", "submit", "submitted", "terminate",
                                            "retryAfter"]


def test_reads_grow_with_due_work_not_with_workflows(svc, clock, launcher, datamon) -> None:
    apply(svc, *(workflow(f"d{i:04d}", schedule="daily") for i in range(400)),
          *(workflow(f"h{i:02d}") for i in range(10)))
    at(clock, 13, 0, 5)
    before = svc.store.stats.snapshot()
    report = Tick(svc.styx, TickLimits()).run(clock.now())
    used = svc.store.stats.since(before)
    assert report.submitted == 10
    assert used["reads"] <= 5 * 10 + 10, used


def test_concurrent_ticks_launch_each_instance_once(svc, clock, launcher, datamon) -> None:
    apply(svc, resource("pool", 3), *(workflow(f"w{i}", resources=["pool"]) for i in range(8)))
    at(clock, 13, 0, 5)
    ticks = [Tick(svc.styx, TickLimits()) for _ in range(4)]
    threads = [threading.Thread(target=t.run, args=(clock.now(),)) for t in ticks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(launcher.launched) == 3
    assert len({s.workflow for s in launcher.launched}) == 3
    assert len(svc.store.query(SLOTS)) == 3 + 3  # 3 resource slots + 3 global slots
    assert all(len(svc.store.query(EVENTS)) > 0 for _ in [0])


def test_dequeue_commits_in_batches_and_a_race_in_a_batch_costs_only_its_loser(svc, clock, tick, launcher,
                                                                                 styx) -> None:
    apply(svc, resource("pool", 30), *(workflow(f"w{i:02d}", resources=["pool"]) for i in range(30)))
    at(clock, 13, 0, 5)
    real = svc.store.write
    dequeue_writes: list[int] = []

    def write(ops):  # the first dequeue batch: another writer halts w03 just before it commits
        ops = list(ops)
        if any(op.collection == SLOTS and op.kind == "create" for op in ops):
            dequeue_writes.append(len(ops))
            if len(dequeue_writes) == 1:
                styx.halt("w03", P, clock.now())
        return real(ops)
    svc.store.write = write  # type: ignore[method-assign]
    report = tick()
    assert report.dequeued == 29 and report.submitted == 29 and report.conflicts >= 1
    assert sorted(s.workflow for s in launcher.launched) == [f"w{i:02d}" for i in range(30) if i != 3]
    assert styx.instance("w03", P).state == m.State.ERROR
    holders = {d["instance"] for _, d in svc.store.query(SLOTS, limit=1000)}
    assert len(svc.store.query(SLOTS, limit=1000)) == 2 * 29 and not any(h.startswith("w03@") for h in holders)
    # the loser's batch (5 instances) fell back to one commit each; the rest went in batches
    assert len(dequeue_writes) < 15, dequeue_writes
    for i in range(30):
        events = styx.repo.events(f"w{i:02d}", P)
        assert [e["counter"] for e in events] == list(range(1, len(events) + 1))


def test_launch_results_are_recorded_in_batches_and_a_halt_meanwhile_cancels_the_execution(
        svc, clock, tick, launcher, styx) -> None:
    apply(svc, *(workflow(f"w{i:02d}") for i in range(10)))
    at(clock, 13, 0, 5)
    real = launcher.launch

    def launch(spec):  # w05 is halted while its execution starts
        out = real(spec)
        if spec.workflow == "w05":
            styx.halt("w05", P, clock.now())
        return out
    launcher.launch = launch  # type: ignore[method-assign]
    report = tick()
    assert len(launcher.launched) == 10 and report.submitted == 9
    assert styx.instance("w05", P).state == m.State.ERROR
    assert [s.workflow for s in launcher.launched].index("w05") + 1 == int(launcher.cancelled[-1].split("-")[1])
    assert all(styx.instance(f"w{i:02d}", P).state == m.State.SUBMITTED for i in range(10) if i != 5)
    assert svc.store.query(SLOTS, limit=100) and not any(
        d["instance"].startswith("w05@") for _, d in svc.store.query(SLOTS, limit=100))


def test_the_submission_rate_holds_per_minute_across_ticks(svc, clock, tick, launcher) -> None:
    from ferry.styx.repository import RATE

    apply(svc, *(workflow(f"w{i}") for i in range(7)))
    limits = TickLimits(max_active=100, submissions_per_minute=3)
    at(clock, 13, 0, 5)
    first = tick(limits)
    assert first.triggered == 7 and first.submitted == 3 and first.rate_limited
    at(clock, 13, 0, 40)  # another tick in the same minute: the minute's tokens are spent
    second = tick(limits)
    assert second.submitted == 0 and second.rate_limited and len(launcher.launched) == 3
    at(clock, 13, 1, 0)
    assert tick(limits).submitted == 3
    tokens = svc.store.query(RATE, limit=100)
    assert sorted(d["minute"] for _, d in tokens) == ["2026-11-26T13:01"] * 3  # 13:00's were deleted
    assert {d["instance"] for _, d in tokens} == {f"{s.workflow}@{P}" for s in launcher.launched[3:]}
    at(clock, 13, 2, 0)
    last = tick(limits)
    assert last.submitted == 1 and not last.rate_limited and len(launcher.launched) == 7


def test_overlapping_ticks_share_the_submission_rate(svc, clock, launcher, datamon) -> None:
    from ferry.styx.repository import RATE

    apply(svc, *(workflow(f"w{i}") for i in range(10)))
    at(clock, 13, 0, 5)
    ticks = [Tick(svc.styx, TickLimits(submissions_per_minute=4))
             for _ in range(4)]
    barrier = threading.Barrier(len(ticks))

    def run(t: Tick) -> None:
        barrier.wait()
        t.run(clock.now())
    threads = [threading.Thread(target=run, args=(t,)) for t in ticks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(launcher.launched) == 4 and len({s.workflow for s in launcher.launched}) == 4
    assert len(svc.store.query(RATE, limit=100)) == 4


# -- lost submissions and one instance's errors -------------------------------------------------------
def _lose_the_record(monkeypatch, launched: bool) -> None:
    """The next tick dies after its dequeue commit: after launching (``launched``) or before it."""
    from ferry.styx.dequeue import DequeueStage

    monkeypatch.setattr(DequeueStage, "record_submitted", lambda self, done, now: None)
    if not launched:
        monkeypatch.setattr(DequeueStage, "launch", lambda self, run, wf, now, leased: None)


def test_a_launched_execution_whose_record_was_lost_is_adopted_not_run_again(svc, clock, tick, launcher, styx,
                                                                              monkeypatch) -> None:
    apply(svc, workflow("agg"))
    styx.trigger("agg", P, clock.now())
    with monkeypatch.context() as mp:
        _lose_the_record(mp, launched=True)
        tick()
    run = styx.instance("agg", P)
    assert run.state == m.State.SUBMITTING and len(launcher.launched) == 1
    clock.advance(timedelta(minutes=1))
    assert tick().adopted == 0  # not lost yet: its tick may still be recording it
    clock.advance(timedelta(minutes=2))
    report = tick()
    assert report.adopted == 1 and report.resubmitted == 0
    run = styx.instance("agg", P)
    assert run.state in (m.State.SUBMITTED, m.State.RUNNING) and run.handle == "exec-1"
    assert run.tries == 1 and run.spent == 1 and len(launcher.launched) == 1
    launcher.finish(launcher.launched[0], 0)
    tick()
    assert styx.instance("agg", P).state == m.State.DONE
    events = [e["event"] for e in styx.repo.events("agg", P)]
    assert events.count("submit") == 1 and "runError" not in events
    assert not svc.store.query(SLOTS, [])


def test_an_execution_never_launched_is_launched_under_the_same_id_without_a_try(svc, clock, tick, launcher, styx,
                                                                                 monkeypatch) -> None:
    apply(svc, workflow("agg"))
    styx.trigger("agg", P, clock.now())
    with monkeypatch.context() as mp:
        _lose_the_record(mp, launched=False)
        tick()
    lost = styx.instance("agg", P)
    assert lost.state == m.State.SUBMITTING and not launcher.launched
    clock.advance(timedelta(minutes=3))
    report = tick()
    assert report.resubmitted == 1 and report.adopted == 0
    run = styx.instance("agg", P)
    assert run.state in (m.State.SUBMITTED, m.State.RUNNING)
    assert [s.execution_id for s in launcher.launched] == [lost.execution_id]
    assert run.tries == 1 and run.spent == 1
    timeline = styx.timeline("agg", P)["triggers"][0]["executions"]
    assert len(timeline) == 1 and [s["event"] for s in timeline[0]["statuses"]] == ["submit", "resubmit", "submitted"]
    clock.advance(timedelta(minutes=3))
    assert tick().resubmitted == 0 and len(launcher.launched) == 1  # recorded now: nothing lost any more


class _StallingLauncher:
    """The fake launcher whose first ``launch`` call hangs until the test lets it go (a tick stalled in
    its launch — SIGSTOP, a RunJob call that hangs): the others go through."""

    def __init__(self, launch) -> None:
        self.inner, self.stalled, self.go = launch, threading.Event(), threading.Event()
        self._first = True

    def launch(self, spec):
        if self._first:
            self._first = False
            self.stalled.set()
            assert self.go.wait(30)
        return self.inner(spec)


def test_a_stalled_tick_that_wakes_runs_nothing_twice_and_cancels_nothing(svc, clock, launcher, styx,
                                                                           monkeypatch) -> None:
    """23.4: tick A stalls inside its launch past the lost-submission window; tick B finds the execution
    not started and launches it again under its id; A wakes and its launch goes through. One execution,
    the instance keeps it (A's ``submitted`` commit loses and cancels nothing), one try."""
    apply(svc, workflow("agg"))
    styx.trigger("agg", P, clock.now())
    stalling = _StallingLauncher(launcher.launch)
    monkeypatch.setattr(launcher, "launch", stalling.launch)
    a_report: list = []
    a = threading.Thread(target=lambda: a_report.append(Tick(svc.styx, TickLimits(max_active=100)).run(clock.now())))
    a.start()
    assert stalling.stalled.wait(30)
    assert styx.instance("agg", P).state == m.State.SUBMITTING and not launcher.launched
    clock.advance(timedelta(minutes=3))
    b = Tick(svc.styx, TickLimits(max_active=100)).run(clock.now())
    assert b.resubmitted == 1 and len(launcher.launched) == 1
    stalling.go.set()
    a.join(30)
    assert a_report[0].left_to_others == 1 and a_report[0].submitted == 0
    assert len(launcher.launched) == 1 and launcher.cancelled == []
    run = styx.instance("agg", P)
    assert run.state in (m.State.SUBMITTED, m.State.RUNNING) and run.handle == "exec-1" and run.tries == 1
    launcher.finish(launcher.launched[0], 0)
    Tick(svc.styx, TickLimits(max_active=100)).run(clock.now())
    assert styx.instance("agg", P).state == m.State.DONE and len(launcher.launched) == 1


def test_a_tick_stalled_past_its_lease_launches_nothing_and_the_next_one_does(svc, clock, launcher, styx,
                                                                           monkeypatch) -> None:
    """A tick that wakes after its lease (half the lost-submission window) leaves the instance to the
    tick that recovers it, and that one only once the launcher says it never started."""
    import ferry.styx.dequeue as dq

    apply(svc, workflow("agg"))
    styx.trigger("agg", P, clock.now())
    real = dq.time.monotonic
    with monkeypatch.context() as mp:  # the tick "sleeps" 61 s between its dequeue commit and its launch
        original = dq.DequeueStage.launch

        def late(self, run, wf, now, leased):
            mp.setattr(dq.time, "monotonic", lambda: real() + 61)
            return original(self, run, wf, now, leased)
        mp.setattr(dq.DequeueStage, "launch", late)
        report = Tick(svc.styx, TickLimits(max_active=100)).run(clock.now())
    assert report.lease_expired == 1 and not launcher.launched
    clock.advance(timedelta(minutes=1))
    assert Tick(svc.styx, TickLimits(max_active=100)).run(clock.now()).resubmitted == 0  # not yet: it may be slow
    clock.advance(timedelta(minutes=2))
    assert Tick(svc.styx, TickLimits(max_active=100)).run(clock.now()).resubmitted == 1
    assert len(launcher.launched) == 1 and styx.instance("agg", P).tries == 1


def test_the_lost_submission_window_is_a_setting(monkeypatch) -> None:
    from ferry.config import Settings

    monkeypatch.setenv("FERRY_STYX_SUBMISSION_LOST_S", "5")
    limits = TickLimits.from_settings(Settings())
    assert limits.submission_lost == timedelta(seconds=5)


class _PickyLauncher:
    """The fake launcher, refusing env names as the OS does (``ValueError``, not a Ferry error)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def launch(self, spec):
        if any("=" in k for k in spec.env):
            raise ValueError("illegal environment variable name")
        return self.inner.launch(spec)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_one_instance_s_error_of_any_type_is_its_own_and_the_batch_goes_on(clock, launcher, datamon) -> None:
    """Regression: an env name ``A=B`` made ``launch`` raise ValueError, the tick 500ed every minute and an
    innocent instance of the same batch ran twice."""
    from ferry.bootstrap import in_memory

    svc = in_memory(clock, launcher=_PickyLauncher(launcher), datamon=datamon)
    styx = svc.styx
    apply(svc, workflow("agg"))
    styx.trigger("agg", "2026-11-26T10", clock.now(), env={"A=B": "x"})  # past any validation (stored before it)
    styx.trigger("agg", "2026-11-26T11", clock.now())
    report = Tick(svc.styx, TickLimits(max_active=100)).run(clock.now())
    assert report.launch_failed == 1 and report.submitted == 1
    bad, good = styx.instance("agg", "2026-11-26T10"), styx.instance("agg", "2026-11-26T11")
    assert bad.state == m.State.QUEUED and bad.tries == 1  # failed, retried later like any failure
    assert "launch failed: ValueError: illegal environment variable name" in bad.message
    statuses = styx.timeline("agg", "2026-11-26T10")["triggers"][0]["executions"][0]["statuses"]
    assert any("ValueError" in s["message"] for s in statuses if s["event"] == "runError")
    assert good.state == m.State.SUBMITTED and good.tries == 1
    clock.advance(timedelta(minutes=5))
    Tick(svc.styx, TickLimits(max_active=100)).run(clock.now())
    assert [s.parameter for s in launcher.launched] == ["2026-11-26T11"]  # launched once, never again
    assert styx.instance("agg", "2026-11-26T11").tries == 1


# -- fair queues (issue 23.8, 18.3) --------------------------------------------------------------------
def _queued_docs(workflow: str, team: str | None, n: int, due, backfill: str | None = None):
    from datetime import datetime

    from ferry.store.base import Op
    from ferry.styx.repository import INSTANCES, run_to_doc

    start = datetime(2010, 1, 1, tzinfo=due.tzinfo)
    trig = m.Trigger("backfill", backfill) if backfill else m.Trigger("natural", "natural")
    return [Op.set(INSTANCES, m.instance_id(workflow, p), run_to_doc(
        m.Run(workflow, p, state=m.State.QUEUED, counter=1, due_at=due, team=team, trigger=trig, backfill=backfill)))
        for p in ((start + timedelta(hours=i)).strftime("%Y-%m-%dT%H") for i in range(n))]


def test_another_teams_due_work_is_examined_behind_50k_queued_of_one_team(svc, clock, launcher, styx) -> None:
    """23.8: team-a has 50,000 queued instances, all due long ago and gated on a partition that never
    lands; team-b's instance, due now, is examined and submitted in the very next tick (in age order
    the tick examined only team-a's oldest 1,000, a tick after tick)."""
    apply(svc, {"apiVersion": "ferry/v1", "kind": "Endpoint", "metadata": {"name": "never", "owner": "team-a"},
                "spec": {"partitioning": "hourly"}},
          workflow("a-gated", owner="team-a", depends_on=["never"]), workflow("b-job", owner="team-b"))
    svc.store.write(_queued_docs("a-gated", "team-a", 50_000, clock.now() - timedelta(days=1)))
    styx.trigger("b-job", P, clock.now())
    report = Tick(svc.styx, TickLimits(max_active=100, queued=1000)).run(clock.now())
    assert [s.workflow for s in launcher.launched] == ["b-job"], report.to_dict()
    assert report.gated > 0  # team-a's due work is examined too, its share of the tick


def test_fair_order_takes_teams_in_turn_and_backfills_last() -> None:
    from datetime import UTC, datetime

    from ferry.styx.dequeue import fair_order

    t = datetime(2026, 1, 1, tzinfo=UTC)
    runs = ([m.Run(f"a{i}", P, team="a", due_at=t) for i in range(5)] + [m.Run("b0", P, team="b", due_at=t)]
            + [m.Run("bf", P, team="c", due_at=t - timedelta(days=1), backfill="bf-1")]
            + [m.Run("c0", P, team="c", due_at=t + timedelta(seconds=1))])
    for salt in ("2026-01-01T00:00", "2026-01-01T00:01", "x"):
        order = [r.workflow for r in fair_order(runs, lambda r: r.team or "", salt=salt)]
        assert sorted(order[:3]) == ["a0", "b0", "c0"]  # one of each team first, in a per-minute order
        assert order[3:] == ["a1", "a2", "a3", "a4", "bf"]  # then the rest of a; the backfill last
    firsts = {fair_order(runs, lambda r: r.team or "", salt=f"m{i}")[0].team for i in range(30)}
    assert firsts == {"a", "b", "c"}  # no team is always first (or always last)


def test_one_teams_3000_due_do_not_hold_back_another_teams_10(svc, clock, launcher) -> None:
    """18.3: with the minute's quota (100 submissions) far below what is due, each team gets its turn:
    team-b's 10 are all submitted in the first tick, team-a's 3,000 take their share."""
    apply(svc, workflow("a-big", owner="team-a"), workflow("b-small", owner="team-b"))
    svc.store.write(_queued_docs("a-big", "team-a", 3000, clock.now() - timedelta(seconds=1)))
    svc.store.write(_queued_docs("b-small", "team-b", 10, clock.now()))
    before = svc.store.stats.snapshot()
    report = Tick(svc.styx, TickLimits(max_active=1000, submissions_per_minute=100)).run(clock.now())
    reads = svc.store.stats.since(before)["reads"]
    by = {w: sum(1 for s in launcher.launched if s.workflow == w) for w in ("a-big", "b-small")}
    assert report.submitted == 100 and by == {"a-big": 90, "b-small": 10}, (by, report.to_dict())
    assert reads < 500, reads  # what can be submitted plus a probe, not the 3,010 queued


def test_scheduled_instances_go_before_backfills(svc, clock, launcher) -> None:
    apply(svc, workflow("a-bf", owner="team-a"), workflow("a-sched", owner="team-a"))
    svc.store.write(_queued_docs("a-bf", "team-a", 200, clock.now() - timedelta(days=1), backfill="bf-x"))
    svc.store.write(_queued_docs("a-sched", "team-a", 30, clock.now()))
    Tick(svc.styx, TickLimits(max_active=1000, submissions_per_minute=40)).run(clock.now())
    assert [s.workflow for s in launcher.launched[:30]] == ["a-sched"] * 30
    assert len(launcher.launched) == 40


def test_the_smear_delays_each_workflows_natural_triggers_by_its_own_fixed_offset(svc, clock) -> None:
    from ferry.styx.hooks import trigger_state
    from ferry.styx.scheduling import smear

    assert smear("x", 0) == timedelta(0)
    offsets = {smear(f"wf-{i}", 600) for i in range(200)}
    assert all(timedelta(0) <= o < timedelta(seconds=600) for o in offsets) and len(offsets) > 150
    from ferry.domain.manifests import Workflow

    wf = Workflow.model_validate(workflow("agg"))
    plain, smeared = trigger_state(wf, clock.now()), trigger_state(wf, clock.now(), 600)
    assert smeared["next_due"] - plain["next_due"] == smear("agg", 600)
