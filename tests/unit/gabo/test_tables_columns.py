"""The event type schema → columns mapping: every event reads back equal, through a real Parquet file.

Property-based: hypothesis draws payload schemas (scalars, date-times, dates, nested objects, arrays,
nullable unions, untyped ``oneOf``, names that cannot be columns) and payloads for them — values that
fit, values that do not (a float in an integer column, a date-time in another zone), present nulls and
properties the schema never named — writes them to Parquet with pyarrow and reads them back.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry.gabo.tables import arrow, columns
from ferry.gabo.tables.columns import Column

NAMES = st.one_of(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True),
                  st.sampled_from(["dt", "hour", "A", "a", "b c", "_x", "", "é", "id", "user_id"]))
JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70)
                    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                    max_leaves=8)
SCALARS = st.sampled_from([
    {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"},
    {"type": "string", "format": "date-time"}, {"type": "string", "format": "date"},
    {"type": ["integer", "null"]}, {"oneOf": [{"type": "string"}, {"type": "integer"}]}, {},
    {"type": ["string", "integer"]}])


def _object_schema(props: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(NAMES, props, min_size=1, max_size=5).flatmap(
        lambda p: st.builds(lambda req, extra: {"type": "object", "properties": p, "required": req,
                                                **({} if extra else {"additionalProperties": False})},
                            st.lists(st.sampled_from(sorted(p)), unique=True), st.booleans()))


PROPS = st.recursive(SCALARS, lambda inner: _object_schema(inner) | st.builds(
    lambda items: {"type": "array", "items": items}, inner), max_leaves=10)
SCHEMAS = _object_schema(SCALARS | PROPS)  # scalars at the top as often as nested shapes

ZONES = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))])
INSTANTS = st.builds(lambda d, z: d.replace(tzinfo=UTC).astimezone(z),
                     st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1)), ZONES)


def _time_text(t: datetime, how: int) -> str:
    return [columns.canonical_time(t), t.isoformat(), t.isoformat(timespec="milliseconds"), "not a time"][how]


def values(schema: Any) -> st.SearchStrategy[Any]:
    """Values for a property of ``schema``: mostly fitting, sometimes anything (a valid event of another
    schema generation, or of a property the mapping leaves untyped)."""
    return st.one_of(_fitting(schema), JSON)


def _fitting(schema: Any) -> st.SearchStrategy[Any]:
    t = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(t, list):
        t = t[0]
    fmt = schema.get("format") if isinstance(schema, dict) else None
    if t == "string" and fmt == "date-time":
        return st.builds(_time_text, INSTANTS, st.integers(0, 3))
    if t == "string" and fmt == "date":
        return st.dates().map(date.isoformat) | st.just("20261207")
    if t == "string":
        return st.text(max_size=10)
    if t == "integer":
        return (st.integers(-(2 ** 63), 2 ** 63 - 1) | st.integers(-100, 100).map(float)
                | st.sampled_from([2 ** 63, -(2 ** 63) - 1, 2.0 ** 63]))
    if t == "number":
        return (st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2 ** 60), 2 ** 60)
                | st.integers(2 ** 53 + 1, 2 ** 62).map(lambda n: n | 1))
    if t == "boolean":
        return st.booleans()
    if t == "array":
        return st.lists(values(schema["items"]), max_size=3)
    if t == "object":
        return objects(schema)
    return JSON


def objects(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    props = schema.get("properties", {})
    known = st.fixed_dictionaries({}, optional={k: values(v) for k, v in props.items()})
    unknown = st.dictionaries(st.text(max_size=5), JSON, max_size=2)
    return st.builds(lambda a, b: {**b, **a}, known, unknown)


def _roundtrip(cols: columns.Columns, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    schema = arrow.arrow_schema(cols)
    rows = [columns.row(cols, e, PERIOD, late=i % 2 == 1) for i, e in enumerate(events)]
    buf = io.BytesIO()
    pq.write_table(arrow.table(schema, rows), buf, compression="zstd")
    buf.seek(0)
    read = pq.read_table(buf)
    assert read.schema.equals(schema)
    return read.to_pylist()


PERIOD = datetime(2026, 12, 7, 9, tzinfo=UTC)


def _event(i: int, p: Any) -> dict[str, Any]:
    return {"id": f"e{i}", "type": "t", "time": "2026-12-07T10:00:00.5+01:00" if i % 3 else None,
            "received_at": "2026-12-07T09:00:01.000002Z", **({"replayed": True} if i % 4 == 1 else {}), "payload": p}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_every_event_reads_back_equal_through_parquet(data: st.DataObject) -> None:
    schema = data.draw(SCHEMAS)
    payloads = data.draw(st.lists(objects(schema) | JSON, min_size=1, max_size=6))
    cols = columns.columns(schema)
    events = [_event(i, p) for i, p in enumerate(payloads)]
    for i, (e, r) in enumerate(zip(events, _roundtrip(cols, events), strict=True)):
        assert columns.payload(cols, r) == e["payload"]
        assert r["_id"] == e["id"] and r["_late"] == (i % 2 == 1) and r["_replayed"] == (i % 4 == 1)
        assert r["_period"] == PERIOD and r["_received_at"] == datetime(2026, 12, 7, 9, 0, 1, 2, tzinfo=UTC)
        assert r["_event_time"] == (datetime(2026, 12, 7, 9, 0, 0, 500000, tzinfo=UTC) if i % 3 else None)


SCHEMA = {"type": "object", "required": ["user_id"], "properties": {
    "user_id": {"type": "string"}, "count": {"type": "integer"}, "score": {"type": "number"},
    "ok": {"type": "boolean"}, "at": {"type": "string", "format": "date-time"},
    "day": {"type": "string", "format": "date"},
    "device": {"type": "object", "properties": {"os": {"type": "string"}, "version": {"type": "integer"}}},
    "tags": {"type": "array", "items": {"type": "string"}},
    "items": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string"}}}},
    "note": {"type": ["string", "null"]}, "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
    "dt": {"type": "string"}, "Weird name": {"type": "string"}, "matrix": {"type": "array", "items": {
        "type": "array", "items": {"type": "integer"}}}}}


def test_the_documented_mapping() -> None:
    cols = columns.columns(SCHEMA)
    assert [(c.name, c.describe()) for c in cols.all] == [
        ("_id", "STRING"), ("_period", "TIMESTAMP"), ("_received_at", "TIMESTAMP"), ("_event_time", "TIMESTAMP"), ("_replayed", "BOOL"),
        ("_late", "BOOL"), ("user_id", "STRING"), ("count", "INT64"), ("score", "FLOAT64"), ("ok", "BOOL"),
        ("at", "TIMESTAMP"), ("day", "DATE"), ("device", "STRUCT<os STRING, version INT64>"),
        ("tags", "LIST<STRING>"), ("items", "LIST<STRUCT<sku STRING>>"), ("note", "STRING"), ("_extra", "STRING")]
    assert not cols.all[0].nullable and all(c.nullable for c in cols.payload)


def test_untyped_parts_are_one_json_string_mirroring_the_payload() -> None:
    cols = columns.columns(SCHEMA)
    p = {"user_id": "u1", "count": 3.0, "at": "2026-12-07T10:00:00+01:00", "device": {"os": "ios", "model": "x"},
         "either": 7, "dt": "d", "Weird name": 1, "matrix": [[1]], "note": None, "unknown": {"deep": [1, 2]}}
    r = columns.row(cols, _event(0, p), PERIOD)
    assert r["count"] == 3 and r["at"] == datetime(2026, 12, 7, 9, tzinfo=UTC)
    assert r["device"] == {"os": "ios", "version": None}
    assert json.loads(r["_extra"]) == {"count": 3.0, "at": "2026-12-07T10:00:00+01:00", "device": {"model": "x"},
                                       "either": 7, "dt": "d", "Weird name": 1, "matrix": [[1]], "note": None,
                                       "unknown": {"deep": [1, 2]}}
    assert columns.payload(cols, r) == p
    assert columns.row(cols, _event(0, {"user_id": "u"}), PERIOD)["_extra"] is None
    assert json.loads(columns.row(cols, _event(0, [1, "x"]), PERIOD)["_extra"]) == [[1, "x"]]


def test_bigquery_fields() -> None:
    cols = columns.columns(SCHEMA)
    fields = {f["name"]: f for f in columns.bigquery_schema(cols)}
    assert fields["_id"] == {"name": "_id", "type": "STRING", "mode": "REQUIRED"}
    assert fields["tags"] == {"name": "tags", "type": "STRING", "mode": "REPEATED"}
    assert fields["items"] == {"name": "items", "type": "RECORD", "mode": "REPEATED",
                               "fields": [{"name": "sku", "type": "STRING", "mode": "NULLABLE"}]}
    assert fields["device"]["fields"][1] == {"name": "version", "type": "INTEGER", "mode": "NULLABLE"}


def test_names_that_cannot_be_columns_and_case_twins_stay_in_extra() -> None:
    cols = columns.columns({"type": "object", "properties": {"b": {"type": "string"}, "B": {"type": "string"},
                                                             "hour": {"type": "integer"}, "x-y": {"type": "string"}}})
    assert [c.name for c in cols.payload] == ["B"]  # sorted first of the case twins; hour is a partition key
    assert columns.columns({"type": "object", "properties": {"o": {"type": "object"}}}).payload == ()
    assert Column("x", "list", item=Column("item", "date")).describe() == "LIST<DATE>"
