"""The web view's pages over the in-memory store, a fake launcher and the real Datamon and Styx
services: each page renders the data, links lead to the pages that exist, reads are bounded by what
is shown. (The same pages in headless Chromium: tests/e2e/test_web.py.)"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fakes.styx_launcher import FakeLauncher
from ferry.bootstrap import Services, in_memory
from ferry.clock import FixedClock
from ferry.datamon import evaluation, landing
from ferry.domain.manifests import KINDS
from ferry.styx.tick import Tick, TickLimits
from ferry.web.app import respond

T0 = datetime(2026, 11, 26, 12, 0, 30, tzinfo=UTC)


def doc(kind: str, name: str, owner: str | None = "team-a", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "ferry/v1", "kind": kind, "metadata": {"name": name, "owner": owner}, "spec": spec}


def get(svc: Services, path: str, **query: str) -> tuple[int, str]:
    status, ctype, body = respond(svc, "GET", path, query, {})
    return status, body


def links(html: str) -> list[str]:
    return re.findall(r'href="([^"]+)"', html)


@pytest.fixture
def world() -> tuple[Services, FakeLauncher, FixedClock]:
    """raw (landed by hand) -> wf-agg (hourly, fails with exit 50 at 12:00) -> agg."""
    clock = FixedClock(T0)
    launcher = FakeLauncher()
    svc = in_memory(clock, launcher=launcher)
    manifests = [doc("Endpoint", "raw", partitioning="hourly", start="2026-11-26T09:00:00Z", sla={"error_after": "PT6H"}),
                 doc("Endpoint", "agg", partitioning="hourly", start="2026-11-26T09:00:00Z", sla={"error_after": "PT1H"}),
                 doc("Workflow", "wf-agg", schedule="hourly", image="img", depends_on=["raw"], produces="agg",
                     retry={"max_tries": 1})]
    svc.apply.apply([KINDS[d["kind"]].model_validate(d) for d in manifests], clock.now())  # type: ignore[arg-type]
    styx = svc.styx
    for h in ("09", "10", "11"):
        landing.land(svc.store, "raw", f"2026-11-26T{h}", now=clock.now())
        styx.trigger("wf-agg", f"2026-11-26T{h}", clock.now())
    clock.advance(timedelta(minutes=1))
    Tick(svc.styx, TickLimits(max_active=100)).run(clock.now())
    for spec in launcher.launched:
        launcher.finish(spec, 0 if spec.parameter != "2026-11-26T11" else 50)
    clock.advance(timedelta(minutes=1))
    Tick(svc.styx, TickLimits(max_active=100)).run(clock.now())
    clock.set(T0 + timedelta(hours=2))
    landing.land(svc.store, "raw", "2026-11-26T12", now=clock.now())
    evaluation.evaluate(svc.store, svc.publisher, now=clock.now())
    return svc, launcher, clock


def test_endpoints_page_shows_states_with_links_and_a_legend(world) -> None:
    svc, _, _ = world
    status, html = get(svc, "/")
    assert status == 200
    rows = dict(re.findall(r'<tr data-endpoint="([^"]+)" data-state="([^"]+)"', html))
    assert rows == {"agg": "late", "raw": "pending"}  # raw 13:00 is due at 20:00
    assert "/endpoints/agg" in links(html) and "landed on time" in html
    assert "/assets/ferry.css" in links(html) and get(svc, "/assets/ferry.css")[0] == 200


def test_endpoint_page_shows_partition_producer_and_failing_instance(world) -> None:
    svc, _, _ = world
    status, html = get(svc, "/endpoints/agg")
    assert status == 200
    assert re.search(r'data-partition="2026-11-26T11" data-state="late"', html)
    assert "/workflows/wf-agg/instances/2026-11-26T11" in links(html)
    assert "/workflows/wf-agg" in links(html) and "/endpoints/raw" in links(html)
    assert "exit 50" in html
    for link in links(html):
        if link.startswith("/") and not link.startswith("/assets"):
            path, _, q = link.partition("?")
            assert get(svc, path, **dict(p.split("=", 1) for p in q.split("&") if p))[0] == 200, link


def test_instance_page_shows_timeline_exit_code_and_logs(world) -> None:
    svc, _, _ = world
    status, html = get(svc, "/workflows/wf-agg/instances/2026-11-26T11")
    assert status == 200
    assert 'id="exit-code">50<' in html and "log of exec-" in html and "terminate" in html


def test_workflow_lineage_and_eventtypes_pages(world) -> None:
    svc, _, _ = world
    status, html = get(svc, "/workflows/wf-agg")
    assert status == 200 and 'data-parameter="2026-11-26T11" data-state="ERROR"' in html
    status, html = get(svc, "/workflows")
    assert status == 200 and "/workflows/wf-agg" in links(html)
    status, html = get(svc, "/lineage", endpoint="agg")
    assert status == 200
    nodes = dict(re.findall(r'data-node="([^"]+)" data-kind="[^"]+" data-state="([^"]+)"', html))
    assert nodes == {"endpoint:agg": "late", "endpoint:raw": "pending", "workflow:wf-agg": "ERROR"}
    assert re.search(r'data-from="endpoint:raw" data-to="workflow:wf-agg"', html)
    assert re.search(r'data-from="workflow:wf-agg" data-to="endpoint:agg"', html)
    assert get(svc, "/eventtypes")[0] == 200


def test_errors_and_read_only(world) -> None:
    svc, _, _ = world
    status, html = get(svc, "/endpoints/nope")
    assert status == 404 and "nope" in html
    assert respond(svc, "POST", "/", {}, {})[0] == 405
    assert respond(svc, "POST", "/v1/evaluate", {}, {})[0] == 405
    status, ctype, body = respond(svc, "GET", "/v1/status", {}, {})
    assert status == 200 and ctype == "application/json"


def test_endpoints_page_reads_are_bounded_by_the_page(world) -> None:
    svc, _, clock = world
    many = [KINDS["Endpoint"].model_validate(doc("Endpoint", f"e{i:04d}", partitioning="daily"))
            for i in range(300)]
    svc.apply.apply(many, clock.now())  # type: ignore[arg-type]
    before = svc.store.stats.snapshot()
    status, html = get(svc, "/", limit="50")
    reads = svc.store.stats.since(before)["reads"]
    assert status == 200 and html.count("<tr data-endpoint=") == 50 and 'id="next"' in html
    assert reads <= 52, reads


def test_lineage_reads_a_level_at_a_time(world, monkeypatch) -> None:
    """hub -> wf-i -> out-i -> d-i for 20 i: the summaries, producers, consumers and downstream endpoints
    of a level are read together, not one query per neighbour."""
    svc, _, clock = world
    many = [doc("Endpoint", "hub", partitioning="daily")]
    for i in range(20):
        many += [doc("Endpoint", f"out-{i}", partitioning="daily"),
                 doc("Endpoint", f"d-{i}", partitioning="daily", upstream=[f"out-{i}"]),
                 doc("Workflow", f"wf-{i}", schedule="daily", image="img", depends_on=["hub"], produces=f"out-{i}")]
    svc.apply.apply([KINDS[d["kind"]].model_validate(d) for d in many], clock.now())  # type: ignore[arg-type]
    calls: list[str] = []
    for method in ("get", "get_many", "query"):
        real = getattr(svc.store, method)

        def counted(collection: str, *args: Any, _real: Any = real, _m: str = method, **kw: Any) -> Any:
            calls.append(f"{_m} {collection}")
            return _real(collection, *args, **kw)
        monkeypatch.setattr(svc.store, method, counted)
    status, html = get(svc, "/lineage", endpoint="hub", depth="4")
    assert status == 200
    nodes = set(re.findall(r'data-node="([^"]+)"', html))
    assert len(nodes) == 61 and {"workflow:wf-7", "endpoint:out-7", "endpoint:d-7"} <= nodes
    assert re.search(r'data-from="endpoint:out-7" data-to="endpoint:d-7"', html)
    graph_calls = [c for c in calls if "styx_instances" not in c]
    # 3 levels with nodes (hub; out-*; d-*), each one batched get and 3 queries; the 4th level is empty
    assert not [c for c in graph_calls if c.startswith("get ")], graph_calls
    assert len([c for c in graph_calls if c.startswith(("get_many", "query")) and "manifests" not in c]) <= 12, graph_calls


def test_lineage_stops_expanding_at_its_node_budget(world, monkeypatch) -> None:
    """hub -> wf-i -> out-i -> d-i for 20 i, with a budget of 45 nodes and 5 names per query: the second
    level is expanded one query batch at a time, and no further once the graph has 45 nodes."""
    from ferry.web import lineage

    svc, _, clock = world
    many = [doc("Endpoint", "hub", partitioning="daily")]
    for i in range(20):
        many += [doc("Endpoint", f"out-{i:02d}", partitioning="daily"),
                 doc("Endpoint", f"d-{i:02d}", partitioning="daily", upstream=[f"out-{i:02d}"]),
                 doc("Workflow", f"wf-{i:02d}", schedule="daily", image="img", depends_on=["hub"],
                     produces=f"out-{i:02d}")]
    svc.apply.apply([KINDS[d["kind"]].model_validate(d) for d in many], clock.now())  # type: ignore[arg-type]
    monkeypatch.setattr(lineage, "MAX_NODES", 45)
    monkeypatch.setattr(lineage, "MAX_IN", 5)
    g = lineage.neighbourhood(svc, ["hub"], clock.now(), depth=4)
    assert g.truncated
    assert len(g.nodes) == 46 and len([n for n in g.nodes if n.startswith("endpoint:d-")]) == 5


def test_lineage_layout_is_layered_and_no_edge_crosses_a_node() -> None:
    """a -> b -> c -> d and a -> d, a -> c: the long edges pass through empty slots of the columns between
    their ends (virtual nodes), every segment joins adjacent columns, so no edge is drawn through a node."""
    from ferry.web import lineage

    g = lineage.Graph()
    for n in "abcdxy":
        g.nodes[f"endpoint:{n}"] = {"kind": "endpoint", "name": n, "state": "ok", "href": f"/endpoints/{n}"}
    g.edges |= {("endpoint:a", "endpoint:b"), ("endpoint:b", "endpoint:c"), ("endpoint:c", "endpoint:d"),
                ("endpoint:a", "endpoint:d"), ("endpoint:a", "endpoint:c"), ("endpoint:x", "endpoint:y"),
                ("endpoint:x", "endpoint:d")}
    plan = lineage.layout(g)
    step = lineage.NODE_W + lineage.COL_GAP
    occupied = set(plan.pos.values())
    assert len(occupied) == len(plan.pos)  # no two nodes share a slot
    virtual: set[tuple[int, int]] = set()
    for (a, b), route in plan.routes.items():
        assert route[0] == plan.pos[a] and route[-1] == plan.pos[b]
        for (x1, _), (x2, _) in zip(route, route[1:], strict=False):
            assert x2 - x1 == step, (a, b, route)  # adjacent columns only: drawn in the gap between them
        for slot in route[1:-1]:
            assert slot not in occupied and slot not in virtual, (a, b, slot)
            virtual.add(slot)
    assert len(plan.routes[("endpoint:a", "endpoint:d")]) == 4
    html = lineage.svg(g, {"ok": "#1b5e20"})
    assert html.count('class="edge"') == 7 and 'fill="#fff"' in html
    assert lineage.ink("#fbc02d") == "#000" and lineage.ink("#263238") == "#fff"


def test_the_workflow_list_shows_the_next_run_and_a_strip_of_the_last_runs(world) -> None:
    """Issue 18.5: each workflow's next natural trigger, and its last instances' states as a strip
    (oldest on the left) linking to each instance; a workflow whose newest instance failed stands out."""
    svc, _, _ = world
    status, html = get(svc, "/workflows")
    assert status == 200
    row = re.search(r'<tr data-workflow="wf-agg"( class="failing")?>.*?</tr>', html, re.S)
    assert row is not None and row.group(1)  # 11 ended ERROR: the newest instance failed
    cells = re.findall(r'href="([^"]+)" data-state="([^"]+)" title="([^"]+)"', row.group(0))
    assert [(s, t) for _, s, t in cells] == [("DONE", "2026-11-26T09: DONE"), ("DONE", "2026-11-26T10: DONE"),
                                            ("ERROR", "2026-11-26T11: ERROR")]
    assert cells[2][0].endswith("/workflows/wf-agg/instances/2026-11-26T11")
    assert '<time datetime="2026-11-26T13:00:00+00:00"' in row.group(0)  # hourly: 12 fires at 13:00
