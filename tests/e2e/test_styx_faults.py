"""No double execution, against the local stack: the styx-tick function's worker is SIGKILLed 0.1–0.4 s
into a 100-instance launch, three times. Every execution appends its instance to one file, so a second
run of any instance shows; every instance must end DONE on its first try, holding no slot.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.dev.harness import LocalStack

pytestmark = pytest.mark.emulator
N = 100


def _worker_pid(stack: LocalStack, function: str) -> int:
    """The pid of the function's (one) serving worker: the child of its functions-framework master."""
    master = next(c["pid"] for c in stack.state["components"] if c.get("name") == function)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise AssertionError(f"{function} has no worker")


def _ready(url: str, old_worker: int, stack: LocalStack, function: str) -> None:
    """Wait until a new worker serves the function again."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if _worker_pid(stack, function) != old_worker and httpx.get(url, timeout=2).status_code < 600:
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{function} did not come back after the kill")


def _tick(url: str, headers: dict[str, str], outcome: dict[str, Any]) -> None:
    try:
        outcome["status"] = httpx.post(url, json={"budget_seconds": 40}, headers=headers, timeout=60).status_code
    except httpx.HTTPError as exc:
        outcome["error"] = type(exc).__name__


def test_a_tick_killed_mid_launch_three_times_runs_no_instance_twice(stack: LocalStack, tmp_path: Path) -> None:
    api = httpx.Client(base_url=stack.api_url, timeout=60)
    runs = tmp_path / "runs"
    wf = f"e2e-kill-{uuid.uuid4().hex[:6]}"
    manifest = tmp_path / "wf.yaml"
    manifest.write_text(f"""
apiVersion: ferry/v1
kind: Workflow
metadata: {{name: {wf}, owner: team-styx}}
spec:
  schedule: daily
  image: local/job:1
  command: [sh, -c, 'echo "$FERRY_PARAMETER $FERRY_EXECUTION_ID $FERRY_TRIES" >> {runs}']
  timeout: PT10M
  enabled: false
  retry: {{max_tries: 3, initial_backoff: PT1S, max_backoff: PT1M}}
""")
    stack.cli("apply", "-f", str(manifest), check=True)
    tick_url = stack.function_urls["styx-tick"]
    exec_dir = Path(stack.env["FERRY_LOG_DIR"]) / "styx"
    totals: Counter[str] = Counter()
    parameters: list[str] = []
    rnd = random.Random(8)
    for round_ in range(3):
        batch = [(date(2020, 1, 1) + timedelta(days=round_ * N + i)).isoformat() for i in range(N)]
        parameters += batch
        for p in batch:
            r = api.post(f"/v1/workflows/{wf}/instances/{p}/trigger", json={})
            assert r.status_code in (200, 201), r.text
        worker = _worker_pid(stack, "styx-tick")
        before = {d.name for d in exec_dir.iterdir()} if exec_dir.exists() else set()
        outcome: dict[str, Any] = {}

        caller = threading.Thread(target=_tick, args=(tick_url, stack.operator_headers, outcome))
        caller.start()
        # Killed in the middle of the launch, whatever the machine's speed: once the k-th execution
        # directory of this batch exists (a quiet machine launches all 100 within 0.1-0.4 s).
        k = rnd.randint(5, N // 3)
        deadline = time.monotonic() + 30
        while len({d.name for d in exec_dir.iterdir()} - before if exec_dir.exists() else set()) < k:
            assert time.monotonic() < deadline, "the tick launched too little"
            time.sleep(0.001)
        os.kill(worker, signal.SIGKILL)
        caller.join(60)
        assert "status" not in outcome, f"the tick finished before the kill: {outcome}"
        _ready(tick_url, worker, stack, "styx-tick")
        # Later ticks (three minutes on: a submission record older than two minutes is lost) repair it.
        later = datetime.now(UTC) + timedelta(minutes=3)
        deadline = time.monotonic() + 180
        while True:
            r = api.post("/v1/tick", json={"budget_seconds": 20},
                         headers={**stack.operator_headers, "X-Ferry-Now": later.isoformat()})
            assert r.status_code == 200, r.text
            report = r.json()
            totals.update({k: report[k] for k in ("adopted", "resubmitted", "submitted", "launch_failed")})
            items = api.get(f"/v1/workflows/{wf}/instances", params={"limit": 1000}).json()["items"]
            if len(items) == len(parameters) and all(i["state"] == "DONE" for i in items):
                break
            assert time.monotonic() < deadline, Counter(i["state"] for i in items)
            time.sleep(0.3)
    ran = Counter(line.split()[0] for line in runs.read_text().splitlines())
    twice = {p: n for p, n in ran.items() if n > 1}
    print(f"\n3 kills mid-launch of {N} instances: {totals['adopted']} adopted, {totals['resubmitted']} launched "
          f"again under their id, {sum(ran.values())} executions for {len(parameters)} instances, "
          f"{len(twice)} ran twice")
    assert not twice, twice
    assert sorted(ran) == sorted(parameters)  # each ran exactly once
    assert totals["adopted"] + totals["resubmitted"] > 0  # the kills did lose submissions
    items = api.get(f"/v1/workflows/{wf}/instances", params={"limit": 1000}).json()["items"]
    assert {i["tries"] for i in items} == {1}  # no try spent on a lost submission
    held = [d for _, d in stack.services().store.query("styx_slots", []) if d.get("instance", "").startswith(wf)]
    assert held == []  # no slot leaked


# A tick of its own, in its own process (so it can be SIGSTOPped), with the lost-submission window a
# test can wait out: FERRY_STYX_SUBMISSION_LOST_S. Prints its report.
_TICK = ("import json, sys\nfrom ferry.bootstrap import bootstrap\nfrom ferry.styx.tick import tick\n"
         "print(json.dumps(tick(bootstrap(), budget=float(sys.argv[1])).to_dict()), flush=True)\n")
WINDOW_S = 4


def _tick_process(stack: LocalStack, budget: float) -> subprocess.Popen[str]:
    env = {**stack.env, "FERRY_STYX_SUBMISSION_LOST_S": str(WINDOW_S), "FERRY_STYX_THREADS": "4"}
    return subprocess.Popen([sys.executable, "-c", _TICK, str(budget)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def _report(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return json.loads(out.strip().splitlines()[-1])


def test_a_tick_stopped_longer_than_the_lost_submission_window_runs_no_instance_twice(
        stack: LocalStack, tmp_path: Path) -> None:
    """23.4, slow is not dead: a tick SIGSTOPped mid-launch for twice the lost-submission window while
    other ticks recover its submissions, then SIGCONTed: it launches nothing more (its lease passed),
    cancels nothing it no longer owns; every instance runs exactly once, on try 1."""
    api = httpx.Client(base_url=stack.api_url, timeout=60)
    runs = tmp_path / "runs"
    wf = f"e2e-stop-{uuid.uuid4().hex[:6]}"
    manifest = tmp_path / "wf.yaml"
    manifest.write_text(f"""
apiVersion: ferry/v1
kind: Workflow
metadata: {{name: {wf}, owner: team-styx}}
spec:
  schedule: daily
  image: local/job:1
  command: [sh, -c, 'echo "$FERRY_PARAMETER $FERRY_EXECUTION_ID $FERRY_TRIES" >> {runs}']
  timeout: PT10M
  enabled: false
  retry: {{max_tries: 3, initial_backoff: PT1S, max_backoff: PT1M}}
""")
    stack.cli("apply", "-f", str(manifest), check=True)
    exec_dir = Path(stack.env["FERRY_LOG_DIR"]) / "styx"
    parameters = [(date(2021, 1, 1) + timedelta(days=i)).isoformat() for i in range(N)]
    for p in parameters:
        r = api.post(f"/v1/workflows/{wf}/instances/{p}/trigger", json={})
        assert r.status_code in (200, 201), r.text
    before = {d.name for d in exec_dir.iterdir()} if exec_dir.exists() else set()

    def launched() -> int:
        return len({d.name for d in exec_dir.iterdir() if d.name.startswith(wf)} - before) if exec_dir.exists() else 0

    stalled = _tick_process(stack, budget=60)
    deadline = time.monotonic() + 60
    while launched() < 5:
        assert time.monotonic() < deadline and stalled.poll() is None, "the tick launched too little"
        time.sleep(0.001)
    os.kill(stalled.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        time.sleep(WINDOW_S + 1)  # the stop outlasts the window; then other ticks look for its submissions
        totals: Counter[str] = Counter()
        while time.monotonic() - stopped_at < 2 * WINDOW_S + 2:
            report = _report(_tick_process(stack, budget=20))
            totals.update({k: report[k] for k in ("adopted", "resubmitted", "submitted")})
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    woken = _report(stalled)
    deadline = time.monotonic() + 180
    while True:
        items = api.get(f"/v1/workflows/{wf}/instances", params={"limit": 1000}).json()["items"]
        if len(items) == N and all(i["state"] == "DONE" for i in items):
            break
        assert time.monotonic() < deadline, Counter(i["state"] for i in items)
        report = _report(_tick_process(stack, budget=20))
        totals.update({k: report[k] for k in ("adopted", "resubmitted", "submitted")})
    ran = Counter(line.split()[0] for line in runs.read_text().splitlines())
    twice = {p: n for p, n in ran.items() if n > 1}
    print(f"\nSIGSTOP {time.monotonic() - stopped_at:.0f}s > window {WINDOW_S}s, {N} instances: stalled tick "
          f"submitted {woken['submitted']}, lease_expired {woken['lease_expired']}, left_to_others "
          f"{woken['left_to_others']}; others adopted {totals['adopted']}, resubmitted {totals['resubmitted']}; "
          f"{sum(ran.values())} executions, {len(twice)} ran twice")
    assert not twice, twice
    assert sorted(ran) == sorted(parameters)  # each ran exactly once
    assert totals["adopted"] + totals["resubmitted"] > 0  # the stop did leave submissions to others
    assert {i["tries"] for i in items} == {1}  # no try spent, nothing cancelled and retried
    held = [d for _, d in stack.services().store.query("styx_slots", []) if d.get("instance", "").startswith(wf)]
    assert held == []
