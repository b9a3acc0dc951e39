"""Repairing a half-running local stack: restart what died, keep what lives, re-provision Pub/Sub.

``ferry dev up`` calls :func:`repair` when the stack recorded in ``FERRY_HOME`` is partly running (an
emulator or a function process died). Each dead component is started again exactly as ``up`` started
it — same port, same command, same environment — so the living ones keep talking to it; the Firestore
emulator, if it lives, keeps its data. Then the topics and subscriptions are re-provisioned
(``infra/``'s, and every applied event type's through the Gabo reconcile): a restarted Pub/Sub
emulator starts empty.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ferry.dev import emulators as emu
from ferry.dev import processes
from ferry.errors import InfraError


def dead_components(state: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in state.get("components", []) if c.get("pid") and not c.get("external")
            and not processes.alive(c)]


def repair(state: dict[str, Any], config: Any) -> dict[str, Any]:
    """Restart the dead components of ``state`` in place and re-provision; returns the new state with
    ``repaired`` (names restarted) and ``reconciled`` (what Pub/Sub got back).

    Raises:
        InfraError: a restarted component did not become ready in time.
    """
    from ferry.dev import stack

    home = Path(state["home"])
    infra = stack.load_infra(state)
    env = state["env"]
    firestore, pubsub = env["FIRESTORE_EMULATOR_HOST"], env["PUBSUB_EMULATOR_HOST"]
    kinds = {k.name: k for k in (emu.PUBSUB, emu.FIRESTORE)}
    repaired: list[str] = []
    waits: list[tuple[str, Any, Path]] = []
    for c in dead_components(state):
        log = Path(c["log"])
        if c["kind"] == "emulator":
            proc = emu.spawn(kinds[c["name"]], int(c["port"]), log, state["project"], config.host)
            waits.append((c["url"] + "/", proc, log))
        elif c["kind"] == "function":
            fn = infra.function(c["name"])
            args = [*processes.functions_framework(), "--source", state["source"], "--target", fn.entry_point,
                    "--signature-type", c["signature"], "--host", config.host, "--port", str(c["port"])]
            proc = processes.spawn(args, log, stack.function_env(config, home, firestore, pubsub,
                                                                  state.get("api_url"), fn),
                                   Path(state["source"]).parent)
            waits.append((c["url"], proc, log))
        elif c["kind"] == "scheduler":
            proc = processes.spawn([sys.executable, "-m", "ferry.dev.scheduler", "--state",
                                    str(stack.state_path(home))], log, {**os.environ, "PYTHONUNBUFFERED": "1"})
        else:
            continue
        c.update(pid=proc.pid, start_time=processes.start_time(proc.pid), restarted_at=datetime.now(UTC).isoformat())
        repaired.append(c["name"])
    for url, proc, log in waits:
        emu.wait_http(url, config.deadline_s, proc, log)
    state["notes"] = list(state.get("notes", [])) + stack.provision(infra, state["project"],
                                                                  stack.function_urls(state), pubsub)
    state["reconciled"] = reconcile_event_types(state)
    state["repaired"] = repaired
    state["status"] = "running"
    return state


def reconcile_event_types(state: dict[str, Any], deadline_s: float = 60.0) -> dict[str, Any]:
    """The Gabo reconcile in this process, on the stack's emulators (every applied type's topics and
    subscriptions, ``infra/``'s too). Retries while a just-restarted emulator settles."""
    from ferry.bootstrap import bootstrap
    from ferry.config import Settings
    from ferry.gabo.service import Gabo

    for k in ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST"):
        os.environ[k] = state["env"][k]  # the Google clients read these when built
    previous = os.environ.get("FERRY_HOME")
    os.environ["FERRY_HOME"] = state["home"]
    try:
        svc = bootstrap(Settings(project=state["project"], store="firestore", broker="pubsub",
                                 sink=f"file://{state['home']}/sink"))
        end = time.monotonic() + deadline_s
        while True:
            try:
                return Gabo(svc).reconcile(datetime.now(UTC))
            except InfraError:
                if time.monotonic() > end:
                    raise
                time.sleep(1)
    finally:
        if previous is None:
            os.environ.pop("FERRY_HOME", None)
        else:
            os.environ["FERRY_HOME"] = previous
