from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

import ferry.api  # noqa: F401  (registers every router and apply hook)
from ferry.bootstrap import Services, in_memory
from ferry.clock import FixedClock
from ferry.domain.manifests import KINDS
from ferry.notify.secrets import LocalSecrets
from ferry.notify.sender import HttpSender
from ferry.notify.service import Notifier

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ROUTING_KEY = "R" * 32
PD_URL = "https://events.pagerduty.test/v2/enqueue"
STACK_SECRET = "the-stacks-own-operational-secret"


class Script:
    """An httpx transport answering each URL with scripted statuses (then 200), recording requests."""

    def __init__(self) -> None:
        self.statuses: dict[str, list[int]] = {}
        self.headers: dict[str, dict[str, str]] = {}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        url = str(request.url)
        queued = self.statuses.get(url)
        status = queued.pop(0) if queued else 200
        return httpx.Response(status, headers=self.headers.get(url, {}) if status != 200 else {}, text="x")

    def to(self, url: str) -> list[httpx.Request]:
        return [r for r in self.requests if str(r.url) == url]


def team(name: str, *channels: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "ferry/v1", "kind": "Team", "metadata": {"name": name},
            "spec": {"members": ["alice"], "channels": list(channels)}}


@pytest.fixture
def svc() -> Services:
    return in_memory(FixedClock(T0))


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def notifier(svc: Services, script: Script, sleeps: list[float]) -> Notifier:
    # team-a's own secrets (FERRY_SECRET_<TEAM>__<NAME>: docs/security.md, "Channel secrets")
    env = {"FERRY_SECRET_TEAM_A__HOOK": "https://hooks.example.test/ferry",
           "FERRY_SECRET_TEAM_A__SLACK": "https://hooks.slack.test/services/T/B/X",
           "FERRY_SECRET_TEAM_A__PD": ROUTING_KEY, "FERRY_STACK_SECRET": STACK_SECRET,
           "FERRY_SECRET_TEAM_B__HOOK": "https://hooks.team-b.test/b"}
    sender = HttpSender(httpx.Client(transport=httpx.MockTransport(script)), sleep=sleeps.append)
    return Notifier(svc.store, svc.publisher, LocalSecrets("/nonexistent", env), svc.clock, sender, PD_URL)


def apply(svc: Services, *docs: dict[str, Any]) -> None:
    svc.apply.apply([KINDS[d["kind"]].model_validate(d) for d in docs], svc.clock.now(), None)  # type: ignore[arg-type]
