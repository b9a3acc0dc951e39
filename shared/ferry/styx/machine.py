"""The Styx state machine (docs/styx.md) as a pure function: (run, event, now, policy) -> run + decisions.

No I/O here. Each event is one small type (``TriggerExecution``, ``Dequeue``, … ``Halt``; ``name`` is
how the event log spells it) and ``transition`` matches on it. ``transition`` applies one event;
``advance`` also applies the follow-up events that a state decides at once (an exit code becomes
``success``, ``retryAfter`` or ``stop``), and returns every (event, run-after) pair so that the service
appends each one to the instance's event log in the same atomic commit as the state change.
Decisions (``Launch``, ``Cancel``, ``Release``, ``Land``) are side effects that the service carries
out after the commit.

Exit codes: 0 done; 20 missing dependencies -> retry after 10 minutes without spending a try;
50 -> stop at once; anything else (and run errors, timeouts) -> exponential backoff with jitter until
``max_tries`` tries are spent, then ERROR.
"""

from __future__ import annotations

import hashlib
from dataclasses import KW_ONLY, dataclass, field, fields, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar

from ferry.errors import FerryError

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


ENDED = frozenset({State.DONE, State.ERROR})
ACTIVE = frozenset(set(State) - ENDED - {State.NEW})
# States in which the instance holds its resource and global-concurrency slots (taken at dequeue).
HOLDING = frozenset({State.PREPARE, State.SUBMITTING, State.SUBMITTED, State.RUNNING, State.TERMINATED,
                     State.FAILED})
# States with an execution that may be running somewhere (to cancel on halt).
EXECUTING = frozenset({State.SUBMITTING, State.SUBMITTED, State.RUNNING})


class IllegalTransition(FerryError):
    """The event does not apply to the instance's current state.

    HTTP 409 and exit 3, like ``Conflict`` (the request conflicts with the instance's state), but not
    a ``Conflict``: retrying does not help, so callers that retry on a concurrent write (``Conflict``)
    do not catch it by accident.
    """

    http_status = 409
    exit_code = 3
    code = "illegal_transition"


@dataclass(frozen=True)
class Trigger:
    type: str  # natural | adhoc | backfill | retry
    id: str
    env: dict[str, str] = field(default_factory=dict)
    ignore_deps: bool = False  # an operator's trigger that does not wait for upstream partitions

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": self.type, "id": self.id, "env": dict(self.env)}
        if self.ignore_deps:
            doc["ignore_deps"] = True
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any] | None) -> Trigger | None:
        return cls(doc["type"], doc["id"], dict(doc.get("env") or {}), bool(doc.get("ignore_deps"))) if doc else None


# -- events: one small type each; ``name`` is how the event log spells it ---------------------------
@dataclass(frozen=True)
class Event:
    """What happened to an instance. ``message`` is the human part, shown in its timeline."""

    name: ClassVar[str]
    message: str = ""

    def to_doc(self) -> dict[str, Any]:
        """The event's fields as the event log stores them (empty and default fields left out)."""
        out: dict[str, Any] = {"event": self.name}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == () or value is False or (f.name == "message" and not value):
                continue
            if isinstance(value, Trigger):
                out[f.name] = value.to_doc()
            elif isinstance(value, timedelta):
                out[f"{f.name}_seconds"] = int(value.total_seconds())
            else:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class TriggerExecution(Event):
    name = "triggerExecution"
    _: KW_ONLY
    trigger: Trigger
    delay: timedelta | None = None
    slots: tuple[str, ...] = ()             # a backfill's concurrency slot, held until DONE/ERROR


@dataclass(frozen=True)
class Dequeue(Event):
    name = "dequeue"
    _: KW_ONLY
    slots: tuple[str, ...] = ()             # resource and global slots, held until the run ends


@dataclass(frozen=True)
class Submit(Event):
    name = "submit"
    _: KW_ONLY
    execution_id: str
    image: str | None = None


@dataclass(frozen=True)
class Resubmit(Event):
    """The submission record was lost and the launcher has no execution of this id: launch it again,
    under the same execution id and without spending a try."""

    name = "resubmit"
    _: KW_ONLY
    execution_id: str


@dataclass(frozen=True)
class Requeue(Event):
    """The platform refused the launch for its quota (HTTP 429 / RESOURCE_EXHAUSTED: nothing was
    started): back to the queue after ``delay``, its slots released and its try given back."""

    name = "requeue"
    _: KW_ONLY
    delay: timedelta | None = None


@dataclass(frozen=True)
class Submitted(Event):
    name = "submitted"
    _: KW_ONLY
    handle: str                             # the launcher's name for the execution
    log_uri: str | None = None


@dataclass(frozen=True)
class Started(Event):
    name = "started"


@dataclass(frozen=True)
class Terminate(Event):
    name = "terminate"
    _: KW_ONLY
    exit_code: int | None                   # None: ended without one (counts as -1)
    ran_seconds: float | None = None        # the job's own run time, when the platform tells it


@dataclass(frozen=True)
class RunError(Event):
    name = "runError"
    _: KW_ONLY
    ran_seconds: float | None = None


@dataclass(frozen=True)
class Success(Event):
    name = "success"


@dataclass(frozen=True)
class RetryAfter(Event):
    name = "retryAfter"
    _: KW_ONLY
    delay: timedelta | None = None
    reset_tries: bool = False               # asked by a person (`ferry retry`)


@dataclass(frozen=True)
class Stop(Event):
    name = "stop"


@dataclass(frozen=True)
class Timeout(Event):
    name = "timeout"


@dataclass(frozen=True)
class Halt(Event):
    name = "halt"


@dataclass(frozen=True)
class MarkDone(Event):
    """An operator says the instance's work is done without running it (its output lands)."""

    name = "markDone"


EVENTS: tuple[type[Event], ...] = (TriggerExecution, Dequeue, Submit, Resubmit, Requeue, Submitted, Started,
                                   Terminate, RunError, Success, RetryAfter, Stop, Timeout, Halt, MarkDone)


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
    team: str | None = None          # the owning team when triggered (the tick examines queues per team)

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


LEGAL: dict[type[Event], frozenset[State]] = {
    TriggerExecution: frozenset({State.NEW, State.DONE, State.ERROR}),
    Dequeue: frozenset({State.QUEUED}),
    Submit: frozenset({State.PREPARE}),
    Resubmit: frozenset({State.SUBMITTING}),
    Requeue: frozenset({State.SUBMITTING}),
    Submitted: frozenset({State.SUBMITTING}),
    Started: frozenset({State.SUBMITTED}),
    Terminate: frozenset({State.SUBMITTED, State.RUNNING}),
    RunError: frozenset({State.PREPARE, State.SUBMITTING, State.SUBMITTED, State.RUNNING}),
    Success: frozenset({State.TERMINATED}),
    RetryAfter: frozenset({State.QUEUED, State.TERMINATED, State.FAILED, State.DONE, State.ERROR}),
    Stop: frozenset({State.TERMINATED, State.FAILED}),
    Timeout: frozenset({State.SUBMITTED, State.RUNNING}),
    Halt: ACTIVE,
    MarkDone: frozenset({State.NEW, State.QUEUED, State.ERROR}),
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
        return Stop(f"{reason}; gave up after {run.spent} of {policy.max_tries} tries")
    return RetryAfter(reason, delay=backoff(run, policy))


def _release(run: Run, lifetime: bool) -> tuple[Decision, ...]:
    slots = run.slots + ((run.lifetime_slot,) if lifetime and run.lifetime_slot else ())
    return (Release(slots),) if slots else ()


def _cancel(run: Run) -> tuple[Decision, ...]:
    if run.state in EXECUTING and run.execution_id:
        return (Cancel(run.execution_id, run.handle),)
    return ()


def transition(run: Run, event: Event, now: datetime, policy: Policy) -> Step:
    """Apply one event. Raises IllegalTransition when the event does not apply to the state."""
    if run.state not in LEGAL[type(event)]:
        raise IllegalTransition(f"cannot {event.name} instance {run.workflow} {run.parameter}: it is {run.state}",
                                {"state": str(run.state), "event": event.name})
    r = replace(run, counter=run.counter + 1, updated_at=now, message=event.message or run.message)
    match event:
        case TriggerExecution(trigger=trigger):
            return Step(replace(
                r, state=State.QUEUED, trigger=trigger, tries=0, spent=0, execution_id=None, handle=None,
                image=None, log_uri=None, exit_code=None, due_at=now + (event.delay or timedelta(0)),
                deadline=None, slots=(), submitted_at=None, started_at=None, ended_at=None,
                lifetime_slot=event.slots[0] if event.slots else None,
                backfill=trigger.id if trigger.type == "backfill" else None,
                message=event.message or f"triggered ({trigger.type} {trigger.id})"))
        case Dequeue():
            return Step(replace(r, state=State.PREPARE, due_at=None, slots=event.slots))
        case Submit():
            return Step(replace(r, state=State.SUBMITTING, execution_id=event.execution_id, image=event.image,
                                tries=run.tries + 1, spent=run.spent + 1, exit_code=None, handle=None,
                                log_uri=None, submitted_at=None, started_at=None),
                        (Launch(event.execution_id),))
        case Resubmit():
            if event.execution_id != run.execution_id:
                raise IllegalTransition(f"cannot resubmit {event.execution_id}: instance {run.workflow} "
                                        f"{run.parameter} is submitting {run.execution_id}",
                                        {"state": str(run.state), "event": event.name})
            return Step(r, (Launch(event.execution_id),))
        case Requeue():
            return Step(replace(r, state=State.QUEUED, due_at=now + (event.delay or timedelta(0)), slots=(),
                                tries=max(0, run.tries - 1), spent=max(0, run.spent - 1), execution_id=None,
                                image=None, handle=None, log_uri=None),
                        _release(run, lifetime=False))
        case Submitted():
            return Step(replace(r, state=State.SUBMITTED, handle=event.handle, log_uri=event.log_uri,
                                submitted_at=now, deadline=now + policy.timeout))
        case Started():
            return Step(replace(r, state=State.RUNNING, started_at=now))
        case Terminate():
            code = event.exit_code if event.exit_code is not None else -1
            r = replace(r, state=State.TERMINATED, exit_code=code, deadline=None, ended_at=now)
            if code == EXIT_SUCCESS:
                return Step(r, follow_up=Success("exited 0"))
            if code == EXIT_MISSING_DEPENDENCIES:
                r = replace(r, spent=max(0, r.spent - 1))  # missing dependencies do not spend a try
                return Step(r, follow_up=RetryAfter("exit 20: missing dependencies; no try spent",
                                                    delay=MISSING_DEPENDENCIES_DELAY))
            if code == EXIT_STOP:
                return Step(r, follow_up=Stop("exit 50: stop requested by the job"))
            return Step(r, follow_up=_after_failure(r, policy, f"exited {code}"))
        case Timeout():
            reason = f"timeout: {event.message or f'ran longer than {policy.timeout}; cancelled'}"
            r = replace(r, state=State.FAILED, deadline=None, ended_at=now, message=reason)
            return Step(r, _cancel(run), _after_failure(r, policy, reason))
        case RunError():
            reason = event.message or "run error"
            r = replace(r, state=State.FAILED, deadline=None, ended_at=now, message=reason)
            return Step(r, (), _after_failure(r, policy, reason))
        case MarkDone():
            return Step(replace(r, state=State.DONE, due_at=None, deadline=None, slots=(), lifetime_slot=None,
                                ended_at=now, message=event.message or "marked done"),
                        (*_release(run, lifetime=True), Land()))
        case Success():
            return Step(replace(r, state=State.DONE, slots=(), lifetime_slot=None),
                        (*_release(run, lifetime=True), Land()))
        case RetryAfter():
            delay = event.delay or timedelta(0)
            ended = run.state in ENDED
            r = replace(r, state=State.QUEUED, due_at=now + delay, slots=(), deadline=None)
            if ended or event.reset_tries:
                r = replace(r, spent=0, tries=0 if ended else r.tries)
            return Step(r, _release(run, lifetime=False))
        case Stop():
            return Step(replace(r, state=State.ERROR, slots=(), lifetime_slot=None),
                        _release(run, lifetime=True))
        case Halt():
            return Step(replace(r, state=State.ERROR, slots=(), lifetime_slot=None, due_at=None, deadline=None,
                                ended_at=now, message=event.message or "halted"),
                        (*_cancel(run), *_release(run, lifetime=True)))
    raise AssertionError(f"unhandled event {event.name}")  # pragma: no cover


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
