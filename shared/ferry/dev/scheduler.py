"""The local stand-in for Cloud Scheduler: fires the scheduler jobs of ``infra/`` on their cron.

Run by ``ferry dev up`` as ``python -m ferry.dev.scheduler --state <home>/state.json``. Each firing is
an HTTP POST shaped like Cloud Scheduler's (headers ``User-Agent: Google-Cloud-Scheduler``,
``X-CloudScheduler``, ``X-CloudScheduler-JobName``, ``X-CloudScheduler-ScheduleTime``; the job's JSON
body) to the target function's local URL plus the job's path.

The decision of what is due is the pure function ``due``; ``fire`` carries one firing out and records
it (a JSON line in the firing log, the last firing per job in a small JSON file for ``ferry dev status``).
Like Cloud Scheduler, missed fire times are not caught up one by one: a job that missed several fires
once, for the latest of them.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from ferry.clock import Clock, SystemClock
from ferry.dev import layout
from ferry.domain.periods import CronCadence
from ferry.infra.model import SchedulerJob


@dataclass(frozen=True)
class Firing:
    """A decision: call ``job`` now, for its fire time ``schedule_time``."""

    job: SchedulerJob
    schedule_time: datetime


def due(jobs: Iterable[SchedulerJob], last_fired: Mapping[str, datetime], since: datetime,
        now: datetime) -> list[Firing]:
    """The jobs to fire at ``now``.

    A job is due when its latest cron fire time at or before ``now`` (in the job's time zone) is later
    than the fire time it last fired for and later than ``since`` (when the scheduler started: fire
    times before that are not replayed, as Cloud Scheduler does not replay a paused job's).
    """
    firings = []
    for job in jobs:
        latest = CronCadence(job.schedule, job.time_zone).floor(now)
        fired = last_fired.get(job.name)
        baseline = max(since, fired) if fired else since
        if latest > baseline:
            firings.append(Firing(job, latest))
    return firings


def next_fire(jobs: Iterable[SchedulerJob], now: datetime) -> datetime | None:
    """The earliest fire time of any job strictly after ``now`` (None without jobs)."""
    times = [CronCadence(j.schedule, j.time_zone).next(now) for j in jobs]
    return min(times) if times else None


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def headers(job: SchedulerJob, schedule_time: datetime, secret: str = "") -> dict[str, str]:
    """The headers Cloud Scheduler sends with an HTTP target (plus the local stack's secret, which
    stands in for Cloud Scheduler's OIDC token)."""
    return {**({"X-Ferry-Stack-Secret": secret} if secret else {}),
        "User-Agent": "Google-Cloud-Scheduler",
        "X-CloudScheduler": "true",
        "X-CloudScheduler-JobName": job.name,
        "X-CloudScheduler-ScheduleTime": rfc3339(schedule_time),
        "Content-Type": "application/json",
    }


class FiringRecord:
    """The firing log (JSON lines) and the last firing per job (a JSON file), shared by processes."""

    def __init__(self, log_path: Path, last_path: Path) -> None:
        self.log_path = log_path
        self.last_path = last_path

    def last(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.last_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def last_fired(self) -> dict[str, datetime]:
        return {name: datetime.fromisoformat(r["schedule_time"].replace("Z", "+00:00"))
                for name, r in self.last().items() if r.get("schedule_time")}

    def record(self, entry: dict[str, Any]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, default=str) + "\n"
        with open(self.log_path, "a") as f:  # one small O_APPEND write per line: lines never interleave
            f.write(line)
        # The scheduler process and `ferry dev fire` may both record: read-modify-write under a lock.
        with open(self.last_path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            last = self.last()
            last[entry["job"]] = entry
            tmp = self.last_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(last, indent=2, default=str))
            os.replace(tmp, self.last_path)


def firing_record(home: Path) -> FiringRecord:
    """The local stack's record of its scheduler's firings (under ``home``)."""
    return FiringRecord(layout.log_dir(home) / "scheduler.log", Path(home) / "scheduler-last.json")


def fire(job: SchedulerJob, base_url: str, schedule_time: datetime, record: FiringRecord | None = None,
         client: httpx.Client | None = None, manual: bool = False, secret: str = "") -> dict[str, Any]:
    """POST one firing to the job's target the way Cloud Scheduler does; record and return the outcome."""
    url = base_url.rstrip("/") + "/" + job.path.lstrip("/")
    started = time.monotonic()
    entry: dict[str, Any] = {
        "severity": "INFO", "message": f"fired {job.name}", "job": job.name, "url": url,
        "schedule_time": rfc3339(schedule_time), "fired_at": rfc3339(datetime.now(UTC)), "manual": manual,
    }
    try:
        http = client or httpx.Client()
        try:
            resp = http.post(url, content=json.dumps(job.body).encode(), headers=headers(job, schedule_time, secret),
                             timeout=job.attempt_deadline_seconds)
        finally:
            if client is None:
                http.close()
        entry["status"] = resp.status_code
        if resp.status_code >= 400:
            entry["severity"] = "ERROR"
            entry["response"] = resp.text[:500]
    except httpx.HTTPError as exc:
        entry.update(severity="ERROR", status=None, error=f"{type(exc).__name__}: {exc}")
    entry["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
    if record is not None:
        record.record(entry)
    return entry


def run(jobs: Sequence[SchedulerJob], urls: Mapping[str, str], record: FiringRecord, stop: threading.Event,
        clock: Clock | None = None, max_sleep_s: float = 1.0, secret: str = "") -> list[threading.Thread]:
    """Fire due jobs until ``stop`` is set; returns the firing threads. Each firing runs in its own
    thread (a slow target does not delay the others), as Cloud Scheduler calls each job independently."""
    clock = clock or SystemClock()
    since = clock.now()
    last = {**record.last_fired()}
    threads = []
    while not stop.is_set():
        now = clock.now()
        for f in due(jobs, last, since, now):
            last[f.job.name] = f.schedule_time
            t = threading.Thread(target=fire, args=(f.job, urls[f.job.function], f.schedule_time, record),
                                 kwargs={"secret": secret}, daemon=True)
            t.start()
            threads.append(t)
        nxt = next_fire(jobs, now)
        wait = max_sleep_s if nxt is None else min(max_sleep_s, max(0.01, (nxt - clock.now()).total_seconds()))
        stop.wait(wait)
    return threads


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ferry.dev.scheduler", description=__doc__.splitlines()[0])
    parser.add_argument("--state", required=True, help="the local stack's state.json")
    args = parser.parse_args(argv)
    state = json.loads(Path(args.state).read_text())
    infra = layout.load_infra(state)
    urls = layout.function_urls(state)
    record = firing_record(Path(state["home"]))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(json.dumps({"severity": "INFO", "message": "local scheduler started",
                      "jobs": [{"job": j.name, "schedule": j.schedule, "time_zone": j.time_zone,
                                "target": urls.get(j.function, "?") + j.path} for j in infra.scheduler_jobs]}),
          flush=True)
    run(infra.scheduler_jobs, urls, record, stop, secret=state.get("stack_secret", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
