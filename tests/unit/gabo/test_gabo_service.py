"""Gabo's services end to end on fakes: apply → provision, ingest → deliver → close → land, scale."""

from __future__ import annotations

import functools
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ferry.bootstrap import Services, bootstrap
from ferry.broker.base import Message
from ferry.clock import FixedClock
from ferry.config import Settings
from ferry.domain.manifests import EventType
from ferry.errors import BadRequest, ValidationError
from ferry.gabo.closing.service import CLOSE_ORDERS_TOPIC
from ferry.gabo.delivery.broker import MemoryBroker, Unanswered
from ferry.gabo.delivery.service import WorkOrder
from ferry.gabo.delivery.sink import LocalSink
from ferry.gabo.service import Gabo, decode_close_order
from ferry.gabo.tables import parquet
from ferry.store.memory import MemoryStore

T0 = datetime(2026, 11, 26, 14, 5, 10, tzinfo=UTC)
SCHEMA = {"type": "object", "required": ["track_id"], "properties": {"track_id": {"type": "string"}}}


class Lands:
    """Datamon's port, recording what Gabo lands."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def land(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append((args, kwargs))
        return {}

    def landed(self, endpoint: str, partitions: Any) -> set[str]:
        return set()


@pytest.fixture
def env(tmp_path: Path) -> tuple[Services, Gabo, MemoryBroker, Lands, FixedClock]:
    clock = FixedClock(T0)
    broker = MemoryBroker(clock)
    lands = Lands()
    svc = bootstrap(Settings(store="memory", broker="memory", sink=f"file://{tmp_path}/sink"), store=MemoryStore(),
                    clock=clock, broker=broker, sink=LocalSink(tmp_path / "sink"), datamon=lands)
    g = svc.gabo

    et = EventType.model_validate({"metadata": {"name": "play", "owner": "team-a"},
                                   "spec": {"schema": SCHEMA, "partitioning": "PT1M", "close_after": "PT10S",
                                            "max_event_bytes": 200, "darkload": 0.5}})
    svc.apply.apply([et], T0)
    broker.ensure_topic(CLOSE_ORDERS_TOPIC)
    g.close = functools.partial(close_and_run_orders, g, broker)  # type: ignore[method-assign]
    return svc, g, broker, lands, clock


def close_and_run_orders(g: Gabo, broker: MemoryBroker, now: datetime, name: str | None = None) -> list[Any]:
    """What the scheduled close and the close-shard function do together: decide and publish close orders,
    then run each published order (the function), adding what they completed to the reports."""
    seen = len(broker.topics[CLOSE_ORDERS_TOPIC])
    reports = Gabo.close(g, now, name)
    for m in broker.topics[CLOSE_ORDERS_TOPIC][seen:]:
        order = decode_close_order(m.data)
        done = g.close_shard(order, now)
        if done is not None:
            next(r for r in reports if r.event_type == order.event_type).closed.append(done)
    return reports


def body(events: list[dict[str, Any]]) -> bytes:
    return b"\n".join(json.dumps(e).encode() for e in events)


def ev(i: int, **payload: Any) -> dict[str, Any]:
    return {"type": "play", "id": f"e{i}", "payload": {"track_id": f"t{i}", **payload}}


def test_apply_provisions_topics_subscriptions_and_endpoint(env: Any) -> None:
    svc, g, broker, _, _ = env
    assert {"gabo-play", "gabo-play-dead-letter", "gabo-play-quarantine", "gabo-play-shadow"} <= set(broker.topics)
    sub = broker.subs["gabo-play-delivery"].spec
    assert (sub.topic, sub.dead_letter_topic, sub.max_delivery_attempts, sub.retention_s) == (
        "gabo-play", "gabo-play-dead-letter", 5, 7 * 86400)
    assert "gabo-play-quarantine-hold" in broker.subs and "gabo-play-dead-letter-hold" in broker.subs
    ep = svc.manifests.get("Endpoint", "events.play")
    assert ep is not None and ep.owner == "team-a"
    assert ep.manifest["spec"]["partitioning"] == "PT1M"
    # applying again changes nothing and re-converges a lost topic
    del broker.topics["gabo-play-quarantine"]
    svc.apply.apply([ep.model() and svc.manifests.get("EventType", "play").model()], T0)  # type: ignore[union-attr]
    assert "gabo-play-quarantine" in broker.topics


def test_delete_stops_delivery_but_keeps_topics_and_endpoint(env: Any) -> None:
    svc, _, broker, _, _ = env
    svc.apply.delete("EventType", "play", T0, "someone")
    assert "gabo-play-delivery" not in broker.subs
    assert "gabo-play" in broker.topics
    assert svc.manifests.get("Endpoint", "events.play") is not None


def test_ingest_validates_per_event_and_quarantines_with_reason(env: Any) -> None:
    _, g, broker, _, _ = env
    events = [ev(1), ev(2), {"type": "play", "id": "bad", "payload": {"track_id": 5}},
              {"type": "nope", "id": "x", "payload": {}}, {"type": "play", "id": "big", "payload": {"track_id": "x" * 500}},
              {"id": "no-type", "payload": {}}]
    r = g.ingest(body(events), T0)
    assert (r.received, r.accepted, len(r.rejected), r.quarantined) == (6, 2, 4, 2)
    reasons = {x["id"]: x["reason"] for x in r.rejected}
    assert "schema" in reasons["bad"] and "track_id" in reasons["bad"]
    assert "unknown event type" in reasons["x"]
    assert "max_event_bytes" in reasons["big"]
    assert "type is required" in reasons["no-type"]
    assert [m.attributes["event_id"] for m in broker.topics["gabo-play"]] == ["e1", "e2"]
    assert broker.topics["gabo-play"][0].attributes["received_at"] == "2026-11-26T14:05:10.000000Z"
    q = broker.topics["gabo-play-quarantine"]
    assert {m.attributes["event_id"] for m in q} == {"bad", "big"}
    assert all(m.attributes["reason"] for m in q)
    assert 0 < len(broker.topics["gabo-play-shadow"]) <= 2 or r.shadowed == 0


def test_ingest_malformed_body_is_400(env: Any) -> None:
    with pytest.raises(BadRequest):
        env[1].ingest(b"{not json", T0)


def test_deliver_close_land_with_duplicates_poison_and_late(env: Any, tmp_path: Path) -> None:
    svc, g, broker, lands, clock = env
    g.ingest(body([ev(i) for i in range(50)] + [ev(3), ev(7)]), T0)  # two duplicated ids
    broker.publish("gabo-play", [Message(b"\x00poison", {"event_type": "play"})])
    rep = g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    assert (rep.written, rep.dead_lettered, rep.drained) == (52, 1, True)
    assert broker.topics["gabo-play-dead-letter"][0].attributes["reason"].startswith("unparseable")
    staging = g.sink.list("staging/play/")
    assert staging and all(k.startswith("staging/play/20261126T1405/") for k in staging)

    # too early: grace not passed
    clock.set(T0 + timedelta(seconds=55))
    assert g.close(clock.now())[0].closed == []
    # grace passed, but the drain was not after the period's end: nothing may close yet
    clock.set(T0 + timedelta(minutes=1))
    assert g.close(clock.now())[0].closed == []
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    clock.set(T0 + timedelta(minutes=2))
    rep = g.close(clock.now())[0]
    closed = {c.partition: c for c in rep.closed}
    assert closed["2026-11-26T14:05"].events == 50 and closed["2026-11-26T14:05"].duplicates == 2
    prefix = tmp_path / "sink/events/play/dt=2026-11-26/hour=14/minute=05"
    assert not list(prefix.glob("part-*.jsonl.gz"))  # Parquet is the default format
    ids = [i for p in sorted(prefix.glob("part-*.parquet")) for i in parquet.ids(p.read_bytes())]
    assert sorted(ids) == sorted(f"e{i}" for i in range(50))
    marker = json.loads((prefix / "_SUCCESS").read_text())
    assert (marker["events"], marker["duplicates_dropped"], marker["late_events"]) == (50, 2, 0)
    assert g.sink.list("staging/play/") == []
    landed = {a[1]: kw for a, kw in lands.calls}
    assert landed["2026-11-26T14:05"]["records"] == 50 and landed["2026-11-26T14:05"]["source"] == "gabo"
    assert lands.calls[0][0][0] == "events.play"

    # closing twice is harmless
    n = len(lands.calls)
    assert g.close(clock.now())[0].closed == []
    assert len(lands.calls) == n

    # a late event of the closed 14:05 → counted late in the next open period
    g.ingest(body([ev(999)]), T0)
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    clock.set(T0 + timedelta(minutes=3))
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    rep = g.close(clock.now())[0]
    assert rep.late_moved == 1
    late = [c for c in rep.closed if c.late]
    assert len(late) == 1 and late[0].events == 1 and late[0].partition > "2026-11-26T14:05"


def test_sharded_delivery_puts_every_id_in_its_shard_in_fewer_larger_objects(env: Any) -> None:
    """Shard = top bits of crc32(id), every copy of an id in one shard; a sharded batch holds
    min(shards, SHARDED_BATCH_FACTOR) times max_messages (fewer flushes, one object per shard each); the
    ledger's delivered digests are the ids'; closing keeps every id once."""
    from ferry.gabo.closing.formats.ndjson import gunzip_lines
    from ferry.gabo.delivery.batching import BatchLimits
    from ferry.gabo.delivery.service import EXTEND_EVERY_S, SHARDED_BATCH_FACTOR
    from ferry.gabo.ingest import ledger
    from ferry.gabo.names import shard_of

    svc, g, broker, lands, clock = env
    n, bits = 400, 2
    g.ingest(body([ev(i) for i in range(n)] + [ev(5), ev(77)]), T0)  # two retried ids
    assert WorkOrder(event_type="play", shard_bits=bits, max_messages=50).limits().max_messages == 50 * 4
    assert WorkOrder(event_type="play", shard_bits=9, max_messages=50).limits().max_messages == 50 * SHARDED_BATCH_FACTOR
    assert WorkOrder(event_type="play", shard_bits=bits).limits().max_age_s < EXTEND_EVERY_S  # no lease extension
    assert WorkOrder(event_type="play", max_messages=50).limits() == BatchLimits(50, 64 * 1024 * 1024, 10.0)
    rep = g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5, max_messages=50, shard_bits=bits))
    assert rep.written == n + 2
    objects = g.sink.list("staging/play/")
    seen: list[str] = []
    for k in objects:
        shard = k.split("/")[3]
        ids = [json.loads(x)["id"] for x in gunzip_lines(g.sink.read(k))]
        assert ids and all("s" + shard_of(i, bits) == shard for i in ids), (k, ids)
        seen += ids
    assert sorted(seen) == sorted([f"e{i}" for i in range(n)] + ["e5", "e77"])
    # 402 messages in batches of 200: 3 flushes of at most 4 objects (not 9 flushes of 50)
    assert len(objects) <= 3 * 4 and {k.split("/")[3] for k in objects} == {"s00", "s01", "s10", "s11"}
    start = datetime(2026, 11, 26, 14, 5, tzinfo=UTC)
    delivered = ledger.Ledger(svc.store).delivered_digests("play", start)
    assert set().union(*(delivered.take(g) for g in range(delivered.GROUPS))) == ledger.digests(
        f"e{i}" for i in range(n))
    clock.set(T0 + timedelta(minutes=2))
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    clock.set(T0 + timedelta(minutes=2, seconds=10))
    [c] = [c for c in g.close(clock.now())[0].closed if c.partition == "2026-11-26T14:05"]
    assert (c.events, c.duplicates, c.shards) == (n, 2, 4)


def test_crash_after_marker_before_cleanup_is_finished_by_rerun(env: Any) -> None:
    svc, g, broker, lands, clock = env
    g.ingest(body([ev(i) for i in range(10)]), T0)
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    keys = g.sink.list("staging/play/")
    backup = {k: g.sink.read(k) for k in keys}
    clock.set(T0 + timedelta(minutes=2))
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    clock.set(T0 + timedelta(minutes=2, seconds=10))  # drains are trusted after a few seconds' settle
    assert g.close(clock.now())[0].closed
    for k, v in backup.items():  # as if the staging deletes never happened
        g.sink.write(k, v)
    rep = g.close(clock.now())[0]
    assert rep.cleaned == len(keys) and rep.late_moved == 0 and rep.closed == []
    assert g.sink.list("staging/play/") == []


def test_redelivered_batch_after_crash_is_deduplicated(env: Any) -> None:
    svc, g, broker, lands, clock = env
    g.ingest(body([ev(i) for i in range(20)]), T0)
    # a worker pulled 8, wrote nothing and died: its leases expire, everything comes back
    broker.pull("gabo-play-delivery", 8)
    broker.drop_leases("gabo-play-delivery")
    # another wrote a batch but died before acking
    got = broker.pull("gabo-play-delivery", 5)
    from ferry.gabo.closing.formats.ndjson import gzip_lines
    from ferry.gabo.names import staging_name

    start = datetime(2026, 11, 26, 14, 5, tzinfo=UTC)
    g.sink.write(staging_name("play", start, [m.message_id for m in got]), gzip_lines(m.data for m in got))
    broker.drop_leases("gabo-play-delivery")
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5, max_messages=7))
    clock.set(T0 + timedelta(minutes=2))
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    clock.set(T0 + timedelta(minutes=2, seconds=10))
    rep = g.close(clock.now())[0]
    c = next(c for c in rep.closed if c.partition == "2026-11-26T14:05")
    assert (c.events, c.duplicates) == (20, 5)


def test_scale_publishes_work_orders_and_records_decisions(env: Any) -> None:
    svc, g, broker, _, clock = env
    broker.ensure_topic("gabo-work-orders")
    g.ingest(body([ev(i) for i in range(2000)]), T0)
    d0 = g.scale(clock.now())[0]
    assert d0["workers"] == 1
    clock.set(T0 + timedelta(seconds=5))  # the events have waited 5 s: the worker is behind them
    g.deliver(WorkOrder(event_type="play", budget_s=0.05, max_messages=10))
    clock.set(T0 + timedelta(seconds=10))
    # the worker's last pulls were full when its budget ended: backlog remains → more workers
    up = g.scale(clock.now())[0]
    assert up["workers"] == 2 and "backlog" in up["reason"]
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    clock.set(T0 + timedelta(seconds=20))
    down = g.scale(clock.now())[0]
    assert down["workers"] == 1 and "drained" in down["reason"]
    orders = [json.loads(m.data) for m in broker.topics["gabo-work-orders"]]
    primary = [o for o in orders if o["stream"] == "primary"]
    assert len(primary) == 1 + 2 + 1
    assert primary[0]["event_type"] == "play"
    # the darkload shadow (spec.darkload 0.5) is scaled on its own backlog: one order a tick, after the primary's
    assert [o["stream"] for o in orders[:2]] == ["primary", "darkload"]
    assert len(orders) - len(primary) == 3 and down["darkload"]["workers"] == 1


class SlowStart(MemoryBroker):
    """A broker whose first ``unanswered`` pulls get no answer in time (a loaded service)."""

    def __init__(self, clock: Any, unanswered: int) -> None:
        super().__init__(clock)
        self.unanswered = unanswered

    def pull(self, subscription: str, max_messages: int, timeout_s: float = 5.0) -> list[Any]:
        if self.unanswered:
            self.unanswered -= 1
            return Unanswered()
        return super().pull(subscription, max_messages, timeout_s)


def test_a_spent_budget_still_gets_an_answered_pull_and_unanswered_pulls_are_no_drain(env: Any) -> None:
    svc, g, broker, _, clock = env
    slow = SlowStart(clock, unanswered=2)
    slow.topics, slow.subs = broker.topics, broker.subs
    g2 = bootstrap(svc.settings, store=svc.store, clock=clock, broker=slow, publisher=svc.publisher,
                   sink=g.sink, datamon=Lands()).gabo
    g.ingest(body([ev(i) for i in range(500)]), T0)
    clock.set(T0 + timedelta(seconds=30))  # the events wait: the worker is behind them
    r = g2.deliver(WorkOrder(event_type="play", budget_s=1e-9, max_messages=10))
    # the budget was spent before the first pull: two unanswered pulls, then one answered and full
    assert (r.pulls, r.pulled, r.written, r.saturated, r.drained) == (3, 10, 10, True, False)
    assert not any(d.get("drained_at") for d in g.state.recent_runs("play", T0 - timedelta(hours=1)))
    slow.unanswered = 5
    r = g2.deliver(WorkOrder(event_type="play", budget_s=1e-9, until_drained=True))
    assert (r.pulls, r.pulled, r.drained) == (3, 0, False)  # never answered: gives up, claims nothing


@pytest.mark.parametrize(("got", "want", "full"), [(50, 50, True), (49, 50, False), (100, 1000, True),
                                                   (99, 1000, False), (1000, 1000, True)])
def test_pull_full_allows_for_the_services_answer_cap(got: int, want: int, full: bool) -> None:
    from ferry.gabo.delivery.batching import pull_full

    assert pull_full(got, want) is full


def test_a_batch_streams_lines_into_gzip_and_tracks_the_oldest_event_of_any_pull() -> None:
    from ferry.domain import periods
    from ferry.gabo.closing.formats.ndjson import gunzip_lines
    from ferry.gabo.delivery.batching import Pulled
    from ferry.gabo.delivery.service import _Batch
    from ferry.gabo.envelopes import Envelope, event_line, iso

    et = EventType.model_validate({"metadata": {"name": "play", "owner": "team-a"},
                                   "spec": {"schema": SCHEMA, "partitioning": "PT1M", "max_event_bytes": 200}})

    def pulled(i: int, at: datetime) -> Pulled:
        line = event_line(Envelope("play", f"e{i}", {"track_id": "t"}), at)
        return Pulled(f"a{i}", f"m{i}", line, {"received_at": iso(at)}, at)

    batch = _Batch(et, periods.partitioning("PT1M"))
    first = [pulled(i, T0 + timedelta(seconds=30)) for i in range(3)]
    assert batch.add(first) and batch.oldest == T0 + timedelta(seconds=30)
    assert not batch.add([pulled(3, T0 + timedelta(seconds=40))])
    # a redelivered older event in a later pull lowers what the worker reports holding
    assert batch.add([pulled(4, T0 - timedelta(minutes=5)), Pulled("a5", "m5", b"junk", {}, T0)])
    assert batch.oldest == T0 - timedelta(minutes=5)
    assert len(batch) == 6 and len(batch.poison) == 1
    start = T0.replace(second=0)
    ids, gz = batch.groups[(start, "")]
    assert ids == ["m0", "m1", "m2", "m3"]
    assert gunzip_lines(gz.finish()) == [m.data for m in first] + [pulled(3, T0 + timedelta(seconds=40)).data]


def test_every_failure_on_one_event_is_that_events_rejection(env: Any) -> None:
    """One event of each malformed kind among 99 valid ones, as a JSON array: 99 accepted, each bad
    one rejected with its own reason, and the catastrophic pattern costs microseconds (RE2)."""
    svc, g, broker, _, _ = env
    et = EventType.model_validate({"metadata": {"name": "word", "owner": "team-a"},
                                   "spec": {"schema": {"type": "object", "properties": {
                                       "w": {"type": "string", "pattern": "^(a+)+$"}}}, "max_event_bytes": 200}})
    svc.apply.apply([et], T0)
    valid = [ev(i) for i in range(99)]
    deep: Any = {}
    for _ in range(1000):
        deep = {"d": deep}
    bad = [{"type": "a/b", "id": "slash", "payload": {}},
           {"type": "play", "id": "deep", "payload": deep},
           {"type": "play", "id": "big", "payload": {"track_id": "x" * 500}},
           {"type": "play", "id": "schema", "payload": {"track_id": 5}},
           {"type": "word", "id": "regex", "payload": {"w": "a" * 26 + "!"}}]
    items = valid[:50] + bad + valid[50:]
    started = time.monotonic()
    r = g.ingest(("[" + ",".join(json.dumps(x) if x["id"] != "deep" else
                                 '{"type":"play","id":"deep","payload":' + "[" * 1000 + "]" * 1000 + "}"
                                 for x in items) + "]").encode(), T0)
    assert time.monotonic() - started < 5
    assert (r.received, r.accepted) == (104, 99)
    # an element too deep to parse has no id to echo: its index says which it was
    reasons = {x["id"] or items[x["index"]]["id"]: x["reason"] for x in r.rejected}
    assert set(reasons) == {"slash", "deep", "big", "schema", "regex"}
    assert "not an event type name" in reasons["slash"]
    assert "deeper than 64" in reasons["deep"]
    assert "max_event_bytes" in reasons["big"]
    # the field and the rule, never the payload's value
    assert "track_id" in reasons["schema"] and "fails pattern" in reasons["regex"]
    assert len(broker.topics["gabo-play"]) == 99
    # the same payload depth that json can parse (below the recursion limit) is refused per event too
    r = g.ingest(body([ev(200), {"type": "play", "id": "d2", "payload": _nested(200)}]), T0)
    assert r.accepted == 1 and "deeper than 64" in r.rejected[0]["reason"]


def _nested(depth: int) -> Any:
    out: Any = 1
    for _ in range(depth):
        out = [out]
    return out


@pytest.mark.parametrize(("schema", "reason"), [
    ({"$ref": "#/$defs/missing"}, "does not resolve"),
    ({"$ref": "https://example.com/elsewhere.json"}, "does not resolve"),
    ({"properties": {"w": {"pattern": "(a)\\1"}}}, "linear-time engine"),
    ({"patternProperties": {"(?=x)": {}}}, "linear-time engine"),
    ({"type": "strnig"}, "not a valid JSON Schema"),
])
def test_apply_refuses_schemas_ingest_could_not_evaluate(env: Any, schema: dict[str, Any], reason: str) -> None:
    from ferry.services.apply import parse_documents

    doc = {"kind": "EventType", "metadata": {"name": "bad", "owner": "team-a"}, "spec": {"schema": schema}}
    with pytest.raises(ValidationError) as err:
        parse_documents([doc])
    assert reason in json.dumps(err.value.details)


def test_capacity_reads_the_runs_and_alerts_the_owner_once(env: Any) -> None:
    svc, g, broker, _, clock = env
    g.ingest(body([ev(i) for i in range(300)]), T0)
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    [c] = g.capacity(clock.now())
    assert c.rate_eps["5m"] == 1.0 and c.rate_eps["1m"] == 5.0 and c.rate_bps["5m"] > 0
    assert c.peak_eps == 5.0 and c.per_worker_eps and c.ok is True
    # a type whose max_workers cannot carry 10×: fake a slow worker
    run = next(iter(svc.store._data["gabo_runs"].values()))
    run["rate"] = 0.5
    [c] = g.capacity(clock.now())
    assert c.ok is False and c.raise_["max_workers"] == 100, c  # 10 × 5/s at 0.5/s per worker
    broker.ensure_topic("ferry-alerts")
    assert g.capacity_alerts([c], clock.now()) == 1
    assert g.capacity_alerts([c], clock.now() + timedelta(minutes=5)) == 0  # once a day
    [msg] = broker.topics["ferry-alerts"]
    assert msg.attributes["owner"] == "team-a" and msg.attributes["endpoint"] == "events.play"


def test_close_gates_keep_a_period_open_with_their_reason_then_let_it_close(env: Any) -> None:
    """The seams where completeness checks (an ingest ledger) join closing: before the claim, and after the
    merge, before completion — a refused completion releases the claim; a later close merges again."""
    svc, g, broker, lands, clock = env
    g.ingest(body([ev(i) for i in range(30)] + [ev(1)]), T0)
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    clock.set(T0 + timedelta(minutes=2))
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    clock.set(T0 + timedelta(minutes=2, seconds=10))
    g.close_gate = lambda et, start, end, now: "ledger: 5 accepted events not delivered yet"
    rep = g.close(clock.now())[0]
    assert not rep.closed and {"partition": "2026-11-26T14:05", "state": "waiting",
                               "reason": "ledger: 5 accepted events not delivered yet"} in rep.open
    seen: list[dict[str, int]] = []
    g.close_gate = lambda et, start, end, now: None
    g.completion_gate = lambda et, start, totals, now: seen.append(totals) or "ledger: 31 lines < 35 accepted"
    rep = g.close(clock.now())[0]
    assert not any(c.partition == "2026-11-26T14:05" for c in rep.closed)
    assert all(a[1] != "2026-11-26T14:05" for a, _ in lands.calls)
    assert {"lines": 31, "events": 30, "duplicates": 1, "late": 0} in seen
    assert g.state.claims("play", [T0.replace(second=0)]) == {}  # released: a later close claims it afresh
    g.completion_gate = lambda et, start, totals, now: None
    rep = g.close(clock.now())[0]
    [c] = [c for c in rep.closed if c.partition == "2026-11-26T14:05"]
    assert (c.events, c.duplicates) == (30, 1)
    assert [a[1] for a, _ in lands.calls].count("2026-11-26T14:05") == 1


def test_close_orders_of_all_types_are_published_interleaved_then_marked_ordered(env: Any) -> None:
    """One close run decides every type first, then publishes their orders round-robin: a big period's
    eight shards never queue ahead of a small type's one (whose period fans out: more than
    INLINE_MAX_OBJECTS staging objects)."""
    from fakes.staging import write_period
    from ferry.gabo.closing.service import INLINE_MAX_OBJECTS

    svc, g, broker, lands, clock = env
    small = EventType.model_validate({"metadata": {"name": "tiny", "owner": "team-a"},
                                      "spec": {"partitioning": "PT1M", "close_after": "PT10S"}})
    svc.apply.apply([small], T0)
    start = datetime(2026, 11, 26, 14, 5, tzinfo=UTC)
    write_period(g.sink, "play", start, 800, 3, batch=100)
    assert write_period(g.sink, "tiny", start, 60, 0, batch=10).objects > INLINE_MAX_OBJECTS
    clock.set(T0 + timedelta(minutes=2))
    for name in ("play", "tiny"):
        g.deliver(WorkOrder(event_type=name, until_drained=True, budget_s=5))
    clock.set(T0 + timedelta(minutes=2, seconds=10))
    seen = len(broker.topics[CLOSE_ORDERS_TOPIC])
    Gabo.close(g, clock.now())  # decide and publish only
    queue = [decode_close_order(m.data) for m in broker.topics[CLOSE_ORDERS_TOPIC][seen:]]
    assert len(queue) == 8 + 1 and "tiny" in {o.event_type for o in queue[:2]}
    assert all(g.state.claims(n, [start])[start]["ordered_at"] for n in ("play", "tiny"))
    for o in queue:
        g.close_shard(o, clock.now())
    assert sorted(a[0] for a, _ in lands.calls if a[1] == "2026-11-26T14:05") == ["events.play", "events.tiny"]


def test_full_pulls_of_fresh_events_are_keeping_pace_not_a_backlog(env: Any) -> None:
    """A worker at the head of the subscription gets full pulls too (whatever arrived while the previous
    pull was under way): only full pulls of events older than BEHIND_LAG_S mean a backlog waits."""
    from ferry.gabo.delivery.batching import BEHIND_LAG_S, pull_behind

    svc, g, broker, _, clock = env
    g.ingest(body([ev(i) for i in range(500)]), T0)
    fresh = g.deliver(WorkOrder(event_type="play", budget_s=1e-9, max_messages=10))
    assert (fresh.pulled, fresh.saturated) == (10, False)
    clock.set(T0 + timedelta(seconds=BEHIND_LAG_S + 1))
    behind = g.deliver(WorkOrder(event_type="play", budget_s=1e-9, max_messages=10))
    assert (behind.pulled, behind.saturated) == (10, True)
    assert not pull_behind(99, 1000, 5.0) and pull_behind(100, 1000, 5.0)
    assert not pull_behind(100, 1000, 0.2) and not pull_behind(100, 1000, None)
