"""Darkloading: the pure comparison, and the shadow stream delivered, closed and reported on fakes."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ferry.domain.manifests import EventType
from ferry.errors import BadRequest
from ferry.gabo.closing.formats.ndjson import gunzip_lines, gzip_lines
from ferry.gabo.closing.merge import merge_shard
from ferry.gabo.darkload import service as darkload
from ferry.gabo.delivery.service import WorkOrder
from ferry.gabo.delivery.sink import LocalSink, PrefixedSink
from ferry.gabo.envelopes import Envelope, event_line
from ferry.gabo.names import DARKLOAD, STREAMS, sampled, shard_labels, shard_of, staging_name
from ferry.gabo.state import GaboState

from .test_gabo_service import SCHEMA, T0, body, env  # noqa: F401  (the env fixture)

# ------------------------------------------------------------------------------------- the comparison


def test_sampling_is_a_stable_hash_of_the_id() -> None:
    ids = [f"id-{i}" for i in range(10_000)]
    half = [i for i in ids if sampled(i, 0.5)]
    assert 4_700 < len(half) < 5_300
    assert half == [i for i in ids if sampled(i, 0.5)]  # the same ids, every time
    assert set(i for i in ids if sampled(i, 0.1)) <= set(half)  # a smaller fraction, a subset
    assert all(sampled(i, 1.0) for i in ids) and not any(sampled(i, 0.0) for i in ids)


def test_a_shadow_holding_the_sampled_ids_matches() -> None:
    primary = [f"e{i}" for i in range(1000)]
    picked = [i for i in primary if sampled(i, 0.3)]
    c = darkload.compare_ids(reversed(picked), primary, 0.3)
    assert c.matches and (c.primary, c.sampled, c.shadow, c.missing, c.extra) == (1000, len(picked), len(picked), 0, 0)


def test_missing_and_extra_ids_are_counted_all_and_named_up_to_the_cap() -> None:
    primary = [f"e{i}" for i in range(500)]
    shadow = primary[30:] + ["x3", "x1", "x2"]  # 30 lost, three the primary never closed
    c = darkload.compare_ids(shadow, primary, 1.0, cap=10)
    assert not c.matches
    assert (c.missing, c.extra, c.shadow, c.sampled) == (30, 3, 473, 500)
    assert c.missing_ids == [f"e{i}" for i in range(10)] and c.extra_ids == ["x1", "x2", "x3"]


def test_unsampled_primary_ids_are_not_expected_in_the_shadow() -> None:
    primary = [f"e{i}" for i in range(400)]
    unsampled = [i for i in primary if not sampled(i, 0.25)]
    c = darkload.compare_ids([i for i in primary if sampled(i, 0.25)], primary, 0.25)
    assert c.matches and c.sampled == 400 - len(unsampled)
    wrong = darkload.compare_ids([*unsampled[:2]], [], 0.25)  # a shadow event ingest would not have sampled
    assert (wrong.extra, wrong.extra_ids) == (2, sorted(unsampled[:2]))


def _close(sink: LocalSink, prefix: str, ids: list[str], bits: int) -> None:
    """Write ``ids`` as a period's staging objects at ``bits`` and merge each shard into final parts."""
    start = T0.replace(second=0)
    by_shard: dict[str, list[bytes]] = {}
    for i in ids:
        line = event_line(Envelope("dl", i, {"track_id": i}), T0)
        by_shard.setdefault(shard_of(i, bits), []).append(line)
    for shard in shard_labels(bits):
        key = staging_name("dl", start, [shard], shard)
        sink.write(key, gzip_lines(by_shard.get(shard, [])))
        merge_shard(sink, [key], prefix, shard)


def test_partitions_are_compared_shard_by_shard_at_the_smaller_shard_count(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = "events/dl/dt=2026-11-26/hour=14/minute=05/"
    primary, shadow = LocalSink(tmp_path / "p"), LocalSink(tmp_path / "s")
    ids = [f"e{i}" for i in range(3000)]
    _close(primary, prefix, ids, 3)
    _close(shadow, prefix, [i for i in ids if i != "e17"], 1)
    held: list[set[str]] = []
    real = darkload.compare_ids

    def spy(shadow_ids: Any, primary_ids: Any, fraction: float, cap: int = darkload.MAX_NAMED) -> Any:
        held.append(set(shadow_ids))
        return real(held[-1], primary_ids, fraction, cap)

    monkeypatch.setattr(darkload, "compare_ids", spy)
    c = darkload.compare_partition(primary, shadow, prefix, 3, 1, 1.0)
    assert (c.primary, c.shadow, c.missing, c.missing_ids, c.extra) == (3000, 2999, 1, ["e17"], 0)
    # one shard at a time: two calls, each holding only the ids of its shard (about half the partition)
    assert len(held) == 2 and sum(map(len, held)) == 2999 and max(map(len, held)) < 1700
    assert all({shard_of(i, 1) for i in h} == {b} for h, b in zip(held, "01", strict=True))


# ------------------------------------------------------------------------------- the shadow stream


def _apply(svc: Any, **spec: Any) -> None:
    svc.apply.apply([EventType.model_validate({
        "metadata": {"name": "dl", "owner": "team-a"},
        "spec": {"schema": SCHEMA, "partitioning": "PT1M", "close_after": "PT10S", "max_event_bytes": 200, **spec}})], T0)


def _ev(i: int) -> dict[str, Any]:
    return {"type": "dl", "id": f"d{i}", "payload": {"track_id": f"t{i}"}}


def _deliver_both(g: Any) -> None:
    for stream in STREAMS:
        g.deliver(WorkOrder(event_type="dl", until_drained=True, budget_s=5, stream=stream))


def test_the_shadow_is_delivered_and_closed_apart_and_the_report_compares_it(env: Any) -> None:  # noqa: F811
    svc, g, broker, lands, clock = env
    broker.ensure_topic("ferry-alerts")
    _apply(svc, darkload=1.0, darkload_shards=2)  # the shadow with another configuration: two shards
    assert {"gabo-dl-shadow", "gabo-dl-shadow-dead-letter"} <= set(broker.topics)
    assert broker.subs["gabo-dl-shadow-delivery"].spec.dead_letter_topic == "gabo-dl-shadow-dead-letter"
    r = g.ingest(body([_ev(i) for i in range(60)]), T0)
    assert (r.accepted, r.shadowed) == (60, 60)
    _deliver_both(g)
    assert g.sink.list("darkload/staging/dl/") and {k.split("/")[4] for k in g.sink.list("darkload/staging/dl/")} == {
        "s0", "s1"}
    assert {k.split("/")[3] for k in g.sink.list("staging/dl/")} == {"s"}  # the primary: one shard
    clock.set(T0 + timedelta(minutes=1))
    _deliver_both(g)
    clock.set(T0 + timedelta(minutes=1, seconds=10))
    [rep] = g.close(clock.now(), "dl")
    assert rep.darkload is not None and rep.darkload["ordered"][0]["shards"] == 2
    marker = json.loads(g.sink.read("darkload/events/dl/dt=2026-11-26/hour=14/minute=05/_SUCCESS"))
    assert (marker["events"], marker["shards"]) == (60, 2)
    assert g.sink.exists("events/dl/dt=2026-11-26/hour=14/minute=05/_SUCCESS")
    assert [a[0] for a, _ in lands.calls].count("events.dl") == 1  # the primary landed; the shadow never does
    assert GaboState(svc.store, DARKLOAD).closed("dl", [T0.replace(second=0)])  # its own records

    report = g.darkload_report("dl", clock.now())
    [row] = report["partitions"]
    assert (row["state"], row["sampled_events"], row["shadow_events"], row["missing"]) == ("match", 60, 60, 0)
    assert (row["primary_shards"], row["shadow_shards"], row["compared_shards"]) == (1, 2, 1)
    assert broker.topics["ferry-alerts"] == []

    # the next period: one shadow staging object lost before closing → its ids are named, the owner alerted once
    t1 = T0 + timedelta(minutes=1)
    g.ingest(body([_ev(i) for i in range(100, 160)]), t1)
    _deliver_both(g)
    shadow_sink = PrefixedSink(g.sink, "darkload/")
    [lost] = [k for k in shadow_sink.list("staging/dl/20261126T1406/s1/")]
    lost_ids = {json.loads(x)["id"] for x in gunzip_lines(shadow_sink.read(lost))}
    shadow_sink.delete(lost)
    clock.set(t1 + timedelta(minutes=1))
    _deliver_both(g)
    clock.set(t1 + timedelta(minutes=1, seconds=10))
    g.close(clock.now(), "dl")
    first = g.darkload_report("dl", clock.now(), "2026-11-26T14:06")["partitions"][0]
    assert first["state"] == "mismatch" and first["alerted"] is True
    assert first["missing"] == len(lost_ids) > darkload.MAX_NAMED and first["extra"] == 0
    assert set(first["missing_ids"]) <= lost_ids and len(first["missing_ids"]) == darkload.MAX_NAMED  # named up to the cap
    again = g.darkload_report("dl", clock.now())
    assert [(p["partition"], p["state"], p.get("alerted")) for p in again["partitions"]] == [
        ("2026-11-26T14:06", "mismatch", False), ("2026-11-26T14:05", "match", None)]
    [alert] = [json.loads(m.data) for m in broker.topics["ferry-alerts"]]
    assert alert["owner"] == "team-a" and alert["dedup_key"] == "darkload:events.dl@2026-11-26T14:06"
    assert "missing from the shadow" in alert["summary"] and alert["custom_details"]["missing"] == len(lost_ids)
    # the primary closed complete: the shadow's loss is no business of the primary's closing
    primary = json.loads(g.sink.read("events/dl/dt=2026-11-26/hour=14/minute=06/_SUCCESS"))
    assert primary["events"] == 60


def test_a_type_without_darkload_has_no_shadow(env: Any) -> None:  # noqa: F811
    svc, g, broker, _, clock = env
    _apply(svc)
    assert "gabo-dl-shadow" not in broker.topics and "gabo-dl-shadow-delivery" not in broker.subs
    with pytest.raises(BadRequest, match="not darkloaded"):
        g.darkload_report("dl", clock.now())
    with pytest.raises(BadRequest, match="no darkload shadow"):
        g.deliver(WorkOrder(event_type="dl", stream="darkload", budget_s=1))
    assert g.close(clock.now(), "dl")[0].darkload is None


def test_a_closed_partitions_comparison_is_kept_and_a_spent_budget_leaves_the_rest_pending(
        env: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    svc, g, broker, _, clock = env
    _apply(svc, darkload=0.5)
    g.ingest(body([_ev(i) for i in range(40)]), T0)
    _deliver_both(g)
    clock.set(T0 + timedelta(minutes=1))
    _deliver_both(g)
    clock.set(T0 + timedelta(minutes=1, seconds=10))
    g.close(clock.now(), "dl")
    assert darkload.report(g, "dl", clock.now(), budget_s=0)["partitions"][0]["reason"].startswith(
        "not compared yet")
    first = darkload.report(g, "dl", clock.now())["partitions"]
    assert [(p["state"], p["sampled_events"], p["primary_events"]) for p in first] == [
        ("match", first[0]["shadow_events"], 40)] and 0 < first[0]["sampled_events"] < 40

    def no_reading(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a kept comparison is read again")

    monkeypatch.setattr(darkload, "compare_partition", no_reading)
    assert darkload.report(g, "dl", clock.now(), budget_s=0)["partitions"] == first
    # another fraction is another comparison
    _apply(svc, darkload=0.25)
    with pytest.raises(AssertionError, match="read again"):
        darkload.report(g, "dl", clock.now())
