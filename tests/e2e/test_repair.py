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

    http = httpx.Client(base_url=stack.api_url, timeout=60)
    clock = [datetime.now(UTC)]

    def tick() -> None:
        clock[0] += timedelta(minutes=2)  # past the gate's re-check delay
        http.post("/v1/tick", json={"budget_seconds": 20},
                  headers={**stack.operator_headers, "X-Ferry-Now": clock[0].isoformat()}).raise_for_status()

    def until(pred: Any, what: str, deadline: float = 90.0) -> None:
        stop = time.monotonic() + deadline
        while not pred():
            assert time.monotonic() < stop, what
            tick()
            time.sleep(0.3)

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

    def run_of(w: str) -> tuple[datetime, datetime]:
        tl = _json(stack, "timeline", w, day)
        statuses = [s for x in tl["triggers"][-1]["executions"] for s in x["statuses"]]
        at = {s["event"]: datetime.fromisoformat(s["at"]) for s in statuses}
        assert tl["triggers"][-1]["trigger_type"] == "backfill" and "terminate" in at
        return at["submit"], at["terminate"]

    (_, wf1_end), (wf2_start, _) = run_of(wf1), run_of(wf2)
    assert wf2_start >= wf1_end  # wf2 started only after wf1 had re-landed b
