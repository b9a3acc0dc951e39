"""Benchmark: the web view with 10,000 endpoints and 2,000 workflows on the Firestore emulator.

Per page view: server time (``respond``, the dashboard function's body without Flask) and Firestore
reads, for the endpoints page, an endpoint's page, the lineage graph (default and around one
endpoint) and the workflows page; then time to first contentful paint in headless Chromium over
HTTP. The ratio printed compares the endpoints page with reading every summary (``/v1/status``,
what the first dashboard did), measured in the same run. Aim: reads bounded by what is shown.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from fakes.api_server import threaded
from ferry.bootstrap import Services, bootstrap
from ferry.clock import FixedClock
from ferry.config import Settings
from ferry.datamon import domain
from ferry.datamon.repository import ENDPOINTS, LINEAGE
from ferry.domain.manifests import KINDS
from ferry.store.base import MAX_BATCH, Op
from ferry.store.manifests import ManifestRepository
from ferry.web.app import respond

pytestmark = [pytest.mark.bench, pytest.mark.emulator]

N_ENDPOINTS = int(os.environ.get("WEB_BENCH_ENDPOINTS", "10000"))
N_WORKFLOWS = int(os.environ.get("WEB_BENCH_WORKFLOWS", "2000"))
NOW = datetime(2026, 11, 26, 12, 5, tzinfo=UTC)


def _seed(svc: Services) -> int:
    """Endpoint and workflow manifests, endpoint summaries and lineage, as apply and the evaluator
    leave them: workflow i depends on ep-5i and on the previous workflow's output, produces ep-5i+2;
    ep-5i+3 declares ep-5i+2 upstream. 1% of the endpoints are late."""
    repo = ManifestRepository(svc.store)
    ops: list[Op] = []
    for i in range(N_ENDPOINTS):
        name = f"ep-{i:05d}"
        upstream = [f"ep-{i - 1:05d}"] if i % 5 == 3 else []
        m = KINDS["Endpoint"].model_validate({"metadata": {"name": name, "owner": f"team-{i % 50:02d}"},
                                              "spec": {"partitioning": "hourly", "upstream": upstream,
                                                       "sla": {"error_after": "PT2H"}}})
        rec = repo.record_for(m, None, NOW - timedelta(days=30))  # type: ignore[arg-type]
        ops.append(repo.op_for(rec))
        policy = domain.Policy.from_spec(name, rec.owner or "", m.spec, 1)  # type: ignore[attr-defined]
        cadence = policy.cadence
        newest = cadence.prev(cadence.floor(NOW))
        late = i % 100 == 7
        open_ = [domain.Entry(cadence.format(newest - timedelta(hours=3)), newest - timedelta(hours=3),
                              domain.State.LATE)] if late else []
        summary = domain.Summary(newest, next_check=NOW + timedelta(hours=1), state="late" if late else "ok",
                                 open=open_, strip=[{"partition": cadence.format(cadence.prev(newest)), "state": "ok"}])
        ops.append(Op.set(ENDPOINTS, name, {**policy.to_doc(), **summary.to_doc(),
                                            "registered_at": NOW - timedelta(days=30), "upstream_all": upstream,
                                            "latest": {"partition": cadence.format(cadence.prev(newest)),
                                                       "start": cadence.prev(newest), "end": newest,
                                                       "landed_at": newest + timedelta(minutes=3)}}))
    for i in range(N_WORKFLOWS):
        name = f"wf-{i:05d}"
        deps = [f"ep-{5 * i:05d}"] + ([f"ep-{5 * (i - 1) + 2:05d}"] if i else [])
        produces = f"ep-{5 * i + 2:05d}"
        m = KINDS["Workflow"].model_validate({"metadata": {"name": name, "owner": f"team-{i % 50:02d}"},
                                              "spec": {"schedule": "hourly", "image": "img", "depends_on": deps,
                                                       "produces": produces}})
        ops.append(repo.op_for(repo.record_for(m, None, NOW - timedelta(days=30))))  # type: ignore[arg-type]
        ops.append(Op.set(LINEAGE, name, {"produces": produces, "depends_on": deps}))
    for i in range(0, len(ops), MAX_BATCH):
        svc.store.write(ops[i:i + MAX_BATCH])
    return len(ops)


CALLS = [0]  # the store's get / get_many / query calls: round trips (a get_many of up to 300 ids is one)


def _count_calls(svc: Services) -> None:
    for method in ("get", "get_many", "query"):
        real = getattr(svc.store, method)

        def counted(*args: object, _real: Any = real, **kw: object) -> Any:
            CALLS[0] += 1
            return _real(*args, **kw)
        setattr(svc.store, method, counted)


def _measure(svc: Services, path: str, query: dict[str, str], rounds: int = 3) -> tuple[float, int, int, int]:
    """Median server milliseconds, reads per view, store calls per view, bytes of HTML."""
    times, reads, calls, size = [], 0, 0, 0
    for _ in range(rounds):
        before, calls_before = svc.store.stats.snapshot(), CALLS[0]
        t0 = time.perf_counter()
        status, _, body = respond(svc, "GET", path, query, {})
        times.append((time.perf_counter() - t0) * 1000)
        assert status == 200, body[:500]
        reads, calls, size = svc.store.stats.since(before)["reads"], CALLS[0] - calls_before, len(body)
    return statistics.median(times), reads, calls, size


@contextmanager
def _http(svc: Services) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            status, ctype, body = respond(svc, "GET", url.path, dict(parse_qsl(url.query)), dict(self.headers.items()))
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", f"{ctype}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    with threaded(Handler) as url:
        yield url


@pytest.mark.timeout(3600)
def test_web_view_at_10k_endpoints_2k_workflows(emulators, project_id: str) -> None:  # type: ignore[no-untyped-def]
    from ferry.store.firestore import FirestoreStore

    svc = bootstrap(Settings(project=project_id, store="firestore", broker="memory", allow_clock_override=True),
                    store=FirestoreStore(project_id), clock=FixedClock(NOW))
    t0 = time.monotonic()
    seeded = _seed(svc)
    print(f"\n[web bench] {N_ENDPOINTS} endpoints, {N_WORKFLOWS} workflows: seeded {seeded} docs in "
          f"{time.monotonic() - t0:.1f}s")
    mid = f"ep-{5 * (N_WORKFLOWS // 2) + 2:05d}"
    pages = [("endpoints page", "/", {}), ("endpoints page 2", "/", {"after": "ep-00049"}),
             ("endpoint page", f"/endpoints/{mid}", {}), ("lineage (first page)", "/lineage", {}),
             (f"lineage around {mid}, depth 2", "/lineage", {"endpoint": mid}),
             (f"lineage around {mid}, depth 6", "/lineage", {"endpoint": mid, "depth": "6"}),
             ("workflows page", "/workflows", {}), ("workflow page", f"/workflows/wf-{N_WORKFLOWS // 2:05d}", {}),
             # issue 22's pages: filters, search, history, the backfill launcher's preview
             ("endpoints page, late only", "/", {"state": "late"}),
             ("endpoint page, older partitions", f"/endpoints/{mid}", {"before": "2026-11-25T00"}),
             ("search 'ep-012'", "/search", {"q": "ep-012"}),
             ("search my teams", "/search", {"mine": "1"}),
             ("backfill preview, 48 hours", f"/workflows/wf-{N_WORKFLOWS // 2:05d}/backfill",
              {"start": "2026-11-24T00", "end": "2026-11-26T00"})]
    results = {}
    _count_calls(svc)
    for label, path, query in pages:
        ms, reads, calls, size = _measure(svc, path, query)
        results[label] = (ms, reads)
        print(f"[web bench] {label:<36} {ms:8.1f} ms server, {reads:5d} Firestore reads, {calls:4d} store calls, "
              f"{size // 1024:4d} KB")
    t0 = time.perf_counter()
    svc.store.query(ENDPOINTS, [], limit=51)
    raw_ms = (time.perf_counter() - t0) * 1000
    print(f"[web bench] of which the emulator's one query of 51 summaries: {raw_ms:.1f} ms (the emulator scans "
          f"the collection; Firestore serves it from an index)")
    status_ms, status_reads, _, _ = _measure(svc, "/v1/status", {}, rounds=1)
    page_ms, page_reads = results["endpoints page"]
    print(f"[web bench] every summary (/v1/status)               {status_ms:8.1f} ms server, {status_reads:5d} reads")
    print(f"[web bench] ratio endpoints page / every summary: time {page_ms / status_ms:.3f}, "
          f"reads {page_reads / status_reads:.4f}")
    # 51 summaries (a page of 50 and whether there is a next) and the silences in force (one query, billed
    # as one read when none is)
    assert page_reads <= 52 and results["endpoints page 2"][1] <= 52
    assert all(reads <= 800 for _, reads in results.values())
    assert status_reads >= N_ENDPOINTS

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        print("[web bench] chromium not installed: no time to first render")
        return
    from playwright.sync_api import sync_playwright

    with _http(svc) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        for label, path, query in [pages[0], pages[3], pages[4]]:
            fcps, dcls = [], []
            for _ in range(3 if path == "/" else 1):
                page.goto(base + path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""),
                          timeout=120_000)
                page.wait_for_timeout(200)  # the paint entry is recorded just after the first frame
                fcps.append(page.evaluate(
                    "() => (performance.getEntriesByName('first-contentful-paint')[0] || {startTime: NaN}).startTime"))
                dcls.append(page.evaluate("() => performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"))
            print(f"[web bench] {label:<36} first contentful paint in Chromium {statistics.median(fcps):7.1f} ms, "
                  f"DOM ready {statistics.median(dcls):7.1f} ms (from navigation start, server time included)")
        browser.close()
