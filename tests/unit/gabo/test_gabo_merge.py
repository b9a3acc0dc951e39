"""Sharded staging and the bounded-memory shard merge: the sharding rule, dedup, late counts, part sizes,
determinism, and peak memory that does not grow with the period's volume."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import zlib
from datetime import UTC, datetime
from pathlib import Path

from fakes.staging import expected_ids, write_period
from ferry.gabo.closing.formats.ndjson import gzip_lines
from ferry.gabo.closing.merge import gzip_chunks, line_fields, merge_shard
from ferry.gabo.delivery.sink import LocalSink
from ferry.gabo.envelopes import Envelope, event_line, iso, parse_iso
from ferry.gabo.names import (
    MAX_SHARD_BITS,
    SHARD_EVENTS,
    shard_bits_for,
    shard_labels,
    shard_of,
    shard_prefix,
    staging_name,
    staging_shard,
)

START = datetime(2026, 11, 26, 14, 5, tzinfo=UTC)
OUT = "events/play/dt=2026-11-26/hour=14/minute=05/"


def line(i: str, received: str, extra: int = 0) -> bytes:
    return event_line(Envelope("play", i, {"n": extra}), parse_iso(received))


def parts_lines(sink: LocalSink, names: list[str]) -> list[bytes]:
    return [ln for n in names for ln in gzip.decompress(sink.read(n)).splitlines()]


def test_a_shard_is_a_prefix_of_the_id_hash_bits() -> None:
    ids = [f"id-{i}" for i in range(2000)]
    for eid in ids:
        deep = shard_of(eid, 6)
        assert len(deep) == 6 and shard_of(eid, 3) == deep[:3] and shard_of(eid, 0) == ""
        assert int(deep, 2) == zlib.crc32(eid.encode()) >> 26
    sizes = [sum(1 for e in ids if shard_of(e, 2) == b) for b in shard_labels(2)]
    assert all(400 < n < 600 for n in sizes)  # evenly spread
    assert shard_bits_for(0) == 0 and shard_bits_for(SHARD_EVENTS) == 0
    assert shard_bits_for(3_000_000) == 5 and shard_bits_for(1e12) == MAX_SHARD_BITS


def test_staging_keys_name_their_period_and_shard_and_the_old_layout_is_shard_all() -> None:
    key = staging_name("play", START, ["m1"], "011")
    assert key.startswith("staging/play/20261126T1405/s011/")
    assert staging_shard(key, "play") == (START, "011")
    assert staging_shard("staging/play/20261126T1405/abc.jsonl.gz", "play") == (START, "")
    assert staging_shard("staging/play/junk/abc.jsonl.gz", "play") is None
    # a shorter shard's listing prefix covers the longer shards it prefixes, and only those
    assert key.startswith(shard_prefix("play", START, "01"))
    assert not key.startswith(shard_prefix("play", START, "00"))


def test_line_fields_fast_and_parsed_paths_agree() -> None:
    fast = line("a-1", "2026-11-26T14:05:01Z")
    assert line_fields(fast) == (b"a-1", b"2026-11-26T14:05:01.000000Z")
    escaped = event_line(Envelope("play", 'q"ü\\', {}), START)
    assert line_fields(escaped) == ('q"ü\\'.encode(), iso(START).encode())
    other = json.dumps({"payload": 1, "id": "x", "received_at": "r"}).encode()
    assert line_fields(other) == (b"x", b"r")


def test_gzip_chunks_reads_members_and_lines_across_chunks() -> None:
    lines = [f"line-{i}-".encode() + b"y" * (i % 700) for i in range(3000)]
    blob = gzip_lines(lines[:1000]) + gzip_lines(lines[1000:])
    assert [ln for chunk in gzip_chunks(blob) for ln in chunk] == lines


def test_merge_drops_duplicates_deterministically_counts_late_and_bounds_parts(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path)
    a = [line("1", "2026-11-26T14:05:01Z"), line("2", "2026-11-26T14:05:02Z")]
    b = [line("2", "2026-11-26T14:05:02Z"), line("3", "2026-11-26T14:05:03Z"), line("5", "2026-11-26T14:05:03Z", 1)]
    late = [line("4", "2026-11-26T14:04:59Z"), line("1", "2026-11-26T14:05:09Z", 1)]
    tie = [line("5", "2026-11-26T14:05:03Z", 2)]  # same id, same instant, other bytes
    keys = {"staging/play/20261126T1405/s/a.jsonl.gz": a, "staging/play/20261126T1405/s/b.jsonl.gz": b,
            "staging/play/20261126T1405/s/late-c.jsonl.gz": late, "staging/play/20261126T1405/s/d.jsonl.gz": tie}
    for k, v in keys.items():
        sink.write(k, gzip_lines(v))
    r1 = merge_shard(sink, list(keys), OUT, "", max_part_bytes=200)
    first = {n: sink.read(n) for n in r1.parts}
    got = parts_lines(sink, r1.parts)
    assert sorted(json.loads(x)["id"] for x in got) == ["1", "2", "3", "4", "5"]
    assert (r1.events, r1.duplicates, r1.late) == (5, 3, 1)
    assert r1.bytes == sum(len(x) + 1 for x in got)
    assert json.loads(next(x for x in got if json.loads(x)["id"] == "1"))["payload"] == {"n": 0}  # first received
    assert all(len(gzip.decompress(sink.read(n))) <= 200 for n in r1.parts) and len(r1.parts) > 1
    # the same inputs in another order give the same objects (a retried shard overwrites itself), and
    # parts of an earlier attempt beyond them are removed
    sink.write(f"{OUT}part-s-00099.jsonl.gz", b"stale")
    r2 = merge_shard(sink, list(reversed(list(keys))), OUT, "", max_part_bytes=200)
    assert r2.parts == r1.parts and {n: sink.read(n) for n in r2.parts} == first
    assert sink.list(f"{OUT}part-s-") == r1.parts


def test_every_id_of_a_sharded_period_once_with_right_counts(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path)
    n, bits, late = 40_000, 2, 300
    staged = write_period(sink, "play", START, n, bits, batch=5000, late=late)
    totals = {"events": 0, "duplicates": 0, "late": 0}
    for shard in shard_labels(bits):
        keys = sink.list(shard_prefix("play", START, shard))
        r = merge_shard(sink, keys, OUT, shard)
        ids = [json.loads(x)["id"] for x in parts_lines(sink, r.parts)]
        assert len(ids) == len(set(ids)) and set(ids) == expected_ids(n, bits, shard, late)
        for k in totals:
            totals[k] += getattr(r, k)
    assert totals == {"events": staged.unique, "duplicates": staged.duplicates, "late": late}


def _peak(sink_dir: Path, shard: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "ferry.gabo.closing.merge", "--sink", f"file://{sink_dir}", "play",
                          "20261126T1405", shard], capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout)


def test_peak_memory_of_a_shard_merge_does_not_grow_with_the_period(tmp_path: Path) -> None:
    """Periods of 50k and 200k events, sharded by volume (1 and 4 shards): the closing process's peak
    RSS (VmHWM) is the same, and far from what holding the period would take. tests/bench goes to 3M."""
    peaks = {}
    for n in (50_000, 200_000):
        bits = shard_bits_for(n, per_shard=50_000)
        write_period(LocalSink(tmp_path / str(n)), "play", START, n, bits)
        peaks[n] = max(_peak(tmp_path / str(n), s)["peak_rss_mb"] for s in shard_labels(bits))
    assert peaks[200_000] < peaks[50_000] * 1.15 + 5, peaks
    assert peaks[200_000] < 300, peaks
