"""The Pub/Sub emulator killed and restarted under load, on a stack of its own (its own emulators):
the reconcile restores every topic and subscription, the events lost with the emulator's memory are
reported missing by the ledger check, and their period does not close — no ``_SUCCESS`` with a wrong
count; ``ferry dev up`` repairs the half-running stack, keeping Firestore's data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ferry.dev import emulators as emu
from ferry.dev import stack as stack_mod
from ferry.dev.harness import ferry_executable, run_cli
from ferry.gabo.envelopes import iso
from ferry.gabo.names import final_prefix

from .test_gabo import SCHEMA, VirtualClock, t0

pytestmark = pytest.mark.emulator


class Own:
    def __init__(self, home: Path) -> None:
        drop = ("FERRY_API", "FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "FERRY_USER")
        self.home = home
        self.env = {**{k: v for k, v in os.environ.items() if k not in drop}, "FERRY_HOME": str(home)}
        self.spawned: list[int] = []  # emulators a test restarted by hand: stopped with the stack

    def run(self, *args: str, now: str | None = None, input: str | None = None, timeout: float = 300) -> Any:
        env = dict(self.env, **({"FERRY_NOW": now} if now else {}))
        r = run_cli([*args, "--json"], env=env, input=input, timeout=timeout, cwd=self.home)
        assert r.returncode == 0, f"ferry {args} exited {r.returncode}: {r.stdout[-2000:]} {r.stderr[-2000:]}"
        return json.loads(r.stdout)

    def state(self) -> dict[str, Any]:
        return json.loads((self.home / "state.json").read_text())

    def pubsub(self) -> dict[str, Any]:
        return next(c for c in self.state()["components"] if c["kind"] == "emulator" and c["name"] == "pubsub")


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Own]:
    stack = Own(tmp_path_factory.mktemp("selfheal-home"))
    stack.run("dev", "up", "--no-scheduler", "--project", f"heal-{uuid.uuid4().hex[:6]}", timeout=300)
    try:
        yield stack
    finally:
        subprocess.run([ferry_executable(), "dev", "down"], env=stack.env, capture_output=True, timeout=120,
                       cwd=stack.home)
        for pid in stack.spawned:  # a test that failed before `dev up` adopted it must not leave it on its port
            emu.stop_group(pid)


def _kill_pubsub(stack: Own, pid: int | None = None) -> dict[str, Any]:
    """SIGKILL the emulator's process group (the recorded one, or ``pid``'s) and wait for its port."""
    comp = stack.pubsub()
    os.killpg(pid or comp["pid"], signal.SIGKILL)
    end = time.monotonic() + 60
    while emu.port_in_use(comp["port"]) and time.monotonic() < end:
        time.sleep(0.2)
    return comp


def _send(stack: Own, name: str, ids: list[str], at: str) -> dict[str, Any]:
    lines = "\n".join(json.dumps({"type": name, "id": i, "payload": {"track_id": i, "ms_played": 1}}) for i in ids)
    return stack.run("send", name, "-", now=at, input=lines)


def test_pubsub_restart_is_healed_and_lost_events_are_reported_missing(own: Own) -> None:
    name = f"heal-{uuid.uuid4().hex[:6]}"
    manifest = own.home / f"{name}.json"
    me = stack_mod.default_identity(own.home)  # who the CLI is on this stack (an owner must be a declared Team)
    team = {"kind": "Team", "metadata": {"name": "team-e2e"}, "spec": {"members": [me], "admins": [me]}}
    manifest.write_text(json.dumps(team) + "\n---\n" + json.dumps(
        {"kind": "EventType", "metadata": {"name": name, "owner": "team-e2e"},
         "spec": {"schema": SCHEMA, "partitioning": "PT1M", "close_after": "PT10S"}}))
    own.run("apply", "-f", str(manifest))
    start_t = t0()
    at = iso(start_t)
    assert _send(own, name, [f"lost{i}" for i in range(5000)], at)["accepted"] == 5000

    # killed with 5,000 accepted events in its memory; restarted bare, as a supervisor would
    comp = _kill_pubsub(own)
    proc = emu.spawn(emu.PUBSUB, comp["port"], Path(comp["log"]), own.state()["project"])
    own.spawned.append(proc.pid)
    emu.wait_http(comp["url"] + "/", 120, proc)
    healed = own.run("scale", "--dry-run")["reconciled"]
    assert {f"gabo-{name}", "gabo-work-orders", "ferry-alerts"} <= set(healed["topics"]), healed
    assert {f"gabo-{name}-delivery", "gabo-work-orders-deliver"} <= set(healed["subscriptions"]), healed
    assert own.run("scale", "--dry-run")["reconciled"]["topics"] == []  # idempotent: nothing missing now

    # ingest goes on; delivery writes what survived; the period does not close short of the ledger
    assert _send(own, name, [f"kept{i}" for i in range(1000)], at)["accepted"] == 1000
    clock = VirtualClock(start_t + timedelta(seconds=70))
    written = 0
    end = time.monotonic() + 240
    while written < 1000 and time.monotonic() < end:
        written += own.run("deliver", name, "--budget", "20", now=clock.iso())["written"]
    assert written == 1000
    time.sleep(6)
    own.run("deliver", name, "--budget", "5", now=clock.iso())  # a drain after the period's end
    time.sleep(6)
    partition = at[:16]
    rep = own.run("close", name, now=clock.iso(plus_s=20))["reports"][0]
    assert partition not in {c["partition"] for c in rep["closed"]}
    [held] = [h for h in rep["open"] if h["partition"] == partition]
    assert held["reason"] == f"5,000 accepted events of {name} {partition} are missing"
    final = own.home / "sink" / final_prefix(name, start_t.replace(second=0), __import__(
        "ferry.domain.periods", fromlist=["x"]).partitioning("PT1M"))
    assert not (final / "_SUCCESS").exists()
    # past the bound: an owner-routed alert naming the shortfall
    own.run("close", name, now=iso(start_t + timedelta(minutes=13)))
    alerts = own.run("alerts")
    items = alerts["items"] if isinstance(alerts, dict) else alerts
    mine = [a for a in items if a.get("endpoint") == f"events.{name}"]
    assert mine and mine[0]["owner"] == "team-e2e" and "5,000 accepted events" in mine[0]["summary"]
    own.run("evaluate")  # the scheduler's minute (it is off here): registers the type's endpoint row
    row = next(r for r in own.run("status")["endpoints"] if r["endpoint"] == f"events.{name}")
    assert [(m["partition"], m["missing"]) for m in row["missing_events"]] == [(partition, 5000)], row

    # killed again: `ferry dev up` restarts it in place (the rest lives on) and re-provisions
    _kill_pubsub(own, proc.pid)
    up = own.run("dev", "up", "--no-scheduler", timeout=300)
    assert up["repaired"] == ["pubsub"], up.get("repaired")
    # infra/'s and the type's are back already (the repair re-applies the stored types): nothing missing
    assert any("1 event type(s) recreated" in n for n in up["notes"]), up["notes"]
    healed = own.run("scale", "--dry-run")["reconciled"]
    assert healed["topics"] == [] and f"gabo-{name}-delivery" not in healed["subscriptions"], healed
    assert own.run("get", "eventtype", name)["metadata"]["name"] == name  # Firestore kept its data
    assert _send(own, name, ["after-repair"], iso(start_t + timedelta(minutes=20)))["accepted"] == 1
