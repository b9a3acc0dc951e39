"""Datamon's use cases: land partitions, evaluate SLAs, alerts, the unified view.

Producers (the API, the CLI, the partitions topic, Styx, Gabo) all report through ``land``; the
evaluator (``evaluate``) is what the scheduler fires.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ferry import log
from ferry.broker.base import Message
from ferry.datamon import domain
from ferry.datamon.repository import (
    ALERTS,
    ENDPOINTS,
    LINEAGE,
    META,
    NOTIFICATIONS,
    DatamonRepository,
    alert_document,
    alert_id,
)
from ferry.domain.manifests import Endpoint
from ferry.errors import Conflict, NotFound
from ferry.store.base import MAX_BATCH, Op, Where
from ferry.store.manifests import ManifestRecord

if TYPE_CHECKING:
    from ferry.bootstrap import Services

logger = log.get("datamon")


# -- evaluation ------------------------------------------------------------------------------------

ALERTS_TOPIC = "ferry-alerts"
# Manifests applied with a clock a little behind the evaluator's are still picked up.
SYNC_SLACK = timedelta(minutes=10)


def _sync(services: Services, now: datetime) -> set[str]:
    """Bring the summaries' policies up to date with the endpoint and workflow manifests changed
    since the last sync (a query by ``updated_at``, so reads grow with changes, not with endpoints).

    Catches endpoints however they were written (``ferry apply``, or Gabo registering
    ``events.<type>``). Returns the names of endpoints (re)registered.
    """
    store = services.store
    meta = store.get(META, "evaluator") or {}
    cursor = domain._utc(meta.get("synced_until")) or domain.EPOCH
    since = cursor
    changed = [ManifestRecord.from_doc(d) for _, d in store.query("endpoints", [Where("updated_at", ">=", since)])]
    workflows = [ManifestRecord.from_doc(d) for _, d in store.query("workflows", [Where("updated_at", ">=", since)])]
    ops: list[Op] = []
    touched: set[str] = set()
    newest = cursor
    if changed:
        current = store.get_many(ENDPOINTS, [r.name for r in changed])
        for rec in changed:
            newest = max(newest, domain._utc(rec.updated_at) or newest)
            old = current.get(rec.name) or {}
            if old.get("generation") == rec.generation and "next_check" in old:
                continue
            model = rec.model()
            assert isinstance(model, Endpoint)
            policy = domain.Policy.from_spec(rec.name, rec.owner or "", model.spec, rec.generation)
            doc = policy.to_doc()
            first = domain.first_expected(policy, domain._utc(rec.created_at) or now)
            doc.update({"registered_at": rec.created_at, "watermark": first, "landed_beyond": [],
                        "next_check": domain.EPOCH, "upstream_all": _upstream_all(doc, old)})
            doc.setdefault("open", old.get("open") or [])
            ops.append(Op.set(ENDPOINTS, rec.name, doc, merge=True))
            touched.add(rec.name)
    if workflows:
        lineage = store.get_many(LINEAGE, [w.name for w in workflows])
        targets: dict[str, dict[str, list[str]]] = {}
        for rec in workflows:
            newest = max(newest, domain._utc(rec.updated_at) or newest)
            spec = rec.manifest.get("spec", {})
            produces, deps = spec.get("produces"), list(spec.get("depends_on") or [])
            old = lineage.get(rec.name) or {}
            if old.get("produces") == produces and old.get("depends_on") == deps:
                continue
            if old.get("produces") and old["produces"] != produces:
                targets.setdefault(old["produces"], {})[rec.name] = []
            if produces:
                targets.setdefault(produces, {})[rec.name] = deps
            ops.append(Op.set(LINEAGE, rec.name, {"produces": produces, "depends_on": deps}))
        if targets:
            summaries = store.get_many(ENDPOINTS, sorted(targets))
            for name, derived in targets.items():
                old = summaries.get(name) or {}
                merged = {**(old.get("derived_upstream") or {}), **derived}
                patch = {"derived_upstream": merged, "next_check": domain.EPOCH,
                         "upstream_all": _upstream_all({"upstream": old.get("upstream")}, {"derived_upstream": merged})}
                ops.append(Op.set(ENDPOINTS, name, patch, merge=True))
                touched.add(name)
    # The cursor moves past a change only once the slack has passed (in one write), so a change
    # written late with an older clock is still seen, and quiet evaluations write nothing.
    if newest > cursor and now - SYNC_SLACK >= newest:
        ops.append(Op.set(META, "evaluator", {"synced_until": newest + timedelta(microseconds=1)}, merge=True))
    if ops:
        store.write(ops)
    return touched


def _upstream_all(doc: dict[str, Any], old: dict[str, Any]) -> list[str]:
    derived = (doc.get("derived_upstream") or old.get("derived_upstream") or {}).values()
    return list(dict.fromkeys([*(doc.get("upstream") or []), *(u for deps in derived for u in deps)]))


def _bad_periods(policy: domain.Policy, summary: domain.Summary) -> list[tuple[datetime, datetime]]:
    cadence = policy.cadence
    return [(e.start, cadence.next(e.start)) for e in summary.open
            if e.state in (domain.State.LATE, domain.State.AT_RISK)]


def _order(names: Sequence[str], policies: dict[str, domain.Policy]) -> list[str]:
    """Upstream before downstream among the endpoints evaluated together (cycles: any order)."""
    pending = set(names)
    out: list[str] = []
    while pending:
        ready = sorted(n for n in pending if not any(u in pending and u != n for u in policies[n].upstream))
        if not ready:
            ready = [sorted(pending)[0]]
        for n in ready:
            out.append(n)
            pending.discard(n)
    return out


def _comparable(doc: dict[str, Any]) -> Any:
    def norm(v: Any) -> Any:
        if isinstance(v, datetime):
            return v.timestamp()
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            return [norm(x) for x in v]
        return v
    return norm(doc)


def evaluate(services: Services, *, now: datetime) -> dict[str, Any]:
    """Run one SLA evaluation: every due or open endpoint's partitions get a state; alert
    transitions are claimed, published to ``ferry-alerts`` and logged.

    Safe when two evaluators overlap: every notification is first claimed by ``Op.create`` of a
    document with a deterministic id (``{alert}#{seq}``); only the evaluator whose claim succeeds
    publishes, the other records the same state without notifying. Writes happen only when a
    summary or alert changed, so an evaluation with nothing new writes nothing.

    Returns:
        counts of endpoints, partitions and notifications, and the reads/writes it cost.
    """
    started = time.monotonic()
    store = services.store
    before = store.stats.snapshot()
    synced = _sync(services, now)
    redelivered = _redeliver(services, now)
    due = dict(store.query(ENDPOINTS, [Where("next_check", "<=", now)], order_by="next_check"))
    rounds = 0
    totals = {"endpoints": 0, "partitions": 0, "trigger": 0, "escalate": 0, "resolve": 0, "renotify": 0,
              "duplicates_skipped": 0}
    states: dict[str, int] = {}
    done: set[str] = set()
    fresh: dict[str, tuple[domain.Policy, domain.Summary]] = {}
    while due and rounds < 3:
        rounds += 1
        newly_late = _evaluate_batch(services, due, fresh, now, totals, states)
        done.update(due)
        due = {}
        if newly_late:
            # Early warning: endpoints downstream of a partition that just went late are looked at now.
            for name in sorted(newly_late):
                for did, doc in store.query(ENDPOINTS, [Where("upstream_all", "array_contains", name)]):
                    if did not in done:
                        due[did] = doc
    io = store.stats.since(before)
    result = {"now": now.isoformat(), "synced": len(synced), "endpoints": totals["endpoints"],
              "partitions": totals["partitions"], "states": states,
              "notifications": {k: totals[k] for k in ("trigger", "escalate", "resolve", "renotify")},
              "duplicates_skipped": totals["duplicates_skipped"], "redelivered": redelivered, "reads": io["reads"], "writes": io["writes"],
              "duration_ms": int((time.monotonic() - started) * 1000)}
    log.event(logger, 20, f"evaluated {result['endpoints']} endpoints: {io['reads']} reads, {io['writes']} writes",
              labels={"component": "datamon-evaluator"}, evaluation=result)
    return result


def _evaluate_batch(services: Services, due: dict[str, dict[str, Any]],
                    fresh: dict[str, tuple[domain.Policy, domain.Summary]], now: datetime,
                    totals: dict[str, int], states: dict[str, int]) -> set[str]:
    store = services.store
    policies: dict[str, domain.Policy] = {}
    summaries: dict[str, domain.Summary] = {}
    for name, doc in due.items():
        if "partitioning" not in doc:
            continue  # only a landing's `latest` so far: registered at the next sync
        policy = domain.Policy.from_doc({**doc, "name": name})
        policies[name] = policy
        summaries[name] = domain.Summary.from_doc(
            doc, domain.first_expected(policy, domain._utc(doc.get("registered_at")) or now))
    # Upstream state: from this run when evaluated already, else as stored.
    upstream_names = sorted({u for p in policies.values() for u in p.upstream} - set(policies) - set(fresh))
    upstream_docs = store.get_many(ENDPOINTS, upstream_names) if upstream_names else {}
    bad_of: dict[str, list[tuple[datetime, datetime]]] = {}
    for name, doc in upstream_docs.items():
        if "partitioning" in doc:
            up = domain.Policy.from_doc({**doc, "name": name})
            bad_of[name] = _bad_periods(up, domain.Summary.from_doc(doc, domain.EPOCH))
    for name, (up, summary) in fresh.items():
        bad_of[name] = _bad_periods(up, summary)

    order = _order(list(policies), policies)
    # Reads for all due endpoints at once: landings, and alerts whose re-notification is due (ack?).
    # Upstreams evaluated in this batch may add bad periods later; the few partitions that only
    # become candidates because of them are read then.
    def bad_for(name: str) -> list[tuple[datetime, datetime]]:
        return [b for u in policies[name].upstream for b in bad_of.get(u, [])]

    wanted = {n: domain.wanted(policies[n], summaries[n], now, bad_for(n)) for n in order}
    landed_docs = DatamonRepository(store).partitions_multi(wanted) if any(wanted.values()) else {}
    renotify = [alert_id(n, e.partition) for n in order for e in summaries[n].open
                if e.alert and not e.alert.acked and now - e.alert.notified_at >= policies[n].renotify_after]
    alert_docs = store.get_many(ALERTS, renotify) if renotify else {}
    acked_of: dict[str, set[str]] = {}
    for d in alert_docs.values():
        if d.get("acked"):
            acked_of.setdefault(d["endpoint"], set()).add(d["partition"])

    outcomes: dict[str, domain.Outcome] = {}
    newly_late: set[str] = set()
    for name in order:
        policy, summary = policies[name], summaries[name]
        bad = bad_for(name)
        extra = [p for p in domain.wanted(policy, summary, now, bad) if p not in wanted[name]]
        landed_here = dict(landed_docs.get(name, {}))
        if extra:
            landed_here.update(DatamonRepository(store).partitions(name, extra))
        landed_at = {p: domain._utc(d["landed_at"]) for p, d in landed_here.items()}
        outcome = domain.evaluate_endpoint(policy, summary, landed_at,  # type: ignore[arg-type]
                                           acked_of.get(name, set()), bad, now)
        outcomes[name] = outcome
        fresh[name] = (policy, outcome.summary)
        bad_of[name] = _bad_periods(policy, outcome.summary)
        if outcome.newly_late:
            newly_late.add(name)
        totals["endpoints"] += 1
        totals["partitions"] += len(outcome.states)
        for st in outcome.states.values():
            states[st.value] = states.get(st.value, 0) + 1

    decisions = [(n, d) for n in order for d in outcomes[n].decisions]
    won = _claim(store, decisions, now)
    totals["duplicates_skipped"] += len(decisions) - len(won)
    _notify(services, [d for d in decisions if id(d[1]) in won], policies, totals)

    ops: list[Op] = []
    for name, decision in decisions:
        ops.append(Op.set(ALERTS, alert_id(name, decision.notification.partition), alert_document(decision),
                          merge=True))
    for name in order:
        new = outcomes[name].summary.to_doc()
        new["upstream_all"] = list(policies[name].upstream)  # declared and derived: for downstream queries
        latest = _latest(policies[name], outcomes[name], due[name].get("latest"))
        if latest is not None:
            new["latest"] = latest
        old = {k: due[name].get(k) for k in new}
        if _comparable(old) != _comparable(new):
            ops.append(Op.set(ENDPOINTS, name, new, merge=True))
    store.write(ops)
    return newly_late


def _latest(policy: domain.Policy, outcome: domain.Outcome, latest: dict[str, Any] | None) -> dict[str, Any] | None:
    """The newest landed partition seen, if newer than the summary's (corrects racing landings)."""
    cadence = policy.cadence
    landed = [p for p, st in outcome.states.items() if st in (domain.State.OK, domain.State.LANDED_LATE)]
    if not landed:
        return None
    newest = max(landed, key=cadence.parse)
    start = cadence.parse(newest)
    if latest and latest.get("start") is not None and domain._utc(latest["start"]) >= start:  # type: ignore[operator]
        return None
    return {"partition": newest, "start": start, "end": cadence.next(start),
            "landed_at": latest.get("landed_at") if latest else None}


def _claim_id(name: str, d: domain.Decision) -> str:
    return f"{alert_id(name, d.notification.partition)}#{d.seq}"


def _message(name: str, d: domain.Decision) -> Message:
    n = d.notification
    event = n.to_event()
    return Message(json.dumps(event, default=str).encode(),
                   {"dedup_key": n.dedup_key, "event_action": event["event_action"],
                    "endpoint": name, "owner": n.owner, "severity": n.severity})


def _claim(store: Any, decisions: Sequence[tuple[str, domain.Decision]], now: datetime) -> set[int]:
    """Claim each notification exactly once across evaluators (``Op.create`` on ``{alert}#{seq}``).

    The claim is also an outbox entry: it holds the message and ``sent: False`` until the publish is
    confirmed, so a crash between claim and publish is repaired by the next evaluation
    (``_redeliver``) instead of losing the notification.

    One batch normally; when a batch hits a Conflict (another evaluator won some), claims are retried
    one by one to learn which. Returns the ids of the decisions this evaluator won.
    """
    won: set[int] = set()

    def op(n: str, d: domain.Decision) -> Op:
        msg = _message(n, d)
        return Op.create(NOTIFICATIONS, _claim_id(n, d),
                         {"alert": alert_id(n, d.notification.partition), "seq": d.seq,
                          "action": d.notification.action.value, "at": now, "sent": False,
                          "data": msg.data.decode(), "attributes": msg.attributes})

    for i in range(0, len(decisions), MAX_BATCH):
        chunk = decisions[i:i + MAX_BATCH]
        try:
            store.write([op(n, d) for n, d in chunk])
            won.update(id(d) for _, d in chunk)
        except Conflict:
            for n, d in chunk:
                try:
                    store.write([op(n, d)])
                    won.add(id(d))
                except Conflict:
                    continue
    return won


def _notify(services: Services, decisions: Sequence[tuple[str, domain.Decision]],
            policies: dict[str, domain.Policy], totals: dict[str, int]) -> None:
    if not decisions:
        return
    messages = []
    for name, d in decisions:
        n = d.notification
        messages.append(_message(name, d))
        totals[n.action.value] += 1
        level = 40 if d.pages_late else 30
        log.event(logger, level, n.summary, labels={"endpoint": name, "owner": n.owner, "partition": n.partition},
                  alert={"dedup_key": n.dedup_key, "action": n.action.value, "severity": n.severity,
                         "overdue_seconds": n.overdue_seconds, "tier": policies[name].severity})
    services.publisher.publish(ALERTS_TOPIC, messages)
    # Confirmed: close the outbox entries (a crash before this line makes the next evaluation
    # publish them again — at least once, and PagerDuty's dedup_key makes a repeat harmless).
    services.store.write([Op.set(NOTIFICATIONS, _claim_id(name, d), {"sent": True}, merge=True)
                          for name, d in decisions])


# A claim still unsent after this long belongs to an evaluator that died before publishing.
OUTBOX_GRACE = timedelta(minutes=2)


def _redeliver(services: Services, now: datetime) -> int:
    """Publish notifications whose evaluator crashed between claim and publish (one query, ~0 docs)."""
    store = services.store
    stale = [(i, d) for i, d in store.query(NOTIFICATIONS, [Where("sent", "==", False)], limit=500)
             if domain._utc(d["at"]) <= now - OUTBOX_GRACE]  # type: ignore[operator]
    if not stale:
        return 0
    services.publisher.publish(ALERTS_TOPIC, [Message(d["data"].encode(), dict(d.get("attributes") or {}))
                                              for _, d in stale])
    store.write([Op.set(NOTIFICATIONS, i, {"sent": True}, merge=True) for i, _ in stale])
    log.event(logger, 30, f"re-published {len(stale)} notification(s) left unsent by a crashed evaluator",
              labels={"component": "datamon-evaluator"})
    return len(stale)


# -- alerts and the unified view -------------------------------------------------------------------

def _iso(v: Any) -> Any:
    if isinstance(v, datetime):
        return domain._utc(v).isoformat()  # type: ignore[union-attr]
    return v


def _alert_api(doc: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "dedup_key", "endpoint", "partition", "owner", "level", "severity", "tier", "state", "open",
            "acked", "acked_by", "acked_at", "opened_at", "escalated_at", "notified_at", "resolved_at",
            "landed_at", "overdue_seconds", "seq", "summary", "deadline")
    return {k: _iso(doc.get(k)) for k in keys if k in doc}


def alerts(services: Services, *, owner: str | None = None, include_closed: bool = False) -> list[dict[str, Any]]:
    """Open alerts (or all with ``include_closed``), most severe and oldest first."""
    docs = DatamonRepository(services.store).list_alerts(owner, open_only=not include_closed)
    rank = {"late": 0, "warn": 1}
    docs.sort(key=lambda d: (not d.get("open"), rank.get(d.get("level", ""), 2), str(d.get("id"))))
    return [_alert_api(d) for d in docs]


def ack(services: Services, alert: str, *, actor: str | None, now: datetime) -> dict[str, Any]:
    """Acknowledge an alert: it is not re-notified any more (escalation and resolution still are).

    Raises:
        NotFound: no such alert (ids look like ``endpoint@partition``; ``endpoint/partition`` works too).
        Forbidden: the actor is not in the owning team (nor an admin); nothing is changed.
    """
    aid = alert.replace("/", "@", 1) if "@" not in alert else alert
    doc = services.store.get(ALERTS, aid)
    if doc is None:
        raise NotFound(f"alert {alert!r} not found", {"alert": alert})
    services.authorizer.check(actor, [doc.get("owner")], "acknowledge alerts of")
    if not doc.get("acked"):
        patch = {"acked": True, "acked_by": actor, "acked_at": now}
        services.store.write([Op.set(ALERTS, aid, patch, merge=True)])
        doc.update(patch)
    return _alert_api({"id": aid, **doc})


def status(services: Services, *, now: datetime, owner: str | None = None) -> dict[str, Any]:
    """The unified view: every endpoint with owner, partitioning, last landed partition, lag, state,
    open alerts and recent partitions, worst first. Reads one summary per endpoint."""
    rows = []
    for name, doc in DatamonRepository(services.store).all_summaries(owner).items():
        if "partitioning" not in doc:
            continue
        policy = domain.Policy.from_doc({**doc, "name": name})
        summary = domain.Summary.from_doc(doc, domain.EPOCH)
        open_states = [domain.current_state(policy, e, now) for e in summary.open]
        strip = list(summary.strip)
        seen = {d["partition"] for d in strip}
        strip += [{"partition": e.partition, "state": s.value} for e, s in zip(summary.open, open_states, strict=True)
                  if e.partition not in seen]
        strip = sorted(strip, key=lambda d: d["partition"])[-domain.STRIP:]
        state = domain.worst(open_states) or domain.State(summary.state if summary.state in (
            domain.State.OK.value, domain.State.LANDED_LATE.value) else domain.State.PENDING.value)
        latest = doc.get("latest") or {}
        lag = int((now - domain._utc(latest["end"])).total_seconds()) if latest.get("end") else None  # type: ignore[operator]
        rows.append({"endpoint": name, "owner": policy.owner, "partitioning": policy.partitioning,
                     "timezone": policy.timezone, "last_landed": latest.get("partition"),
                     "landed_at": _iso(latest.get("landed_at")), "lag_seconds": lag, "state": state.value,
                     "open_alerts": sum(1 for e in summary.open if e.alert),
                     "open_partitions": [{"partition": e.partition, "state": s.value}
                                         for e, s in zip(summary.open, open_states, strict=True)],
                     "recent": strip, "severity": policy.severity, "upstream": list(policy.upstream)})
    rows.sort(key=lambda r: (domain.RANK[domain.State(r["state"])], -r["open_alerts"], r["endpoint"]))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    return {"now": now.isoformat(), "owner": owner, "counts": counts, "endpoints": rows}
