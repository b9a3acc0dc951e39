"""Reliability on the local stack: bad events are their own rejections; nothing accepted is lost or
closed as complete without it; the stack heals what it lost. Every check counts ids in the final
partitions."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from ferry.gabo.envelopes import iso

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
    sent = cli(stack, "send", name, "-", now=iso(start_t), input="\n".join(lines), exit_code=3)
    took = time.monotonic() - started
    assert (sent["received"], sent["accepted"], sent["rejected_count"]) == (104, 99, 5), sent
    reasons = {x["line"]: x["reason"] for x in sent["rejected"]}  # line numbers of the input, from 1
    assert "not an event type name" in reasons[41] and "deeper than 64" in reasons[42]
    assert "max_event_bytes" in reasons[43] and "ms_played" in reasons[44] and "fails pattern" in reasons[45]  # the rule, never the value
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


def _send(stack: Any, name: str, ids: list[str], at: datetime) -> dict[str, Any]:
    lines = [json.dumps({"type": name, "id": i, "payload": {"track_id": f"t{i}", "ms_played": 1}}) for i in ids]
    return cli(stack, "send", name, "-", now=iso(at), input="\n".join(lines))


def test_deleting_a_type_with_a_backlog_is_refused_and_drain_lands_every_id_once(stack: Any) -> None:
    name = f"del-{uuid.uuid4().hex[:6]}"
    apply_type(stack, name)
    start_t = t0()
    ids = [f"e{i}" for i in range(3000)]
    assert _send(stack, name, ids, start_t)["accepted"] == 3000
    env = dict(stack.env, FERRY_NOW=iso(start_t + timedelta(seconds=70)))  # the period has ended
    refused = stack.cli("delete", "eventtype", name)
    text = refused.stdout + refused.stderr
    assert refused.returncode == 3, text
    assert "3,000 accepted events in 1 period(s) not closed" in text and "3,000 not delivered" in text, text
    # still there, still delivering
    assert stack.cli("get", "eventtype", name).returncode == 0
    import subprocess

    drained = subprocess.run([str(stack_ferry()), "delete", "eventtype", name, "--drain", "--json"], env=env,
                             capture_output=True, text=True, timeout=300, cwd=stack.home)
    assert drained.returncode == 0, (drained.stdout, drained.stderr)
    assert stack.cli("get", "eventtype", name).returncode == 3  # gone
    got, marker = final_ids(stack, name, start_t.replace(second=0))
    assert sorted(got) == sorted(ids) and marker["events"] == 3000  # every accepted id, once


def stack_ferry() -> str:
    from ferry.dev.harness import ferry_executable

    return ferry_executable()


def test_ingest_paused_between_stamp_and_publish_lands_in_its_stamped_period(stack: Any) -> None:
    """The ingest code itself (in process, on the stack's emulators) with a publisher that stalls: a
    close during the stall holds the period open; afterwards every event is in the period it was
    stamped in, none late."""
    import threading

    from ferry.gabo.ingest.ledger import Ledger
    from ferry.gabo.ingest.service import IngestService

    name = f"pause-{uuid.uuid4().hex[:6]}"
    apply_type(stack, name)
    start_t = t0() + timedelta(seconds=40)  # stamped at :50
    svc = stack.services()
    release, paused = threading.Event(), threading.Event()

    class StalledPublisher:
        def publish(self, topic: str, messages: Any) -> Any:
            paused.set()
            assert release.wait(120)
            return svc.publisher.publish(topic, messages)

    events = [{"type": name, "id": f"p{i}", "payload": {"track_id": "t", "ms_played": i}} for i in range(2000)]
    ingest = IngestService(svc.manifests, StalledPublisher(), Ledger(svc.store))
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(r=ingest.ingest(events, start_t)))
    worker.start()
    try:
        assert paused.wait(60)
        _send(stack, name, ["q1", "q2"], start_t)  # another request of the same second gets through
        clock = VirtualClock(start_t + timedelta(seconds=30))
        deliver_until(stack, name, clock, lambda rs: sum(r["written"] for r in rs) >= 2 and rs[-1]["drained"])
        time.sleep(6)  # drains are trusted after a few seconds
        held = cli(stack, "close", name, now=clock.iso(plus_s=20))["reports"][0]
        partition = iso(start_t)[:16]
        assert partition not in {c["partition"] for c in held["closed"]}
        # held by the ledger: the request in flight, or (its record is written beside the publish) its
        # 2,000 accepted ids not delivered
        assert any(h["partition"] == partition and ("not yet confirmed" in h["reason"] or "2,000 accepted events"
                                                     in h["reason"]) for h in held["open"]), held["open"]
    finally:
        release.set()
        worker.join(120)
    assert result["r"].accepted == 2000
    deliver_until(stack, name, clock, lambda rs: sum(r["written"] for r in rs) >= 2000 and rs[-1]["drained"])
    time.sleep(6)
    closed = cli(stack, "close", name, now=clock.iso(plus_s=30))["reports"][0]
    mine = {c["partition"]: c for c in closed["closed"]}
    assert mine[partition]["events"] == 2002 and mine[partition]["late"] == 0
    got, marker = final_ids(stack, name, start_t.replace(second=0))
    assert sorted(got) == sorted([e["id"] for e in events] + ["q1", "q2"]) and marker["late_events"] == 0
