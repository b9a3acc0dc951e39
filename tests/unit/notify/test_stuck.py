"""Issue 23, finding 5: notifications that stopped without a trace.

A webhook that hung got 6 POSTs and then nothing for 27+ minutes: its delivery record stayed
"failed 2/4" forever, never dead-lettered; notify killed mid-POST left "sending" forever. Now a try has
a whole deadline (a trickling webhook cannot hold a call), and every evaluation sweeps the deliveries
silent past their retry window: retried while attempts are left, else dead-lettered — and shown.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from ferry.api.app import router
from ferry.api.identity import HEADER, Identifier, IdentityConfig
from ferry.bootstrap import Services, in_memory
from ferry.clock import FixedClock
from ferry.notify import messages as m
from ferry.notify.port import CHANNELS
from ferry.notify.sender import HttpSender
from ferry.notify.service import DEAD_LETTER_TOPIC, DELIVERIES, DeliveryPending, Notifier
from ferry.notify.sweep import STUCK_AFTER
from ferry.store.base import Op

from .conftest import T0, Script, apply, team

HOOK = "https://hooks.example.test/ferry"
OPERATOR = {"X-Ferry-Stack-Secret": "s"}


@pytest.fixture
def trickler() -> Iterator[str]:
    """A webhook that takes the request and then answers one byte every 0.3 s, for 20 s."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    def trickle(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            end = time.monotonic() + 20
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while time.monotonic() < end and not stop.is_set():
                    conn.sendall(b"X-Slow: y\r\n")
                    time.sleep(0.3)
            except OSError:
                return

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    stop.set()
    server.close()


def test_a_trickling_webhook_cannot_hold_a_call_past_its_deadline(trickler: str) -> None:
    sender = HttpSender(tries=2, backoff=0.01, timeout=1.0, deadline=1.5)
    t0 = time.monotonic()
    sent = sender.post(trickler, {"x": 1})
    elapsed = time.monotonic() - t0
    assert not sent.ok and not sent.permanent and sent.tries == 2 and "no answer within 1.5s" in (sent.error or "")
    assert elapsed < 8, elapsed  # per-read timeouts alone never end it: every read gets a byte in time


@pytest.fixture
def svc() -> Services:
    return in_memory(FixedClock(T0), identifier=Identifier(IdentityConfig(HEADER, stack_secret="s")))


def _late() -> tuple[bytes, dict[str, str]]:
    msg = m.alert_message("team-a", "plays", "plays: 3 partitions late", severity="critical", action="trigger",
                          kind="late-data", subject="plays", notification_id="plays#trigger")
    return msg.data, msg.attributes


def _evaluate(svc: Services) -> dict[str, Any]:
    status, result = router.dispatch(svc, "POST", "/v1/evaluate", {}, OPERATOR, b"")
    assert status == 200, result
    return result  # type: ignore[no-any-return]


def test_a_failed_delivery_no_redelivery_comes_for_is_retried_then_dead_lettered_and_shown(
        svc: Services, notifier: Notifier, script: Script) -> None:
    apply(svc, team("team-a", {"name": "hook", "type": "webhook", "secret": "env:FERRY_SECRET_TEAM_A__HOOK",
                               "min_severity": "info"}))
    script.statuses[HOOK] = [500] * 100
    with pytest.raises(DeliveryPending):
        notifier.handle(*_late())  # attempt 1 failed; Pub/Sub's redelivery never comes
    [(did, record)] = list(svc.store.query(DELIVERIES))
    assert record["status"] == "failed" and record["attempts"] == 1
    assert _evaluate(svc)["deliveries_swept"]["retried"] == 0  # within its retry window: left to Pub/Sub

    svc.clock.set(T0 + STUCK_AFTER + timedelta(minutes=1))  # type: ignore[attr-defined]
    view = router.dispatch(svc, "GET", "/v1/status", {}, {}, b"")[1]
    assert [(d["channel"], d["status"], d["attempts"]) for d in view["stuck_deliveries"]] == [("hook", "failed", 1)]
    swept = _evaluate(svc)["deliveries_swept"]
    assert swept == {"retried": 1, "dead_lettered": 0, "deliveries": [did]}
    [again] = svc.publisher.take(m.ALERTS_TOPIC)  # type: ignore[attr-defined]
    assert again.data == _late()[0] and again.attributes["notification_id"] == "plays#trigger"
    assert _evaluate(svc)["deliveries_swept"]["retried"] == 0  # not again within the window

    # the attempts are spent: the next silent stretch dead-letters it
    svc.store.write([Op.set(DELIVERIES, did, {"attempts": notifier.max_attempts}, merge=True)])
    svc.clock.set(T0 + 2 * STUCK_AFTER + timedelta(minutes=2))  # type: ignore[attr-defined]
    assert _evaluate(svc)["deliveries_swept"]["dead_lettered"] == 1
    assert svc.store.get(DELIVERIES, did)["status"] == "dead"  # type: ignore[index]
    [dead] = svc.publisher.take(DEAD_LETTER_TOPIC)  # type: ignore[attr-defined]
    assert dead.attributes["channel"] == "team-a:hook" and "stuck failed" in dead.attributes["error"]
    assert svc.store.get(CHANNELS, "team-a:hook")["failing"] is True  # type: ignore[index]
    view = router.dispatch(svc, "GET", "/v1/status", {}, {}, b"")[1]
    assert view["stuck_deliveries"] == [] and [c["channel"] for c in view["channels"]] == ["hook"]


def test_a_delivery_left_sending_by_a_killed_notify_is_retried(svc: Services, notifier: Notifier) -> None:
    apply(svc, team("team-a", {"name": "hook", "type": "webhook", "secret": "env:FERRY_SECRET_TEAM_A__HOOK",
                               "min_severity": "info"}))
    from ferry.notify.sweep import kept_message

    data, attributes = _late()
    svc.store.write([Op.create(DELIVERIES, "plays#trigger~team-a:hook", {
        "notification": "plays#trigger", "team": "team-a", "channel": "hook", "type": "webhook",
        "status": "sending", "attempts": 1, "claimed_at": T0, "message": kept_message(data, attributes)})])
    svc.clock.set(T0 + STUCK_AFTER)  # type: ignore[attr-defined]
    assert _evaluate(svc)["deliveries_swept"]["retried"] == 1
    [again] = svc.publisher.take(m.ALERTS_TOPIC)  # type: ignore[attr-defined]
    result = notifier.handle(again.data, again.attributes)  # notify takes the stale claim over
    assert result["channels"] == {"hook": "delivered"}
