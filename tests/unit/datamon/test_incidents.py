"""The incident decision as a pure function of the stored incident, its members and ``now``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ferry.datamon.domain import Action, Level, Member, Policy, decide_incident
from ferry.datamon.domain.incidents import low_volume, volume_slots

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
P = Policy("plays", "team-a", "hourly", renotify_after=timedelta(hours=1))


def m(hour: int, lvl: Level = Level.LATE) -> Member:
    return Member(f"2026-11-26T{hour:02d}", datetime(2026, 11, 26, hour, tzinfo=UTC), lvl)


def test_lifecycle() -> None:
    assert decide_incident(P, None, [], 0, T0) == (None, None)
    opened, d = decide_incident(P, None, [m(9, Level.WARN)], 4, T0)
    assert d is not None and d.action is Action.TRIGGER and opened is not None and opened.id == "plays~5"
    assert d.severity == "warning" and d.claim_id == "plays~5#1"
    same, d = decide_incident(P, opened, [m(9, Level.WARN), m(10, Level.WARN)], 5, T0 + timedelta(minutes=5))
    assert d is None and same is not None and (same.count, same.newest) == (2, "2026-11-26T10")
    esc, d = decide_incident(P, same, [m(9), m(10, Level.WARN)], 5, T0 + timedelta(minutes=10))
    assert d is not None and d.action is Action.ESCALATE and d.severity == "critical" and esc.seq == 2  # type: ignore[union-attr]
    again, d = decide_incident(P, esc, [m(9), m(10)], 5, T0 + timedelta(hours=1, minutes=10))
    assert d is not None and d.action is Action.RENOTIFY and again.seq == 3  # type: ignore[union-attr]
    _, d = decide_incident(P, again, [m(9), m(10)], 5, T0 + timedelta(hours=3), acked=True)
    assert d is None
    gone, d = decide_incident(P, again, [], 5, T0 + timedelta(hours=4))
    assert gone is None and d is not None and d.action is Action.RESOLVE and d.claim_id == "plays~5#4"


def test_silenced_trigger_is_held_then_sent_once_the_silence_is_over() -> None:
    opened, d = decide_incident(P, None, [m(9)], 0, T0, silenced=True)
    assert d is not None and d.held and opened is not None and not opened.sent
    still, d = decide_incident(P, opened, [m(9)], 1, T0 + timedelta(minutes=30), silenced=True)
    assert d is None  # held: nothing more until the silence is over (or renotify_after: held again)
    sent, d = decide_incident(P, still, [m(9)], 1, T0 + timedelta(hours=2, minutes=1))
    assert d is not None and d.action is Action.RENOTIFY and not d.held and sent is not None and sent.sent
    _, d = decide_incident(P, opened, [], 1, T0)  # never sent: its resolve is held too
    assert d is not None and d.action is Action.RESOLVE and d.held


def test_volume_slots_and_ratio() -> None:
    daily = Policy("sales", "team-a", "daily", start=datetime(2026, 11, 1, tzinfo=UTC), min_ratio=0.5)
    assert volume_slots(daily, datetime(2026, 11, 25, tzinfo=UTC)) == ["2026-11-18", "2026-11-11", "2026-11-04"]
    assert low_volume(daily, "2026-11-25", 100, [], T0) is None
    assert low_volume(daily, "2026-11-25", 600, [1000, 1000, 900], T0) is None
    d = low_volume(daily, "2026-11-25", 100, [1000, 1000, 900], T0)
    assert d is not None and d.kind == "low_volume" and d.details["expected_records"] == 1000
