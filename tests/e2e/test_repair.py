"""Partition repair on the local stack (the real CLI and functions, the Firestore emulator, jobs run by
the local launcher): a -> wf1 -> b -> wf2 -> c with days landed; ``ferry invalidate a DAY`` and
``ferry backfill create --downstream-of a DAY DAY+1`` re-run wf1 then wf2 for that day, in that order,
and b and c re-land. Ticks travel in time (``X-Ferry-Now``) past the upstream gate's re-check delay."""

from __future__ import annotations

import json
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.dev.harness import LocalStack

pytestmark = pytest.mark.emulator
JOB = str(Path(__file__).resolve().parents[2] / "examples" / "styx" / "job.py")


def _json(stack: LocalStack, *args: str) -> Any:
    out = stack.cli(*args, "--json", user="alice", check=True)
    return json.loads(out.stdout)


def test_invalidate_and_reprocess_downstream_in_order(stack: LocalStack, tmp_path: Path) -> None:
    pre, team = f"rep-{uuid.uuid4().hex[:6]}", f"team-{uuid.uuid4().hex[:6]}"
    a, b, c, wf1, wf2 = (f"{pre}-{n}" for n in ("a", "b", "c", "wf1", "wf2"))
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=n)).isoformat() for n in (4, 3, 2)]
    end = (today - timedelta(days=1)).isoformat()
    day = days[1]
    ep = "spec: {{partitioning: daily, start: {start}T00:00:00Z, sla: {{error_after: PT168H}}}}"
    wf = """apiVersion: ferry/v1
kind: Workflow
metadata: {{name: {name}, owner: {team}}}
spec:
  schedule: daily
  image: local/job:1
  command: [python, {job}]
  args: ["{{}}", "--sleep", "0.3"]
  depends_on: [{dep}]
  produces: {out}
  retry: {{max_tries: 1}}
"""
    docs = [f"apiVersion: ferry/v1\nkind: Team\nmetadata: {{name: {team}}}\nspec: {{members: [alice]}}\n"]
    docs += [f"apiVersion: ferry/v1\nkind: Endpoint\nmetadata: {{name: {n}, owner: {team}}}\n"
             + ep.format(start=days[0]) + "\n" for n in (a, b, c)]
    docs += [wf.format(name=wf1, team=team, job=JOB, dep=a, out=b), wf.format(name=wf2, team=team, job=JOB, dep=b, out=c)]
    path = tmp_path / "chain.yaml"
    path.write_text("---\n".join(textwrap.dedent(d) for d in docs))
    stack.cli("apply", "-f", str(path), user="alice", check=True)
    for d in days:
        stack.cli("land", a, d, user="alice", check=True)
    for w in (wf1, wf2):
        _json(stack, "backfill", "create", w, days[0], end, "--concurrency", "3")

    ticks = Ticker(stack)
    tick, until = ticks.tick, ticks.until

    def landed(endpoint: str) -> dict[str, dict[str, Any]]:
        return {p["partition"]: p for p in _json(stack, "get", "partitions", endpoint)["items"]}

    until(lambda: set(landed(c)) == set(days), "the week did not land through the chain")
    before = {e: landed(e)[day]["landed_at"] for e in (b, c)}

    inv = _json(stack, "invalidate", a, day, "--reason", "duplicated rows")
    assert inv["invalidated"] is True and inv["by"] == "alice"
    assert day not in landed(a)
    rp = _json(stack, "backfill", "create", "--downstream-of", a, day, end)
    assert [w["workflow"] for w in rp["workflows"]] == [wf1, wf2]
    assert day not in landed(b) and day not in landed(c)
    for _ in range(3):
        tick()
    assert all(w["finished"] == 0 for w in _json(stack, "backfill", "show", rp["id"])["workflows"])  # a not back
    stack.cli("land", a, day, user="alice", check=True)
    until(lambda: _json(stack, "backfill", "show", rp["id"])["state"] == "done", "the reprocessing did not finish")
    after = {e: landed(e)[day]["landed_at"] for e in (b, c)}
    assert after[b] > before[b] and after[c] > before[c] and after[c] > after[b]

    (_, wf1_end), (wf2_start, _) = run_of(stack, wf1, day), run_of(stack, wf2, day)
    assert wf2_start >= wf1_end  # wf2 started only after wf1 had re-landed b


class Ticker:
    """``POST /v1/tick`` as the scheduler would, each two virtual minutes later (past the upstream gate's
    re-check delay and the retry backoffs)."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack, self.clock = stack, datetime.now(UTC)
        self.http = httpx.Client(base_url=stack.api_url, timeout=60)

    def tick(self) -> None:
        self.clock += timedelta(minutes=2)
        self.http.post("/v1/tick", json={"budget_seconds": 20}, headers={
            **self.stack.operator_headers, "X-Ferry-Now": self.clock.isoformat()}).raise_for_status()

    def until(self, pred: Any, what: str, deadline: float = 90.0) -> None:
        stop = time.monotonic() + deadline
        while not pred():
            assert time.monotonic() < stop, what
            self.tick()
            time.sleep(0.3)


def run_of(stack: LocalStack, workflow: str, parameter: str) -> tuple[datetime, datetime]:
    """When the instance's latest trigger's execution was submitted and when it terminated."""
    tl = _json(stack, "timeline", workflow, parameter)
    statuses = [s for x in tl["triggers"][-1]["executions"] for s in x["statuses"]]
    at = {s["event"]: datetime.fromisoformat(s["at"]) for s in statuses}
    assert tl["triggers"][-1]["trigger_type"] == "backfill" and "terminate" in at
    return at["submit"], at["terminate"]


def test_backfill_retry_keeps_the_backfills_concurrency(stack: LocalStack, tmp_path: Path) -> None:
    """A backfill of concurrency 1 whose 3 instances failed (exit 50); the job fixed (re-applied);
    ``ferry backfill retry`` re-runs the 3 one at a time: never more than 1 active, runs that do not overlap."""
    team, name = f"team-{uuid.uuid4().hex[:6]}", f"flaky-{uuid.uuid4().hex[:6]}"
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=n)).isoformat() for n in (4, 3, 2)]
    path = tmp_path / "flaky.yaml"

    def apply(exit_code: int) -> None:
        path.write_text(textwrap.dedent(f"""\
            apiVersion: ferry/v1
            kind: Team
            metadata: {{name: {team}}}
            spec: {{members: [alice]}}
            ---
            apiVersion: ferry/v1
            kind: Workflow
            metadata: {{name: {name}, owner: {team}}}
            spec:
              schedule: daily
              image: local/job:1
              command: [python, {JOB}]
              args: ["{{}}", "--sleep", "0.5", "--exit", "{exit_code}"]
              retry: {{max_tries: 1}}
            """))
        stack.cli("apply", "-f", str(path), user="alice", check=True)

    apply(50)
    bf = _json(stack, "backfill", "create", name, days[0], (today - timedelta(days=1)).isoformat(),
               "--concurrency", "1")
    ticks = Ticker(stack)

    def show() -> Any:
        return _json(stack, "backfill", "show", bf["id"])

    ticks.until(lambda: show()["state"] == "done", "the backfill did not fail through")
    assert show()["counts"] == {"ERROR": 3}

    apply(0)
    retried = _json(stack, "backfill", "retry", bf["id"])
    assert retried["retried"] == days and retried["counts"] == {"QUEUED": 1, "PENDING": 2}
    peak = 0

    def finished() -> bool:
        nonlocal peak
        states = [i["state"] for i in _json(stack, "instances", name)["items"]]
        peak = max(peak, sum(s not in ("DONE", "ERROR") for s in states))
        return states.count("DONE") == 3

    ticks.until(finished, "the retried instances did not finish", deadline=180)
    assert peak == 1
    runs = sorted(run_of(stack, name, d) for d in days)
    assert all(nxt[0] >= prev[1] for prev, nxt in zip(runs, runs[1:], strict=False)), runs  # one at a time
    assert show()["state"] == "done"
