from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ferry.bootstrap import Services
from ferry.clock import FixedClock
from ferry.datamon import evaluation, landing, outbox, views
from ferry.errors import Forbidden, NotFound
from ferry.gabo.delivery.broker import MemoryBroker

from .conftest import T0, apply, endpoint


def events(svc: Services) -> list[dict[str, Any]]:
    pub = svc.broker
    assert isinstance(pub, MemoryBroker)
    return [json.loads(m.data) for m in pub.take("ferry-alerts")]


@pytest.fixture
def late(svc: Services, clock: FixedClock) -> Services:
    # hourly from 00:00, registered at 00:00; at 12:00 hours 00..09 are past the 2h deadline, 10 at
    # warn, 11 pending: one incident of 11 partitions.
    clock.set(datetime(2026, 11, 26, 0, 0, tzinfo=UTC))
    apply(svc, endpoint("plays", partitioning="hourly", start="2026-11-26T00:00:00Z",
                        sla={"warn_after": "PT1H", "error_after": "PT2H", "severity": "page"}))
    clock.set(T0)
    return svc


def test_must_show_one_incident_updated_by_landings_resolved_by_the_last(late: Services) -> None:
    result = evaluation.evaluate(late.store, late.publisher, now=T0)
    assert result["states"] == {"late": 10, "warn": 1, "pending": 1}
    [sent] = events(late)
    assert sent["event_action"] == "trigger" and sent["dedup_key"] == "plays~1" and sent["severity"] == "critical"
    details = sent["custom_details"]
    assert (details["late_partitions"], details["oldest"], details["newest"]) == (11, "2026-11-26T00", "2026-11-26T10")
    assert sent["owner"] == "team-a" and sent["payload"]["class"] == "late-data"
    [incident] = views.alerts(late.store)["items"]
    assert incident["id"] == "plays~1" and incident["count"] == 11 and incident["open"] is True

    landing.land(late.store, "plays", "2026-11-26T05", now=T0 + timedelta(minutes=1))
    landing.land(late.store, "plays", "2026-11-26T00", now=T0 + timedelta(minutes=1))
    evaluation.evaluate(late.store, late.publisher, now=T0 + timedelta(minutes=2))
    assert events(late) == []  # a landing updates the incident, quietly
    [incident] = views.alerts(late.store)["items"]
    assert (incident["count"], incident["oldest"]) == (9, "2026-11-26T01")

    before = late.store.stats.snapshot()
    evaluation.evaluate(late.store, late.publisher, now=T0 + timedelta(minutes=3))
    assert events(late) == [] and late.store.stats.since(before)["writes"] == 0

    for h in [*range(1, 5), *range(6, 11)]:
        landing.land(late.store, "plays", f"2026-11-26T{h:02d}", now=T0 + timedelta(minutes=4))
    evaluation.evaluate(late.store, late.publisher, now=T0 + timedelta(minutes=5))
    [resolved] = events(late)
    assert (resolved["event_action"], resolved["dedup_key"]) == ("resolve", "plays~1")
    assert views.alerts(late.store)["items"] == []
    assert views.alerts(late.store, include_closed=True)["items"][0]["open"] is False


def test_history_does_not_page_by_default(svc: Services, clock: FixedClock) -> None:
    # Registered at 12:01 with a start 500 hours back: every deadline passed before.
    start = (T0 - timedelta(hours=500)).strftime("%Y-%m-%dT%H:00:00Z")
    clock.set(T0 + timedelta(minutes=1))
    apply(svc, endpoint("backlog", partitioning="hourly", start=start, sla={"error_after": "PT1H"}))
    result = evaluation.evaluate(svc.store, svc.publisher, now=T0 + timedelta(minutes=30))
    assert result["states"]["late"] == 499 and events(svc) == [] and views.alerts(svc.store)["items"] == []
    row = views.status(svc.store, now=T0 + timedelta(minutes=30))["endpoints"][0]
    assert row["state"] == "late" and row["incident"] is None
    # A partition late after registration does page: one incident of one partition.
    evaluation.evaluate(svc.store, svc.publisher, now=T0 + timedelta(hours=1))
    [sent] = events(svc)
    assert sent["custom_details"]["late_partitions"] == 1 and sent["custom_details"]["oldest"] == "2026-11-26T11"


def test_alert_on_history_opts_in_with_one_notification(svc: Services) -> None:
    start = (T0 - timedelta(hours=500)).strftime("%Y-%m-%dT%H:00:00Z")
    apply(svc, endpoint("backlog", partitioning="hourly", start=start,
                        sla={"error_after": "PT1H", "alert_on_history": True}))
    evaluation.evaluate(svc.store, svc.publisher, now=T0)
    [sent] = events(svc)
    assert sent["custom_details"]["late_partitions"] == 499
    [incident] = views.alerts(svc.store)["items"]
    assert incident["count"] == 499


def test_escalate_warn_to_late_then_renotify_until_acked(svc: Services, clock: FixedClock) -> None:
    apply(svc, endpoint("plays", partitioning="hourly", start="2026-11-26T11:00:00Z",
                        sla={"warn_after": "PT30M", "error_after": "PT2H", "renotify_after": "PT1H"}))
    evaluation.evaluate(svc.store, svc.publisher, now=T0 + timedelta(minutes=31))  # 11 at warn
    [warn] = events(svc)
    assert warn["severity"] == "warning" and warn["custom_details"]["transition"] == "trigger"
    evaluation.evaluate(svc.store, svc.publisher, now=T0 + timedelta(hours=2, minutes=1))  # 11 late: escalated (12 joins at warn)
    [esc] = events(svc)
    assert esc["custom_details"]["transition"] == "escalate" and esc["severity"] == "critical"
    assert esc["dedup_key"] == warn["dedup_key"] and esc["custom_details"]["late_partitions"] == 2
    evaluation.evaluate(svc.store, svc.publisher, now=T0 + timedelta(hours=3, minutes=2))  # an hour later: re-notified
    [again] = events(svc)
    assert again["custom_details"]["transition"] == "renotify" and again["summary"].startswith("still open")
    views.ack(svc.store, svc.authorizer, [warn["dedup_key"]], actor="bob", now=T0)
    evaluation.evaluate(svc.store, svc.publisher, now=T0 + timedelta(hours=5))
    assert events(svc) == []  # acknowledged: no more re-notifications


def test_concurrent_evaluator_with_stale_reads_sends_nothing_twice(late: Services) -> None:
    # Evaluator B read the summaries before A wrote: simulate by restoring them after A ran.
    evaluation.evaluate(late.store, late.publisher, now=T0 - timedelta(hours=10))  # sync + a first quiet pass
    snapshot = late.store.get_many("datamon_endpoints", ["plays"])
    events(late)
    evaluation.evaluate(late.store, late.publisher, now=T0)
    assert len(events(late)) == 1
    late.store.write([__import__("ferry.store.base", fromlist=["Op"]).Op.set(
        "datamon_endpoints", "plays", snapshot["plays"])])
    result = evaluation.evaluate(late.store, late.publisher, now=T0)
    assert events(late) == [] and result["duplicates_skipped"] == 1


def test_dst_stockholm_daily(svc: Services, clock: FixedClock) -> None:
    clock.set(datetime(2026, 3, 28, tzinfo=UTC))
    apply(svc, endpoint("daily-sthlm", partitioning="daily", timezone="Europe/Stockholm",
                        start="2026-03-28T00:00:00+01:00", sla={"error_after": "PT2H"}))
    # 2026-03-29 is 23 hours long in Stockholm: it ends 2026-03-29T22:00Z; deadline 2026-03-30T00:00Z.
    landing.land(svc.store, "daily-sthlm", "2026-03-28", now=datetime(2026, 3, 28, 23, 30, tzinfo=UTC))
    evaluation.evaluate(svc.store, svc.publisher, now=datetime(2026, 3, 29, 23, 59, tzinfo=UTC))
    assert events(svc) == []
    evaluation.evaluate(svc.store, svc.publisher, now=datetime(2026, 3, 30, 0, 0, tzinfo=UTC))
    [sent] = events(svc)
    assert sent["custom_details"]["oldest"] == "2026-03-29" and sent["custom_details"]["late_partitions"] == 1


def test_weekdays_calendar_no_weekend_alerts(svc: Services) -> None:
    apply(svc, endpoint("biz", partitioning="daily", start="2026-11-26T00:00:00Z",
                        sla={"error_after": "PT1H", "calendar": "weekdays"}))
    landing.land(svc.store, "biz", "2026-11-26", now=datetime(2026, 11, 27, 0, 30, tzinfo=UTC))  # Thursday
    for day, hour in ((28, 12), (29, 12), (29, 23)):  # Saturday, Sunday
        evaluation.evaluate(svc.store, svc.publisher, now=datetime(2026, 11, day, hour, tzinfo=UTC))
        assert events(svc) == [], f"alert on a weekend: {day} {hour}"
    # Monday: Friday's partition's deadline (Sat 01:00) moved to Monday 00:00; weekend days not expected.
    evaluation.evaluate(svc.store, svc.publisher, now=datetime(2026, 11, 30, 0, 1, tzinfo=UTC))
    assert [e["custom_details"]["oldest"] for e in events(svc)] == ["2026-11-27"]


def test_at_risk_from_declared_and_workflow_lineage(svc: Services) -> None:
    apply(svc,
          endpoint("raw", partitioning="hourly", start="2026-11-26T00:00:00Z", sla={"error_after": "PT1H"}),
          endpoint("agg", partitioning="daily", start="2026-11-26T00:00:00Z", sla={"error_after": "PT6H"}),
          endpoint("report", partitioning="daily", start="2026-11-26T00:00:00Z", sla={"error_after": "PT6H"}),
          {"kind": "Workflow", "metadata": {"name": "make-report", "owner": "team-a"},
           "spec": {"schedule": "daily", "image": "img", "depends_on": ["agg"], "produces": "report"}})
    apply(svc, endpoint("agg", partitioning="daily", start="2026-11-26T00:00:00Z",
                        sla={"error_after": "PT6H"}, upstream=["raw"]))
    for h in range(0, 10):
        landing.land(svc.store, "raw", f"2026-11-26T{h:02d}", now=T0)
    # raw 10 is late at 12:00; agg's 2026-11-26 day has not even ended: at risk, and so is report.
    evaluation.evaluate(svc.store, svc.publisher, now=T0)
    view = {r["endpoint"]: r for r in views.status(svc.store, now=T0)["endpoints"]}
    assert view["raw"]["state"] == "late"
    assert view["agg"]["state"] == "at_risk"
    assert view["report"]["state"] == "at_risk"
    assert [r["endpoint"] for r in views.status(svc.store, now=T0)["endpoints"]][:3] == ["raw", "agg", "report"]
    # raw catches up: the risk clears.
    for h in range(10, 12):
        landing.land(svc.store, "raw", f"2026-11-26T{h:02d}", now=T0)
    evaluation.evaluate(svc.store, svc.publisher, now=T0 + timedelta(minutes=5))
    view = {r["endpoint"]: r for r in views.status(svc.store, now=T0 + timedelta(minutes=5))["endpoints"]}
    assert view["raw"]["state"] == "ok" and view["agg"]["state"] != "at_risk"


def test_reads_grow_with_due_not_history(svc: Services, clock: FixedClock) -> None:
    for i in range(40):
        apply(svc, endpoint(f"e{i:02d}", partitioning="hourly", start="2026-11-26T11:00:00Z",
                            sla={"error_after": "PT2H", "warn_after": "PT1H"}))
    evaluation.evaluate(svc.store, svc.publisher, now=T0)  # registers them; 11 just ended: pending, looked at until it lands
    for i in range(40):
        landing.land(svc.store, f"e{i:02d}", "2026-11-26T11", now=T0 + timedelta(minutes=10))
    before = svc.store.stats.snapshot()
    r1 = evaluation.evaluate(svc.store, svc.publisher, now=T0 + timedelta(minutes=30))  # also moves the sync cursor past them
    assert r1["endpoints"] == 40 and svc.store.stats.since(before)["writes"] == 40 + 1
    before = svc.store.stats.snapshot()
    r2 = evaluation.evaluate(svc.store, svc.publisher, now=T0 + timedelta(minutes=45))  # nothing due: 12's warn is at 14:00
    io = svc.store.stats.since(before)
    assert r2["endpoints"] == 0 and io["writes"] == 0 and io["reads"] <= 6  # constant: sync, outbox, silences, due
    before = svc.store.stats.snapshot()
    r3 = evaluation.evaluate(svc.store, svc.publisher, now=T0 + timedelta(hours=2))  # every endpoint due once: 12 warn, 13 pending
    io = svc.store.stats.since(before)
    assert r3["endpoints"] == 40 and r3["partitions"] == 80
    assert io["reads"] <= 40 + 80 + 6  # one summary and one read per due partition, no history
    assert len(events(svc)) == 40


def test_ack_needs_ownership_and_takes_several(late: Services, svc: Services) -> None:
    apply(late, {"kind": "Team", "metadata": {"name": "team-a"}, "spec": {"members": ["alice"]}},
          endpoint("clicks", partitioning="hourly", start="2026-11-26T09:00:00Z", sla={"error_after": "PT1H"}))
    late.store.write([__import__("ferry.store.base", fromlist=["Op"]).Op.set(
        "datamon_endpoints", "clicks", {"registered_at": datetime(2026, 11, 26, tzinfo=UTC)}, merge=True)])
    evaluation.evaluate(late.store, late.publisher, now=T0)
    assert sorted(a["id"] for a in views.alerts(late.store)["items"]) == ["clicks~1", "plays~1"]
    with pytest.raises(Forbidden):
        views.ack(late.store, late.authorizer, ["plays~1"], actor="mallory", now=T0)
    assert late.store.get("datamon_alerts", "plays~1")["acked"] is False  # type: ignore[index]
    with pytest.raises(NotFound):
        views.ack(late.store, late.authorizer, ["plays~1", "plays~9"], actor="alice", now=T0)
    assert late.store.get("datamon_alerts", "plays~1")["acked"] is False  # type: ignore[index]
    done = views.ack(late.store, late.authorizer, owner="team-a", actor="alice", now=T0)
    assert done["acknowledged"] == 2 and all(a["acked"] for a in done["items"])
    assert views.ack(late.store, late.authorizer, endpoint="plays", actor="alice", now=T0)["acknowledged"] == 0


def _down(topic: str, messages: Any) -> list[str]:
    """Publishing fails, as when the evaluator dies between claiming and publishing."""
    from ferry.errors import InfraError

    raise InfraError("Pub/Sub unavailable")


def test_crash_between_claim_and_publish_loses_no_notification(late: Services,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from ferry.errors import InfraError

    monkeypatch.setattr(late.publisher, "publish", _down)
    with pytest.raises(InfraError):
        evaluation.evaluate(late.store, late.publisher, now=T0)
    monkeypatch.undo()
    # Within the grace period a claim may belong to an evaluator still publishing: not repeated.
    evaluation.evaluate(late.store, late.publisher, now=T0 + timedelta(minutes=1))
    assert events(late) == []
    # After it, the outbox is published once, and only once.
    result = evaluation.evaluate(late.store, late.publisher, now=T0 + outbox.OUTBOX_GRACE + timedelta(minutes=1))
    sent = events(late)
    assert result["redelivered"] == 1
    assert len(sent) == 1 and sent[0]["event_action"] == "trigger"
    evaluation.evaluate(late.store, late.publisher, now=T0 + outbox.OUTBOX_GRACE + timedelta(minutes=2))
    assert events(late) == []


def test_a_silence_holds_notifications_is_visible_and_expires(late: Services) -> None:
    from ferry.datamon import silences

    s = silences.create(late.store, endpoint="plays", owner=None, team="team-a", duration="PT2H", reason="migration",
                        actor="alice", now=T0 - timedelta(minutes=1))
    result = evaluation.evaluate(late.store, late.publisher, now=T0)
    assert events(late) == [] and result["held"] == 1 and result["notifications"]["trigger"] == 0
    [held] = [d for _, d in late.store.query("datamon_notifications", []) if d.get("held")]
    assert held["silence"] == s["id"] and held["reason"] == "migration" and held["action"] == "trigger"
    [incident] = views.alerts(late.store)["items"]
    assert incident["held"] is True and incident["count"] == 11  # the incident is open and listed
    view = views.status(late.store, now=T0)
    assert view["endpoints"][0]["silenced"] == s["id"] and view["silences"][0]["reason"] == "migration"
    evaluation.evaluate(late.store, late.publisher, now=T0 + timedelta(hours=1))
    assert events(late) == []  # still silenced
    # It expires by itself: the held incident is notified at the next evaluation, once.
    evaluation.evaluate(late.store, late.publisher, now=T0 + timedelta(hours=2))
    [sent] = events(late)
    assert sent["custom_details"]["transition"] == "renotify" and sent["event_action"] == "trigger"
    assert views.status(late.store, now=T0 + timedelta(hours=2))["silences"] == []
    evaluation.evaluate(late.store, late.publisher, now=T0 + timedelta(hours=2, minutes=5))
    assert events(late) == []


def test_an_owner_silence_and_a_never_sent_incident_resolves_quietly(late: Services) -> None:
    from ferry.datamon import silences

    silences.create(late.store, endpoint=None, owner="team-a", team="team-a", duration="PT1H", reason="game day",
                    actor="alice", now=T0)
    evaluation.evaluate(late.store, late.publisher, now=T0)
    for h in range(0, 11):
        landing.land(late.store, "plays", f"2026-11-26T{h:02d}", now=T0 + timedelta(minutes=1))
    result = evaluation.evaluate(late.store, late.publisher, now=T0 + timedelta(minutes=2))
    assert events(late) == [] and result["held"] == 1  # the resolve of a trigger nobody got: held too
    assert views.alerts(late.store)["items"] == []


def test_ack_stops_renotification(late: Services) -> None:
    evaluation.evaluate(late.store, late.publisher, now=T0)
    events(late)
    views.ack(late.store, late.authorizer, endpoint="plays", actor="alice", now=T0)
    evaluation.evaluate(late.store, late.publisher, now=T0 + timedelta(hours=5))  # renotify_after PT4H passed
    assert events(late) == []
    for h in range(0, 17):  # everything ended by 17:00
        landing.land(late.store, "plays", f"2026-11-26T{h:02d}", now=T0 + timedelta(hours=5))
    evaluation.evaluate(late.store, late.publisher, now=T0 + timedelta(hours=5, minutes=1))
    assert [e["event_action"] for e in events(late)] == ["resolve"]  # resolution is still sent


def test_a_landing_with_a_tenth_of_its_usual_records_raises_one_low_volume_alert(svc: Services) -> None:
    apply(svc, endpoint("sales", partitioning="daily", start="2026-10-01T00:00:00Z",
                        sla={"error_after": "PT6H"}, volume={"min_ratio": 0.5, "window": 4}))
    day = datetime(2026, 10, 1, tzinfo=UTC)
    while day < datetime(2026, 11, 25, tzinfo=UTC):  # weekdays 1000 records, weekends 300: slots differ
        landing.land(svc.store, "sales", day.date().isoformat(), records=300 if day.weekday() >= 5 else 1000,
                     now=T0 - timedelta(hours=1))
        day += timedelta(days=1)
    result = evaluation.evaluate(svc.store, svc.publisher, now=T0 - timedelta(minutes=30))
    assert result["low_volume"] == 0 and events(svc) == []  # weekends compared with weekends: no alarm
    landing.land(svc.store, "sales", "2026-11-25", records=100, now=T0)  # a Wednesday: 10% of the usual
    result = evaluation.evaluate(svc.store, svc.publisher, now=T0 + timedelta(minutes=1))
    [sent] = events(svc)
    assert result["low_volume"] == 1 and sent["payload"]["class"] == "low_volume"
    d = sent["custom_details"]
    assert (d["records"], d["expected_records"], d["ratio"], d["compared_with"]) == (100, 1000, 0.1, 4)
    [alert] = views.alerts(svc.store)["items"]
    assert alert["kind"] == "low_volume" and alert["partition"] == "2026-11-25" and alert["records"] == 100
    evaluation.evaluate(svc.store, svc.publisher, now=T0 + timedelta(minutes=2))
    assert events(svc) == []  # once
    views.ack(svc.store, svc.authorizer, [alert["id"]], actor=None, now=T0)
    assert views.alerts(svc.store)["items"] == []  # acknowledging a low-volume alert closes it
