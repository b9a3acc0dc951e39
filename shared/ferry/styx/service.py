"""Execution control (docs/styx.md): trigger, retry, halt, instances, timeline, logs — and the one
place that commits a state change and carries out its decisions.

Idempotent by construction: every change is computed by the pure state machine from the instance as
read, then committed with a create-precondition on the next event id (see ``repository``); when a
concurrent writer got there first the commit fails with Conflict and the change is recomputed from
a fresh read (or, in the tick, left to the writer that won).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ferry import log
from ferry.clock import iso
from ferry.domain import periods
from ferry.domain.manifests import Endpoint, EventType, Workflow, event_type_of
from ferry.errors import BadRequest, Conflict, FerryError, InfraError, NotFound
from ferry.services.ownership import may_produce
from ferry.store.base import DocumentStore, Op
from ferry.store.manifests import ManifestRepository
from ferry.styx import machine as m
from ferry.styx.launchers import Launcher, LaunchSpec
from ferry.styx.repository import StyxRepository
from ferry.styx.scheduling import policy_of, upstream_partitions

if TYPE_CHECKING:
    from ferry.broker.base import Publisher
    from ferry.datamon.port import Datamon
    from ferry.services.authz import Authorizer

logger = log.get("styx")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass
class Applied:
    run: m.Run
    decisions: tuple[m.Decision, ...]
    log: tuple[tuple[m.Event, m.Run], ...] = ()


class StyxService:
    """Styx's operations on the ports they use.

    Args:
        store: the document store (Styx's collections, the manifests).
        launcher: where instances run (Cloud Run jobs, local processes).
        datamon: Datamon's port: where a succeeded instance lands its partition and the upstream gate
            reads landings.
        authorizer: who may trigger, retry, halt or backfill what.
        publisher: where the tick's failure alerts are published.
    """

    def __init__(self, store: DocumentStore, launcher: Launcher, datamon: Datamon, authorizer: Authorizer,
                 publisher: Publisher) -> None:
        self.store = store
        self.manifests = ManifestRepository(store)
        self.repo = StyxRepository(store)
        self.launcher = launcher
        self.datamon = datamon
        self.authorizer = authorizer
        self.publisher = publisher

    # -- workflows ---------------------------------------------------------------------------------
    def workflow(self, name: str) -> tuple[Workflow, str | None]:
        rec = self.manifests.get("Workflow", name)
        if rec is None:
            raise NotFound(f"workflow {name!r} not found{self.manifests.did_you_mean('Workflow', name)}")
        return rec.model_as(Workflow), rec.owner

    @staticmethod
    def check_parameter(wf: Workflow, parameter: str) -> None:
        try:
            wf.spec.cadence().parse(parameter)
        except ValueError as exc:
            raise BadRequest(f"{parameter!r} is not a parameter of workflow {wf.name} "
                             f"(schedule {wf.spec.schedule}): {exc}") from None

    # -- the one commit path -----------------------------------------------------------------------
    def plan(self, before: m.Run, events: m.Event | Sequence[m.Event], now: datetime, policy: m.Policy,
             extra: Sequence[Op] = (), new: bool = False) -> tuple[Applied, list[Op]]:
        """Advance ``before`` by ``events`` (one, or several in order) without writing anything.

        Returns what the change does and the writes of its one atomic commit: the instance, its new
        event documents (each a create: the precondition that makes a concurrent writer lose), the
        slot claims and releases it implies, and ``extra``. Raises IllegalTransition.
        """
        run = before
        entries: list[tuple[m.Event, m.Run]] = []
        decisions: list[m.Decision] = []
        for event in [events] if isinstance(events, m.Event) else events:
            adv = m.advance(run, event, now, policy)
            run = adv.run
            entries += adv.log
            decisions += adv.decisions
        ops = self.repo.commit_ops(None if new else before, entries, now) + list(extra)
        for ev, _ in entries:
            # dequeue claims resource/global slots; a backfill trigger claims its slot
            if isinstance(ev, m.Dequeue | m.TriggerExecution) and ev.slots:
                ops += self.repo.claim_ops(ev.slots, before.id, now)
        for d in decisions:
            if isinstance(d, m.Release):
                ops += self.repo.release_ops(d.slots)
        return Applied(run, tuple(decisions), tuple(entries)), ops

    def commit(self, before: m.Run, event: m.Event | Sequence[m.Event], now: datetime, policy: m.Policy,
               extra: Sequence[Op] = (), new: bool = False) -> Applied:
        """Advance ``before`` by ``event`` and commit atomically, claims and releases included.

        ``new``: the instance document does not exist yet (it is created, or Conflict).

        Raises:
            IllegalTransition: the event does not apply to the state.
            Conflict: another writer changed the instance (or took a slot) first; nothing written.
        """
        applied, ops = self.plan(before, event, now, policy, extra, new)
        self.repo.store.write(ops)
        self.logged(applied)
        return applied

    @staticmethod
    def logged(applied: Applied) -> None:
        """Log the transitions of a committed change (one Cloud Logging entry each)."""
        for ev, after in applied.log:
            log.event(logger, log.ERROR if after.state == m.State.ERROR else 20,
                      f"{after.workflow} {after.parameter}: {ev.name} -> {after.state}"
                      + (f" ({ev.message})" if ev.message else ""),
                      labels={"workflow": after.workflow, "parameter": after.parameter,
                              "execution": after.execution_id or ""},
                      event=ev.name, state=str(after.state), exit_code=after.exit_code)

    def carry_out(self, applied: Applied, wf: Workflow | None, now: datetime) -> None:
        """Side effects after a commit: cancel executions, land produced partitions."""
        for d in applied.decisions:
            if isinstance(d, m.Cancel) and d.handle:
                try:
                    self.launcher.cancel(d.handle)
                except FerryError as exc:
                    logger.warning("cancel of %s failed: %s", d.execution_id, exc.message)
            elif isinstance(d, m.Land) and wf is not None and wf.spec.produces:
                self.land_produced(wf, applied.run.parameter, now)

    def land_produced(self, wf: Workflow, parameter: str, now: datetime) -> None:
        endpoint = wf.spec.produces
        assert endpoint
        partition = parameter
        rec = self.manifests.get("Endpoint", endpoint)
        if rec is not None:
            declared = rec.model_as(Endpoint)
            if not may_produce(declared, wf.metadata.owner):  # checked at apply; the endpoint may have changed
                log.event(logger, log.ERROR, f"refused landing {endpoint} {parameter}: owned by {declared.metadata.owner}, "
                          f"not granted to {wf.metadata.owner}",
                          labels={"workflow": wf.name, "parameter": parameter, "endpoint": endpoint})
                return
            start = wf.spec.cadence().parse(parameter)
            partition = declared.spec.cadence().format(start)
        try:
            # An instance may be triggered ad hoc for a period still running: what it produced has landed.
            self.datamon.land(endpoint, partition, now=now, source="styx", allow_future=True)
        except FerryError as exc:
            log.event(logger, log.ERROR, f"could not land {endpoint} {partition}: {exc.message}",
                      labels={"workflow": wf.name, "parameter": parameter, "endpoint": endpoint})

    def change(self, workflow: str, parameter: str, make: Callable[[m.Run | None], m.Event], now: datetime,
               wf: Workflow | None = None, attempts: int = 5) -> m.Run:
        """Read, advance, commit; on a concurrent change read again (a person's command)."""
        if wf is None:
            wf, _ = self.workflow(workflow)
        policy = policy_of(wf.spec)
        for _ in range(attempts):
            before = self.repo.get(workflow, parameter)
            event = make(before)
            base = before or m.Run(workflow, parameter)
            if base.team != wf.metadata.owner:
                base = replace(base, team=wf.metadata.owner)
            try:
                applied = self.commit(base, event, now, policy, new=before is None)
            except Conflict:
                continue
            self.carry_out(applied, wf, now)
            return applied.run
        raise InfraError(f"instance {workflow} {parameter} kept changing; try again")

    # -- commands ------------------------------------------------------------------------------------
    def trigger(self, workflow: str, parameter: str, now: datetime, env: dict[str, str] | None = None,
                actor: str | None = None, trigger_type: str = "adhoc", trigger_id: str | None = None,
                ignore_deps: bool = False) -> m.Run:
        """Trigger an instance now (ad hoc; ``ignore_deps``: without waiting for its upstream
        partitions). Raises Conflict (409) if it is active."""
        wf, owner = self.workflow(workflow)
        self.authorizer.check(actor, [owner], "trigger")
        self.check_parameter(wf, parameter)
        trig = m.Trigger(trigger_type, trigger_id or f"{trigger_type}-{now.strftime('%Y%m%dT%H%M%S')}",
                         dict(env or {}), ignore_deps)

        def make(before: m.Run | None) -> m.Event:
            if before is not None and before.active:
                raise Conflict(f"instance {workflow} {parameter} is already active ({before.state}); "
                               f"halt it first or wait", {"state": str(before.state)})
            return m.TriggerExecution(f"triggered {trigger_type} by {actor or 'ferry'}"
                                      + (" ignoring its dependencies" if ignore_deps else ""), trigger=trig)
        return self.change(workflow, parameter, make, now, wf)

    def retry(self, workflow: str, parameter: str, now: datetime, actor: str | None = None,
              env: dict[str, str] | None = None) -> m.Run:
        """Re-queue an instance now: from QUEUED (skip the wait) or from DONE/ERROR (run again).

        ``env``: change the environment (merged over the last trigger's): the re-run is a new
        trigger of type ``retry`` carrying it, so the timeline shows what changed.
        """
        wf, owner = self.workflow(workflow)
        self.authorizer.check(actor, [owner], "retry")

        def make(before: m.Run | None) -> m.Event:
            if before is None:
                raise NotFound(f"no instance {workflow} {parameter} (trigger it first)")
            if before.state not in (m.State.QUEUED, *m.ENDED):
                raise m.IllegalTransition(f"instance {workflow} {parameter} is {before.state}; retry applies to "
                                          f"a QUEUED, DONE or ERROR instance", {"state": str(before.state)})
            if env:
                if before.state not in m.ENDED:
                    raise m.IllegalTransition(f"instance {workflow} {parameter} is {before.state}; a retry with "
                                              f"-e applies to a DONE or ERROR instance (halt it first)",
                                              {"state": str(before.state)})
                old = before.trigger
                trig = m.Trigger("retry", f"retry-{now.strftime('%Y%m%dT%H%M%S')}",
                                 {**(old.env if old else {}), **env})
                return m.TriggerExecution(f"retried by {actor or 'ferry'} with env {sorted(env)}", trigger=trig)
            return m.RetryAfter(f"retry requested by {actor or 'ferry'}", delay=timedelta(0),
                           reset_tries=True)
        return self.change(workflow, parameter, make, now, wf)

    def mark_done(self, workflow: str, parameter: str, now: datetime, actor: str | None = None,
                  reason: str | None = None) -> m.Run:
        """Mark an instance DONE without running it (its owning team only): from no instance, QUEUED or
        ERROR; recorded in its timeline with who and why, and its ``produces`` partition lands."""
        wf, owner = self.workflow(workflow)
        self.authorizer.check(actor, [owner], "mark done")
        self.check_parameter(wf, parameter)

        def make(before: m.Run | None) -> m.Event:
            state = before.state if before else m.State.NEW
            if state not in m.LEGAL[m.MarkDone]:
                raise m.IllegalTransition(f"instance {workflow} {parameter} is {state}; mark-done applies to a "
                                          f"QUEUED or ERROR instance (or none yet)", {"state": str(state)})
            return m.MarkDone(f"marked done by {actor or 'ferry'}" + (f": {reason}" if reason else ""))
        return self.change(workflow, parameter, make, now, wf)

    def halt(self, workflow: str, parameter: str, now: datetime, actor: str | None = None,
             reason: str | None = None, check: bool = True) -> m.Run:
        """Stop an active instance (cancelling its execution). Raises IllegalTransition if it ended."""
        rec = self.manifests.get("Workflow", workflow)
        wf = rec.model_as(Workflow) if rec else None
        if check:
            if rec is None:
                raise NotFound(f"workflow {workflow!r} not found")
            self.authorizer.check(actor, [rec.owner], "halt")

        def make(before: m.Run | None) -> m.Event:
            if before is None:
                raise NotFound(f"no instance {workflow} {parameter}")
            if not before.active:
                raise m.IllegalTransition(f"instance {workflow} {parameter} has ended ({before.state}); "
                                          f"nothing to halt", {"state": str(before.state)})
            return m.Halt(reason or f"halted by {actor or 'ferry'}")
        if wf is None:  # deleted workflow: halt with a default policy
            for _ in range(5):
                before = self.repo.get(workflow, parameter)
                try:
                    applied = self.commit(before or m.Run(workflow, parameter), make(before), now, m.Policy())
                except Conflict:
                    continue
                self.carry_out(applied, None, now)
                return applied.run
            raise InfraError(f"instance {workflow} {parameter} kept changing; try again")
        return self.change(workflow, parameter, make, now, wf)  # type: ignore[arg-type]

    def halt_active(self, workflow: str, now: datetime, reason: str, natural_only: bool = False) -> int:
        """Halt the active instances of a workflow (disabled or deleted). Returns how many."""
        n = 0
        after = None
        while True:
            page = self.repo.list(workflow, limit=500, after=after)
            for run in page:
                if run.active and (not natural_only or (run.trigger and run.trigger.type == "natural")):
                    try:
                        self.halt(workflow, run.parameter, now, reason=reason, check=False)
                        n += 1
                    except (m.IllegalTransition, NotFound):
                        pass
            if len(page) < 500:
                return n
            after = page[-1].parameter

    # -- reads -----------------------------------------------------------------------------------------
    def instances(self, workflow: str, limit: int = 100, after: str | None = None) -> list[dict[str, Any]]:
        self.workflow(workflow)
        return [instance_view(r) for r in self.repo.list(workflow, limit, after)]

    def instances_in_state(self, state: str, owner: str | None = None, since: datetime | None = None,
                           limit: int = 100) -> list[dict[str, Any]]:
        """Instances in ``state`` across workflows (of ``owner``'s workflows), newest change first:
        "what failed today" is ``state=ERROR`` with ``since`` = midnight."""
        try:
            wanted = str(m.State(state.upper()))
        except ValueError:
            raise BadRequest(f"unknown state {state!r}: one of {', '.join(s.value for s in m.State)}") from None
        names = None
        if owner:
            names = [r.name for r in self.manifests.all("Workflow", owner=owner)]
            if not names:
                return []
        return [instance_view(r) for r in self.repo.by_state(wanted, names, since, limit)]

    def instance(self, workflow: str, parameter: str) -> m.Run:
        run = self.repo.get(workflow, parameter)
        if run is None:
            self.workflow(workflow)
            raise NotFound(f"no instance {workflow} {parameter}")
        return run

    def timeline(self, workflow: str, parameter: str) -> dict[str, Any]:
        run = self.instance(workflow, parameter)
        return {"instance": instance_view(run), "triggers": build_timeline(self.repo.events(workflow, parameter))}

    def logs(self, workflow: str, parameter: str, limit: int = 200, execution: str | None = None) -> dict[str, Any]:
        run = self.instance(workflow, parameter)
        handle, execution_id, log_uri = run.handle, run.execution_id, run.log_uri
        if execution and execution != run.execution_id:
            found = execution_of(self.repo.events(workflow, parameter), execution)
            if found is None:
                raise NotFound(f"no execution {execution} of {workflow} {parameter}")
            handle, execution_id, log_uri = found.get("handle"), execution, found.get("log_uri")
        if not handle:
            raise NotFound(f"instance {workflow} {parameter} has no execution yet ({run.state})")
        return {"workflow": workflow, "parameter": parameter, "execution_id": execution_id, "log_uri": log_uri,
                "lines": self.launcher.logs(handle, limit)}

    # -- launching (used by the tick) --------------------------------------------------------------------
    def launch_spec(self, wf: Workflow, run: m.Run, execution_id: str) -> LaunchSpec:
        env = {**wf.spec.env, **(run.trigger.env if run.trigger else {}),
               "FERRY_WORKFLOW": wf.name, "FERRY_PARAMETER": run.parameter, "FERRY_EXECUTION_ID": execution_id,
               "FERRY_TRIGGER_TYPE": run.trigger.type if run.trigger else "",
               "FERRY_TRIGGER_ID": run.trigger.id if run.trigger else "", "FERRY_TRIES": str(run.tries),
               **self.input_env(wf, run.parameter)}
        return LaunchSpec(workflow=wf.name, parameter=run.parameter, execution_id=execution_id,
                          image=wf.spec.image, command=list(wf.spec.command),
                          args=[run.parameter if a == "{}" else a for a in wf.spec.args], env=env,
                          timeout=periods.parse_duration(wf.spec.timeout), cpu=wf.spec.cpu,
                          memory=wf.spec.memory, service_account=wf.spec.service_account,
                          labels={"ferry-workflow": slug(wf.name)[:63]})

    def input_env(self, wf: Workflow, parameter: str) -> dict[str, str]:
        """What an execution is told of its inputs (docs/styx.md, "Inputs"): per ``depends_on`` endpoint
        the landed partitions it waited for and where they are, so a job reads them without knowing
        Ferry's layout — ``FERRY_INPUT_<ENDPOINT>`` (the locations, space-separated),
        ``FERRY_INPUT_<ENDPOINT>_PARTITIONS``, ``FERRY_INPUT_<ENDPOINT>_TABLE`` (event endpoints: the
        table ``events.<type>``), and all of it as JSON in ``FERRY_INPUTS``."""
        cadence = wf.spec.cadence()
        inputs = []
        out: dict[str, str] = {}
        for endpoint in wf.spec.depends_on:
            wanted = upstream_partitions(cadence, parameter, self.upstream_cadence(endpoint) or cadence)
            where = self.datamon.locations(endpoint, wanted)
            partitions = [p for p in wanted if p in where]
            locations = [str(where[p]) for p in partitions if where[p]]
            key = "FERRY_INPUT_" + re.sub(r"[^A-Z0-9]", "_", endpoint.upper())
            out[key] = " ".join(locations)
            out[f"{key}_PARTITIONS"] = " ".join(partitions)
            item: dict[str, Any] = {"endpoint": endpoint, "partitions": partitions, "locations": locations}
            event_type = event_type_of(endpoint)
            if event_type is not None:
                item["table"] = out[f"{key}_TABLE"] = "events." + event_type.replace("-", "_").replace(".", "_")
            inputs.append(item)
        out["FERRY_INPUTS"] = json.dumps(inputs, separators=(",", ":"))
        return out

    def gate(self, wf: Workflow, parameter: str) -> list[str]:
        """The upstream partitions (``endpoint partition``) not landed yet; empty = may launch."""
        missing: list[str] = []
        cadence = wf.spec.cadence()
        for endpoint in wf.spec.depends_on:
            upstream = self.upstream_cadence(endpoint) or cadence
            wanted = upstream_partitions(cadence, parameter, upstream)
            have = self.datamon.landed(endpoint, wanted)
            missing += [f"{endpoint} {p}" for p in wanted if p not in have]
        return missing

    def upstream_cadence(self, endpoint: str) -> periods.Cadence | None:
        rec = self.manifests.get("Endpoint", endpoint)
        if rec is not None:
            return rec.model_as(Endpoint).spec.cadence()
        event_type = event_type_of(endpoint)
        if event_type is not None:
            et = self.manifests.get("EventType", event_type)
            if et is not None:
                return periods.partitioning(et.model_as(EventType).spec.partitioning, "UTC")
        return None


def execution_of(events: Sequence[dict[str, Any]], execution: str) -> dict[str, Any] | None:
    """The launcher's handle and log link of one execution, from the event log: ``submit`` names
    the execution id, the ``submitted`` after it carries the handle. None if it never ran."""
    submitted: dict[str, Any] | None = None
    current = None
    for e in events:
        if e["event"] == "submit":
            current = e.get("execution_id")
            if current == execution:
                submitted = {"handle": None, "log_uri": None}
        elif e["event"] == "submitted" and current == execution and submitted is not None:
            submitted = {"handle": e.get("handle"), "log_uri": e.get("log_uri")}
    return submitted


def instance_view(run: m.Run) -> dict[str, Any]:
    return {"workflow": run.workflow, "parameter": run.parameter, "state": str(run.state), "active": run.active,
            "trigger": run.trigger.to_doc() if run.trigger else None, "backfill": run.backfill,
            "tries": run.tries, "spent": run.spent, "execution_id": run.execution_id, "exit_code": run.exit_code,
            "message": run.message, "log_uri": run.log_uri, "due_at": iso(run.due_at),
            "deadline": iso(run.deadline), "slots": list(run.slots), "updated_at": iso(run.updated_at),
            "counter": run.counter}


def build_timeline(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Triggers -> executions -> statuses, from the event log (oldest first)."""
    triggers: list[dict[str, Any]] = []
    execution: dict[str, Any] | None = None
    for e in events:
        at = iso(e.get("at"))
        status = {"counter": e["counter"], "event": e["event"], "state": e["state"], "at": at,
                  "message": e.get("message", "")}
        for key in ("delay_seconds", "ran_seconds"):
            if key in e:
                status[key] = e[key]
        if e["event"] == "triggerExecution" or not triggers:
            trig = e.get("trigger") or {}
            triggers.append({"trigger_type": trig.get("type"), "trigger_id": trig.get("id"),
                             "env": trig.get("env") or {}, "ignore_deps": bool(trig.get("ignore_deps")),
                             "at": at, "events": [], "executions": []})
            execution = None
        current = triggers[-1]
        if e["event"] == "submit":
            execution = {"execution_id": e.get("execution_id"), "image": e.get("image"), "log_uri": None,
                         "exit_code": None, "statuses": []}
            current["executions"].append(execution)
        if execution is not None and e["event"] in ("submit", "resubmit", "submitted", "started", "terminate",
                                                    "runError", "timeout", "halt", "success", "retryAfter", "stop"):
            execution["statuses"].append(status)
            if e.get("log_uri"):
                execution["log_uri"] = e["log_uri"]
            if e["event"] == "terminate":
                execution["exit_code"] = e.get("exit_code")
            if e.get("ran_seconds") is not None:
                execution["ran_seconds"] = e["ran_seconds"]  # the job's own run time (the platform's clock)
            if e["event"] in ("retryAfter", "stop", "success", "halt"):
                execution = None  # the execution is over; later events belong to the trigger
        else:
            current["events"].append(status)
    return triggers
