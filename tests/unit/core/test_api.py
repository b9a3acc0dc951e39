"""The HTTP API in-process: functions-framework's test client over the in-memory services."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import functions_framework
import pytest
import yaml

from ferry import log
from ferry.api.app import router as api_router
from ferry.api.router import Router
from ferry.bootstrap import Services, in_memory, use_process_services
from ferry.clock import FixedClock
from ferry.config import Settings
from ferry.errors import Conflict

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples" / "manifests"
NOW = datetime(2026, 11, 26, 14, 5, tzinfo=UTC)


@pytest.fixture
def svc() -> Iterator[Services]:
    s = in_memory(FixedClock(NOW), Settings(store="memory", broker="memory", max_body_bytes=64 * 1024,
                                                    project="demo"))
    use_process_services(s)
    yield s
    use_process_services(None)


@pytest.fixture(scope="module")
def app():
    return functions_framework.create_app("api", str(ROOT / "functions" / "main.py"), "http")


@pytest.fixture
def client(app, svc):
    return app.test_client()


def example_docs() -> list[dict]:
    docs = [d for f in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    return json.loads(json.dumps(docs, default=lambda v: v.isoformat()))


def endpoint_doc(name: str, owner: str = "team-a") -> dict:
    return {"kind": "Endpoint", "metadata": {"name": name, "owner": owner}, "spec": {"partitioning": "daily"}}


def assert_error(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.get_json()
    body = resp.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


# -- apply and reads -----------------------------------------------------------------------------------

def test_apply_dry_run_then_apply_then_unchanged(client, svc):
    docs = example_docs()
    dry = client.post("/v1/apply", json={"manifests": docs, "dry_run": True}).get_json()
    assert dry["dry_run"] and dry["counts"] == {"created": len(docs), "changed": 0, "unchanged": 0}
    assert svc.store.stats.writes == 0
    applied = client.post("/v1/apply", json={"manifests": docs}).get_json()
    assert applied["counts"]["created"] == len(docs)
    again = client.post("/v1/apply", json={"manifests": docs}).get_json()
    assert again["counts"] == {"created": 0, "changed": 0, "unchanged": len(docs)}
    one = client.get("/v1/endpoints/royalties-daily").get_json()
    assert one["spec"]["timezone"] == "Europe/Stockholm"
    assert one["status"]["generation"] == 1 and one["status"]["created_at"].startswith("2026-11-26T14:05")


def test_get_by_owner(client, svc):
    client.post("/v1/apply", json={"manifests": example_docs()})
    names = [i["metadata"]["name"] for i in client.get("/v1/endpoints?owner=team-royalties").get_json()["items"]]
    assert names == ["royalties-daily"]


def test_pagination_across_250_objects(client, svc):
    docs = [endpoint_doc(f"e{i:03d}") for i in range(250)]
    assert client.post("/v1/apply", json={"manifests": docs}).status_code == 200
    pages, token = [], None
    while True:
        url = "/v1/endpoints?limit=100" + (f"&page_token={token}" if token else "")
        body = client.get(url).get_json()
        pages.append(len(body["items"]))
        token = body["next_page_token"]
        if token is None:
            break
    assert pages == [100, 100, 50]
    everything = client.get("/v1/endpoints?limit=1000").get_json()
    assert [i["metadata"]["name"] for i in everything["items"]] == [d["metadata"]["name"] for d in docs]
    assert everything["next_page_token"] is None
    assert client.get("/v1/endpoints").get_json()["next_page_token"] == "e099"  # default page is 100


def test_delete_route(client, svc):
    client.post("/v1/apply", json={"manifests": [endpoint_doc("gone")]})
    assert client.delete("/v1/endpoints/gone").get_json() == {"deleted": {"kind": "Endpoint", "name": "gone"}}
    assert_error(client.get("/v1/endpoints/gone"), 404, "not_found")


def test_schema_route(client):
    schema = client.get("/v1/schema/workflows").get_json()
    assert schema["title"] == "Ferry Workflow" and "spec" in schema["properties"]
    assert_error(client.get("/v1/schema/gadgets"), 400, "bad_request")


# -- the error model -----------------------------------------------------------------------------------

def test_422_lists_every_problem_and_writes_nothing(client, svc):
    docs = [endpoint_doc("ok"), {"kind": "Endpoint", "metadata": {"name": "x"}, "spec": {"timezone": "Nowhere"}}]
    err = assert_error(client.post("/v1/apply", json={"manifests": docs, "sources": ["a.yaml", "b.yaml"]}),
                       422, "invalid")
    assert {(d["file"], d["document"], d["field"]) for d in err["details"]} == {
        ("b.yaml", 1, "metadata.owner"), ("b.yaml", 1, "spec.timezone")}
    assert svc.store.stats.writes == 0


def test_unknown_body_fields_are_rejected_clearly(client):
    err = assert_error(client.post("/v1/apply", json={"manifests": [], "dryrun": True}), 422, "invalid")
    assert err["details"] == [{"field": "dryrun", "reason": "unknown field"}]
    assert err["message"] == ("invalid request body: unknown field(s) dryrun "
                              "(this body takes: manifests, dry_run, sources)")


def test_400_bad_json_and_bad_query(client):
    resp = client.post("/v1/apply", data=b"{nope", content_type="application/json")
    assert "not valid JSON" in assert_error(resp, 400, "bad_request")["message"]
    assert_error(client.post("/v1/apply", data=b""), 400, "bad_request")
    assert "limit" in assert_error(client.get("/v1/endpoints?limit=0"), 400, "bad_request")["message"]
    assert_error(client.get("/v1/endpoints?limit=ten"), 400, "bad_request")


def test_404_unknown_route_and_object(client):
    assert_error(client.get("/v1/gadgets"), 404, "not_found")
    assert "never" in assert_error(client.get("/v1/workflows/never"), 404, "not_found")["message"]
    assert_error(client.delete("/v1/workflows/never"), 404, "not_found")


def test_403_for_another_teams_object(client):
    client.post("/v1/apply", json={"manifests": [
        {"kind": "Team", "metadata": {"name": "team-a"}, "spec": {"members": ["a@x"], "admins": ["a@x"]}},
        endpoint_doc("mine")]})
    err = assert_error(client.delete("/v1/endpoints/mine", headers={"X-Ferry-User": "eve@x"}), 403, "forbidden")
    assert {k: err["details"][k] for k in ("actor", "owner", "tried")} == {"actor": "eve@x", "owner": "team-a", "tried": "delete"}
    assert client.delete("/v1/endpoints/mine", headers={"X-Ferry-User": "a@x"}).status_code == 200


def test_413_body_over_the_limit(client, svc):
    big = {"manifests": [endpoint_doc(f"e{i:05d}") for i in range(2000)]}
    err = assert_error(client.post("/v1/apply", json=big), 413, "too_large")
    assert str(64 * 1024) in err["message"]
    assert svc.store.stats.writes == 0


def test_409_and_500_keep_the_error_model(svc):
    r = Router()

    @r.route("/v1/boom", ("POST",))
    def boom(call):
        raise Conflict("already there", {"id": "x"})

    @r.route("/v1/bug")
    def bug(call):
        raise KeyError("oops")

    status, body = r.dispatch(svc, "POST", "/v1/boom", {}, {}, b"")
    assert status == 409 and body == {"error": {"code": "conflict", "message": "already there", "details": {"id": "x"}}}
    status, body = r.dispatch(svc, "GET", "/v1/bug", {}, {}, b"")
    assert status == 500 and body["error"]["code"] == "internal" and "KeyError" in body["error"]["message"]


# -- OpenAPI -------------------------------------------------------------------------------------------

def test_openapi_is_valid_3_1_and_lists_every_route(client):
    from openapi_spec_validator import validate

    doc = client.get("/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    validate(doc)
    from ferry.api.openapi import _path

    for route in api_router.routes:
        path, _ = _path(route.path)
        for method in route.methods:
            assert method.lower() in doc["paths"][path], (method, path)
    assert "requestBody" in doc["paths"]["/v1/apply"]["post"]
    ids = [op["operationId"] for p in doc["paths"].values() for op in p.values()]
    assert len(ids) == len(set(ids))


# -- logs ----------------------------------------------------------------------------------------------

@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(log.CloudLoggingFormatter())
    root = logging.getLogger("ferry")
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.INFO)
    yield buf
    root.removeHandler(handler)
    root.setLevel(old)


def test_trace_header_reaches_the_log(client, log_lines):
    client.get("/v1/health", headers={"X-Cloud-Trace-Context": "105445aa7843bc8bf206b12000100000/1;o=1"})
    entries = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    (entry,) = [e for e in entries if e["message"] == "GET /v1/health 200"]
    assert entry[log.TRACE_KEY] == "projects/demo/traces/105445aa7843bc8bf206b12000100000"
    assert entry["severity"] == "INFO" and entry["httpRequest"]["status"] == 200


def test_log_format_has_severity_message_labels_trace(log_lines):
    logger = log.get("test")
    log.set_trace("abc/1", "p")
    token = log.bind(workflow="aggregate-plays", parameter="2026-11-26T14")
    try:
        log.event(logger, logging.WARNING, "instance failed", labels={"execution": "e-1"}, exit_code=3)
        logger.error("plain %s", "error")
    finally:
        log.unbind(token)
        log.set_trace(None, "p")
    logger.info("unlabelled")
    first, second, third = (json.loads(x) for x in log_lines.getvalue().splitlines())
    assert first["severity"] == "WARNING" and first["message"] == "instance failed" and first["exit_code"] == 3
    assert first[log.LABELS_KEY] == {"workflow": "aggregate-plays", "parameter": "2026-11-26T14", "execution": "e-1"}
    assert first[log.TRACE_KEY] == "projects/p/traces/abc"
    assert second["severity"] == "ERROR" and second["message"] == "plain error"
    assert second[log.LABELS_KEY] == {"workflow": "aggregate-plays", "parameter": "2026-11-26T14"}
    assert log.LABELS_KEY not in third and log.TRACE_KEY not in third
    datetime.fromisoformat(third["time"])


def test_exceptions_carry_the_stack(log_lines):
    try:
        raise RuntimeError("kaput")
    except RuntimeError:
        log.get("test").exception("failed")
    entry = json.loads(log_lines.getvalue().splitlines()[0])
    assert entry["severity"] == "ERROR" and "RuntimeError: kaput" in entry["stack_trace"]


def test_413_chunked_body_without_length_is_not_buffered_past_the_limit(client, svc):
    import io

    big = json.dumps({"manifests": [endpoint_doc(f"e{i:05d}") for i in range(2000)]}).encode()
    resp = client.post("/v1/apply", input_stream=io.BytesIO(big), content_type="application/json",
                       headers={"Transfer-Encoding": "chunked"},
                       environ_overrides={"wsgi.input_terminated": True})  # as gunicorn sets it
    assert_error(resp, 413, "too_large")
    assert svc.store.stats.writes == 0


def test_405_wrong_method(client):
    assert_error(client.put("/v1/apply", json={}), 405, "method_not_allowed")


def test_chunked_body_read_stops_at_the_limit():
    import io

    from ferry.api.http import read_at_most as _read_at_most

    stream = io.BytesIO(b"x" * 1_000_000)
    assert len(_read_at_most(stream, 100_001)) == 100_001
    assert stream.tell() == 100_001  # the rest of the body is never read into memory
    assert _read_at_most(io.BytesIO(b"abc"), 10) == b"abc"


@pytest.mark.parametrize(("target", "size"), [("close", 200_000), ("scale", 200_000), ("evaluate", 200_000),
                                              ("dashboard", 200_000), ("styx_tick", 200_000),
                                              ("ingest", 9 * 1024 * 1024)])
def test_every_http_function_reads_its_body_through_the_one_capped_path(  # type: ignore[no-untyped-def]
        target: str, size: int, svc, monkeypatch: pytest.MonkeyPatch) -> None:
    """One serving path: every HTTP function reads its body with ``http.read_body`` (capped at the
    largest limit of the routes it serves) and answers 413 over it."""
    import io

    from ferry.api import http

    limits: list[int] = []
    real = http.read_body

    def read_body(request, limit):  # type: ignore[no-untyped-def]
        limits.append(limit)
        return real(request, limit)

    monkeypatch.setattr(http, "read_body", read_body)
    app = functions_framework.create_app(target, str(ROOT / "functions" / "main.py"), "http")
    # the dashboard serves read routes only (a POST is 405 before any body is read): a GET with a body
    resp = app.test_client().open("/v1/status" if target == "dashboard" else "/",
                                  method="GET" if target == "dashboard" else "POST",
                                  input_stream=io.BytesIO(b"x" * size), content_type="application/json",
                                  headers={"Transfer-Encoding": "chunked"},
                                  environ_overrides={"wsgi.input_terminated": True})
    assert_error(resp, 413, "too_large")
    assert limits == [8 * 1024 * 1024 if target == "ingest" else svc.settings.max_body_bytes]


def test_a_chunked_body_is_not_read_past_the_limit() -> None:
    import io

    from ferry.api.http import read_body

    class Chunked:
        content_length = None
        stream = io.BytesIO(b"x" * 1_000_000)

    assert len(read_body(Chunked(), 100_000)) == 100_001  # enough for dispatch to see it is over
    assert Chunked.stream.tell() == 100_001
