"""The web view in real headless Chromium (Playwright) against the local stack: the ``dashboard``
function's pages over the Firestore emulator, a workflow executed by the local launcher.

Must show: from the endpoints page, click a late endpoint -> its page shows the partition, the
producing workflow and its failing instance -> that instance's page shows the exit code and the log
lines. Every page loads, shows its data, and its links lead to pages that answer; a screenshot of
each page is saved under the test's tmp dir (``FERRY_SCREENSHOTS=DIR`` keeps copies there too).
"""

from __future__ import annotations

import os
import shutil
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.dev.harness import LocalStack

pytestmark = pytest.mark.emulator
JOB = str(Path(__file__).resolve().parents[2] / "examples" / "styx" / "job.py")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    exe = _chromium()
    if exe is None:
        why = ("CHROMIUM IS NOT INSTALLED: the web view's browser tests did not run "
               "(apt-get install -y chromium; .ci/run installs it)")
        if os.environ.get("FERRY_REQUIRE_EMULATORS") == "1":  # CI: every real part must be there
            pytest.fail(why)
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


class Shots:
    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "screenshots"
        self.dir.mkdir()
        self.keep = Path(os.environ["FERRY_SCREENSHOTS"]) if os.environ.get("FERRY_SCREENSHOTS") else None

    def take(self, page: Any, name: str) -> Path:
        path = self.dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 5000, f"{name}: blank screenshot?"
        if self.keep:
            self.keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, self.keep / path.name)
        return path


def _apply(stack: LocalStack, tmp: Path, text: str) -> None:
    path = tmp / f"m-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(textwrap.dedent(text))
    stack.cli("apply", "-f", str(path), user="alice", check=True)


def _tick_until(stack: LocalStack, wf: str, p: str, state: str, deadline: float = 60.0) -> dict[str, Any]:
    http = httpx.Client(base_url=stack.api_url, timeout=60)
    end = time.monotonic() + deadline
    while True:
        http.post("/v1/tick", json={"budget_seconds": 20}, headers=stack.operator_headers).raise_for_status()
        inst = http.get(f"/v1/workflows/{wf}/instances/{p}").json()
        if inst.get("state") == state:
            return inst
        assert time.monotonic() < end, inst
        time.sleep(0.3)


def _links_answer(page: Any, base: str) -> int:
    """Every link in the page's main area answers 200 (the pages they name exist)."""
    hrefs = page.eval_on_selector_all("main a[href], main svg a", "els => els.map(e => new URL(e.getAttribute('href'), document.baseURI).href)")
    checked = 0
    for href in sorted(set(hrefs)):
        if href.startswith(base):
            assert page.request.get(href).status == 200, href
            checked += 1
    return checked


def test_late_endpoint_to_failing_instance_in_chromium(stack: LocalStack, tmp_path: Path, browser: Any) -> None:
    pre, team = f"web-{uuid.uuid4().hex[:6]}", f"team-{uuid.uuid4().hex[:6]}"
    raw, out, wf = f"{pre}-raw", f"{pre}-out", f"{pre}-agg"
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=n)).isoformat() for n in (3, 2, 1)]
    _apply(stack, tmp_path, f"""
        apiVersion: ferry/v1
        kind: Team
        metadata: {{name: {team}}}
        spec: {{members: [alice]}}
        ---
        apiVersion: ferry/v1
        kind: Endpoint
        metadata: {{name: {raw}, owner: {team}}}
        spec: {{partitioning: daily, start: {days[0]}T00:00:00Z, sla: {{error_after: PT168H}}}}
        ---
        apiVersion: ferry/v1
        kind: Endpoint
        metadata: {{name: {out}, owner: {team}, description: "aggregates of {raw}"}}
        spec: {{partitioning: daily, start: {days[0]}T00:00:00Z, sla: {{error_after: PT1M, alert_on_history: true}}}}
        ---
        apiVersion: ferry/v1
        kind: Workflow
        metadata: {{name: {wf}, owner: {team}}}
        spec:
          schedule: daily
          image: local/job:1
          command: [python, {JOB}]
          args: ["{{}}"]
          env: {{JOB_EXIT: "50"}}
          depends_on: [{raw}]
          produces: {out}
          retry: {{max_tries: 1}}
        """)
    for d in days:
        stack.cli("land", raw, d, "--records", "1000", user="alice", check=True)
    stack.cli("trigger", wf, days[1], "-e", "JOB_EXIT=0", user="alice", check=True)
    _tick_until(stack, wf, days[1], "DONE")
    stack.cli("trigger", wf, days[2], user="alice", check=True)
    failed = _tick_until(stack, wf, days[2], "ERROR")
    assert failed["exit_code"] == 50
    stack.cli("evaluate", check=True)

    base = stack.function_urls["dashboard"].rstrip("/") + "/"
    shots = Shots(tmp_path)
    page = browser.new_page(viewport={"width": 1280, "height": 800})

    # The endpoints page: the team's endpoints, the late one red, a legend.
    page.goto(f"{base}?owner={team}")
    rows = page.eval_on_selector_all("#endpoints tbody tr[data-endpoint]",
                                     "els => els.map(e => [e.dataset.endpoint, e.dataset.state])")
    assert dict(rows) == {out: "late", raw: "ok"}
    assert page.locator(f'tr[data-endpoint="{out}"] .state').evaluate("e => getComputedStyle(e).backgroundColor") \
        == "rgb(211, 47, 47)"
    assert "landed after its deadline" in page.inner_text(".legend")
    assert page.locator("header").evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(38, 50, 56)"  # styled
    shots.take(page, "1-endpoints")
    assert _links_answer(page, base) >= 2

    # Click the late endpoint: its partition, the producing workflow and the failing instance.
    page.click(f'tr[data-endpoint="{out}"] a')
    page.wait_for_url(f"**/endpoints/{out}")
    assert out in page.inner_text("h1")
    late = page.locator(f'#partitions tr[data-partition="{days[2]}"]')
    assert late.get_attribute("data-state") == "late"
    assert page.locator(f'#partitions tr[data-partition="{days[1]}"]').get_attribute("data-state") in (
        "ok", "landed_late")
    assert wf in page.inner_text("#producers") and raw in page.inner_text("#upstream")
    assert "ERROR" in late.inner_text() and "exit 50" in late.inner_text()
    assert page.locator("#alerts tbody tr[data-alert]").count() >= 1
    shots.take(page, "2-endpoint")
    assert _links_answer(page, base) >= 4

    # Its failing instance: the timeline with the exit code, and the log lines inline.
    late.locator("a.instance").click()
    page.wait_for_url(f"**/workflows/{wf}/instances/{days[2]}")
    assert page.inner_text("#exit-code") == "50"
    assert page.locator("#timeline .execution .exit").first.inner_text() == "50"
    log = page.inner_text("#log")
    assert f"parameter={days[2]}" in log and "job: exiting 50" in log
    shots.take(page, "3-instance")
    assert _links_answer(page, base) >= 1

    # The workflow page: its instances with states.
    page.click(f"h1 a[href$='workflows/{wf}']")
    page.wait_for_url(f"**/workflows/{wf}")
    states = dict(page.eval_on_selector_all("#instances tbody tr[data-parameter]",
                                            "els => els.map(e => [e.dataset.parameter, e.dataset.state])"))
    assert states == {days[1]: "DONE", days[2]: "ERROR"}
    shots.take(page, "4-workflow")

    # The lineage graph around the late endpoint: coloured nodes that link to their pages.
    page.goto(f"{base}lineage?endpoint={out}")
    nodes = dict(page.eval_on_selector_all("#lineage a.node", "els => els.map(e => [e.dataset.node, e.dataset.state])"))
    assert nodes == {f"endpoint:{out}": "late", f"endpoint:{raw}": "ok", f"workflow:{wf}": "ERROR"}
    shots.take(page, "5-lineage")
    assert _links_answer(page, base) == 3
    page.click(f'#lineage a.node[data-node="workflow:{wf}"]')
    page.wait_for_url(f"**/workflows/{wf}")

    # Workflows and event types pages load.
    page.goto(f"{base}workflows?owner={team}")
    assert page.locator(f'#workflows tr[data-workflow="{wf}"]').count() == 1
    shots.take(page, "6-workflows")
    page.goto(f"{base}eventtypes")
    assert page.locator("#eventtypes").count() == 1
    shots.take(page, "7-eventtypes")
    page.close()
    assert len(list(shots.dir.glob("*.png"))) == 7
