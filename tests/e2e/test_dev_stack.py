"""``ferry dev up | status | fire | down`` through the real CLI, in subprocesses, on its own emulators.

The module's stack runs a small test deployment (tests/e2e/devstack: the real API, an HTTP probe a
scheduler job targets, a Pub/Sub-triggered probe) so every local stand-in of docs/local-stack.md is exercised;
``test_stack_fixture_runs_the_repository_infra`` checks the session ``stack`` fixture on infra/.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.dev import processes
from ferry.dev import stack as stack_mod
from ferry.dev.harness import LocalStack, ferry_executable, run_cli

pytestmark = pytest.mark.emulator

HERE = Path(__file__).parent / "devstack"


@dataclass
class CliStack:
    home: Path
    env: dict[str, str]
    state: dict[str, Any]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_cli(list(args), env=self.env, timeout=timeout, cwd=self.home)

    def probes(self, function: str) -> list[dict[str, Any]]:
        path = self.home / "probe.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [e for e in map(json.loads, lines) if e["function"] == function]


def _env(home: Path) -> dict[str, str]:
    drop = ("FERRY_API", "FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "FERRY_USER")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "FERRY_HOME": str(home)}


def _poll(fn: Any, timeout_s: float = 20.0) -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    return fn()


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliStack]:
    home = tmp_path_factory.mktemp("devstack-home")
    env = _env(home)
    up = subprocess.run([ferry_executable(), "dev", "up", "--json", "--infra", str(HERE / "infra"),
                         "--source", str(HERE / "main.py"), "--project", "devstack-test"],
                        env=env, capture_output=True, text=True, timeout=180, cwd=home)
    assert up.returncode == 0, up.stderr
    state = json.loads(up.stdout)
    assert "stack_secret" not in state, "dev up -o json prints no secret"
    state["stack_secret"] = json.loads((home / "state.json").read_text())["stack_secret"]  # only the file has it
    try:
        yield CliStack(home, env, state)
    finally:
        subprocess.run([ferry_executable(), "dev", "down"], env=env, capture_output=True, timeout=60, cwd=home)


def test_status_shows_every_component_alive(dev: CliStack) -> None:
    out = dev.run("dev", "status", "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    comps = {c["name"]: c for c in status["components"]}
    assert set(comps) == {"pubsub", "firestore", "api", "probe", "probe-event", "scheduler", "receiver"}
    assert all(c["alive"] for c in comps.values()), comps
    assert status["running"] is True and status["api_url"] == comps["api"]["url"]
    assert comps["probe-event"]["signature"] == "cloudevent" and comps["api"]["signature"] == "http"


def test_apply_then_get_lists_the_endpoints(dev: CliStack, tmp_path: Path) -> None:
    me = dev.state["default_user"]  # who this CLI is on the stack; an owner must be a declared Team
    (tmp_path / "a.yaml").write_text(
        f"kind: Team\nmetadata: {{name: team-playback}}\nspec: {{members: [{me}], admins: [{me}]}}\n"
        "---\nkind: Endpoint\nmetadata: {name: plays-hourly, owner: team-playback}\nspec: {partitioning: hourly}\n"
        "---\nkind: Resource\nmetadata: {name: bigquery-slots}\nspec: {concurrency: 10}\n")
    (tmp_path / "b.yaml").write_text(
        "kind: Endpoint\nmetadata: {name: plays-daily, owner: team-playback}\nspec: {partitioning: daily}\n")
    applied = dev.run("apply", "-f", str(tmp_path))
    assert applied.returncode == 0, applied.stderr
    got = dev.run("get", "endpoints", "--json")
    assert got.returncode == 0, got.stderr
    names = {i["metadata"]["name"] for i in json.loads(got.stdout)["items"]}
    assert {"plays-hourly", "plays-daily"} <= names


def test_an_invalid_file_in_a_directory_applies_nothing(dev: CliStack, tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(
        "kind: Endpoint\nmetadata: {name: never-applied, owner: team-x}\nspec: {partitioning: hourly}\n")
    (tmp_path / "bad.yaml").write_text(
        "kind: Endpoint\nmetadata: {name: also-never, owner: team-x}\nspec: {partitioning: fortnightly}\n"
        "---\nkind: Resource\nmetadata: {name: slots}\nspec: {concurrency: -1}\n")
    applied = dev.run("apply", "-f", str(tmp_path))
    assert applied.returncode == 3, (applied.stdout, applied.stderr)
    assert "bad.yaml" in applied.stderr
    assert "partitioning" in applied.stderr and "concurrency" in applied.stderr
    got = json.loads(dev.run("get", "endpoints", "--json").stdout)
    names = {i["metadata"]["name"] for i in got["items"]}
    assert not names & {"never-applied", "also-never"}


def test_a_second_up_reports_the_running_stack(dev: CliStack) -> None:
    again = dev.run("dev", "up", "--infra", str(HERE / "infra"), "--source", str(HERE / "main.py"))
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stdout
    status = json.loads(dev.run("dev", "status", "--json").stdout)
    assert [c["pid"] for c in status["components"]] == [c["pid"] for c in dev.state["components"]]


def test_fire_calls_the_target_like_cloud_scheduler(dev: CliStack) -> None:
    fired = dev.run("dev", "fire", "probe-every-minute", "--json")
    assert fired.returncode == 0, fired.stderr
    assert json.loads(fired.stdout)["status"] == 200
    # (the stack's own scheduler may fire the every-minute job meanwhile: every request has the shape)
    requests = _poll(lambda: dev.probes("probe"))
    assert requests
    for req in requests:
        assert req["path"] == "/tick" and req["body"] == {"job": "probe"} and req["env"] == "from-infra"
        h = req["headers"]
        assert h["User-Agent"] == "Google-Cloud-Scheduler" and h["X-Cloudscheduler"] == "true"
        assert h["X-Cloudscheduler-Jobname"] == "probe-every-minute"
        assert h["X-Cloudscheduler-Scheduletime"].endswith(":00.000Z")
    log = (stack_mod.log_dir(dev.home) / "scheduler.log").read_text()
    assert '"job": "probe-every-minute"' in log
    status = json.loads(dev.run("dev", "status", "--json").stdout)
    assert status["last_fired"]["probe-every-minute"]["status"] == 200


def test_the_scheduler_process_runs_the_jobs_of_infra(dev: CliStack) -> None:
    log = stack_mod.log_dir(dev.home) / "scheduler.log"
    started = _poll(lambda: [json.loads(x) for x in log.read_text().splitlines() if "scheduler started" in x])
    [jobs] = [s["jobs"] for s in started]
    probe_url = next(c["url"] for c in dev.state["components"] if c["name"] == "probe")
    assert jobs == [{"job": "probe-every-minute", "schedule": "* * * * *", "time_zone": "Europe/Stockholm",
                     "target": probe_url + "/tick"}]


def test_a_publish_reaches_the_pubsub_triggered_function(dev: CliStack) -> None:
    from google.cloud import pubsub_v1

    before = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = dev.state["env"]["PUBSUB_EMULATOR_HOST"]
    try:
        sub = pubsub_v1.SubscriberClient().get_subscription(
            subscription="projects/devstack-test/subscriptions/probe-event-push")
        publisher = pubsub_v1.PublisherClient()
        publisher.publish("projects/devstack-test/topics/probe-topic", b"hello", kind="probe").result(timeout=30)
    finally:
        if before is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST")
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = before
    probe_url = next(c["url"] for c in dev.state["components"] if c["name"] == "probe-event")
    # the stack's secret rides in the query: the push is the only caller a pushed function admits
    assert sub.push_config.push_endpoint == (f"{probe_url}/projects/devstack-test/topics/probe-topic"
                                             f"?ferry_secret={dev.state['stack_secret']}")
    assert sub.ack_deadline_seconds == 60
    assert sub.dead_letter_policy.dead_letter_topic == "projects/devstack-test/topics/ferry-dead-letter"
    assert sub.dead_letter_policy.max_delivery_attempts == 5
    [event] = _poll(lambda: dev.probes("probe-event"), 30)
    assert event["data"] == "hello" and event["attributes"] == {"kind": "probe"}
    assert event["type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert event["source"].endswith("projects/devstack-test/topics/probe-topic")


def _clients(dev: CliStack) -> tuple[Any, Any]:
    from google.cloud import pubsub_v1

    before = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = json.loads((dev.home / "state.json").read_text())["env"]["PUBSUB_EMULATOR_HOST"]
    try:
        return pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    finally:
        if before is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST")
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = before


def _publish(dev: CliStack, topic: str, data: bytes, **attributes: str) -> None:
    publisher, subscriber = _clients(dev)
    publisher.publish(f"projects/devstack-test/topics/{topic}", data, **attributes).result(timeout=30)
    subscriber.close()


def _pull(dev: CliStack, subscription: str) -> list[Any]:
    publisher, subscriber = _clients(dev)
    try:
        return list(_poll(lambda: subscriber.pull(request={
            "subscription": f"projects/devstack-test/subscriptions/{subscription}", "max_messages": 10},
            timeout=10).received_messages, 30))
    finally:
        subscriber.close()


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        t0 = time.monotonic()
        out = subprocess.run([ferry_executable(), "dev", "up", "--base-port", str(port), "--infra",
                              str(HERE / "infra"), "--source", str(HERE / "main.py")],
                             env=_env(tmp_path), capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 4
    assert f"port {port}" in out.stderr and "in use" in out.stderr
    assert time.monotonic() - t0 < 15
    assert not (tmp_path / "state.json").exists()


def test_down_stops_everything_it_started_and_keeps_the_data(dev: CliStack) -> None:
    landed = dev.run("land", "plays-hourly", "2026-11-26T14", "--records", "7")
    assert landed.returncode == 0, landed.stderr
    before = {k: json.loads(dev.run(*k.split(), "-o", "json").stdout) for k in ("get endpoints", "status")}
    state = json.loads(dev.run("dev", "status", "--json").stdout)
    # a dead letter nobody else keeps (issue 23, finding 9): down counts and keeps it, up brings it back
    _publish(dev, "ferry-dead-letter", b"dead", CloudPubSubDeadLetterSourceSubscription="probe-pull")
    groups = [c["pid"] for c in state["components"] if c.get("pid")]
    java = [p for p in stack_mod.stack_pids(state) if "java" in Path(f"/proc/{p}/cmdline").read_bytes().decode()]
    assert len(java) == 2, "both Java emulators run in the stack's process groups"
    out = dev.run("dev", "down", "--json")
    assert out.returncode == 0, out.stderr
    down = json.loads(out.stdout)
    assert {s["name"] for s in down["stopped"]} == {c["name"] for c in state["components"]}
    assert processes.group_members(groups) == {g: [] for g in groups}
    assert not [p for p in java if (processes.proc_stat(p) or ("Z",))[0] != "Z"], "a Java emulator survived"
    assert not (dev.home / "state.json").exists()
    status = json.loads(dev.run("dev", "status", "--json").stdout)
    assert status["running"] is False
    # what cannot survive is named: the probe message published earlier still waits in the pull subscription
    assert down["undelivered"]["probe-pull"]["messages"] >= 1
    assert down["exported"] and (Path(down["exported"])).is_dir()
    assert down["held"] == {"ferry-dead-letter-hold": 1} and down["held_kept"] is True

    # up again: the same ports, the same endpoints and landed partitions
    up = dev.run("dev", "up", "--json", "--infra", str(HERE / "infra"), "--source", str(HERE / "main.py"),
                 "--project", "devstack-test", timeout=180)
    assert up.returncode == 0, up.stderr
    again = json.loads(up.stdout)
    assert again["api_url"] == dev.state["api_url"]
    assert any("restored" in n for n in again["notes"]), again["notes"]
    assert again["held_restored"] == {"ferry-dead-letter-hold": 1}
    [held] = _pull(dev, "ferry-dead-letter-hold")
    assert held.message.data == b"dead" and held.message.attributes["CloudPubSubDeadLetterSourceSubscription"] == \
        "probe-pull"
    after = {k: json.loads(dev.run(*k.split(), "-o", "json").stdout) for k in ("get endpoints", "status")}
    assert [i["metadata"] for i in after["get endpoints"]["items"]] == \
        [i["metadata"] for i in before["get endpoints"]["items"]]
    landed_before = {e["endpoint"]: e.get("last_landed") for e in before["status"]["endpoints"]}
    assert {e["endpoint"]: e.get("last_landed") for e in after["status"]["endpoints"]} == landed_before
    assert landed_before["plays-hourly"]
    relanded = dev.run("land", "plays-hourly", "2026-11-26T14", "-o", "json")
    assert json.loads(relanded.stdout)["relanded"] is True

    # reset: stopped, and nothing is kept
    reset = dev.run("dev", "reset", "--yes", "--json")
    assert reset.returncode == 0, reset.stderr
    assert "data" in json.loads(reset.stdout)["removed"] and not (dev.home / "data").exists()


def test_stack_fixture_runs_the_repository_infra(stack: LocalStack) -> None:
    from ferry.infra import model

    assert set(stack.function_urls) == {f.name for f in model.load().functions}
    for url in stack.function_urls.values():
        httpx.get(url, timeout=10)  # any HTTP answer: the process serves
    out = stack.cli("get", "endpoints", "--json", check=True)
    assert isinstance(json.loads(out.stdout)["items"], list)
    assert stack.services().settings.project == stack.project
    assert "GET /" in stack.log_text("api")
