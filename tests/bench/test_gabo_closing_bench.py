"""Gabo closing at volume and the cost of sharded staging, ratios in one run (``make bench`` prints them).

- closing a PT1M period of 300k, 1M and 3M events (1% duplicate ids, 1,000 late), the full path: the
  decision in this process (claim, one order per shard captured), each order run as its own process
  (``python -m ferry.gabo.closing.closeshard``, what the close-shard function does; 2 at a time), the last shard
  completing the period (``_SUCCESS``, one landing). Checked: every valid id exactly once (per shard:
  unique, valid, of that shard, as many as expected), the marker's counts. Reported: the peak RSS
  (VmHWM) of every closing process — aim flat and < 300 MB;
- the scale-out curve: wall time to merge every shard of the 3M period with 1, 2 and 4 parallel merge
  processes (``python -m ferry.gabo.closing.merge``, merge only);
- closing throughput per process (events/s of one shard's merge, timed inside the process) ÷ a raw rewrite of the same staging
  bytes (read, gunzip, gzip at the finals' level, write; no parsing) — aim >= 0.3;
- delivery with sharded staging (32 shards) ÷ unsharded, one worker process, same emulator, best of 3
  alternated rounds of ``GABO_BENCH_DELIVERY_EVENTS`` (default 100,000: several batches, as a type big
  enough to be sharded has) — aim >= 0.9; the same as events per CPU second of the worker process (what
  sharding costs the worker itself: on a shared machine the emulator's pull latency dominates the wall
  time and swings from round to round).

``GABO_BENCH_CLOSE_SIZES`` (default ``300000,1000000,3000000``) sets the volumes.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fakes.staging import write_period
from ferry.bootstrap import bootstrap
from ferry.config import Settings
from ferry.domain.manifests import EventType
from ferry.gabo.closing.merge import FINAL_LEVEL, gzip_chunks, line_fields
from ferry.gabo.closing.service import CloseOrder
from ferry.gabo.delivery.sink import LocalSink
from ferry.gabo.names import (
    SUCCESS,
    final_prefix,
    partition_key,
    shard_bits_for,
    shard_labels,
    shard_of,
    shard_prefix,
)
from ferry.gabo.tables import parquet

pytestmark = [pytest.mark.bench, pytest.mark.emulator, pytest.mark.timeout(3600)]

SIZES = [int(x) for x in os.environ.get("GABO_BENCH_CLOSE_SIZES", "300000,1000000,3000000").split(",")]
START = datetime(2026, 11, 26, 14, 5, tzinfo=UTC)
LATE = 1000
# events per delivery round: a sharded type holds >= SHARD_EVENTS per period, so several batches
DELIVERY_EVENTS = int(os.environ.get("GABO_BENCH_DELIVERY_EVENTS", "100000"))


def proc(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def expected_counts(n: int, bits: int) -> dict[str, int]:
    labels, shift, out = shard_labels(bits), 32 - bits, {}
    for j in range(n):
        if j % 100 == 99 and j < n - LATE:
            continue
        b = labels[zlib.crc32(f"e{j}".encode()) >> shift] if bits else ""
        out[b] = out.get(b, 0) + 1
    return out


def check_shard(sink: LocalSink, parts: list[str], n: int, bits: int, shard: str, want: int) -> None:
    """Every id of the shard once: unique, a valid id (not a repeated copy), of this shard, as many as written."""
    seen: set[bytes] = set()
    for p in parts:
        if p.endswith(parquet.EXTENSION):  # the default format: the _id column
            ids = [i.encode() for i in parquet.ids(sink.read(p))]
        else:
            ids = [line_fields(ln)[0] for lines in gzip_chunks(sink.read(p)) for ln in lines]
        for eid in ids:
            j = int(eid[1:])
            assert eid not in seen and (j % 100 != 99 or j >= n - LATE) and j < n
            assert shard_of(eid.decode(), bits) == shard
            seen.add(eid)
    assert len(seen) == want, (shard, len(seen), want)


def close_full(project: str, tmp: Path, n: int, workers: int = 2) -> dict[str, Any]:
    sink_dir = tmp / f"close-{n}"
    name = f"vol{n}"
    svc = bootstrap(Settings(project=project, store="firestore", broker="pubsub", sink=f"file://{sink_dir}"))
    g = svc.gabo
    et = EventType.model_validate({"metadata": {"name": name, "owner": "bench"},
                                   "spec": {"partitioning": "PT1M", "close_after": "PT10S"}})
    svc.apply.apply([et], START)
    bits = shard_bits_for(n)
    t = time.monotonic()
    staged = write_period(LocalSink(sink_dir), name, START, n, bits, late=LATE)
    gen_s = time.monotonic() - t
    svc.store.write([__import__("ferry.store.base", fromlist=["Op"]).Op.set(
        "gabo_runs", f"{name}-drain", {"event_type": name, "run_id": "drain", "finished_at": START,
                                       "drained_at": START + timedelta(minutes=2),
                                       "updated_at": START + timedelta(minutes=2)})])
    orders: list[CloseOrder] = []
    closer = g.closer()
    closer.publish = orders.extend
    closer.close(et, START + timedelta(minutes=3), created_at=START)
    assert len(orders) == 1 << bits
    env = {**os.environ, "GOOGLE_CLOUD_PROJECT": project, "FERRY_SINK": f"file://{sink_dir}",
           "FERRY_STORE": "firestore", "FERRY_BROKER": "pubsub"}
    t = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        reps = list(pool.map(lambda o: proc(["ferry.gabo.closing.closeshard", o.model_dump_json()], env), orders))
    close_s = time.monotonic() - t
    done = [r["completed"] for r in reps if r["completed"]]
    assert len(done) == 1  # one shard process completed the period (and landed it, in its process)
    marker = json.loads((sink_dir / final_prefix(name, START, core_pt1m()) / SUCCESS).read_text())
    assert (marker["events"], marker["duplicates_dropped"], marker["late_events"]) == (
        staged.unique, staged.duplicates, LATE)
    sink = LocalSink(sink_dir)
    want = expected_counts(n, bits)
    prefix = final_prefix(name, START, core_pt1m())
    for b in shard_labels(bits):
        check_shard(sink, sink.list(f"{prefix}part-s{b}-"), n, bits, b, want.get(b, 0))
    from ferry.datamon.repository import PARTITIONS, partition_id

    landing = svc.store.get(PARTITIONS, partition_id(f"events.{name}", core_pt1m().format(START)))
    assert landing is not None and landing["landings"] == 1 and landing["records"] == staged.unique
    return {"events": n, "shards": 1 << bits, "generate_s": round(gen_s, 1), "close_s_2w": round(close_s, 1),
            "peak_rss_mb_max": max(r["peak_rss_mb"] for r in reps),
            "peak_rss_mb_median": sorted(r["peak_rss_mb"] for r in reps)[len(reps) // 2],
            "unique": staged.unique, "duplicates": staged.duplicates}


def core_pt1m() -> Any:
    from ferry.domain import periods

    return periods.partitioning("PT1M")


def scale_out(tmp: Path, n: int) -> dict[str, Any]:
    sink_dir = tmp / f"curve-{n}"
    bits = shard_bits_for(n)
    write_period(LocalSink(sink_dir), "curve", START, n, bits, late=LATE)
    out: dict[str, Any] = {}
    for w in (1, 2, 4):
        t = time.monotonic()
        with ThreadPoolExecutor(w) as pool:
            reps = list(pool.map(lambda b: proc(["ferry.gabo.closing.merge", "--sink", f"file://{sink_dir}", "curve",
                                                 partition_key(START), b], dict(os.environ)),
                                 shard_labels(bits)))
        assert sum(r["events"] for r in reps) == n - (n - LATE) // 100
        out[f"wall_s_{w}w"] = round(time.monotonic() - t, 1)
    # one shard's merge vs a raw rewrite of its bytes, in this process
    sink = LocalSink(sink_dir)
    b = shard_labels(bits)[0]
    keys = sink.list(shard_prefix("curve", START, b))
    rep = proc(["ferry.gabo.closing.merge", "--sink", f"file://{sink_dir}", "curve", partition_key(START), b],
               dict(os.environ))
    events, merge_s = rep["events"], rep["seconds"]  # the merge's own time (no interpreter start-up)
    t = time.monotonic()
    lines = 0
    for k in keys:
        raw = gzip.decompress(sink.read(k))
        lines += raw.count(b"\n")
        sink.write(f"raw/{k}", gzip.compress(raw, compresslevel=FINAL_LEVEL, mtime=0))
    raw_s = time.monotonic() - t
    out.update(merge_eps=round(events / merge_s), raw_rewrite_eps=round(lines / raw_s),
               closing_ratio=round((events / merge_s) / (lines / raw_s), 2))
    return out


def delivery_sharded_ratio(project: str, tmp: Path, n: int = DELIVERY_EVENTS) -> dict[str, Any]:
    from bench.test_gabo_bench import publish_lines, setup, wait_report, worker_process

    _, g, _ = setup(project, tmp, "shardbench")
    env = {**os.environ, "GOOGLE_CLOUD_PROJECT": project, "FERRY_SINK": f"file://{tmp}/sink",
           "FERRY_STORE": "firestore", "FERRY_BROKER": "pubsub"}
    rates: dict[int, list[float]] = {0: [], 5: []}
    cpu: dict[int, list[float]] = {0: [], 5: []}  # events per CPU second of the worker process
    for r in range(-1, 3):
        for bits in ((0, 5) if r % 2 == 0 else (5, 0)):
            publish_lines(project, "gabo-shardbench", n, start=(r + 1) * 10 * n + bits * n)
            rep = wait_report(worker_process(env, "shardbench", "--shard-bits", str(bits)))
            got = rep["written"]
            while got < n:  # a pull the client gave up on (a loaded emulator) leased messages: back in 15 s
                got += wait_report(worker_process(env, "shardbench", "--shard-bits", str(bits)))["written"]
            if r >= 0 and rep["written"] == n:  # a round that moved all its events in one run
                rates[bits].append(rep["written"] / rep["active_seconds"])
                cpu[bits].append(rep["written"] / rep["cpu_s"])
    return {"delivery_unsharded_eps": round(max(rates[0])), "delivery_32_shards_eps": round(max(rates[5])),
            "delivery_sharded_ratio": round(max(rates[5]) / max(rates[0]), 2),
            "delivery_rounds_eps": {"unsharded": [round(x) for x in rates[0]], "32_shards": [round(x) for x in rates[5]]},
            "delivery_unsharded_eps_per_cpu_s": round(max(cpu[0])), "delivery_32_shards_eps_per_cpu_s": round(max(cpu[5])),
            "delivery_sharded_cpu_ratio": round(max(cpu[5]) / max(cpu[0]), 2)}


def test_gabo_closing_benchmarks(emulators: Any, project_id: str, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from ferry.gabo.closing import service as closing

    monkeypatch.setattr(closing, "INLINE_MAX_OBJECTS", 0)  # every period fans out (measured as processes)
    figures: dict[str, Any] = {"closing": [close_full(project_id, tmp_path, n) for n in SIZES]}
    figures["scale_out"] = scale_out(tmp_path, max(SIZES))
    figures.update(delivery_sharded_ratio(project_id, tmp_path))
    print("\nGabo closing benchmark:", json.dumps(figures, indent=1))
    rss = [c["peak_rss_mb_max"] for c in figures["closing"]]
    print(f"closing peak RSS at {', '.join(str(c['events']) for c in figures['closing'])} events: "
          f"{rss} MB (aim flat, < 300); closing / raw rewrite = {figures['scale_out']['closing_ratio']} "
          f"(aim >= 0.3); wall 1/2/4 workers = {figures['scale_out']['wall_s_1w']}/"
          f"{figures['scale_out']['wall_s_2w']}/{figures['scale_out']['wall_s_4w']} s; delivery sharded / "
          f"unsharded = {figures['delivery_sharded_ratio']} (aim >= 0.9; per CPU second of the worker "
          f"{figures['delivery_sharded_cpu_ratio']})")
    assert max(rss) < 300
