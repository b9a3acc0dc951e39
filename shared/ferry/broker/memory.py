"""In-memory publisher for unit tests: remembers what was published per topic."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence

from ferry.broker.base import Message


class MemoryPublisher:
    def __init__(self) -> None:
        self.topics: dict[str, list[Message]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def publish(self, topic: str, messages: Sequence[Message]) -> list[str]:
        with self._lock:
            self.topics.setdefault(topic, []).extend(messages)
            return [str(next(self._ids)) for _ in messages]

    def take(self, topic: str) -> list[Message]:
        with self._lock:
            return self.topics.pop(topic, [])
