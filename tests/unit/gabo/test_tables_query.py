"""Parquet parts and the local query engine: closed periods only, Parquet and NDJSON alike."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ferry.errors import ValidationError
from ferry.gabo.closing.formats.ndjson import gzip_lines
from ferry.gabo.envelopes import iso
from ferry.gabo.tables import columns, parquet, query

SCHEMA = {"type": "object", "properties": {
    "user_id": {"type": "string"}, "n": {"type": "integer"},
    "at": {"type": "string", "format": "date-time"},
    "device": {"type": "object", "properties": {"os": {"type": "string"}}},
    "tags": {"type": "array", "items": {"type": "string"}}}}
COLS = columns.columns(SCHEMA)
H10 = datetime(2026, 12, 7, 10, tzinfo=UTC)


def _line(i: int, start: datetime) -> bytes:
    p = {"user_id": f"u{i % 3}", "n": i, "at": "2026-12-07T10:00:00Z", "device": {"os": "ios", "model": "x"},
         "tags": ["a", "b"][: i % 3], "unknown": {"i": i}}
    return json.dumps({"id": f"e{i}", "type": "t", "time": None, "received_at": iso(start), "payload": p},
                      separators=(",", ":")).encode()


def _write(root: Path, key: str, data: bytes) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _period(root: Path, start: datetime, n: int, fmt: str, closed: bool = True, max_bytes: int = 1 << 30) -> list[str]:
    prefix = f"events/t/dt={start:%Y-%m-%d}/hour={start:%H}/"
    if fmt == "parquet":
        parts = parquet.ParquetParts(lambda k, b: _write(root, k, b), prefix, "", SCHEMA, start, max_bytes,
                                     row_group_rows=1000)
        for i in range(n):
            parts.add(_line(i, start), late=i == 0)
        names = parts.close()
    else:
        names = [f"{prefix}part-s-00000.jsonl.gz"]
        _write(root, names[0], gzip_lines([_line(i, start) for i in range(n)]))
    if closed:
        _write(root, prefix + "_SUCCESS", b"{}")
    return names


def test_parquet_parts_row_groups_and_deterministic_names(tmp_path: Path) -> None:
    names = _period(tmp_path, H10, 2500, "parquet", max_bytes=200_000)
    assert names[0].endswith("part-s-00000.parquet") and len(names) > 1
    f = pq.ParquetFile(tmp_path / names[0])
    assert f.metadata.num_row_groups >= 1 and f.metadata.row_group(0).num_rows <= 1000
    assert sum(pq.ParquetFile(tmp_path / n).metadata.num_rows for n in names) == 2500
    again = _period(tmp_path / "again", H10, 2500, "parquet", max_bytes=200_000)
    assert [Path(n).name for n in again] == [Path(n).name for n in names]
    assert all((tmp_path / n).read_bytes() == (tmp_path / "again" / n).read_bytes() for n in names)
    back = [e for n in names for e in parquet.events((tmp_path / n).read_bytes())]
    assert [e["id"] for e in back] == [f"e{i}" for i in range(2500)]
    assert [e["payload"] for e in back] == [json.loads(_line(i, H10))["payload"] for i in range(2500)]


def test_only_closed_periods_are_tables_parquet_and_ndjson_alike(tmp_path: Path) -> None:
    _period(tmp_path, H10, 30, "parquet")
    _period(tmp_path, datetime(2026, 12, 7, 11, tzinfo=UTC), 12, "ndjson")
    _period(tmp_path, datetime(2026, 12, 7, 12, tzinfo=UTC), 99, "parquet", closed=False)
    engine = query.DuckDBTables(tmp_path, {"t": COLS})
    r = engine.query("SELECT _period, count(*) AS n, count(DISTINCT _id) AS ids FROM events.t GROUP BY 1 ORDER BY 1")
    assert r.rows == [["2026-12-07T10:00:00Z", 30, 30], ["2026-12-07T11:00:00Z", 12, 12]]
    r = engine.query("SELECT user_id, count(*) FROM events.t WHERE _period = TIMESTAMPTZ '2026-12-07 10:00:00+00' "
                     "GROUP BY 1 ORDER BY 1")
    assert r.rows == [["u0", 10], ["u1", 10], ["u2", 10]]
    r = engine.query("SELECT _id, n, \"at\", device.os, tags, _extra->>'$.unknown.i' AS extra_i, _late FROM events.t "
                     "WHERE n = 4 ORDER BY _period")
    assert r.rows[0] == ["e4", 4, "2026-12-07T10:00:00Z", "ios", ["a"], "4", False]
    assert r.rows[1][:6] == ["e4", 4, "2026-12-07T10:00:00Z", "ios", ["a"], "4"]
    assert engine.query("SELECT count(*) FROM events.t WHERE _late").rows == [[1]]


def test_query_errors_are_validation_errors(tmp_path: Path) -> None:
    engine = query.DuckDBTables(tmp_path, {"demo-click": COLS})
    assert engine.query("SELECT count(*) FROM events.demo_click").rows == [[0]]
    with pytest.raises(ValidationError, match="query failed"):
        engine.query("SELECT nope FROM events.demo_click")


def test_a_query_reads_nothing_but_the_closed_periods(tmp_path: Path) -> None:
    _period(tmp_path / "sink", H10, 3, "parquet")
    (tmp_path / "secret.csv").write_text("a,b\n1,2\n")
    engine = query.DuckDBTables(tmp_path / "sink", {"t": COLS})
    assert engine.query("SELECT count(*) FROM events.t").rows == [[3]]
    for sql in (f"SELECT * FROM read_csv('{tmp_path}/secret.csv')", "SET enable_external_access = true",
                f"SELECT * FROM read_parquet('{tmp_path}/sink/events/t/*/*/*.parquet')"[:0] + "ATTACH 'x.db'"):
        with pytest.raises(ValidationError):
            engine.query(sql)
