"""Bench (issue 18): 20,000 workflows, one instance each, through the Cloud Run launcher against the
Run v2 fake holding a region's limits — 1,000 jobs, 1,000 running executions, RunJob and write
quotas a minute — and two launchers (processes) taking turns. Prints the most jobs the region held at any
moment, the jobs created and evicted, the requests refused and the API calls per execution.

FERRY_BENCH_WORKFLOWS (default 20000), FERRY_BENCH_RATE (RunJobs a minute, default 1000) and
FERRY_BENCH_WRITE_RATE (CreateJob+DeleteJob a minute, default 2000) size it; the deploy's defaults
(180 and 120) make the same run take hours of simulated time: a job created and one evicted for each
execution of a workflow whose job was evicted since its last run costs two writes (docs/styx.md)."""

from __future__ import annotations

import os

import pytest

from fakes.cloudrun_region import drive, report
from ferry.styx import machine as m

pytestmark = [pytest.mark.bench, pytest.mark.timeout(3600)]


def test_20000_workflows_never_hold_more_jobs_than_the_region_allows() -> None:
    n = int(os.environ.get("FERRY_BENCH_WORKFLOWS", "20000"))
    r = drive(n, rate=int(os.environ.get("FERRY_BENCH_RATE", "1000")),
              write_rate=int(os.environ.get("FERRY_BENCH_WRITE_RATE", "2000")), launchers=2, max_minutes=400, budget=900)
    print("\n" + report(r))
    assert r["states"] == {m.State.DONE: n}
    assert r["executions"] == n and r["peak_jobs"] <= 1000 and r["peak_running"] <= 1000
    assert r["errors"] == 0 and all("'Jobs'" in line for line in r["refused_lines"])
