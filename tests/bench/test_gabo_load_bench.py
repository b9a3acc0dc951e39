"""``ferry load`` on the local stack, then ``ferry capacity``: the figures of docs/gabo.md's capacity section.

A type with ``max_workers: 1`` under ``GABO_LOAD_RATE`` events/s (default 300) for ``GABO_LOAD_SECONDS``
(default 20): every accepted id closed exactly once (the closed partitions' event counts add up to the
accepted count; ids are unique per run), the backlog drains, and the capacity model names the type's rate,
per-worker throughput and headroom — and flags that one worker cannot carry 10× the peak.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from ferry.dev.harness import LocalStack

pytestmark = [pytest.mark.bench, pytest.mark.emulator, pytest.mark.timeout(3600)]

RATE = float(os.environ.get("GABO_LOAD_RATE", "300"))
SECONDS = float(os.environ.get("GABO_LOAD_SECONDS", "20"))
SCHEMA = {"type": "object", "required": ["track_id"], "properties": {"track_id": {"type": "string"}}}




def test_load_run_then_capacity(local_stack: LocalStack) -> None:
    stack = local_stack
    name = f"load-{uuid.uuid4().hex[:6]}"
    manifest = {"apiVersion": "ferry/v1", "kind": "EventType", "metadata": {"name": name, "owner": "team-load"},
                "spec": {"schema": SCHEMA, "partitioning": "PT1M", "close_after": "PT5S", "min_workers": 1,
                         "max_workers": 1}}
    (stack.home / "t.json").write_text(json.dumps(manifest))
    stack.cli("apply", "-f", str(stack.home / "t.json"), check=True)
    r = stack.cli("load", name, "--rate", str(RATE), "--duration", str(SECONDS), "--payload", '{"track_id": "t"}',
                  "--scale-every", "5", "--json", timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert report["accepted"] == report["sent"] and report["closed_events"] == report["accepted"], report
    assert report["drain_s"] is not None and report["max_workers_chosen"] == 1
    cap = stack.cli("capacity", name, "--json")
    assert cap.returncode == 3, cap.stdout + cap.stderr  # one worker cannot carry 10× the peak
    [c] = json.loads(cap.stdout)["capacity"]
    assert c["rate_eps"]["60m"] > 0 and c["per_worker_eps"] and c["headroom"] is not None and c["headroom"] < 10
    assert "raise max_workers from 1 to" in c["verdict"]
    print("\nload:", json.dumps({k: v for k, v in report.items() if k != "closed"}, indent=1))
    print("closed:", report["closed"])
    print("capacity:", json.dumps(c, indent=1))
