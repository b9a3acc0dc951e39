"""Notifications reach the owning team: the real CLI and functions (evaluate → ferry-alerts → the
``notify`` function) on the emulators, posting to the local stack's channel receiver."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.api_core.exceptions import DeadlineExceeded

from ferry.dev.harness import LocalStack
from ferry.dev.receiver import pagerduty_errors

pytestmark = pytest.mark.emulator


def _received(stack: LocalStack, path: str) -> list[dict[str, Any]]:
    return httpx.get(f"{stack.receiver_url}/_received", params={"path": path}, timeout=10).json()["items"]


def _until(what: Callable[[], Any], deadline: float = 60.0) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        got = what()
        if got:
            return got
        time.sleep(0.3)
    return what()


def _settled(stack: LocalStack, path: str, n: int, settle: float = 3.0, deadline: float = 90.0) -> list[dict[str, Any]]:
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


def _setup(stack: LocalStack, tmp: Path, kind: str = "webhook", min_severity: str = "info") -> tuple[str, str, str]:
    """A team whose one channel posts to the receiver (its URL a file secret) and a daily endpoint
    whose yesterday is late (a one-minute deadline)."""
    name, team = f"nt-{uuid.uuid4().hex[:8]}", f"team-{uuid.uuid4().hex[:6]}"
    path = f"/{kind}/{name}"
    secret = tmp / f"{team}--{name}.secret"  # the team's own secret: <team>--<name> (docs/security.md)
    secret.write_text(f"{stack.receiver_url}{path}\n")
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    manifest = tmp / f"{name}.yaml"
    manifest.write_text(f"""apiVersion: ferry/v1
kind: Team
metadata: {{name: {team}}}
spec:
  members: [alice]
  channels:
    - {{name: ops, type: {kind}, secret: "file:{secret}", min_severity: {min_severity}}}
---
apiVersion: ferry/v1
kind: Endpoint
metadata: {{name: {name}, owner: {team}}}
spec:
  partitioning: daily
  start: {yesterday.isoformat()}T00:00:00Z
  sla: {{error_after: PT1M, severity: page, alert_on_history: true}}
""")
    stack.cli("apply", "-f", str(manifest), user="alice", check=True)
    return name, team, path


@pytest.fixture
def pinned(stack: LocalStack):  # type: ignore[no-untyped-def]
    """Just after midnight yesterday's one-minute deadline may not have passed: pin the clock ahead."""
    now = datetime.now(UTC)
    safe = datetime.combine(now.date(), datetime.min.time(), UTC) + timedelta(minutes=3, seconds=30)
    if now < safe:
        stack.env["FERRY_NOW"] = safe.isoformat()
    yield
    stack.env.pop("FERRY_NOW", None)


def test_a_late_partition_posts_once_and_its_landing_resolves(stack: LocalStack, tmp_path: Path, pinned: None) -> None:
    name, team, path = _setup(stack, tmp_path)
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    stack.cli("evaluate", check=True)
    [trigger] = _settled(stack, path, 1)
    body = trigger["body"]
    assert trigger["status"] == 200 and body["schema"] == "ferry.notification/v1"
    assert body["event_action"] == "trigger" and body["team"] == team and body["channel"] == "ops"
    assert body["severity"] == "critical" and body["subject"] == name and body["kind"] == "late-data"
    assert trigger["headers"]["idempotency-key"] == f"{body['id']}~ops"
    stack.cli("evaluate", check=True)  # nothing new: nothing posted
    stack.cli("land", name, yesterday, user="alice", check=True)
    stack.cli("evaluate", check=True)
    posts = _settled(stack, path, 2)
    assert [p["body"]["event_action"] for p in posts] == ["trigger", "resolve"]
    assert posts[1]["body"]["dedup_key"] == body["dedup_key"]


def test_pagerduty_and_slack_shaped_deliveries(stack: LocalStack, tmp_path: Path, pinned: None) -> None:
    name, team, path = _setup(stack, tmp_path, "slack")
    stack.cli("evaluate", check=True)
    [slack] = _settled(stack, path, 1)
    assert slack["status"] == 200 and slack["body"]["blocks"][0]["type"] == "header"

    # PagerDuty: the routing key from a Secret Manager reference, read locally from $FERRY_HOME/secrets.
    pd_team = f"team-{uuid.uuid4().hex[:6]}"
    secret = f"{pd_team}--pd-{uuid.uuid4().hex[:8]}"
    (stack.home / "secrets").mkdir(exist_ok=True)
    (stack.home / "secrets" / secret).write_text("P" * 32)
    manifest = tmp_path / "pd.yaml"
    manifest.write_text(f"""apiVersion: ferry/v1
kind: Team
metadata: {{name: {pd_team}}}
spec:
  members: [alice]
  channels:
    - {{name: pager, type: pagerduty, secret: projects/p/secrets/{secret}/versions/latest, min_severity: critical}}
---
apiVersion: ferry/v1
kind: Endpoint
metadata: {{name: {name}-pd, owner: {pd_team}}}
spec:
  partitioning: daily
  start: {(datetime.now(UTC).date() - timedelta(days=1)).isoformat()}T00:00:00Z
  sla: {{error_after: PT1M, severity: page, alert_on_history: true}}
""")
    stack.cli("apply", "-f", str(manifest), user="alice", check=True)
    stack.cli("evaluate", check=True)
    mine = _until(lambda: [r for r in _received(stack, "/pagerduty/v2/enqueue")
                           if r["body"].get("payload", {}).get("group") == pd_team])
    assert len(mine) == 1 and mine[0]["status"] == 202, mine
    assert pagerduty_errors(mine[0]["body"]) == [] and mine[0]["body"]["routing_key"] == "P" * 32


def _script(stack: LocalStack, path: str, **spec: Any) -> None:
    httpx.post(f"{stack.receiver_url}/_script", json={"path": path, **spec}, timeout=10).raise_for_status()


def test_a_webhook_failing_three_times_is_delivered_once(stack: LocalStack, tmp_path: Path, pinned: None) -> None:
    name, team, path = _setup(stack, tmp_path)
    _script(stack, path, statuses=[500, 500, 500])
    stack.cli("evaluate", check=True)
    posts = _settled(stack, path, 4, settle=8.0, deadline=120)
    assert [p["status"] for p in posts] == [500, 500, 500, 200], posts
    assert len({p["body"]["id"] for p in posts}) == 1


def test_a_webhook_failing_forever_is_dead_lettered_and_shown(stack: LocalStack, tmp_path: Path, pinned: None) -> None:
    from google.cloud import pubsub_v1

    sub = pubsub_v1.SubscriberClient()
    dead = sub.subscription_path(stack.project, f"test-dead-{uuid.uuid4().hex[:8]}")
    sub.create_subscription(request={"name": dead, "topic": f"projects/{stack.project}/topics/ferry-alerts-dead-letter"})
    try:
        name, team, path = _setup(stack, tmp_path)
        _script(stack, path, always=500)
        stack.cli("evaluate", check=True)

        def mine() -> list[Any]:
            try:
                resp = sub.pull(request={"subscription": dead, "max_messages": 50}, timeout=2.0)
            except DeadlineExceeded:
                return []
            if resp.received_messages:
                sub.acknowledge(request={"subscription": dead, "ack_ids": [m.ack_id for m in resp.received_messages]})
            return [m.message for m in resp.received_messages if m.message.attributes.get("channel") == f"{team}:ops"]

        got = _until(mine, deadline=180)
        assert len(got) == 1 and "500" in got[0].attributes["error"] and got[0].attributes["attempts"] == "4"
        assert json.loads(got[0].data)["owner"] == team
        view = json.loads(stack.cli("status", "--owner", team, "--json", check=True).stdout)
        assert [(c["team"], c["channel"]) for c in view["channels"]] == [(team, "ops")]
        assert "500" in view["channels"][0]["last_error"]
        table = stack.cli("status", "--owner", team, check=True).stdout
        assert "failing notification channels" in table and "ops" in table
        assert len(_received(stack, path)) == 12  # 4 calls x 3 tries, then nothing more
    finally:
        sub.delete_subscription(request={"subscription": dead})
        sub.close()


def test_dev_status_names_the_receiver(stack: LocalStack) -> None:
    out = json.loads(stack.cli("dev", "status", "--json", check=True).stdout)
    [rec] = [c for c in out["components"] if c["kind"] == "receiver"]
    assert rec["url"] == stack.receiver_url and rec["alive"] is True
    assert httpx.get(stack.receiver_url, timeout=5).json()["receiver"] == "ferry"


def test_a_silence_holds_is_visible_and_expires_and_an_ack_stops_renotification(
        stack: LocalStack, tmp_path: Path, pinned: None) -> None:
    name, team, path = _setup(stack, tmp_path)
    base = datetime.fromisoformat(stack.env.get("FERRY_NOW") or datetime.now(UTC).isoformat())
    out = stack.cli("silence", name, "--for", "PT1H", "--reason", "planned backfill", "--json", user="alice", check=True)
    silence = json.loads(out.stdout)
    assert stack.cli("silence", name, "--for", "PT1H", "--reason", "x", user="mallory").returncode == 5
    result = json.loads(stack.cli("evaluate", "--json", check=True).stdout)
    assert result["held"] >= 1
    time.sleep(3)
    assert _received(stack, path) == []  # held back
    view = json.loads(stack.cli("status", "--owner", team, "--json", check=True).stdout)
    assert view["endpoints"][0]["silenced"] == silence["id"] and view["silences"][0]["reason"] == "planned backfill"
    assert "planned backfill" in stack.cli("silences", "--owner", team, check=True).stdout

    stack.env["FERRY_NOW"] = (base + timedelta(hours=1, minutes=5)).isoformat()  # the silence has expired
    stack.cli("evaluate", check=True)
    [post] = _settled(stack, path, 1)
    assert post["body"]["details"]["transition"] == "renotify" and post["body"]["event_action"] == "trigger"
    assert json.loads(stack.cli("silences", "--json", check=True).stdout)["items"] == [] or all(
        s["id"] != silence["id"] for s in json.loads(stack.cli("silences", "--json", check=True).stdout)["items"])

    acked = json.loads(stack.cli("ack", "--endpoint", name, "--json", user="alice", check=True).stdout)
    assert acked["acknowledged"] == 1
    stack.env["FERRY_NOW"] = (base + timedelta(hours=6)).isoformat()  # past renotify_after (PT4H)
    stack.cli("evaluate", check=True)
    time.sleep(3)
    assert len(_received(stack, path)) == 1
