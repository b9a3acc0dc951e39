from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fakes.styx_launcher import FakeDatamon, FakeLauncher
from ferry.bootstrap import Services, in_memory
from ferry.clock import FixedClock
from ferry.domain.manifests import KINDS
from ferry.styx.tick import Tick, TickLimits

T0 = datetime(2026, 11, 26, 12, 0, 30, tzinfo=UTC)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
def datamon() -> FakeDatamon:
    return FakeDatamon()


@pytest.fixture
def svc(clock: FixedClock, launcher: FakeLauncher, datamon: FakeDatamon) -> Services:
    return in_memory(clock, launcher=launcher, datamon=datamon)


@pytest.fixture
def tick(svc: Services):
    def run(limits: TickLimits | None = None):
        t = Tick(svc.styx, limits or TickLimits(max_active=100))
        return t.run(svc.clock.now())
    return run


@pytest.fixture
def styx(svc: Services):
    return svc.styx


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
