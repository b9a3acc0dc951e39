"""Delivered events people can query, on the local stack: ingest → delivery → close (Parquet) → `ferry query`.

Events with nested objects, arrays, timestamps and a field the schema never named; the test computes
per-key counts and every field from its own input and compares them with what `ferry query` answers
over the closed period; a period not yet closed is invisible. Then schema evolution at apply: removing
a field is refused, adding one is accepted and queryable in new periods while old ones still read.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from e2e.test_gabo import PT1M, VirtualClock, cli, close_until, deliver_until, t0
from ferry.gabo.envelopes import iso
from ferry.gabo.names import final_prefix
from ferry.gabo.tables.columns import canonical_time
from ferry.gabo.tables.query import table_name

pytestmark = pytest.mark.emulator

SCHEMA = {"type": "object", "required": ["user_id", "at"], "properties": {
    "user_id": {"type": "string"}, "at": {"type": "string", "format": "date-time"},
    "score": {"type": "number"}, "clicks": {"type": "integer"},
    "device": {"type": "object", "properties": {"os": {"type": "string"}, "version": {"type": "integer"}}},
    "tags": {"type": "array", "items": {"type": "string"}}}}


def apply(stack: Any, name: str, schema: dict[str, Any], exit_code: int = 0, **extra: Any) -> Any:
    manifest = {"apiVersion": "ferry/v1", "kind": "EventType", "metadata": {"name": name, "owner": "team-e2e"},
                "spec": {"schema": schema, "partitioning": "PT1M", "close_after": "PT10S", **extra}}
    path = stack.home / f"{name}.json"
    path.write_text(json.dumps(manifest))
    return cli(stack, "apply", "-f", str(path), exit_code=exit_code)


def payload(i: int) -> dict[str, Any]:
    return {"user_id": f"u{i % 7}", "at": f"2026-12-07T10:{i % 60:02d}:00Z", "score": i / 4, "clicks": i,
            "device": {"os": ["ios", "android"][i % 2], "version": i % 5, "model": f"m{i % 3}"},
            "tags": [f"t{j}" for j in range(i % 3)], "campaign": {"id": f"c{i % 4}", "n": i}}


def send(stack: Any, name: str, events: list[dict[str, Any]], at: str) -> None:
    body = "\n".join(json.dumps({"type": name, **e}) for e in events)
    sent = cli(stack, "send", name, "-", now=at, input=body)
    assert sent["accepted"] == len(events), sent


def query(stack: Any, sql: str, exit_code: int = 0) -> Any:
    return cli(stack, "query", sql, "--max-rows", "10000", exit_code=exit_code)


def test_events_through_close_to_ferry_query(stack: Any) -> None:
    name = f"tbl-{uuid.uuid4().hex[:6]}"
    table = f"events.{table_name(name)}"
    apply(stack, name, SCHEMA)
    start = t0()
    events = [{"id": f"e{i}", "payload": payload(i)} for i in range(3000)]
    send(stack, name, events, iso(start))
    later = [{"id": f"late{i}", "payload": payload(i)} for i in range(50)]  # the next period: not closed
    send(stack, name, later, iso(start + timedelta(minutes=1)))
    clock = VirtualClock(start + timedelta(seconds=70))
    deliver_until(stack, name, clock, lambda rs: sum(r["written"] for r in rs) >= 3050 and rs[-1]["drained"])
    period = start.replace(second=0)
    marker = close_until(stack, name, period, clock)
    assert marker["events"] == 3000
    assert list((stack.home / "sink" / final_prefix(name, period, PT1M)).glob("part-*.parquet"))

    # per-key counts equal to what this test computes from its input; the unclosed period is invisible
    want = Counter(e["payload"]["user_id"] for e in events)
    got = query(stack, f"SELECT user_id, count(*) AS n FROM {table} GROUP BY 1 ORDER BY 1")
    assert got["columns"] == ["user_id", "n"]
    assert {r[0]: r[1] for r in got["rows"]} == dict(want)
    assert query(stack, f"SELECT count(*) FROM {table} WHERE _id LIKE 'late%'")["rows"] == [[0]]
    by_os = query(stack, f"SELECT device.os, count(*) FROM {table} GROUP BY 1 ORDER BY 1")["rows"]
    assert by_os == [[k, v] for k, v in sorted(Counter(e["payload"]["device"]["os"] for e in events).items())]

    # every field value equal; the unknown field recoverable from _extra
    rows = query(stack, f'SELECT _id, user_id, "at", score, clicks, device, tags, _extra, _period FROM {table} '
                        "ORDER BY _id")["rows"]
    assert len(rows) == 3000
    sent = {e["id"]: e["payload"] for e in events}
    for _id, user_id, at, score, clicks, device, tags, extra, per in rows:
        p = sent[_id]
        assert (user_id, at, score, clicks, tags) == (p["user_id"], p["at"], p["score"], p["clicks"], p["tags"])
        assert device == {"os": p["device"]["os"], "version": p["device"]["version"]}
        assert json.loads(extra) == {"campaign": p["campaign"], "device": {"model": p["device"]["model"]}}
        assert per == canonical_time(period)
    one = query(stack, f"SELECT _extra->>'$.campaign.id' FROM {table} WHERE _id = 'e5'")["rows"]
    assert one == [["c1"]]


def test_schema_evolution_refuses_removal_and_widens_on_addition(stack: Any) -> None:
    name = f"evo-{uuid.uuid4().hex[:6]}"
    table = f"events.{table_name(name)}"
    apply(stack, name, SCHEMA)
    start = t0() + timedelta(minutes=5)
    send(stack, name, [{"id": f"a{i}", "payload": payload(i)} for i in range(20)], iso(start))

    removed = {**SCHEMA, "properties": {k: v for k, v in SCHEMA["properties"].items() if k != "score"}}
    refused = apply(stack, name, removed, exit_code=3)
    assert "score" in json.dumps(refused) and "removed" in json.dumps(refused)
    retyped = {**SCHEMA, "properties": {**SCHEMA["properties"], "clicks": {"type": "string"}}}
    assert "clicks" in json.dumps(apply(stack, name, retyped, exit_code=3))

    clock = VirtualClock(start + timedelta(seconds=70))
    deliver_until(stack, name, clock, lambda rs: sum(r["written"] for r in rs) >= 20 and rs[-1]["drained"])
    close_until(stack, name, start.replace(second=0), clock)

    added = {**SCHEMA, "properties": {**SCHEMA["properties"], "country": {"type": "string"}}}
    apply(stack, name, added)
    nxt = start + timedelta(minutes=1)
    send(stack, name, [{"id": f"b{i}", "payload": {**payload(i), "country": "SE"}} for i in range(10)], iso(nxt))
    clock = VirtualClock(nxt + timedelta(seconds=70))
    deliver_until(stack, name, clock, lambda rs: sum(r["written"] for r in rs) >= 10 and rs[-1]["drained"])
    close_until(stack, name, nxt.replace(second=0), clock)
    rows = query(stack, f"SELECT country, count(*) FROM {table} GROUP BY 1 ORDER BY 1 NULLS FIRST")["rows"]
    assert rows == [[None, 20], ["SE", 10]]
