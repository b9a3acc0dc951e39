"""The file formats a closed partition is written in: a format is a ``PartFormat``, which makes the
``PartWriter`` of one shard (NDJSON: ``closing.merge.ndjson_parts``; Parquet: ``formats.parquet``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ferry.gabo.delivery.sink import Sink


class PartWriter(Protocol):
    """Where a shard's winning lines go: ``add`` each (``late``: from a ``late-`` object), ``close`` for
    the names of the parts written."""

    def add(self, line: bytes, late: bool = False) -> None: ...

    def close(self) -> list[str]: ...


# (sink, prefix, shard, max_part_bytes) -> the part writer of one shard
PartFormat = Callable[[Sink, str, str, int], PartWriter]
