"""Styx takes what it uses: its service and its tick run on a store, a launcher, Datamon's port and an
authorizer and a publisher (its failure alerts) — fakes of those, and nothing of the composition root."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from fakes.styx_launcher import FakeDatamon, FakeLauncher
from ferry.broker.base import Message
from ferry.domain.manifests import KINDS
from ferry.services.authz import Authorizer
from ferry.store.manifests import ManifestRepository
from ferry.store.memory import MemoryStore
from ferry.styx import machine as m
from ferry.styx.service import StyxService
from ferry.styx.tick import Tick, TickLimits

from .conftest import workflow

T0 = datetime(2026, 11, 26, 12, 0, 30, tzinfo=UTC)


class Published:
    """A hand-written Publisher fake: what was published, per topic."""

    def __init__(self) -> None:
        self.topics: dict[str, list[Message]] = {}

    def publish(self, topic: str, messages: Sequence[Message]) -> list[str]:
        got = self.topics.setdefault(topic, [])
        got.extend(messages)
        return [str(i) for i in range(len(got) - len(messages), len(got))]


def test_styx_runs_an_instance_on_its_own_fakes() -> None:
    store, launcher, datamon = MemoryStore(), FakeLauncher(), FakeDatamon()
    manifest = KINDS["Workflow"].model_validate(workflow("agg"))
    store.write([ManifestRepository.op_for(ManifestRepository.record_for(manifest, None, T0))])
    styx = StyxService(store, launcher, datamon, Authorizer(ManifestRepository(store)), Published())

    styx.trigger("agg", "2026-11-26T11", T0, actor="alice@example.com")
    report = Tick(styx, TickLimits(max_active=10)).run(T0)
    assert report.submitted == 1
    assert [s.args for s in launcher.launched] == [["--p", "2026-11-26T11"]]
    assert styx.instance("agg", "2026-11-26T11").state == m.State.SUBMITTED
