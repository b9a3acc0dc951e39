"""Issue 23, item 7 (and item 9's abandoned delivery runs): closing that catches up however far behind,
in bounded reads per run; state that does not grow without bound."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from tests.unit.gabo.test_gabo_accepted_delivered import T0, Stack

from ferry.gabo.closing import service as closing
from ferry.gabo.ingest.ledger import Ledger
from ferry.gabo.state import GaboState

BEHIND = 130  # minutes (PT1M periods) the type is behind: more than two windows of WINDOW
WINDOW = 50


def _stuck_first_period(stack: Stack, created: object) -> None:
    """An accepted event of the type's first period that never arrives: that period stays open (missing)."""
    led = Ledger(stack.svc.store)
    led.begin("lost", ["play"], created)  # type: ignore[arg-type]
    led.confirm("lost", Ledger.accepted_record({"play": (created, ["never-delivered"])}),  # type: ignore[dict-item]
                since=created, begun=["play"])  # type: ignore[arg-type]


def test_a_stuck_period_never_hides_the_ones_after_it_and_closing_catches_up(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Found: after a stuck period one close closed the 499 after it, then never considered the next ones
    again (each run re-read the ~500 closed records). Here with windows of 50 periods (the same code)."""
    monkeypatch.setattr(closing, "MAX_PERIODS_PER_RUN", WINDOW)
    created = (T0 - timedelta(minutes=BEHIND)).replace(second=0)
    stack = Stack(tmp_path, applied_at=created)
    _stuck_first_period(stack, created)
    stack.deliver(T0)  # drained: the watermark is T0
    now = T0 + timedelta(seconds=10)
    closed: set[str] = set()
    reads = []
    for _ in range(4):
        before = stack.svc.store.stats.reads
        rep = stack.close(now)
        reads.append(stack.svc.store.stats.reads - before)
        closed |= {c.partition for c in rep.closed}
    ended = BEHIND  # periods from `created` that ended before T0's period
    assert len(closed) == ended - 1, (len(closed), ended)
    first = created.strftime("%Y-%m-%dT%H:%M")
    assert first not in closed
    # a run once caught up reads the stuck period and the undecided ones, not what closed
    assert reads[-1] < 20, reads
    state = GaboState(stack.svc.store).cursor_state("play")
    assert state[0] == created and state[2] == [created]
    assert max(reads) < 4 * (closing.MAX_PERIODS_PER_RUN + closing.MAX_STUCK), reads
    json.dumps(rep.to_dict())
