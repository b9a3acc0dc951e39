"""Repairing a half-running local stack: restart what died, keep what lives, re-provision Pub/Sub.

``ferry dev up`` calls :func:`repair` when the stack recorded in ``FERRY_HOME`` is partly running (an
emulator or a function process died). Each dead component is started again exactly as ``up`` started
it — same port, same command, same environment — so the living ones keep talking to it; the Firestore
emulator, if it lives, keeps its data. Then ``infra/``'s topics and subscriptions are re-provisioned
(a restarted Pub/Sub emulator starts empty) — its push subscriptions with the stack's own secret, built
by the one builder (:func:`ferry.infra.pubsub.push_subscription_request`) — and every applied event
type's topics and subscriptions are recreated (re-applied through the API, as ``up`` does with kept
data; the scale tick's reconcile, :mod:`ferry.gabo.provisioning.reconcile`, would otherwise recreate them within a
minute).
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ferry.dev import data, layout, processes, receiver
from ferry.dev import emulators as emu


def dead_components(state: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in state.get("components", []) if c.get("pid") and not c.get("external")
            and not processes.alive(c)]


def repair(state: dict[str, Any], config: Any) -> dict[str, Any]:
    """Restart the dead components of ``state`` in place and re-provision ``infra/``'s Pub/Sub; returns
    the new state with ``repaired`` (names restarted).

    Raises:
        InfraError: a restarted component did not become ready in time.
    """
    home = Path(state["home"])
    infra = layout.load_infra(state)
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
            # as `up` started it: the stack's secret (else it refuses every push and the scheduler), the
            # receiver's URL
            fn_config = replace(config, extra_env={**receiver.stack_env(state["receiver_url"]), **config.extra_env}
                                if state.get("receiver_url") else config.extra_env)
            proc = processes.spawn(args, log, layout.function_env(fn_config, home, firestore, pubsub,
                                                                  state.get("api_url"), fn, state["stack_secret"]),
                                   Path(state["source"]).parent)
            waits.append((c["url"], proc, log))
        elif c["kind"] == "receiver":
            proc = processes.spawn([sys.executable, "-m", "ferry.dev.receiver", "--host", config.host, "--port",
                                    str(c["port"]), "--dir", str(home / "receiver")], log,
                                   {**os.environ, "PYTHONUNBUFFERED": "1"})
            waits.append((c["url"], proc, log))
        elif c["kind"] == "scheduler":
            proc = processes.spawn([sys.executable, "-m", "ferry.dev.scheduler", "--state",
                                    str(layout.state_path(home))], log, {**os.environ, "PYTHONUNBUFFERED": "1"})
        else:
            continue
        c.update(pid=proc.pid, start_time=processes.start_time(proc.pid), restarted_at=datetime.now(UTC).isoformat())
        repaired.append(c["name"])
    for url, proc, log in waits:
        emu.wait_http(url, config.deadline_s, proc, log)
    # the stack's own secret: the push endpoints must carry the one its functions were started with
    state["notes"] = list(state.get("notes", [])) + layout.provision(infra, state["project"],
                                                                  layout.function_urls(state), pubsub,
                                                                  state["stack_secret"])
    if "pubsub" in repaired and state.get("api_url"):
        # a restarted emulator starts empty: the event types' topics and subscriptions now, not at the next
        # scale tick (events sent in between would be refused)
        n = data.reprovision(state["api_url"], state["stack_secret"])
        state["notes"].append(f"topics and subscriptions of {n} event type(s) recreated")
    state["repaired"] = repaired
    state["status"] = "running"
    return state
