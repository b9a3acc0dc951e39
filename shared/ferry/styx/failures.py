"""Owners told when a run fails (docs/styx.md, "When a run fails").

An instance that ends ERROR by itself (out of tries, exit 50, a timeout or a run error on its last
try; not a halt) opens **one incident per workflow** for its owning team, through the same alerts
topic and ``notify`` path as Datamon's (``notify.messages.alert_message``). More failures of the
workflow join the open incident without a notification (a backfill of 500 failing instances pages
once); it is re-notified every ``spec.alerts.renotify_after`` while nobody acknowledged it, and
resolved when an instance of the workflow next succeeds. Silences (of the team, or naming the
workflow or the endpoint it produces) hold its notifications back; one still open when the silence
ends is re-notified. ``ferry alerts`` lists the incident and ``ferry ack`` acknowledges it: it is a
document of Datamon's alerts collection (``kind: workflow-failure``), as Gabo's missing-events alerts are.

Crash safety: each notification is claimed exactly once by creating ``datamon_notifications/{id}#{seq}``
in the same commit as the incident change (a tick that loses the race writes nothing and sends
nothing); the claim holds the message and ``sent: False`` until published, so a tick that dies in
between is repaired by Datamon's outbox (``redeliver``) — at least once, under the same
``notification_id``, which ``notify`` delivers once. The workflow's pointer to its open incident
(``styx_workflows/{name}.incident``) changes only under a precondition on the version read, and a
new incident's document is created (its id carries its number), so two ticks never open two.

The tick collects the ends of one tick (``record``, from any thread) and settles them per workflow
once (``flush``): one query of the open incidents, then a read of each failing workflow's state.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from ferry import log
from ferry.broker.base import Message
from ferry.domain import periods
from ferry.domain.manifests import SLA_SEVERITY, Workflow
from ferry.errors import Conflict, FerryError
from ferry.notify import messages as msgs
from ferry.store.base import DocumentStore, Op, Where
from ferry.store.manifests import ManifestRepository
from ferry.styx import machine as m
from ferry.styx.repository import WORKFLOWS

if TYPE_CHECKING:
    from ferry.broker.base import Publisher

logger = log.get("styx.alerts")

ALERTS = "datamon_alerts"                # listed by `ferry alerts`, acknowledged by `ferry ack`
NOTIFICATIONS = "datamon_notifications"  # Datamon's outbox: unsent claims are re-published
SILENCES = "datamon_silences"
KIND = "workflow-failure"
SOURCE = "ferry-styx"

Action = Literal["trigger", "renotify", "resolve"]


def incident_id(workflow: str, number: int) -> str:
    return f"styx:{workflow}~{number}"


@dataclass(frozen=True)
class Ended:
    """An instance that ended this tick: failed (ERROR by itself) or succeeded."""

    failed: bool
    parameter: str
    at: datetime
    message: str = ""


@dataclass(frozen=True)
class Note:
    """A notification to send: the incident document as it is after it."""

    action: Action
    doc: dict[str, Any]

    @property
    def claim_id(self) -> str:
        return f"{self.doc['id']}#{self.doc['seq']}"


@dataclass
class Outcome:
    incident: dict[str, Any] | None            # the open incident after (None: none open)
    number: int                                # incidents opened for the workflow so far
    writes: dict[str, dict[str, Any]] = field(default_factory=dict)  # incident id -> its document
    notes: list[Note] = field(default_factory=list)


def decide(incident: dict[str, Any] | None, number: int, ended: list[Ended], *, workflow: str, owner: str,
           severity: str, tier: str, renotify_after: timedelta, silenced: bool, now: datetime) -> Outcome:
    """Pure: the workflow's open incident after ``ended`` (oldest first) and the notifications due.

    A failure opens an incident (or joins the open one: no notification); a success resolves the
    open one; an open incident not acknowledged is re-notified when ``renotify_after`` passed since
    its last notification, or when it was held by a silence that is over. While ``silenced``,
    triggers and re-notifications are held (recorded, not sent); a resolve of an incident never
    sent is held too."""
    out = Outcome(incident, number)
    cur = dict(incident) if incident else None
    for e in ended:
        if e.failed:
            if cur is None:
                out.number += 1
                cur = {"id": incident_id(workflow, out.number), "kind": KIND, "workflow": workflow,
                       "endpoint": workflow, "owner": owner, "severity": severity, "tier": tier, "level": "late",
                       "number": out.number, "open": True, "acked": False, "seq": 1, "opened_at": now,
                       "notified_at": now, "resolved_at": None, "count": 1, "oldest": e.parameter,
                       "newest": e.parameter, "last_error": e.message, "held": silenced, "sent": not silenced}
                cur["summary"] = _summary("trigger", cur)
                out.writes[cur["id"]] = cur
                if not silenced:
                    out.notes.append(Note("trigger", dict(cur)))
            else:
                cur = {**cur, "count": int(cur.get("count", 0)) + 1, "newest": e.parameter, "last_error": e.message}
                cur["summary"] = _summary("trigger", cur)
                out.writes[cur["id"]] = cur
        elif cur is not None:
            done = {**cur, "open": False, "resolved_at": now, "seq": int(cur["seq"]) + 1, "resolved_by": e.parameter}
            done["summary"] = _summary("resolve", done)
            out.writes[done["id"]] = done
            if cur.get("sent", True):
                out.notes.append(Note("resolve", dict(done)))
            cur = None
    if cur is not None and not cur.get("acked") and not any(n.doc["id"] == cur["id"] for n in out.notes):
        notified = _utc(cur["notified_at"])
        if (cur.get("held") and not silenced) or now - notified >= renotify_after:
            cur = {**cur, "seq": int(cur["seq"]) + 1, "notified_at": now, "held": silenced,
                   "sent": bool(cur.get("sent")) or not silenced}
            cur["summary"] = _summary("renotify", cur)
            out.writes[cur["id"]] = cur
            if not silenced:
                out.notes.append(Note("renotify", dict(cur)))
    out.incident = cur
    return out


def _summary(action: Action, d: dict[str, Any]) -> str:
    n = int(d.get("count", 1))
    span = d["oldest"] if n == 1 else f"{n} instances failed, first {d['oldest']}, last {d['newest']}"
    if action == "resolve":
        return f"workflow {d['workflow']} resolved: {d.get('resolved_by')} succeeded ({span})"
    prefix = "still failing: " if action == "renotify" else ""
    error = f": {d['last_error']}" if d.get("last_error") else ""
    return f"{prefix}workflow {d['workflow']} failed ({span}){error} (owner {d['owner']})"


def _utc(v: Any) -> datetime:
    if isinstance(v, str):
        v = datetime.fromisoformat(v)
    assert isinstance(v, datetime)
    return v if v.tzinfo else v.replace(tzinfo=UTC)


def failed_by_itself(applied_log: tuple[tuple[m.Event, m.Run], ...]) -> bool:
    """The change ended the instance in ERROR by itself: a ``stop`` (out of tries, exit 50), not a halt."""
    return any(isinstance(ev, m.Stop) for ev, _ in applied_log) and applied_log[-1][1].state == m.State.ERROR


def succeeded(applied_log: tuple[tuple[m.Event, m.Run], ...]) -> bool:
    return any(isinstance(ev, m.Success) for ev, _ in applied_log)


class FailureAlerts:
    """One tick's failure alerts: ``record`` the ends as they are committed, ``flush`` once."""

    def __init__(self, store: DocumentStore, publisher: Publisher) -> None:
        self.store = store
        self.manifests = ManifestRepository(store)
        self.publisher = publisher
        self._ended: dict[str, list[Ended]] = {}
        self._wfs: dict[str, Workflow] = {}
        self._lock = threading.Lock()

    def record(self, run: m.Run, log_: tuple[tuple[m.Event, m.Run], ...], wf: Workflow | None, now: datetime) -> None:
        """Note an instance's end (thread-safe); nothing is read or written until ``flush``."""
        if wf is None or wf.spec.alerts.severity == "off":
            return
        failed = failed_by_itself(log_)
        if not failed and not succeeded(log_):
            return
        with self._lock:
            self._ended.setdefault(wf.name, []).append(Ended(failed, run.parameter, now, run.message))
            self._wfs[wf.name] = wf

    def flush(self, now: datetime, open_incidents: dict[str, dict[str, Any]] | None = None) -> dict[str, int]:
        """Settle the recorded ends, and re-notify the open incidents that are due. Returns counts."""
        with self._lock:
            ended, self._ended = self._ended, {}
            wfs = dict(self._wfs)
        counts = {"trigger": 0, "renotify": 0, "resolve": 0}
        if open_incidents is None:
            open_incidents = self.open_incidents()
        todo = {name for name, e in ended.items() if any(x.failed for x in e) or name in open_incidents}
        quiet = [d for name, d in open_incidents.items() if name not in todo]
        if not todo and not quiet:
            return counts
        silences = [d for _, d in self.store.query(SILENCES, [Where("until", ">", now)])]
        for d in quiet:  # no end this tick: settled only when a re-notification may be due
            silenced = any(s.get("owner") == d.get("owner") or s.get("endpoint") == d["workflow"] for s in silences)
            if not d.get("acked") and (d.get("held") and not silenced or self._renotify_due(d, now)):
                todo.add(d["workflow"])
        if not todo:
            return counts
        missing = sorted(todo - set(wfs))
        if missing:
            for name, rec in self.manifests.get_many("Workflow", missing).items():
                wfs[name] = rec.model_as(Workflow)
        for name in sorted(todo):
            wf = wfs.get(name)
            if wf is None or wf.spec.alerts.severity == "off":
                continue
            try:
                for note in self._settle(wf, ended.get(name, []), silences, now):
                    counts[note.action] += 1
            except Exception as exc:  # one workflow's alert is its own: the others go on
                log.event(logger, log.ERROR, f"failure alert of workflow {name} not settled: {exc}",
                          labels={"workflow": name})
        return counts

    def _renotify_due(self, d: dict[str, Any], now: datetime) -> bool:
        wf = self._wfs.get(d["workflow"])
        after = periods.parse_duration(wf.spec.alerts.renotify_after) if wf else timedelta(0)
        return now - _utc(d["notified_at"]) >= after

    def open_incidents(self) -> dict[str, dict[str, Any]]:
        """The open workflow-failure incidents, by workflow (one query; usually a handful)."""
        rows = self.store.query(ALERTS, [Where("kind", "==", KIND), Where("open", "==", True)], limit=1000)
        return {d["workflow"]: d for _, d in rows}

    def _settle(self, wf: Workflow, ended: list[Ended], silences: list[dict[str, Any]], now: datetime) -> list[Note]:
        owner = str(wf.metadata.owner)
        tier = wf.spec.alerts.severity
        severity = SLA_SEVERITY.get(tier, "error")
        silenced = any(s.get("owner") == owner or s.get("endpoint") in (wf.name, wf.spec.produces) for s in silences)
        for _ in range(5):
            got = self.store.get_versioned(WORKFLOWS, [wf.name]).get(wf.name)
            if got is None:
                return []  # deleted meanwhile
            state, version = got
            current_id = state.get("incident")
            incident = self.store.get(ALERTS, current_id) if current_id else None
            if incident is not None and not incident.get("open"):
                incident = None
            out = decide(incident, int(state.get("incidents") or 0), sorted(ended, key=lambda e: e.at),
                         workflow=wf.name, owner=owner, severity=severity, tier=tier,
                         renotify_after=periods.parse_duration(wf.spec.alerts.renotify_after),
                         silenced=silenced, now=now)
            if not out.writes:
                return []
            ops: list[Op] = []
            new_id = out.incident["id"] if out.incident else None
            if new_id != current_id or out.number != int(state.get("incidents") or 0):
                # the whole document under a precondition on the version read (Firestore takes no merge there)
                ops.append(Op.set(WORKFLOWS, wf.name, {**state, "incident": new_id, "incidents": out.number},
                                  if_version=version))
            for iid, doc in out.writes.items():
                ops.append(Op.create(ALERTS, iid, doc) if iid != current_id else Op.set(ALERTS, iid, doc, merge=True))
            notes = {n.claim_id: n for n in out.notes}  # a trigger and its resolve in one tick: both sent
            messages = {cid: self._message(wf, n) for cid, n in notes.items()}
            for cid, n in notes.items():
                msg = messages[cid]
                ops.append(Op.create(NOTIFICATIONS, cid, {
                    "alert": n.doc["id"], "seq": n.doc["seq"], "action": n.action, "at": now, "sent": False,
                    "data": msg.data.decode(), "attributes": msg.attributes, "workflow": wf.name}))
            try:
                self.store.write(ops)
            except Conflict:
                continue  # another tick changed the incident (or sent this notification): read again
            for n in notes.values():
                log.event(logger, log.ERROR if n.action != "resolve" else log.WARNING, n.doc["summary"],
                          labels={"workflow": wf.name, "owner": owner},
                          alert={"dedup_key": n.doc["id"], "action": n.action, "severity": severity})
            if messages:
                try:
                    self.publisher.publish(msgs.ALERTS_TOPIC, list(messages.values()))
                except FerryError as exc:  # claimed: Datamon's outbox publishes it later
                    log.event(logger, log.ERROR, f"failure alert of {wf.name} not published yet: {exc}",
                              labels={"workflow": wf.name})
                    return list(notes.values())
                self.store.write([Op.set(NOTIFICATIONS, cid, {"sent": True}, merge=True) for cid in messages])
            return list(notes.values())
        raise Conflict(f"the failure incident of {wf.name} kept changing")

    @staticmethod
    def _message(wf: Workflow, n: Note) -> Message:
        d = n.doc
        m_ = msgs.alert_message(
            str(wf.metadata.owner), d["id"], d["summary"], severity=d["severity"],
            action="resolve" if n.action == "resolve" else "trigger", kind=KIND, subject=wf.name, source=SOURCE,
            details={"workflow": wf.name, "incident": d["id"], "transition": n.action, "failed_instances": d["count"],
                     "first_failed": d["oldest"], "last_failed": d["newest"], "last_error": d.get("last_error", ""),
                     "severity_tier": d["tier"], "opened_at": _utc(d["opened_at"]).isoformat()},
            notification_id=n.claim_id)
        return Message(m_.data, {**m_.attributes, "kind": KIND, "alert": d["id"], "workflow": wf.name})

