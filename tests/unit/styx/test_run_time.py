"""An execution's run time is the job's own (when the platform started and ended it), recorded on its
terminate event and shown as such — not the time until a tick happened to notice (issue 22)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fakes.run_v2 import FakeRunV2
from fakes.styx_launcher import FakeLauncher
from ferry.bootstrap import in_memory
from ferry.clock import FixedClock
from ferry.domain.manifests import KINDS
from ferry.styx.launchers import LaunchSpec, Status
from ferry.styx.launchers.cloudrun import CloudRunLauncher
from ferry.styx.launchers.local import LocalLauncher
from ferry.styx.tick import Tick, TickLimits

JOB = str(Path(__file__).resolve().parents[3] / "examples" / "styx" / "job.py")


def spec(execution_id: str, *args: str) -> LaunchSpec:
    return LaunchSpec(workflow="w", parameter="2026-11-26", execution_id=execution_id, image="img",
                      command=["python", JOB], args=list(args), env={}, timeout=timedelta(minutes=1))


def test_the_local_launcher_reports_the_jobs_own_start_and_end(tmp_path: Path) -> None:
    launcher = LocalLauncher(tmp_path)
    launched = launcher.launch(spec("rt1", "--sleep", "1.2"))
    deadline = time.monotonic() + 30
    while (status := launcher.poll(launched.handle)).phase != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)  # a tick that notices late does not make the job longer
    again = launcher.poll(launched.handle)
    assert again.ran_seconds == status.ran_seconds
    assert status.ran_seconds is not None and 1.1 <= status.ran_seconds < 10, status


def test_the_cloud_run_launcher_reports_the_executions_start_and_completion() -> None:
    now = [1_800_000_000.0]
    fake = FakeRunV2(clock=lambda: now[0])
    fake.start()
    try:
        jobs, executions, tasks = fake.clients()
        launcher = CloudRunLauncher("proj", "europe-west1", jobs, executions, tasks)
        launched = launcher.launch(LaunchSpec(workflow="agg", parameter="p", execution_id="e1", image="img:1",
                                              command=["x"], args=[], env={}, timeout=timedelta(minutes=5)))
        now[0] += 42.5
        fake.finish(launched.handle, 0)
        now[0] += 300  # noticed five minutes later
        status = launcher.poll(launched.handle)
        assert status.phase == "ended" and status.exit_code == 0 and status.ran_seconds == 42.5
    finally:
        fake.stop()


def test_the_tick_records_the_run_time_and_the_instance_page_shows_it() -> None:
    t0 = datetime(2026, 11, 26, 12, 0, 30, tzinfo=UTC)
    clock, launcher = FixedClock(t0), FakeLauncher()
    svc = in_memory(clock, launcher=launcher)
    wf = KINDS["Workflow"].model_validate({"apiVersion": "ferry/v1", "kind": "Workflow",
                                           "metadata": {"name": "agg", "owner": "team-a"},
                                           "spec": {"schedule": "hourly", "image": "img"}})
    svc.apply.apply([wf], clock.now())  # type: ignore[list-item]
    svc.styx.trigger("agg", "2026-11-26T11", clock.now())
    Tick(svc.styx, TickLimits(max_active=10)).run(clock.now())
    (launched,) = launcher.launched
    started = clock.now()
    real_poll = launcher.poll

    def poll(handle: str) -> Any:  # the platform knows when the job ran: 75 s, ended an hour before the tick
        status = real_poll(handle)
        if status.phase != "ended":
            return status
        return Status("ended", status.exit_code, started_at=started, ended_at=started + timedelta(seconds=75))

    launcher.poll = poll  # type: ignore[method-assign]
    launcher.finish(launched, 0)
    clock.advance(timedelta(hours=1))
    Tick(svc.styx, TickLimits(max_active=10)).run(clock.now())
    timeline = svc.styx.timeline("agg", "2026-11-26T11")
    statuses = [s for t in timeline["triggers"] for x in t["executions"] for s in x["statuses"]]
    assert [s.get("ran_seconds") for s in statuses if s["event"] == "terminate"] == [75.0]
    from ferry.web.app import respond

    status, _, html = respond(svc, "GET", "/workflows/agg/instances/2026-11-26T11", {}, {})
    assert status == 200 and 'ran <span class="duration" data-measured="1">75 s</span>' in html
