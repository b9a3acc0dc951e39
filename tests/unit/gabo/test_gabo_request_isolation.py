"""Issue 23, item 2: every 500 the adversarial run found is its 4xx (or its event's rejection), through the
router as the API function dispatches it."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import pytest

from ferry.api.app import router
from ferry.bootstrap import Services, in_memory
from ferry.clock import FixedClock
from ferry.domain.manifests import KINDS

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
USER = "alice"


def call(svc: Services, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else json.dumps(body).encode()
    return router.dispatch(svc, method, path, {}, {"X-Ferry-User": USER}, data)


@pytest.fixture
def svc() -> Services:
    s = in_memory(FixedClock(T0))
    docs = [{"kind": "Team", "metadata": {"name": "team-a"}, "spec": {"members": [USER]}},
            {"kind": "Endpoint", "metadata": {"name": "plays", "owner": "team-a"},
             "spec": {"partitioning": "hourly", "start": "2026-11-26T00:00:00Z"}},
            {"kind": "EventType", "metadata": {"name": "play", "owner": "team-a"},
             "spec": {"schema": {"type": "object"}, "partitioning": "PT1M"}}]
    s.apply.apply([KINDS[d["kind"]].model_validate(d) for d in docs], T0, USER)  # type: ignore[arg-type]
    return s


def _deep_schema(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def test_apply_of_a_5000_deep_schema_is_a_4xx_not_a_recursion_error(svc: Services) -> None:
    doc = {"apiVersion": "ferry/v1", "kind": "EventType", "metadata": {"name": "deep", "owner": "team-a"},
           "spec": {"schema": _deep_schema(5000), "partitioning": "PT1M"}}
    limit = sys.getrecursionlimit()  # json.dumps recurses: the client side of the test needs the room
    sys.setrecursionlimit(max(limit, 30_000))
    try:
        raw = json.dumps({"manifests": [doc]}).encode()
    finally:
        sys.setrecursionlimit(limit)
    status, body = call(svc, "POST", "/v1/apply", raw=raw)
    assert 400 <= status < 500, (status, str(body)[:300])
    assert svc.manifests.get("EventType", "deep") is None


def test_land_of_the_last_representable_hour_with_allow_future_is_a_4xx(svc: Services) -> None:
    status, body = call(svc, "POST", "/v1/endpoints/plays/partitions",
                        {"partition": "9999-12-31T23", "allow_future": True})
    assert 400 <= status < 500, (status, body)


def test_an_event_with_a_lone_surrogate_id_is_rejected_and_the_rest_accepted(svc: Services) -> None:
    raw = b'[{"type":"play","id":"\\ud800","payload":{}},{"type":"play","id":"fine","payload":{}}]'
    status, body = call(svc, "POST", "/v1/events", raw=raw)
    assert status == 200, body
    assert (body["accepted"], body["rejected_count"]) == (1, 1)
    assert body["rejected"][0]["index"] == 0


@pytest.mark.parametrize("kind", [{}, [], {"a": 1}])
def test_apply_of_a_manifest_whose_kind_is_not_a_string_is_a_422(svc: Services, kind: Any) -> None:
    """Found by the second-seed fuzz run (seed 2, 50 examples): ``kind: {}`` was a 500 (unhashable dict)."""
    status, body = call(svc, "POST", "/v1/apply", {"manifests": [{"kind": kind, "metadata": {"name": {}}}]})
    assert status == 422, (status, body)
    assert body["error"]["details"][0]["field"] == "kind"
