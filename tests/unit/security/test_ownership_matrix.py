"""The ownership matrix: every mutation of /v1/openapi.json, called as anonymous, a non-member, a member
of the owning team and an admin. A mutation without an entry here fails the test: a new route must
say who may call it.

Expectations: anonymous → 401; a non-member → 403; a member and an admin → authorized (neither 401
nor 403, and no server error; the domain may still say 404/409). Operational routes (the scheduler's
and push's) refuse every person, admins included. Ingest is not ownership-checked: who may send
events is the ingest function's invoker binding in the cloud (see docs/security.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ferry.api.app import router
from ferry.api.identity import HEADER, Identifier, IdentityConfig
from ferry.bootstrap import Services, in_memory
from ferry.clock import FixedClock
from ferry.services.apply import parse_documents

NOW = datetime(2026, 11, 26, 14, 5, tzinfo=UTC)
ROLES = {"anonymous": None, "non-member": "bob@example.com", "member": "alice@example.com",
         "admin": "root@example.com"}
AUTHORIZED = "authorized"
PEOPLE_REFUSED = {"anonymous": 401, "non-member": 403, "member": 403, "admin": 403}
OWNERSHIP = {"anonymous": 401, "non-member": 403, "member": AUTHORIZED, "admin": AUTHORIZED}
OPEN = {"anonymous": AUTHORIZED, "non-member": AUTHORIZED, "member": AUTHORIZED, "admin": AUTHORIZED}

MANIFESTS: list[dict[str, Any]] = [
    {"kind": "Team", "metadata": {"name": "admins"}, "spec": {"members": ["root@example.com"],
                                                            "admins": ["root@example.com"]}},
    {"kind": "Team", "metadata": {"name": "team-a"}, "spec": {"members": ["alice@example.com"],
                                                            "admins": ["aaron@example.com"]}},
    {"kind": "Team", "metadata": {"name": "team-b"}, "spec": {"members": ["bob@example.com"],
                                                            "admins": ["bob@example.com"]}},
    {"kind": "Endpoint", "metadata": {"name": "plays", "owner": "team-a"},
     "spec": {"partitioning": "hourly", "start": "2026-11-26T00:00:00Z", "sla": {"error_after": "PT1H"}}},
    {"kind": "Workflow", "metadata": {"name": "wf-a", "owner": "team-a"},
     "spec": {"schedule": "hourly", "image": "img", "command": ["true"], "enabled": False}},
    {"kind": "EventType", "metadata": {"name": "click", "owner": "team-a"}, "spec": {}},
    {"kind": "Resource", "metadata": {"name": "pool"}, "spec": {"concurrency": 2}},
]


def world() -> Services:
    svc = in_memory(FixedClock(NOW), identifier=Identifier(IdentityConfig(HEADER, stack_secret="s")))
    docs = [{"apiVersion": "ferry/v1", **d} for d in MANIFESTS]
    # Registered at the first partition: the late ones page (so there are alerts to acknowledge).
    svc.apply.apply(parse_documents(docs), NOW - timedelta(hours=14, minutes=5), "root@example.com")
    return svc


def call(svc: Services, method: str, path: str, body: Any, user: str | None) -> tuple[int, Any]:
    headers = {"X-Ferry-User": user} if user else {}
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else b"")
    return router.dispatch(svc, method, path, {}, headers, raw)


@dataclass
class Case:
    path: str | Callable[[Services], str]
    body: Any = None
    expect: dict[str, int | str] = field(default_factory=lambda: dict(OWNERSHIP))
    prepare: Callable[[Services], None] | None = None


def _trigger(svc: Services) -> None:
    assert call(svc, "POST", "/v1/workflows/wf-a/instances/2026-11-26T10/trigger", {}, "root@example.com")[0] == 201


def _backfill(svc: Services) -> str:
    status, out = call(svc, "POST", "/v1/backfills", {"workflow": "wf-a", "start": "2026-11-25T00",
                                                      "end": "2026-11-25T02"}, "root@example.com")
    assert status == 201, out
    return f"/v1/backfills/{out['id']}/halt"


def _evaluate(svc: Services) -> None:
    from ferry.datamon import evaluation

    evaluation.evaluate(svc.store, svc.publisher, now=NOW)


def _alert(svc: Services) -> str:
    _evaluate(svc)
    status, alerts = router.dispatch(svc, "GET", "/v1/alerts", {"owner": "team-a"}, {}, b"")
    assert status == 200 and alerts["items"], alerts
    return f"/v1/alerts/{alerts['items'][0]['id']}/ack"


def _silence(svc: Services) -> str:
    status, out = call(svc, "POST", "/v1/silences", {"endpoint": "plays", "for": "PT1H", "reason": "maintenance"}, "root@example.com")
    assert status == 200, out
    return f"/v1/silences/{out['id']}/end"


def _apply(name: str, kind: str = "Endpoint") -> dict[str, Any]:
    doc = next(d for d in MANIFESTS if d["metadata"]["name"] == name)
    changed = {**doc, "metadata": {**doc["metadata"], "description": "changed"}}
    return {"manifests": [{"apiVersion": "ferry/v1", **changed}]}


TEAM_CHANGE = {"anonymous": 401, "non-member": 403, "member": 403, "admin": AUTHORIZED}  # a team's admins only
SHARED = {"anonymous": 401, "non-member": 403, "member": 403, "admin": AUTHORIZED}  # Resources: the admins'

MATRIX: dict[tuple[str, str], list[Case]] = {
    ("POST", "/v1/apply"): [Case("/v1/apply", _apply("plays")), Case("/v1/apply", _apply("wf-a")),
                            Case("/v1/apply", _apply("click")),
                            Case("/v1/apply", _apply("pool"), SHARED),
                            Case("/v1/apply", _apply("team-a"), TEAM_CHANGE)],
    ("DELETE", "/v1/{plural}/{name}"): [Case("/v1/endpoints/plays"), Case("/v1/workflows/wf-a"),
                                        Case("/v1/eventtypes/click"), Case("/v1/resources/pool", expect=SHARED),
                                        Case("/v1/teams/team-a", expect=TEAM_CHANGE)],
    ("POST", "/v1/events"): [Case("/v1/events", b'{"type": "click", "id": "e1", "payload": {}}\n', OPEN)],
    ("POST", "/v1/deliver"): [Case("/v1/deliver", {"event_type": "click", "budget_s": 1}, PEOPLE_REFUSED)],
    ("POST", "/v1/close"): [Case("/v1/close", {}, PEOPLE_REFUSED)],
    ("POST", "/v1/scale"): [Case("/v1/scale", {"publish": False}, PEOPLE_REFUSED)],
    ("POST", "/v1/evaluate"): [Case("/v1/evaluate", None, PEOPLE_REFUSED)],
    ("POST", "/v1/tick"): [Case("/v1/tick", {"budget_seconds": 1}, PEOPLE_REFUSED)],
    ("POST", "/v1/endpoints/{name}/partitions"): [Case("/v1/endpoints/plays/partitions",
                                                       {"partition": "2026-11-26T03"})],
    ("POST", "/v1/alerts/{alert}/ack"): [Case(_alert)],
    ("POST", "/v1/alerts/ack"): [Case("/v1/alerts/ack", {"endpoint": "plays"}, prepare=_evaluate),
                                 Case("/v1/alerts/ack", {"owner": "team-a"}, prepare=_evaluate)],
    ("POST", "/v1/silences"): [Case("/v1/silences", {"endpoint": "plays", "for": "PT1H", "reason": "maintenance"}),
                               Case("/v1/silences", {"owner": "team-a", "for": "PT1H", "reason": "maintenance"})],
    ("POST", "/v1/silences/{sid}/end"): [Case(_silence)],
    ("POST", "/v1/workflows/{workflow}/instances/{parameter}/trigger"): [
        Case("/v1/workflows/wf-a/instances/2026-11-26T11/trigger", {})],
    ("POST", "/v1/workflows/{workflow}/instances/{parameter}/retry"): [
        Case("/v1/workflows/wf-a/instances/2026-11-26T10/retry", None, prepare=_trigger)],
    ("POST", "/v1/workflows/{workflow}/instances/{parameter}/halt"): [
        Case("/v1/workflows/wf-a/instances/2026-11-26T10/halt", {}, prepare=_trigger)],
    ("POST", "/v1/backfills"): [Case("/v1/backfills", {"workflow": "wf-a", "start": "2026-11-24T00",
                                                       "end": "2026-11-24T02"})],
    ("POST", "/v1/backfills/{backfill_id}/halt"): [Case(_backfill, {})],
    ("POST", "/v1/backfills/{backfill_id}/retry"): [
        Case(lambda svc: _backfill(svc).replace("/halt", "/retry"), None)],
    ("POST", "/v1/endpoints/{name}/partitions/{partition}/invalidate"): [
        Case("/v1/endpoints/plays/partitions/2026-11-26T10/invalidate", {"reason": "duplicated rows"})],
    ("POST", "/v1/reprocessings"): [Case("/v1/reprocessings", {"endpoint": "plays", "start": "2026-11-26T10",
                                                               "end": "2026-11-26T11"})],
    ("POST", "/v1/workflows/{workflow}/instances/{parameter}/mark-done"): [
        Case("/v1/workflows/wf-a/instances/2026-11-26T10/mark-done", {"reason": "computed by hand"})],
    ("POST", "/v1/eventtypes/{name}/replay"): [Case("/v1/eventtypes/click/replay", {"from": "quarantine"})],
    # a read, posted for the SQL's length: closed periods are readable by every caller locally (in the cloud
    # BigQuery's own grants decide, per type: docs/gabo.md)
    ("POST", "/v1/query"): [Case("/v1/query", {"sql": "select 1 as one"}, OPEN)],
    # what infra/'s dead-letter topics hold goes back where it came from: Ferry's admins only
    ("POST", "/v1/dead-letters/replay"): [Case("/v1/dead-letters/replay", {"topic": "ferry-dead-letter"}, SHARED)],
}


def mutations() -> set[tuple[str, str]]:
    status, doc = router.dispatch(in_memory(), "GET", "/v1/openapi.json", {}, {}, b"")
    assert status == 200
    return {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops if m in ("post", "put", "patch", "delete")}


def test_every_mutation_has_an_entry() -> None:
    missing = mutations() - set(MATRIX)
    assert not missing, f"mutations without an ownership-matrix entry: {sorted(missing)}"
    assert not set(MATRIX) - mutations(), "entries for routes that no longer exist"


@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
def test_ownership_matrix(route: tuple[str, str], role: str) -> None:
    for case in MATRIX[route]:
        svc = world()
        if case.prepare:
            case.prepare(svc)
        path = case.path(svc) if callable(case.path) else case.path
        status, body = call(svc, route[0], path, case.body, ROLES[role])
        want = case.expect[role]
        if want == AUTHORIZED:
            assert status not in (401, 403) and status < 500, (path, role, status, body)
        else:
            assert status == want, (path, role, status, body)
