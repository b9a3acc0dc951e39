"""Issue 23, items 1 and 2: what ingest accepts, delivery writes and closing closes — each finding of the
adversarial run reproduced in process, on the in-memory fakes (ingest → delivery → close)."""

from __future__ import annotations

import gzip
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from ferry.bootstrap import Services, bootstrap
from ferry.broker.base import Message
from ferry.clock import FixedClock
from ferry.config import Settings
from ferry.domain.manifests import EventType
from ferry.gabo.delivery.service import WorkOrder
from ferry.gabo.delivery.sink import LocalSink
from ferry.gabo.ingest.ledger import IN_FLIGHT_TTL, LEDGER, Ledger
from ferry.store.base import Where
from ferry.store.memory import MemoryStore

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 11, 26, 14, 5, 10, tzinfo=UTC)
MAX = 200  # the type's max_event_bytes
SCHEMA = {"type": "object"}


class Lands:
    """Datamon's port, recording what Gabo lands."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def land(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append((args, kwargs))
        return {}

    def landed(self, endpoint: str, partitions: Any) -> set[str]:
        return set()


class Stack:
    """Gabo on fakes, with the three steps a test drives: ingest a raw body, deliver until drained,
    close (inline) — and what a closed period holds."""

    def __init__(self, tmp: Path, max_event_bytes: int = MAX, applied_at: datetime = T0 - timedelta(minutes=1),
                 sink: Any = None) -> None:
        from ferry.gabo.delivery.broker import MemoryBroker

        self.clock = FixedClock(T0)
        self.broker = MemoryBroker(self.clock)
        self.svc: Services = bootstrap(Settings(store="memory", broker="memory", sink=f"file://{tmp}/sink"),
                                       store=MemoryStore(), clock=self.clock, broker=self.broker,
                                       sink=sink or LocalSink(tmp / "sink"), datamon=Lands())
        self.g = self.svc.gabo
        self.tmp = tmp
        et = EventType.model_validate({"metadata": {"name": "play", "owner": "team-a"},
                                       "spec": {"schema": SCHEMA, "format": "ndjson", "partitioning": "PT1M", "close_after": "PT10S",
                                                "max_event_bytes": max_event_bytes}})
        self.svc.apply.apply([et], applied_at)

    def ingest(self, raw: bytes, now: datetime = T0) -> Any:
        return self.g.ingest(raw, now)

    def deliver(self, now: datetime) -> Any:
        self.clock.set(now)
        return self.g.deliver(WorkOrder(event_type="play", budget_s=5, until_drained=True))

    def close(self, now: datetime) -> Any:
        self.clock.set(now)
        return self.g.close(now, "play", inline=True)[0]

    def closed_lines(self) -> list[bytes]:
        out = []
        sink = self.svc.sink
        for key in sink.list("events/play/"):
            if key.rsplit("/", 1)[-1].startswith("part-"):
                out += [ln for ln in gzip.decompress(sink.read(key)).split(b"\n") if ln]
        return out

    def closed_ids(self) -> list[str]:
        return [strict_json(ln)["id"] for ln in self.closed_lines()]

    def dead_lettered(self) -> list[Message]:
        return list(self.broker.topics.get("gabo-play-dead-letter", []))

    def in_flight(self) -> list[Any]:
        return self.svc.store.query(LEDGER, [Where("state", "==", "in_flight")])


def strict_json(line: bytes) -> Any:
    """A strict reader: numbers outside JSON's grammar (NaN, Infinity) are an error, as in most languages."""
    def refuse(token: str) -> Any:
        raise ValueError(f"not JSON: {token}")
    return json.loads(line, parse_constant=refuse)


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    return Stack(tmp_path)


AFTER = T0 + timedelta(minutes=2)  # the period of T0 ended, its grace passed
CLOSE = AFTER + timedelta(minutes=1)  # the drained pull at AFTER has settled (backlog.SETTLE)


def _run_through(stack: Stack, raw: bytes) -> Any:
    r = stack.ingest(raw)
    stack.deliver(T0 + timedelta(seconds=30))
    stack.deliver(AFTER)  # a drained pull after the period's end: the watermark passes it
    stack.close(CLOSE)
    return r


def _payload_of(size: int) -> dict[str, str]:
    """A payload whose compact UTF-8 JSON is exactly ``size`` bytes."""
    p = {"k": ""}
    p["k"] = "x" * (size - len(json.dumps(p, separators=(",", ":"))))
    assert len(json.dumps(p, separators=(",", ":")).encode()) == size
    return p


# ---------------------------------------------------------------------------------------------- item 1

def test_an_id_of_256_four_byte_chars_with_a_payload_of_max_event_bytes_is_delivered_and_closed(stack: Stack) -> None:
    """Found: ingest measured the payload, delivery the whole line — this event was answered accepted, then
    dead-lettered as oversized, and its period closed without it."""
    big_id = "\U0001F600" * 256
    ctrl_id = "\x01" * 256  # escaped as \\u0001: 6 bytes a character in the line
    events = [{"type": "play", "id": big_id, "payload": _payload_of(MAX)},
              {"type": "play", "id": ctrl_id, "payload": _payload_of(MAX), "time": "2026-11-26T14:05:00+00:00"}]
    r = _run_through(stack, b"\n".join(json.dumps(e).encode() for e in events))
    assert (r.accepted, r.rejected) == (2, [])
    assert stack.dead_lettered() == []
    assert sorted(stack.closed_ids()) == sorted([big_id, ctrl_id])


def test_a_time_with_100000_fraction_digits_is_rejected_at_ingest_not_dropped_at_delivery(stack: Stack) -> None:
    long_time = "2026-11-26T14:05:00." + "1" * 100_000 + "+00:00"
    events = [{"type": "play", "id": "long-time", "time": long_time, "payload": {}},
              {"type": "play", "id": "fine", "payload": {}}]
    r = _run_through(stack, json.dumps(events).encode())
    assert r.accepted == 1
    assert [(x["id"], "time" in x["reason"]) for x in r.rejected] == [("long-time", True)]
    assert stack.closed_ids() == ["fine"]
    assert stack.dead_lettered() == []


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999999", "-1e999999"])
def test_numbers_outside_jsons_grammar_are_rejected_per_event(stack: Stack, number: str) -> None:
    raw = (b'{"type":"play","id":"bad","payload":{"v":[1,' + number.encode() + b']}}\n'
           b'{"type":"play","id":"good","payload":{"v":1.5e300}}')
    r = _run_through(stack, raw)
    assert r.accepted == 1
    assert [x["id"] for x in r.rejected] == ["bad"]
    assert "JSON" in r.rejected[0]["reason"]
    # every closed line reads with a strict parser
    assert stack.closed_ids() == ["good"]


def test_the_ledger_counts_as_delivered_only_what_reached_staging(stack: Stack) -> None:
    """An accepted event delivery cannot write (here: its message corrupted on the topic) is dead-lettered
    — and its period does not close without it: the ledger counts it missing (found: counted delivered,
    closed with ``_SUCCESS`` lacking it, no alert)."""
    r = stack.ingest(json.dumps([{"type": "play", "id": "a", "payload": {}},
                                 {"type": "play", "id": "b", "payload": {}}]).encode())
    assert r.accepted == 2
    sub = stack.broker.subs["gabo-play-delivery"]
    mid, msg, at = sub.available[0]
    sub.available[0] = (mid, Message(b"\xff not a line", msg.attributes), at)
    stack.deliver(T0 + timedelta(seconds=30))
    stack.deliver(AFTER)
    rep = stack.close(CLOSE)
    assert len(stack.dead_lettered()) == 1
    assert "2026-11-26T14:05" not in [c.partition for c in rep.closed]
    assert any("missing" in (o.get("reason") or "") for o in rep.open), rep.to_dict()
    assert stack.closed_lines() == []


# ---------------------------------------------------------------------------------------------- item 2

SURROGATES = [
    b'{"type":"play","id":"\\ud800","payload":{}}',
    b'{"type":"play","id":"s-payload","payload":{"v":"\\udfff"}}',
    b'{"type":"play","id":"s-key","payload":{"\\ud83d":1}}',
    b'{"type":"play","id":"s-time","time":"2026-11-26T14:05:00\\ud800","payload":{}}',
]


def test_a_lone_surrogate_is_its_events_rejection_never_the_requests(stack: Stack) -> None:
    """Found: an id ``"\\ud800"`` failed the whole request with a 500 (UnicodeEncodeError) and left an
    in-flight ledger record that held the type's periods open."""
    good = [b'{"type":"play","id":"ok-%d","payload":{"s":"\\ud83d\\ude00 \\u0000"}}' % i for i in range(3)]
    r = _run_through(stack, b"\n".join([good[0], *SURROGATES, good[1], good[2]]))
    assert r.accepted == 3
    assert [x["index"] for x in r.rejected] == [1, 2, 3, 4]
    assert all("surrogate" in x["reason"] or "Unicode" in x["reason"] for x in r.rejected), r.rejected
    assert stack.in_flight() == []
    assert sorted(stack.closed_ids()) == ["ok-0", "ok-1", "ok-2"]
    json.dumps(r.to_dict())  # the answer itself encodes


def test_an_abandoned_in_flight_record_holds_a_period_no_longer_than_a_request_can_live(stack: Stack) -> None:
    """An ingest killed between its registration and its answer leaves an in-flight record: it may hold the
    period only as long as that request could have lived (the ingest function's timeout), not 5 minutes."""
    functions = {f["name"]: f for f in yaml.safe_load((ROOT / "infra" / "gabo.yaml").read_text())["functions"]}
    timeout = timedelta(seconds=functions["ingest"]["timeout_seconds"])
    assert IN_FLIGHT_TTL <= timeout + timedelta(seconds=15)
    stack.ingest(json.dumps([{"type": "play", "id": "a", "payload": {}}]).encode())
    Ledger(stack.svc.store).begin("killed-request", ["play"], T0)  # registered, never answered
    dies = T0 + timeout + timedelta(seconds=15)
    stack.deliver(T0 + timedelta(seconds=30))
    stack.deliver(T0 + timedelta(seconds=51))  # drained after the period's end (14:06)
    rep = stack.close(dies)
    assert "2026-11-26T14:05" in [c.partition for c in rep.closed], rep.to_dict()
    assert stack.closed_ids() == ["a"]


def test_an_unexpected_failure_after_the_registration_removes_it(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any error after the in-flight record was written (here: the publish) fails the request and removes
    the record: a client told to retry holds no period open."""
    def boom(topic: str, messages: Any) -> Any:
        raise RuntimeError("publish broke")
    monkeypatch.setattr(stack.svc.publisher, "publish", boom)
    with pytest.raises(RuntimeError):
        stack.ingest(json.dumps([{"type": "play", "id": "a", "payload": {}}]).encode())
    assert stack.in_flight() == []


def test_event_reasons_never_echo_unencodable_text(stack: Stack) -> None:
    r = stack.ingest(b'[{"type":"\\ud800","id":"\\ud800","payload":{}}, {"type":"nope","id":"\\udc00","payload":{}}]')
    assert r.accepted == 0 and len(r.rejected) == 2
    json.dumps(r.to_dict(), ensure_ascii=False).encode()  # strict UTF-8: the answer can be sent
    assert not re.search("[\ud800-\udfff]", json.dumps(r.to_dict(), ensure_ascii=False))
