"""Styx state in the document store.

Collections:
  ``styx_instances/{workflow}@{parameter}``  the current Run, plus query fields: ``due_at`` (only when
      QUEUED), ``poll_at`` (only while it holds an execution), ``active``.
  ``styx_events/{instance}#{counter:08d}``    the event log, one document per event.
  ``styx_workflows/{name}``                  per-workflow trigger state: ``next_period``, ``next_due``
      (absent when disabled), so the tick finds due workflows with one range query.
  ``styx_slots/{pool}#{n}``                  a claimed slot of a concurrency pool (resource, global,
      backfill); existence = taken.
  ``styx_backfills/{id}``                    backfills.
  ``styx_teams/{team}``                      the teams that own workflows (written at apply): the tick
      examines the queue per team when one team's backlog could hide another's due work.
  ``styx_rate/{minute}#{n}``                 submission tokens: the n-th submission of that UTC minute
      (``2026-11-26T13:05``), created in the dequeue commit; ``n`` < the rate, so the rate holds across
      overlapping ticks. Past minutes' tokens are deleted by later ticks.
  ``styx_rate/throttle``                     the last time the platform answered 429 (its minute and
      the rate it left): the submission rate slows down after it and recovers minute by minute.

Every state change is one atomic commit of the instance document, its new event documents and the
slot claims/releases it implies. The event documents are written with ``create`` (a "must not exist"
precondition): two writers that read the same counter both try to create event ``counter+1`` and
exactly one commit succeeds, the other gets Conflict and nothing of it is written. So the log and
the state can never diverge, an instance is never launched twice, and a slot is released exactly
when its holder leaves the holding states. This is optimistic concurrency: no read locks, which in
Firestore (and its emulator, whose pessimistic locks stall for seconds) keeps concurrent ticks fast.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from ferry.store.base import Doc, DocumentStore, Op, Where
from ferry.styx.machine import HOLDING, Event, Run, State, Trigger, instance_id

INSTANCES = "styx_instances"
EVENTS = "styx_events"
WORKFLOWS = "styx_workflows"
SLOTS = "styx_slots"
BACKFILLS = "styx_backfills"
RATE = "styx_rate"
THROTTLE = "throttle"  # styx_rate/throttle: no ``minute`` field, so neither a token nor expired
TEAMS = "styx_teams"
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


def queue_of(team: str, backfill: bool) -> str:
    """The queue a QUEUED instance waits in (its ``queue`` field): its team's scheduled work or its
    team's backfills, read separately so a team's backfills never hide its (or anyone's) schedule."""
    return f"{team}|{'backfill' if backfill else 'scheduled'}"


def event_id(instance: str, counter: int) -> str:
    return f"{instance}#{counter:08d}"


def run_to_doc(run: Run) -> Doc:
    doc: Doc = {
        "workflow": run.workflow, "parameter": run.parameter, "state": str(run.state), "counter": run.counter,
        "trigger": run.trigger.to_doc() if run.trigger else None, "backfill": run.backfill,
        "tries": run.tries, "spent": run.spent, "execution_id": run.execution_id, "handle": run.handle,
        "image": run.image, "log_uri": run.log_uri, "exit_code": run.exit_code, "message": run.message,
        "deadline": run.deadline, "slots": list(run.slots), "lifetime_slot": run.lifetime_slot,
        "submitted_at": run.submitted_at, "started_at": run.started_at, "ended_at": run.ended_at,
        "updated_at": run.updated_at, "active": run.active, "team": run.team,
    }
    if run.state == State.QUEUED and run.due_at is not None:
        doc["due_at"] = run.due_at
        if run.team:
            doc["queue"] = queue_of(run.team, backfill=bool(run.backfill))
    if run.state in HOLDING:
        doc["poll_at"] = run.submitted_at or run.updated_at
    return doc


def run_from_doc(doc: Doc) -> Run:
    return Run(
        workflow=doc["workflow"], parameter=doc["parameter"], state=State(doc["state"]), counter=doc["counter"],
        trigger=Trigger.from_doc(doc.get("trigger")), backfill=doc.get("backfill"), tries=doc.get("tries", 0),
        spent=doc.get("spent", 0), execution_id=doc.get("execution_id"), handle=doc.get("handle"),
        image=doc.get("image"), log_uri=doc.get("log_uri"), exit_code=doc.get("exit_code"),
        message=doc.get("message", ""), due_at=doc.get("due_at"), deadline=doc.get("deadline"),
        slots=tuple(doc.get("slots") or ()), lifetime_slot=doc.get("lifetime_slot"),
        submitted_at=doc.get("submitted_at"), started_at=doc.get("started_at"), ended_at=doc.get("ended_at"),
        updated_at=doc.get("updated_at"), team=doc.get("team"),
    )


def event_doc(instance: Run, event: Event, after: Run, at: datetime) -> Doc:
    return {"instance": instance.id, "workflow": instance.workflow, "parameter": instance.parameter,
            "counter": after.counter, "state": str(after.state), "at": at, **event.to_doc()}


class StyxRepository:
    def __init__(self, store: DocumentStore) -> None:
        self.store = store

    # -- instances ---------------------------------------------------------------------------------
    def get(self, workflow: str, parameter: str) -> Run | None:
        doc = self.store.get(INSTANCES, instance_id(workflow, parameter))
        return run_from_doc(doc) if doc else None

    def get_many(self, ids: Sequence[str]) -> dict[str, Run]:
        return {i: run_from_doc(d) for i, d in self.store.get_many(INSTANCES, ids).items()}

    def commit_ops(self, before: Run | None, log: Sequence[tuple[Event, Run]], at: datetime) -> list[Op]:
        """The writes of one state change: the instance and its new events (each a create)."""
        after = log[-1][1]
        ops: list[Op] = []
        if before is None:
            ops.append(Op.create(INSTANCES, after.id, run_to_doc(after)))
        else:
            ops.append(Op.set(INSTANCES, after.id, run_to_doc(after)))
        for event, run in log:
            ops.append(Op.create(EVENTS, event_id(after.id, run.counter), event_doc(after, event, run, at)))
        return ops

    def commit(self, before: Run | None, log: Sequence[tuple[Event, Run]], at: datetime,
               extra: Iterable[Op] = ()) -> None:
        """Write one state change atomically. Raises Conflict if another writer advanced first."""
        self.store.write([*self.commit_ops(before, log, at), *extra])

    # (``builtins.list`` in the annotations below: inside this class ``list`` names this method)
    def list(self, workflow: str, limit: int = 100, after: str | None = None) -> list[Run]:
        rows = self.store.query(INSTANCES, [Where("workflow", "==", workflow)], limit=limit,
                                start_after=instance_id(workflow, after) if after else None)
        return [run_from_doc(d) for _, d in rows]

    def by_state(self, state: str, workflows: Sequence[str] | None = None, since: datetime | None = None,
                 limit: int = 100) -> builtins.list[Run]:
        """Instances in ``state`` across workflows (or among ``workflows``), newest change first;
        reads at most ``limit`` documents per 30 workflows."""
        base = [Where("state", "==", state)] + ([Where("updated_at", ">=", since)] if since else [])
        groups: builtins.list[builtins.list[Where]] = [base]
        if workflows is not None:
            names = sorted(set(workflows))
            groups = [[*base, Where("workflow", "in", names[i:i + 30])] for i in range(0, len(names), 30)]
        runs = [run_from_doc(d) for where in groups
                for _, d in self.store.query(INSTANCES, where, order_by="updated_at", descending=True, limit=limit)]
        runs.sort(key=lambda r: r.updated_at or FAR_FUTURE.replace(year=1), reverse=True)
        return runs[:limit]

    def queued_due(self, now: datetime, limit: int) -> builtins.list[Run]:
        rows = self.store.query(INSTANCES, [Where("due_at", "<=", now)], order_by="due_at", limit=limit)
        return [run_from_doc(d) for _, d in rows]

    def queued_due_in(self, queue: str, now: datetime, limit: int) -> builtins.list[Run]:
        """The QUEUED instances of one queue (``queue_of``) due at ``now``, oldest due first."""
        rows = self.store.query(INSTANCES, [Where("queue", "==", queue), Where("due_at", "<=", now)],
                                order_by="due_at", limit=limit)
        return [run_from_doc(d) for _, d in rows]

    def teams(self, limit: int = 5000) -> builtins.list[str]:
        """The teams that own workflows (``styx_teams``)."""
        return [i for i, _ in self.store.query(TEAMS, [], limit=limit)]

    def holding(self, limit: int) -> builtins.list[Run]:
        """Instances that hold an execution or are on their way to one (polled every tick)."""
        rows = self.store.query(INSTANCES, [Where("poll_at", "<=", FAR_FUTURE)], order_by="poll_at", limit=limit)
        return [run_from_doc(d) for _, d in rows]

    def events(self, workflow: str, parameter: str) -> builtins.list[Doc]:
        rows = self.store.query(EVENTS, [Where("instance", "==", instance_id(workflow, parameter))])
        return sorted((d for _, d in rows), key=lambda d: d["counter"])

    # -- workflows' trigger state -----------------------------------------------------------------
    def due_workflows(self, now: datetime, limit: int) -> builtins.list[tuple[str, Doc]]:
        return self.store.query(WORKFLOWS, [Where("next_due", "<=", now)], order_by="next_due", limit=limit)

    # -- slots ----------------------------------------------------------------------------------
    def used_slots(self, pool: str) -> dict[int, Doc]:
        rows = self.store.query(SLOTS, [Where("pool", "==", pool)])
        return {d["number"]: d for _, d in rows}

    @staticmethod
    def claim_ops(slots: Sequence[str], instance: str, at: datetime) -> builtins.list[Op]:
        out = []
        for s in slots:
            pool, number = s.rsplit("#", 1)
            out.append(Op.create(SLOTS, s, {"pool": pool, "number": int(number), "instance": instance,
                                            "claimed_at": at}))
        return out

    @staticmethod
    def release_ops(slots: Sequence[str]) -> builtins.list[Op]:
        return [Op.delete(SLOTS, s) for s in slots]

    # -- submission rate tokens ---------------------------------------------------------------------
    def used_rate(self, minute: str) -> set[int]:
        return {d["number"] for _, d in self.store.query(RATE, [Where("minute", "==", minute)])}

    @staticmethod
    def rate_ops(minute: str, number: int, instance: str, at: datetime) -> builtins.list[Op]:
        return [Op.create(RATE, f"{minute}#{number}", {"minute": minute, "number": number, "instance": instance,
                                                      "claimed_at": at})]

    def throttle(self) -> Doc | None:
        """The last 429 recorded (``throttled_minute``, ``rate``), if any."""
        return self.store.get(RATE, THROTTLE)

    def record_throttle(self, minute: str, rate: int, at: datetime) -> None:
        """The platform refused a launch for its quota in ``minute``: submit at most ``rate`` a minute
        from there on (recovering; ``slots.effective_rate``). Last writer wins: a plain set, no
        transaction (overlapping ticks that both see a 429 write nearly the same thing)."""
        self.store.write([Op.set(RATE, THROTTLE, {"throttled_minute": minute, "rate": rate, "at": at})])

    def expire_rate(self, minute: str, limit: int = 500) -> int:
        """Delete the tokens of minutes before ``minute`` (at most ``limit``); returns how many."""
        old = self.store.query(RATE, [Where("minute", "<", minute)], limit=limit)
        if old:
            self.store.write([Op.delete(RATE, i) for i, _ in old])
        return len(old)

    # -- backfills ----------------------------------------------------------------------------------
    def backfill(self, id: str) -> Doc | None:
        return self.store.get(BACKFILLS, id)

    def active_backfills(self, limit: int = 100) -> builtins.list[Doc]:
        return [d for _, d in self.store.query(BACKFILLS, [Where("state", "==", "active")], limit=limit)]

    def backfills(self, workflow: str | None = None, limit: int = 200) -> builtins.list[Doc]:
        where = [Where("workflow", "==", workflow)] if workflow else []
        return [d for _, d in self.store.query(BACKFILLS, where, limit=limit)]

