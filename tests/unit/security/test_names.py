"""One grammar for names and references (finding: `upstream: ["../../x"]` applied, then every evaluate
and tick answered 500 for all teams)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ferry.api.app import router
from ferry.bootstrap import in_memory


def apply(*docs: dict[str, Any]) -> tuple[int, Any]:
    body = {"manifests": [{"apiVersion": "ferry/v1", **d} for d in docs]}
    return router.dispatch(in_memory(), "POST", "/v1/apply", {}, {}, json.dumps(body).encode())


def endpoint(**spec: Any) -> dict[str, Any]:
    return {"kind": "Endpoint", "metadata": {"name": "e", "owner": "team-a"}, "spec": {"partitioning": "daily", **spec}}


def workflow(**spec: Any) -> dict[str, Any]:
    return {"kind": "Workflow", "metadata": {"name": "w", "owner": "team-a"},
            "spec": {"schedule": "daily", "image": "img", **spec}}


@pytest.mark.parametrize(("doc", "field"), [
    (endpoint(upstream=["../../x"]), "spec.upstream[0]"),
    (endpoint(upstream=["__name__"]), "spec.upstream[0]"),
    (endpoint(producers=["Team B"]), "spec.producers[0]"),
    (workflow(depends_on=["../../x"]), "spec.depends_on[0]"),
    (workflow(depends_on=[".."]), "spec.depends_on[0]"),
    (workflow(produces="a/b"), "spec.produces"),
    (workflow(resources=["."]), "spec.resources[0]"),
    ({"kind": "Endpoint", "metadata": {"name": "e", "owner": "../team"}, "spec": {}}, "metadata.owner"),
    ({"kind": "Endpoint", "metadata": {"name": "E/x", "owner": "team-a"}, "spec": {}}, "metadata.name"),
])
def test_a_reference_outside_the_grammar_is_refused_naming_the_field(doc: dict[str, Any], field: str) -> None:
    status, body = apply(doc)
    assert status == 422, body
    assert field in [d["field"] for d in body["error"]["details"]], body


@pytest.mark.parametrize("path", ["/v1/endpoints/__x__", "/v1/workflows/.a", "/v1/backfills/_b",
                                  "/v1/workflows/w/instances/..x/timeline", "/v1/alerts/%2e%2e/ack"])
def test_path_parameters_outside_the_grammar_are_400_naming_the_parameter(path: str) -> None:
    method = "POST" if path.endswith("/ack") else "GET"
    status, body = router.dispatch(in_memory(), method, path, {}, {"X-Ferry-User": "a"}, b"")
    assert status == 400, body
    assert body["error"]["details"]["field"] in ("name", "workflow", "backfill_id", "parameter", "alert")


def test_a_partition_like_parameter_is_within_the_grammar() -> None:
    status, _ = router.dispatch(in_memory(), "GET", "/v1/workflows/w/instances/2026-11-26T14:05", {}, {}, b"")
    assert status == 404  # looked up, not refused
