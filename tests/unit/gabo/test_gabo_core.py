"""Gabo's pure core: envelopes, grouping, names, watermark, closing decisions, merge, scaling."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from ferry.domain import periods
from ferry.errors import BadRequest
from ferry.gabo.closing.decide import closable, next_open, watermark
from ferry.gabo.closing.formats.ndjson import gunzip_lines, gzip_lines
from ferry.gabo.delivery.batching import Accepted, BatchLimits, Pulled, classify, group_by_partition
from ferry.gabo.envelopes import Envelope, Unparsable, envelope, event_line, is_replayed, iso, parse_body
from ferry.gabo.names import Names, final_prefix, parse_partition_key, part_name, staging_name
from ferry.gabo.scaling.scaler import ScaleInputs, decide_workers, fair_shares, interleave

T0 = datetime(2026, 11, 26, 14, 5, 30, tzinfo=UTC)
MIN = periods.partitioning("PT1M")
HOUR = periods.partitioning("hourly")


def pulled(data: dict | bytes, received: datetime = T0, mid: str = "m1", **attrs: str) -> Pulled:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return Pulled(f"ack-{mid}", mid, raw, {"received_at": iso(received), **attrs}, received)


def test_parse_body_accepts_array_object_and_ndjson() -> None:
    assert parse_body(b'[{"a":1},{"a":2}]') == [{"a": 1}, {"a": 2}]
    assert parse_body(b'{"a":1}\n\n{"a":2}\n') == [{"a": 1}, {"a": 2}]
    assert parse_body(b'{"a":1}') == [{"a": 1}]


@pytest.mark.parametrize("body", [b"", b"[1,", b"not json", b"   ", b"[" * 5000])
def test_parse_body_rejects_malformed(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_body(body)


def test_an_element_that_alone_cannot_be_parsed_is_that_events_rejection() -> None:
    # an NDJSON line that is not JSON; an array element nested past the parser's recursion limit
    items = parse_body(b'{"a":1}\nnot json\n{"a":2}')
    assert items[0] == {"a": 1} and items[2] == {"a": 2}
    assert isinstance(items[1], Unparsable) and "not JSON" in str(envelope(items[1]))
    deep = b"[" * 3000 + b"]" * 3000
    items = parse_body(b'[{"a":"x,]\\""},' + deep + b', {"b": [1, {"c": 2}]}]')
    assert items[0] == {"a": 'x,]"'} and items[2] == {"b": [1, {"c": 2}]}
    assert "deeper than 64" in str(envelope(items[1]))


@pytest.mark.parametrize(("item", "reason"), [
    ([], "JSON object"),
    ({"id": "1", "payload": {}}, "type is required"),
    ({"type": "play", "payload": {}}, "id is required"),
    ({"type": "play", "id": "1"}, "payload is required"),
    ({"type": "play", "id": "1", "payload": {}, "time": "yesterday"}, "not an ISO"),
    ({"type": "play", "id": "1", "payload": {}, "time": "2026-11-26T14:00:00"}, "time zone"),
    ({"type": "play", "id": "1", "payload": {}, "extra": 1}, "unknown envelope field"),
])
def test_envelope_reasons(item: object, reason: str) -> None:
    out = envelope(item)
    assert isinstance(out, str) and reason in out


def test_envelope_and_line_round_trip() -> None:
    env = envelope({"type": "play", "id": "e1", "time": "2026-11-26T14:00:00Z", "payload": {"x": 1}})
    assert isinstance(env, Envelope)
    doc = json.loads(event_line(env, T0))
    assert doc == {"id": "e1", "type": "play", "time": "2026-11-26T14:00:00Z",
                   "received_at": "2026-11-26T14:05:30.000000Z", "payload": {"x": 1}}


def test_classify_accepts_events_and_names_poison() -> None:
    ok = classify(pulled({"id": "e1", "type": "play", "payload": {}}), "play", 1000)
    assert isinstance(ok, Accepted) and ok.event_id == "e1" and ok.received_at == T0
    assert "not JSON" in classify(pulled(b"\xff garbage"), "play", 1000).reason  # type: ignore[union-attr]
    assert "not an event line" in classify(pulled({"x": 1}), "play", 1000).reason  # type: ignore[union-attr]
    assert "oversized" in classify(pulled({"id": "e", "payload": "x" * 5000}), "play", 1000).reason  # type: ignore[union-attr]
    assert "wrong type" in classify(pulled({"id": "e", "type": "other", "payload": 1}), "play", 1000).reason  # type: ignore[union-attr]


def test_classify_falls_back_to_publish_time() -> None:
    m = Pulled("a", "m", b'{"id":"e","payload":1}', {}, T0)
    c = classify(m, "play", 1000)
    assert isinstance(c, Accepted) and c.received_at == T0


def test_group_by_receive_time_partition() -> None:
    events = [Accepted(pulled({}, T0 + timedelta(seconds=s), mid=str(s)), str(s), T0 + timedelta(seconds=s))
              for s in (0, 20, 40, 70)]
    groups = group_by_partition(events, MIN)
    assert sorted(groups) == [datetime(2026, 11, 26, 14, 5, tzinfo=UTC), datetime(2026, 11, 26, 14, 6, tzinfo=UTC)]
    assert [len(g) for _, g in sorted(groups.items())] == [2, 2]


def test_staging_name_is_deterministic_in_message_ids() -> None:
    start = MIN.floor(T0)
    a = staging_name("play", start, ["3", "1", "2"])
    assert a == staging_name("play", start, ["1", "2", "3"])
    assert a != staging_name("play", start, ["1", "2"])
    assert a.startswith("staging/play/20261126T1405/") and a.endswith(".jsonl.gz")
    assert parse_partition_key("20261126T1405") == start


def test_final_layout() -> None:
    assert final_prefix("play", MIN.floor(T0), MIN) == "events/play/dt=2026-11-26/hour=14/minute=05/"
    assert final_prefix("play", HOUR.floor(T0), HOUR) == "events/play/dt=2026-11-26/hour=14/"
    day = periods.partitioning("daily")
    assert final_prefix("play", day.floor(T0), day) == "events/play/dt=2026-11-26/"
    assert part_name("p/", 3) == "p/part-00003.jsonl.gz"


def test_batch_limits() -> None:
    lim = BatchLimits(max_messages=10, max_bytes=100, max_age_s=5)
    assert not lim.full(9, 99, 4.9)
    assert lim.full(10, 0, 0) and lim.full(0, 100, 0) and lim.full(0, 0, 5)


def test_watermark_is_latest_drain_lowered_by_live_holders() -> None:
    d1, d2 = T0, T0 + timedelta(minutes=2)
    assert watermark([], []) is None
    assert watermark([d1, d2], []) == d2
    held = T0 + timedelta(seconds=30)
    # a live lease (outlives the drain) holds the watermark at its oldest event
    assert watermark([d2], [(d2 + timedelta(seconds=10), held)]) == held
    # an expired lease (crashed worker) was redelivered before the drain: the drain covers it
    assert watermark([d2], [(d2 - timedelta(seconds=1), held)]) == d2
    assert watermark([d2], [(d2 + timedelta(seconds=10), None)]) == d2


def test_closable_needs_grace_and_watermark() -> None:
    start = MIN.floor(T0)
    end = start + timedelta(minutes=1)
    grace = timedelta(seconds=30)
    assert closable(start, MIN, grace, end + timedelta(seconds=29), end) is None
    assert closable(start, MIN, grace, end + grace, None) is None
    assert closable(start, MIN, grace, end + grace, end - timedelta(seconds=1)) is None
    assert closable(start, MIN, grace, end + grace, end) is not None


def test_next_open_skips_closed_periods() -> None:
    s = MIN.floor(T0)
    closed = {s, s + timedelta(minutes=1), s + timedelta(minutes=2)}
    assert next_open(s, MIN, closed) == s + timedelta(minutes=3)


def test_gzip_round_trip() -> None:
    assert gunzip_lines(gzip_lines([b"a", b"b"])) == [b"a", b"b"]


@pytest.mark.parametrize(("inputs", "workers"), [
    (dict(current=2, drained=True), 1),
    (dict(current=1, saturated=True), 2),
    (dict(current=3, saturated=True), 6),
    (dict(current=4, saturated=True), 8),
    (dict(current=8, saturated=True), 8),
    (dict(current=2, undelivered=100_000, rate_per_worker=500.0, budget_s=50), 4),
    (dict(current=2, undelivered=10_000_000, rate_per_worker=500.0, budget_s=50), 8),
    (dict(current=2, oldest_age_s=600.0), 4),
    (dict(current=3, oldest_age_s=1.0), 2),
    (dict(current=3, oldest_age_s=60.0), 3),
    (dict(current=0), 1),
    (dict(current=5, undelivered=0), 1),
])
def test_decide_workers(inputs: dict, workers: int) -> None:
    d = decide_workers(ScaleInputs(min_workers=1, max_workers=8, **inputs))
    assert d.workers == workers, d.reason
    assert 1 <= d.workers <= 8


def test_names() -> None:
    n = Names("play")
    assert (n.topic, n.subscription, n.dead_letter, n.quarantine, n.shadow, n.endpoint) == (
        "gabo-play", "gabo-play-delivery", "gabo-play-dead-letter", "gabo-play-quarantine", "gabo-play-shadow",
        "events.play")
    assert n.hold(n.dead_letter) == "gabo-play-dead-letter-hold"


def test_fair_shares_give_every_hungry_type_one_before_any_gets_two() -> None:
    assert fair_shares({"big": 40, "small": 1}, 4) == {"big": 3, "small": 1}
    assert fair_shares({"a": 2, "b": 2, "c": 0}, 10) == {"a": 2, "b": 2, "c": 0}
    assert fair_shares({"a": 5, "b": 5, "c": 5}, 2) == {"a": 1, "b": 1, "c": 0}
    assert fair_shares({"a": 5, "b": 5, "c": 5}, 2, start=2) == {"a": 1, "b": 0, "c": 1}  # rotates
    assert fair_shares({"a": 5}, None) == {"a": 5}


def test_interleave_alternates_types_and_rotates_its_start() -> None:
    orders = {"big": ["b1", "b2", "b3"], "small": ["s1"]}
    assert interleave(orders) == ["b1", "s1", "b2", "b3"]
    assert interleave(orders, start=1) == ["s1", "b1", "b2", "b3"]
    assert interleave({}) == []


def test_a_replayed_line_says_so_and_a_payload_cannot_fake_it() -> None:
    env = Envelope("play", "e1", {"x": {"replayed": True, "payload": 1}, "s": '"replayed":true,"payload":'},
                        "2026-11-26T14:00:00Z")
    at = datetime(2026, 11, 26, 14, tzinfo=UTC)
    assert is_replayed(event_line(env, at, replayed=True))
    assert not is_replayed(event_line(env, at))  # the payload holds the mark's text twice
    assert json.loads(event_line(env, at, replayed=True))["payload"] == env.payload
