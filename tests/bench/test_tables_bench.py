"""Typed columnar closing (issue 20), ratios in one run (``make bench`` prints them).

- closing to Parquet ÷ closing to NDJSON: events/s of one shard's merge (timed inside each process, the
  same shard's staging objects, alternated twice; best of each) — aim >= 0.8;
- the peak RSS (VmHWM) of every closing process when periods of 300k, 1M and 3M events are closed to
  Parquet, each shard in its own ``python -m ferry.gabo.closing.merge`` process (2 at a time), shards
  as the scaler sizes them (``shard_bits_for``) — aim flat and < 300 MB; every period's row count checked;
- bytes on disk: the Parquet parts ÷ the NDJSON.gz parts of the same 1M-event period;
- ``ferry query``'s engine counting that 1M-event period (``SELECT count(*)`` and a per-key count) on
  Parquet ÷ on NDJSON.gz (DuckDB, one run each after a warm-up) — aim >= 5× faster.

``TABLES_BENCH_SIZES`` (default ``300000,1000000,3000000``) sets the volumes; the first size >= 1M (or
the largest) is the one compared for bytes and query time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fakes.staging import write_period
from ferry.gabo.delivery.sink import LocalSink
from ferry.gabo.names import partition_key, shard_bits_for, shard_labels
from ferry.gabo.tables import columns, query

pytestmark = [pytest.mark.bench, pytest.mark.timeout(3600)]

SIZES = [int(x) for x in os.environ.get("TABLES_BENCH_SIZES", "300000,1000000,3000000").split(",")]
START = datetime(2026, 11, 26, 14, 5, tzinfo=UTC)
SCHEMA = {"type": "object", "required": ["track_id", "ms_played"], "properties": {
    "track_id": {"type": "string"}, "ms_played": {"type": "integer"}, "pad": {"type": "string"}}}


def merge(root: Path, fmt: str, shard: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "ferry.gabo.closing.merge", "--sink", f"file://{root}",
                          "--format", fmt, "--schema", json.dumps(SCHEMA), "t", partition_key(START), shard],
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def close_all(root: Path, fmt: str, bits: int) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda b: merge(root, fmt, b), shard_labels(bits)))


def part_bytes(root: Path, suffix: str) -> int:
    return sum(p.stat().st_size for p in (root / "events" / "t").rglob(f"part-*{suffix}"))


def count_time(root: Path, sql: str) -> tuple[float, list[list[Any]]]:
    engine = query.DuckDBTables(root, {"t": columns.columns(SCHEMA)})
    engine.query(sql)  # warm-up (file cache, first connection)
    started = time.perf_counter()
    r = engine.query(sql)
    return time.perf_counter() - started, r.rows


def test_tables_benchmarks(tmp_path: Path) -> None:
    figures: dict[str, Any] = {"closing": []}
    compare = next((n for n in SIZES if n >= 1_000_000), max(SIZES))
    for n in SIZES:
        bits = shard_bits_for(n)
        root = tmp_path / f"parquet-{n}"
        staged = write_period(LocalSink(root), "t", START, n, bits)
        if n == compare:  # the same staging for NDJSON (closing deletes nothing of staging in merge-only runs)
            write_period(LocalSink(tmp_path / "ndjson"), "t", START, n, bits)
        reps = close_all(root, "parquet", bits)
        assert sum(r["events"] for r in reps) == staged.unique
        (root / "events" / "t" / "dt=2026-11-26" / "hour=14" / "minute=05" / "_SUCCESS").write_text("{}")
        counted = count_time(root, "SELECT count(*), count(DISTINCT _id) FROM events.t")[1]
        assert counted == [[staged.unique, staged.unique]]
        figures["closing"].append({"events": n, "shards": 1 << bits, "processes": len(reps),
                                   "peak_rss_mb_max": max(r["peak_rss_mb"] for r in reps),
                                   "peak_rss_mb_median": sorted(r["peak_rss_mb"] for r in reps)[len(reps) // 2]})

    # rate: one shard of the compared period, both formats, alternated twice (best of each)
    bits = shard_bits_for(compare)
    shard = shard_labels(bits)[0]
    rates: dict[str, list[float]] = {"parquet": [], "ndjson": []}
    for _ in range(2):
        for fmt, root in (("ndjson", tmp_path / "ndjson"), ("parquet", tmp_path / f"parquet-{compare}")):
            r = merge(root, fmt, shard)
            rates[fmt].append(r["events"] / r["seconds"])
    figures["rate_events_per_s"] = {k: round(max(v)) for k, v in rates.items()}
    figures["parquet_over_ndjson_rate"] = round(max(rates["parquet"]) / max(rates["ndjson"]), 2)

    # bytes and query time on the compared period
    ndjson_root, parquet_root = tmp_path / "ndjson", tmp_path / f"parquet-{compare}"
    close_all(ndjson_root, "ndjson", bits)
    (ndjson_root / "events" / "t" / "dt=2026-11-26" / "hour=14" / "minute=05" / "_SUCCESS").write_text("{}")
    figures["bytes"] = {"parquet": part_bytes(parquet_root, ".parquet"), "ndjson_gz": part_bytes(ndjson_root, ".jsonl.gz")}
    figures["parquet_over_ndjson_gz_bytes"] = round(figures["bytes"]["parquet"] / figures["bytes"]["ndjson_gz"], 3)
    for name, sql in (("count", "SELECT count(*) FROM events.t"),
                      ("per_key", "SELECT track_id, count(*) AS n FROM events.t GROUP BY 1 ORDER BY n DESC, 1 LIMIT 5")):
        tp, rp = count_time(parquet_root, sql)
        tn, rn = count_time(ndjson_root, sql)
        assert rp == rn, (rp, rn)
        figures[f"query_{name}_s"] = {"parquet": round(tp, 3), "ndjson_gz": round(tn, 3), "speedup": round(tn / tp, 1)}
    print("\ntables bench:", json.dumps(figures, indent=1))
    rss = [c["peak_rss_mb_max"] for c in figures["closing"]]
    print(f"closing to Parquet, peak RSS per process at {', '.join(str(c['events']) for c in figures['closing'])} "
          f"events: {rss} MB (aim flat, < 300); Parquet / NDJSON closing rate {figures['parquet_over_ndjson_rate']} "
          f"(aim >= 0.8); bytes Parquet / NDJSON.gz {figures['parquet_over_ndjson_gz_bytes']}; "
          f"count on {compare:,} events {figures['query_count_s']['speedup']}x faster on Parquet (aim >= 5)")
    assert max(rss) < 300
