"""Fan-out closing on the local stack, at volume: the close-shard function merges shards in parallel; one
completion and one landing per partition however closes overlap or shard workers die.

Staging objects are written straight into the stack's sink (``fakes.staging``: what delivery writes, at
volume, in seconds); a delivery run on the empty subscription supplies the drain that lets the period
close. ``tests/bench`` repeats the volume proofs at 3,000,000 events.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from e2e.test_gabo import PT1M, VirtualClock, apply_type, cli, close_until, t0
from fakes.parts import part_lines, parts
from fakes.staging import expected_ids, write_period
from ferry.datamon.repository import PARTITIONS, partition_id
from ferry.gabo.closing.service import CloseOrder
from ferry.gabo.delivery.sink import LocalSink
from ferry.gabo.names import SUCCESS, final_prefix

pytestmark = pytest.mark.emulator


def staged_type(stack: Any, events: int, bits: int, late: int = 0) -> tuple[str, Any, VirtualClock, Any]:
    name = f"vol-{uuid.uuid4().hex[:6]}"
    apply_type(stack, name)
    start = t0().replace(second=0)
    staged = write_period(LocalSink(Path(stack.home) / "sink"), name, start, events, bits, late=late)
    clock = VirtualClock(start + timedelta(seconds=75))
    # The drain after the period's end. It is trusted once it is a few seconds old (backlog.SETTLE): the
    # closes below run at ``clock`` + 10 s and more, so no real time need pass.
    cli(stack, "deliver", name, "--budget", "5", now=clock.iso())
    return name, start, clock, staged


def final_lines(stack: Any, name: str, start: Any) -> list[bytes]:
    prefix = Path(stack.home) / "sink" / final_prefix(name, start, PT1M)
    return [ln for p in parts(prefix) for ln in part_lines(p)]


def landings(stack: Any, name: str, start: Any) -> int:
    doc = stack.services().store.get(PARTITIONS, partition_id(f"events.{name}", PT1M.format(start)))
    return int(doc["landings"]) if doc else 0


def _mentions(report: dict[str, Any], param: str) -> bool:
    return param in json.dumps(report)


def test_six_concurrent_closes_each_succeed_or_skip_and_land_once(stack: Any) -> None:
    n, bits = 20_000, 1
    name, start, clock, staged = staged_type(stack, n, bits, late=100)
    now = clock.iso(plus_s=10)
    with ThreadPoolExecutor(6) as pool:
        runs = list(pool.map(lambda _: cli(stack, "close", name, now=now)["reports"][0], range(6)))
    param = PT1M.format(start)
    ordered = [r for r in runs if any(o["partition"] == param for o in r["ordered"])]
    assert len(ordered) == 1, runs  # one claim; the others skipped, found it claimed and open, or (a run
    # that started after the shards finished, as on a loaded machine) found it closed: never a second order
    assert all(param in r["skipped"] or r in ordered or any(o["partition"] == param for o in r["open"])
               or any(c["partition"] == param for c in r["closed"]) or not _mentions(r, param)
               for r in runs), runs
    marker = close_until(stack, name, start, clock)
    ids = [json.loads(x)["id"] for x in final_lines(stack, name, start)]
    assert len(ids) == len(set(ids)) == staged.unique == marker["events"]
    assert (marker["duplicates_dropped"], marker["late_events"], marker["shards"]) == (staged.duplicates, 100, 2)
    assert landings(stack, name, start) == 1
    again = [cli(stack, "close", name, now=clock.iso(plus_s=20))["reports"][0] for _ in range(2)]
    assert not any(r["ordered"] or r["closed"] for r in again) and landings(stack, name, start) == 1


def test_a_small_type_closes_without_waiting_for_a_big_one(stack: Any) -> None:
    """The big type's shards are still merging (their orders held here, as if its workers were slow); the
    scheduled close closes the small type anyway and shows the big one open, with its shards' progress.
    (tests/bench times it with real shards of a 3M-event period.)"""
    big, start, clock, _ = staged_type(stack, 100_000, 1)
    small = f"small-{uuid.uuid4().hex[:6]}"
    apply_type(stack, small)
    write_period(LocalSink(Path(stack.home) / "sink"), small, start, 100, 0)
    cli(stack, "deliver", small, "--budget", "5", now=clock.iso())  # settled by the close's clock + 12 s
    sink = Path(stack.home) / "sink"
    markers = {t: sink / final_prefix(t, start, PT1M) / SUCCESS for t in (big, small)}

    g = stack.services().gabo
    held: list[CloseOrder] = []
    closer = g.closer()
    closer.publish = held.extend
    et, rec = g.event_type(big)
    closer.close(et, clock.now() + timedelta(seconds=10), rec.created_at)
    assert len(held) == 2
    reports = {r["event_type"]: r for r in cli(stack, "close", now=clock.iso(plus_s=12))["reports"]}
    assert markers[small].exists() and not markers[big].exists()
    assert json.loads(markers[small].read_text())["events"] == 99  # the 100th line repeats an earlier id
    [state] = [o for o in reports[big]["open"] if o["partition"] == PT1M.format(start)]
    assert state["state"] == "merging" and state["shards_done"] == 0 and state["shards"] == 2
    for o in held:  # the big one's workers get to it
        g.close_shard(o, clock.now() + timedelta(seconds=15))
    assert json.loads(markers[big].read_text())["shards"] == 2


def test_sigkilled_shard_worker_mid_merge_still_closes_once(stack: Any) -> None:
    """The closer's decision runs here with its orders captured (not published), so that the test runs the
    shard orders itself as processes — what the close-shard function does — and SIGKILLs one mid-merge,
    after it wrote its first part: the retry (Pub/Sub's redelivery) completes the period once."""
    n, bits = 200_000, 1
    name, start, clock, staged = staged_type(stack, n, bits)

    g = stack.services().gabo
    captured: list[CloseOrder] = []
    closer = g.closer()
    closer.publish = captured.extend
    et, rec = g.event_type(name)
    closer.close(et, clock.now() + timedelta(seconds=10), rec.created_at)
    assert [o.shard for o in captured] == ["0", "1"]

    def run(order: CloseOrder) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "ferry.gabo.closing.closeshard", order.model_dump_json(),
                                 "--max-part-bytes", str(2 * 1024 * 1024)], env=stack.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    prefix = Path(stack.home) / "sink" / final_prefix(name, start, PT1M)
    victim = run(captured[0])
    end = time.monotonic() + 120
    while not parts(prefix, "part-s0-*"):
        assert victim.poll() is None, victim.stderr.read().decode()[-2000:] if victim.stderr else ""
        assert time.monotonic() < end
        time.sleep(0.002)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    written_before = len(parts(prefix, "part-s0-*"))
    assert not (prefix / SUCCESS).exists()

    other = run(captured[1])
    assert other.wait(timeout=300) == 0
    retry = run(captured[0])  # Pub/Sub redelivers the dead worker's order
    out, err = retry.communicate(timeout=300)
    assert retry.returncode == 0, err.decode()[-2000:]
    report = json.loads(out)
    assert report["completed"] and report["completed"]["events"] == staged.unique, report
    ids = [json.loads(x)["id"] for x in final_lines(stack, name, start)]
    assert len(ids) == len(set(ids)) == staged.unique
    assert set(ids) == expected_ids(n, bits, "0") | expected_ids(n, bits, "1")
    assert landings(stack, name, start) == 1
    # a redelivered order of the closed period does nothing
    late_retry = run(captured[0])
    assert json.loads(late_retry.communicate(timeout=120)[0])["completed"] is None
    assert landings(stack, name, start) == 1
    print(f"\nkilled after {written_before} part(s) of shard 0; peak RSS of the retry {report['peak_rss_mb']} MB")


def test_one_close_run_interleaves_types_so_a_small_period_closes_before_a_big_ones_shards(stack: Any) -> None:
    """Both periods fan out (the small one has more staging objects than a close merges inline) and are
    decided by one scheduled close; the big type's name sorts first, so published type by type its 16
    shard orders would queue ahead of the small type's one. Interleaved, the close-shard function gets
    the small order among the first and its ``_SUCCESS`` is written before the big one's. (The bench
    times the same with a 3,000,000-event period: tests/bench/test_gabo_pair_bench.py.)"""
    from ferry.gabo.closing.service import INLINE_MAX_OBJECTS

    sink = Path(stack.home) / "sink"
    tag = uuid.uuid4().hex[:6]
    big, small = f"big-{tag}", f"small-{tag}"
    for name in (big, small):
        apply_type(stack, name)
    start = datetime.now(UTC).replace(second=0, microsecond=0)  # no empty periods between creation and it
    write_period(LocalSink(sink), big, start, 200_000, 4)
    assert write_period(LocalSink(sink), small, start, 100, 0, batch=15).objects > INLINE_MAX_OBJECTS
    clock = VirtualClock(start + timedelta(seconds=75))
    for name in (big, small):
        cli(stack, "deliver", name, "--budget", "5", now=clock.iso())  # the drains after the period's end
    # (settled for the close below: it runs at ``clock`` + 10 s, past backlog.SETTLE)
    markers = {t: sink / final_prefix(t, start, PT1M) / SUCCESS for t in (big, small)}
    began = time.time()
    cli(stack, "close", now=clock.iso(plus_s=10))
    end = time.monotonic() + 240
    while not all(m.exists() for m in markers.values()):
        assert time.monotonic() < end, {t: m.exists() for t, m in markers.items()}
        time.sleep(0.2)
    done = {t: m.stat().st_mtime - began for t, m in markers.items()}
    assert done[small] < done[big], done
    assert json.loads(markers[small].read_text())["events"] == 99
    assert json.loads(markers[big].read_text())["shards"] == 16
    assert landings(stack, big, start) == landings(stack, small, start) == 1
    print(f"\nsmall closed {done[small]:.1f} s, big (200,000 events, 16 shards) {done[big]:.1f} s after the close run began")
