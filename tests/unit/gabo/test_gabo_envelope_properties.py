"""Issue 23, item 1: a property over generated envelopes — ids, times and payloads at every size edge and
in every Unicode class (ASCII, 2-, 3- and 4-byte characters, control characters, quotes and backslashes,
U+2028, lone surrogates), numbers outside JSON's grammar — through ingest → delivery → close, in process
on the in-memory fakes. Every accepted event is in the closed period exactly once, as sent; every
rejected one has its own reason; nothing is dead-lettered; the rule is the documented one."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tests.fakes.memory_sink import MemorySink
from tests.unit.gabo.test_gabo_accepted_delivered import MAX, Stack, _run_through, strict_json

from ferry.gabo.envelopes import MAX_ID_CHARS, MAX_TIME_CHARS

# one character of each class: 1-byte, 2, 3 and 4 bytes in UTF-8; escaped ones; a lone surrogate of each half
CHARS = ["a", "é", "€", "\U0001F600", "\x00", "\x1f", '"', "\\", "\u2028", "\ud800", "\udfff"]
SURROGATE = ("\ud800", "\udfff")


def _text(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(CHARS), min_size=min_size, max_size=max_size).map("".join)


def _sized_payload(size: int, filler: str) -> dict[str, str]:
    """A payload whose compact UTF-8 JSON is ``size`` bytes or, when ``filler`` (a multi-byte character)
    cannot hit it exactly, the nearest below."""
    p = {"k": ""}
    base = len(json.dumps(p, separators=(",", ":")).encode())
    unit = len(json.dumps(filler, ensure_ascii=False)[1:-1].encode())
    p["k"] = filler * max(0, (size - base) // unit)
    return p


ids = st.one_of(
    _text(1, 8),
    st.integers(MAX_ID_CHARS - 1, MAX_ID_CHARS + 1).flatmap(lambda n: st.sampled_from(CHARS).map(lambda c: c * n)),
    st.just(""),
)
times = st.one_of(
    st.none(),
    st.sampled_from(["2026-11-26T14:05:00Z", "2026-11-26T14:05:00.123456+02:00", "2026-11-26T14:05:00",
                     "2026-11-26T14:05:00." + "1" * 100_000 + "+00:00", "not a time",
                     "2026-11-26T14:05:00\ud800Z"]),
    st.integers(MAX_TIME_CHARS - 1, MAX_TIME_CHARS + 1).map(lambda n: "2026-11-26T14:05:00." + "1" * (n - 26) + "+00:00"),
)
payloads = st.one_of(
    st.tuples(st.integers(MAX - 2, MAX + 1), st.sampled_from(["x", "é", "€", "\U0001F600", "\x01"]))
    .map(lambda t: _sized_payload(*t)),
    st.dictionaries(_text(0, 3), st.one_of(_text(0, 6), st.integers(), st.floats(allow_nan=True), st.none(),
                                           st.booleans()), max_size=3),
    st.sampled_from([{"v": float("nan")}, {"v": float("inf")}, {"v": -float("inf")}, [1, 2.5e300], "s", 0]),
)
envelopes = st.fixed_dictionaries({"type": st.just("play"), "id": ids, "payload": payloads},
                                  optional={"time": times})


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(c in value for c in SURROGATE) or any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_non_finite(v) for v in value)
    return False


def expected_valid(e: dict[str, Any]) -> bool:
    """The documented rule (docs/gabo.md, "An event's size and validity"), written out independently."""
    i, tm, p = e["id"], e.get("time"), e["payload"]
    if not isinstance(p, dict):  # the type's schema: {"type": "object"}
        return False
    if not 1 <= len(i) <= MAX_ID_CHARS or _has_surrogate(i):
        return False
    if tm is not None:
        if len(tm) > MAX_TIME_CHARS or _has_surrogate(tm) or tm == "not a time" or tm == "2026-11-26T14:05:00":
            return False
    if _has_surrogate(p) or _non_finite(p):
        return False
    return len(json.dumps(p, separators=(",", ":"), ensure_ascii=False).encode()) <= MAX


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(envelopes, min_size=1, max_size=6))
# the edges the adversarial run found, always tried first
@example(batch=[{"type": "play", "id": "\U0001F600" * 256, "payload": _sized_payload(MAX, "x")},
                {"type": "play", "id": "\x01" * 256, "payload": _sized_payload(MAX, "\U0001F600"),
                 "time": "2026-11-26T14:05:00." + "1" * 38 + "+00:00"}])
@example(batch=[{"type": "play", "id": "\ud800", "payload": {}}, {"type": "play", "id": "ok", "payload": {"v": "\udfff"}},
                {"type": "play", "id": "n", "payload": {"v": float("nan")}}, {"type": "play", "id": "i", "payload": {"v": 1e308 * 10}},
                {"type": "play", "id": "t", "time": "2026-11-26T14:05:00." + "1" * 100_000 + "+00:00", "payload": {}}])
def test_every_accepted_event_is_in_its_closed_period_once_and_every_rejection_has_a_reason(batch: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp), sink=MemorySink())
        # json.dumps escapes lone surrogates as \ud800 and writes NaN/Infinity as such: what a client sends
        raw = b"\n".join(json.dumps(e).encode() for e in batch)
        r = _run_through(stack, raw)
        rejected = {x["index"]: x for x in r.rejected}
        assert r.accepted + len(rejected) == len(batch)
        assert all(isinstance(x["reason"], str) and x["reason"] for x in rejected.values())
        json.dumps(r.to_dict(), ensure_ascii=False).encode()  # the answer is sendable as UTF-8
        for n, e in enumerate(batch):
            assert (n not in rejected) == expected_valid(e), (n, rejected.get(n), str(e.get("time"))[:80])
        accepted: dict[str, list[str]] = {}  # id → the payloads sent with it (a batch may repeat an id)
        for n, e in enumerate(batch):
            if n not in rejected:
                accepted.setdefault(e["id"], []).append(json.dumps(e["payload"], sort_keys=True))
        lines = [strict_json(ln) for ln in stack.closed_lines()]
        closed_ids = [d["id"] for d in lines]
        assert sorted(closed_ids) == sorted(accepted), "each accepted id exactly once"
        for d in lines:  # as sent (one of the copies: closing keeps one)
            assert json.dumps(d["payload"], sort_keys=True) in accepted[d["id"]]
        assert stack.dead_lettered() == []


def test_the_worst_envelope_around_a_payload_of_max_event_bytes_fits_the_line_limit() -> None:
    """Why ingest need not measure the line: the largest envelope the rule admits — an id of 256 control
    characters (6 bytes each, escaped), a 64-character time, the longest type name, the replayed mark, a
    received_at of the longest form — around a payload of exactly max_event_bytes is within
    ``line_limit``, the bound delivery checks."""
    from datetime import UTC, datetime

    from ferry.gabo.envelopes import Envelope, encode_payload, envelope, event_line, line_limit

    item = {"type": "t" * 63, "id": "\x01" * MAX_ID_CHARS, "time": "2026-11-26T14:05:00." + "9" * 38 + "+00:00",
            "payload": _sized_payload(MAX, "\U0001F600")}
    env = envelope(item)
    assert isinstance(env, Envelope) and len(env.time or "") == MAX_TIME_CHARS
    payload = encode_payload(env.payload)
    assert isinstance(payload, bytes) and MAX - 4 < len(payload) <= MAX
    line = event_line(env, datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), True, payload)
    assert len(line) <= line_limit(MAX), (len(line), line_limit(MAX))
    assert len(line) - len(payload) > 1536  # the escapes are counted: the bound is not loose by accident
