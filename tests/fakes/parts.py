"""Reading a closed period's parts in either format (``spec.format``: Parquet or gzip NDJSON) as lines."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from ferry.gabo.tables import parquet


def is_part(path: Path) -> bool:
    return path.name.startswith("part-") and path.name.endswith((".parquet", ".jsonl.gz"))


def part_lines(path: Path) -> list[bytes]:
    """The events of one part as JSON lines (Parquet rows as the event they were made from)."""
    if path.name.endswith(parquet.EXTENSION):
        return [json.dumps(e, separators=(",", ":")).encode() for e in parquet.events(path.read_bytes())]
    return gzip.decompress(path.read_bytes()).splitlines()


def parts(directory: Path, pattern: str = "part-*") -> list[Path]:
    return sorted(p for p in directory.glob(pattern) if is_part(p))
