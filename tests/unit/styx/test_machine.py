"""The state machine, exhaustively: every (state, event) pair, legal and illegal, and the exit-code rules."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ferry.styx import machine as m
from ferry.styx.machine import On, State

NOW = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
POLICY = m.Policy(max_tries=3, initial_backoff=timedelta(minutes=1), max_backoff=timedelta(minutes=10),
                  timeout=timedelta(minutes=30))

EXPECTED: dict[tuple[State, On], State] = {
    (State.NEW, On.TRIGGER_EXECUTION): State.QUEUED,
    (State.DONE, On.TRIGGER_EXECUTION): State.QUEUED,
    (State.ERROR, On.TRIGGER_EXECUTION): State.QUEUED,
    (State.QUEUED, On.DEQUEUE): State.PREPARE,
    (State.PREPARE, On.SUBMIT): State.SUBMITTING,
    (State.SUBMITTING, On.SUBMITTED): State.SUBMITTED,
    (State.SUBMITTED, On.STARTED): State.RUNNING,
    (State.SUBMITTED, On.TERMINATE): State.TERMINATED,
    (State.RUNNING, On.TERMINATE): State.TERMINATED,
    (State.PREPARE, On.RUN_ERROR): State.FAILED,
    (State.SUBMITTING, On.RUN_ERROR): State.FAILED,
    (State.SUBMITTED, On.RUN_ERROR): State.FAILED,
    (State.RUNNING, On.RUN_ERROR): State.FAILED,
    (State.TERMINATED, On.SUCCESS): State.DONE,
    (State.QUEUED, On.RETRY_AFTER): State.QUEUED,
    (State.TERMINATED, On.RETRY_AFTER): State.QUEUED,
    (State.FAILED, On.RETRY_AFTER): State.QUEUED,
    (State.DONE, On.RETRY_AFTER): State.QUEUED,
    (State.ERROR, On.RETRY_AFTER): State.QUEUED,
    (State.TERMINATED, On.STOP): State.ERROR,
    (State.FAILED, On.STOP): State.ERROR,
    (State.SUBMITTED, On.TIMEOUT): State.FAILED,
    (State.RUNNING, On.TIMEOUT): State.FAILED,
    **{(s, On.HALT): State.ERROR for s in m.ACTIVE},
}


def run_in(state: State, **kw) -> m.Run:
    base = m.Run("wf", "2026-11-26T14", state=state, counter=5, tries=1, spent=1,
                 trigger=m.Trigger("natural", "natural-2026-11-26T14"))
    if state in m.HOLDING:
        base = replace(base, slots=("global#0", "resource.bq#1"))
    if state in m.EXECUTING:
        base = replace(base, execution_id="wf-x-7", handle="h-7")
    return replace(base, **kw)


def event_for(on: On) -> m.Event:
    return {
        On.TRIGGER_EXECUTION: m.Event(on, trigger=m.Trigger("adhoc", "a1", {"K": "V"})),
        On.DEQUEUE: m.Event(on, slots=("global#3",)),
        On.SUBMIT: m.Event(on, execution_id="wf-x-8", image="img"),
        On.SUBMITTED: m.Event(on, handle="h-8", log_uri="file:///log"),
        On.TERMINATE: m.Event(on, exit_code=0),
        On.RETRY_AFTER: m.Event(on, delay=timedelta(minutes=2)),
    }.get(on, m.Event(on))


@pytest.mark.parametrize(("state", "on"), list(itertools.product(State, On)), ids=lambda v: str(v))
def test_every_pair(state: State, on: On) -> None:
    run = run_in(state)
    expected = EXPECTED.get((state, on))
    if expected is None:
        with pytest.raises(m.IllegalTransition) as err:
            m.transition(run, event_for(on), NOW, POLICY)
        assert err.value.http_status == 409
        return
    step = m.transition(run, event_for(on), NOW, POLICY)
    assert step.run.state == expected
    assert step.run.counter == run.counter + 1
    assert step.run.updated_at == NOW


def test_every_pair_is_covered_by_the_table() -> None:
    legal = {(s, on) for on, states in m.LEGAL.items() for s in states}
    assert legal == set(EXPECTED)


def states(adv: m.Advance) -> list[tuple[str, str]]:
    return [(str(e.on), str(r.state)) for e, r in adv.log]


def running(**kw) -> m.Run:
    return run_in(State.RUNNING, **kw)


def test_exit_0_is_done_releases_and_lands() -> None:
    adv = m.advance(running(lifetime_slot="backfill.b#0"), m.Event(On.TERMINATE, exit_code=0), NOW, POLICY)
    assert states(adv) == [("terminate", "TERMINATED"), ("success", "DONE")]
    assert m.Release(("global#0", "resource.bq#1", "backfill.b#0")) in adv.decisions
    assert m.Land() in adv.decisions
    assert adv.run.slots == () and adv.run.lifetime_slot is None and not adv.run.active


def test_exit_20_retries_after_ten_minutes_without_spending_a_try() -> None:
    run = running(tries=3, spent=3)  # max_tries is 3: a spent try would give up
    adv = m.advance(run, m.Event(On.TERMINATE, exit_code=20), NOW, POLICY)
    assert states(adv) == [("terminate", "TERMINATED"), ("retryAfter", "QUEUED")]
    assert adv.run.due_at == NOW + timedelta(minutes=10)
    assert adv.run.spent == 2 and adv.run.tries == 3
    assert adv.log[-1][0].delay == timedelta(minutes=10)
    assert m.Release(("global#0", "resource.bq#1")) in adv.decisions


def test_exit_50_stops_at_once() -> None:
    adv = m.advance(running(spent=1), m.Event(On.TERMINATE, exit_code=50), NOW, POLICY)
    assert states(adv) == [("terminate", "TERMINATED"), ("stop", "ERROR")]
    assert adv.run.exit_code == 50


@pytest.mark.parametrize("code", [1, 2, 137, -1])
def test_other_exit_codes_back_off_until_max_tries(code: int) -> None:
    run = running(spent=1, tries=1)
    adv = m.advance(run, m.Event(On.TERMINATE, exit_code=code), NOW, POLICY)
    assert states(adv)[-1] == ("retryAfter", "QUEUED")
    last = m.advance(running(spent=3, tries=3), m.Event(On.TERMINATE, exit_code=code), NOW, POLICY)
    assert states(last) == [("terminate", "TERMINATED"), ("stop", "ERROR")]
    assert "gave up after 3 of 3 tries" in last.run.message


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    policy = m.Policy(max_tries=20, initial_backoff=timedelta(minutes=1), max_backoff=timedelta(minutes=45))
    delays = [m.backoff(running(spent=n, tries=n), policy) for n in range(1, 9)]
    for n, d in enumerate(delays[:6], start=1):
        base = timedelta(minutes=2 ** (n - 1))
        assert base * 0.8 <= d <= base * 1.2
    assert all(a < b for a, b in zip(delays[:6], delays[1:6], strict=False))
    assert delays[-1] == timedelta(minutes=45)
    assert m.backoff(running(spent=2, tries=2), policy) == m.backoff(running(spent=2, tries=2), policy)  # pure


def test_run_error_and_timeout_fail_then_retry() -> None:
    adv = m.advance(running(), m.Event(On.RUN_ERROR, "image not found"), NOW, POLICY)
    assert states(adv) == [("runError", "FAILED"), ("retryAfter", "QUEUED")]
    adv = m.advance(running(), m.Event(On.TIMEOUT), NOW, POLICY)
    assert states(adv) == [("timeout", "FAILED"), ("retryAfter", "QUEUED")]
    assert m.Cancel("wf-x-7", "h-7") in adv.decisions
    assert "timeout" in adv.log[0][1].message


def test_submit_spends_a_try_and_asks_for_a_launch() -> None:
    step = m.transition(run_in(State.PREPARE, tries=1, spent=1), event_for(On.SUBMIT), NOW, POLICY)
    assert step.run.tries == 2 and step.run.spent == 2
    assert step.decisions == (m.Launch("wf-x-8"),)


def test_submitted_sets_the_deadline() -> None:
    step = m.transition(run_in(State.SUBMITTING), event_for(On.SUBMITTED), NOW, POLICY)
    assert step.run.deadline == NOW + timedelta(minutes=30)
    assert step.run.handle == "h-8" and step.run.log_uri == "file:///log"


def test_trigger_resets_the_run_and_takes_a_backfill_slot() -> None:
    ended = run_in(State.ERROR, tries=3, spent=3, exit_code=1)
    ev = m.Event(On.TRIGGER_EXECUTION, trigger=m.Trigger("backfill", "bf-1"), slots=("backfill.bf-1#0",),
                 delay=timedelta(seconds=5))
    step = m.transition(ended, ev, NOW, POLICY)
    assert step.run.state == State.QUEUED and step.run.tries == 0 and step.run.spent == 0
    assert step.run.exit_code is None and step.run.lifetime_slot == "backfill.bf-1#0"
    assert step.run.backfill == "bf-1" and step.run.due_at == NOW + timedelta(seconds=5)


def test_halt_cancels_an_execution_and_releases_everything() -> None:
    adv = m.advance(running(lifetime_slot="backfill.b#1"), m.Event(On.HALT, "by me"), NOW, POLICY)
    assert adv.run.state == State.ERROR and adv.run.message == "by me"
    assert m.Cancel("wf-x-7", "h-7") in adv.decisions
    assert m.Release(("global#0", "resource.bq#1", "backfill.b#1")) in adv.decisions
    queued = m.advance(run_in(State.QUEUED), m.Event(On.HALT), NOW, POLICY)
    assert not any(isinstance(d, m.Cancel) for d in queued.decisions)


def test_manual_retry_from_error_resets_tries() -> None:
    adv = m.advance(run_in(State.ERROR, tries=3, spent=3), m.Event(On.RETRY_AFTER, delay=timedelta(0),
                                                                   reset_tries=True), NOW, POLICY)
    assert adv.run.state == State.QUEUED and adv.run.spent == 0 and adv.run.due_at == NOW


def test_counter_counts_every_logged_event() -> None:
    adv = m.advance(running(counter=9), m.Event(On.TERMINATE, exit_code=1), NOW, POLICY)
    assert [r.counter for _, r in adv.log] == [10, 11]
