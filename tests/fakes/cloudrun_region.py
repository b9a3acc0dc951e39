"""A Cloud Run region with Styx ticking, simulated: workflows triggered once each, run through the
Cloud Run launcher (real run_v2 clients) against ``FakeRunV2`` with its limits and quotas, one tick a
simulated minute while the platform ends each execution after ``run_minutes``. Used by the job-pool
test (tests/unit/styx/test_cloudrun_pool.py) and the 20,000-workflow bench."""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from fakes.run_v2 import FakeRunV2
from fakes.styx_launcher import FakeDatamon
from ferry.bootstrap import in_memory
from ferry.clock import FixedClock
from ferry.domain.manifests import Workflow
from ferry.styx import machine as m
from ferry.styx.launchers.cloudrun import CloudRunLauncher
from ferry.styx.repository import StyxRepository
from ferry.styx.slots import ApiTokens
from ferry.styx.tick import Tick, TickLimits

T0 = datetime(2026, 11, 26, 12, 0, 5, tzinfo=UTC)
LAUNCH_CALLS = ("CreateJob", "RunJob", "DeleteJob", "ListJobs", "ListExecutions", "GetJob")
POLL_CALLS = ("GetExecution", "ListTasks")


class Turns:
    """Several launcher instances (processes, each with its own memory) taking turns at launching."""

    def __init__(self, launchers: list[CloudRunLauncher]) -> None:
        self.launchers, self.turn = launchers, itertools.count()

    def launch(self, spec: Any) -> Any:
        return self.launchers[next(self.turn) % len(self.launchers)].launch(spec)

    def __getattr__(self, name: str) -> Any:  # poll, cancel, find, logs: any instance answers from a handle
        return getattr(self.launchers[0], name)


def drive(workflows: int, job_limit: int = 1000, rate: int = 600, write_rate: int = 600, run_minutes: int = 1,
          max_minutes: int = 120, launchers: int = 1, budget: float = 45.0) -> dict[str, Any]:
    """Trigger one instance of each of ``workflows`` workflows (each its own image and service account)
    and tick once a simulated minute — every execution runs ``run_minutes`` — until all are DONE.
    ``launchers`` launcher instances take turns (ticks of other processes); ``budget``: a tick's wall
    time (simulated minutes need not fit a real one on a busy machine). Returns what happened."""
    clock = FixedClock(T0)
    fake = FakeRunV2(clock=lambda: clock.now().timestamp(), job_limit=job_limit, running_limit=1000,
                     run_quota=rate, write_quota=write_rate)
    fake.start()
    try:
        pool: list[CloudRunLauncher] = []
        svc = in_memory(clock, launcher=Turns(pool), datamon=FakeDatamon())
        tokens = ApiTokens(StyxRepository(svc.store), write_rate, clock)  # shared by every launcher (process)
        pool += [CloudRunLauncher("proj", "europe-west1", *fake.clients(), max_jobs=job_limit, idle_grace=600,
                                  quota=tokens.take, clock=lambda: clock.now().timestamp()) for _ in range(launchers)]
        names = [f"team{i % 300}.wf-{i:05d}" for i in range(workflows)]
        svc.apply.apply([Workflow.model_validate({
            "kind": "Workflow", "metadata": {"name": n, "owner": f"team{i % 300}"},
            "spec": {"schedule": "hourly", "image": f"registry/{n}:1", "args": ["{}"]}}) for i, n in enumerate(names)],
            clock.now())
        styx = svc.styx
        for n in names:
            styx.trigger(n, "2026-11-01T00", clock.now())
        limits = TickLimits(max_active=1000, submissions_per_minute=rate, queued=2000, holding=2000)
        reports, started, minutes = [], time.monotonic(), 0
        for minutes in range(1, max_minutes + 1):
            reports.append(Tick(svc.styx, limits).run(clock.now()))
            if os.environ.get("S18_DEBUG"):
                r = reports[-1]
                print(minutes, len(fake.jobs), fake.running, f"dq={r.dequeued} sub={r.submitted} thr={r.throttled} "
                      f"ended={r.ended} rl={r.rate_limited} wait={r.waiting_for_slots}")
            fake.finish_older_than(run_minutes * 60 - 1)
            clock.advance(timedelta(minutes=1))
            done = Counter(r.state for r in (styx.instance(n, "2026-11-01T00") for n in names[:: max(1, workflows // 50)]))
            if set(done) == {m.State.DONE} and len(fake.runs) >= workflows:
                states = Counter(styx.instance(n, "2026-11-01T00").state for n in names)
                if states == {m.State.DONE: workflows}:
                    break
        states = Counter(styx.instance(n, "2026-11-01T00").state for n in names)
        executions = len(fake.runs)
        calls = Counter(fake.calls)
        return {"workflows": workflows, "states": states, "executions": executions, "minutes": minutes,
                "peak_jobs": fake.peak_jobs, "jobs_now": len(fake.jobs), "peak_running": fake.peak_running,
                "created": fake.created_jobs, "refused": len(fake.refused), "refused_lines": list(fake.refused), "calls": dict(calls),
                "launch_calls_per_execution": sum(calls[c] for c in LAUNCH_CALLS) / max(1, executions),
                "poll_calls_per_execution": sum(calls[c] for c in POLL_CALLS) / max(1, executions),
                "throttled": sum(r.throttled for r in reports), "errors": sum(r.errors + r.launch_failed for r in reports),
                "tries": Counter(styx.instance(n, "2026-11-01T00").tries for n in names),
                "evicted": sum(launcher.evicted for launcher in pool), "seconds": round(time.monotonic() - started, 1)}
    finally:
        fake.stop()


def report(r: dict[str, Any]) -> str:
    per = {c: round(r["calls"].get(c, 0) / max(1, r["executions"]), 3) for c in LAUNCH_CALLS + POLL_CALLS}
    return (f"{r['workflows']} workflows: {r['executions']} executions in {r['minutes']} simulated minutes "
            f"({r['seconds']} s); jobs: peak {r['peak_jobs']} (limit 1000), {r['created']} created, "
            f"{r['evicted']} evicted, {r['jobs_now']} left; running peak {r['peak_running']}; "
            f"requests refused {r['refused']}, launches requeued {r['throttled']}, errors {r['errors']}; "
            f"API calls per execution: launch {r['launch_calls_per_execution']:.2f}, polls "
            f"{r['poll_calls_per_execution']:.2f} — {per}")


if __name__ == "__main__":  # a quick look: python tests/fakes/cloudrun_region.py N JOB_LIMIT RATE WRITE_RATE LAUNCHERS
    import sys

    print(report(drive(int(sys.argv[1]), job_limit=int(sys.argv[2]), rate=int(sys.argv[3]),
                       write_rate=int(sys.argv[4]), launchers=int(sys.argv[5]))))
