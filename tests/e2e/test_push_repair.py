"""Issue 23, finding 3, on a stack of its own with its scheduler running: the Pub/Sub emulator is killed,
`ferry dev up` repairs the stack, and then new events are delivered and closed — by the scheduler and the
push subscriptions alone, no hand step (no `ferry deliver`, `scale` or `close`).

Before the fix the repair recreated every push subscription with an empty ``ferry_secret``: every push
(work orders, close orders, notifications, landings) was refused 401 for good while `ferry dev status`
showed everything alive; nothing was ever delivered again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fakes.parts import part_lines, parts
from ferry.dev import emulators as emu
from ferry.dev.harness import ferry_executable, run_cli
from ferry.domain import periods
from ferry.gabo.names import SUCCESS, final_prefix

from .test_gabo import SCHEMA

pytestmark = pytest.mark.emulator


class Own:
    def __init__(self, home: Path) -> None:
        drop = ("FERRY_API", "FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "FERRY_USER", "FERRY_NOW")
        self.home = home
        self.env = {**{k: v for k, v in os.environ.items() if k not in drop}, "FERRY_HOME": str(home)}

    def call(self, *args: str, input: str | None = None, timeout: float = 300) -> tuple[int, Any]:
        r = run_cli([*args, "--json"], env=self.env, input=input, timeout=timeout, cwd=self.home)
        try:
            return r.returncode, json.loads(r.stdout)
        except ValueError:
            return r.returncode, {"stdout": r.stdout[-2000:], "stderr": r.stderr[-2000:]}

    def run(self, *args: str, input: str | None = None, timeout: float = 300) -> Any:
        code, out = self.call(*args, input=input, timeout=timeout)
        assert code == 0, f"ferry {args} exited {code}: {out}"
        return out

    def state(self) -> dict[str, Any]:
        return json.loads((self.home / "state.json").read_text())


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Own]:
    stack = Own(tmp_path_factory.mktemp("push-repair-home"))
    stack.run("dev", "up", "--project", f"rep-{uuid.uuid4().hex[:6]}", timeout=300)  # with its scheduler
    try:
        yield stack
    finally:
        subprocess.run([ferry_executable(), "dev", "down"], env=stack.env, capture_output=True, timeout=180,
                       cwd=stack.home)


def _until(pred: Any, what: str, deadline_s: float) -> Any:
    end = time.monotonic() + deadline_s
    while True:
        value = pred()
        if value:
            return value
        assert time.monotonic() < end, what
        time.sleep(2)


@pytest.mark.timeout(900)
def test_after_the_pubsub_emulator_is_killed_dev_up_repairs_and_events_flow_again(own: Own) -> None:
    healthy = own.run("dev", "status")
    assert healthy["healthy"] and {s["subscription"] for s in healthy["subscriptions"]} >= {
        "gabo-work-orders-deliver", "gabo-close-orders-shard", "ferry-alerts-notify", "ferry-partitions-land"}

    name = f"rep-{uuid.uuid4().hex[:6]}"
    manifest = own.home / f"{name}.yaml"  # JSON documents are YAML; --- separates them
    me = own.state()["default_user"]  # who the CLI is on this stack; an owner must be a declared Team
    manifest.write_text("\n---\n".join(json.dumps(d) for d in (
        {"apiVersion": "ferry/v1", "kind": "Team", "metadata": {"name": "team-e2e"},
         "spec": {"members": [me], "admins": [me]}},
        {"apiVersion": "ferry/v1", "kind": "EventType", "metadata": {"name": name, "owner": "team-e2e"},
         "spec": {"schema": SCHEMA, "partitioning": "PT1M", "close_after": "PT10S"}})))
    own.run("apply", "-f", str(manifest))

    pubsub = next(c for c in own.state()["components"] if c["kind"] == "emulator" and c["name"] == "pubsub")
    os.killpg(pubsub["pid"], signal.SIGKILL)
    _until(lambda: not emu.port_in_use(pubsub["port"]), "the killed emulator kept its port", 60)
    code, down = own.call("dev", "status")
    assert code == 4 and down["dead"] == ["pubsub"], down

    up = own.run("dev", "up", timeout=300)
    assert up["repaired"] == ["pubsub"], up
    repaired = own.run("dev", "status")  # exits 4 if any push subscription is refused
    assert all(s["ok"] and s["status"] == 204 for s in repaired["subscriptions"]), repaired["subscriptions"]

    # new events at the wall clock's minute; from here on only the scheduler and the pushes act
    ids = [f"after-{i}" for i in range(50)]
    lines = "\n".join(json.dumps({"type": name, "id": i, "payload": {"track_id": i, "ms_played": 1}}) for i in ids)
    sent_at = datetime.now(UTC)
    assert own.run("send", name, "-", input=lines)["accepted"] == len(ids)
    minute = sent_at.replace(second=0, microsecond=0)
    final = own.home / "sink" / final_prefix(name, minute, periods.partitioning("PT1M"))
    # the period ends within a minute, closes 10 s later; scale and close fire every minute
    _until(lambda: (final / SUCCESS).exists(), f"{final} was never closed after the repair", 420)
    success = json.loads((final / SUCCESS).read_text())
    written = [json.loads(line)["id"] for part in parts(final) for line in part_lines(part)]
    assert sorted(written) == sorted(ids), success
    assert own.run("dev", "status")["healthy"]


def test_a_refusing_push_subscription_is_reported_broken_and_dev_up_repairs_it(own: Own) -> None:
    """What the old repair left behind — every component alive, a push endpoint with an empty
    ``ferry_secret`` — is now `BROKEN` in `ferry dev status` (exit 4), and `ferry dev up` re-provisions it."""
    from google.cloud import pubsub_v1

    state = own.state()
    before = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = state["env"]["PUBSUB_EMULATOR_HOST"]
    try:
        subscriber = pubsub_v1.SubscriberClient()
    finally:
        if before is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST")
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = before
    path = f"projects/{state['project']}/subscriptions/gabo-work-orders-deliver"
    endpoint = subscriber.get_subscription(request={"subscription": path}).push_config.push_endpoint
    subscriber.modify_push_config(request={"subscription": path, "push_config": {
        "push_endpoint": endpoint.split("?", 1)[0] + "?ferry_secret="}})
    code, status = own.call("dev", "status")
    assert code == 4 and status["dead"] == [] and status["broken"] == ["gabo-work-orders-deliver"], status
    [row] = [s for s in status["subscriptions"] if s["subscription"] == "gabo-work-orders-deliver"]
    assert row["status"] == 401 and "refuses" in row["problem"]
    up = own.run("dev", "up", timeout=300)
    assert up["repaired"] == ["gabo-work-orders-deliver"], up
    assert own.run("dev", "status")["healthy"]
    assert subscriber.get_subscription(request={"subscription": path}).push_config.push_endpoint == endpoint
    subscriber.close()

