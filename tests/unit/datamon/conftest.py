from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ferry.bootstrap import Services, in_memory
from ferry.clock import FixedClock
from ferry.domain.manifests import KINDS

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def endpoint(name: str, owner: str = "team-a", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "ferry/v1", "kind": "Endpoint", "metadata": {"name": name, "owner": owner},
            "spec": spec}


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def svc(clock: FixedClock) -> Services:
    return in_memory(clock)


def apply(svc: Services, *docs: dict[str, Any], actor: str | None = None) -> None:
    manifests = [KINDS[d["kind"]].model_validate(d) for d in docs]
    svc.apply.apply(manifests, svc.clock.now(), actor)  # type: ignore[arg-type]
