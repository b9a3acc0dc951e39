"""The merge of one staging shard into final parts, in memory bounded by the shard's ids — never its lines.

Two streaming passes over the shard's staging objects (taken in name order, decompressed a chunk at a
time):

1. for each line, its id and ``received_at`` (read from the line's fixed prefix as ingest writes it, the
   JSON parser otherwise) decide whether it beats the copy of that id seen so far. The winner is the
   first received; copies received at the same instant are ordered by a CRC-32 of the line, then by
   position — a rule of the inputs alone, so the same inputs always give the same finals. Memory: one
   small entry per id (about 250 bytes), then one byte per line once the winners are known;
2. the winning lines are streamed into parts of at most ``max_part_bytes`` (uncompressed lines) in the
   type's format (``spec.format``): Parquet parts ``part-s<shard>-NNNNN.parquet`` typed by the type's
   columns (:mod:`ferry.gabo.tables.parquet`), or gzip NDJSON parts ``part-s<shard>-NNNNN.jsonl.gz`` —
   a retried shard rewrites the very same objects.

The shard's ids are the only thing held across objects; the shard count per period is chosen so that a
shard's ids fit (``SHARD_EVENTS``).
"""

from __future__ import annotations

import json
import re
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ferry.gabo.closing.formats import PartFormat, PartWriter
from ferry.gabo.closing.formats.ndjson import GzipLines
from ferry.gabo.delivery.sink import Sink
from ferry.gabo.envelopes import is_replayed
from ferry.gabo.names import (
    final_prefix,
    parse_partition_key,
    shard_prefix,
    staging_prefix,
    staging_shard,
)

MAX_PART_BYTES = 128 * 1024 * 1024
FINAL_LEVEL = 6
# How ingest writes a line ({"id":…,"type":…,"time":…,"received_at":…,"payload":…}, compact): its id and
# receive time are read without parsing the payload. Anything else (escapes included) is parsed.
_FAST = re.compile(rb'\{"id":"([^"\\]*)","type":(?:"[^"\\]*"|null),"time":(?:"[^"\\]*"|null),'
                   rb'"received_at":"([^"\\]*)"')
_CHUNK = 1 << 18


def line_fields(line: bytes) -> tuple[bytes, bytes]:
    """(id, received_at) of a staging line, as UTF-8 bytes."""
    m = _FAST.match(line)
    if m is not None:
        return m.group(1), m.group(2)
    doc = json.loads(line)
    return str(doc["id"]).encode(), str(doc.get("received_at") or "").encode()


def gzip_chunks(blob: bytes) -> Iterator[list[bytes]]:
    """The non-empty lines of a gzip object (one or more members), a list per decompressed chunk."""
    pending = memoryview(blob)
    tail = b""
    while len(pending):
        d = zlib.decompressobj(31)
        pos = 0
        while pos < len(pending) and not d.eof:
            out = d.decompress(pending[pos:pos + _CHUNK])
            pos += _CHUNK
            if out:
                lines = (tail + out).split(b"\n")
                tail = lines.pop()
                yield [ln for ln in lines if ln]
        if not d.eof:
            raise ValueError("truncated gzip object")
        rest = d.unused_data + bytes(pending[pos:])
        pending = memoryview(rest.lstrip(b"\0"))
    if tail:
        yield [tail]


@dataclass
class ShardResult:
    shard: str
    events: int = 0
    duplicates: int = 0
    late: int = 0
    replayed: int = 0
    bytes: int = 0
    parts: list[str] = field(default_factory=list)
    staging: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def part_name(prefix: str, shard: str, index: int) -> str:
    return f"{prefix}part-s{shard}-{index:05d}.jsonl.gz"


def ndjson_parts(sink: Sink, prefix: str, shard: str, max_bytes: int) -> PartWriter:
    return _Parts(sink, prefix, shard, max_bytes, FINAL_LEVEL)


class _Parts:
    """Gzip parts written as they fill: memory holds one part's compressed bytes and a small line buffer."""

    def __init__(self, sink: Sink, prefix: str, shard: str, max_bytes: int, level: int) -> None:
        self.sink, self.prefix, self.shard, self.max_bytes, self.level = sink, prefix, shard, max_bytes, level
        self.names: list[str] = []
        self._gz: GzipLines | None = None
        self._size = 0
        self._buf: list[bytes] = []
        self._buf_size = 0

    def add(self, line: bytes, late: bool = False) -> None:
        n = len(line) + 1
        if self._size and self._size + n > self.max_bytes:
            self._finish()
        self._buf.append(line)
        self._buf_size += n
        self._size += n
        if self._buf_size >= 1 << 20:
            self._spill()

    def _spill(self) -> None:
        if self._buf:
            if self._gz is None:
                self._gz = GzipLines(self.level)
            self._gz.add_many(self._buf)
            self._buf, self._buf_size = [], 0

    def _finish(self) -> None:
        self._spill()
        if self._gz is not None:
            name = part_name(self.prefix, self.shard, len(self.names))
            self.sink.write(name, self._gz.finish())
            self.names.append(name)
        self._gz, self._size = None, 0

    def close(self) -> list[str]:
        self._finish()
        return self.names


def merge_shard(sink: Sink, keys: Sequence[str], out_prefix: str, shard: str,
                max_part_bytes: int = MAX_PART_BYTES, level: int = FINAL_LEVEL,
                fmt: PartFormat | None = None) -> ShardResult:
    """Merge the staging objects ``keys`` (one shard of one period) into parts under ``out_prefix``, in
    the format ``fmt`` (None: gzip NDJSON at ``level``).

    Objects whose name starts with ``late-`` hold late events: their winning lines are counted as late.
    Parts of an earlier attempt of this shard beyond the ones rewritten are deleted.

    Raises:
        NotFound: a staging object disappeared (another close finished the period; the caller checks).
    """
    keys = sorted(keys)
    started = time.monotonic()
    best: dict[bytes, tuple[bytes, int, int]] = {}
    counts: list[int] = []
    stamps: dict[bytes, bytes] = {}  # one bytes object per distinct received_at (a request shares one)
    fast, slow, crc32 = _FAST.match, line_fields, zlib.crc32
    for oi, key in enumerate(keys):
        n, base = 0, oi << 32
        for lines in gzip_chunks(sink.read(key)):
            for ln in lines:
                m = fast(ln)
                eid, rec = (m.group(1), m.group(2)) if m is not None else slow(ln)
                rec = stamps.setdefault(rec, rec)
                cand = (rec, crc32(ln), base | n)
                prev = best.get(eid)
                if prev is None or cand < prev:
                    best[eid] = cand
                n += 1
        counts.append(n)
        if len(stamps) > 100_000:
            stamps.clear()
    keep = [bytearray(c) for c in counts]
    for _, _, loc in best.values():
        keep[loc >> 32][loc & 0xFFFFFFFF] = 1
    events = len(best)
    del best, stamps

    result = ShardResult(shard, events=events, duplicates=sum(counts) - events, staging=list(keys))
    parts: PartWriter = (fmt(sink, out_prefix, shard, max_part_bytes) if fmt is not None
                         else _Parts(sink, out_prefix, shard, max_part_bytes, level))
    for oi, key in enumerate(keys):
        flags = keep[oi]
        if not any(flags):
            continue
        late = key.rsplit("/", 1)[1].startswith("late-")
        n = 0
        for lines in gzip_chunks(sink.read(key)):
            for ln in lines:
                if flags[n]:
                    parts.add(ln, late)
                    result.bytes += len(ln) + 1
                    result.late += late
                    result.replayed += is_replayed(ln)
                n += 1
        keep[oi] = bytearray()
    result.parts = parts.close()
    wanted = set(result.parts)
    for stale in sink.list(f"{out_prefix}part-s{shard}-"):
        if stale not in wanted:
            sink.delete(stale)
    result.seconds = round(time.monotonic() - started, 3)
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m ferry.gabo.closing.merge --sink URL TYPE PERIOD [SHARD]``: merge one shard in this process (no
    records, no completion) and print its counts with this process's peak RSS (benchmarks, tests)."""
    import argparse

    from ferry.domain import periods
    from ferry.gabo.delivery.sink import open_sink
    from ferry.log import peak_rss_mb

    p = argparse.ArgumentParser(prog="python -m ferry.gabo.closing.merge", description=main.__doc__)
    p.add_argument("--sink", required=True)
    p.add_argument("--partitioning", default="PT1M")
    p.add_argument("--max-part-bytes", type=int, default=MAX_PART_BYTES)
    p.add_argument("--format", choices=("parquet", "ndjson"), default="ndjson")
    p.add_argument("--schema", default='{"type": "object"}', help="the payload JSON Schema (Parquet columns)")
    p.add_argument("event_type")
    p.add_argument("period", help="YYYYmmddTHHMM")
    p.add_argument("shard", nargs="?", default="")
    a = p.parse_args(argv)
    sink = open_sink(a.sink)
    start = parse_partition_key(a.period)
    prefix = shard_prefix(a.event_type, start, a.shard) if a.shard else staging_prefix(a.event_type, start)
    keys = [k for k in sink.list(prefix) if staging_shard(k, a.event_type) is not None]
    out = final_prefix(a.event_type, start, periods.partitioning(a.partitioning))
    from ferry.gabo.closing.formats.parquet import parquet_parts

    fmt = parquet_parts(json.loads(a.schema), start) if a.format == "parquet" else None
    r = merge_shard(sink, keys, out, a.shard, a.max_part_bytes, fmt=fmt)
    print(json.dumps({**r.to_dict(), "staging": len(r.staging), "peak_rss_mb": peak_rss_mb()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
