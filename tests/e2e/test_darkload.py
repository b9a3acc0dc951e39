"""Darkloading on the local stack: the shadow stream is delivered and closed by the stack's own functions
(work orders and close orders with ``stream: darkload``), and ``ferry darkload report`` counts ids.

Two event types with ``darkload: 1.0`` (the shadow with two staging shards, the primary with one): one is
left alone and its report shows shadow = primary; the other loses one shadow staging object before
closing, and its report names the lost ids — and alerts the owning team once, through the notify
function, to the local receiver.
"""

from __future__ import annotations

import gzip
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from e2e.test_gabo import PT1M, SCHEMA, VirtualClock, cli
from e2e.test_notify import _settled
from ferry.gabo.envelopes import iso
from ferry.gabo.names import SUCCESS, final_prefix, partition_key

pytestmark = pytest.mark.emulator

N = 3000


def _setup(stack: Any) -> tuple[str, str, str]:
    """A team whose webhook posts to the stack's receiver, and two darkloaded event types it owns."""
    tag = uuid.uuid4().hex[:6]
    team, path = f"team-dl-{tag}", f"/webhook/darkload-{tag}"
    secret = Path(stack.home) / f"{team}--dl-{tag}.secret"  # the team's own secret: <team>--<name>
    secret.write_text(f"{stack.receiver_url}{path}\n")
    docs: list[dict[str, Any]] = [{"apiVersion": "ferry/v1", "kind": "Team", "metadata": {"name": team}, "spec": {
        "members": ["alice"], "channels": [{"name": "ops", "type": "webhook", "secret": f"file:{secret}"}]}}]
    names = (f"dl-ok-{tag}", f"dl-lossy-{tag}")
    for name in names:
        docs.append({"apiVersion": "ferry/v1", "kind": "EventType", "metadata": {"name": name, "owner": team},
                     "spec": {"schema": SCHEMA, "partitioning": "PT1M", "close_after": "PT10S",
                              "max_event_bytes": 2048, "darkload": 1.0, "darkload_shards": 2}})
    manifest = Path(stack.home) / f"dl-{tag}.yaml"
    manifest.write_text("\n---\n".join(json.dumps(d) for d in docs))  # JSON documents are YAML
    stack.cli("apply", "-f", str(manifest), user="alice", check=True)
    return names[0], names[1], path


def _deliver(stack: Any, name: str, clock: VirtualClock, want: int) -> None:
    """Both streams of ``name`` until each wrote ``want`` events and found its subscription empty."""
    for flag in ((), ("--darkload",)):
        written, end = 0, time.monotonic() + 120
        while True:
            r = cli(stack, "deliver", name, *flag, "--budget", "20", now=clock.iso())
            written += r["written"]
            if written >= want and r["drained"]:
                break
            assert time.monotonic() < end, (name, flag, written)


def _markers(stack: Any, name: str, start: Any) -> list[Path]:
    final = final_prefix(name, start, PT1M) + SUCCESS
    return [Path(stack.home) / "sink" / final, Path(stack.home) / "sink" / "darkload" / final]


def test_the_darkload_report_shows_shadow_equals_primary_and_names_lost_ids(stack: Any) -> None:
    started = time.monotonic()
    ok, lossy, path = _setup(stack)
    # the next minute, not t0()'s two hours ahead: no hour of empty periods for four closers to catch up on
    start_t = datetime.now(UTC).replace(second=10, microsecond=0) + timedelta(minutes=1)
    start = start_t.replace(second=0)
    for name in (ok, lossy):
        lines = [json.dumps({"type": name, "id": f"{name}-{i}", "payload": {"track_id": "t", "ms_played": i}})
                 for i in range(N)]
        sent = cli(stack, "send", name, "-", now=iso(start_t), input="\n".join(lines))
        assert (sent["accepted"], sent["rejected_count"]) == (N, 0)

    clock = VirtualClock(start_t + timedelta(seconds=70))  # past the period's end: these drains let it close
    for name in (ok, lossy):
        _deliver(stack, name, clock, N)
    shadow_staging = Path(stack.home) / "sink" / "darkload" / "staging" / lossy / partition_key(start)
    assert {p.name for p in shadow_staging.iterdir()} == {"s0", "s1"}  # the shadow's own shard count
    lost = sorted((shadow_staging / "s1").glob("*.jsonl.gz"))[0]
    lost_ids = {json.loads(x)["id"] for x in gzip.decompress(lost.read_bytes()).splitlines()}
    lost.unlink()

    delivered_s = time.monotonic() - started
    # drains are trusted after a few seconds' settle (backlog.SETTLE): the closes run at ``clock`` + 10 s
    end = time.monotonic() + 120
    while not all(m.exists() for name in (ok, lossy) for m in _markers(stack, name, start)):
        assert time.monotonic() < end, "the partitions did not close"
        for name in (ok, lossy):
            cli(stack, "close", name, now=clock.iso(plus_s=10))
        poll = time.monotonic() + 10
        while time.monotonic() < poll and not all(m.exists() for n in (ok, lossy) for m in _markers(stack, n, start)):
            time.sleep(0.2)
    # the primary closed complete either way: the shadow's loss is none of its business
    for name in (ok, lossy):
        primary, shadow = (json.loads(m.read_text()) for m in _markers(stack, name, start))
        assert (primary["events"], primary["shards"], shadow["shards"]) == (N, 1, 2)

    closed_s = time.monotonic() - started
    param = PT1M.format(start)
    good = cli(stack, "darkload", "report", ok, "--partition", param)["partitions"]
    assert [(p["state"], p["sampled_events"], p["shadow_events"], p["missing"], p["extra"]) for p in good] == [
        ("match", N, N, 0, 0)]

    bad = cli(stack, "darkload", "report", lossy, "--partition", param, exit_code=3)["partitions"][0]
    assert (bad["state"], bad["sampled_events"], bad["shadow_events"]) == ("mismatch", N, N - len(lost_ids))
    assert bad["missing"] == len(lost_ids) > 0 and bad["extra"] == 0 and bad["alerted"] is True
    assert set(bad["missing_ids"]) <= lost_ids and len(bad["missing_ids"]) == min(20, len(lost_ids))
    again = cli(stack, "darkload", "report", lossy, now=clock.iso(plus_s=20), exit_code=3)["partitions"]
    assert [(p["partition"], p["missing"], p["alerted"]) for p in again if p["state"] != "match"] == [
        (param, len(lost_ids), False)]  # the recent partitions: the others closed empty on both sides

    people = stack.cli("darkload", "report", lossy, "--partition", param, env={"FERRY_NOW": clock.iso(plus_s=25)})
    assert people.returncode == 3 and "mismatch" in people.stdout, people.stdout + people.stderr
    words = " ".join(people.stdout.split())  # however the terminal wrapped it
    assert f"{param}: {len(lost_ids)} missing — {bad['missing_ids'][0]}, " in words, people.stdout

    received = _settled(stack, path, 1)
    assert len(received) == 1, received  # the alert fired once
    body = received[0]["body"]
    assert body["dedup_key"] == f"darkload:events.{lossy}@{param}" and body["kind"] == "darkload"
    assert body["details"]["missing"] == len(lost_ids)
    print(f"\ndarkload e2e: {N} events x 2 types, {len(lost_ids)} lost ids named; sent and delivered "
          f"{delivered_s:.1f}s, closed {closed_s:.1f}s, reported {time.monotonic() - started:.1f}s")

