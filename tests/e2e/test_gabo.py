"""Gabo against the local stack: ingest → delivery → closing → Datamon, crash safety, dead letters, scaling.

Time: events are sent with ``FERRY_NOW`` (X-Ferry-Now) at a virtual instant T0, so a PT1M partition can be
closed right after delivery without waiting for the wall clock; later calls use a virtual clock that
keeps running from T0 + 70 s.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ferry.gabo import core

pytestmark = pytest.mark.emulator

SCHEMA = {"type": "object", "required": ["track_id", "ms_played"],
          "properties": {"track_id": {"type": "string"}, "ms_played": {"type": "integer", "minimum": 0}}}


class VirtualClock:
    def __init__(self, start: datetime) -> None:
        self.start, self.real = start, time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self.real)

    def iso(self, plus_s: float = 0) -> str:
        return core.iso(self.now() + timedelta(seconds=plus_s))


def t0() -> datetime:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now + timedelta(hours=2, seconds=10)


def apply_type(stack: Any, name: str, **spec: Any) -> None:
    manifest = {"apiVersion": "ferry/v1", "kind": "EventType", "metadata": {"name": name, "owner": "team-e2e"},
                "spec": {"schema": SCHEMA, "partitioning": "PT1M", "close_after": "PT10S", "max_event_bytes": 2048,
                         **spec}}
    path = stack.home / f"{name}.json"
    path.write_text(json.dumps(manifest))
    stack.cli("apply", "-f", str(path), check=True)


def cli(stack: Any, *args: str, now: str | None = None, input: str | None = None) -> Any:
    env = dict(stack.env)
    if now:
        env["FERRY_NOW"] = now
    r = subprocess.run(["ferry" if not (Path(sys.executable).parent / "ferry").exists()
                        else str(Path(sys.executable).parent / "ferry"), *args, "--json"],
                       input=input, env=env, capture_output=True, text=True, timeout=300, cwd=stack.home)
    assert r.returncode == 0, f"ferry {args} exited {r.returncode}: {r.stdout[-2000:]} {r.stderr[-2000:]}"
    return json.loads(r.stdout)


def final_ids(stack: Any, name: str, start: datetime) -> tuple[list[str], dict[str, Any]]:
    prefix = Path(stack.home) / "sink" / core.final_prefix(name, start, __import__("ferry.domain.periods",
                                                                                 fromlist=["x"]).partitioning("PT1M"))
    ids = []
    for part in sorted(prefix.glob("part-*.jsonl.gz")):
        ids += [json.loads(x)["id"] for x in gzip.decompress(part.read_bytes()).splitlines()]
    return ids, json.loads((prefix / "_SUCCESS").read_text())


def drain_hold(stack: Any, subscription: str, want: int, deadline_s: float = 30) -> list[Any]:
    from google.cloud import pubsub_v1

    os.environ["PUBSUB_EMULATOR_HOST"] = stack.env["PUBSUB_EMULATOR_HOST"]
    sub = pubsub_v1.SubscriberClient()
    path = f"projects/{stack.project}/subscriptions/{subscription}"
    got: list[Any] = []
    end = time.monotonic() + deadline_s
    while len(got) < want and time.monotonic() < end:
        r = sub.pull(request={"subscription": path, "max_messages": 1000}, timeout=10)
        got += [m.message for m in r.received_messages]
        if r.received_messages:
            sub.acknowledge(request={"subscription": path, "ack_ids": [m.ack_id for m in r.received_messages]})
    return got


def deliver_until(stack: Any, name: str, clock: VirtualClock, done: Any, deadline_s: float = 90) -> list[dict]:
    reports = []
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        reports.append(cli(stack, "deliver", name, "--budget", "20", now=clock.iso()))
        if done(reports):
            return reports
        time.sleep(0.5)
    raise AssertionError(f"delivery did not finish: {reports}")


def test_20k_events_with_duplicates_and_invalid_close_exactly_once(stack: Any) -> None:
    name = f"plays-{uuid.uuid4().hex[:6]}"
    apply_type(stack, name)
    start_t = t0()
    lines, valid, invalid = [], set(), set()
    for i in range(20_000):
        if i % 100 == 50:  # 1% duplicated ids
            lines.append({"type": name, "id": f"e{i - 50}", "payload": {"track_id": f"t{i - 50}", "ms_played": i - 50}})
        elif i % 100 == 75:  # 1% schema-invalid
            lines.append({"type": name, "id": f"bad{i}", "payload": {"track_id": f"t{i}", "ms_played": -1}})
            invalid.add(f"bad{i}")
        else:
            lines.append({"type": name, "id": f"e{i}", "payload": {"track_id": f"t{i}", "ms_played": i}})
            valid.add(f"e{i}")
    started = time.monotonic()
    sent = cli(stack, "send", name, "-", now=core.iso(start_t), input="\n".join(json.dumps(x) for x in lines))
    assert (sent["received"], sent["accepted"], sent["rejected_count"]) == (20_000, 19_800, 200)
    ingest_s = time.monotonic() - started

    clock = VirtualClock(start_t + timedelta(seconds=70))
    total = 0

    def done(reports: list[dict]) -> bool:
        nonlocal total
        total = sum(r["written"] for r in reports)
        return total >= 19_800 and reports[-1]["drained"]

    deliver_until(stack, name, clock, done)
    time.sleep(0.1)
    closed = cli(stack, "close", name, now=clock.iso(plus_s=20))
    rep = closed["reports"][0]
    partition = core.iso(start_t)[:16]
    mine = [c for c in rep["closed"] if c["partition"] == partition]
    assert mine, rep
    ids, marker = final_ids(stack, name, start_t.replace(second=0))
    assert len(ids) == len(set(ids)) == len(valid) and set(ids) == valid
    assert (marker["events"], marker["duplicates_dropped"], marker["late_events"]) == (19_600, 200, 0)
    assert marker["bytes"] > 0
    # every invalid event is on the quarantine topic with its reason
    q = drain_hold(stack, core.Names(name).hold(core.Names(name).quarantine), 200)
    assert {m.attributes["event_id"] for m in q} == invalid
    assert all("ms_played" in m.attributes["reason"] for m in q)
    # landed in Datamon
    from ferry.datamon.service import landed

    assert landed(stack.services(), f"events.{name}", [partition]) == {partition}
    # closing twice is harmless
    again = cli(stack, "close", name, now=clock.iso(plus_s=25))
    assert all(c["partition"] != partition for c in again["reports"][0]["closed"])
    print(f"\n20k e2e: ingest {ingest_s:.1f}s, total {time.monotonic() - started:.1f}s")


def test_sigkilled_worker_mid_batch_still_closes_exactly_once(stack: Any) -> None:
    name = f"crash-{uuid.uuid4().hex[:6]}"
    apply_type(stack, name)
    start_t = t0()
    n = 6000
    lines = [json.dumps({"type": name, "id": f"c{i}", "payload": {"track_id": "t", "ms_played": i}}) for i in range(n)]
    cli(stack, "send", name, "-", now=core.iso(start_t), input="\n".join(lines))
    clock = VirtualClock(start_t + timedelta(seconds=70))
    staging = Path(stack.home) / "sink" / "staging" / name
    proc = subprocess.Popen([sys.executable, "-m", "ferry.gabo.worker", name, "--budget", "60",
                             "--max-messages", "1000", "--now", clock.iso()],
                            env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=stack.home)
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and not (staging.exists() and any(staging.rglob("*.jsonl.gz"))):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: batches written, one perhaps written but not acked
    finally:
        proc.kill()
        proc.wait()
    written_before = sum(1 for _ in staging.rglob("*.jsonl.gz"))
    assert written_before >= 1

    def done(reports: list[dict]) -> bool:
        objs = list(staging.rglob("*.jsonl.gz"))
        ids = {json.loads(x)["id"] for o in objs for x in gzip.decompress(o.read_bytes()).splitlines()}
        return len(ids) >= n and reports[-1]["drained"]

    deliver_until(stack, name, clock, done, deadline_s=120)  # the dead worker's leases expire (15 s)
    # Until the dead worker's recorded lease has run out, the closer must assume it may still hold events
    # of the period (what keeps the close exact); keep delivering and closing as the scheduler would.
    partition = core.iso(start_t)[:16]
    end = time.monotonic() + 60
    while True:
        cli(stack, "deliver", name, "--budget", "20", now=clock.iso())
        closed = cli(stack, "close", name, now=clock.iso(plus_s=10))
        if any(c["partition"] == partition for c in closed["reports"][0]["closed"]):
            break
        assert time.monotonic() < end, closed["reports"][0]["watermark"]
        time.sleep(1)
    ids, marker = final_ids(stack, name, start_t.replace(second=0))
    assert sorted(ids) == sorted(f"c{i}" for i in range(n))
    assert marker["events"] == n


def test_poison_messages_end_on_the_dead_letter_topic(stack: Any) -> None:
    from google.cloud import pubsub_v1

    name = f"poison-{uuid.uuid4().hex[:6]}"
    apply_type(stack, name, max_event_bytes=256)
    os.environ["PUBSUB_EMULATOR_HOST"] = stack.env["PUBSUB_EMULATOR_HOST"]
    pub = pubsub_v1.PublisherClient()
    topic = f"projects/{stack.project}/topics/{core.Names(name).topic}"
    poison = [b"not json at all", b'{"no": "id"}', json.dumps({"id": "big", "payload": "x" * 5000}).encode()]
    for p in poison:
        pub.publish(topic, p, origin="test").result()
    pub.publish(topic, json.dumps({"id": "fine", "type": name, "payload": {"track_id": "t", "ms_played": 1}}).encode(),
                event_type=name, event_id="fine", received_at=core.iso(datetime.now(UTC))).result()
    report = cli(stack, "deliver", name, "--budget", "20")
    assert (report["dead_lettered"], report["written"]) == (3, 1)
    dl = drain_hold(stack, core.Names(name).hold(core.Names(name).dead_letter), 3)
    assert sorted(m.data for m in dl) == sorted(poison)
    assert all(m.attributes["reason"] for m in dl)


def test_scaler_raises_workers_with_backlog_and_lowers_when_drained(stack: Any) -> None:
    name = f"scale-{uuid.uuid4().hex[:6]}"
    apply_type(stack, name, min_workers=1, max_workers=4)
    lines = [json.dumps({"type": name, "id": f"s{i}", "payload": {"track_id": "t", "ms_played": i}}) for i in range(4000)]
    cli(stack, "send", name, "-", input="\n".join(lines))
    seen = []
    for _ in range(2):  # short runs that end their budget with full pulls: the backlog remains
        r = cli(stack, "deliver", name, "--budget", "0.5", "--full-budget", "--max-messages", "50")
        assert r["saturated"], r
        seen.append(cli(stack, "scale", name, "--dry-run")["decisions"][0]["workers"])
    assert seen == [2, 4]
    for _ in range(4):
        cli(stack, "deliver", name, "--budget", "30")
    down = cli(stack, "scale", name, "--dry-run")["decisions"][0]
    assert down["workers"] == 1 and "drained" in down["reason"]
