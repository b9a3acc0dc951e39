from __future__ import annotations

import json
from typing import Any

import pytest

from ferry.api.app import router
from ferry.bootstrap import Services
from ferry.datamon import api as datamon_api

from .conftest import T0, apply, endpoint


def call(svc: Services, method: str, path: str, body: Any = None, user: str | None = None,
         query: dict[str, str] | None = None) -> tuple[int, Any]:
    headers = {"X-Ferry-User": user} if user else {}
    raw = json.dumps(body).encode() if body is not None else b""
    return router.dispatch(svc, method, path, query or {}, headers, raw)


@pytest.fixture
def team(svc: Services) -> Services:
    apply(svc, {"kind": "Team", "metadata": {"name": "team-a"}, "spec": {"members": ["alice"]}},
          endpoint("plays", partitioning="hourly", start="2026-11-26T00:00:00Z", sla={"error_after": "PT2H"}),
          actor="alice")
    return svc


def test_land_route_and_errors(team: Services) -> None:
    status, body = call(team, "POST", "/v1/endpoints/plays/partitions", {"partition": "2026-11-26T03"}, "alice")
    assert status == 200 and body["partition"] == "2026-11-26T03"
    assert call(team, "POST", "/v1/endpoints/nope/partitions", {"partition": "2026-11-26T03"}, "alice")[0] == 404
    status, body = call(team, "POST", "/v1/endpoints/plays/partitions", {"partition": "2026-11-26"}, "alice")
    assert status == 422 and "hourly" in body["error"]["message"]
    status, body = call(team, "POST", "/v1/endpoints/plays/partitions", {"partition": "2026-11-25T23"}, "alice")
    assert status == 422 and "before the endpoint's start" in body["error"]["message"]
    assert call(team, "POST", "/v1/endpoints/plays/partitions", {"partition": "2026-11-26T04"}, "mallory")[0] == 403
    assert call(team, "POST", "/v1/endpoints/plays/partitions", {"partition": "x", "rows": 1}, "alice")[0] == 422
    assert team.store.get("datamon_partitions", "plays@2026-11-26T04") is None


def test_evaluate_alerts_ack_silence_status_routes(team: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_STACK_SECRET", "s3cret")  # read when the identifier is first built
    assert call(team, "POST", "/v1/evaluate")[0] == 401  # an operational route: the scheduler's only
    status, result = call(team, "POST", "/v1/evaluate", query={"ferry_secret": "s3cret"})
    # Registered at 12:00: 00..08 were late before (history); 09 is late at 12:00: one incident.
    assert status == 200 and result["notifications"]["trigger"] == 1
    status, alerts = call(team, "GET", "/v1/alerts", query={"endpoint": "plays", "severity": "error", "limit": "5"})
    assert status == 200 and [a["id"] for a in alerts["items"]] == ["plays~1"] and alerts["items"][0]["count"] == 1
    assert call(team, "GET", "/v1/alerts", query={"limit": "0"})[0] == 422
    assert call(team, "GET", "/v1/alerts", query={"severity": "loud"})[0] == 422
    first = alerts["items"][0]["id"]
    assert call(team, "POST", f"/v1/alerts/{first}/ack", user="mallory")[0] == 403
    assert call(team, "POST", f"/v1/alerts/{first}/ack")[0] == 401
    status, acked = call(team, "POST", f"/v1/alerts/{first}/ack", user="alice")
    assert status == 200 and acked["acked"] is True and acked["acked_by"] == "alice"
    status, bulk = call(team, "POST", "/v1/alerts/ack", {"owner": "team-a"}, "alice")
    assert status == 200 and bulk["acknowledged"] == 0 and [a["id"] for a in bulk["items"]] == ["plays~1"]
    assert call(team, "POST", "/v1/alerts/ack", {}, "alice")[0] == 422

    assert call(team, "POST", "/v1/silences", {"endpoint": "plays", "for": "PT2H", "reason": "x"}, "mallory")[0] == 403
    assert call(team, "POST", "/v1/silences", {"endpoint": "plays", "for": "P90D", "reason": "x"}, "alice")[0] == 422
    status, silence = call(team, "POST", "/v1/silences", {"endpoint": "plays", "for": "PT2H", "reason": "deploy"},
                           "alice")
    assert status == 200 and silence["until"] == "2026-11-26T14:00:00+00:00"
    status, view = call(team, "GET", "/v1/status", query={"owner": "team-a"})
    row = view["endpoints"][0]
    assert status == 200 and row["state"] == "late" and row["open_alerts"] == 1 and row["incident"]["count"] == 1
    assert row["silenced"] == silence["id"] and [s["id"] for s in view["silences"]] == [silence["id"]]
    assert call(team, "GET", "/v1/status", query={"owner": "team-z"})[1]["endpoints"] == []
    status, ended = call(team, "POST", f"/v1/silences/{silence['id']}/end", user="alice")
    assert status == 200 and call(team, "GET", "/v1/silences")[1]["items"] == []


def test_partition_message_handler(team: Services) -> None:
    handle = datamon_api.handle_partition_message
    ok = handle(team, json.dumps({"endpoint": "plays", "partition": "2026-11-26T05", "records": 3,
                                  "source": "gabo"}).encode())
    assert ok is not None and ok["records"] == 3
    assert handle(team, b"not json") is None
    assert handle(team, json.dumps({"endpoint": "nope", "partition": "x"}).encode()) is None
    assert handle(team, json.dumps({"endpoint": "plays", "partition": "2026-11-26"}).encode()) is None


def test_a_partition_message_names_its_instant_only_in_a_stack_that_allows_it(clock: Any) -> None:
    from dataclasses import replace

    from ferry.bootstrap import in_memory

    msg = json.dumps({"endpoint": "plays", "partition": "2026-11-26T05"}).encode()
    for allowed in (True, False):
        svc = in_memory(clock)
        svc.settings = replace(svc.settings, allow_clock_override=allowed)
        apply(svc, endpoint("plays", partitioning="hourly", start="2026-11-26T00:00:00Z"))
        # a bad instant is rejected (logged, acknowledged), never silently replaced by the clock
        assert (datamon_api.handle_partition_message(svc, msg, {"ferry_now": "yesterday"}) is None) is allowed
        landed = datamon_api.handle_partition_message(svc, msg, {"ferry_now": "2026-11-26T06:30:00Z"})
        assert landed is not None
        assert landed["last_landed_at"] == ("2026-11-26T06:30:00+00:00" if allowed else T0.isoformat())


def test_openapi_lists_datamon_routes(svc: Services) -> None:
    status, doc = call(svc, "GET", "/v1/openapi.json")
    assert status == 200 and any("partitions" in p for p in doc["paths"])
    assert T0  # the fixture clock is the services' clock


def test_status_shows_a_periods_missing_accepted_events_on_its_event_types_row(svc: Services) -> None:
    """The ledger's shortfall alert (raised by the close gate, listed by `ferry alerts`) is shown in the
    row of the type's endpoint in `ferry status`, and gone once the period closed complete."""
    from datetime import timedelta

    from ferry.datamon import evaluation
    from ferry.domain.manifests import EventType
    from ferry.gabo.ingest.ledger import Ledger, LedgerGate, digest

    schema = {"type": "object"}
    apply(svc, {"kind": "Team", "metadata": {"name": "team-a"}, "spec": {"members": ["alice"]}},
          {"kind": "EventType", "metadata": {"name": "play", "owner": "team-a"},
           "spec": {"schema": schema, "partitioning": "PT1M", "close_after": "PT10S"}}, actor="alice")
    et = EventType.model_validate({"metadata": {"name": "play", "owner": "team-a"},
                                   "spec": {"schema": schema, "partitioning": "PT1M", "close_after": "PT10S"}})
    evaluation.evaluate(svc.store, svc.publisher, now=T0)  # registers the endpoint's summary (the status row)
    ledger, start = Ledger(svc.store), T0
    ledger.begin("r1", ["play"], start)
    ledger.confirm("r1", Ledger.accepted_record({"play": (start, [f"e{i}" for i in range(20)])}), since=start,
                   begun=["play"])
    ledger.delivered("play", {start: ("obj", b"".join(digest(f"e{i}") for i in range(14)))})
    gate = LedgerGate(ledger)
    end = start + timedelta(minutes=1)
    assert gate(et, start, end, end + timedelta(seconds=20)) == "6 accepted events of play 2026-11-26T12:00 are missing"

    def row(owner: str | None = None) -> dict[str, Any] | None:
        view = call(svc, "GET", "/v1/status", query={"owner": owner} if owner else {})[1]
        return next((r for r in view["endpoints"] if r["endpoint"] == "events.play"), None)

    assert row()["missing_events"] == []  # type: ignore[index]  (waiting, not yet alerted)
    gate(et, start, end, end + timedelta(minutes=11))
    shown = row("team-a")
    assert shown is not None and shown["open_alerts"] >= 1
    assert [(m["partition"], m["missing"], m["accepted"]) for m in shown["missing_events"]] == [
        ("2026-11-26T12:00", 6, 20)]
    assert row("team-z") is None
    from ferry.web.app import respond  # and the endpoint's web page lists it among its open alerts

    status, _, html = respond(svc, "GET", "/endpoints/events.play", {}, {})
    assert status == 200 and "6 accepted events of play 2026-11-26T12:00 are missing" in html
    ledger.delivered("play", {start: ("obj2", b"".join(digest(f"e{i}") for i in range(14, 20)))})
    assert gate(et, start, end, end + timedelta(minutes=12)) is None  # complete: the alert resolves
    assert row()["missing_events"] == []  # type: ignore[index]
