from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime
from typing import Any

import pytest

import ferry.styx  # noqa: F401  (registers the apply hook)
from ferry.clock import FixedClock
from ferry.domain.manifests import KINDS
from ferry.styx.launchers import Launched, LaunchSpec, Status
from ferry.styx.tick import Tick, TickLimits
from ferry.wiring import Services

T0 = datetime(2026, 11, 26, 12, 0, 30, tzinfo=UTC)


class FakeLauncher:
    """A hand-written launcher fake: executions run until a test ends them."""

    def __init__(self) -> None:
        self.launched: list[LaunchSpec] = []
        self.status: dict[str, Status] = {}
        self.cancelled: list[str] = []
        self.fail_next: str | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def launch(self, spec: LaunchSpec) -> Launched:
        from ferry.errors import InfraError

        with self._lock:
            if self.fail_next:
                msg, self.fail_next = self.fail_next, None
                raise InfraError(msg)
            self.launched.append(spec)
            handle = f"exec-{next(self._ids)}"
            self.status[handle] = Status("running")
            return Launched(handle, f"fake://{handle}")

    def poll(self, handle: str) -> Status:
        return self.status[handle]

    def cancel(self, handle: str) -> None:
        self.cancelled.append(handle)
        self.status[handle] = Status("ended", None, "cancelled")

    def logs(self, handle: str, limit: int = 200) -> list[str]:
        return [f"log of {handle}"]

    def finish(self, spec: LaunchSpec, code: int) -> None:
        handle = f"exec-{self.launched.index(spec) + 1}"
        self.status[handle] = Status("ended", code)

    def running(self) -> list[LaunchSpec]:
        return [s for i, s in enumerate(self.launched) if self.status[f"exec-{i + 1}"].phase == "running"]


class FakeDatamon:
    def __init__(self) -> None:
        self.partitions: set[tuple[str, str]] = set()
        self.landings: list[tuple[str, str]] = []

    def landed(self, services: Services, endpoint: str, partitions: Any) -> set[str]:
        return {p for p in partitions if (endpoint, p) in self.partitions}

    def land(self, services: Services, endpoint: str, partition: str, *, now: datetime, source: str) -> None:
        assert source == "styx"
        self.partitions.add((endpoint, partition))
        self.landings.append((endpoint, partition))


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def svc(clock: FixedClock) -> Services:
    return Services.in_memory(clock)


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
def datamon() -> FakeDatamon:
    return FakeDatamon()


@pytest.fixture
def tick(svc: Services, launcher: FakeLauncher, datamon: FakeDatamon):
    def run(limits: TickLimits | None = None):
        t = Tick(svc, launcher, datamon.landed, datamon.land, limits or TickLimits(max_active=100))
        return t.run(svc.clock.now())
    return run


@pytest.fixture
def styx(svc: Services, launcher: FakeLauncher, datamon: FakeDatamon):
    from ferry.styx.service import StyxService

    return StyxService(svc, launcher, datamon.landed, datamon.land)


def workflow(name: str, owner: str = "team-a", **spec: Any) -> dict[str, Any]:
    base = {"schedule": "hourly", "image": "img:1", "command": ["python", "job.py"], "args": ["--p", "{}"],
            "retry": {"max_tries": 3, "initial_backoff": "PT1M", "max_backoff": "PT10M"}}
    return {"apiVersion": "ferry/v1", "kind": "Workflow", "metadata": {"name": name, "owner": owner},
            "spec": {**base, **spec}}


def resource(name: str, concurrency: int) -> dict[str, Any]:
    return {"apiVersion": "ferry/v1", "kind": "Resource", "metadata": {"name": name},
            "spec": {"concurrency": concurrency}}


def apply(svc: Services, *docs: dict[str, Any], actor: str | None = None) -> Any:
    manifests = [KINDS[d["kind"]].model_validate(d) for d in docs]
    return svc.apply.apply(manifests, svc.clock.now(), actor)  # type: ignore[arg-type]
