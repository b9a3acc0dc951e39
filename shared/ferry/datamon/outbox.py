"""The alert outbox: claim each notification exactly once across evaluators, publish it to
``ferry-alerts``, mark it sent; republish what a crashed evaluator claimed but never sent."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ferry import log
from ferry.broker.base import Message
from ferry.datamon import domain
from ferry.datamon.repository import DatamonRepository, alert_id
from ferry.errors import Conflict
from ferry.store.base import MAX_BATCH, Op

if TYPE_CHECKING:
    from ferry.bootstrap import Services

logger = log.get("datamon")
ALERTS_TOPIC = "ferry-alerts"
# A claim still unsent after this long belongs to an evaluator that died before publishing.
OUTBOX_GRACE = timedelta(minutes=2)


def claim_id(name: str, d: domain.Decision) -> str:
    return f"{alert_id(name, d.notification.partition)}#{d.seq}"


def message(name: str, d: domain.Decision) -> Message:
    n = d.notification
    event = n.to_event()
    return Message(json.dumps(event, default=str).encode(),
                   {"dedup_key": n.dedup_key, "event_action": event["event_action"],
                    "endpoint": name, "owner": n.owner, "severity": n.severity})


def claim(repo: DatamonRepository, decisions: Sequence[tuple[str, domain.Decision]], now: datetime) -> set[int]:
    """Claim each notification exactly once across evaluators (``Op.create`` on ``{alert}#{seq}``).

    The claim is also an outbox entry: it holds the message and ``sent: False`` until the publish is
    confirmed, so a crash between claim and publish is repaired by the next evaluation
    (``redeliver``) instead of losing the notification.

    One batch normally; when a batch hits a Conflict (another evaluator won some), claims are retried
    one by one to learn which. Returns the ids of the decisions this evaluator won.
    """
    won: set[int] = set()

    def op(n: str, d: domain.Decision) -> Op:
        msg = message(n, d)
        return repo.claim_op(claim_id(n, d), {"alert": alert_id(n, d.notification.partition), "seq": d.seq,
                                              "action": d.notification.action.value, "at": now, "sent": False,
                                              "data": msg.data.decode(), "attributes": msg.attributes})

    for i in range(0, len(decisions), MAX_BATCH):
        chunk = decisions[i:i + MAX_BATCH]
        try:
            repo.write([op(n, d) for n, d in chunk])
            won.update(id(d) for _, d in chunk)
        except Conflict:
            for n, d in chunk:
                try:
                    repo.write([op(n, d)])
                    won.add(id(d))
                except Conflict:
                    continue
    return won


def notify(services: Services, repo: DatamonRepository, decisions: Sequence[tuple[str, domain.Decision]],
            policies: dict[str, domain.Policy], totals: dict[str, int]) -> None:
    if not decisions:
        return
    messages = []
    for name, d in decisions:
        n = d.notification
        messages.append(message(name, d))
        totals[n.action.value] += 1
        level = 40 if d.pages_late else 30
        log.event(logger, level, n.summary, labels={"endpoint": name, "owner": n.owner, "partition": n.partition},
                  alert={"dedup_key": n.dedup_key, "action": n.action.value, "severity": n.severity,
                         "overdue_seconds": n.overdue_seconds, "tier": policies[name].severity})
    services.publisher.publish(ALERTS_TOPIC, messages)
    # Confirmed: close the outbox entries (a crash before this line makes the next evaluation
    # publish them again — at least once, and PagerDuty's dedup_key makes a repeat harmless).
    repo.write([repo.sent_op(claim_id(name, d)) for name, d in decisions])


def _at(claim: dict[str, Any]) -> datetime:
    at = domain._utc(claim["at"])
    assert at is not None
    return at


def redeliver(services: Services, now: datetime) -> int:
    """Publish notifications whose evaluator crashed between claim and publish (one query, ~0 docs)."""
    repo = DatamonRepository(services.store)
    stale = [(i, d) for i, d in repo.unsent_claims(limit=500) if _at(d) <= now - OUTBOX_GRACE]
    if not stale:
        return 0
    services.publisher.publish(ALERTS_TOPIC, [Message(d["data"].encode(), dict(d.get("attributes") or {}))
                                              for _, d in stale])
    repo.write([repo.sent_op(i) for i, _ in stale])
    log.event(logger, 30, f"re-published {len(stale)} notification(s) left unsent by a crashed evaluator",
              labels={"component": "datamon-evaluator"})
    return len(stale)
