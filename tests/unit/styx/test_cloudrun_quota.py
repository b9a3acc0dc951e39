"""Cloud Run's quotas through the tick: the real run_v2 clients against the fake, which answers
RESOURCE_EXHAUSTED (HTTP 429) as the real service does. A refused launch is requeued with no try spent,
the submission rate slows down, and every instance is submitted exactly once when the quota allows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fakes.run_v2 import FakeRunV2
from fakes.styx_launcher import FakeDatamon
from ferry.bootstrap import in_memory
from ferry.clock import FixedClock
from ferry.domain.manifests import Workflow
from ferry.styx import machine as m
from ferry.styx.launchers import Throttled
from ferry.styx.launchers.cloudrun import CloudRunLauncher
from ferry.styx.slots import effective_rate
from ferry.styx.tick import Tick, TickLimits

T0 = datetime(2026, 11, 26, 12, 0, 5, tzinfo=UTC)


def _workflow(name: str) -> Workflow:
    return Workflow.model_validate({"kind": "Workflow", "metadata": {"name": name, "owner": "team-a"},
                                    "spec": {"schedule": "hourly", "image": f"img/{name}:1", "args": ["{}"]}})


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def fake(clock: FixedClock):
    f = FakeRunV2(clock=lambda: clock.now().timestamp())
    f.start()
    yield f
    f.stop()


def test_the_launcher_says_throttled_when_the_api_answers_resource_exhausted(fake: FakeRunV2) -> None:
    from .test_cloudrun_launcher import spec

    launcher = CloudRunLauncher("proj", "europe-west1", *fake.clients())
    fake.refuse_runs(1)
    with pytest.raises(Throttled, match="Quota exceeded for quota metric 'Job run requests'"):
        launcher.launch(spec())
    assert not fake.executions  # nothing was started
    assert launcher.launch(spec()).handle in fake.executions


def test_effective_rate_halves_then_grows_back() -> None:
    throttle = {"throttled_minute": "2026-11-26T12:00", "rate": 20}
    assert effective_rate(180, None, "2026-11-26T12:00") == 180
    assert effective_rate(180, throttle, "2026-11-26T12:00") == 20      # the minute of the 429: spent
    assert effective_rate(180, throttle, "2026-11-26T12:01") == 38      # + a tenth of 180 a minute
    assert effective_rate(180, throttle, "2026-11-26T12:10") == 180     # back to the configured rate
    assert effective_rate(180, throttle, "2026-11-26T11:59") == 180     # (a clock behind the record)


def test_a_429_storm_requeues_without_spending_a_try_and_all_are_submitted_once(fake: FakeRunV2,
                                                                                clock: FixedClock) -> None:
    """100 instances; the API refuses every RunJob for the first minutes (a storm), then allows 30 a
    minute (the project's quota) while Ferry is configured for 100: 0 errored, 0 tries spent, each
    instance submitted exactly once."""
    launcher = CloudRunLauncher("proj", "europe-west1", *fake.clients())
    svc = in_memory(clock, launcher=launcher, datamon=FakeDatamon())
    names = [f"wf-{i:03d}" for i in range(100)]
    svc.apply.apply([_workflow(n) for n in names], clock.now())
    styx = svc.styx
    for n in names:
        styx.trigger(n, "2026-11-01T00", clock.now())
    limits = TickLimits(max_active=1000, submissions_per_minute=100)

    fake.refuse_runs(10**6)  # the storm: every RunJob refused
    reports = [Tick(svc.styx, limits).run(clock.now()) for _ in range(2)]
    clock.advance(timedelta(minutes=1))
    reports.append(Tick(svc.styx, limits).run(clock.now()))
    assert not fake.executions
    assert reports[0].throttled >= 1
    assert reports[1].throttled == 0  # the same minute: the requeued wait, no more 429s asked for
    assert reports[2].throttled >= 1
    fake.refuse_runs(0)
    fake.run_quota = 30  # the storm is over; the project's quota is 30 a minute

    runs_per_minute: list[int] = []
    for _ in range(30):
        clock.advance(timedelta(minutes=1))
        before = len(fake.runs)
        reports.append(Tick(svc.styx, limits).run(clock.now()))
        runs_per_minute.append(len(fake.runs) - before)
        if len(fake.runs) == len(names):
            break
    runs = [styx.instance(n, "2026-11-01T00") for n in names]
    assert {r.state for r in runs} <= {m.State.SUBMITTED, m.State.RUNNING}  # none errored, none waiting
    assert all(r.tries == 1 and r.spent == 1 for r in runs)  # the refused launches spent nothing
    assert sum(r.errors + r.launch_failed for r in reports) == 0
    # each instance launched exactly once, under its own execution id
    ids = [next(e.value for e in req.overrides.container_overrides[0].env if e.name == "FERRY_EXECUTION_ID")
           for req in fake.runs]
    assert len(ids) == len(set(ids)) == 100 and len(fake.executions) == 100
    assert max(runs_per_minute) <= 30
    assert any(doc["event"] == "requeue" for _, doc in svc.store.query("styx_events", []))
    throttled = sum(r.throttled for r in reports)
    print(f"\n429 storm: {len(fake.refused)} requests refused, {throttled} launches requeued, "
          f"0 errored, 0 tries spent; submitted per minute after the storm: {runs_per_minute}")
