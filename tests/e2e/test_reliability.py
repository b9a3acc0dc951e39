"""Reliability on the local stack: bad events are their own rejections; nothing accepted is lost or
closed as complete without it; the stack heals what it lost. Every check counts ids in the final
partitions."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest

from ferry.gabo import core

from .test_gabo import SCHEMA, VirtualClock, apply_type, cli, deliver_until, final_ids, t0

pytestmark = pytest.mark.emulator


def test_one_malformed_event_of_each_kind_among_99_valid_ones(stack: Any) -> None:
    name = f"iso-{uuid.uuid4().hex[:6]}"
    # track_ids are matched by a pattern that backtracks catastrophically on Python's engine
    schema = {**SCHEMA, "properties": {**SCHEMA["properties"],
                                       "track_id": {"type": "string", "pattern": "^(t+)+[0-9]*$"}}}
    apply_type(stack, name, schema=schema, max_event_bytes=512)
    start_t = t0()
    valid = [{"type": name, "id": f"e{i}", "payload": {"track_id": f"t{i}", "ms_played": i}} for i in range(99)]
    nested = "[" * 1000 + "]" * 1000
    deep = f'{{"type":"{name}","id":"deep","payload":{{"track_id":"t","ms_played":1,"x":{nested}}}}}'
    bad = [json.dumps({"type": "a/b", "id": "slash", "payload": {}}), deep,
           json.dumps({"type": name, "id": "big", "payload": {"track_id": "t", "ms_played": 1, "x": "y" * 600}}),
           json.dumps({"type": name, "id": "schema", "payload": {"track_id": "t", "ms_played": -1}}),
           json.dumps({"type": name, "id": "regex", "payload": {"track_id": "t" * 30 + "!", "ms_played": 1}})]
    lines = [json.dumps(v) for v in valid[:40]] + bad + [json.dumps(v) for v in valid[40:]]
    started = time.monotonic()
    sent = cli(stack, "send", name, "-", now=core.iso(start_t), input="\n".join(lines), exit_code=3)
    took = time.monotonic() - started
    assert (sent["received"], sent["accepted"], sent["rejected_count"]) == (104, 99, 5), sent
    reasons = {x["line"]: x["reason"] for x in sent["rejected"]}  # line numbers of the input, from 1
    assert "not an event type name" in reasons[41] and "deeper than 64" in reasons[42]
    assert "max_event_bytes" in reasons[43] and "ms_played" in reasons[44] and "does not match" in reasons[45]
    assert took < 30, took  # the catastrophic pattern alone took seconds per event on the old engine

    clock = VirtualClock(start_t + timedelta(seconds=70))
    deliver_until(stack, name, clock, lambda rs: sum(r["written"] for r in rs) >= 99 and rs[-1]["drained"])
    cli(stack, "close", name, now=clock.iso(plus_s=20))
    ids, marker = final_ids(stack, name, start_t.replace(second=0))
    assert sorted(ids) == sorted(v["id"] for v in valid) and marker["events"] == 99


def test_apply_refuses_a_schema_ingest_could_not_evaluate(stack: Any, tmp_path: Any) -> None:
    for schema, reason in [({"$ref": "#/$defs/nowhere"}, "does not resolve"),
                           ({"properties": {"w": {"pattern": "(a)\\1"}}}, "linear-time engine")]:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps({"kind": "EventType", "metadata": {"name": "bad-schema", "owner": "team-e2e"},
                                    "spec": {"schema": schema}}))
        r = stack.cli("apply", "-f", str(path))
        assert r.returncode == 3 and reason in r.stdout + r.stderr, (r.stdout, r.stderr)
