"""Workflows are told their inputs: the landed partitions of each ``depends_on`` endpoint and where they
are, in documented variables — and a job reads its input through them alone (the local launcher, a real
process, an environment holding nothing of the stack's)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ferry.gabo.tables import parquet
from ferry.styx.launchers.local import LocalLauncher

from .conftest import apply, workflow

REPO = Path(__file__).resolve().parents[3]
SCHEMA = {"type": "object", "properties": {"user_id": {"type": "string"}, "button": {"type": "string"}}}


def event_type(name: str) -> dict:
    return {"apiVersion": "ferry/v1", "kind": "EventType", "metadata": {"name": name, "owner": "team-a"},
            "spec": {"schema": SCHEMA, "partitioning": "PT1M", "close_after": "PT10S"}}


def closed_period(root: Path, start: datetime, users: list[str]) -> str:
    prefix = f"events/demo-click/dt={start:%Y-%m-%d}/hour={start:%H}/minute={start:%M}/"

    def write(key: str, data: bytes) -> None:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    parts = parquet.ParquetParts(write, prefix, "0", SCHEMA, start, 1 << 30)
    for i, u in enumerate(users):
        parts.add(json.dumps({"id": f"c{i}", "type": "demo-click", "time": None, "received_at": "2026-11-26T13:00:01Z",
                              "payload": {"user_id": u, "button": "play"}}).encode())
    parts.close()
    write(prefix + "_SUCCESS", b"{}")
    return f"file://{root / prefix}"


def test_an_execution_is_told_where_its_landed_inputs_are_and_reads_them_alone(
        svc, clock, tick, launcher, datamon, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    apply(svc, event_type("demo-click"), workflow("counter", schedule="* * * * *", depends_on=["events.demo-click"],
                                                  command=["python", str(REPO / "examples/gabo/count_clicks.py")],
                                                  args=["{}"]))
    start = datetime(2026, 11, 26, 13, 0, tzinfo=UTC)
    location = closed_period(tmp_path / "sink", start, ["u1", "u2", "u1"])
    datamon.land("events.demo-click", "2026-11-26T13:00", now=start, source="styx", location=location)
    clock.set(start + timedelta(minutes=1, seconds=5))
    tick()
    spec = next(s for s in launcher.launched if s.parameter == "2026-11-26T13:00")
    assert spec.env["FERRY_INPUT_EVENTS_DEMO_CLICK"] == location
    assert spec.env["FERRY_INPUT_EVENTS_DEMO_CLICK_PARTITIONS"] == "2026-11-26T13:00"
    assert spec.env["FERRY_INPUT_EVENTS_DEMO_CLICK_TABLE"] == "events.demo_click"
    assert json.loads(spec.env["FERRY_INPUTS"]) == [{"endpoint": "events.demo-click", "partitions": ["2026-11-26T13:00"],
                                                     "locations": [location], "table": "events.demo_click"}]

    # the same spec, run for real by the local launcher, in a process that sees none of the stack
    monkeypatch.setenv("FERRY_STACK_SECRET", "s3cret")
    monkeypatch.setenv("FERRY_SINK", f"file://{tmp_path / 'sink'}")
    local = LocalLauncher(tmp_path / "logs", workdir=str(tmp_path))
    launched = local.launch(spec)
    end = time.monotonic() + 120
    while (status := local.poll(launched.handle)).phase != "ended":
        assert time.monotonic() < end
        time.sleep(0.1)
    log = (Path(launched.handle) / "log").read_text()
    assert status.exit_code == 0, log
    assert "user u1: 2 event(s)" in log and "user u2: 1 event(s)" in log, log
    assert "the stack's secret visible: False" in log
