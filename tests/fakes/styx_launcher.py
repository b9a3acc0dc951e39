"""Hand-written fakes for Styx tests: a launcher whose executions run until the test ends them, and
Datamon's port."""

from __future__ import annotations

import itertools
import threading
from datetime import datetime
from typing import Any

from ferry.styx.launchers import Launched, LaunchSpec, Status


class FakeLauncher:
    """A hand-written launcher fake: executions run until a test ends them."""

    def __init__(self) -> None:
        self.launched: list[LaunchSpec] = []
        self.status: dict[str, Status] = {}
        self.cancelled: list[str] = []
        self.lines: dict[str, list[str]] = {}  # what an execution wrote (tests set it)
        self.fail_next: str | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def launch(self, spec: LaunchSpec) -> Launched:
        from ferry.errors import InfraError

        with self._lock:
            if self.fail_next:
                msg, self.fail_next = self.fail_next, None
                raise InfraError(msg)
            for i, s in enumerate(self.launched):  # one execution per execution id, as the contract says
                if s.workflow == spec.workflow and s.execution_id == spec.execution_id:
                    return Launched(f"exec-{i + 1}", f"fake://exec-{i + 1}")
            self.launched.append(spec)
            handle = f"exec-{next(self._ids)}"
            self.status[handle] = Status("running")
            return Launched(handle, f"fake://{handle}")

    def find(self, workflow: str, execution_id: str) -> Launched | None:
        with self._lock:
            for i, s in enumerate(self.launched):
                if s.workflow == workflow and s.execution_id == execution_id:
                    return Launched(f"exec-{i + 1}", f"fake://exec-{i + 1}")
        return None

    def poll(self, handle: str) -> Status:
        return self.status[handle]

    def cancel(self, handle: str) -> None:
        self.cancelled.append(handle)
        self.status[handle] = Status("ended", None, "cancelled")

    def logs(self, handle: str, limit: int = 200) -> list[str]:
        return self.lines.get(handle, [f"log of {handle}"])[-limit:]

    def finish(self, spec: LaunchSpec, code: int) -> None:
        handle = f"exec-{self.launched.index(spec) + 1}"
        self.status[handle] = Status("ended", code)

    def running(self) -> list[LaunchSpec]:
        return [s for i, s in enumerate(self.launched) if self.status[f"exec-{i + 1}"].phase == "running"]


class FakeDatamon:
    """Datamon's port (``ferry.datamon.port.Datamon``): partitions land when a test (or ``source``) says so."""

    def __init__(self, source: str = "styx") -> None:
        self.source = source
        self.partitions: set[tuple[str, str]] = set()
        self.landings: list[tuple[str, str]] = []
        self.where: dict[tuple[str, str], str | None] = {}

    def landed(self, endpoint: str, partitions: Any) -> set[str]:
        return {p for p in partitions if (endpoint, p) in self.partitions}

    def land(self, endpoint: str, partition: str, *, now: datetime, source: str = "api",
             **stats: Any) -> dict[str, Any]:
        assert source == self.source
        self.partitions.add((endpoint, partition))
        self.landings.append((endpoint, partition))
        self.where[(endpoint, partition)] = stats.get("location")
        return {"endpoint": endpoint, "partition": partition}

    def locations(self, endpoint: str, partitions: Any) -> dict[str, str | None]:
        return {p: self.where.get((endpoint, p)) for p in partitions if (endpoint, p) in self.partitions}

    def invalidate(self, endpoint: str, partition: str, *, reason: str, actor: str | None, now: datetime,
                   check: bool = True) -> dict[str, Any]:
        was = (endpoint, partition) in self.partitions
        self.partitions.discard((endpoint, partition))
        return {"endpoint": endpoint, "partition": partition, "invalidated": was, "reason": reason}

    def consumers(self, endpoint: str) -> list[tuple[str, str | None]]:
        return []
