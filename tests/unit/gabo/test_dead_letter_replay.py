"""Issue 23, finding 5: every dead-letter topic has a hold, counted (``ferry dead-letters``, ``ferry
status``), and ``ferry replay --dead-letters TOPIC`` sends what it keeps back where it came from."""

from __future__ import annotations

import json
from typing import Any

from ferry.api.app import router
from ferry.broker.base import Message
from ferry.domain.manifests import Team
from ferry.notify import messages as m
from ferry.notify.sweep import DELIVERIES
from ferry.store.base import Op

from .test_gabo_service import T0, env  # noqa: F401  (env: the fixture)

__all__ = ["env"]
SOURCE = "CloudPubSubDeadLetterSourceSubscription"


def call(svc: Any, method: str, path: str, body: Any = None, user: str = "root@example.com") -> tuple[int, Any]:
    return router.dispatch(svc, method, path, {}, {"X-Ferry-User": user},  # type: ignore[no-any-return]
                           json.dumps(body).encode() if body is not None else b"")


def test_every_hold_is_counted_and_infra_dead_letters_go_back_where_they_came_from(env: Any) -> None:
    svc, g, broker, _, clock = env
    g.reconcile(clock.now())
    order = json.dumps({"event_type": "play", "budget_s": 30}).encode()
    broker.publish("ferry-dead-letter", [Message(order, {SOURCE: "projects/p/subscriptions/gabo-work-orders-deliver"}),
                                         Message(b"{}", {"what": "nobody knows"})])
    note = m.alert_message("team-a", "plays", "plays late", severity="critical", kind="late-data", subject="plays",
                           notification_id="plays#1")
    did = "plays#1~team-a:hook"
    svc.store.write([Op.create(DELIVERIES, did, {"status": "dead", "attempts": 4, "team": "team-a",
                                                 "channel": "hook"})])
    broker.publish("ferry-alerts-dead-letter", [Message(note.data, {**note.attributes, "channel": "team-a:hook",
                                                                   "error": "HTTP 500", "attempts": "4"})])
    broker.publish("gabo-play-quarantine", [Message(b"{}", {"reason": "schema"})])

    status, listed = call(svc, "GET", "/v1/dead-letters")
    assert status == 200
    held = {h["subscription"]: h["messages"] for h in listed["holds"]}
    assert held["ferry-dead-letter-hold"] == 2 and held["ferry-alerts-dead-letter-hold"] == 1
    assert held["gabo-play-quarantine-hold"] == 1 and held["gabo-play-dead-letter-hold"] == 0
    assert call(svc, "GET", "/v1/dead-letters")[1] == listed  # counting hands the messages back

    seen = len(broker.topics["gabo-work-orders"])
    status, out = call(svc, "POST", "/v1/dead-letters/replay", {"topic": "ferry-dead-letter"})
    assert status == 200, out
    assert out == {"topic": "ferry-dead-letter", "subscription": "ferry-dead-letter-hold", "replayed": 1,
                   "to": {"gabo-work-orders": 1}, "unroutable": 1}
    [again] = broker.topics["gabo-work-orders"][seen:]
    assert again.data == order and SOURCE not in again.attributes and again.attributes["replayed"] == "1"

    status, out = call(svc, "POST", "/v1/dead-letters/replay", {"topic": "ferry-alerts-dead-letter"})
    assert (status, out["to"]) == (200, {"ferry-alerts": 1})
    [resent] = broker.topics["ferry-alerts"][-1:]
    assert resent.data == note.data and "channel" not in resent.attributes and "error" not in resent.attributes
    assert svc.store.get(DELIVERIES, did)["status"] == "failed"  # reopened: the channel is tried again
    held = {h["subscription"]: h["messages"] for h in call(svc, "GET", "/v1/dead-letters")[1]["holds"]}
    assert held["ferry-dead-letter-hold"] == 1 and held["ferry-alerts-dead-letter-hold"] == 0  # the unroutable stays


def test_only_infra_dead_letter_topics_replay_and_only_for_admins(env: Any) -> None:
    svc, g, broker, _, clock = env
    g.reconcile(clock.now())
    status, out = call(svc, "POST", "/v1/dead-letters/replay", {"topic": "gabo-play-dead-letter"})
    assert status == 400 and "ferry replay TYPE --from dead-letter" in out["error"]["message"]
    svc.apply.apply([Team.model_validate(
        {"metadata": {"name": "admins"}, "spec": {"members": ["root@example.com"]}})], T0)
    status, _ = call(svc, "POST", "/v1/dead-letters/replay", {"topic": "ferry-dead-letter"}, user="mallory@example.com")
    assert status == 403
