"""Replay of quarantined events on the local stack (official emulators, functions-framework processes, real
push): 100 events quarantined for a missing field; the schema made optional by re-applying the EventType;
``ferry replay TYPE --from quarantine`` delivers exactly those 100 into the next closed partition, once; a
second replay adds nothing; what is still invalid stays in quarantine with its reason.

Time is virtual (``FERRY_NOW``), as in test_gabo.py: P is the partition the events were sent into, the
replay runs at P + 90 s (so its events belong to P + 1 min).
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest

from ferry.gabo.envelopes import iso

from .test_gabo import SCHEMA, VirtualClock, apply_type, cli, close_until, deliver_until, final_ids, t0

pytestmark = pytest.mark.emulator


def _event(name: str, i: str, payload: dict[str, Any]) -> str:
    return json.dumps({"type": name, "id": i, "payload": payload})


def test_replay_delivers_the_quarantined_once_into_the_next_closed_partition(stack: Any) -> None:
    name = f"replay-{uuid.uuid4().hex[:6]}"
    apply_type(stack, name)
    sent_at = t0()
    p = sent_at.replace(second=0)
    valid = [f"ok{i}" for i in range(10)]
    missing = [f"m{i}" for i in range(100)]  # no ms_played: quarantined
    wrong = [f"w{i}" for i in range(5)]  # ms_played a string: invalid under either schema
    lines = ([_event(name, i, {"track_id": "t", "ms_played": 1}) for i in valid]
             + [_event(name, i, {"track_id": "t"}) for i in missing]
             + [_event(name, i, {"track_id": "t", "ms_played": "long"}) for i in wrong])
    sent = cli(stack, "send", name, "-", now=iso(sent_at), input="\n".join(lines), exit_code=3)
    assert (sent["accepted"], sent["rejected_count"]) == (10, 105)

    clock = VirtualClock(p + timedelta(seconds=80))
    deliver_until(stack, name, clock, lambda rs: sum(r["written"] for r in rs) >= 10 and rs[-1]["drained"])
    close_until(stack, name, p, clock)
    assert sorted(final_ids(stack, name, p)[0]) == sorted(valid)
    shown = cli(stack, "get", "quarantine", name)
    assert shown["items"] and all(i["reason"] for i in shown["items"])

    apply_type(stack, name, schema={**SCHEMA, "required": ["track_id"]})  # the fix: ms_played optional
    first = cli(stack, "replay", name, "--from", "quarantine", now=iso(p + timedelta(seconds=90)))
    assert (first["replayed"], first["still_invalid"]) == (100, 5), first
    assert "ms_played" in first["reasons"][0]["reason"]

    nxt = p + timedelta(minutes=1)
    clock = VirtualClock(nxt + timedelta(seconds=80))
    deliver_until(stack, name, clock, lambda rs: sum(r["written"] for r in rs) >= 100 and rs[-1]["drained"])
    marker = close_until(stack, name, nxt, clock)
    ids, _ = final_ids(stack, name, nxt)
    assert sorted(ids) == sorted(missing)  # exactly those 100, once
    assert (marker["events"], marker["late_events"], marker["replayed_events"]) == (100, 0, 100), marker
    assert sorted(final_ids(stack, name, p)[0]) == sorted(valid)  # the first partition is untouched

    again = cli(stack, "replay", name, "--from", "quarantine", now=clock.iso())
    assert (again["replayed"], again["still_invalid"]) == (0, 5), again
    left = cli(stack, "get", "quarantine", name)
    assert sorted(i["event_id"] for i in left["items"]) == sorted(wrong)  # still where they were
    after = nxt + timedelta(minutes=1)
    clock = VirtualClock(after + timedelta(seconds=80))
    deliver_until(stack, name, clock, lambda rs: rs[-1]["drained"])
    close_until(stack, name, after, clock)
    assert final_ids(stack, name, after)[0] == []  # the second replay added nothing
    assert sorted(final_ids(stack, name, nxt)[0]) == sorted(missing)
