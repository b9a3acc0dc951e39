"""Closed parts as Parquet: the winning lines of a shard's merge, typed by the event type's columns.

Memory stays bounded whatever the shard's size: lines are converted into Arrow record batches of
``BATCH_ROWS`` (the Python objects of one batch only), batches are held until a row group is full
(``ROW_GROUP_ROWS`` rows or ``ROW_GROUP_BYTES`` of input lines), and each row group is written by one
``write_table`` call — pyarrow closes at least one row group per call, so row groups are never one per
delivery batch. One ``ParquetWriter`` per part, into memory; a part is written to the sink when it holds
``max_bytes`` of input lines (its Parquet bytes are a fraction of that), so at most one part's compressed
bytes, one row group's Arrow data and one batch's objects are held at a time.

Parts are ``part-s<shard>-NNNNN.parquet``: deterministic in the merge's inputs, so a retried shard
rewrites the very same objects. ``_SUCCESS`` never matches the ``*.parquet`` glob readers use.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ferry.gabo.tables import arrow, columns

EXTENSION = ".parquet"
SCHEMA_KEY = b"ferry.payload_schema"
BATCH_ROWS = 8192
ROW_GROUP_ROWS = 65_536
ROW_GROUP_BYTES = 32 * 1024 * 1024
COMPRESSION = "zstd"


def part_name(prefix: str, shard: str, index: int) -> str:
    return f"{prefix}part-s{shard}-{index:05d}{EXTENSION}"


class ParquetParts:
    """Parquet parts written as they fill (``add`` a winning line, ``close`` for the names written)."""

    def __init__(self, write: Callable[[str, bytes], None], prefix: str, shard: str, payload_schema: Any,
                 period: datetime, max_bytes: int, row_group_rows: int = ROW_GROUP_ROWS) -> None:
        self.write, self.prefix, self.shard = write, prefix, shard
        self.cols = columns.columns(payload_schema)
        self.period, self.max_bytes, self.row_group_rows = period, max_bytes, row_group_rows
        # self-describing: the payload schema the columns came from (reading a part back needs no manifest)
        self.schema = arrow.arrow_schema(self.cols).with_metadata({SCHEMA_KEY: json.dumps(payload_schema)})
        self.names: list[str] = []
        self._lines: list[tuple[bytes, bool]] = []
        self._batches: list[pa.RecordBatch] = []
        self._group_rows = self._group_bytes = 0
        self._part_bytes = 0
        self._sink: pa.BufferOutputStream | None = None
        self._writer: pq.ParquetWriter | None = None

    def add(self, line: bytes, late: bool = False) -> None:
        n = len(line) + 1
        if self._part_bytes and self._part_bytes + n > self.max_bytes:
            self._finish_part()
        self._lines.append((line, late))
        self._part_bytes += n
        self._group_bytes += n
        if len(self._lines) >= BATCH_ROWS:
            self._convert()
        if self._group_rows >= self.row_group_rows or self._group_bytes >= ROW_GROUP_BYTES:
            self._write_group()

    def _convert(self) -> None:
        if not self._lines:
            return
        cols, period, loads, row = self.cols, self.period, json.loads, columns.row
        rows = [row(cols, loads(ln), period, late) for ln, late in self._lines]
        self._batches.extend(arrow.table(self.schema, rows).to_batches())
        self._group_rows += len(rows)
        self._lines = []

    def _write_group(self) -> None:
        self._convert()
        if not self._batches:
            return
        if self._writer is None:
            self._sink = pa.BufferOutputStream()
            self._writer = pq.ParquetWriter(self._sink, self.schema, compression=COMPRESSION)
        group = pa.Table.from_batches(self._batches, schema=self.schema)
        self._writer.write_table(group, row_group_size=group.num_rows)
        self._batches, self._group_rows, self._group_bytes = [], 0, 0

    def _finish_part(self) -> None:
        self._write_group()
        if self._writer is not None:
            assert self._sink is not None
            self._writer.close()
            name = part_name(self.prefix, self.shard, len(self.names))
            self.write(name, self._sink.getvalue().to_pybytes())
            self.names.append(name)
        self._writer, self._sink, self._part_bytes = None, None, 0

    def close(self) -> list[str]:
        self._finish_part()
        return self.names


def ids(blob: bytes) -> list[str]:
    """The event ids of a Parquet part (its ``_id`` column only)."""
    return [str(x) for x in pq.read_table(pa.BufferReader(blob), columns=[columns.ID]).column(0).to_pylist()]


def events(blob: bytes) -> list[dict[str, Any]]:
    """A Parquet part's events as the stored lines were (``{id, time, received_at, replayed?, payload}``;
    times as read back), for tools and tests that read parts of either format."""
    out = []
    t = pq.read_table(pa.BufferReader(blob))
    cols = columns.columns(json.loads((t.schema.metadata or {}).get(SCHEMA_KEY, b"{}")))
    for r in t.to_pylist():
        t = r.get(columns.EVENT_TIME)
        out.append({"id": r[columns.ID], "time": columns.canonical_time(t) if t else None,
                    "received_at": columns.canonical_time(r[columns.RECEIVED_AT]),
                    **({"replayed": True} if r.get(columns.REPLAYED) else {}), "payload": columns.payload(cols, r)})
    return out
