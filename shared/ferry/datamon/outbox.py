"""The alert outbox: claim each notification exactly once across evaluators, publish it to
``ferry-alerts``, mark it sent; republish what a crashed evaluator claimed but never sent."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ferry import log
from ferry.broker.base import Message
from ferry.datamon import domain, silences
from ferry.datamon.domain.incidents import IncidentDecision
from ferry.datamon.repository import DatamonRepository
from ferry.notify.messages import ALERTS_TOPIC
from ferry.store.base import Op, write_all_or_each

if TYPE_CHECKING:
    from ferry.broker.base import Publisher
    from ferry.store.base import DocumentStore

logger = log.get("datamon")
# A claim still unsent after this long belongs to an evaluator that died before publishing.
OUTBOX_GRACE = timedelta(minutes=2)


def message(policy: domain.Policy, d: IncidentDecision) -> Message:
    event = d.to_event(policy)
    return Message(json.dumps(event, default=str).encode(),
                   {"dedup_key": d.dedup_key, "event_action": event["event_action"], "endpoint": policy.name,
                    "owner": policy.owner, "severity": d.severity, "notification_id": d.claim_id})


def claim(repo: DatamonRepository, decisions: Sequence[tuple[str, IncidentDecision]],
          policies: dict[str, domain.Policy], now: datetime,
          silenced: Sequence[silences.Silence] = ()) -> set[int]:
    """Claim each notification exactly once across evaluators (``Op.create`` on ``{incident}#{seq}``).

    The claim is also an outbox entry: it holds the message and ``sent: False`` until the publish is
    confirmed, so a crash between claim and publish is repaired by the next evaluation
    (``redeliver``) instead of losing the notification. A held notification (silenced) is recorded
    the same way with ``held``, the silence and its reason, and ``sent: True``: it is never published.

    One batch normally; when a batch hits a Conflict (another evaluator won some), claims are retried
    one by one to learn which. Returns the ids of the decisions this evaluator won.
    """
    def op(n: str, d: IncidentDecision) -> Op:
        msg = message(policies[n], d)
        doc = {"alert": d.incident.id, "seq": d.incident.seq, "action": d.action.value, "at": now,
               "sent": d.held, "data": msg.data.decode(), "attributes": msg.attributes}
        if d.held:
            silence = silences.matching(list(silenced), policies[n])
            doc.update({"held": True, "silence": silence.id if silence else None,
                        "reason": silence.reason if silence else None})
        return repo.claim_op(d.claim_id, doc)

    committed = write_all_or_each(repo.store, decisions, lambda nd: [op(*nd)])
    return {id(d) for _, d in committed.items}


def notify(publisher: Publisher, repo: DatamonRepository, decisions: Sequence[tuple[str, IncidentDecision]],
           policies: dict[str, domain.Policy], totals: dict[str, int]) -> None:
    if not decisions:
        return
    messages = []
    for name, d in decisions:
        policy = policies[name]
        messages.append(message(policy, d))
        totals[d.action.value] += 1
        level = log.ERROR if d.incident.level is domain.Level.LATE and d.action is not domain.Action.RESOLVE else log.WARNING
        log.event(logger, level, d.summary, labels={"endpoint": name, "owner": policy.owner},
                  alert={"dedup_key": d.dedup_key, "action": d.action.value, "severity": d.severity,
                         "late_partitions": d.incident.count, "kind": d.kind, "tier": policy.severity})
    publisher.publish(ALERTS_TOPIC, messages)
    # Confirmed: close the outbox entries (a crash before this line makes the next evaluation
    # publish them again — at least once, and PagerDuty's dedup_key makes a repeat harmless).
    repo.write([repo.sent_op(d.claim_id) for _, d in decisions])


def _at(claim: dict[str, Any]) -> datetime:
    at = domain._utc(claim["at"])
    assert at is not None
    return at


def redeliver(store: DocumentStore, publisher: Publisher, now: datetime) -> int:
    """Publish notifications whose evaluator crashed between claim and publish (one query, ~0 docs)."""
    repo = DatamonRepository(store)
    stale = [(i, d) for i, d in repo.unsent_claims(limit=500) if _at(d) <= now - OUTBOX_GRACE]
    if not stale:
        return 0
    publisher.publish(ALERTS_TOPIC, [Message(d["data"].encode(), dict(d.get("attributes") or {}))
                                              for _, d in stale])
    repo.write([repo.sent_op(i) for i, _ in stale])
    log.event(logger, log.WARNING, f"re-published {len(stale)} notification(s) left unsent by a crashed evaluator",
              labels={"component": "datamon-evaluator"})
    return len(stale)
