"""The Styx state machine (SPEC §5) as a pure function: (run, event, now, policy) -> run + decisions.

No I/O here. ``transition`` applies one event; ``advance`` also applies the follow-up events that a
state decides at once (an exit code becomes ``success``, ``retryAfter`` or ``stop``), and returns every
(event, run-after) pair so that the service appends each one to the instance's event log in the same
atomic commit as the state change. Decisions (``Launch``, ``Cancel``, ``Release``, ``Land``) are side
effects that the service carries out after the commit.

Exit codes: 0 done; 20 missing dependencies -> retry after 10 minutes without spending a try;
50 -> stop at once; anything else (and run errors, timeouts) -> exponential backoff with jitter until
``max_tries`` tries are spent, then ERROR.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from ferry.errors import Conflict

EXIT_SUCCESS = 0
EXIT_MISSING_DEPENDENCIES = 20
EXIT_STOP = 50
MISSING_DEPENDENCIES_DELAY = timedelta(minutes=10)


class State(StrEnum):
    NEW = "NEW"
    QUEUED = "QUEUED"
    PREPARE = "PREPARE"
    SUBMITTING = "SUBMITTING"
    SUBMITTED = "SUBMITTED"
    RUNNING = "RUNNING"
    TERMINATED = "TERMINATED"
    FAILED = "FAILED"
    DONE = "DONE"
    ERROR = "ERROR"


class On(StrEnum):
    """Event names, as SPEC §5 spells them."""

    TRIGGER_EXECUTION = "triggerExecution"
    DEQUEUE = "dequeue"
    SUBMIT = "submit"
    SUBMITTED = "submitted"
    STARTED = "started"
    TERMINATE = "terminate"
    RUN_ERROR = "runError"
    SUCCESS = "success"
    RETRY_AFTER = "retryAfter"
    STOP = "stop"
    TIMEOUT = "timeout"
    HALT = "halt"


ENDED = frozenset({State.DONE, State.ERROR})
ACTIVE = frozenset(set(State) - ENDED - {State.NEW})
# States in which the instance holds its resource and global-concurrency slots (taken at dequeue).
HOLDING = frozenset({State.PREPARE, State.SUBMITTING, State.SUBMITTED, State.RUNNING, State.TERMINATED,
                     State.FAILED})
# States with an execution that may be running somewhere (to cancel on halt).
EXECUTING = frozenset({State.SUBMITTING, State.SUBMITTED, State.RUNNING})


class IllegalTransition(Conflict):
    """The event does not apply to the instance's current state (HTTP 409)."""


@dataclass(frozen=True)
class Trigger:
    type: str  # natural | adhoc | backfill | retry
    id: str
    env: dict[str, str] = field(default_factory=dict)

    def to_doc(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id, "env": dict(self.env)}

    @classmethod
    def from_doc(cls, doc: dict[str, Any] | None) -> Trigger | None:
        return cls(doc["type"], doc["id"], dict(doc.get("env") or {})) if doc else None


@dataclass(frozen=True)
class Event:
    on: On
    message: str = ""
    trigger: Trigger | None = None          # triggerExecution
    delay: timedelta | None = None          # triggerExecution, retryAfter
    reset_tries: bool = False               # retryAfter asked by a person (`ferry retry`)
    slots: tuple[str, ...] = ()             # dequeue: resource/global slots; triggerExecution: backfill slot
    execution_id: str | None = None         # submit
    image: str | None = None                # submit
    log_uri: str | None = None              # submitted
    handle: str | None = None               # submitted: the launcher's name for the execution
    exit_code: int | None = None            # terminate

    def to_doc(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": str(self.on)}
        if self.message:
            out["message"] = self.message
        if self.trigger:
            out["trigger"] = self.trigger.to_doc()
        if self.delay is not None:
            out["delay_seconds"] = int(self.delay.total_seconds())
        if self.reset_tries:
            out["reset_tries"] = True
        if self.slots:
            out["slots"] = list(self.slots)
        for k in ("execution_id", "image", "log_uri", "handle", "exit_code"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out


@dataclass(frozen=True)
class Policy:
    max_tries: int = 10
    initial_backoff: timedelta = timedelta(minutes=3)
    max_backoff: timedelta = timedelta(minutes=45)
    timeout: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class Run:
    """The state of one instance (workflow, parameter)."""

    workflow: str
    parameter: str
    state: State = State.NEW
    counter: int = 0                 # number of events in the log
    trigger: Trigger | None = None
    backfill: str | None = None
    tries: int = 0                   # executions launched for the current trigger (FERRY_TRIES)
    spent: int = 0                   # tries that count against max_tries (exit 20 refunds one)
    execution_id: str | None = None
    handle: str | None = None
    image: str | None = None
    log_uri: str | None = None
    exit_code: int | None = None
    message: str = ""
    due_at: datetime | None = None   # QUEUED: not before
    deadline: datetime | None = None  # SUBMITTED/RUNNING: the timeout instant
    slots: tuple[str, ...] = ()      # resource + global slots, held from dequeue until the run ends
    lifetime_slot: str | None = None  # a backfill's concurrency slot, held from trigger to DONE/ERROR
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def id(self) -> str:
        return instance_id(self.workflow, self.parameter)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


def instance_id(workflow: str, parameter: str) -> str:
    return f"{workflow}@{parameter}"


# -- decisions: side effects for the service to carry out after the commit -------------------------
@dataclass(frozen=True)
class Launch:
    execution_id: str


@dataclass(frozen=True)
class Cancel:
    execution_id: str
    handle: str | None


@dataclass(frozen=True)
class Release:
    slots: tuple[str, ...]


@dataclass(frozen=True)
class Land:
    """The instance succeeded: record its `produces` partition as landed."""


Decision = Launch | Cancel | Release | Land


@dataclass(frozen=True)
class Step:
    run: Run
    decisions: tuple[Decision, ...] = ()
    follow_up: Event | None = None


LEGAL: dict[On, frozenset[State]] = {
    On.TRIGGER_EXECUTION: frozenset({State.NEW, State.DONE, State.ERROR}),
    On.DEQUEUE: frozenset({State.QUEUED}),
    On.SUBMIT: frozenset({State.PREPARE}),
    On.SUBMITTED: frozenset({State.SUBMITTING}),
    On.STARTED: frozenset({State.SUBMITTED}),
    On.TERMINATE: frozenset({State.SUBMITTED, State.RUNNING}),
    On.RUN_ERROR: frozenset({State.PREPARE, State.SUBMITTING, State.SUBMITTED, State.RUNNING}),
    On.SUCCESS: frozenset({State.TERMINATED}),
    On.RETRY_AFTER: frozenset({State.QUEUED, State.TERMINATED, State.FAILED, State.DONE, State.ERROR}),
    On.STOP: frozenset({State.TERMINATED, State.FAILED}),
    On.TIMEOUT: frozenset({State.SUBMITTED, State.RUNNING}),
    On.HALT: ACTIVE,
}


def backoff(run: Run, policy: Policy) -> timedelta:
    """initial * 2^(spent-1), with ±20% jitter, at most max_backoff.

    The jitter is a hash of (instance, try), so the function stays pure and a replay gives the same
    delay; ±20% keeps consecutive delays strictly growing until the cap.
    """
    base = policy.initial_backoff * (2 ** max(0, run.spent - 1))
    digest = hashlib.sha256(f"{run.id}:{run.tries}".encode()).digest()
    jitter = 0.8 + 0.4 * (int.from_bytes(digest[:4], "big") / 2**32)
    return min(base * jitter, policy.max_backoff)


def _after_failure(run: Run, policy: Policy, reason: str) -> Event:
    if run.spent >= policy.max_tries:
        return Event(On.STOP, f"{reason}; gave up after {run.spent} of {policy.max_tries} tries")
    return Event(On.RETRY_AFTER, reason, delay=backoff(run, policy))


def _release(run: Run, lifetime: bool) -> tuple[Decision, ...]:
    slots = run.slots + ((run.lifetime_slot,) if lifetime and run.lifetime_slot else ())
    return (Release(slots),) if slots else ()


def _cancel(run: Run) -> tuple[Decision, ...]:
    if run.state in EXECUTING and run.execution_id:
        return (Cancel(run.execution_id, run.handle),)
    return ()


def transition(run: Run, event: Event, now: datetime, policy: Policy) -> Step:
    """Apply one event. Raises IllegalTransition when the event does not apply to the state."""
    if run.state not in LEGAL[event.on]:
        raise IllegalTransition(f"cannot {event.on} instance {run.workflow} {run.parameter}: it is {run.state}",
                                {"state": str(run.state), "event": str(event.on)})
    r = replace(run, counter=run.counter + 1, updated_at=now, message=event.message or run.message)
    match event.on:
        case On.TRIGGER_EXECUTION:
            assert event.trigger is not None, "triggerExecution needs a trigger"
            return Step(replace(
                r, state=State.QUEUED, trigger=event.trigger, tries=0, spent=0, execution_id=None, handle=None,
                image=None, log_uri=None, exit_code=None, due_at=now + (event.delay or timedelta(0)),
                deadline=None, slots=(), submitted_at=None, started_at=None, ended_at=None,
                lifetime_slot=event.slots[0] if event.slots else None,
                backfill=event.trigger.id if event.trigger.type == "backfill" else None,
                message=event.message or f"triggered ({event.trigger.type} {event.trigger.id})"))
        case On.DEQUEUE:
            return Step(replace(r, state=State.PREPARE, due_at=None, slots=event.slots))
        case On.SUBMIT:
            assert event.execution_id, "submit needs an execution id"
            return Step(replace(r, state=State.SUBMITTING, execution_id=event.execution_id, image=event.image,
                                tries=run.tries + 1, spent=run.spent + 1, exit_code=None, handle=None,
                                log_uri=None, submitted_at=None, started_at=None),
                        (Launch(event.execution_id),))
        case On.SUBMITTED:
            return Step(replace(r, state=State.SUBMITTED, handle=event.handle, log_uri=event.log_uri,
                                submitted_at=now, deadline=now + policy.timeout))
        case On.STARTED:
            return Step(replace(r, state=State.RUNNING, started_at=now))
        case On.TERMINATE:
            code = event.exit_code if event.exit_code is not None else -1
            r = replace(r, state=State.TERMINATED, exit_code=code, deadline=None, ended_at=now)
            if code == EXIT_SUCCESS:
                return Step(r, follow_up=Event(On.SUCCESS, "exited 0"))
            if code == EXIT_MISSING_DEPENDENCIES:
                r = replace(r, spent=max(0, r.spent - 1))  # missing dependencies do not spend a try
                return Step(r, follow_up=Event(On.RETRY_AFTER, "exit 20: missing dependencies; no try spent",
                                               delay=MISSING_DEPENDENCIES_DELAY))
            if code == EXIT_STOP:
                return Step(r, follow_up=Event(On.STOP, "exit 50: stop requested by the job"))
            return Step(r, follow_up=_after_failure(r, policy, f"exited {code}"))
        case On.RUN_ERROR | On.TIMEOUT:
            if event.on == On.TIMEOUT:
                reason = f"timeout: {event.message or f'ran longer than {policy.timeout}; cancelled'}"
            else:
                reason = event.message or "run error"
            r = replace(r, state=State.FAILED, deadline=None, ended_at=now, message=reason)
            return Step(r, _cancel(run) if event.on == On.TIMEOUT else (), _after_failure(r, policy, reason))
        case On.SUCCESS:
            return Step(replace(r, state=State.DONE, slots=(), lifetime_slot=None),
                        (*_release(run, lifetime=True), Land()))
        case On.RETRY_AFTER:
            delay = event.delay or timedelta(0)
            ended = run.state in ENDED
            r = replace(r, state=State.QUEUED, due_at=now + delay, slots=(), deadline=None)
            if ended or event.reset_tries:
                r = replace(r, spent=0, tries=0 if ended else r.tries)
            return Step(r, _release(run, lifetime=False))
        case On.STOP:
            return Step(replace(r, state=State.ERROR, slots=(), lifetime_slot=None),
                        _release(run, lifetime=True))
        case On.HALT:
            return Step(replace(r, state=State.ERROR, slots=(), lifetime_slot=None, due_at=None, deadline=None,
                                ended_at=now, message=event.message or "halted"),
                        (*_cancel(run), *_release(run, lifetime=True)))
    raise AssertionError(f"unhandled event {event.on}")  # pragma: no cover


@dataclass(frozen=True)
class Advance:
    run: Run
    log: tuple[tuple[Event, Run], ...]
    decisions: tuple[Decision, ...]


def advance(run: Run, event: Event, now: datetime, policy: Policy) -> Advance:
    """Apply ``event`` and every follow-up it decides; the log has one entry per event applied."""
    log: list[tuple[Event, Run]] = []
    decisions: list[Decision] = []
    current: Event | None = event
    while current is not None:
        step = transition(run, current, now, policy)
        run = step.run
        log.append((current, run))
        decisions.extend(step.decisions)
        current = step.follow_up
    return Advance(run, tuple(log), tuple(decisions))
