"""Operational routes (tick, evaluate, close, scale, deliver, the Pub/Sub pushes) accept only their
declared callers, live only on their own functions, and cannot hold a function past its timeout."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import functions_framework
import pytest

from fakes.oidc import Issuer, issuer
from ferry.api.app import router
from ferry.api.identity import HEADER, OIDC, Identifier, IdentityConfig
from ferry.bootstrap import Services, in_memory, use_process_services
from ferry.clock import FixedClock
from ferry.config import Settings

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 11, 26, 14, 5, tzinfo=UTC)
SECRET = "stack-secret-123"
OPERATIONAL = {"/v1/tick": ("styx-tick", {"budget_seconds": 1}), "/v1/evaluate": ("evaluate", None),
               "/v1/close": ("close", {}), "/v1/scale": ("scale", {"publish": False}),
               "/v1/deliver": ("deliver", {"event_type": "nope", "budget_s": 90})}


def local(function: str = "", timeout_s: float | None = None) -> Services:
    return in_memory(FixedClock(NOW), identifier=Identifier(IdentityConfig(HEADER, stack_secret=SECRET,
                                                                            function=function, timeout_s=timeout_s)))


def post(svc: Services, path: str, body: object = None, headers: dict[str, str] | None = None,
         query: dict[str, str] | None = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    raw = json.dumps(body).encode() if body is not None else b""
    return router.dispatch(svc, "POST", path, query or {}, headers or {}, raw)


def test_every_operational_route_is_declared() -> None:
    declared = {r.path: r.operational for r in router.routes if r.operational}
    assert declared == {p: owner for p, (owner, _) in OPERATIONAL.items()}


@pytest.mark.parametrize("path", sorted(OPERATIONAL))
def test_anyone_but_the_declared_caller_is_refused(path: str) -> None:
    """The finding: /v1/deliver, /v1/tick, /v1/scale, /v1/close, /v1/evaluate accepted anyone."""
    svc = local()
    body = OPERATIONAL[path][1]
    assert post(svc, path, body)[0] == 401
    assert post(svc, path, body, {"X-Ferry-User": "alice@example.com"})[0] == 403
    assert post(svc, path, body, {"X-Ferry-Stack-Secret": "wrong"})[0] == 401
    status, out = post(svc, path, body, {"X-Ferry-Stack-Secret": SECRET})
    assert status in (200, 404), out  # deliver of an unknown type: 404 — admitted, then refused by the domain
    assert post(svc, path, body, query={"ferry_secret": SECRET})[0] == status


def test_without_a_configured_secret_nobody_is_an_operator() -> None:
    svc = in_memory(FixedClock(NOW), identifier=Identifier(IdentityConfig(HEADER)))
    assert post(svc, "/v1/evaluate", headers={"X-Ferry-Stack-Secret": ""})[0] == 401


@pytest.fixture(scope="module")
def iss() -> Iterator[Issuer]:
    with issuer() as i:
        yield i


def test_in_the_cloud_only_the_declared_service_accounts_and_only_on_their_function(iss: Issuer) -> None:
    aud = "https://europe-west1-p.cloudfunctions.net/styx-tick"
    scheduler = "ferry-scheduler@p.iam.gserviceaccount.com"

    def on(function: str) -> Services:
        return in_memory(FixedClock(NOW), Settings(identity=OIDC), identifier=Identifier(
            IdentityConfig(OIDC, (aud,), iss.certs_url, (scheduler,), function=function, timeout_s=120)))

    as_scheduler = {"Authorization": f"Bearer {iss.token(scheduler, aud)}"}
    as_admin = {"Authorization": f"Bearer {iss.token('root@example.com', aud)}"}
    assert post(on("styx-tick"), "/v1/tick", {"budget_seconds": 1}, as_scheduler)[0] == 200
    assert post(on("styx-tick"), "/v1/tick", {"budget_seconds": 1}, as_admin)[0] == 403
    assert post(on("styx-tick"), "/v1/tick", {"budget_seconds": 1}, {"X-Ferry-Stack-Secret": SECRET})[0] == 401
    # the API function does not serve the tick at all once deployed
    status, body = post(on("api"), "/v1/tick", {"budget_seconds": 1}, as_scheduler)
    assert status == 404 and "styx-tick function only" in body["error"]["message"]
    assert post(on("styx-tick"), "/v1/evaluate", None, as_scheduler)[0] == 404


def test_locally_the_api_function_serves_them_to_the_secret_holder() -> None:
    assert post(local("api"), "/v1/evaluate", headers={"X-Ferry-Stack-Secret": SECRET})[0] == 200
    assert post(local("evaluate"), "/v1/tick", {"budget_seconds": 1}, {"X-Ferry-Stack-Secret": SECRET})[0] == 404


def test_budgets_are_capped_to_the_functions_timeout() -> None:
    """The finding: budgets up to 3600 s on a function with a 120 s timeout."""
    config = IdentityConfig(HEADER, function="deliver", timeout_s=120)
    assert config.cap(3600) == 108 and config.cap(90) == 90 and config.cap(0.1) == 0.1
    assert IdentityConfig(HEADER, function="scale", timeout_s=60).cap(3600) == 54
    assert IdentityConfig(HEADER).cap(3600) == 3600  # in-process: no function, no timeout


def test_a_tick_budget_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    from ferry.styx import tick as tick_mod

    seen: list[float] = []
    real = tick_mod.Tick.run

    def spy(self, now, budget_seconds=45.0):  # type: ignore[no-untyped-def]
        seen.append(budget_seconds)
        return real(self, now, 0.5)

    monkeypatch.setattr(tick_mod.Tick, "run", spy)
    svc = local("styx-tick", timeout_s=120)
    assert post(svc, "/v1/tick", {"budget_seconds": 3000}, {"X-Ferry-Stack-Secret": SECRET})[0] == 200
    assert seen == [108]


# ------------------------------------------------------------------------------------- Pub/Sub pushes


def _envelope(payload: dict) -> dict:  # type: ignore[type-arg]
    return {"message": {"data": base64.b64encode(json.dumps(payload).encode()).decode(), "messageId": "1",
                        "attributes": {}}, "subscription": "projects/p/subscriptions/s"}


@pytest.fixture
def land_client() -> Iterator[tuple[Services, object]]:
    svc = local("land")
    use_process_services(svc)
    app = functions_framework.create_app("land", str(ROOT / "functions" / "main.py"), "http")
    try:
        yield svc, app.test_client()
    finally:
        use_process_services(None)


def test_a_push_is_admitted_only_with_the_declared_callers_credentials(land_client) -> None:  # type: ignore[no-untyped-def]
    """The finding: anyone who reached the land function could record landings."""
    from ferry.services.apply import parse_documents

    svc, client = land_client
    svc.apply.apply(parse_documents([{"apiVersion": "ferry/v1", "kind": "Endpoint",
                                      "metadata": {"name": "plays", "owner": "team-a"},
                                      "spec": {"partitioning": "hourly", "start": "2026-11-26T00:00:00Z"}}]),
                    NOW, None)
    msg = _envelope({"endpoint": "plays", "partition": "2026-11-26T03"})
    assert client.post("/", json=msg).status_code == 401
    assert client.post("/", json=msg, headers={"X-Ferry-User": "alice"}).status_code == 403
    assert svc.store.get("datamon_partitions", "plays@2026-11-26T03") is None
    assert client.post(f"/projects/p/topics/ferry-partitions?ferry_secret={SECRET}", json=msg).status_code == 204
    assert svc.store.get("datamon_partitions", "plays@2026-11-26T03") is not None
    assert client.post(f"/?ferry_secret={SECRET}", data=b"not json").status_code == 400


def test_the_scheduler_sends_the_stack_secret() -> None:
    from ferry.dev.scheduler import headers
    from ferry.infra.model import SchedulerJob

    job = SchedulerJob(name="styx-tick", schedule="* * * * *", function="styx-tick")
    assert headers(job, NOW, SECRET)["X-Ferry-Stack-Secret"] == SECRET
