"""Ten times a type's nominal rate for five minutes on the local stack (``ferry load``), then the proofs.

Knobs: ``GABO_10X_NOMINAL`` (events/s, default 150 — its 10×, 1,500/s, is what ingest on the 2-core
machine sustains beside the emulators and three other test suites), ``GABO_10X_SECONDS`` (default 300),
``GABO_10X_SCALE_EVERY`` (seconds between scaler calls, default 10; work orders last one second less),
``GABO_10X_MAX_WORKERS`` (default 4). A short run: ``GABO_10X_SECONDS=40 make bench``.

Checked: nothing lost (every sent event accepted, the closed partitions' counts add up to it), every id
once in the closed partitions (each ``load-<run>-<n>`` read back from the final parts exactly once, no
other), the backlog drains, no staging object left, and the scaler's worker count reaches what the
capacity model predicts (± 1) — the model's ``workers_now`` is asked at each scaler call (``ferry load``
records it), and compared once the run is at its rate (the last half of the sending). Printed: those
figures, the per-worker throughput the model used, and the load average.
"""

from __future__ import annotations

import json
import os
import statistics
import uuid
from pathlib import Path

import pytest

from fakes.parts import is_part, part_lines
from ferry.dev.harness import LocalStack

pytestmark = [pytest.mark.bench, pytest.mark.emulator, pytest.mark.timeout(3600)]

NOMINAL = float(os.environ.get("GABO_10X_NOMINAL", "150"))
SECONDS = float(os.environ.get("GABO_10X_SECONDS", "300"))
SCALE_EVERY = float(os.environ.get("GABO_10X_SCALE_EVERY", "10"))
MAX_WORKERS = int(os.environ.get("GABO_10X_MAX_WORKERS", "4"))
SCHEMA = {"type": "object", "required": ["track_id"], "properties": {"track_id": {"type": "string"}}}




def closed_ids(sink: Path, name: str) -> list[str]:
    """Every event id in the type's final parts (``events/<type>/…/part-*.jsonl.gz``)."""
    ids: list[str] = []
    for part in sorted(p for p in (sink / "events" / name).rglob("part-*") if is_part(p)):
        ids += [json.loads(x)["id"] for x in part_lines(part)]
    return ids


def test_ten_times_nominal_for_five_minutes(local_stack: LocalStack) -> None:
    stack = local_stack
    name = f"tenx-{uuid.uuid4().hex[:6]}"
    manifest = {"apiVersion": "ferry/v1", "kind": "EventType", "metadata": {"name": name, "owner": "team-load"},
                "spec": {"schema": SCHEMA, "partitioning": "PT1M", "close_after": "PT5S", "min_workers": 1,
                         "max_workers": MAX_WORKERS}}
    (stack.home / "t.json").write_text(json.dumps(manifest))
    stack.cli("apply", "-f", str(stack.home / "t.json"), check=True)
    load_before = os.getloadavg()
    rate = 10 * NOMINAL
    r = stack.cli("load", name, "--rate", str(rate), "--duration", str(SECONDS), "--payload", '{"track_id": "t"}',
                  "--scale-every", str(SCALE_EVERY), "--json", timeout=SECONDS + 1800)
    load_after = os.getloadavg()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(r.stdout)
    cap = json.loads(stack.cli("capacity", name, "--json").stdout)["capacity"][0]

    # nothing lost, every id once
    sent, run_id = report["sent"], report["run_id"]
    ids = closed_ids(stack.home / "sink", name)
    counts: dict[str, int] = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    expected = {f"load-{run_id}-{n}" for n in range(sent)}
    assert report["accepted"] == sent and report["closed_events"] == sent, report
    assert set(counts) == expected and all(c == 1 for c in counts.values()), (
        len(expected - set(counts)), len(set(counts) - expected), sum(c > 1 for c in counts.values()))
    assert report["drain_s"] is not None and not report["open"], report
    assert not list((stack.home / "sink" / "staging" / name).rglob("*.jsonl.gz"))

    # the scaler and the model, once the run is at its rate (the last half of the sending)
    half = max(1, int(SECONDS / SCALE_EVERY / 2))
    chosen = report["workers_chosen"][half:half * 2] or report["workers_chosen"]
    model = [m for m in report["model_workers"][half:half * 2] if m is not None] or [0]
    predicted = round(statistics.median(model))
    figures = {
        "nominal_eps": NOMINAL, "rate_eps": rate, "seconds": SECONDS, "sent": sent, "accepted": report["accepted"],
        "achieved_eps": report["achieved_rate"], "closed_events": report["closed_events"],
        "ids_once": len(counts), "partitions": len(report["closed"]), "peak_backlog": report["peak_backlog"],
        "drain_s": report["drain_s"], "scaler_workers": report["workers_chosen"],
        "model_workers": report["model_workers"], "scaler_max_at_rate": max(chosen),
        "model_median_at_rate": predicted, "per_worker_eps": cap["per_worker_eps"],
        "per_worker_measured_on": cap["per_worker_measured_on"], "capacity_verdict": cap["verdict"],
        "load_avg_before": [round(x, 1) for x in load_before], "load_avg_after": [round(x, 1) for x in load_after],
    }
    print("\nGabo 10x load run:", json.dumps(figures, indent=1))
    print(f"10x of {NOMINAL:.0f}/s for {SECONDS:.0f} s: {sent} sent, {report['accepted']} accepted, "
          f"{len(counts)} ids once in {len(report['closed'])} partitions, peak backlog {report['peak_backlog']}, "
          f"drained {report['drain_s']} s after the last request; scaler max {max(chosen)} vs model "
          f"{predicted} at rate; load average {load_before[0]:.1f} → {load_after[0]:.1f}")
    assert abs(max(chosen) - predicted) <= 1, figures
