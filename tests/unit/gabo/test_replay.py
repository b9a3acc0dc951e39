"""Replay of what Gabo set aside, on the in-memory broker and a local sink: 100 events quarantined for a
missing field; the schema made optional; the replay delivers exactly those 100 into the next closed
partition, once; a second replay adds nothing; what is still invalid stays, with its reasons."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from fakes.api_server import served
from ferry.broker.base import Message
from ferry.cli import main
from ferry.domain.manifests import EventType
from ferry.gabo.delivery.service import WorkOrder
from ferry.gabo.tables import parquet

from .test_gabo_service import SCHEMA, T0, body, env  # noqa: F401  (the env fixture)


def _ids(root: Path) -> list[str]:
    out = []
    for part in sorted(root.rglob("part-*.jsonl.gz")):
        out += [json.loads(x)["id"] for x in gzip.decompress(part.read_bytes()).splitlines()]
    for part in sorted(root.rglob("part-*.parquet")):
        out += parquet.ids(part.read_bytes())
    return out


def test_replay_quarantined_after_a_schema_fix_once(env: Any, tmp_path: Path) -> None:  # noqa: F811
    svc, g, broker, lands, clock = env
    valid = [{"type": "play", "id": f"ok{i}", "payload": {"track_id": f"t{i}"}} for i in range(10)]
    missing = [{"type": "play", "id": f"m{i}", "payload": {"ms": i}} for i in range(100)]
    wrong = [{"type": "play", "id": f"w{i}", "payload": {"track_id": i}} for i in range(5)]
    res = g.ingest(body(valid + missing + wrong), T0)
    assert (res.accepted, res.quarantined) == (10, 105)

    optional = {**SCHEMA, "required": []}
    et = EventType.model_validate({"metadata": {"name": "play", "owner": "team-a"},
                                   "spec": {"schema": optional, "partitioning": "PT1M", "close_after": "PT10S",
                                            "max_event_bytes": 200, "darkload": 0.5}})
    svc.apply.apply([et], T0)
    seen = g.set_aside("play")
    assert len(seen["items"]) == 20 and all("track_id" in i["reason"] for i in seen["items"])

    first = g.replay("play", "quarantine", T0)
    assert (first["replayed"], first["still_invalid"], first["pulled"]) == (100, 5, 105)
    assert "track_id" in first["reasons"][0]["reason"]
    left = g.set_aside("play")
    assert sorted(i["event_id"] for i in left["items"]) == [f"w{i}" for i in range(5)]  # where they were
    from ferry.web.app import respond

    status, _, html = respond(svc, "GET", "/eventtypes/play", {}, {})  # the web view shows them with reasons
    assert status == 200 and html.count('<tr data-event="w') == 5 and "track_id" in html
    status, _, html = respond(svc, "GET", "/eventtypes", {}, {})
    assert status == 200 and 'href="/eventtypes/play"' in html
    assert len(g.set_aside("play")["items"]) == 5  # looking consumed nothing

    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    clock.set(T0 + timedelta(minutes=1))
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    clock.set(T0 + timedelta(minutes=2))
    closed = {c.partition: c for c in g.close(clock.now())[0].closed}
    assert closed["2026-11-26T14:05"].events == 110
    sink = tmp_path / "sink" / "events" / "play"
    (success,) = sink.rglob("_SUCCESS")
    marker = json.loads(success.read_text())
    assert (marker["events"], marker["replayed_events"], marker["late_events"]) == (110, 100, 0)
    ids = _ids(sink)
    assert sorted(ids) == sorted([f"ok{i}" for i in range(10)] + [f"m{i}" for i in range(100)])

    with served(svc) as url:
        again = CliRunner().invoke(main, ["replay", "play", "--from", "quarantine", "--json", "--api", url],
                                   catch_exceptions=False)
        shown = CliRunner().invoke(main, ["get", "quarantine", "play", "--api", url], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert (json.loads(again.stdout)["replayed"], json.loads(again.stdout)["still_invalid"]) == (0, 5)
    assert "w0" in shown.output and "REASON" in shown.output
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    clock.set(T0 + timedelta(minutes=3))
    g.deliver(WorkOrder(event_type="play", until_drained=True, budget_s=5))
    g.close(clock.now())
    assert sorted(_ids(sink)) == sorted(ids)  # nothing added


def test_replay_dead_letters_and_since(env: Any) -> None:  # noqa: F811
    svc, g, broker, lands, clock = env
    good = json.dumps({"type": "play", "id": "d1", "payload": {"track_id": "x"}}).encode()
    broker.publish("gabo-play-dead-letter", [Message(good, {"event_type": "play", "reason": "was poison",
                                                            "received_at": T0.isoformat()}),
                                             Message(b"\x00poison", {"event_type": "play", "reason": "unparseable"})])
    late = g.replay("play", "dead-letter", T0, since=T0 + timedelta(minutes=1))
    assert (late["replayed"], late["skipped"]) == (0, 2)  # both received before --since
    out = g.replay("play", "dead-letter", T0)
    assert (out["replayed"], out["still_invalid"]) == (1, 1)
    assert [m.data for m in broker.topics["gabo-play"]][-1] == good
