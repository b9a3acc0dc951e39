"""Owners told when a run fails (issue 18.4): one incident per workflow, through the alerts topic
``notify`` reads, re-notified and resolved like Datamon's; silences and ack apply; crash-safe."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from ferry.domain.manifests import Workflow
from ferry.errors import InfraError
from ferry.gabo.delivery.broker import MemoryBroker
from ferry.styx import machine as m
from ferry.styx.failures import ALERTS, NOTIFICATIONS, FailureAlerts
from ferry.styx.tick import Tick, TickLimits

from .conftest import apply, workflow

P = "2026-11-26T12"


def sent(svc) -> list[dict[str, Any]]:
    pub = svc.broker
    assert isinstance(pub, MemoryBroker)
    return [{**json.loads(x.data), "notification_id": x.attributes["notification_id"]}
            for x in pub.take("ferry-alerts")]


def run_tick(svc):
    return Tick(svc.styx, TickLimits(max_active=100)).run(svc.clock.now())


def fail_all(svc, launcher, code: int = 3) -> None:
    for s in launcher.running():
        launcher.finish(s, code)


def one_try(**kw: Any) -> dict[str, Any]:
    return workflow("agg", retry={"max_tries": 1, "initial_backoff": "PT1M", "max_backoff": "PT1M"}, **kw)


def test_out_of_tries_notifies_once_then_a_success_resolves_once(svc, clock, launcher, styx) -> None:
    apply(svc, one_try())
    styx.trigger("agg", P, clock.now())
    run_tick(svc)
    fail_all(svc, launcher)
    report = run_tick(svc)
    assert styx.instance("agg", P).state == m.State.ERROR and report.alerts_triggered == 1
    [trigger] = sent(svc)
    assert trigger["event_action"] == "trigger" and trigger["owner"] == "team-a" and trigger["severity"] == "error"
    assert trigger["payload"]["class"] == "workflow-failure" and "exited 3" in trigger["summary"]
    assert trigger["dedup_key"] == "styx:agg~1"
    clock.advance(timedelta(minutes=1))
    assert run_tick(svc).alerts_triggered == 0 and sent(svc) == []  # nothing more while it stays failed
    styx.trigger("agg", "2026-11-26T13", clock.now())
    run_tick(svc)
    launcher.finish(launcher.running()[0], 0)
    report = run_tick(svc)
    assert report.alerts_resolved == 1
    [resolve] = sent(svc)
    assert resolve["event_action"] == "resolve" and resolve["dedup_key"] == "styx:agg~1"
    doc = svc.store.get(ALERTS, "styx:agg~1")
    assert doc["open"] is False and doc["count"] == 1
    styx.trigger("agg", "2026-11-26T14", clock.now())
    run_tick(svc)
    launcher.finish(launcher.running()[0], 0)
    run_tick(svc)
    assert sent(svc) == []  # a success with no incident open says nothing


def test_exit_50_a_timeout_and_a_run_error_each_count_a_halt_does_not(svc, clock, launcher, styx) -> None:
    apply(svc, one_try(timeout="PT5M"))
    styx.trigger("agg", P, clock.now())
    run_tick(svc)
    styx.halt("agg", P, clock.now(), reason="not needed")
    run_tick(svc)
    assert sent(svc) == []
    styx.trigger("agg", "2026-11-26T13", clock.now())
    run_tick(svc)
    launcher.finish(launcher.running()[0], 50)
    run_tick(svc)
    assert [e["event_action"] for e in sent(svc)] == ["trigger"]
    styx.trigger("agg", "2026-11-26T14", clock.now())
    run_tick(svc)
    clock.advance(timedelta(minutes=6))
    report = run_tick(svc)  # timed out: joins the open incident, no second notification
    assert report.timed_out == 1 and sent(svc) == []
    assert svc.store.get(ALERTS, "styx:agg~1")["count"] == 2


def test_a_backfill_of_20_failing_instances_notifies_once(svc, clock, launcher, styx) -> None:
    from ferry.styx import backfills

    apply(svc, one_try())
    backfills.create(styx, "agg", "2026-11-25T00", "2026-11-25T20", clock.now(), concurrency=20)
    for _ in range(4):
        run_tick(svc)
        fail_all(svc, launcher)
        clock.advance(timedelta(minutes=1))
    run_tick(svc)
    errors = [r for r in styx.repo.list("agg", limit=100) if r.state == m.State.ERROR]
    assert len(errors) == 20
    notes = sent(svc)
    assert [e["event_action"] for e in notes] == ["trigger"], notes
    assert svc.store.get(ALERTS, "styx:agg~1")["count"] == 20


def test_re_notified_after_renotify_after_unless_acknowledged(svc, clock, launcher, styx) -> None:
    from ferry.datamon import views

    apply(svc, one_try(alerts={"severity": "page", "renotify_after": "PT1H"}))
    styx.trigger("agg", P, clock.now())
    run_tick(svc)
    fail_all(svc, launcher)
    run_tick(svc)
    assert [(e["event_action"], e["severity"]) for e in sent(svc)] == [("trigger", "critical")]
    clock.advance(timedelta(minutes=59))
    run_tick(svc)
    assert sent(svc) == []
    clock.advance(timedelta(minutes=2))
    assert run_tick(svc).alerts_renotified == 1
    [again] = sent(svc)
    assert again["summary"].startswith("still failing") and again["dedup_key"] == "styx:agg~1"
    views.ack(svc.store, svc.authorizer, ["styx:agg~1"], actor=None, now=clock.now())  # `ferry ack`
    clock.advance(timedelta(hours=2))
    run_tick(svc)
    assert sent(svc) == []


def test_a_silence_holds_the_notification_and_it_goes_out_when_the_silence_ends(svc, clock, launcher, styx) -> None:
    from ferry.datamon import silences

    apply(svc, one_try())
    silences.create(svc.store, endpoint=None, owner="team-a", team="team-a", duration="PT1H", reason="maintenance",
                    actor=None, now=clock.now())
    styx.trigger("agg", P, clock.now())
    run_tick(svc)
    fail_all(svc, launcher)
    run_tick(svc)
    assert sent(svc) == [] and svc.store.get(ALERTS, "styx:agg~1")["held"] is True
    clock.advance(timedelta(minutes=61))
    assert run_tick(svc).alerts_renotified == 1
    assert [e["event_action"] for e in sent(svc)] == ["trigger"]


def test_severity_off_opens_no_incident(svc, clock, launcher, styx) -> None:
    apply(svc, one_try(alerts={"severity": "off"}))
    styx.trigger("agg", P, clock.now())
    run_tick(svc)
    fail_all(svc, launcher)
    run_tick(svc)
    assert sent(svc) == [] and svc.store.get(ALERTS, "styx:agg~1") is None


def test_two_ticks_settling_the_same_failure_send_one_notification(svc, clock, launcher, styx) -> None:
    apply(svc, one_try())
    styx.trigger("agg", P, clock.now())
    run_tick(svc)
    fail_all(svc, launcher)
    wf = svc.manifests.get("Workflow", "agg").model_as(Workflow)
    t = Tick(svc.styx, TickLimits(max_active=100))
    t.failures.flush = lambda now, open_incidents=None: {"trigger": 0, "renotify": 0, "resolve": 0}  # type: ignore[method-assign]
    t.run(clock.now())  # commits the ERROR; its own flush is what the crash loses
    run = styx.instance("agg", P)
    a, b = FailureAlerts(svc.store, svc.publisher), FailureAlerts(svc.store, svc.publisher)
    log_ = ((m.Stop("exited 3; gave up"), run),)
    a.record(run, log_, wf, clock.now())
    b.record(run, log_, wf, clock.now())
    assert a.flush(clock.now())["trigger"] == 1
    assert b.flush(clock.now())["trigger"] == 0  # the incident is open: it joins it (count 2), no notification
    assert [e["event_action"] for e in sent(svc)] == ["trigger"]


def test_a_tick_dying_before_it_publishes_loses_nothing_and_duplicates_nothing(svc, clock, launcher, styx,
                                                                              monkeypatch) -> None:
    from ferry.datamon import outbox

    apply(svc, one_try())
    styx.trigger("agg", P, clock.now())
    run_tick(svc)
    fail_all(svc, launcher)
    with monkeypatch.context() as mp:
        def down(topic, messages):
            raise InfraError("Pub/Sub unavailable")
        mp.setattr(svc.publisher, "publish", down)
        run_tick(svc)  # claimed, not published
    assert sent(svc) == []
    [(cid, claim)] = svc.store.query(NOTIFICATIONS, [])
    assert claim["sent"] is False and cid == "styx:agg~1#1"
    run_tick(svc)
    assert sent(svc) == []  # the next tick does not notify again
    assert outbox.redeliver(svc.store, svc.publisher, clock.now() + timedelta(minutes=3)) == 1  # Datamon's outbox sends it once
    [note] = sent(svc)
    assert note["event_action"] == "trigger" and note["notification_id"] == "styx:agg~1#1"
    assert outbox.redeliver(svc.store, svc.publisher, clock.now() + timedelta(minutes=6)) == 0


@pytest.mark.parametrize("severity,expected", [("page", "critical"), ("ticket", "error"), ("info", "info")])
def test_the_severity_comes_from_the_workflow(svc, clock, launcher, styx, severity, expected) -> None:
    apply(svc, one_try(alerts={"severity": severity}))
    styx.trigger("agg", P, clock.now())
    run_tick(svc)
    fail_all(svc, launcher)
    run_tick(svc)
    assert [e["severity"] for e in sent(svc)] == [expected]
