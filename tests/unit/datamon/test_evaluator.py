from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ferry.bootstrap import Services
from ferry.clock import FixedClock
from ferry.datamon import evaluation, landing, outbox, views
from ferry.errors import Forbidden, NotFound
from ferry.gabo.broker import MemoryBroker

from .conftest import T0, apply, endpoint


def events(svc: Services) -> list[dict[str, Any]]:
    pub = svc.broker
    assert isinstance(pub, MemoryBroker)
    return [json.loads(m.data) for m in pub.take("ferry-alerts")]


@pytest.fixture
def late(svc: Services) -> Services:
    # hourly from 00:00; at 12:00 hours 00..09 are past the 2h deadline, 10 at warn, 11 pending.
    apply(svc, endpoint("plays", partitioning="hourly", start="2026-11-26T00:00:00Z",
                        sla={"warn_after": "PT1H", "error_after": "PT2H", "severity": "page"}))
    return svc


def test_must_show_trigger_resolve_quiet(late: Services) -> None:
    result = evaluation.evaluate(late, now=T0)
    assert result["states"] == {"late": 10, "warn": 1, "pending": 1}
    sent = events(late)
    assert len(sent) == 11 and {e["event_action"] for e in sent} == {"trigger"}
    assert len({e["dedup_key"] for e in sent}) == 11
    by_key = {e["dedup_key"]: e for e in sent}
    assert by_key["plays/2026-11-26T05"]["severity"] == "critical"
    assert by_key["plays/2026-11-26T10"]["severity"] == "warning"
    assert by_key["plays/2026-11-26T05"]["custom_details"]["overdue_seconds"] == 6 * 3600
    assert by_key["plays/2026-11-26T05"]["owner"] == "team-a"
    assert len(views.alerts(late)) == 11

    landing.land(late, "plays", "2026-11-26T05", now=T0 + timedelta(minutes=1))
    evaluation.evaluate(late, now=T0 + timedelta(minutes=2))
    sent = events(late)
    assert [(e["event_action"], e["dedup_key"]) for e in sent] == [("resolve", "plays/2026-11-26T05")]
    assert "landed 241 minutes late" in sent[0]["summary"]
    assert len(views.alerts(late)) == 10
    assert len(views.alerts(late, include_closed=True)) == 11

    before = late.store.stats.snapshot()
    evaluation.evaluate(late, now=T0 + timedelta(minutes=3))
    assert events(late) == []
    assert late.store.stats.since(before)["writes"] == 0


def test_escalate_warn_to_late_then_renotify_until_acked(late: Services) -> None:
    evaluation.evaluate(late, now=T0)
    events(late)
    # 10 goes late at 13:00; 11 goes warn at 13:00
    evaluation.evaluate(late, now=T0 + timedelta(hours=1))
    sent = {e["dedup_key"]: e for e in events(late)}
    assert sent["plays/2026-11-26T10"]["custom_details"]["transition"] == "escalate"
    assert sent["plays/2026-11-26T10"]["severity"] == "critical"
    assert sent["plays/2026-11-26T11"]["custom_details"]["transition"] == "trigger"  # warn at 13:00
    assert sent["plays/2026-11-26T11"]["severity"] == "warning" and len(sent) == 2
    views.ack(late, "plays/2026-11-26T00", actor="bob", now=T0)
    evaluation.evaluate(late, now=T0 + timedelta(hours=4))  # renotify_after default PT4H from 12:00
    renotified = [e for e in events(late) if e["custom_details"]["transition"] == "renotify"]
    keys = {e["dedup_key"] for e in renotified}
    assert "plays/2026-11-26T00" not in keys and "plays/2026-11-26T01" in keys
    assert len(keys) == 9  # 01..09 opened at 12:00; 10, 11 escalated at 13:00, 12+ later
    evaluation.evaluate(late, now=T0 + timedelta(hours=4, minutes=5))
    assert [e for e in events(late) if e["custom_details"]["transition"] == "renotify"] == []


def test_concurrent_evaluator_with_stale_reads_sends_nothing_twice(late: Services) -> None:
    # Evaluator B read the summaries before A wrote: simulate by restoring them after A ran.
    snapshot = late.store.get_many("datamon_endpoints", ["plays"])  # not yet synced: empty
    evaluation.evaluate(late, now=T0 - timedelta(hours=10))  # sync + a first quiet pass
    snapshot = late.store.get_many("datamon_endpoints", ["plays"])
    events(late)
    evaluation.evaluate(late, now=T0)
    assert len(events(late)) == 11
    late.store.write([__import__("ferry.store.base", fromlist=["Op"]).Op.set(
        "datamon_endpoints", "plays", snapshot["plays"])])
    result = evaluation.evaluate(late, now=T0)
    assert events(late) == [] and result["duplicates_skipped"] == 11


def test_dst_stockholm_daily(svc: Services) -> None:
    apply(svc, endpoint("daily-sthlm", partitioning="daily", timezone="Europe/Stockholm",
                        start="2026-03-28T00:00:00+01:00", sla={"error_after": "PT2H"}))
    # 2026-03-29 is 23 hours long in Stockholm: it ends 2026-03-29T22:00Z; deadline 2026-03-30T00:00Z.
    landing.land(svc, "daily-sthlm", "2026-03-28", now=datetime(2026, 3, 28, 23, 30, tzinfo=UTC))
    evaluation.evaluate(svc, now=datetime(2026, 3, 29, 23, 59, tzinfo=UTC))
    assert events(svc) == []
    evaluation.evaluate(svc, now=datetime(2026, 3, 30, 0, 0, tzinfo=UTC))
    sent = events(svc)
    assert [e["dedup_key"] for e in sent] == ["daily-sthlm/2026-03-29"]
    assert sent[0]["custom_details"]["period_end"] == "2026-03-29T22:00:00+00:00"


def test_weekdays_calendar_no_weekend_alerts(svc: Services) -> None:
    apply(svc, endpoint("biz", partitioning="daily", start="2026-11-26T00:00:00Z",
                        sla={"error_after": "PT1H", "calendar": "weekdays"}))
    landing.land(svc, "biz", "2026-11-26", now=datetime(2026, 11, 27, 0, 30, tzinfo=UTC))  # Thursday
    for day, hour in ((28, 12), (29, 12), (29, 23)):  # Saturday, Sunday
        evaluation.evaluate(svc, now=datetime(2026, 11, day, hour, tzinfo=UTC))
        assert events(svc) == [], f"alert on a weekend: {day} {hour}"
    # Monday: Friday's partition's deadline (Sat 01:00) moved to Monday 00:00; weekend days not expected.
    evaluation.evaluate(svc, now=datetime(2026, 11, 30, 0, 1, tzinfo=UTC))
    assert [e["dedup_key"] for e in events(svc)] == ["biz/2026-11-27"]


def test_at_risk_from_declared_and_workflow_lineage(svc: Services) -> None:
    apply(svc,
          endpoint("raw", partitioning="hourly", start="2026-11-26T00:00:00Z", sla={"error_after": "PT1H"}),
          endpoint("agg", partitioning="daily", start="2026-11-26T00:00:00Z", sla={"error_after": "PT6H"}),
          endpoint("report", partitioning="daily", start="2026-11-26T00:00:00Z", sla={"error_after": "PT6H"}),
          {"kind": "Workflow", "metadata": {"name": "make-report", "owner": "team-b"},
           "spec": {"schedule": "daily", "image": "img", "depends_on": ["agg"], "produces": "report"}})
    apply(svc, endpoint("agg", partitioning="daily", start="2026-11-26T00:00:00Z",
                        sla={"error_after": "PT6H"}, upstream=["raw"]))
    for h in range(0, 10):
        landing.land(svc, "raw", f"2026-11-26T{h:02d}", now=T0)
    # raw 10 is late at 12:00; agg's 2026-11-26 day has not even ended: at risk, and so is report.
    evaluation.evaluate(svc, now=T0)
    view = {r["endpoint"]: r for r in views.status(svc, now=T0)["endpoints"]}
    assert view["raw"]["state"] == "late"
    assert view["agg"]["state"] == "at_risk"
    assert view["report"]["state"] == "at_risk"
    assert [r["endpoint"] for r in views.status(svc, now=T0)["endpoints"]][:3] == ["raw", "agg", "report"]
    # raw catches up: the risk clears.
    for h in range(10, 12):
        landing.land(svc, "raw", f"2026-11-26T{h:02d}", now=T0)
    evaluation.evaluate(svc, now=T0 + timedelta(minutes=5))
    view = {r["endpoint"]: r for r in views.status(svc, now=T0 + timedelta(minutes=5))["endpoints"]}
    assert view["raw"]["state"] == "ok" and view["agg"]["state"] != "at_risk"


def test_reads_grow_with_due_not_history(svc: Services, clock: FixedClock) -> None:
    for i in range(40):
        apply(svc, endpoint(f"e{i:02d}", partitioning="hourly", start="2026-11-26T11:00:00Z",
                            sla={"error_after": "PT2H", "warn_after": "PT1H"}))
    evaluation.evaluate(svc, now=T0)  # registers them; 11 just ended: pending, looked at until it lands
    for i in range(40):
        landing.land(svc, f"e{i:02d}", "2026-11-26T11", now=T0 + timedelta(minutes=10))
    before = svc.store.stats.snapshot()
    r1 = evaluation.evaluate(svc, now=T0 + timedelta(minutes=30))  # also moves the sync cursor past them
    assert r1["endpoints"] == 40 and svc.store.stats.since(before)["writes"] == 40 + 1
    before = svc.store.stats.snapshot()
    r2 = evaluation.evaluate(svc, now=T0 + timedelta(minutes=45))  # nothing due: 12's warn is at 14:00
    io = svc.store.stats.since(before)
    assert r2["endpoints"] == 0 and io["writes"] == 0 and io["reads"] <= 5  # constant: sync, outbox, due queries
    before = svc.store.stats.snapshot()
    r3 = evaluation.evaluate(svc, now=T0 + timedelta(hours=2))  # every endpoint due once: 12 warn, 13 pending
    io = svc.store.stats.since(before)
    assert r3["endpoints"] == 40 and r3["partitions"] == 80
    assert io["reads"] <= 40 + 80 + 5  # one summary and one read per due partition, no history
    assert len(events(svc)) == 40


def test_ack_needs_ownership(late: Services) -> None:
    apply(late, {"kind": "Team", "metadata": {"name": "team-a"}, "spec": {"members": ["alice"]}})
    evaluation.evaluate(late, now=T0)
    with pytest.raises(Forbidden):
        views.ack(late, "plays@2026-11-26T00", actor="mallory", now=T0)
    assert late.store.get("datamon_alerts", "plays@2026-11-26T00")["acked"] is False  # type: ignore[index]
    assert views.ack(late, "plays@2026-11-26T00", actor="alice", now=T0)["acked"] is True
    with pytest.raises(NotFound):
        views.ack(late, "plays@1999-01-01T00", actor="alice", now=T0)


def _down(topic: str, messages: Any) -> list[str]:
    """Publishing fails, as when the evaluator dies between claiming and publishing."""
    from ferry.errors import InfraError

    raise InfraError("Pub/Sub unavailable")


def test_crash_between_claim_and_publish_loses_no_notification(late: Services,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from ferry.errors import InfraError

    monkeypatch.setattr(late.publisher, "publish", _down)
    with pytest.raises(InfraError):
        evaluation.evaluate(late, now=T0)
    monkeypatch.undo()
    # Within the grace period a claim may belong to an evaluator still publishing: not repeated.
    evaluation.evaluate(late, now=T0 + timedelta(minutes=1))
    assert events(late) == []
    # After it, the outbox is published once, and only once.
    result = evaluation.evaluate(late, now=T0 + outbox.OUTBOX_GRACE + timedelta(minutes=1))
    sent = events(late)
    assert result["redelivered"] == 11
    assert len(sent) == 11 and {e["event_action"] for e in sent} == {"trigger"}
    evaluation.evaluate(late, now=T0 + outbox.OUTBOX_GRACE + timedelta(minutes=2))
    assert events(late) == []
