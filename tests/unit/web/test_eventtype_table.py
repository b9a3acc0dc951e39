"""The event type page shows its table: the columns derived from the schema and rows of the newest closed period."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from ferry.bootstrap import in_memory
from ferry.clock import FixedClock
from ferry.domain.manifests import KINDS
from ferry.gabo.delivery.sink import LocalSink
from ferry.gabo.tables import parquet
from ferry.web.app import handle

SCHEMA = {"type": "object", "properties": {"user_id": {"type": "string"},
                                           "device": {"type": "object", "properties": {"os": {"type": "string"}}}}}


def test_the_page_shows_columns_and_a_sample_of_the_newest_closed_period(tmp_path: Path) -> None:
    clock = FixedClock(datetime(2026, 12, 7, 12, tzinfo=UTC))
    svc = in_memory(clock, sink=LocalSink(tmp_path / "sink"))
    et = KINDS["EventType"].model_validate({"apiVersion": "ferry/v1", "kind": "EventType",
                                            "metadata": {"name": "demo-click", "owner": "team-a"},
                                            "spec": {"schema": SCHEMA, "partitioning": "hourly"}})
    svc.apply.apply([et], clock.now())  # type: ignore[list-item]
    for hour, users in ((10, ["old"]), (11, ["u1", "u2"])):
        start = datetime(2026, 12, 7, hour, tzinfo=UTC)
        prefix = f"events/demo-click/dt=2026-12-07/hour={hour}/"

        def write(key: str, data: bytes) -> None:
            (tmp_path / "sink" / key).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "sink" / key).write_bytes(data)
        parts = parquet.ParquetParts(write, prefix, "", SCHEMA, start, 1 << 30)
        for i, u in enumerate(users):
            parts.add(json.dumps({"id": f"{u}-{i}", "type": "demo-click", "time": None,
                                  "received_at": f"2026-12-07T{hour}:00:0{i}Z",
                                  "payload": {"user_id": u, "device": {"os": "ios"}}}).encode())
        parts.close()
        write(prefix + "_SUCCESS", b"{}")
    reply = handle(svc, "GET", "/eventtypes/demo-click", {}, {"X-Ferry-User": "alice@example.com"})
    assert reply.status == 200
    assert "Table events.demo_click (parquet)" in reply.body
    assert "<td>device</td><td>STRUCT&lt;os STRING&gt;</td>" in reply.body and "<td>_extra</td>" in reply.body
    sample = reply.body[reply.body.index('id="sample"'):]
    assert "u1-0" in sample and "u2-1" in sample and "old-0" not in sample
