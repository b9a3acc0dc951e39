"""A 3,000,000-event period and a 100-event one, closed by one scheduled close on the local stack: the small
one closes without waiting for the big one. Prints both close-completion times.

Three types, one period each (PT1M), staging written straight into the stack's sink (``fakes.staging``,
what delivery writes): ``big`` with ``GABO_PAIR_EVENTS`` events (default 3,000,000; 32 shards), ``small``
with 100 events in one staging object (merged by the deciding close itself), ``smallfan`` with 100
events in 7 objects (more than a close merges inline: it fans out through ``gabo-close-orders`` like
the big one, its order interleaved with the big one's 32). One ``ferry close`` decides all three; the
stack's close-shard function merges the shards. Completion time = the ``_SUCCESS`` marker's mtime after
the close began. Checked: each period's counts and one landing; the big period's ids once.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fakes.parts import part_lines, parts
from fakes.staging import write_period
from ferry.datamon.repository import PARTITIONS, partition_id
from ferry.dev.harness import LocalStack, ferry_executable, run_cli
from ferry.domain import periods
from ferry.gabo.closing.service import INLINE_MAX_OBJECTS
from ferry.gabo.delivery.sink import LocalSink
from ferry.gabo.envelopes import iso
from ferry.gabo.names import SUCCESS, final_prefix, shard_bits_for

pytestmark = [pytest.mark.bench, pytest.mark.emulator, pytest.mark.timeout(3600)]

BIG = int(os.environ.get("GABO_PAIR_EVENTS", "3000000"))
PT1M = periods.partitioning("PT1M")




def cli(stack: LocalStack, *args: str, now: str) -> dict[str, Any]:
    r = run_cli([*args, "--json"], env={**stack.env, "FERRY_NOW": now}, timeout=1800, cwd=stack.home)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return dict(json.loads(r.stdout))


def test_small_period_closes_without_waiting_for_a_3m_one(local_stack: LocalStack) -> None:
    stack = local_stack
    sink = stack.home / "sink"
    tag = uuid.uuid4().hex[:6]
    names = {"big": f"big-{tag}", "small": f"small-{tag}", "smallfan": f"smallfan-{tag}"}
    for name in names.values():
        manifest = {"apiVersion": "ferry/v1", "kind": "EventType", "metadata": {"name": name, "owner": "team-pair"},
                    "spec": {"partitioning": "PT1M", "close_after": "PT10S"}}
        (stack.home / f"{name}.json").write_text(json.dumps(manifest))
        stack.cli("apply", "-f", str(stack.home / f"{name}.json"), check=True)
    # the current minute (the types were applied in it or before): one period each to close, not the
    # empty periods between the types' creation and a period far ahead
    start = datetime.now(UTC).replace(second=0, microsecond=0)
    bits = shard_bits_for(BIG)
    t = time.monotonic()
    staged = write_period(LocalSink(sink), names["big"], start, BIG, bits)
    generate_s = time.monotonic() - t
    write_period(LocalSink(sink), names["small"], start, 100, 0)
    assert write_period(LocalSink(sink), names["smallfan"], start, 100, 0, batch=15).objects > INLINE_MAX_OBJECTS
    now = start + timedelta(seconds=75)
    for name in names.values():  # the drains after the period's end that the closing watermark needs
        cli(stack, "deliver", name, "--budget", "3", now=iso(now))
    time.sleep(5.5)  # drains are trusted after a few seconds' settle

    markers = {k: sink / final_prefix(n, start, PT1M) / SUCCESS for k, n in names.items()}
    load_before = os.getloadavg()
    began = time.time()
    close = subprocess.Popen([ferry_executable(), "close", "--json"], cwd=stack.home,
                             env={**stack.env, "FERRY_NOW": iso(now + timedelta(seconds=10))},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    decided_s = None
    end = time.monotonic() + 3000
    while not all(m.exists() for m in markers.values()):
        assert time.monotonic() < end, {k: m.exists() for k, m in markers.items()}
        if decided_s is None and close.poll() is not None:
            decided_s = time.time() - began
            assert close.returncode == 0, close.stderr.read().decode()[-2000:] if close.stderr else ""
        time.sleep(0.2)
    close.wait()
    done = {k: round(m.stat().st_mtime - began, 1) for k, m in markers.items()}
    load_after = os.getloadavg()

    marks = {k: json.loads(m.read_text()) for k, m in markers.items()}
    assert marks["small"]["events"] == marks["smallfan"]["events"] == 99  # the 100th line repeats an id
    assert (marks["big"]["events"], marks["big"]["duplicates_dropped"], marks["big"]["shards"]) == (
        staged.unique, staged.duplicates, 1 << bits)
    store = stack.services().store
    for k, n in names.items():
        doc = store.get(PARTITIONS, partition_id(f"events.{n}", PT1M.format(start)))
        assert doc is not None and doc["landings"] == 1, (k, doc)
    seen: set[str] = set()
    lines = 0
    for part in parts(sink / final_prefix(names["big"], start, PT1M)):
        for ln in part_lines(part):
            seen.add(json.loads(ln)["id"])
            lines += 1
    assert lines == len(seen) == staged.unique
    figures = {"big_events": BIG, "big_shards": 1 << bits, "generate_s": round(generate_s, 1),
               "close_decided_s": round(decided_s, 1) if decided_s is not None else None,
               "small_closed_s": done["small"], "smallfan_closed_s": done["smallfan"], "big_closed_s": done["big"],
               "load_avg_before": [round(x, 1) for x in load_before], "load_avg_after": [round(x, 1) for x in load_after]}
    print("\nGabo pair bench:", json.dumps(figures, indent=1))
    print(f"one close of a {BIG:,}-event period ({1 << bits} shards) and two 100-event ones: small closed "
          f"{done['small']} s, small fanned out {done['smallfan']} s, big {done['big']} s after the close began "
          f"(load average {load_before[0]:.1f} → {load_after[0]:.1f})")
    assert done["small"] < done["big"] and done["smallfan"] < done["big"], figures
