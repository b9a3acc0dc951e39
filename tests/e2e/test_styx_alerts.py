"""Owners told when a run fails (issue 18.4), on the local stack: the tick (``POST /v1/tick``) opens the
workflow's incident, the alerts topic carries it to the ``notify`` function, which posts to the team's
webhook on the local channel receiver."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.dev.harness import LocalStack

pytestmark = pytest.mark.emulator


def _received(stack: LocalStack, path: str) -> list[dict[str, Any]]:
    return httpx.get(f"{stack.receiver_url}/_received", params={"path": path}, timeout=10).json()["items"]


def _settled(stack: LocalStack, path: str, n: int, settle: float = 5.0, deadline: float = 120.0) -> list[dict[str, Any]]:
    """What ``path`` received once it has at least ``n`` requests and nothing more came for ``settle`` s."""
    end = time.monotonic() + deadline
    seen, since = -1, time.monotonic()
    while time.monotonic() < end:
        got = _received(stack, path)
        if len(got) != seen:
            seen, since = len(got), time.monotonic()
        elif len(got) >= n and time.monotonic() - since >= settle:
            return got
        time.sleep(0.3)
    return _received(stack, path)


def _ticks_until(api: httpx.Client, stack: LocalStack, done: Callable[[], bool], deadline: float = 120.0) -> None:
    end = time.monotonic() + deadline
    while not done():
        assert time.monotonic() < end, "not there in time"
        r = api.post("/v1/tick", json={"budget_seconds": 20}, headers=stack.operator_headers)
        assert r.status_code == 200, r.text
        time.sleep(0.3)


def test_failing_out_of_tries_notifies_once_a_success_resolves_once_a_failing_backfill_notifies_once(
        stack: LocalStack, tmp_path: Path) -> None:
    wf, team = f"e2e-fail-{uuid.uuid4().hex[:6]}", f"team-{uuid.uuid4().hex[:6]}"
    path = f"/webhook/{wf}"
    secret = tmp_path / f"{team}--hook.secret"  # the team's own secret: <team>--<name> (docs/security.md)
    secret.write_text(f"{stack.receiver_url}{path}\n")
    manifest = tmp_path / "m.yaml"
    # 2020's partitions fail (exit 3), the others succeed; one try each
    manifest.write_text(f"""apiVersion: ferry/v1
kind: Team
metadata: {{name: {team}}}
spec:
  members: [alice]
  channels:
    - {{name: ops, type: webhook, secret: "file:{secret}", min_severity: info}}
---
apiVersion: ferry/v1
kind: Workflow
metadata: {{name: {wf}, owner: {team}}}
spec:
  schedule: daily
  image: local/job:1
  command: [sh, -c, 'case "$FERRY_PARAMETER" in 2020-*) exit 3;; *) exit 0;; esac']
  timeout: PT10M
  enabled: false
  retry: {{max_tries: 1, initial_backoff: PT1S, max_backoff: PT1M}}
  alerts: {{severity: ticket}}
""")
    stack.cli("apply", "-f", str(manifest), user="alice", check=True)
    api = httpx.Client(base_url=stack.api_url, timeout=60, headers={"X-Ferry-User": "alice"})

    def state(p: str) -> str:
        return str(api.get(f"/v1/workflows/{wf}/instances/{p}").json().get("state"))

    def trigger(p: str) -> None:
        r = api.post(f"/v1/workflows/{wf}/instances/{p}/trigger", json={})
        assert r.status_code in (200, 201), r.text

    trigger("2020-01-01")
    _ticks_until(api, stack, lambda: state("2020-01-01") == "ERROR")
    got = _settled(stack, path, 1)
    if len(got) != 1:  # what the tick and notify said about it
        logs = "\n".join(ln for fn in ("api", "notify") for ln in stack.log_text(fn).splitlines()
                         if wf in ln or "alert" in ln.lower())
        raise AssertionError(f"{len(got)} notifications; logs:\n{logs[-6000:]}")
    [first] = got
    body = first["body"]
    assert body["event_action"] == "trigger" and body["team"] == team and body["severity"] == "error"
    assert body["kind"] == "workflow-failure" and body["subject"] == wf and "exited 3" in body["summary"]
    alerts = stack.cli("alerts", "--owner", team, "--json", user="alice", check=True).stdout
    assert f"styx:{wf}~1" in alerts  # listed with Datamon's, acknowledgeable the same way

    trigger("2021-01-01")
    _ticks_until(api, stack, lambda: state("2021-01-01") == "DONE")
    posts = _settled(stack, path, 2)
    assert [p["body"]["event_action"] for p in posts] == ["trigger", "resolve"]
    assert posts[1]["body"]["dedup_key"] == body["dedup_key"]

    out = stack.cli("backfill", "create", wf, "2020-02-01", "2020-02-21", "--concurrency", "20", user="alice",
                    check=True)
    assert out.returncode == 0
    days = [f"2020-02-{d:02d}" for d in range(1, 21)]

    def all_failed() -> bool:
        items = api.get(f"/v1/workflows/{wf}/instances", params={"limit": 100}).json()["items"]
        return sum(1 for i in items if i["parameter"] in days and i["state"] == "ERROR") == 20
    _ticks_until(api, stack, all_failed, deadline=180)
    posts = _settled(stack, path, 3, settle=8.0)
    print(f"\n{wf}: {[(p['body']['event_action'], p['body']['dedup_key']) for p in posts]}")
    assert [p["body"]["event_action"] for p in posts] == ["trigger", "resolve", "trigger"]  # 20 failures: one
    assert posts[2]["body"]["dedup_key"] == f"styx:{wf}~2"
