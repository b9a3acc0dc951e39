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


def _manifests(team: str, raw: str, out: str, wf: str, start: str, exit_code: int) -> str:
    """A team (alice), a raw endpoint landed by hand, the workflow that aggregates it into ``out`` (late
    after a minute) and exits ``exit_code``, one try."""
    return f"""
        apiVersion: ferry/v1
        kind: Team
        metadata: {{name: {team}}}
        spec: {{members: [alice]}}
        ---
        apiVersion: ferry/v1
        kind: Endpoint
        metadata: {{name: {raw}, owner: {team}}}
        spec: {{partitioning: daily, start: {start}T00:00:00Z, sla: {{error_after: PT168H}}}}
        ---
        apiVersion: ferry/v1
        kind: Endpoint
        metadata: {{name: {out}, owner: {team}, description: "aggregates of {raw}"}}
        spec: {{partitioning: daily, start: {start}T00:00:00Z, sla: {{error_after: PT1M, alert_on_history: true}}}}
        ---
        apiVersion: ferry/v1
        kind: Workflow
        metadata: {{name: {wf}, owner: {team}}}
        spec:
          schedule: daily
          image: local/job:1
          command: [python, {JOB}]
          args: ["{{}}"]
          env: {{JOB_EXIT: "{exit_code}"}}
          depends_on: [{raw}]
          produces: {out}
          retry: {{max_tries: 1}}
        """


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
    _apply(stack, tmp_path, _manifests(team, raw, out, wf, days[0], exit_code=50))
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


AXE = Path(__file__).parent / "assets" / "axe.min.js"
WIDTHS = {"desktop": (1280, 800), "phone": (390, 844)}


def _overflow(page: Any) -> int:
    """How many pixels the page is wider than its window (0: no horizontal scrolling)."""
    return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


def _audit(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page (vendored, tests/e2e/assets)."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
                           ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))")
    return [f"{v['id']} ({v['impact']}): {v['nodes']}" for v in result if v["impact"] in ("serious", "critical")]


def test_repair_story_in_the_browser_only(stack: LocalStack, tmp_path: Path, browser: Any) -> None:
    """Find the late endpoint by search, open the failing instance, retry it (after the fix is applied)
    and watch it turn DONE without a reload, launch a downstream backfill from the form, ack the incident;
    the same attempt as a non-owner is refused. Every page at 1,280 and 390 px: screenshots, no
    horizontal overflow, no serious or critical accessibility violation."""
    pre, team = f"fix-{uuid.uuid4().hex[:6]}", f"team-{uuid.uuid4().hex[:6]}"
    raw, out, wf = f"{pre}-raw", f"{pre}-out", f"{pre}-agg"
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=n)).isoformat() for n in (3, 2, 1)]
    _apply(stack, tmp_path, _manifests(team, raw, out, wf, days[0], exit_code=50))
    for d in days:
        stack.cli("land", raw, d, "--records", "1000", user="alice", check=True)
    stack.cli("trigger", wf, days[2], user="alice", check=True)
    assert _tick_until(stack, wf, days[2], "ERROR")["exit_code"] == 50
    stack.cli("evaluate", check=True)

    base = stack.function_urls["dashboard"].rstrip("/") + "/"
    shots = Shots(tmp_path)
    context = browser.new_context(viewport={"width": 1280, "height": 800}, extra_http_headers={"X-Ferry-User": "alice"})
    page = context.new_page()
    seen: list[str] = []

    def check(name: str) -> None:
        """Screenshots at both widths, no overflow at either, the accessibility audit at desktop width."""
        for label, (w, h) in WIDTHS.items():
            page.set_viewport_size({"width": w, "height": h})
            assert _overflow(page) <= 0, f"{name} overflows by {_overflow(page)} px at {w} px"
            shots.take(page, f"{name}-{label}-{w}")
        page.set_viewport_size({"width": 1280, "height": 800})
        assert _audit(page) == [], name
        seen.append(name)

    # Find the late endpoint by search.
    page.goto(base)
    check("endpoints")
    page.fill("#q", out)
    page.press("#q", "Enter")
    page.wait_for_url("**/search?q=*")
    check("search")
    page.click(f'ul[data-kind="endpoints"] li[data-name="{out}"] a')
    page.wait_for_url(f"**/endpoints/{out}")
    assert page.locator(f'#partitions tr[data-partition="{days[2]}"]').get_attribute("data-state") == "late"
    check("endpoint")

    # Open the failing instance; the fix is applied; retry it and watch it turn DONE with no reload.
    page.locator(f'#partitions tr[data-partition="{days[2]}"] a.instance').click()
    page.wait_for_url(f"**/workflows/{wf}/instances/{days[2]}")
    assert page.get_attribute("#instance-state", "data-state") == "ERROR"
    check("instance")
    _apply(stack, tmp_path, _manifests(team, raw, out, wf, days[0], exit_code=0))  # the fix
    page.click('form[data-action="retry"] button')
    page.wait_for_selector("#flash")
    assert "retrying" in page.inner_text("#flash.ok")
    page.evaluate("window.__same_page = true")
    http = httpx.Client(base_url=stack.api_url, timeout=60)
    end = time.monotonic() + 90
    while page.get_attribute("#instance-state", "data-state") != "DONE":
        assert time.monotonic() < end, page.get_attribute("#instance-state", "data-state")
        http.post("/v1/tick", json={"budget_seconds": 20}, headers=stack.operator_headers).raise_for_status()
        page.wait_for_timeout(1000)  # htmx refreshes the live part of the page every 3 s
    assert page.evaluate("window.__same_page === true"), "the page was reloaded"
    assert "exiting 0" in page.inner_text("#log")

    # Launch a downstream backfill from the form, with its preview.
    page.goto(f"{base}workflows/{wf}/backfill?downstream_of={raw}")
    page.fill("#bf-start", days[0])
    page.fill("#bf-end", days[2])
    page.click("#backfill-preview-form button[type=submit]")
    page.wait_for_selector("#preview")
    assert "2 instance(s)" in page.inner_text("#preview") and wf in page.inner_text("#preview")
    check("backfill-form")
    page.click("#launch")
    page.wait_for_selector("#flash.ok")
    assert page.locator("#backfills tr[data-backfill]").count() == 1
    check("workflow")
    page.click("#backfills tr[data-backfill] a")
    page.wait_for_url("**/backfills/*")
    check("backfill")

    # Ack the incident.
    page.goto(f"{base}endpoints/{out}")
    alert = page.locator("#alerts tr[data-alert]").first
    alert_id = alert.get_attribute("data-alert")
    alert.locator('form[data-action="ack"] button').click()
    page.wait_for_selector("#flash.ok")
    assert page.inner_text(f'#alerts tr[data-alert="{alert_id}"] .acked') == "yes"
    for path, name in ((f"lineage?endpoint={out}", "lineage"), ("workflows", "workflows"), ("eventtypes", "eventtypes")):
        page.goto(base + path)
        check(name)

    # The same attempt as a non-owner: the action is disabled, naming the owner; posted anyway, refused.
    stranger = browser.new_context(viewport={"width": 1280, "height": 800},
                                   extra_http_headers={"X-Ferry-User": "mallory"})
    other = stranger.new_page()
    other.goto(f"{base}workflows/{wf}/instances/{days[2]}")
    button = other.locator('form[data-action="retry"] button')
    assert button.is_disabled() and team in (button.get_attribute("title") or "")
    other.evaluate("document.querySelector('form[data-action=\"retry\"] button').disabled = false")
    other.click('form[data-action="retry"] button')
    other.wait_for_selector("#flash.err")
    assert "not a member" in other.inner_text("#flash")
    # and a forged cross-site post (no token) changes nothing
    forged = other.request.post(f"{base}actions/retry", form={"workflow": wf, "parameter": days[2]},
                                headers={"Origin": "https://evil.example"}, max_redirects=0)
    assert forged.status == 403
    stranger.close()
    context.close()
    assert len(seen) == 10 and len(list(shots.dir.glob("*.png"))) == 20
