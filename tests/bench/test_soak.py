"""The soak: a local stack left running under steady load, with its own emulators and its scheduler on.

For ``SOAK_SECONDS`` (default 900) an event type receives ``SOAK_RATE`` events/s (default 100; one
ingest request every ``SOAK_TICK`` s, unique ids) while the stack's scheduler fires what the cloud's
would: ``scale`` (delivery work orders, pushed to ``deliver``) and ``close`` (close orders, pushed to
``close-shard``) every minute, the Styx tick every minute (a workflow that depends on each closed minute
of the type runs once per minute), Datamon's evaluation every five. Nothing else drives the stack while
the load runs. Then the load stops, the last periods close, and the run counts:

- every id in the closed partitions (the final parts): 0 lost (every id ingest accepted is there),
  0 duplicates (none twice), and every ``_SUCCESS`` marker's count matches its parts;
- the resident memory (``VmRSS``, summed over each component's process group) of every process of the
  stack — emulators, functions, scheduler — after a warm-up and at the end of the load: flat;
- the load average at start and end (the machine is shared).

``make bench`` runs it with the defaults; ``SOAK_SECONDS=120`` is a short check of the script.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.parts import part_lines, parts
from ferry.dev import stack as stack_mod
from ferry.dev.harness import LocalStack

pytestmark = [pytest.mark.bench, pytest.mark.timeout(int(os.environ.get("SOAK_SECONDS", "900")) + 1800)]

SECONDS = float(os.environ.get("SOAK_SECONDS", "900"))
RATE = float(os.environ.get("SOAK_RATE", "100"))
TICK = float(os.environ.get("SOAK_TICK", "1.0"))
WARM_UP = float(os.environ.get("SOAK_WARM_UP", "90"))
# Flat: a process may end at most this much above its warmed-up size (allocator and JIT settling, the
# Java emulators' heaps sizing themselves); the figures are printed either way.
FLAT_FACTOR, FLAT_SLACK_MB = 1.5, 64.0
SCHEMA = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}


@pytest.fixture
def soak_stack(tmp_path: Path) -> Iterator[LocalStack]:
    config = stack_mod.StackConfig(home=tmp_path / "home", project=f"soak-{uuid.uuid4().hex[:8]}",
                                   scheduler=True, deadline_s=600.0)
    with LocalStack.running(config) as running:
        yield running


def rss_mb(state: dict[str, Any]) -> dict[str, float]:
    """Resident memory per component: the sum over its process group (a component's pid leads one)."""
    out = subprocess.run(["ps", "-eo", "pgid=,rss="], capture_output=True, text=True, check=True).stdout
    by_group: Counter[int] = Counter()
    for line in out.splitlines():
        pgid, rss = line.split()
        by_group[int(pgid)] += int(rss)
    return {f"{c['kind']}:{c['name']}": round(by_group.get(int(c["pid"]), 0) / 1024, 1)
            for c in state["components"] if c.get("pid") and not c.get("external")}


def load_average() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def closed_ids(sink: Path, event_type: str) -> tuple[Counter[str], dict[str, int], int]:
    """Every id in the closed partitions' parts, how many times; each marker's event count; late events."""
    ids: Counter[str] = Counter()
    markers: dict[str, int] = {}
    late = 0
    root = sink / "events" / event_type
    for marker in sorted(root.rglob("_SUCCESS")):
        summary = json.loads(marker.read_text() or "{}")
        in_parts = 0
        for part in parts(marker.parent):
            for line in part_lines(part):
                ids[json.loads(line)["id"]] += 1
                in_parts += 1
        markers[str(marker.parent.relative_to(root))] = in_parts
        assert int(summary.get("events", in_parts)) == in_parts, (marker, summary, in_parts)
        late += int(summary.get("late_events") or 0)
    return ids, markers, late


def test_soak(soak_stack: LocalStack) -> None:
    stack = soak_stack
    name = f"soak-{uuid.uuid4().hex[:6]}"
    docs = [{"apiVersion": "ferry/v1", "kind": "Team", "metadata": {"name": "team-soak"},
             "spec": {"members": ["soak"]}},
            {"apiVersion": "ferry/v1", "kind": "EventType", "metadata": {"name": name, "owner": "team-soak"},
             "spec": {"schema": SCHEMA, "partitioning": "PT1M", "close_after": "PT10S", "min_workers": 1,
                      "max_workers": 2}},
            {"apiVersion": "ferry/v1", "kind": "Workflow", "metadata": {"name": f"{name}-count", "owner": "team-soak"},
             "spec": {"schedule": "* * * * *", "depends_on": [f"events.{name}"],
                      "image": "europe-docker.pkg.dev/soak/count:1",
                      "command": ["python", "-c", "import sys; print('counted', sys.argv[1])"], "args": ["{}"],
                      "timeout": "PT5M", "retry": {"max_tries": 3, "initial_backoff": "PT10S", "max_backoff": "PT1M"}}}]
    manifest = stack.home / "soak.json"
    manifest.write_text("\n---\n".join(json.dumps(d) for d in docs))
    stack.cli("apply", "-f", str(manifest), user="soak", check=True)

    ingest_url = stack.function_urls["ingest"].rstrip("/") + "/v1/events"
    api = httpx.Client(base_url=stack.api_url, timeout=120,
                       headers={"X-Ferry-User": "soak", **stack.operator_headers})
    client = httpx.Client(timeout=120, headers={"X-Ferry-User": "soak", "Content-Type": "application/x-ndjson"})
    run = uuid.uuid4().hex[:6]
    sent = accepted = 0
    failed_requests = 0
    started = time.monotonic()
    first_at = datetime.now(UTC)
    rss_start: dict[str, float] = {}
    load_start: list[float] = []
    while (elapsed := time.monotonic() - started) < SECONDS:
        want = int(RATE * elapsed) - sent
        if want > 0:
            ids = [f"{run}-{sent + i}" for i in range(want)]
            body = "\n".join(json.dumps({"type": name, "id": i, "payload": {"n": sent + k}})
                             for k, i in enumerate(ids))
            try:
                r = client.post(ingest_url, content=body.encode())
                r.raise_for_status()
                accepted += int(r.json()["accepted"])
                sent += want
            except httpx.HTTPError:
                failed_requests += 1  # not accepted: sent again with the same ids at the next tick
        if not rss_start and elapsed >= min(WARM_UP, SECONDS / 3):
            rss_start, load_start = rss_mb(stack.state), load_average()
        time.sleep(max(0.0, TICK - (time.monotonic() - started - elapsed)))
    rss_end, load_end = rss_mb(stack.state), load_average()
    last_at = datetime.now(UTC)

    # the last periods close on the scheduler's minutes; nothing is forced
    deadline = time.monotonic() + 600
    since = (first_at - timedelta(seconds=1)).isoformat()
    want_until = (last_at.replace(second=0, microsecond=0)).strftime("%Y-%m-%dT%H:%M")
    progress: dict[str, Any] = {}
    while time.monotonic() < deadline:
        progress = api.get("/v1/gabo/progress", params={"event_type": name, "since": since}).json()
        parts = progress.get("partitions") or []
        if parts and parts[-1]["partition"] >= want_until and all(p["state"] == "closed" for p in parts) \
                and sum(int(p["events"] or 0) for p in parts) >= accepted:
            break
        time.sleep(10)
    ids, markers, late = closed_ids(stack.home / "sink", name)
    expected = {f"{run}-{n}" for n in range(sent)}
    lost = len(expected - set(ids))
    duplicates = sum(c - 1 for c in ids.values() if c > 1)
    strays = len(set(ids) - expected)
    instances = api.get(f"/v1/workflows/{name}-count/instances").json()
    items = instances.get("items", instances) if isinstance(instances, dict) else instances
    states = Counter(str(i.get("state")) for i in items) if isinstance(items, list) else {}
    report = {
        "seconds": SECONDS, "rate": RATE, "sent": sent, "accepted": accepted, "failed_requests": failed_requests,
        "closed_partitions": len(markers), "ids_in_closed_partitions": sum(ids.values()), "lost": lost,
        "duplicates": duplicates, "strays": strays, "late_events": late,
        "open": [p for p in progress.get("partitions", []) if p["state"] != "closed"],
        "workflow_instances": dict(states),
        "rss_mb": {k: {"start": rss_start.get(k), "end": v} for k, v in rss_end.items()},
        "load_average": {"start": load_start, "end": load_end},
    }
    print("\nsoak:", json.dumps(report, indent=1))
    (stack.home.parent / "soak-report.json").write_text(json.dumps(report, indent=1))
    if os.environ.get("SOAK_REPORT"):
        Path(os.environ["SOAK_REPORT"]).write_text(json.dumps(report, indent=1))
    assert accepted == sent and lost == 0 and duplicates == 0 and strays == 0, report
    assert not report["open"], report
    grew = {k: v for k, v in report["rss_mb"].items()
            if v["start"] and v["end"] > v["start"] * FLAT_FACTOR + FLAT_SLACK_MB}
    assert not grew, f"resident memory grew: {grew}"
