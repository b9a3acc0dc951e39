"""Cloud Run's job limit through the tick: more workflows than the region may hold jobs, run through
the Cloud Run launcher (real run_v2 clients) against the fake, which refuses a job over its limit as the
real service does. Jobs are kept in a pool that evicts idle ones: every workflow runs, the region never
holds more than its limit, and the API calls per execution are counted (fakes.cloudrun_region)."""

from __future__ import annotations

from fakes.cloudrun_region import drive, report
from ferry.styx import machine as m


def test_1200_workflows_run_with_never_more_jobs_than_the_region_allows() -> None:
    """Two launchers (processes) take turns; the fake allows 1,000 jobs, 1,000 running executions, 600
    RunJobs and 400 writes (CreateJob, DeleteJob) a minute — Ferry is set to the same."""
    r = drive(1200, rate=600, write_rate=400, launchers=2)
    print("\n" + report(r))
    assert r["states"] == {m.State.DONE: 1200}
    assert r["executions"] == 1200 and r["tries"] == {1: 1200}  # each once; a requeue spent no try
    assert r["peak_jobs"] <= 1000 and r["created"] - r["jobs_now"] >= 200 and r["peak_running"] <= 1000
    # Ferry's own counts kept every request within the per-minute quotas; only two processes evicting at
    # once may both create into the same room, which the platform refuses (nothing created): requeued
    assert all("'Jobs'" in line for line in r["refused_lines"])
    assert r["errors"] == 0

