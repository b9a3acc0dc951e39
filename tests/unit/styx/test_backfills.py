"""Backfills: bounds, overlaps, concurrency, halt."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ferry.errors import BadRequest, Conflict, NotFound
from ferry.styx import backfills
from ferry.styx import machine as m

from .conftest import apply, workflow


def daily(svc) -> None:
    apply(svc, workflow("d", schedule="daily", args=["{}"], produces=None))


def test_six_daily_partitions_with_concurrency_two(svc, clock, tick, launcher, styx) -> None:
    daily(svc)
    bf = backfills.create(styx, "d", "2026-11-01", "2026-11-07", clock.now(), concurrency=2, description="fix")
    assert bf["total"] == 6 and bf["counts"] == {"QUEUED": 2, "PENDING": 4}
    max_running = 0
    for _ in range(20):
        tick()
        active = [r for r in styx.repo.list("d") if r.active]
        max_running = max(max_running, len(active))
        for spec in launcher.running():
            launcher.finish(spec, 0)
        clock.advance(timedelta(seconds=30))
    shown = backfills.show(styx, bf["id"])
    assert shown["counts"] == {"DONE": 6} and shown["state"] == "done"
    assert max_running == 2
    assert sorted(s.parameter for s in launcher.launched) == [f"2026-11-0{d}" for d in range(1, 7)]
    assert all(s.env["FERRY_TRIGGER_TYPE"] == "backfill" for s in launcher.launched)


def test_reverse_order(svc, clock, tick, launcher, styx) -> None:
    daily(svc)
    backfills.create(styx, "d", "2026-11-01", "2026-11-04", clock.now(), concurrency=1, reverse=True)
    tick()
    assert launcher.launched[0].parameter == "2026-11-03"


@pytest.mark.parametrize(("start", "end", "reason"), [
    ("2026-11-01T05", "2026-11-03", "not aligned"),
    ("2026-11-05", "2026-11-03", "must be after"),
    ("2026-11-05", "2026-11-05", "must be after"),
])
def test_bad_bounds(svc, clock, styx, start, end, reason) -> None:
    daily(svc)
    with pytest.raises(BadRequest) as err:
        backfills.create(styx, "d", start, end, clock.now())
    assert reason in err.value.message
    assert backfills.listing(styx) == []


def test_unknown_workflow_and_overlap(svc, clock, styx) -> None:
    daily(svc)
    with pytest.raises(NotFound):
        backfills.create(styx, "nope", "2026-11-01", "2026-11-03", clock.now())
    styx.trigger("d", "2026-11-02", clock.now())
    with pytest.raises(Conflict) as err:
        backfills.create(styx, "d", "2026-11-01", "2026-11-04", clock.now())
    assert "2026-11-02" in err.value.message
    backfills.create(styx, "d", "2026-11-10", "2026-11-14", clock.now())
    with pytest.raises(Conflict) as err:
        backfills.create(styx, "d", "2026-11-12", "2026-11-20", clock.now())
    assert "2026-11-13" in err.value.message


def test_halt_and_graceful_halt(svc, clock, tick, launcher, styx) -> None:
    daily(svc)
    bf = backfills.create(styx, "d", "2026-11-01", "2026-11-05", clock.now(), concurrency=2)
    tick()
    out = backfills.halt(styx, bf["id"], clock.now(), graceful=True)
    assert out["state"] == "halted" and out["counts"]["SUBMITTED"] == 2
    for spec in launcher.running():
        launcher.finish(spec, 0)
    tick()
    assert backfills.show(styx, bf["id"])["counts"] == {"DONE": 2, "NOT_RUN": 2}
    bf2 = backfills.create(styx, "d", "2026-11-10", "2026-11-12", clock.now(), concurrency=2)
    tick()
    backfills.halt(styx, bf2["id"], clock.now())
    assert all(r.state == m.State.ERROR for r in styx.repo.list("d") if r.backfill == bf2["id"])
    with pytest.raises(Conflict):
        backfills.halt(styx, bf2["id"], clock.now())


def test_one_backfill_s_failure_does_not_stop_the_others_or_the_tick(svc, clock, tick, launcher, styx,
                                                                      monkeypatch) -> None:
    daily(svc)
    apply(svc, workflow("e", schedule="daily", args=["{}"], produces=None))
    broken = backfills.create(styx, "d", "2026-11-01", "2026-11-03", clock.now(), concurrency=1)
    fine = backfills.create(styx, "e", "2026-11-01", "2026-11-03", clock.now(), concurrency=1)
    real = backfills.progress

    def progress(s, bf, now):
        if bf["id"] == broken["id"]:
            raise KeyError("a field this backfill's document lacks")
        return real(s, bf, now)
    monkeypatch.setattr(backfills, "progress", progress)
    for _ in range(6):
        report = tick()
        assert report.errors == 1
        for spec in launcher.running():
            launcher.finish(spec, 0)
        clock.advance(timedelta(seconds=30))
    assert backfills.show(styx, fine["id"])["state"] == "done"
    assert {s.workflow for s in launcher.launched} == {"d", "e"}  # the broken one's first partition had been queued
