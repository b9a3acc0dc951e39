"""Styx against the Firestore emulator: overlapping ticks never launch an instance twice nor leak a
slot; the event log stays contiguous; concurrent commands on one instance resolve to one winner."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from fakes.styx_launcher import FakeDatamon, FakeLauncher
from ferry.bootstrap import Services, bootstrap
from ferry.clock import FixedClock
from ferry.config import Settings
from ferry.domain.manifests import KINDS
from ferry.errors import Conflict
from ferry.styx import backfills, resources
from ferry.styx import machine as m
from ferry.styx.repository import EVENTS, SLOTS, StyxRepository
from ferry.styx.tick import Tick, TickLimits

pytestmark = pytest.mark.emulator
T0 = datetime(2026, 11, 26, 12, 0, 30, tzinfo=UTC)


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
def datamon() -> FakeDatamon:
    return FakeDatamon()


@pytest.fixture
def svc(emulators, project_id, launcher, datamon):
    from ferry.store.firestore import FirestoreStore

    return bootstrap(Settings(project=project_id, store="firestore", broker="memory"),
                     store=FirestoreStore(project_id), clock=FixedClock(T0), launcher=launcher, datamon=datamon)


def apply(svc: Services, *docs) -> None:
    svc.apply.apply([KINDS[d["kind"]].model_validate(d) for d in docs], svc.clock.now())


def wf(name: str, **spec):
    return {"kind": "Workflow", "metadata": {"name": name, "owner": "t"},
            "spec": {"schedule": "hourly", "image": "img", "command": ["true"], **spec}}


def run_ticks(svc, n: int, now: datetime, limits: TickLimits | None = None):
    barrier = threading.Barrier(n)

    def one(_: int):
        t = Tick(svc.styx, limits or TickLimits(max_active=6))
        barrier.wait()
        return t.run(now)
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def slot_holders(svc) -> dict[str, str]:
    return {i: d["instance"] for i, d in svc.store.query(SLOTS, limit=1000)}


def test_overlapping_ticks_launch_once_and_never_leak_slots(svc, launcher) -> None:
    apply(svc, {"kind": "Resource", "metadata": {"name": "pool"}, "spec": {"concurrency": 4}},
          *(wf(f"w{i:02d}", resources=["pool"]) for i in range(12)))
    now = T0.replace(hour=13, second=5)
    reports = run_ticks(svc, 3, now)
    assert sum(r.triggered for r in reports) == 12  # every natural trigger once, whoever won
    assert len(launcher.launched) == 4
    assert len({(s.workflow, s.parameter) for s in launcher.launched}) == 4
    repo = StyxRepository(svc.store)
    holders = slot_holders(svc)
    active = {r.id for r in repo.holding(100)}
    assert {h for h in holders.values()} == active and len(holders) == 8  # 4 resource + 4 global
    usage = resources.listing(svc.store)[0]["usage"]  # one range query on the slots' pool names
    assert usage["in_use"] == 4 and set(usage["holders"]) == active

    for round_ in range(6):  # finish everything running, tick concurrently, until all are DONE
        for spec in launcher.running():
            launcher.finish(spec, 0)
        run_ticks(svc, 3, now + timedelta(seconds=10 * (round_ + 1)))
        holders = slot_holders(svc)
        assert len([s for s in holders if s.startswith("resource.pool#")]) <= 4
    assert len(launcher.launched) == 12
    assert len({(s.workflow, s.parameter) for s in launcher.launched}) == 12
    for spec in launcher.running():
        launcher.finish(spec, 0)
    run_ticks(svc, 2, now + timedelta(minutes=5))
    assert slot_holders(svc) == {}
    for i in range(12):
        events = repo.events(f"w{i:02d}", "2026-11-26T12")
        assert [e["counter"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["state"] == "DONE"


def test_concurrent_triggers_of_one_instance_have_one_winner(svc) -> None:
    apply(svc, wf("solo"))
    styx = svc.styx
    barrier = threading.Barrier(4)
    results: list[str] = []

    def go(_: int) -> None:
        barrier.wait()
        try:
            styx.trigger("solo", "2026-11-01T00", T0)
            results.append("ok")
        except Conflict:
            results.append("conflict")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(go, range(4)))
    assert sorted(results) == ["conflict"] * 3 + ["ok"]
    assert len(svc.store.query(EVENTS, limit=100)) == 1
    assert styx.instance("solo", "2026-11-01T00").state == m.State.QUEUED


def test_backfill_concurrency_holds_with_overlapping_ticks(svc, launcher) -> None:
    apply(svc, wf("daily", schedule="daily"))
    styx = svc.styx
    bf = backfills.create(styx, "daily", "2026-11-01", "2026-11-07", T0, concurrency=2)
    now = T0
    peak = 0
    for _ in range(12):
        run_ticks(svc, 2, now)
        peak = max(peak, len([r for r in styx.repo.list("daily") if r.active]))
        for spec in launcher.running():
            launcher.finish(spec, 0)
        now += timedelta(seconds=30)
        if backfills.show(styx, bf["id"])["state"] == "done":
            break
    assert backfills.show(styx, bf["id"])["counts"] == {"DONE": 6}
    assert peak == 2 and len(launcher.launched) == 6


def test_backfill_retry_runs_the_failed_through_the_backfills_slots(svc, launcher) -> None:
    """A backfill of concurrency 1 whose 3 instances failed: ``backfill retry`` re-runs them one at a time."""
    apply(svc, wf("flaky", schedule="daily"))
    styx = svc.styx
    bf = backfills.create(styx, "flaky", "2026-11-01", "2026-11-04", T0, concurrency=1)
    now = T0

    def active() -> int:
        return len([r for r in styx.repo.list("flaky") if r.active])

    def drive(code: int) -> int:
        nonlocal now
        peak = active()
        for _ in range(20):
            run_ticks(svc, 2, now)
            peak = max(peak, active())
            for spec in launcher.running():
                launcher.finish(spec, code)
            now += timedelta(seconds=30)
            if backfills.show(styx, bf["id"])["state"] == "done":
                return peak
        raise AssertionError(backfills.show(styx, bf["id"]))

    assert drive(50) == 1  # exit 50: ERROR at once
    assert backfills.show(styx, bf["id"])["counts"] == {"ERROR": 3}
    retried = backfills.retry(styx, bf["id"], now)
    assert retried["retried"] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert retried["state"] == "active" and retried["counts"] == {"QUEUED": 1, "PENDING": 2}
    from ferry.web import views

    shown = views.workflow(svc, "flaky")["backfills"][0]  # the web view's progress agrees
    assert shown["counts"] == {"QUEUED": 1, "PENDING": 2} and shown["finished"] == 0
    assert drive(0) == 1  # never more than the backfill's concurrency at once
    assert backfills.show(styx, bf["id"])["counts"] == {"DONE": 3}
    assert len(launcher.launched) == 6 and not slot_holders(svc)
    with pytest.raises(Conflict, match="no failed instances"):
        backfills.retry(styx, bf["id"], now)


def test_overlapping_ticks_share_one_submission_rate_per_minute(svc, launcher) -> None:
    from ferry.styx.repository import RATE

    apply(svc, *(wf(f"r{i:02d}") for i in range(12)))
    now = T0.replace(hour=13, second=5)
    limits = TickLimits(submissions_per_minute=5)
    reports = run_ticks(svc, 3, now, limits)
    assert len(launcher.launched) == 5 and len({s.workflow for s in launcher.launched}) == 5
    assert any(r.rate_limited for r in reports)
    assert len(svc.store.query(RATE, limit=100)) == 5
    run_ticks(svc, 3, now + timedelta(seconds=30), limits)  # same minute: nothing more
    assert len(launcher.launched) == 5
    run_ticks(svc, 3, now + timedelta(minutes=1), limits)
    assert len(launcher.launched) == 10 and len({s.workflow for s in launcher.launched}) == 10
    assert {d["minute"] for _, d in svc.store.query(RATE, limit=100)} == {"2026-11-26T13:01"}
