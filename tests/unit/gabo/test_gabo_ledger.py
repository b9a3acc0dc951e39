"""The ingest ledger on fakes: a period closes only with every accepted id delivered and no ingest into
it in flight; a shortfall waits and then raises one owner-routed alert."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from ferry.errors import Conflict
from ferry.gabo.delivery.service import WorkOrder
from ferry.gabo.ingest.ledger import DELIVERED, LEDGER, Ledger
from ferry.gabo.ingest.service import IngestService

from .test_gabo_service import T0, body, env, ev  # noqa: F401  (env: the fixture)

__all__ = ["env"]


def _close_at(g: Any, clock: Any, at: Any) -> Any:
    clock.set(at)
    return g.close(clock.now())[0]


def test_ingest_records_what_it_accepted_per_request_and_type(env: Any) -> None:
    svc, g, broker, _, _ = env
    g.ingest(body([ev(i) for i in range(30)] + [{"type": "play", "id": "bad", "payload": {"track_id": 1}}]), T0)
    g.ingest(body([ev(i) for i in range(25, 40)]), T0)  # a retry with other batching: 5 ids again
    docs = [d for _, d in svc.store.query(LEDGER)]
    assert sorted(d["accepted"] for d in docs) == [15, 30] and {d["state"] for d in docs} == {"accepted"}
    assert {d["period"] for d in docs} == {"20261126T1405"}
    ledger = Ledger(svc.store).period("play", T0.replace(second=0), T0.replace(second=0) + timedelta(minutes=1), T0)
    assert ledger.count == 40 and ledger.requests == 2 and not ledger.in_flight


def test_a_period_with_accepted_events_not_delivered_does_not_close(env: Any) -> None:
    svc, g, broker, lands, clock = env
    g.ingest(body([ev(i) for i in range(20)]), T0)
    lost = broker.pull("gabo-play-delivery", 6)  # as if lost with the emulator's memory: never delivered
    broker.subs["gabo-play-delivery"].leased.clear()
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    # the period ended (14:06), its grace passed (14:06:10); the paused request could still be alive (its
    # record expires 70 s after T0, when the ingest function's 60 s timeout has ended it for sure)
    clock.set(T0 + timedelta(seconds=55))
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    rep = _close_at(g, clock, T0 + timedelta(seconds=65))
    assert "2026-11-26T14:05" not in {c.partition for c in rep.closed}  # (the empty 14:06 closes)
    assert "2026-11-26T14:05" not in {a[1] for a, _ in lands.calls}
    assert rep.open == [{"partition": "2026-11-26T14:05", "state": "waiting",
                         "reason": "6 accepted events of play 2026-11-26T14:05 are missing"}]
    assert not g.sink.list("events/play/dt=2026-11-26/hour=14/minute=05/")  # no finals, no _SUCCESS
    assert svc.store.query("datamon_alerts") == []  # not yet: it waits first
    # past the bound: one owner-routed alert naming the shortfall, however many closes run
    for minutes in (15, 16):
        rep = _close_at(g, clock, T0 + timedelta(minutes=minutes))
        assert "2026-11-26T14:05" not in {c.partition for c in rep.closed}
    alerts = [d for _, d in svc.store.query("datamon_alerts")]
    assert len(alerts) == 1 and alerts[0]["owner"] == "team-a" and alerts[0]["open"]
    assert alerts[0]["summary"].startswith("6 accepted events of play 2026-11-26T14:05 are missing")
    # the lost events come back (republished by a retrying client): the period closes, complete
    from ferry.broker.base import Message

    broker.publish("gabo-play", [Message(m.data, dict(m.attributes)) for m in lost])
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    clock.set(T0 + timedelta(minutes=17))
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    rep = _close_at(g, clock, T0 + timedelta(minutes=17, seconds=10))
    closed = {c.partition: c for c in rep.closed}
    assert closed["2026-11-26T14:05"].events == 20
    alert = svc.store.get("datamon_alerts", alerts[0]["id"])
    assert alert["open"] is False and alert["resolved_at"] == clock.now()


def test_an_ingest_in_flight_holds_its_period_open(env: Any) -> None:
    """Paused between registering (stamp) and publishing: the period waits for it, its events land in
    the period they were stamped in, not as late ones."""
    svc, g, broker, lands, clock = env
    release, paused = threading.Event(), threading.Event()

    class SlowPublisher:
        def publish(self, topic: str, messages: Any) -> Any:
            paused.set()
            assert release.wait(30)
            return broker.publish(topic, messages)

    slow = IngestService(svc.manifests, SlowPublisher(), Ledger(svc.store))
    from ferry.gabo.envelopes import parse_body

    items = parse_body(body([ev(i) for i in range(10)]))
    worker = threading.Thread(target=slow.ingest, args=(items, T0))
    worker.start()
    assert paused.wait(30)
    g.ingest(body([ev(100)]), T0)
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    # the period ended (14:06), its grace passed (14:06:10); the paused request could still be alive (its
    # record expires 70 s after T0, when the ingest function's 60 s timeout has ended it for sure)
    clock.set(T0 + timedelta(seconds=55))
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    rep = _close_at(g, clock, T0 + timedelta(seconds=65))
    assert "2026-11-26T14:05" not in {c.partition for c in rep.closed}
    # held by the ledger: in flight, or (its record is written beside the publish) its ids not delivered
    assert rep.open[0]["reason"] in ("1 ingest request(s) into play 2026-11-26T14:05 not yet confirmed",
                                     "10 accepted events of play 2026-11-26T14:05 are missing")
    # it mirrors events to the darkload shadow (darkload 0.5): in flight until its publishes are
    # confirmed, the one half of the ledger the shadow's closing reads
    from ferry.domain.manifests import EventType
    from ferry.gabo.ingest.ledger import InFlightGate

    et = svc.manifests.get("EventType", "play").model_as(EventType)
    start = T0.replace(second=0)
    assert InFlightGate(Ledger(svc.store))(et, start, start + timedelta(minutes=1), clock.now()) == \
        "1 ingest request(s) into play 2026-11-26T14:05 not yet confirmed"
    release.set()
    worker.join(30)
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    clock.set(T0 + timedelta(minutes=3))
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    rep = _close_at(g, clock, T0 + timedelta(minutes=3, seconds=10))
    closed = {c.partition: c for c in rep.closed}
    assert closed["2026-11-26T14:05"].events == 11 and closed["2026-11-26T14:05"].late == 0


def test_an_ingest_that_died_in_flight_expires(env: Any) -> None:
    svc, g, _, _, clock = env
    Ledger(svc.store).begin("dead-request", ["play"], T0)
    clock.set(T0 + timedelta(seconds=55))
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    rep = _close_at(g, clock, T0 + timedelta(seconds=65))
    assert "not yet confirmed" in rep.open[0]["reason"]
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    clock.set(T0 + timedelta(minutes=7))
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    rep = _close_at(g, clock, T0 + timedelta(minutes=7, seconds=10))
    assert rep.open == [] and rep.closed


def test_delivery_records_what_it_staged(env: Any) -> None:
    svc, g, _, _, _ = env
    g.ingest(body([ev(i) for i in range(12)]), T0)
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    docs = [d for _, d in svc.store.query(DELIVERED)]
    assert sum(d["count"] for d in docs) == 12 and {d["period"] for d in docs} == {"20261126T1405"}


def test_deleting_a_type_with_data_not_closed_is_refused_with_the_counts(env: Any) -> None:
    svc, g, broker, _, clock = env
    g.ingest(body([ev(i) for i in range(30)]), T0)
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5, max_messages=10))
    g.ingest(body([ev(i) for i in range(30, 35)]), T0)
    with pytest.raises(Conflict) as err:
        svc.apply.delete("EventType", "play", T0, "someone")
    assert err.value.exit_code == 3
    assert err.value.details["accepted"] == 35 and err.value.details["undelivered"] == 5
    assert err.value.details["unclosed_periods"] == 1 and err.value.details["staging_objects"] >= 1
    assert "35 accepted events in 1 period(s) not closed" in err.value.message
    assert svc.manifests.get("EventType", "play") is not None and "gabo-play-delivery" in broker.subs


def test_delete_with_drain_delivers_and_closes_everything_first(env: Any, tmp_path: Any) -> None:
    svc, g, broker, lands, clock = env
    g.ingest(body([ev(i) for i in range(30)]), T0)
    clock.set(T0 + timedelta(seconds=20))  # the period has not ended: it cannot close yet
    with pytest.raises(Conflict, match="the drain did not finish"):
        svc.apply.delete("EventType", "play", clock.now(), "someone", "drain")
    clock.set(T0 + timedelta(seconds=51))  # ended, not a second of grace: the ledger is the evidence
    out = svc.apply.delete("EventType", "play", clock.now(), "someone", "drain")
    assert out.name == "play" and svc.manifests.get("EventType", "play") is None
    assert "gabo-play-delivery" not in broker.subs
    assert [a[1] for a, _ in lands.calls] == ["2026-11-26T14:05"] and lands.calls[0][1]["records"] == 30


def test_delete_with_force_is_recorded_and_keeps_the_subscription(env: Any) -> None:
    svc, g, broker, _, _ = env
    g.ingest(body([ev(i) for i in range(7)]), T0)
    svc.apply.delete("EventType", "play", T0, "someone", "force")
    assert svc.manifests.get("EventType", "play") is None and "gabo-play-delivery" in broker.subs
    [(_, rec)] = svc.store.query("gabo_forced_deletes")
    assert rec["actor"] == "someone" and rec["outstanding"]["accepted"] == 7
    assert rec["keep_until"] == T0 + timedelta(days=7)


def test_a_force_deleted_types_subscription_is_kept_until_its_retention_ends(env: Any) -> None:
    svc, g, broker, _, clock = env
    g.ingest(body([ev(1)]), T0)
    svc.apply.delete("EventType", "play", T0, "someone", "force")
    assert g.reconcile(T0 + timedelta(days=6))["expired"] == []
    assert "gabo-play-delivery" in broker.subs  # not recreated nor deleted: kept
    expired = g.reconcile(T0 + timedelta(days=7, minutes=1))["expired"]
    assert "gabo-play-delivery" in expired  # with the type's other resources (retention.DELETED_RETENTION)
    assert not [n for n in [*broker.subs, *broker.topics] if n.startswith("gabo-play")]



def test_the_completeness_check_compares_shard_by_shard_in_bounded_memory() -> None:
    """Retries (an id accepted twice), redeliveries (delivered twice), ids missing and ids delivered that
    the ledger never accepted: the shard-by-shard comparison counts as the two whole sets would, and
    holds 8 bytes per digest plus one group's sets — not two sets of the period (measured)."""
    import random
    import tracemalloc

    from ferry.gabo.ingest.ledger import ShardedDigests, compare_by_shard, digest

    rng = random.Random(10)
    ids = [f"ev-{rng.getrandbits(48):012x}" for _ in range(100_000)]
    retried, lost, extra = ids[:5_000], set(ids[50_000:50_137]), [f"other-{i}" for i in range(50)]
    # ingest and delivery write their digests sorted (grouped a slice at a time); records written
    # unsorted (before) are grouped one digest at a time: the delivered side here
    accepted = [b"".join(sorted(digest(i) for i in part)) for part in (ids[j:j + 500] for j in range(0, len(ids), 500))]
    accepted.append(b"".join(sorted(digest(i) for i in retried)))
    kept = [i for i in ids if i not in lost]
    delivered = [b"".join(digest(i) for i in part) for part in (kept[j:j + 10_000] for j in range(0, len(kept), 10_000))]
    delivered += [b"".join(digest(i) for i in ids[:20_000] + extra)]  # a redelivered batch, and strays
    blobs = accepted + delivered

    def whole_sets() -> tuple[int, int, int]:
        want = {b[i:i + 8] for b in accepted for i in range(0, len(b), 8)}
        have = {b[i:i + 8] for b in delivered for i in range(0, len(b), 8)}
        return len(want), len(have), len(want - have)

    def by_shard() -> tuple[int, int, int]:
        want, have = ShardedDigests(), ShardedDigests()
        for b in accepted:
            want.add(b)
        for b in delivered:
            have.add(b)
        return compare_by_shard(want, have)

    peaks = {}
    for name, fn in (("whole", whole_sets), ("shards", by_shard)):
        tracemalloc.start()
        result = fn()
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        peaks[name + "_result"] = result  # type: ignore[assignment]
    assert peaks["shards_result"] == peaks["whole_result"] == (100_000, 100_000 - 137 + 50, 137)
    print(f"\ncompleteness check of 100,000 ids: two whole sets {peaks['whole'] / 1e6:.1f} MB, "
          f"shard by shard {peaks['shards'] / 1e6:.1f} MB (digests {sum(map(len, blobs)) / 1e6:.1f} MB)")
    assert peaks["shards"] < peaks["whole"] / 4


def test_the_registration_commits_beside_the_checks_and_before_the_stamp(env: Any) -> None:
    """The in-flight record is written while the events are checked, and the stamp waits for its commit
    (else a close between the stamp and the commit could miss the request); a failed publish removes it."""
    import time

    from ferry.gabo.envelopes import parse_body

    svc, _, broker, _, _ = env
    committed: list[float] = []

    class SlowLedger(Ledger):
        def begin(self, request_id: str, event_types: Any, since: Any) -> None:
            time.sleep(0.3)
            super().begin(request_id, event_types, since)
            committed.append(time.monotonic())

    stamped: list[float] = []

    def stamp() -> Any:
        stamped.append(time.monotonic())
        return T0

    items = parse_body(body([ev(i) for i in range(5)]))
    assert IngestService(svc.manifests, broker, SlowLedger(svc.store)).ingest(items, T0, stamp).accepted == 5
    assert committed and stamped and stamped[0] >= committed[0]

    class Failing:
        def publish(self, topic: str, messages: Any) -> Any:
            raise RuntimeError("publish lost")

    with pytest.raises(RuntimeError):
        IngestService(svc.manifests, Failing(), SlowLedger(svc.store)).ingest(items, T0, stamp)
    # the failed one's records (written beside its publish) are gone
    assert [d["state"] for _, d in svc.store.query(LEDGER)] == ["accepted"]


def test_the_missing_events_alert_is_a_notification_notify_routes(env: Any) -> None:  # noqa: F811
    """The shortfall alert reaches the owner's channels: what is published to ferry-alerts is a notification
    (PagerDuty Events v2-shaped, owner-routed) — it was the alert document itself, which notify dead-lettered
    as malformed — and its resolution follows under the same dedup key."""
    from ferry.broker.base import Message
    from ferry.notify.messages import AlertEvent

    svc, g, broker, lands, clock = env
    broker.ensure_topic("ferry-alerts")
    g.ingest(body([ev(i) for i in range(20)]), T0)
    lost = broker.pull("gabo-play-delivery", 6)
    broker.subs["gabo-play-delivery"].leased.clear()
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    clock.set(T0 + timedelta(minutes=2))
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    for minutes in (15, 16):  # past the bound, however many closes run: one alert
        _close_at(g, clock, T0 + timedelta(minutes=minutes))
    [trigger] = [AlertEvent.model_validate_json(m.data) for m in broker.topics["ferry-alerts"]]
    assert (trigger.event_action, trigger.owner, trigger.severity) == ("trigger", "team-a", "critical")
    assert trigger.dedup_key == "events.play@2026-11-26T14:05#missing" and "6 accepted events" in trigger.summary
    broker.publish("gabo-play", [Message(m.data, dict(m.attributes)) for m in lost])
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    clock.set(T0 + timedelta(minutes=17))
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    _close_at(g, clock, T0 + timedelta(minutes=17, seconds=10))
    events = [AlertEvent.model_validate_json(m.data) for m in broker.topics["ferry-alerts"]]
    assert [(e.event_action, e.dedup_key) for e in events] == [("trigger", trigger.dedup_key),
                                                               ("resolve", trigger.dedup_key)]
