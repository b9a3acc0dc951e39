"""Fair delivery on the local stack: a type with a big backlog never starves a small one.

Two event types on a stack of their own (its own project on the session's emulators, so no other test's
types share the delivery capacity): ``big`` asks for 8 workers (``min_workers: 8``) and has a backlog of
20,000 events, ``small`` asks for one and has 50. One ``ferry scale`` decides both and publishes the work
orders to ``gabo-work-orders``; the emulator pushes them to the ``deliver`` function two at a time
(measured: it keeps at most two pushes of a subscription outstanding), and every order pulls for its
whole budget (50 s). Orders queued by type (all of big's, then small's) would start small's first order
only after a whole budget: the test requires small's events delivered within 0.8 of one (the
margin is for a loaded machine). ``tests/bench/test_fair_delivery_control.py`` publishes the same orders
queued by type and measures that the bound would then fail. Then both
periods close — with every id once — within a scheduler minute of their grace.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fakes.parts import part_lines, parts
from ferry.dev import stack as stack_mod
from ferry.dev.harness import LocalStack

pytestmark = pytest.mark.emulator

BUDGET_S = 50.0
SCHEMA = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}


@pytest.fixture(scope="module")
def own_stack(emulators: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    config = stack_mod.StackConfig(home=tmp_path_factory.mktemp("fair-home"), project=f"fair-{uuid.uuid4().hex[:8]}",
                                   scheduler=False, firestore=emulators.firestore, pubsub=emulators.pubsub)
    with LocalStack.running(config) as running:
        yield running


def _json(stack: LocalStack, *args: str, input: str | None = None) -> Any:
    r = stack.cli(*args, "--json", input=input, timeout=300)
    assert r.returncode == 0, f"ferry {args}: {r.stdout[-2000:]} {r.stderr[-2000:]}"
    return json.loads(r.stdout)


def _ids_closed(sink: Path, name: str) -> Counter[str]:
    ids: Counter[str] = Counter()
    for marker in (sink / "events" / name).rglob("_SUCCESS"):
        for part in parts(marker.parent):
            ids.update(json.loads(line)["id"] for line in part_lines(part))
    return ids


def backlogs(stack: LocalStack) -> tuple[str, str, dict[str, list[str]], datetime]:
    """Two types — big (20,000 events, asks for 8 workers), small (50 events, one) — sent within one
    minute: (big, small, the ids sent per type, when)."""
    tag = uuid.uuid4().hex[:6]
    big, small = f"big-{tag}", f"small-{tag}"
    for name, workers in ((big, 8), (small, 1)):
        (stack.home / f"{name}.json").write_text(json.dumps({
            "apiVersion": "ferry/v1", "kind": "EventType", "metadata": {"name": name, "owner": "team-e2e"},
            "spec": {"schema": SCHEMA, "partitioning": "PT1M", "close_after": "PT10S",
                     "min_workers": workers, "max_workers": workers}}))
        _json(stack, "apply", "-f", str(stack.home / f"{name}.json"))
    sent = {big: [f"b{tag}-{i}" for i in range(20_000)], small: [f"s{tag}-{i}" for i in range(50)]}
    # real time: the pushed work orders deliver on the stack's clock
    if datetime.now(UTC).second > 40:  # sent, scaled and delivered within one minute: one period each
        time.sleep(61 - datetime.now(UTC).second)
    for name, ids in sent.items():
        lines = "\n".join(json.dumps({"type": name, "id": i, "payload": {"n": k}}) for k, i in enumerate(ids))
        assert _json(stack, "send", name, "-", input=lines)["accepted"] == len(ids)
    return big, small, sent, datetime.now(UTC)


def seconds_until_delivered(stack: LocalStack, name: str, count: int, since: datetime, started: float) -> float | None:
    """Seconds from ``started`` (monotonic) until ``count`` events of ``name`` were delivered (None: not
    within three budgets)."""
    while time.monotonic() - started < 3 * BUDGET_S:
        if _progress(stack, name, since)["delivered"] >= count:
            return time.monotonic() - started
        time.sleep(1)
    return None


@pytest.mark.timeout(900)
def test_a_big_backlog_does_not_starve_a_small_type(own_stack: LocalStack) -> None:
    stack = own_stack
    big, small, sent, sent_at = backlogs(stack)
    period = sent_at.strftime("%Y-%m-%dT%H:%M")

    scaled = time.monotonic()
    decisions = {d["event_type"]: d for d in _json(stack, "scale", "--budget", str(BUDGET_S))["decisions"]}
    assert decisions[big]["wanted"] == 8 and decisions[small]["workers"] == 1, decisions
    assert decisions[big]["workers"] < 8  # the capacity is shared: big's share was cut for small's
    small_delivered_after = seconds_until_delivered(stack, small, len(sent[small]), sent_at - timedelta(minutes=2),
                                                    scaled)
    runs = _runs(stack, [big, small], sent_at - timedelta(minutes=2))
    # queued behind big's orders, small's first order could not start before a whole budget had passed
    assert small_delivered_after is not None and small_delivered_after < 0.8 * BUDGET_S, (small_delivered_after, runs)

    # Both periods close: drains after the period's end (the next minute's scale, as the scheduler),
    # then a close every few seconds (the scheduler closes every minute).
    end = datetime.strptime(period, "%Y-%m-%dT%H:%M").replace(tzinfo=UTC) + timedelta(minutes=1)
    while datetime.now(UTC) < end + timedelta(seconds=1):
        time.sleep(1)
    _json(stack, "scale", "--budget", "20")
    closed_at: dict[str, float] = {}
    while len(closed_at) < 2 and datetime.now(UTC) < end + timedelta(seconds=10 + 120):
        for rep in _json(stack, "close")["reports"]:
            if rep["event_type"] in sent and any(c["partition"] == period for c in rep["closed"]):
                closed_at.setdefault(rep["event_type"], (datetime.now(UTC) - end).total_seconds())
        for name in sent:
            parts = _progress(stack, name, sent_at - timedelta(minutes=2))["partitions"]
            if any(p["partition"] == period and p["state"] == "closed" for p in parts):
                closed_at.setdefault(name, (datetime.now(UTC) - end).total_seconds())
        time.sleep(3)
    assert set(closed_at) == {big, small}, (closed_at, _runs(stack, [big, small], sent_at - timedelta(minutes=2)))
    for name, ids in sent.items():
        got = _ids_closed(stack.home / "sink", name)
        assert set(got) == set(ids) and max(got.values()) == 1, (name, len(got), len(ids))
    print(f"\nfair delivery: small delivered {small_delivered_after:.1f} s after the scale (budget {BUDGET_S:.0f} s); "
          f"closed {closed_at} s after the period's end; runs {runs}")


def _progress(stack: LocalStack, name: str, since: datetime) -> dict[str, Any]:

    return stack.services().gabo.progress(name, since, datetime.now(UTC))


def _runs(stack: LocalStack, names: list[str], since: datetime) -> dict[str, list[tuple[str, Any]]]:

    g = stack.services().gabo
    return {n: [(str(r.get("started_at"))[11:19], r.get("written")) for r in g.state.recent_runs(n, since)]
            for n in names}
