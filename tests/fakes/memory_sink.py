"""An in-memory Sink (``ferry.gabo.delivery.sink.Sink``) for fast property tests: what LocalSink and
GcsSink promise — a write replaces the object whole, ``list`` is sorted keys by prefix, ``read`` of a
missing key is NotFound, ``delete`` is idempotent — without a disk's fsyncs."""

from __future__ import annotations

import threading

from ferry.errors import NotFound


class MemorySink:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def write(self, key: str, data: bytes) -> None:
        with self._lock:
            self.objects[key] = bytes(data)

    def read(self, key: str) -> bytes:
        with self._lock:
            if key not in self.objects:
                raise NotFound(f"mem://{key} does not exist")
            return self.objects[key]

    def list(self, prefix: str) -> list[str]:
        with self._lock:
            return sorted(k for k in self.objects if k.startswith(prefix))

    def exists(self, key: str) -> bool:
        with self._lock:
            return key in self.objects

    def delete(self, key: str) -> None:
        with self._lock:
            self.objects.pop(key, None)

    def uri(self, key: str) -> str:
        return f"mem://{key}"
