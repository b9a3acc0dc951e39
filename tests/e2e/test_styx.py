"""Styx's Must-show against the local stack: the real CLI and API functions, the Firestore emulator,
and real subprocess executions of examples/styx/job.py by the local launcher.

Ticks are driven explicitly (``POST /v1/tick``, as ``ferry tick`` does) in polling loops with deadlines;
waits that the product measures in minutes (exit 20's ten minutes, a timeout) are crossed by time
travel (``X-Ferry-Now`` / ``FERRY_NOW``, honoured by the local stack only).
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.dev.harness import LocalStack, run_cli

pytestmark = pytest.mark.emulator
JOB = str(Path(__file__).resolve().parents[2] / "examples" / "styx" / "job.py")


class Styx:
    def __init__(self, stack: LocalStack, tmp_path: Path) -> None:
        self.stack = stack
        self.tmp = tmp_path
        self.http = httpx.Client(base_url=stack.api_url, timeout=60)
        self.prefix = f"e2e-styx-{uuid.uuid4().hex[:6]}"

    def name(self, n: str) -> str:
        return f"{self.prefix}-{n}"

    def apply(self, yaml_text: str) -> subprocess.CompletedProcess[str]:
        path = self.tmp / f"m-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(textwrap.dedent(yaml_text))
        return self.stack.cli("apply", "-f", str(path))

    def workflow(self, n: str, args: str = '["{}"]', schedule: str = "daily", extra: str = "") -> str:
        name = self.name(n)
        out = self.apply(f"""
            apiVersion: ferry/v1
            kind: Workflow
            metadata: {{name: {name}, owner: team-styx}}
            spec:
              schedule: "{schedule}"
              image: local/job:1
              command: [python, {JOB}]
              args: {args}
              timeout: PT10M
              retry: {{max_tries: 3, initial_backoff: PT1S, max_backoff: PT1M}}
            """ + textwrap.indent(textwrap.dedent(extra), "  "))
        assert out.returncode == 0, out.stderr
        return name

    def cli(self, *args: str, now: datetime | None = None) -> subprocess.CompletedProcess[str]:
        env = dict(self.stack.env)
        if now is not None:
            env["FERRY_NOW"] = now.isoformat()
        return run_cli(list(args), env=env, timeout=120, cwd=self.stack.home)

    def tick(self, now: datetime | None = None) -> dict[str, Any]:
        headers = {**self.stack.operator_headers, **({"X-Ferry-Now": now.isoformat()} if now else {})}
        r = self.http.post("/v1/tick", json={"budget_seconds": 20}, headers=headers)
        assert r.status_code == 200, r.text
        return r.json()

    def instance(self, wf: str, p: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/workflows/{wf}/instances/{p}")
        assert r.status_code == 200, r.text
        return r.json()

    def tick_until(self, wf: str, p: str, pred, now=None, deadline: float = 30.0) -> dict[str, Any]:
        end = time.monotonic() + deadline
        while True:
            self.tick(now() if callable(now) else now)
            inst = self.instance(wf, p)
            if pred(inst):
                return inst
            if time.monotonic() > end:
                raise AssertionError(f"{wf} {p} did not get there in {deadline}s: {inst}")
            time.sleep(0.2)

    def timeline(self, wf: str, p: str) -> dict[str, Any]:
        out = self.cli("timeline", wf, p, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


@pytest.fixture
def styx(stack: LocalStack, tmp_path: Path) -> Styx:
    return Styx(stack, tmp_path)


def statuses(tl: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for t in tl["triggers"] for x in t["executions"] for s in x["statuses"]]


def test_exit_20_then_0_retries_after_ten_minutes_without_spending_a_try(styx: Styx) -> None:
    wf = styx.workflow("twenty", args='["{}", "--exit-sequence", "20,0"]')
    p = "2026-11-01"
    out = styx.cli("trigger", wf, p)
    assert out.returncode == 0, out.stderr
    inst = styx.tick_until(wf, p, lambda i: i["state"] == "QUEUED" and i["tries"] == 1)
    assert inst["spent"] == 0 and inst["exit_code"] == 20 and "no try spent" in inst["message"]
    due = datetime.fromisoformat(inst["due_at"])
    assert styx.tick(due - timedelta(seconds=5))["dequeued"] == 0  # not before its ten minutes
    inst = styx.tick_until(wf, p, lambda i: i["state"] == "DONE", now=due + timedelta(seconds=1))
    assert inst["tries"] == 2
    tl = styx.timeline(wf, p)
    execs = tl["triggers"][0]["executions"]
    assert [x["exit_code"] for x in execs] == [20, 0]
    retry = execs[0]["statuses"][-1]
    assert retry["event"] == "retryAfter" and retry["delay_seconds"] == 600
    assert all(x["log_uri"].startswith("file://") for x in execs)
    logs = styx.cli("logs", wf, p)
    assert "job: exiting 0" in logs.stdout and f"parameter={p}" in logs.stdout
    human = styx.cli("timeline", wf, p)
    assert "retryAfter" in human.stdout and "exit 20" in human.stdout


def test_exit_50_is_error_after_one_try(styx: Styx) -> None:
    wf = styx.workflow("fifty")
    p = "2026-11-02"
    assert styx.cli("trigger", wf, p, "-e", "JOB_EXIT=50").returncode == 0
    inst = styx.tick_until(wf, p, lambda i: i["state"] == "ERROR")
    assert inst["tries"] == 1 and inst["exit_code"] == 50


def test_exit_1_gives_up_after_max_tries_with_growing_delays(styx: Styx) -> None:
    wf = styx.workflow("one", args='["{}", "--exit", "1"]')
    p = "2026-11-03"
    assert styx.cli("trigger", wf, p).returncode == 0
    inst = styx.tick_until(wf, p, lambda i: i["state"] == "ERROR", deadline=40)
    assert inst["tries"] == 3
    delays = [s["delay_seconds"] for s in statuses(styx.timeline(wf, p)) if s["event"] == "retryAfter"]
    assert len(delays) == 2 and delays[0] <= delays[1]
    assert "gave up after 3 of 3 tries" in inst["message"]


def test_timeout_cancels_fails_and_retries(styx: Styx) -> None:
    wf = styx.workflow("slow", extra="")
    styx.apply(f"""
        apiVersion: ferry/v1
        kind: Workflow
        metadata: {{name: {wf}, owner: team-styx}}
        spec:
          schedule: daily
          image: local/job:1
          command: [python, {JOB}]
          args: ["{{}}", "--sleep", "300"]
          timeout: PT1M
          retry: {{max_tries: 3, initial_backoff: PT1S, max_backoff: PT1M}}
        """)
    p = "2026-11-04"
    assert styx.cli("trigger", wf, p).returncode == 0
    inst = styx.tick_until(wf, p, lambda i: i["state"] == "RUNNING")
    later = datetime.now(UTC) + timedelta(minutes=2)
    inst = styx.tick_until(wf, p, lambda i: i["state"] == "QUEUED", now=later)
    assert inst["spent"] == 1 and "timeout" in inst["message"]
    events = [s["event"] for s in statuses(styx.timeline(wf, p))]
    assert "timeout" in events and events[-1] == "retryAfter"
    handle_dir = Path(styx.timeline(wf, p)["triggers"][0]["executions"][0]["log_uri"][len("file://"):]).parent
    pid = int((handle_dir / "pid").read_text())
    end = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z":
        assert time.monotonic() < end, "the timed-out execution was not cancelled"
        time.sleep(0.1)
    assert styx.cli("halt", wf, p).returncode == 0


def test_backfill_of_six_days_with_concurrency_two_lands_its_partitions(styx: Styx) -> None:
    ep = styx.name("out")
    assert styx.apply(f"""
        apiVersion: ferry/v1
        kind: Endpoint
        metadata: {{name: {ep}, owner: team-styx}}
        spec: {{partitioning: daily}}
        """).returncode == 0
    wf = styx.workflow("bf", args='["{}", "--sleep", "0.5"]', extra=f"produces: {ep}\n")
    out = styx.cli("backfill", "create", wf, "2026-10-01", "2026-10-07", "--concurrency", "2", "-d", "e2e", "--json")
    assert out.returncode == 0, out.stderr
    bf = json.loads(out.stdout)
    assert bf["total"] == 6
    end = time.monotonic() + 60
    while True:
        styx.tick()
        shown = json.loads(styx.cli("backfill", "show", bf["id"], "--json").stdout)
        if shown["state"] == "done":
            break
        assert time.monotonic() < end, shown
        time.sleep(0.3)
    assert shown["counts"] == {"DONE": 6}
    intervals = []
    for row in shown["partitions"]:
        sts = statuses(styx.timeline(wf, row["parameter"]))
        start = next(s["at"] for s in sts if s["event"] == "submit")
        stop = next(s["at"] for s in sts if s["event"] == "terminate")
        intervals.append((datetime.fromisoformat(start), datetime.fromisoformat(stop)))
    for a, _ in intervals:  # at every start, count the executions in flight
        assert sum(1 for s, e in intervals if s <= a < e) <= 2
    from ferry.datamon.landing import landed

    days = [f"2026-10-0{d}" for d in range(1, 7)]
    assert landed(styx.stack.services().store, ep, days) == set(days)
    assert bf["id"] in styx.cli("backfill", "ls").stdout


def test_depends_on_waits_for_the_upstream_partition(styx: Styx) -> None:
    up = styx.name("up")
    assert styx.apply(f"""
        apiVersion: ferry/v1
        kind: Endpoint
        metadata: {{name: {up}, owner: team-styx}}
        spec: {{partitioning: daily}}
        """).returncode == 0
    wf = styx.workflow("down", extra=f"depends_on: [{up}]\n")
    p = "2026-11-05"
    assert styx.cli("trigger", wf, p).returncode == 0
    styx.tick()
    inst = styx.instance(wf, p)
    assert inst["state"] == "QUEUED" and f"{up} {p}" in inst["message"] and inst["tries"] == 0
    assert styx.cli("land", up, p).returncode == 0
    inst = styx.tick_until(wf, p, lambda i: i["state"] == "DONE",
                           now=lambda: datetime.now(UTC) + timedelta(minutes=2))
    assert inst["tries"] == 1


def test_minutely_workflow_runs_naturally(styx: Styx) -> None:
    wf = styx.workflow("minutely", schedule="* * * * *")
    soon = datetime.now(UTC) + timedelta(minutes=2)
    styx.tick(soon)
    items = styx.http.get(f"/v1/workflows/{wf}/instances").json()["items"]
    assert items and all(i["trigger"]["type"] == "natural" for i in items)
    p = items[0]["parameter"]
    styx.tick_until(wf, p, lambda i: i["state"] == "DONE", now=soon)
    out = styx.cli("instances", wf)
    assert p in out.stdout and "DONE" in out.stdout


def test_bad_inputs_are_clear_errors_and_change_nothing(styx: Styx) -> None:
    wf = styx.workflow("bad")
    cases = [
        (styx.cli("backfill", "create", wf, "2026-11-01T05", "2026-11-03"), "not aligned"),
        (styx.cli("backfill", "create", wf, "2026-11-05", "2026-11-03"), "must be after"),
        (styx.cli("backfill", "create", styx.name("nope"), "2026-11-01", "2026-11-03"), "not found"),
        (styx.cli("trigger", styx.name("nope"), "2026-11-01"), "not found"),
    ]
    for out, text in cases:
        assert out.returncode == 3 and text in out.stderr, (out.stdout, out.stderr)
    assert styx.cli("trigger", wf, "2026-11-06", "-e", "JOB_EXIT=50").returncode == 0
    styx.tick_until(wf, "2026-11-06", lambda i: i["state"] == "ERROR")
    out = styx.cli("halt", wf, "2026-11-06")
    assert out.returncode == 3 and "has ended" in out.stderr
    assert styx.cli("trigger", wf, "2026-11-07").returncode == 0
    out = styx.cli("trigger", wf, "2026-11-07")
    assert out.returncode == 3 and "already active" in out.stderr
    styx.cli("halt", wf, "2026-11-07")
    six = styx.apply(f"""
        apiVersion: ferry/v1
        kind: Workflow
        metadata: {{name: {styx.name('six')}, owner: team-styx}}
        spec: {{schedule: "0 0 * * * *", image: i}}
        """)
    assert six.returncode == 3 and "5 fields" in six.stderr
    imageless = styx.apply(f"""
        apiVersion: ferry/v1
        kind: Workflow
        metadata: {{name: {styx.name('noimage')}, owner: team-styx}}
        spec: {{schedule: daily}}
        """)
    assert imageless.returncode == 3 and "image" in imageless.stderr
    missing = styx.apply(f"""
        apiVersion: ferry/v1
        kind: Workflow
        metadata: {{name: {styx.name('nores')}, owner: team-styx}}
        spec: {{schedule: daily, image: i, resources: [{styx.name('nothing')}]}}
        """)
    assert missing.returncode == 3 and "not declared" in missing.stderr
    names = styx.cli("get", "workflows", "--json").stdout
    assert styx.name("six") not in names and styx.name("noimage") not in names and styx.name("nores") not in names
    assert json.loads(styx.cli("backfill", "ls", "--workflow", wf, "--json").stdout)["items"] == []


def test_resources_show_usage(styx: Styx) -> None:
    res = styx.name("pool")
    assert styx.apply(f"""
        apiVersion: ferry/v1
        kind: Resource
        metadata: {{name: {res}}}
        spec: {{concurrency: 1}}
        """).returncode == 0
    wf = styx.workflow("pooled", args='["{}", "--sleep", "30"]', extra=f"resources: [{res}]\n")
    assert styx.cli("trigger", wf, "2026-11-08").returncode == 0
    assert styx.cli("trigger", wf, "2026-11-09").returncode == 0
    styx.tick_until(wf, "2026-11-08", lambda i: i["state"] in ("SUBMITTED", "RUNNING"))
    item = json.loads(styx.cli("get", "resources", res, "--json").stdout)  # one object, as for any kind
    assert item["metadata"]["name"] == res and item["spec"] == {"concurrency": 1}
    assert item["usage"]["in_use"] == 1 and item["usage"]["concurrency"] == 1
    assert item["usage"]["holders"] == [f"{wf}@2026-11-08"]
    assert styx.instance(wf, "2026-11-09")["state"] == "QUEUED"
    for p in ("2026-11-08", "2026-11-09"):
        styx.cli("halt", wf, p)
    items = json.loads(styx.cli("get", "resources", "--json").stdout)["items"]
    assert [i["usage"]["in_use"] for i in items if i["metadata"]["name"] == res] == [0]
    missing = styx.cli("get", "resources", styx.name("absent"))
    assert missing.returncode == 3 and "not found" in missing.stderr
