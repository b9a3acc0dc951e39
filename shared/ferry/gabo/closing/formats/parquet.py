"""Closed parts as Parquet, typed by the event type's columns (:mod:`ferry.gabo.tables.parquet` writes them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ferry.gabo.closing.formats import PartFormat, PartWriter
from ferry.gabo.delivery.sink import Sink
from ferry.gabo.tables import parquet


def parquet_parts(schema: Any, period: datetime) -> PartFormat:
    """Parquet parts typed by the columns of the payload schema ``schema``, for the period ``period``."""

    def make(sink: Sink, prefix: str, shard: str, max_bytes: int) -> PartWriter:
        return parquet.ParquetParts(sink.write, prefix, shard, schema, period, max_bytes)
    return make
