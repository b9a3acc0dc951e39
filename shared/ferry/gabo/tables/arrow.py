"""The columns of :mod:`ferry.gabo.tables.columns` as an Arrow schema, and rows as Arrow tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from ferry.gabo.tables.columns import Column, Columns

_SCALARS = {"string": pa.string(), "integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_(),
            "timestamp": pa.timestamp("us", tz="UTC"), "date": pa.date32()}


def arrow_type(col: Column) -> pa.DataType:
    if col.kind == "struct":
        return pa.struct([arrow_field(f) for f in col.fields])
    if col.kind == "list":
        assert col.item is not None
        return pa.list_(pa.field("element", arrow_type(col.item), nullable=False))
    return _SCALARS[col.kind]


def arrow_field(col: Column) -> pa.Field:
    return pa.field(col.name, arrow_type(col), nullable=col.nullable)


def arrow_schema(cols: Columns) -> pa.Schema:
    return pa.schema([arrow_field(c) for c in cols.all])


def table(schema: pa.Schema, rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows of :func:`ferry.gabo.tables.columns.row` as one Arrow table, column by column."""
    names = schema.names
    arrays = [pa.array([r[n] for r in rows], type=schema.field(n).type) for n in names]
    return pa.Table.from_arrays(arrays, schema=schema)
