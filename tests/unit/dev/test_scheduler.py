"""The local scheduler: the pure due-decision, Cloud Scheduler's request shape, the firing record."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ferry.clock import FixedClock
from ferry.dev import emulators
from ferry.dev.scheduler import FiringRecord, due, fire, headers, next_fire, rfc3339, run
from ferry.infra.model import SchedulerJob


def job(name: str = "tick", schedule: str = "* * * * *", tz: str = "UTC", **kw) -> SchedulerJob:  # type: ignore[no-untyped-def]
    return SchedulerJob(name=name, schedule=schedule, time_zone=tz, function="api", **kw)


def t(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


def test_nothing_before_the_first_fire_time_after_start() -> None:
    assert due([job()], {}, since=t("2026-11-26T12:00:30"), now=t("2026-11-26T12:00:59")) == []


def test_a_fire_time_after_start_is_due_once() -> None:
    j = job()
    [firing] = due([j], {}, since=t("2026-11-26T12:00:30"), now=t("2026-11-26T12:01:00"))
    assert firing.job == j and firing.schedule_time == t("2026-11-26T12:01:00")
    assert due([j], {"tick": firing.schedule_time}, since=t("2026-11-26T12:00:30"), now=t("2026-11-26T12:01:40")) == []


def test_missed_fire_times_collapse_into_the_latest() -> None:
    firings = due([job()], {"tick": t("2026-11-26T12:01:00")}, since=t("2026-11-26T12:00:00"),
                  now=t("2026-11-26T12:05:10"))
    assert [f.schedule_time for f in firings] == [t("2026-11-26T12:05:00")]


def test_fire_times_before_the_start_are_not_replayed() -> None:
    # fired yesterday, restarted at 12:30: the 12:00 fire time lies before the start
    assert due([job("hourly", "0 * * * *")], {"hourly": t("2026-11-25T12:00:00")}, since=t("2026-11-26T12:30:00"),
               now=t("2026-11-26T12:45:00")) == []


def test_only_due_jobs_fire() -> None:
    jobs = [job("minutely"), job("hourly", "0 * * * *")]
    firings = due(jobs, {}, since=t("2026-11-26T12:00:30"), now=t("2026-11-26T12:01:00"))
    assert [f.job.name for f in firings] == ["minutely"]
    firings = due(jobs, {"minutely": t("2026-11-26T12:59:00")}, since=t("2026-11-26T12:00:30"),
                  now=t("2026-11-26T13:00:00"))
    assert sorted(f.job.name for f in firings) == ["hourly", "minutely"]


@pytest.mark.parametrize(("now", "fire_utc"), [
    ("2026-11-26T08:00:00", "2026-11-26T08:00:00"),   # 09:00 CET = 08:00 UTC in winter
    ("2026-07-01T07:00:00", "2026-07-01T07:00:00"),   # 09:00 CEST = 07:00 UTC in summer
])
def test_cron_is_read_in_the_jobs_time_zone(now: str, fire_utc: str) -> None:
    j = job("morning", "0 9 * * *", "Europe/Stockholm")
    since = t(now) - timedelta(hours=1)
    assert [f.schedule_time for f in due([j], {}, since, t(now))] == [t(fire_utc)]
    assert due([j], {}, since, t(now) - timedelta(seconds=1)) == []


def test_next_fire_is_the_earliest_of_all_jobs() -> None:
    jobs = [job("five", "*/5 * * * *"), job("hourly", "0 * * * *")]
    assert next_fire(jobs, t("2026-11-26T12:01:00")) == t("2026-11-26T12:05:00")
    assert next_fire([], t("2026-11-26T12:01:00")) is None


def test_headers_are_cloud_schedulers() -> None:
    h = headers(job("evaluate"), t("2026-11-26T12:05:00"))
    assert h == {"User-Agent": "Google-Cloud-Scheduler", "X-CloudScheduler": "true",
                 "X-CloudScheduler-JobName": "evaluate", "X-CloudScheduler-ScheduleTime": "2026-11-26T12:05:00.000Z",
                 "Content-Type": "application/json"}
    assert rfc3339(datetime(2026, 11, 26, 13, 5, tzinfo=UTC).astimezone()) == "2026-11-26T13:05:00.000Z"


class _Target:
    """A real local HTTP server that records what it receives (the firing's target)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []  # type: ignore[type-arg]
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                target.requests.append({"path": self.path, "headers": dict(self.headers.items()),
                                        "body": json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target():  # type: ignore[no-untyped-def]
    server = _Target()
    yield server
    server.close()


def test_fire_posts_the_body_with_the_headers_and_records_it(target: _Target, tmp_path: Path) -> None:
    record = FiringRecord(tmp_path / "scheduler.log", tmp_path / "last.json")
    j = job("evaluate", path="/v1/evaluate", body={"reason": "schedule"})
    entry = fire(j, target.url, t("2026-11-26T12:05:00"), record)
    assert entry["status"] == 204 and entry["severity"] == "INFO" and entry["latency_ms"] >= 0
    [req] = target.requests
    assert req["path"] == "/v1/evaluate" and req["body"] == {"reason": "schedule"}
    assert req["headers"]["User-Agent"] == "Google-Cloud-Scheduler"
    assert req["headers"]["X-CloudScheduler-JobName"] == "evaluate"
    assert req["headers"]["X-CloudScheduler-ScheduleTime"] == "2026-11-26T12:05:00.000Z"
    [line] = (tmp_path / "scheduler.log").read_text().splitlines()
    assert json.loads(line)["status"] == 204
    assert record.last_fired() == {"evaluate": t("2026-11-26T12:05:00")}


def test_an_unreachable_target_is_logged_as_an_error(tmp_path: Path) -> None:
    record = FiringRecord(tmp_path / "scheduler.log", tmp_path / "last.json")
    entry = fire(job(), f"http://127.0.0.1:{emulators.free_port()}", t("2026-11-26T12:05:00"), record)
    assert entry["severity"] == "ERROR" and entry["status"] is None and "error" in entry
    assert record.last()["tick"]["severity"] == "ERROR"


def test_run_fires_when_the_clock_reaches_a_fire_time(target: _Target, tmp_path: Path) -> None:
    record = FiringRecord(tmp_path / "scheduler.log", tmp_path / "last.json")
    clock = FixedClock(t("2026-11-26T12:00:59"))
    stop = threading.Event()
    threads: list[threading.Thread] = []
    loop = threading.Thread(target=lambda: threads.extend(
        run([job("minutely")], {"api": target.url}, record, stop, clock, max_sleep_s=0.01)))
    loop.start()
    try:
        time.sleep(0.05)  # the loop sees 12:00:59 a few times: nothing may fire
        assert target.requests == []
        clock.set(t("2026-11-26T12:01:00"))
        deadline = time.monotonic() + 5
        while not record.last() and time.monotonic() < deadline:
            time.sleep(0.01)
        clock.set(t("2026-11-26T12:01:30"))
        time.sleep(0.05)
    finally:
        stop.set()
        loop.join(5)
    for th in threads:
        th.join(5)
    assert [r["headers"]["X-CloudScheduler-ScheduleTime"] for r in target.requests] == ["2026-11-26T12:01:00.000Z"]
