"""One SLA evaluation (what the scheduler fires): every due or open endpoint's partitions get a
state from the pure core; alert transitions go through the outbox."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ferry import log
from ferry.datamon import domain, outbox, silences
from ferry.datamon.domain.incidents import IncidentDecision, low_volume, volume_slots
from ferry.datamon.repository import DatamonRepository
from ferry.datamon.sync import sync_manifests
from ferry.domain.names import valid_name
from ferry.store.base import Op

if TYPE_CHECKING:
    from ferry.broker.base import Publisher
    from ferry.store.base import DocumentStore

logger = log.get("datamon")


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


def evaluate(store: DocumentStore, publisher: Publisher, *, now: datetime) -> dict[str, Any]:
    """Run one SLA evaluation: every due or open endpoint's partitions get a state; alert
    transitions are claimed, published to ``ferry-alerts`` and logged.

    Safe when two evaluators overlap: every notification is first claimed by ``Op.create`` of a
    document with a deterministic id (``{incident}#{seq}``); only the evaluator whose claim succeeds
    publishes, the other records the same state without notifying. Writes happen only when a
    summary or alert changed, so an evaluation with nothing new writes nothing.

    Returns:
        counts of endpoints, partitions and notifications, and the reads/writes it cost.
    """
    started = time.monotonic()
    before = store.stats.snapshot()
    repo = DatamonRepository(store)
    synced = sync_manifests(store, now)
    redelivered = outbox.redeliver(store, publisher, now)
    silenced = silences.active(store, now)
    due = repo.summaries_due(now)
    rounds = 0
    totals = {"endpoints": 0, "partitions": 0, "trigger": 0, "escalate": 0, "resolve": 0, "renotify": 0,
              "held": 0, "low_volume": 0, "duplicates_skipped": 0}
    states: dict[str, int] = {}
    done: set[str] = set()
    fresh: dict[str, tuple[domain.Policy, domain.Summary]] = {}
    while due and rounds < 3:
        rounds += 1
        newly_late = _evaluate_batch(publisher, repo, due, fresh, now, totals, states, silenced)
        done.update(due)
        due = {}
        if newly_late:
            # Early warning: endpoints downstream of a partition that just went late are looked at now.
            for name in sorted(newly_late):
                for did, doc in repo.downstream_of(name).items():
                    if did not in done:
                        due[did] = doc
    io = store.stats.since(before)
    result = {"now": now.isoformat(), "synced": len(synced), "endpoints": totals["endpoints"],
              "partitions": totals["partitions"], "states": states,
              "notifications": {k: totals[k] for k in ("trigger", "escalate", "resolve", "renotify")},
              "held": totals["held"], "low_volume": totals["low_volume"], "silences": len(silenced),
              "duplicates_skipped": totals["duplicates_skipped"], "redelivered": redelivered, "reads": io["reads"], "writes": io["writes"],
              "duration_ms": int((time.monotonic() - started) * 1000)}
    log.event(logger, log.INFO, f"evaluated {result['endpoints']} endpoints: {io['reads']} reads, {io['writes']} writes",
              labels={"component": "datamon-evaluator"}, evaluation=result)
    return result


def _evaluate_batch(publisher: Publisher, repo: DatamonRepository, due: dict[str, dict[str, Any]],
                    fresh: dict[str, tuple[domain.Policy, domain.Summary]], now: datetime,
                    totals: dict[str, int], states: dict[str, int],
                    silenced: Sequence[silences.Silence] = ()) -> set[str]:
    policies: dict[str, domain.Policy] = {}
    summaries: dict[str, domain.Summary] = {}
    # One bad endpoint never fails the evaluation: its error is recorded on it (shown in status).
    errors: dict[str, str] = {}
    for name, doc in due.items():
        if "partitioning" not in doc:
            continue  # only a landing's `latest` so far: registered at the next sync
        try:
            policy = domain.Policy.from_doc({**doc, "name": name})
            invalid = [u for u in policy.upstream if not valid_name(u)]
            if invalid:
                raise ValueError(f"upstream {invalid[0]!r} is not a valid endpoint name")
            summaries[name] = domain.Summary.from_doc(
                doc, domain.first_expected(policy, domain._utc(doc.get("registered_at")) or now))
            policies[name] = policy
        except Exception as exc:  # noqa: BLE001 — recorded on the endpoint, the others proceed
            errors[name] = _error(exc)
    # Upstream state: from this run when evaluated already, else as stored.
    upstream_names = sorted({u for p in policies.values() for u in p.upstream} - set(policies) - set(fresh))
    upstream_docs = repo.summaries(upstream_names)
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
    landed_docs = repo.partitions_multi(wanted) if any(wanted.values()) else {}
    # An open incident's ack is read only when a re-notification may be due.
    renotify = [i.id for n in order if (i := summaries[n].incident) is not None and not i.acked
                and (i.held or now - i.notified_at >= policies[n].renotify_after)]
    acked = {i for i, d in repo.alerts(renotify).items() if d.get("acked")}

    outcomes: dict[str, domain.Outcome] = {}
    fresh_landings: dict[str, dict[str, dict[str, Any]]] = {}
    newly_late: set[str] = set()
    for name in order:
        policy, summary = policies[name], summaries[name]
        bad = bad_for(name)
        try:
            extra = [p for p in domain.wanted(policy, summary, now, bad) if p not in wanted[name]]
            landed_here = dict(landed_docs.get(name, {}))
            if extra:
                landed_here.update(repo.partitions(name, extra))
            landed_at = {p: domain._utc(d["landed_at"]) for p, d in landed_here.items()}
            outcome = domain.evaluate_endpoint(policy, summary, landed_at,  # type: ignore[arg-type]
                                               summary.incident is not None and summary.incident.id in acked, bad,
                                               now, silences.matching(list(silenced), policy) is not None)
        except Exception as exc:  # noqa: BLE001 — recorded on the endpoint, the others proceed
            errors[name] = _error(exc)
            continue
        fresh_landings[name] = landed_here
        outcomes[name] = outcome
        fresh[name] = (policy, outcome.summary)
        bad_of[name] = _bad_periods(policy, outcome.summary)
        if outcome.newly_late:
            newly_late.add(name)
        totals["endpoints"] += 1
        totals["partitions"] += len(outcome.states)
        for st in outcome.states.values():
            states[st.value] = states.get(st.value, 0) + 1

    order = [n for n in order if n in outcomes]
    decisions = [(n, d) for n in order for d in outcomes[n].decisions]
    volume = _volume_checks(repo, policies, fresh_landings, now, silenced)
    totals["low_volume"] += len(volume)
    decisions += volume
    won = outbox.claim(repo, decisions, policies, now, silenced)
    totals["duplicates_skipped"] += len(decisions) - len(won)
    totals["held"] += sum(1 for _, d in decisions if d.held and id(d) in won)
    outbox.notify(publisher, repo, [(n, d) for n, d in decisions if id(d) in won and not d.held], policies, totals)

    ops: list[Op] = [repo.alert_op(policies[name], decision) for name, decision in decisions]
    for name in order:
        before, after = summaries[name].incident, outcomes[name].summary.incident
        if after is not None and before is not None and not outcomes[name].decisions and (
                before.count, before.oldest, before.newest) != (after.count, after.oldest, after.newest):
            # Partitions joined or landed: the incident's listing follows, without a notification.
            ops.append(repo.alert_patch_op(after.id, {"count": after.count, "oldest": after.oldest,
                                                      "newest": after.newest}))
    for name, message in sorted(errors.items()):
        log.event(logger, 40, f"evaluation of {name} failed: {message}",
                  labels={"endpoint": name, "component": "datamon-evaluator"})
        if due[name].get("error") != message:
            ops.append(repo.summary_op(name, {"error": message, "error_at": now}))
    for name in order:
        new = outcomes[name].summary.to_doc()
        new["error"] = None  # evaluated: a recorded error is cleared
        new["upstream_all"] = list(policies[name].upstream)  # declared and derived: for downstream queries
        latest = _latest(policies[name], outcomes[name], due[name].get("latest"))
        if latest is not None:
            new["latest"] = latest
        old = {k: due[name].get(k) for k in new}
        if _comparable(old) != _comparable(new):
            ops.append(repo.summary_op(name, new))
    repo.write(ops)
    return newly_late


def _volume_checks(repo: DatamonRepository, policies: dict[str, domain.Policy],
                   landings: dict[str, dict[str, dict[str, Any]]], now: datetime,
                   silenced: Sequence[silences.Silence]) -> list[tuple[str, IncidentDecision]]:
    """``low_volume`` alerts for partitions this evaluation saw landed, on endpoints that declare a
    volume check: their records against the same slot's recent ones (one batched read)."""
    asks: dict[tuple[str, str], list[str]] = {}
    for name, docs in landings.items():
        policy = policies[name]
        if policy.min_ratio is None:
            continue
        for partition, doc in docs.items():
            if doc.get("records") is not None:
                asks[(name, partition)] = volume_slots(policy, policy.cadence.parse(partition))
    if not asks:
        return []
    slots: dict[str, set[str]] = {}
    for (name, _), names in asks.items():
        slots.setdefault(name, set()).update(names)
    history = repo.partitions_multi({n: sorted(v) for n, v in slots.items()})
    out = []
    for (name, partition), names in asks.items():
        known = [history.get(name, {}).get(p, {}).get("records") for p in names]
        decision = low_volume(policies[name], partition, int(landings[name][partition]["records"]),
                              [int(r) for r in known if r is not None], now,
                              silences.matching(list(silenced), policies[name]) is not None)
        if decision is not None:
            out.append((name, decision))
    return out


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


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
