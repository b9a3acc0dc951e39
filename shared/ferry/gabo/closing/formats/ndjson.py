"""The NDJSON gzip format: staging objects and closed parts are gzip-compressed JSON lines."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterable


class GzipLines:
    """A gzip NDJSON object built line by line: memory holds the compressed bytes, and at most
    ``PENDING`` bytes of lines not yet handed to the compressor (a compressor call per few lines — a
    sharded batch spreads each pull over many objects — costs more than the copy)."""

    PENDING = 64 * 1024

    def __init__(self, level: int = 1) -> None:
        self._buf = io.BytesIO()
        self._gz = gzip.GzipFile(fileobj=self._buf, mode="wb", compresslevel=level, mtime=0)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.raw_bytes = 0

    def add(self, line: bytes) -> None:
        self.add_many([line])

    def add_many(self, lines: list[bytes]) -> None:
        """Several lines, compressed in one call once enough are pending."""
        if lines:
            self._pending += lines
            n = sum(map(len, lines)) + len(lines)
            self._pending_bytes += n
            self.raw_bytes += n
            if self._pending_bytes >= self.PENDING:
                self._compress()

    def _compress(self) -> None:
        if self._pending:
            self._gz.write(b"\n".join(self._pending) + b"\n")
            self._pending, self._pending_bytes = [], 0

    def finish(self) -> bytes:
        self._compress()
        self._gz.close()
        out = self._buf.getvalue()
        self._buf = io.BytesIO()
        return out


def gzip_lines(lines: Iterable[bytes], level: int = 1) -> bytes:
    """Compress line by line: memory holds the compressed output, never a second copy of the lines."""
    out = GzipLines(level)
    for ln in lines:
        out.add(ln)
    return out.finish()


def gunzip_lines(blob: bytes) -> list[bytes]:
    return [ln for ln in gzip.decompress(blob).split(b"\n") if ln]


