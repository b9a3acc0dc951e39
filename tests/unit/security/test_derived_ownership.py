"""Ownership that derived objects respect (findings: a Team B EventType took over Team A's endpoint
events.clicks; a Team B workflow `produces` Team A's endpoint and landed it)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ferry.api.app import router
from ferry.api.identity import HEADER, Identifier, IdentityConfig
from ferry.bootstrap import Services, in_memory
from ferry.clock import FixedClock
from ferry.domain.manifests import Workflow
from ferry.services.apply import parse_documents

NOW = datetime(2026, 11, 26, 14, 5, tzinfo=UTC)
A, B = "alice@example.com", "bob@example.com"


def world() -> Services:
    svc = in_memory(FixedClock(NOW), identifier=Identifier(IdentityConfig(HEADER, stack_secret="s")))
    teams = [{"apiVersion": "ferry/v1", "kind": "Team", "metadata": {"name": n}, "spec": {"members": [m], "admins": [m]}}
             for n, m in (("team-a", A), ("team-b", B), ("admins", "root@example.com"))]
    svc.apply.apply(parse_documents(teams), NOW, "root@example.com")
    return svc


def apply(svc: Services, user: str, *docs: dict[str, Any]) -> tuple[int, Any]:
    body = {"manifests": [{"apiVersion": "ferry/v1", **d} for d in docs]}
    return router.dispatch(svc, "POST", "/v1/apply", {}, {"X-Ferry-User": user}, json.dumps(body).encode())


def event_type(name: str, owner: str) -> dict[str, Any]:
    return {"kind": "EventType", "metadata": {"name": name, "owner": owner}, "spec": {}}


def test_an_event_type_cannot_take_over_another_teams_events_endpoint() -> None:
    svc = world()
    assert apply(svc, A, event_type("clicks", "team-a"))[0] == 200
    assert router.dispatch(svc, "DELETE", "/v1/eventtypes/clicks", {}, {"X-Ferry-User": A}, b"")[0] == 200
    assert svc.manifests.get("Endpoint", "events.clicks").owner == "team-a"  # type: ignore[union-attr]
    status, body = apply(svc, B, event_type("clicks", "team-b"))
    assert status == 403, body
    assert body["error"]["details"]["endpoint"] == "events.clicks"
    assert svc.manifests.get("Endpoint", "events.clicks").owner == "team-a"  # type: ignore[union-attr]
    assert svc.manifests.get("EventType", "clicks") is None
    assert apply(svc, A, event_type("clicks", "team-a"))[0] == 200  # its own team takes it back


def test_a_plain_endpoint_in_the_events_namespace_is_refused() -> None:
    status, body = apply(world(), A, {"kind": "Endpoint", "metadata": {"name": "events.views", "owner": "team-a"},
                                      "spec": {"partitioning": "hourly"}})
    assert status == 422 and body["error"]["details"][0]["field"] == "metadata.name"


def _plays() -> dict[str, Any]:
    return {"kind": "Endpoint", "metadata": {"name": "plays-hourly", "owner": "team-a"},
            "spec": {"partitioning": "hourly", "start": "2026-11-26T00:00:00Z"}}


def _wf(owner: str, produces: str = "plays-hourly") -> dict[str, Any]:
    return {"kind": "Workflow", "metadata": {"name": f"wf-{owner}", "owner": owner},
            "spec": {"schedule": "hourly", "image": "img", "command": ["true"], "produces": produces}}


def test_produces_must_name_an_endpoint_of_the_team_or_one_that_grants_it() -> None:
    svc = world()
    assert apply(svc, A, _plays())[0] == 200
    status, body = apply(svc, B, _wf("team-b"))
    assert status == 403 and body["error"]["details"]["field"] == "spec.produces", body
    assert apply(svc, A, _wf("team-a"))[0] == 200
    granted = {**_plays(), "spec": {**_plays()["spec"], "producers": ["team-b"]}}
    assert apply(svc, A, granted)[0] == 200
    assert apply(svc, B, _wf("team-b"))[0] == 200


def test_a_landing_is_checked_again_when_it_is_recorded() -> None:
    """A granted team B its endpoint, B's workflow was applied, then A withdrew the grant: B's success
    must no longer land A's partition (the apply-time check alone would not see the change)."""

    svc = world()
    granted = {**_plays(), "spec": {**_plays()["spec"], "producers": ["team-b"]}}
    assert apply(svc, A, granted)[0] == 200
    assert apply(svc, B, _wf("team-b"))[0] == 200
    wf = svc.manifests.get("Workflow", "wf-team-b").model_as(Workflow)  # type: ignore[union-attr]
    svc.styx.land_produced(wf, "2026-11-26T03", NOW)
    assert svc.datamon.landed("plays-hourly", ["2026-11-26T03"]) == {"2026-11-26T03"}
    assert apply(svc, A, _plays())[0] == 200  # the grant withdrawn
    svc.styx.land_produced(wf, "2026-11-26T04", NOW)
    assert svc.datamon.landed("plays-hourly", ["2026-11-26T04"]) == set()
