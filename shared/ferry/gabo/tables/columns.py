"""An event type's JSON Schema as table columns, and an event as a row of them — losslessly.

One pure mapping (docs/gabo.md, "Reading delivered data"), used by closing (Parquet parts), by the
BigQuery table and by ``ferry query``:

- Ferry's own columns first: ``_id`` (STRING), ``_period`` (TIMESTAMP: the start of the closed period
  the event is in — the BigQuery table's partitioning column, the same locally), ``_received_at``
  (TIMESTAMP), ``_event_time`` (the envelope's ``time``, TIMESTAMP, null when not sent), ``_replayed``
  and ``_late`` (BOOL);
- one column per property of the payload schema that has one plain type: ``string`` → STRING
  (``format: date-time`` → TIMESTAMP in microseconds UTC, ``format: date`` → DATE), ``integer`` → INT64,
  ``number`` → FLOAT64, ``boolean`` → BOOL, ``object`` with ``properties`` → a struct of its properties,
  ``array`` with one ``items`` schema → a list of it; ``type: [T, "null"]`` is ``T``;
- everything the schema does not type — additional or pattern properties, ``oneOf``/``anyOf``/``allOf``/
  ``$ref``/``not``/``if``, arrays of arrays, tuples, names that are not column names, and any value
  that does not fit its column (an integer beyond INT64, a date-time that is not one) — is kept in
  ``_extra``, one JSON string mirroring the payload: ``{"prop": original value}`` or, for a struct that
  mostly fits, ``{"prop": {its own untyped parts}}``; a present ``null`` is kept there as ``null``. A
  payload that is not an object is ``_extra = [payload]``.

So ``payload(columns, row(columns, event))`` is the payload sent (numbers as numbers: an integer in a
``number`` column reads back as the equal float). Payload columns are all nullable: a column must read
every partition of every schema generation, and ``required`` is enforced at ingest, not by storage.

Column names: a property is a column when its name matches ``[A-Za-z][A-Za-z0-9_]{0,127}`` (BigQuery and
DuckDB names, case-insensitively unique among its siblings: the first in sorted order wins) and, at the
top, is not a partition key (``dt``, ``hour``, ``minute``). Ferry's columns start with ``_``, so no
property can take one. Structs nest at most 15 deep (BigQuery's limit).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

KINDS = ("string", "integer", "number", "boolean", "timestamp", "date", "struct", "list")
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")
PARTITION_KEYS = ("dt", "hour", "minute")
MAX_DEPTH = 15
# keywords that may change what a value is, beyond its ``type``: such a property is untyped (in _extra)
_SHAPING = frozenset({"oneOf", "anyOf", "allOf", "$ref", "$dynamicRef", "not", "if", "then", "else",
                      "dependentSchemas", "prefixItems"})
INT64 = (-(1 << 63), (1 << 63) - 1)
EXACT_FLOAT = 1 << 53

ID, PERIOD, RECEIVED_AT, EVENT_TIME = "_id", "_period", "_received_at", "_event_time"
REPLAYED, LATE, EXTRA = "_replayed", "_late", "_extra"
FERRY_COLUMNS = (ID, PERIOD, RECEIVED_AT, EVENT_TIME, REPLAYED, LATE)


@dataclass(frozen=True)
class Column:
    """One column (or struct field, or list item): its name, kind, and for structs/lists their parts."""

    name: str
    kind: str
    fields: tuple[Column, ...] = ()
    item: Column | None = None
    nullable: bool = True

    def describe(self) -> str:
        """``STRING``, ``STRUCT<a STRING, b INT64>``, ``LIST<TIMESTAMP>`` — for docs, CLI and web."""
        if self.kind == "struct":
            return "STRUCT<" + ", ".join(f"{f.name} {f.describe()}" for f in self.fields) + ">"
        if self.kind == "list":
            assert self.item is not None
            return f"LIST<{self.item.describe()}>"
        return SQL_TYPES[self.kind]


SQL_TYPES = {"string": "STRING", "integer": "INT64", "number": "FLOAT64", "boolean": "BOOL",
             "timestamp": "TIMESTAMP", "date": "DATE"}


@dataclass(frozen=True)
class Columns:
    """The columns of an event type: Ferry's own, the payload's typed ones, and ``_extra``."""

    payload: tuple[Column, ...]
    ferry: tuple[Column, ...] = field(default=(
        Column(ID, "string", nullable=False), Column(PERIOD, "timestamp", nullable=False),
        Column(RECEIVED_AT, "timestamp", nullable=False),
        Column(EVENT_TIME, "timestamp"), Column(REPLAYED, "boolean", nullable=False),
        Column(LATE, "boolean", nullable=False)))

    @property
    def all(self) -> tuple[Column, ...]:
        return (*self.ferry, *self.payload, Column(EXTRA, "string"))


def columns(schema: Any) -> Columns:
    """The columns of an event type whose payload schema is ``schema`` (a JSON Schema). Pure."""
    return Columns(_fields(schema, top=True, depth=0))


def _plain_type(schema: dict[str, Any]) -> str | None:
    t = schema.get("type")
    if isinstance(t, list):
        rest = [x for x in t if x != "null"]
        t = rest[0] if len(rest) == 1 and len(set(t)) == len(t) else None
    return t if isinstance(t, str) else None


def _fields(schema: Any, top: bool, depth: int) -> tuple[Column, ...]:
    if not isinstance(schema, dict) or _SHAPING & schema.keys() or _plain_type(schema) != "object":
        return ()
    props = schema.get("properties")
    if not isinstance(props, dict):
        return ()
    taken: set[str] = {k for k in PARTITION_KEYS} if top else set()
    chosen: dict[str, Column] = {}
    for name in sorted(props):
        if not NAME.match(name) or name.lower() in taken:
            continue
        col = _column(name, props[name], depth + 1)
        if col is not None:
            taken.add(name.lower())
            chosen[name] = col
    return tuple(chosen[n] for n in props if n in chosen)  # the schema's order


def _column(name: str, schema: Any, depth: int) -> Column | None:
    if not isinstance(schema, dict) or _SHAPING & schema.keys():
        return None
    t = _plain_type(schema)
    if t == "string":
        fmt = schema.get("format")
        return Column(name, "timestamp" if fmt == "date-time" else "date" if fmt == "date" else "string")
    if t in ("integer", "number", "boolean"):
        return Column(name, t)
    if t == "object":
        if depth > MAX_DEPTH:
            return None
        fields = _fields(schema, top=False, depth=depth)
        return Column(name, "struct", fields=fields) if fields else None
    if t == "array":
        items = schema.get("items")
        item = _column("item", items, depth) if isinstance(items, dict) else None
        if item is None or item.kind == "list":  # BigQuery has no arrays of arrays
            return None
        return Column(name, "list", item=item)
    return None


# ------------------------------------------------------------------------------------------ values

_EXACT = object()  # the column reproduces the value: nothing for _extra


def canonical_time(t: datetime) -> str:
    """How a TIMESTAMP reads back as a JSON string (RFC 3339, UTC, ``Z``, microseconds only if any)."""
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> datetime | None:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    return t.astimezone(UTC) if t.tzinfo is not None else None


def _value(col: Column, v: Any) -> tuple[Any, Any]:
    """(the column's value, what _extra must keep — ``_EXACT`` when nothing)."""
    k = col.kind
    if k == "string":
        return (v, _EXACT) if isinstance(v, str) else (None, v)
    if k == "boolean":
        return (v, _EXACT) if isinstance(v, bool) else (None, v)
    if k == "integer":
        if type(v) is int:
            return (v, _EXACT) if INT64[0] <= v <= INT64[1] else (None, v)
        if type(v) is float and v.is_integer() and INT64[0] <= v <= INT64[1]:
            return int(v), v
        return None, v
    if k == "number":
        if type(v) is float:
            return v, _EXACT
        if type(v) is int:
            return (float(v), _EXACT) if -EXACT_FLOAT <= v <= EXACT_FLOAT else (float(v), v)
        return None, v
    if k == "timestamp":
        t = parse_time(v) if isinstance(v, str) else None
        if t is None:
            return None, v
        return t, (_EXACT if canonical_time(t) == v else v)
    if k == "date":
        if not isinstance(v, str):
            return None, v
        try:
            d = date.fromisoformat(v)
        except ValueError:
            return None, v
        return d, (_EXACT if d.isoformat() == v else v)
    if k == "struct":
        if not isinstance(v, dict):
            return None, v
        out, extra = _object(col.fields, v)
        return out, (extra if extra else _EXACT)
    if k == "list":
        if not isinstance(v, list):
            return None, v
        assert col.item is not None
        items, exact = [], True
        for x in v:
            typed, ex = _value(col.item, x)
            if typed is None:
                return None, v
            items.append(typed)
            exact = exact and ex is _EXACT
        return items, (_EXACT if exact else v)
    raise ValueError(f"unknown column kind {k!r}")


def _object(fields: tuple[Column, ...], v: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for f in fields:
        if f.name in v:
            out[f.name], ex = _value(f, v[f.name])
            if ex is not _EXACT:
                extra[f.name] = ex
        else:
            out[f.name] = None
    if len(v) > len(out) or any(k not in out for k in v):
        for k, x in v.items():
            if k not in out:
                extra[k] = x
    return out, extra


def payload_row(cols: Columns, payload: Any) -> dict[str, Any]:
    """The payload columns and ``_extra`` (a JSON string, or None) of one payload. Pure."""
    if isinstance(payload, dict):
        out, extra = _object(cols.payload, payload)
        out[EXTRA] = _json(extra) if extra else None
        return out
    out = {f.name: None for f in cols.payload}
    out[EXTRA] = _json([payload])
    return out


def row(cols: Columns, event: dict[str, Any], period: datetime, late: bool = False) -> dict[str, Any]:
    """One stored event (``{id, type, time, received_at, replayed?, payload}``, as closing reads it) of
    the period starting at ``period`` as a row of ``cols``: Ferry's columns, then the payload's."""
    received = _parse_cached(event["received_at"])
    t = event.get("time")
    return {ID: event["id"], PERIOD: period, RECEIVED_AT: received,
            EVENT_TIME: _parse_cached(t) if isinstance(t, str) else None,
            REPLAYED: bool(event.get("replayed", False)), LATE: late, **payload_row(cols, event.get("payload"))}


@functools.lru_cache(maxsize=1024)  # an ingest request stamps one received_at on all its events
def _parse_cached(text: str) -> datetime | None:
    return parse_time(text)


def _json(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------------------- reading back


def _back(col: Column, typed: Any) -> Any:
    k = col.kind
    if k == "timestamp":
        return canonical_time(typed)
    if k == "date":
        return typed.isoformat()
    if k == "struct":
        return _back_object(col.fields, typed, {})
    if k == "list":
        assert col.item is not None
        return [_back(col.item, x) for x in typed]
    return typed


def _back_object(fields: tuple[Column, ...], values: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        t = values.get(f.name)
        if f.name in extra:
            e = extra[f.name]
            out[f.name] = _back_object(f.fields, t, e) if f.kind == "struct" and t is not None else e
        elif t is not None:
            out[f.name] = _back(f, t)
    names = {f.name for f in fields}
    out.update((k, x) for k, x in extra.items() if k not in names)
    return out


def payload(cols: Columns, values: dict[str, Any]) -> Any:
    """The payload a row was made from (its columns as read back, ``_extra`` as the JSON string). Pure."""
    extra = json.loads(values[EXTRA]) if values.get(EXTRA) else {}
    if isinstance(extra, list):
        return extra[0]
    return _back_object(cols.payload, values, extra)


# ------------------------------------------------------------------------------------------ BigQuery

BQ_TYPES = {"string": "STRING", "integer": "INTEGER", "number": "FLOAT", "boolean": "BOOLEAN",
            "timestamp": "TIMESTAMP", "date": "DATE", "struct": "RECORD"}


def bigquery_field(col: Column, repeated: bool = False) -> dict[str, Any]:
    """``col`` as a BigQuery ``TableFieldSchema`` (REST JSON: name, type, mode, fields)."""
    if col.kind == "list":
        assert col.item is not None
        return {**bigquery_field(col.item, repeated=True), "name": col.name}
    out: dict[str, Any] = {"name": col.name, "type": BQ_TYPES[col.kind],
                           "mode": "REPEATED" if repeated else "NULLABLE" if col.nullable else "REQUIRED"}
    if col.kind == "struct":
        out["fields"] = [bigquery_field(f) for f in col.fields]
    return out


def bigquery_schema(cols: Columns) -> list[dict[str, Any]]:
    """The table's fields (REST ``TableSchema.fields``), partition columns excluded."""
    return [bigquery_field(c) for c in cols.all]
