"""The state machine, exhaustively: every (state, event) pair, legal and illegal, and the exit-code rules."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ferry.errors import Conflict
from ferry.styx import machine as m
from ferry.styx.machine import (
    Dequeue,
    Event,
    Halt,
    Resubmit,
    RetryAfter,
    RunError,
    Started,
    State,
    Stop,
    Submit,
    Submitted,
    Success,
    Terminate,
    Timeout,
    TriggerExecution,
)

NOW = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
POLICY = m.Policy(max_tries=3, initial_backoff=timedelta(minutes=1), max_backoff=timedelta(minutes=10),
                  timeout=timedelta(minutes=30))

EXPECTED: dict[tuple[State, type[Event]], State] = {
    (State.NEW, TriggerExecution): State.QUEUED,
    (State.DONE, TriggerExecution): State.QUEUED,
    (State.ERROR, TriggerExecution): State.QUEUED,
    (State.QUEUED, Dequeue): State.PREPARE,
    (State.PREPARE, Submit): State.SUBMITTING,
    (State.SUBMITTING, Resubmit): State.SUBMITTING,
    (State.SUBMITTING, m.Requeue): State.QUEUED,
    (State.SUBMITTING, Submitted): State.SUBMITTED,
    (State.SUBMITTED, Started): State.RUNNING,
    (State.SUBMITTED, Terminate): State.TERMINATED,
    (State.RUNNING, Terminate): State.TERMINATED,
    (State.PREPARE, RunError): State.FAILED,
    (State.SUBMITTING, RunError): State.FAILED,
    (State.SUBMITTED, RunError): State.FAILED,
    (State.RUNNING, RunError): State.FAILED,
    (State.TERMINATED, Success): State.DONE,
    (State.QUEUED, RetryAfter): State.QUEUED,
    (State.TERMINATED, RetryAfter): State.QUEUED,
    (State.FAILED, RetryAfter): State.QUEUED,
    (State.DONE, RetryAfter): State.QUEUED,
    (State.ERROR, RetryAfter): State.QUEUED,
    (State.TERMINATED, Stop): State.ERROR,
    (State.FAILED, Stop): State.ERROR,
    (State.SUBMITTED, Timeout): State.FAILED,
    (State.RUNNING, Timeout): State.FAILED,
    **{(s, Halt): State.ERROR for s in m.ACTIVE},
    **{(s, m.MarkDone): State.DONE for s in (State.NEW, State.QUEUED, State.ERROR)},
}


def run_in(state: State, **kw) -> m.Run:
    base = m.Run("wf", "2026-11-26T14", state=state, counter=5, tries=1, spent=1,
                 trigger=m.Trigger("natural", "natural-2026-11-26T14"))
    if state in m.HOLDING:
        base = replace(base, slots=("global#0", "resource.bq#1"))
    if state in m.EXECUTING:
        base = replace(base, execution_id="wf-x-7", handle="h-7")
    return replace(base, **kw)


def event_for(kind: type[Event]) -> Event:
    return {
        TriggerExecution: TriggerExecution(trigger=m.Trigger("adhoc", "a1", {"K": "V"})),
        Dequeue: Dequeue(slots=("global#3",)),
        Submit: Submit(execution_id="wf-x-8", image="img"),
        Resubmit: Resubmit(execution_id="wf-x-7"),
        Submitted: Submitted(handle="h-8", log_uri="file:///log"),
        Terminate: Terminate(exit_code=0),
        RetryAfter: RetryAfter(delay=timedelta(minutes=2)),
    }.get(kind) or kind()


@pytest.mark.parametrize(("state", "kind"), list(itertools.product(State, m.EVENTS)),
                         ids=lambda v: v if isinstance(v, str) else v.name)
def test_every_pair(state: State, kind: type[Event]) -> None:
    run = run_in(state)
    expected = EXPECTED.get((state, kind))
    if expected is None:
        with pytest.raises(m.IllegalTransition) as err:
            m.transition(run, event_for(kind), NOW, POLICY)
        assert err.value.http_status == 409 and err.value.exit_code == 3
        assert not isinstance(err.value, Conflict)  # not retried as a concurrent write would be
        return
    step = m.transition(run, event_for(kind), NOW, POLICY)
    assert step.run.state == expected
    assert step.run.counter == run.counter + 1
    assert step.run.updated_at == NOW


def test_every_event_type_has_its_rules_and_its_name() -> None:
    assert set(m.LEGAL) == set(m.EVENTS)
    assert len({k.name for k in m.EVENTS}) == len(m.EVENTS)


def test_event_documents_keep_the_log_s_shape() -> None:
    trig = m.Trigger("backfill", "bf-1", {"K": "V"})
    assert TriggerExecution("go", trigger=trig, delay=timedelta(seconds=5), slots=("backfill.bf-1#0",)).to_doc() == {
        "event": "triggerExecution", "message": "go", "trigger": {"type": "backfill", "id": "bf-1", "env": {"K": "V"}},
        "delay_seconds": 5, "slots": ["backfill.bf-1#0"]}
    assert RetryAfter(delay=timedelta(0), reset_tries=True).to_doc() == {
        "event": "retryAfter", "delay_seconds": 0, "reset_tries": True}
    assert Terminate(exit_code=0).to_doc() == {"event": "terminate", "exit_code": 0}
    assert Submitted(handle="h", log_uri=None).to_doc() == {"event": "submitted", "handle": "h"}
    assert Halt().to_doc() == {"event": "halt"}


def test_every_pair_is_covered_by_the_table() -> None:
    legal = {(s, on) for on, states in m.LEGAL.items() for s in states}
    assert legal == set(EXPECTED)


def test_requeue_gives_the_try_back_and_releases_the_slots() -> None:
    """A launch the platform refused for its quota (nothing started): back to the queue after the
    delay, the try it had counted given back, its slots released, no execution id left."""
    run = run_in(State.SUBMITTING, tries=2, spent=2)
    step = m.transition(run, m.Requeue("429", delay=timedelta(seconds=60)), NOW, POLICY)
    assert step.run.state == State.QUEUED and step.run.due_at == NOW + timedelta(seconds=60)
    assert (step.run.tries, step.run.spent) == (1, 1)
    assert step.run.slots == () and step.run.execution_id is None and step.run.handle is None
    assert step.decisions == (m.Release(("global#0", "resource.bq#1")),)


def states(adv: m.Advance) -> list[tuple[str, str]]:
    return [(e.name, str(r.state)) for e, r in adv.log]


def running(**kw) -> m.Run:
    return run_in(State.RUNNING, **kw)


def test_exit_0_is_done_releases_and_lands() -> None:
    adv = m.advance(running(lifetime_slot="backfill.b#0"), m.Terminate(exit_code=0), NOW, POLICY)
    assert states(adv) == [("terminate", "TERMINATED"), ("success", "DONE")]
    assert m.Release(("global#0", "resource.bq#1", "backfill.b#0")) in adv.decisions
    assert m.Land() in adv.decisions
    assert adv.run.slots == () and adv.run.lifetime_slot is None and not adv.run.active


def test_exit_20_retries_after_ten_minutes_without_spending_a_try() -> None:
    run = running(tries=3, spent=3)  # max_tries is 3: a spent try would give up
    adv = m.advance(run, m.Terminate(exit_code=20), NOW, POLICY)
    assert states(adv) == [("terminate", "TERMINATED"), ("retryAfter", "QUEUED")]
    assert adv.run.due_at == NOW + timedelta(minutes=10)
    assert adv.run.spent == 2 and adv.run.tries == 3
    assert adv.log[-1][0].delay == timedelta(minutes=10)
    assert m.Release(("global#0", "resource.bq#1")) in adv.decisions


def test_exit_50_stops_at_once() -> None:
    adv = m.advance(running(spent=1), m.Terminate(exit_code=50), NOW, POLICY)
    assert states(adv) == [("terminate", "TERMINATED"), ("stop", "ERROR")]
    assert adv.run.exit_code == 50


@pytest.mark.parametrize("code", [1, 2, 137, -1])
def test_other_exit_codes_back_off_until_max_tries(code: int) -> None:
    run = running(spent=1, tries=1)
    adv = m.advance(run, m.Terminate(exit_code=code), NOW, POLICY)
    assert states(adv)[-1] == ("retryAfter", "QUEUED")
    last = m.advance(running(spent=3, tries=3), m.Terminate(exit_code=code), NOW, POLICY)
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
    adv = m.advance(running(), m.RunError("image not found"), NOW, POLICY)
    assert states(adv) == [("runError", "FAILED"), ("retryAfter", "QUEUED")]
    adv = m.advance(running(), m.Timeout(), NOW, POLICY)
    assert states(adv) == [("timeout", "FAILED"), ("retryAfter", "QUEUED")]
    assert m.Cancel("wf-x-7", "h-7") in adv.decisions
    assert "timeout" in adv.log[0][1].message


def test_submit_spends_a_try_and_asks_for_a_launch() -> None:
    step = m.transition(run_in(State.PREPARE, tries=1, spent=1), event_for(Submit), NOW, POLICY)
    assert step.run.tries == 2 and step.run.spent == 2
    assert step.decisions == (m.Launch("wf-x-8"),)


def test_resubmit_launches_the_same_execution_id_without_spending_a_try() -> None:
    lost = run_in(State.SUBMITTING, tries=2, spent=2, handle=None)
    step = m.transition(lost, Resubmit("lost", execution_id="wf-x-7"), NOW, POLICY)
    assert step.run.state == State.SUBMITTING and step.run.tries == 2 and step.run.spent == 2
    assert step.run.execution_id == "wf-x-7" and step.decisions == (m.Launch("wf-x-7"),)
    assert step.run.slots == lost.slots and step.run.updated_at == NOW
    with pytest.raises(m.IllegalTransition):
        m.transition(lost, Resubmit(execution_id="wf-x-9"), NOW, POLICY)


def test_submitted_sets_the_deadline() -> None:
    step = m.transition(run_in(State.SUBMITTING), event_for(Submitted), NOW, POLICY)
    assert step.run.deadline == NOW + timedelta(minutes=30)
    assert step.run.handle == "h-8" and step.run.log_uri == "file:///log"


def test_trigger_resets_the_run_and_takes_a_backfill_slot() -> None:
    ended = run_in(State.ERROR, tries=3, spent=3, exit_code=1)
    ev = m.TriggerExecution(trigger=m.Trigger("backfill", "bf-1"), slots=("backfill.bf-1#0",),
                 delay=timedelta(seconds=5))
    step = m.transition(ended, ev, NOW, POLICY)
    assert step.run.state == State.QUEUED and step.run.tries == 0 and step.run.spent == 0
    assert step.run.exit_code is None and step.run.lifetime_slot == "backfill.bf-1#0"
    assert step.run.backfill == "bf-1" and step.run.due_at == NOW + timedelta(seconds=5)


def test_halt_cancels_an_execution_and_releases_everything() -> None:
    adv = m.advance(running(lifetime_slot="backfill.b#1"), m.Halt("by me"), NOW, POLICY)
    assert adv.run.state == State.ERROR and adv.run.message == "by me"
    assert m.Cancel("wf-x-7", "h-7") in adv.decisions
    assert m.Release(("global#0", "resource.bq#1", "backfill.b#1")) in adv.decisions
    queued = m.advance(run_in(State.QUEUED), m.Halt(), NOW, POLICY)
    assert not any(isinstance(d, m.Cancel) for d in queued.decisions)


def test_manual_retry_from_error_resets_tries() -> None:
    adv = m.advance(run_in(State.ERROR, tries=3, spent=3), m.RetryAfter(delay=timedelta(0),
                                                                   reset_tries=True), NOW, POLICY)
    assert adv.run.state == State.QUEUED and adv.run.spent == 0 and adv.run.due_at == NOW


def test_counter_counts_every_logged_event() -> None:
    adv = m.advance(running(counter=9), m.Terminate(exit_code=1), NOW, POLICY)
    assert [r.counter for _, r in adv.log] == [10, 11]
