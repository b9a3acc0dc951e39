"""Teams and reads (findings: anyone could declare a Team that did not exist and lock out its owners,
or bootstrap the admins team; anyone read any workflow's env and logs; the dashboard served write
routes; schema errors copied payload values into logs and quarantine reasons). Also the workflow
runtime (finding: any owner could run any image as any service account)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ferry.api.app import router
from ferry.bootstrap import Services, in_memory
from ferry.clock import FixedClock

NOW = datetime(2026, 11, 26, 14, 5, tzinfo=UTC)
ROOT_ADMIN, A, B = "root@example.com", "alice@example.com", "bob@example.com"


def call(svc: Services, method: str, path: str, user: str | None, body: Any = None) -> tuple[int, Any]:
    headers = {"X-Ferry-User": user} if user else {}
    raw = json.dumps(body).encode() if body is not None else b""
    return router.dispatch(svc, method, path, {}, headers, raw)


def apply(svc: Services, user: str | None, *docs: dict[str, Any]) -> tuple[int, Any]:
    return call(svc, "POST", "/v1/apply", user, {"manifests": [{"apiVersion": "ferry/v1", **d} for d in docs]})


def team(name: str, *members: str, **spec: Any) -> dict[str, Any]:
    return {"kind": "Team", "metadata": {"name": name}, "spec": {"members": list(members), "admins": list(members), **spec}}


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> Services:
    monkeypatch.setenv("FERRY_ADMINS", ROOT_ADMIN)  # set at deploy time: teams are closed
    return in_memory(FixedClock(NOW))


def test_creating_a_team_needs_an_admin_and_the_first_admin_is_set_at_deploy_time(closed: Services) -> None:
    assert apply(closed, None, team("admins", "mallory@example.com"))[0] == 401
    assert apply(closed, "mallory@example.com", team("admins", "mallory@example.com"))[0] == 403
    assert apply(closed, "mallory@example.com", team("team-a", "mallory@example.com"))[0] == 403
    assert closed.manifests.get("Team", "team-a") is None
    assert apply(closed, ROOT_ADMIN, team("admins", ROOT_ADMIN), team("team-a", A))[0] == 200
    assert apply(closed, A, team("team-a", A, B))[0] == 200  # its own admins change it


def test_objects_naming_an_undeclared_owner_are_refused(closed: Services) -> None:
    ep = {"kind": "Endpoint", "metadata": {"name": "e", "owner": "team-nobody"}, "spec": {}}
    status, body = apply(closed, "mallory@example.com", ep)
    assert status == 422 and body["error"]["details"][0]["field"] == "metadata.owner"
    assert apply(closed, ROOT_ADMIN, team("team-nobody", A), ep)[0] == 200  # declared in the same apply


def test_a_local_stack_without_first_admins_stays_open() -> None:
    svc = in_memory(FixedClock(NOW))
    assert apply(svc, "anyone", {"kind": "Endpoint", "metadata": {"name": "e", "owner": "t"}, "spec": {}})[0] == 200


def _workflow(**spec: Any) -> dict[str, Any]:
    return {"kind": "Workflow", "metadata": {"name": "w", "owner": "team-a"},
            "spec": {"schedule": "daily", "image": "europe-docker.pkg.dev/p/team-a/job:1", **spec}}


def test_workflow_env_is_for_its_team_and_admins_and_secrets_for_nobody() -> None:
    svc = in_memory(FixedClock(NOW))
    env = {"MODE": "full", "TOKEN": "sm://projects/p/secrets/token"}
    assert apply(svc, A, team("team-a", A), team("team-b", B), _workflow(env=env))[0] == 200
    assert call(svc, "GET", "/v1/workflows/w", A)[1]["spec"]["env"] == {"MODE": "full", "TOKEN": "<redacted>"}
    assert call(svc, "GET", "/v1/workflows/w", B)[1]["spec"]["env"] == {"MODE": "<redacted>", "TOKEN": "<redacted>"}
    assert call(svc, "GET", "/v1/workflows", None)[1]["items"][0]["spec"]["env"]["MODE"] == "<redacted>"


def test_logs_are_for_the_workflows_team_and_admins() -> None:
    svc = in_memory(FixedClock(NOW))
    assert apply(svc, A, team("team-a", A), team("team-b", B), _workflow())[0] == 200
    path = "/v1/workflows/w/instances/2026-11-25/logs"
    assert call(svc, "GET", path, None)[0] == 401
    assert call(svc, "GET", path, B)[0] == 403
    assert call(svc, "GET", path, A)[0] == 404  # allowed; no execution yet


def test_a_workflow_runs_only_as_declared_accounts_and_images(monkeypatch: pytest.MonkeyPatch) -> None:
    svc = in_memory(FixedClock(NOW))
    runner = "team-a-jobs@p.iam.gserviceaccount.com"
    declared = team("team-a", A, service_accounts=[runner], image_prefixes=["europe-docker.pkg.dev/p/team-a/"])
    assert apply(svc, A, declared, _workflow(service_account=runner))[0] == 200
    status, body = apply(svc, A, _workflow(service_account="ferry-api@p.iam.gserviceaccount.com"))
    assert status == 403 and body["error"]["details"]["field"] == "spec.service_account"
    status, body = apply(svc, A, _workflow(image="docker.io/evil/miner:latest"))
    assert status == 403 and body["error"]["details"]["field"] == "spec.image"
    admins = team("admins", ROOT_ADMIN, image_prefixes=["europe-docker.pkg.dev/p/shared/"])
    assert apply(svc, ROOT_ADMIN, admins)[0] == 200
    assert apply(svc, A, _workflow(image="europe-docker.pkg.dev/p/shared/tool:2"))[0] == 200  # an admins' default
    monkeypatch.setenv("FERRY_RUNNER_ACCOUNTS", "ferry-workflow@p.iam.gserviceaccount.com")
    status, body = apply(svc, A, _workflow(service_account=runner, image="europe-docker.pkg.dev/p/team-a/job:2"))
    assert status == 403 and "deployment does not allow" in body["error"]["message"]


def test_the_dashboard_serves_read_routes_only() -> None:
    import functions_framework

    from ferry.bootstrap import use_process_services

    svc = in_memory(FixedClock(NOW))
    use_process_services(svc)
    try:
        main = Path(__file__).resolve().parents[3] / "functions" / "main.py"
        app = functions_framework.create_app("dashboard", str(main), "http")
        client = app.test_client()
        assert client.get("/v1/status").status_code == 200
        for path in ("/v1/apply", "/v1/endpoints/e/partitions", "/v1/backfills"):
            assert client.post(path, json={}).status_code == 405
    finally:
        use_process_services(None)


def test_schema_errors_keep_the_field_and_rule_but_not_the_value() -> None:
    svc = in_memory(FixedClock(NOW))
    et = {"kind": "EventType", "metadata": {"name": "pay", "owner": "team-a"},
          "spec": {"schema": {"type": "object", "properties": {"card": {"type": "integer"}}}}}
    assert apply(svc, A, et)[0] == 200
    body = json.dumps({"type": "pay", "id": "1", "payload": {"card": "4111-1111-1111-1111"}}).encode()
    status, out = router.dispatch(svc, "POST", "/v1/events", {}, {}, body)
    assert status == 200, out
    [rejected] = out["rejected"]
    assert "card" in rejected["reason"] and "type" in rejected["reason"]
    assert "4111" not in json.dumps(out)
    from ferry.gabo.names import Names

    [quarantined] = svc.broker.take(Names("pay").quarantine)  # type: ignore[attr-defined]
    assert "card" in quarantined.attributes["reason"] and "4111" not in quarantined.attributes["reason"]
