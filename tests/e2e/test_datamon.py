"""Datamon's Must-show against the local stack: the real CLI, the functions, the emulators, a real
subscriber on ``ferry-alerts`` (the dashboard in Chromium: tests/e2e/test_web.py)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.api_core.exceptions import DeadlineExceeded

from ferry.dev.harness import LocalStack

pytestmark = pytest.mark.emulator


class AlertsSubscriber:
    """A pull subscription of the test's own on ``ferry-alerts`` (google-cloud-pubsub on the emulator)."""

    def __init__(self, project: str) -> None:
        from google.cloud import pubsub_v1

        self.sub = pubsub_v1.SubscriberClient()
        self.path = self.sub.subscription_path(project, f"test-alerts-{uuid.uuid4().hex[:8]}")
        self.sub.create_subscription(request={"name": self.path, "topic": f"projects/{project}/topics/ferry-alerts"})
        self.seen: list[dict[str, Any]] = []

    def drain(self, endpoint: str | tuple[str, ...], settle: float = 3.0, deadline: float = 20.0) -> list[dict[str, Any]]:
        """Messages of ``endpoint`` (or of several) until none arrived for ``settle`` seconds (or ``deadline``)."""
        out: list[dict[str, Any]] = []
        end = time.monotonic() + deadline
        quiet_since = time.monotonic()
        while time.monotonic() < end and time.monotonic() - quiet_since < settle:
            try:
                resp = self.sub.pull(request={"subscription": self.path, "max_messages": 100}, timeout=1.0)
            except DeadlineExceeded:
                continue
            if resp.received_messages:
                self.sub.acknowledge(request={"subscription": self.path,
                                              "ack_ids": [m.ack_id for m in resp.received_messages]})
                quiet_since = time.monotonic()
                for m in resp.received_messages:
                    if m.message.attributes.get("endpoint") in (endpoint if isinstance(endpoint, tuple) else (endpoint,)):
                        out.append(json.loads(m.message.data))
        return out

    def close(self) -> None:
        self.sub.delete_subscription(request={"subscription": self.path})
        self.sub.close()


def _write(tmp: Path, name: str, team: str, start: date, history: bool = False, partitioning: str = "daily",
           error_after: str = "PT1M") -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(f"""apiVersion: ferry/v1
kind: Team
metadata: {{name: {team}}}
spec: {{members: [alice]}}
---
apiVersion: ferry/v1
kind: Endpoint
metadata: {{name: {name}, owner: {team}}}
spec:
  partitioning: {partitioning}
  start: {start.isoformat()}T00:00:00Z
  sla: {{error_after: {error_after}, severity: page, alert_on_history: {str(history).lower()}}}
""")
    return path


def _mine(stack: LocalStack, name: str, *args: str) -> list[dict[str, Any]]:
    out = stack.cli("alerts", "--json", "--endpoint", name, *args, check=True)
    return [a for a in json.loads(out.stdout)["items"] if a["endpoint"] == name]


def test_must_show_late_alert_land_resolve(stack: LocalStack, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    safe = datetime.combine(now.date(), datetime.min.time(), UTC) + timedelta(minutes=3, seconds=30)
    if now < safe:
        # Just after midnight yesterday's 1-minute deadline may not have passed: the stack's clock is
        # pinned a few minutes ahead (X-Ferry-Now via FERRY_NOW) instead of skipping the test.
        stack.env["FERRY_NOW"] = safe.isoformat()
    try:
        _must_show(stack, tmp_path)
    finally:
        stack.env.pop("FERRY_NOW", None)


def _must_show(stack: LocalStack, tmp_path: Path) -> None:
    name, team = f"dm-{uuid.uuid4().hex[:8]}", f"team-{uuid.uuid4().hex[:6]}"
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=n)).isoformat() for n in (3, 2, 1)]
    manifest = _write(tmp_path, name, team, today - timedelta(days=3), history=True)
    stack.cli("apply", "-f", str(manifest), user="alice", check=True)
    subscriber = AlertsSubscriber(stack.project)
    try:
        stack.cli("evaluate", "--json", check=True)
        [incident] = _mine(stack, name)
        assert (incident["count"], incident["oldest"], incident["newest"]) == (3, days[0], days[2])
        assert incident["severity"] == "critical" and incident["level"] == "late" and incident["id"] == f"{name}~1"
        [trigger] = subscriber.drain(name)
        assert trigger["dedup_key"] == f"{name}~1" and trigger["event_action"] == "trigger"
        assert trigger["owner"] == team and trigger["custom_details"]["late_partitions"] == 3

        # Bad input: clear errors, nothing changed.
        bad = stack.cli("land", "no-such-endpoint", days[0], user="alice")
        assert bad.returncode == 3 and "not found" in bad.stderr
        bad = stack.cli("land", name, "2026-13-45", user="alice")
        assert bad.returncode == 3 and "daily partitioning" in bad.stderr and "like 2026-11-26" in bad.stderr
        assert bad.stderr.count("2026-13-45") == 1, "the error is printed once"
        bad = stack.cli("land", name, (today - timedelta(days=9)).isoformat(), user="alice")
        assert bad.returncode == 3 and "before the endpoint's start" in bad.stderr
        bad = stack.cli("ack", incident["id"], user="mallory")
        assert bad.returncode == 5 and "not a member" in bad.stderr
        assert not any(a.get("acked") for a in _mine(stack, name))

        # A landing updates the incident without a notification; the last one resolves it.
        landed = stack.cli("land", name, days[1], "--records", "42", "--json", user="alice", check=True)
        assert json.loads(landed.stdout)["relanded"] is False
        stack.cli("evaluate", check=True)
        assert subscriber.drain(name, settle=2.0) == []
        [incident] = _mine(stack, name)
        assert (incident["count"], incident["oldest"], incident["newest"]) == (2, days[0], days[2])
        table = stack.cli("alerts", "--endpoint", name, check=True).stdout
        assert f"{name}~1" in table and "2" in table

        acked = stack.cli("ack", incident["id"], "--json", user="alice", check=True)
        assert json.loads(acked.stdout)["items"][0]["acked"] is True
        view = json.loads(stack.cli("status", "--owner", team, "--json", check=True).stdout)
        assert [r["endpoint"] for r in view["endpoints"]] == [name]
        row = view["endpoints"][0]
        assert row["state"] == "late" and row["open_alerts"] == 1 and row["last_landed"] == days[1]
        assert row["incident"]["count"] == 2
        table = stack.cli("status", "--owner", team, check=True).stdout
        assert name in table and "late" in table

        for day in (days[0], days[2]):
            stack.cli("land", name, day, user="alice", check=True)
        stack.cli("evaluate", check=True)
        [resolve] = subscriber.drain(name)
        assert (resolve["event_action"], resolve["dedup_key"]) == ("resolve", f"{name}~1")
        assert _mine(stack, name) == [] and _mine(stack, name, "--all")[0]["open"] is False
    finally:
        subscriber.close()


def test_must_show_history_does_not_storm(stack: LocalStack, tmp_path: Path) -> None:
    """500 partitions in the past: no notification by default; with alert_on_history one incident."""
    subscriber = AlertsSubscriber(stack.project)
    try:
        start = (datetime.now(UTC) - timedelta(hours=510)).date()
        quiet, loud, team = f"dm-{uuid.uuid4().hex[:8]}", f"dm-{uuid.uuid4().hex[:8]}", f"team-{uuid.uuid4().hex[:6]}"
        for name, history in ((quiet, False), (loud, True)):
            path = _write(tmp_path, name, team, start, history=history, partitioning="hourly", error_after="PT2H")
            stack.cli("apply", "-f", str(path), user="alice", check=True)
        result = json.loads(stack.cli("evaluate", "--json", check=True).stdout)
        assert result["notifications"]["trigger"] >= 1
        sent = subscriber.drain((quiet, loud))
        assert [e for e in sent if e["custom_details"]["endpoint"] == quiet] == []
        view = {r["endpoint"]: r for r in json.loads(stack.cli("status", "--json", check=True).stdout)["endpoints"]}
        assert view[quiet]["state"] == "late" and view[quiet]["incident"] is None
        assert len([p for p in view[quiet]["open_partitions"] if p["state"] == "late"]) >= 490
        assert _mine(stack, quiet) == []
        [trigger] = [e for e in sent if e["custom_details"]["endpoint"] == loud]
        [incident] = _mine(stack, loud)
        assert incident["count"] >= 490 and trigger["custom_details"]["late_partitions"] == incident["count"]
    finally:
        subscriber.close()


def test_landing_through_the_partitions_topic(stack: LocalStack, tmp_path: Path) -> None:
    from google.cloud import pubsub_v1

    from ferry.datamon import landing

    name, team = f"dm-{uuid.uuid4().hex[:8]}", f"team-{uuid.uuid4().hex[:6]}"
    today = datetime.now(UTC).date()
    stack.cli("apply", "-f", str(_write(tmp_path, name, team, today - timedelta(days=2))), user="alice", check=True)
    partition = (today - timedelta(days=1)).isoformat()
    pub = pubsub_v1.PublisherClient()
    topic = pub.topic_path(stack.project, "ferry-partitions")
    body = {"endpoint": name, "partition": partition, "records": 7, "location": "gs://b/x", "source": "test"}
    pub.publish(topic, json.dumps(body).encode()).result(timeout=30)
    pub.publish(topic, json.dumps(body).encode()).result(timeout=30)  # a producer retrying: a re-landing
    svc = stack.services()
    deadline = time.monotonic() + 30
    doc = None
    while time.monotonic() < deadline:
        doc = svc.store.get("datamon_partitions", f"{name}@{partition}")
        if doc and doc.get("landings") == 2:
            break
        time.sleep(0.3)
    assert doc is not None and doc["records"] == 7 and doc["landings"] == 2, doc
    assert landing.landed(svc.store, name, [partition]) == {partition}
