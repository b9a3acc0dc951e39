"""Issue 23, item 7 (and item 9's abandoned delivery runs): closing that catches up however far behind,
in bounded reads per run; state that does not grow without bound."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from tests.unit.gabo.test_gabo_accepted_delivered import T0, Stack

from ferry.domain.manifests import EventType
from ferry.gabo import retention
from ferry.gabo.closing import service as closing
from ferry.gabo.ingest.ledger import Ledger
from ferry.gabo.state import GaboState

BEHIND = 130  # minutes (PT1M periods) the type is behind: more than two windows of WINDOW
WINDOW = 50


def _stuck_first_period(stack: Stack, created: object) -> None:
    """An accepted event of the type's first period that never arrives: that period stays open (missing)."""
    led = Ledger(stack.svc.store)
    led.begin("lost", ["play"], created)  # type: ignore[arg-type]
    led.confirm("lost", Ledger.accepted_record({"play": (created, ["never-delivered"])}),  # type: ignore[dict-item]
                since=created, begun=["play"])  # type: ignore[arg-type]


def test_a_stuck_period_never_hides_the_ones_after_it_and_closing_catches_up(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Found: after a stuck period one close closed the 499 after it, then never considered the next ones
    again (each run re-read the ~500 closed records). Here with windows of 50 periods (the same code)."""
    monkeypatch.setattr(closing, "MAX_PERIODS_PER_RUN", WINDOW)
    created = (T0 - timedelta(minutes=BEHIND)).replace(second=0)
    stack = Stack(tmp_path, applied_at=created)
    _stuck_first_period(stack, created)
    stack.deliver(T0)  # drained: the watermark is T0
    now = T0 + timedelta(seconds=10)
    closed: set[str] = set()
    reads = []
    for _ in range(4):
        before = stack.svc.store.stats.reads
        rep = stack.close(now)
        reads.append(stack.svc.store.stats.reads - before)
        closed |= {c.partition for c in rep.closed}
    ended = BEHIND  # periods from `created` that ended before T0's period
    assert len(closed) == ended - 1, (len(closed), ended)
    first = created.strftime("%Y-%m-%dT%H:%M")
    assert first not in closed
    # a run once caught up reads the stuck period and the undecided ones, not what closed
    assert reads[-1] < 20, reads
    state = GaboState(stack.svc.store).cursor_state("play")
    assert state[0] == created and state[2] == [created]
    assert max(reads) < 4 * (closing.MAX_PERIODS_PER_RUN + closing.MAX_STUCK), reads
    json.dumps(rep.to_dict())


GABO = ("gabo_runs", "gabo_closing", "gabo_close_shards", "gabo_closed", "gabo_close_waits", "gabo_finishers",
        "gabo_ledger", "gabo_delivered", "gabo_scaling", "gabo_cursors", "gabo_deleted_types")


def counts(stack: Stack) -> dict[str, int]:
    return {c: len(stack.svc.store.query(c)) for c in GABO}


def _soak(stack: Stack, minutes: int, start: datetime) -> datetime:
    """A type at work for ``minutes``: a request a minute, delivered and closed each minute."""
    now = start
    for m in range(minutes):
        now = start + timedelta(minutes=m)
        stack.ingest(json.dumps([{"type": "play", "id": f"e{m}-{i}", "payload": {}} for i in range(3)]).encode(), now)
        stack.deliver(now + timedelta(seconds=20))
        stack.close(now + timedelta(seconds=30))
    end = start + timedelta(minutes=minutes)
    stack.deliver(end + timedelta(seconds=20))  # the last period closes too
    stack.close(end + timedelta(seconds=30))
    return end + timedelta(minutes=1)


@pytest.mark.unindexed_queries  # the test counts whole collections; the cleanup's own queries are indexed
def test_the_cleanup_deletes_what_outlived_its_retention_and_keeps_the_rest(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    end = _soak(stack, 30, T0)
    soaked = counts(stack)
    assert soaked["gabo_closing"] >= 29 and soaked["gabo_ledger"] == 30 and soaked["gabo_runs"] >= 30
    # a day and a bit later: closing records and the ledger of closed periods go, completion records stay
    later = end + retention.CLOSING_RETENTION + timedelta(minutes=5)
    out = stack.g.cleanup(later)
    left = counts(stack)
    assert out["deleted"]["gabo_closing"] == soaked["gabo_closing"], out
    assert (left["gabo_closing"], left["gabo_close_shards"], left["gabo_ledger"], left["gabo_delivered"]) == (0, 0, 0, 0)
    assert left["gabo_closed"] == soaked["gabo_closed"]
    # a week later: the completion records, runs and scaling decisions too; the cursor stays
    week = end + retention.CLOSED_RETENTION + timedelta(minutes=5)
    stack.g.cleanup(week)
    left = counts(stack)
    assert {c: n for c, n in left.items() if n} == {"gabo_cursors": 1}, left
    # and closing goes on where it was
    assert GaboState(stack.svc.store).cursor("play") is not None


def test_a_killed_delivery_run_is_marked_abandoned_not_unfinished_forever(tmp_path: Path) -> None:
    """Found (item 9): a delivery run SIGKILLed mid-run stays "unfinished" forever in gabo_runs."""
    stack = Stack(tmp_path)
    state = GaboState(stack.svc.store)
    state.save_run("play-killed", {"event_type": "play", "run_id": "play-killed", "started_at": T0,
                                   "updated_at": T0, "finished_at": None, "holding_oldest": T0,
                                   "lease_until": T0 + timedelta(seconds=15), "drained_at": None})
    out = stack.g.cleanup(T0 + retention.ABANDONED_AFTER - timedelta(seconds=1))
    assert out["abandoned_runs"] == 0  # silent, but not long enough
    out = stack.g.cleanup(T0 + retention.ABANDONED_AFTER + timedelta(seconds=1))
    run = stack.svc.store.get("gabo_runs", "play-killed")
    assert out["abandoned_runs"] == 1 and run is not None
    assert run["abandoned"] is True and run["finished_at"] == T0 and run["holding_oldest"] is None


@pytest.mark.unindexed_queries
def test_a_deleted_type_is_retired_then_its_resources_and_records_go(tmp_path: Path) -> None:
    """Found: a deleted type's topics, hold subscriptions and records were never deleted, and its
    ``events.<type>`` endpoint kept opening late incidents."""
    from ferry.datamon.evaluation import evaluate

    stack = Stack(tmp_path)
    end = _soak(stack, 3, T0)
    stack.svc.apply.delete("EventType", "play", end, "someone")
    assert stack.svc.manifests.get("Endpoint", "events.play") is not None  # readable, with its partitions
    # retired: hours later Datamon opens no incident for it
    result = evaluate(stack.svc.store, stack.svc.publisher, now=end + timedelta(hours=6))
    assert not [a for _, a in stack.svc.store.query("datamon_alerts") if a.get("endpoint") == "events.play"], result
    # kept for the subscription retention (replay from the holds still works), then gone
    assert "gabo-play-dead-letter-hold" in stack.broker.subs
    stack.g.reconcile(end + timedelta(days=1))
    stack.g.cleanup(end + timedelta(days=1))
    assert "gabo-play-quarantine-hold" in stack.broker.subs and "gabo-play" in stack.broker.topics
    gone = end + retention.DELETED_RETENTION + timedelta(minutes=1)
    stack.g.reconcile(gone)
    stack.g.cleanup(gone)
    assert not [n for n in [*stack.broker.subs, *stack.broker.topics] if n.startswith("gabo-play")]
    assert {c: n for c, n in counts(stack).items() if n} == {}
    # applied again: a fresh start, evaluated again
    et = EventType.model_validate({"metadata": {"name": "play", "owner": "team-a"},
                                   "spec": {"schema": {"type": "object"}, "partitioning": "PT1M"}})
    stack.svc.apply.apply([et], gone)
    assert "gabo-play-delivery" in stack.broker.subs
