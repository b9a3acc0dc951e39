"""Deployed, a closed period is loaded into its table after its _SUCCESS, and apply provisions the table."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ferry.domain.manifests import EventType
from ferry.gabo.delivery.service import WorkOrder
from ferry.gabo.tables import bigquery

from .test_gabo_service import SCHEMA, T0, body, env, ev  # noqa: F401  (the env fixture)


class FakeTables:
    def __init__(self, sink_root: Path | None = None) -> None:
        self.sink_root = sink_root
        self.loads: list[tuple[str, datetime, timedelta, list[str], bool]] = []
        self.ensured: list[tuple[str, Any, timedelta]] = []

    def ensure_table(self, event_type: str, payload_schema: Any, width: timedelta) -> str:
        self.ensured.append((event_type, payload_schema, width))
        return "created"

    def load_period(self, event_type: str, start: datetime, width: timedelta, uris: list[str]) -> str:
        success = any(Path(u.removeprefix("file://")).with_name("_SUCCESS").exists() for u in uris)
        self.loads.append((event_type, start, width, list(uris), success))
        return "job"


def test_a_closed_period_is_loaded_after_its_success_and_the_shadow_never(env: Any) -> None:  # noqa: F811
    svc, g, broker, lands, clock = env
    g.tables = FakeTables()
    g.ingest(body([ev(i) for i in range(20)]), T0)
    clock.set(T0 + timedelta(minutes=1))  # delivery drains after the period's end: the watermark passes it
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5, stream="darkload"))
    clock.set(T0 + timedelta(minutes=2))
    g.close(clock.now())
    [(name, start, width, uris, success)] = g.tables.loads
    assert (name, width) == ("play", timedelta(minutes=1)) and start.minute == 5
    assert uris and all(u.endswith(".parquet") and "/darkload/" not in u for u in uris)
    assert success  # loaded only once _SUCCESS was written: a query never sees a partial period


def test_apply_provisions_the_table_when_deployed(env: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    svc, g, broker, lands, clock = env
    fake = FakeTables()
    monkeypatch.setattr(bigquery, "from_settings", lambda settings: fake)  # the root asks it for the hook's tables
    et = EventType.model_validate({"metadata": {"name": "clicks", "owner": "team-a"},
                                   "spec": {"schema": SCHEMA, "partitioning": "hourly"}})
    svc.apply.apply([et], T0)
    assert fake.ensured == [("clicks", SCHEMA, timedelta(hours=1))]
    nd = EventType.model_validate({"metadata": {"name": "raw", "owner": "team-a"},
                                   "spec": {"schema": SCHEMA, "format": "ndjson"}})
    svc.apply.apply([nd], T0)
    assert [e[0] for e in fake.ensured] == ["clicks"]  # an NDJSON type has no table
