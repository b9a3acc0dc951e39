"""Actions from the web view over the in-memory store: each form posts the API call the CLI makes, under
the same ownership rules, guarded against cross-site forgery; search, the backfill launcher and page,
the run grid and partition paging. (The same in headless Chromium: tests/e2e/test_web.py.)"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any
from urllib.parse import quote, unquote

import pytest

from ferry.bootstrap import Services
from ferry.domain.manifests import KINDS
from ferry.styx.tick import Tick, TickLimits
from ferry.web.app import Reply, handle

from .test_pages import doc, world  # noqa: F401  (the fixture)

OWNER, STRANGER = "alice@example.com", "mallory@example.com"


@pytest.fixture
def team(world: Any) -> Any:  # noqa: F811
    svc, launcher, clock = world
    team = KINDS["Team"].model_validate({"apiVersion": "ferry/v1", "kind": "Team",
                                         "metadata": {"name": "team-a"}, "spec": {"members": [OWNER]}})
    svc.apply.apply([team], clock.now())  # type: ignore[list-item]
    return svc, launcher, clock


def page(svc: Services, path: str, user: str | None = OWNER, **query: str) -> tuple[Reply, str]:
    """GET a page as ``user``; returns the reply and the anti-forgery token it handed out."""
    reply = handle(svc, "GET", path, query, {"X-Ferry-User": user} if user else {})
    cookies = dict(h[1].split(";")[0].split("=", 1) for h in reply.headers if h[0] == "Set-Cookie")
    token = cookies.get("ferry_csrf", "")
    assert re.search(rf'name="csrf" value="{re.escape(token)}"', reply.body) or 'method="post"' not in reply.body
    return reply, token


def post(svc: Services, action: str, form: dict[str, str], user: str | None = OWNER, token: str = "t0k3n",
         headers: dict[str, str] | None = None, cookie: str | None = None) -> tuple[Reply, dict[str, Any]]:
    h = {"X-Ferry-User": user} if user else {}
    h.update(headers or {})
    reply = handle(svc, "POST", f"/actions/{action}", {}, h, {"csrf": token, "next": "/here", **form},
                   {"ferry_csrf": token if cookie is None else cookie})
    flash = {}
    for name, value in reply.headers:
        if name == "Set-Cookie" and value.startswith("ferry_flash="):
            flash = json.loads(unquote(value.split(";")[0].split("=", 1)[1]))
    return reply, flash


def test_a_page_hands_out_an_anti_forgery_token_and_its_forms_carry_it(team: Any) -> None:
    svc, _, _ = team
    reply, token = page(svc, "/workflows/wf-agg/instances/2026-11-26T11")
    assert reply.status == 200 and len(token) >= 20
    set_cookie = [v for k, v in reply.headers if k == "Set-Cookie" and v.startswith("ferry_csrf=")][0]
    assert "SameSite=Strict" in set_cookie and "HttpOnly" in set_cookie
    assert 'data-action="retry"' in reply.body and f'value="{token}"' in reply.body
    # a browser that has the cookie keeps it: no new token per page
    again = handle(svc, "GET", "/", {}, {"X-Ferry-User": OWNER}, None, {"ferry_csrf": token})
    assert not [v for k, v in again.headers if k == "Set-Cookie" and v.startswith("ferry_csrf=")]


def test_retry_from_the_page_is_the_api_call_and_shows_its_result(team: Any) -> None:
    svc, launcher, clock = team
    before = svc.styx.timeline("wf-agg", "2026-11-26T11")
    reply, flash = post(svc, "retry", {"workflow": "wf-agg", "parameter": "2026-11-26T11"})
    assert reply.status == 303 and ("Location", "/here") in reply.headers
    assert flash == {"ok": True, "message": "retrying wf-agg 2026-11-26T11"}
    assert str(svc.styx.instance("wf-agg", "2026-11-26T11").state) == "QUEUED"
    # the page the browser is sent back to shows the result once
    shown = handle(svc, "GET", "/workflows/wf-agg/instances/2026-11-26T11", {}, {"X-Ferry-User": OWNER}, None,
                   {"ferry_flash": quote(json.dumps(flash)), "ferry_csrf": "x"})  # as the browser sends it
    assert 'id="flash"' in shown.body and "retrying wf-agg" in shown.body
    assert any(v.startswith("ferry_flash=;") for k, v in shown.headers if k == "Set-Cookie")  # cleared
    # and it appears in the timeline (the retry is a new trigger)
    clock.advance(timedelta(minutes=1))
    Tick(svc.styx, TickLimits(max_active=100)).run(clock.now())
    timeline = svc.styx.timeline("wf-agg", "2026-11-26T11")
    def events(tl: dict[str, Any]) -> list[str]:
        return [e["event"] for t in tl["triggers"] for e in t["events"]]

    assert events(timeline)[:len(events(before))] == events(before)
    assert events(timeline)[len(events(before)):] == ["retryAfter", "dequeue"], events(timeline)


def test_a_non_owner_sees_the_action_disabled_with_the_owner_and_is_refused(team: Any) -> None:
    svc, _, _ = team
    reply, _ = page(svc, "/workflows/wf-agg/instances/2026-11-26T11", user=STRANGER)
    button = re.search(r'data-action="retry".*?<button([^>]*)>', reply.body, re.S)
    assert button and "disabled" in button.group(1) and "owned by team-a" in button.group(1)
    mine, _ = page(svc, "/workflows/wf-agg/instances/2026-11-26T11", user=OWNER)
    assert "disabled" not in re.search(r'data-action="retry".*?<button([^>]*)>', mine.body, re.S).group(1)
    reply, flash = post(svc, "retry", {"workflow": "wf-agg", "parameter": "2026-11-26T11"}, user=STRANGER)
    assert reply.status == 303 and flash["ok"] is False and "not a member of team-a" in flash["message"]
    assert str(svc.styx.instance("wf-agg", "2026-11-26T11").state) == "ERROR"


@pytest.mark.parametrize("case", ["no token", "wrong token", "cross-site origin", "cross-site fetch"])
def test_forged_posts_are_refused(team: Any, case: str) -> None:
    svc, _, _ = team
    kwargs: dict[str, Any] = {
        "no token": {"token": "", "cookie": ""},
        "wrong token": {"token": "guess", "cookie": "real-token"},
        "cross-site origin": {"headers": {"Origin": "https://evil.example", "Host": "ferry.example"}},
        "cross-site fetch": {"headers": {"Sec-Fetch-Site": "cross-site"}},
    }[case]
    reply, _ = post(svc, "retry", {"workflow": "wf-agg", "parameter": "2026-11-26T11"}, **kwargs)
    assert reply.status == 403
    assert str(svc.styx.instance("wf-agg", "2026-11-26T11").state) == "ERROR"  # nothing happened
    ok, _ = post(svc, "retry", {"workflow": "wf-agg", "parameter": "2026-11-26T11"},
                 headers={"Origin": "https://ferry.example", "Host": "ferry.example", "Sec-Fetch-Site": "same-origin"})
    assert ok.status == 303


def test_next_never_leaves_the_site(team: Any) -> None:
    svc, _, _ = team
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        reply = handle(svc, "POST", "/actions/ack", {}, {"X-Ferry-User": OWNER},
                       {"csrf": "t", "next": target, "alert": "nope"}, {"ferry_csrf": "t"})
        assert ("Location", "/") in reply.headers, target


def test_incidents_ack_silence_and_invalidate_from_the_endpoint_page(team: Any) -> None:
    svc, _, _ = team
    reply, _ = page(svc, "/endpoints/agg")
    alert = re.search(r'<tr data-alert="([^"]+)"', reply.body).group(1)
    assert 'data-action="ack"' in reply.body and 'data-action="silence"' in reply.body
    _, flash = post(svc, "ack", {"alert": alert})
    assert flash == {"ok": True, "message": "incident acknowledged"}
    reply, _ = page(svc, "/endpoints/agg")
    assert re.search(rf'data-alert="{alert}".*?class="acked">yes<', reply.body, re.S)
    _, flash = post(svc, "silence", {"endpoint": "agg", "for": "PT2H", "reason": "known"})
    assert flash["ok"], flash
    raw, _ = page(svc, "/endpoints/raw")
    assert 'data-action="invalidate"' in raw.body
    _, flash = post(svc, "invalidate", {"endpoint": "raw", "partition": "2026-11-26T09", "reason": "bad rows"})
    assert flash["ok"], flash
    raw, _ = page(svc, "/endpoints/raw")
    assert "invalidated by alice@example.com: bad rows" in raw.body


def test_backfill_launcher_previews_then_creates_and_the_backfill_page_halts_it(team: Any) -> None:
    svc, _, _ = team
    reply, _ = page(svc, "/workflows/wf-agg/backfill", start="2026-11-26T09", end="2026-11-26T12")
    assert reply.status == 200 and re.search(r'id="preview">3 instance\(s\) of wf-agg', reply.body)
    bad, _ = page(svc, "/workflows/wf-agg/backfill", start="2026-11-26T09:30", end="2026-11-26T12")
    assert 'id="preview-error"' in bad.body
    downstream, _ = page(svc, "/workflows/wf-agg/backfill", start="2026-11-26T09", end="2026-11-26T12",
                         downstream_of="raw")
    assert 'data-action="reprocess"' in downstream.body and "/workflows/wf-agg" in downstream.body
    _, flash = post(svc, "backfill", {"workflow": "wf-agg", "start": "2026-11-26T09", "end": "2026-11-26T12",
                                      "concurrency": "2", "reverse": "1"})
    assert flash == {"ok": True, "message": "backfill of wf-agg created"}
    wf, _ = page(svc, "/workflows/wf-agg")
    bf = re.search(r'<tr data-backfill="([^"]+)"', wf.body).group(1)
    bpage, _ = page(svc, f"/backfills/{bf}")
    assert bpage.status == 200 and 'data-action="backfill-halt"' in bpage.body
    assert bpage.body.count('<tr data-parameter=') == 3
    _, flash = post(svc, "backfill-halt", {"backfill": bf})
    assert flash["ok"], flash
    assert 'data-state="halted"' in page(svc, f"/backfills/{bf}")[0].body


def test_search_finds_names_by_prefix_instances_by_id_and_my_teams(team: Any) -> None:
    svc, _, _ = team
    reply, _ = page(svc, "/search", q="ag")
    assert re.search(r'data-kind="endpoints">.*data-name="agg"', reply.body, re.S)
    assert 'data-name="raw"' not in reply.body
    reply, _ = page(svc, "/search", q="wf-agg@2026-11-26T11")
    assert "/workflows/wf-agg/instances/2026-11-26T11" in reply.body
    reply, _ = page(svc, "/search", q="team")
    assert re.search(r'data-kind="teams">.*data-name="team-a"', reply.body, re.S)
    reply, _ = page(svc, "/search", mine="1")
    assert "team-a" in reply.body and 'data-name="wf-agg"' in reply.body and 'data-name="agg"' in reply.body
    reply, _ = page(svc, "/search", user=STRANGER, mine="1")
    assert "is in no team" in reply.body
    reply, _ = page(svc, "/search", q="zzz")
    assert 'id="no-results"' in reply.body


def test_run_grid_and_partition_paging(team: Any) -> None:
    svc, _, _ = team
    reply, _ = page(svc, "/workflows/wf-agg")
    cells = dict(re.findall(r'class="cell" href="[^"]+" data-parameter="([^"]+)" data-state="([^"]+)"', reply.body))
    assert cells["2026-11-26T11"] == "ERROR" and cells["2026-11-26T09"] == "DONE"
    assert re.search(r'<th scope="row">2026-11-26</th>', reply.body)
    reply, _ = page(svc, "/endpoints/raw")
    bar = re.findall(r'href="#p-([^"]+)" data-state="([^"]+)"', reply.body)
    assert ("2026-11-26T09", "ok") in bar
    older, _ = page(svc, "/endpoints/raw", before="2026-11-26T11")
    rows = re.findall(r'<tr id="p-([^"]+)"', older.body)
    assert rows == ["2026-11-26T10", "2026-11-26T09"]  # the endpoint starts at 09:00


def test_event_type_page_charts_its_closed_periods(team: Any) -> None:
    """Per period: events delivered, late, duplicates and the closing delay, from the completion records
    (one batched read); a period not closed is a gap."""
    from datetime import UTC, datetime

    from ferry.gabo.state import CLOSED, closed_id
    from ferry.store.base import Op

    svc, _, clock = team
    et = KINDS["EventType"].model_validate({"apiVersion": "ferry/v1", "kind": "EventType",
                                            "metadata": {"name": "play", "owner": "team-a"},
                                            "spec": {"schema": {"type": "object"}, "partitioning": "hourly"}})
    svc.apply.apply([et], clock.now(), OWNER)  # type: ignore[list-item]
    now = clock.now()  # 14:00:30
    closed = {datetime(2026, 11, 26, h, tzinfo=UTC): (100 * h, h, 120 + h) for h in (10, 11, 13)}
    svc.store.write([Op.set(CLOSED, closed_id("play", s), {"state": "closed", "events": n, "late": late,
                                                           "duplicates": 1, "closed_at": s + timedelta(hours=1, seconds=d)})
                     for s, (n, late, d) in closed.items()])
    reply, _ = page(svc, "/eventtypes/play")
    assert reply.status == 200 and now.hour == 14
    bars = {s: dict(re.findall(r'data-partition="([^"]+)" data-value="(\d+)"', chart))
            for chart, s in re.findall(r'(<svg class="chart" data-series="(\w+)".*?</svg>)', reply.body, re.S)}
    assert bars["events"] == {"2026-11-26T10": "1000", "2026-11-26T11": "1100", "2026-11-26T13": "1300",
                              **{k: "0" for k in bars["events"] if k not in ("2026-11-26T10", "2026-11-26T11",
                                                                               "2026-11-26T13")}}
    assert bars["delay_seconds"] == {"2026-11-26T10": "130", "2026-11-26T11": "131", "2026-11-26T13": "133"}
    assert bars["late"]["2026-11-26T13"] == "13" and "2026-11-26T12" not in bars["delay_seconds"]
    assert "3 of 24 closed" in reply.body


def test_endpoints_filter_by_state_and_owner_in_a_shareable_url(team: Any) -> None:
    svc, _, _ = team
    reply, _ = page(svc, "/", state="late")
    assert re.findall(r'<tr data-endpoint="([^"]+)"', reply.body) == ["agg"]
    assert '<option value="late" selected>' in reply.body
    reply, _ = page(svc, "/", state="late", owner="team-b")
    assert re.findall(r'<tr data-endpoint="([^"]+)"', reply.body) == []
    assert page(svc, "/", state="nonsense")[0].status == 400
