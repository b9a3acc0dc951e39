"""The local stack (docs/local-stack.md): every cloud part of ``infra/`` as local processes, with no cloud account.

``up`` starts the official Firestore and Pub/Sub emulators, one ``functions-framework`` process per
function of ``infra/``, creates the topics and subscriptions (push subscriptions to the local function
URLs for Pub/Sub triggers) and starts the local scheduler. Every process runs in its own process group
(killing the ``gcloud`` wrapper alone leaves its Java emulator running), and everything started is
recorded in ``<home>/state.json`` — ``down`` stops exactly those groups and nothing else.

Process groups themselves (start in a session, tell ours from a reused pid, stop whole, memory) are
``ferry.dev.processes``; this module decides what to start and records it.

Processes start in parallel and readiness is polled together, with deadlines: startup time is
dominated by the slowest process, not by their sum.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from ferry.dev import data, ports, processes, receiver
from ferry.dev import emulators as emu

# The layout's names are the stack's too (``stack.StackConfig``, ``stack.read_state``…): callers say ``stack``.
from ferry.dev.layout import DEFAULT_PROJECT as DEFAULT_PROJECT
from ferry.dev.layout import LOCAL_USER as LOCAL_USER
from ferry.dev.layout import (
    StackConfig,
    _write_state,
    default_identity,
    function_env,
    function_urls,
    load_infra,
    log_dir,
    provision,
    read_state,
    state_path,
)
from ferry.dev.scheduler import firing_record
from ferry.errors import InfraError
from ferry.infra import model
from ferry.infra.model import Infra

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_SOURCE = REPO_ROOT / "functions" / "main.py"
# With a base port B: functions get B, B+1, ... (``api`` first, then infra order); the emulators B+90, B+91;
# the channel receiver B+92.
PUBSUB_OFFSET, FIRESTORE_OFFSET, RECEIVER_OFFSET, MAX_FUNCTIONS = 90, 91, 92, 90


@dataclass
class UpResult:
    state: dict[str, Any]
    already_running: bool = False
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------- paths


# ------------------------------------------------------------------------------------------------ up


def _ports(config: StackConfig, infra: Infra, home: Path) -> tuple[dict[str, int], int | None, int | None, int,
                                                                   list[str]]:
    """Claim the stack's ports (``ferry.dev.ports``): with a base port B, functions on B, B+1, ... (``api``
    first), the emulators on B+90, B+91 and the channel receiver on B+92 — moved with a note when taken,
    unless ``strict_ports``."""
    names = [f.name for f in sorted(infra.functions, key=lambda f: f.name != "api")]
    if len(names) > MAX_FUNCTIONS:
        raise InfraError(f"at most {MAX_FUNCTIONS} functions fit the port layout, infra declares {len(names)}")
    b = config.base_port
    # The ports of this home's last run, when one had to move: the same again (stable across down/up).
    last = {} if config.strict_ports or b is None else ports.last_used(home)
    wanted = [ports.Wanted(f"function {n}", None if b is None else last.get(f"function {n}", b + i))
              for i, n in enumerate(names)]
    if not config.pubsub:
        wanted.append(ports.Wanted("pubsub emulator", None if b is None else last.get("pubsub emulator",
                                                                                         b + PUBSUB_OFFSET)))
    if not config.firestore:
        wanted.append(ports.Wanted("firestore emulator", None if b is None else last.get("firestore emulator",
                                                                                            b + FIRESTORE_OFFSET)))
    # the channel receiver's port is claimed like the others (two stacks of one base port would share it)
    wanted.append(ports.Wanted("receiver", None if b is None else last.get("receiver", b + RECEIVER_OFFSET)))
    got = ports.claim(wanted, home, config.host, strict=config.strict_ports)
    fns = {n: got.ports[f"function {n}"] for n in names}
    return fns, got.ports.get("pubsub emulator"), got.ports.get("firestore emulator"), got.ports["receiver"], got.notes


def _wait_all(targets: dict[str, tuple[str, subprocess.Popen[bytes], Path]], deadline_s: float) -> None:
    """Poll every function URL together until each answers (any HTTP status) or the deadline passes."""
    pending = dict(targets)
    end = time.monotonic() + deadline_s
    with httpx.Client(timeout=0.5) as http:
        while pending and time.monotonic() < end:
            for name, (url, proc, log) in list(pending.items()):
                if proc.poll() is not None:
                    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    raise InfraError(f"function {name} exited with {proc.returncode} while starting (log {log})",
                                     {"log_tail": tail})
                try:
                    http.get(url)
                    del pending[name]
                except httpx.HTTPError:
                    pass
            if pending:
                time.sleep(0.1)
    if pending:
        raise InfraError(f"function(s) {', '.join(sorted(pending))} did not answer within {deadline_s:.0f}s",
                         {n: str(t[2]) for n, t in pending.items()})


def _component(kind: str, name: str, proc: subprocess.Popen[bytes] | None, log: Path, **extra: Any) -> dict[str, Any]:
    pid = proc.pid if proc else None
    return {"kind": kind, "name": name, "pid": pid, "start_time": processes.start_time(pid) if pid else None,
            "log": str(log), **extra}


def status(home: Path) -> dict[str, Any] | None:
    """The recorded stack with each component's liveness and each scheduler job's last firing."""
    state = read_state(home)
    if state is None:
        return None
    for c in state.get("components", []):
        c["alive"] = processes.alive(c) if c.get("pid") else None
    last = firing_record(home).last()
    state["last_fired"] = last
    return state


def is_running(state: dict[str, Any]) -> tuple[bool, list[str]]:
    """(all of it alive, names of the dead components)."""
    comps = [c for c in state.get("components", []) if c.get("pid")]
    dead = [c["name"] for c in comps if not processes.alive(c)]
    return not dead and bool(comps), dead


def up(config: StackConfig) -> UpResult:
    """Start the local stack described by ``config`` and record it in ``<home>/state.json``.

    Returns the recorded state (``already_running`` when a complete stack of this home is up: it is
    reused; ``repaired`` names what was restarted when it was partly running — see
    :mod:`ferry.dev.repair`). Raises InfraError when the emulators are missing, a port is in use, or
    anything does not become ready in time (whatever was started is then stopped again).
    """
    t0 = time.monotonic()
    home = Path(config.home).resolve()
    previous = read_state(home)
    if previous is not None:
        running, dead = is_running(previous)
        if running:
            # alive is not working: a push subscription its function refuses is provisioned again
            from ferry.dev.health import push_health

            broken = [r["subscription"] for r in push_health(previous) if not r["ok"]]
            if not broken:
                return UpResult(previous, already_running=True)
            previous["notes"] = list(previous.get("notes", [])) + provision(
                load_infra(previous), previous["project"], function_urls(previous),
                previous["env"]["PUBSUB_EMULATOR_HOST"], previous["stack_secret"])
            previous["repaired"] = broken
            _write_state(home, previous)
            return UpResult(previous, seconds=time.monotonic() - t0)
        if any(processes.ours(c) for c in previous.get("components", [])):
            # half-running: restart what died in place, keep what lives (and the Firestore data)
            from ferry.dev.repair import repair

            repaired = repair(previous, config)
            _write_state(home, repaired)
            return UpResult(repaired, seconds=time.monotonic() - t0)
        state_path(home).unlink()  # stale: nothing of it runs any more

    if not (config.firestore and config.pubsub):
        problem = emu.missing()
        if problem:
            raise InfraError(problem)
    infra = model.load(config.infra_dir)
    source = Path(config.source or DEFAULT_SOURCE).resolve()
    if not source.exists():
        raise InfraError(f"function source {source} does not exist")
    fn_ports, ps_port, fs_port, rport, port_notes = _ports(config, infra, home)
    logs = log_dir(home)
    logs.mkdir(parents=True, exist_ok=True)
    (home / "sink").mkdir(exist_ok=True)
    pubsub = config.pubsub or f"{config.host}:{ps_port}"
    firestore = config.firestore or f"{config.host}:{fs_port}"
    urls = {n: f"http://{config.host}:{p}" for n, p in fn_ports.items()}
    secret = secrets.token_urlsafe(24)  # new per `dev up`: the scheduler, pushes and the CLI read it here
    state: dict[str, Any] = {
        "version": 1, "status": "starting", "home": str(home), "project": config.project,
        "infra_dir": str(Path(config.infra_dir).resolve()) if config.infra_dir else None,
        "source": str(source), "started_at": datetime.now(UTC).isoformat(), "api_url": urls.get("api"),
        "stack_secret": secret,
        "default_user": config.default_user or default_identity(),
        "env": {"GOOGLE_CLOUD_PROJECT": config.project, "FIRESTORE_EMULATOR_HOST": firestore,
                "PUBSUB_EMULATOR_HOST": pubsub, "FERRY_HOME": str(home)},
        "components": [], "notes": list(port_notes),
    }
    restored = data.firestore_export(home) if config.keep_data and not config.firestore else None
    comps: list[dict[str, Any]] = state["components"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        emulator_procs = []
        for kind, port, given in ((emu.PUBSUB, ps_port, config.pubsub), (emu.FIRESTORE, fs_port, config.firestore)):
            if given:
                comps.append({"kind": "emulator", "name": kind.name, "pid": None, "address": given,
                              "url": f"http://{given}", "external": True, "log": None})
                continue
            assert port is not None
            log = logs / f"{kind.name}.log"
            extra = [f"--import-data={restored}"] if kind is emu.FIRESTORE and restored else []
            proc = emu.spawn(kind, port, log, config.project, config.host, extra)
            procs.append(proc)
            emulator_procs.append((kind, proc, log, port))
            comps.append(_component("emulator", kind.name, proc, log, port=port,
                                    address=f"{config.host}:{port}", url=f"http://{config.host}:{port}"))
        # The channel receiver (what notification channels would receive): functions are told its URL.
        rlog, rurl = logs / "receiver.log", f"http://{config.host}:{rport}"
        args = [sys.executable, "-m", "ferry.dev.receiver", "--host", config.host, "--port", str(rport),
                "--dir", str(home / "receiver")]
        proc = processes.spawn(args, rlog, {**os.environ, "PYTHONUNBUFFERED": "1"})
        procs.append(proc)
        comps.append(_component("receiver", "receiver", proc, rlog, port=rport, url=rurl))
        state["receiver_url"] = rurl
        config = dataclasses.replace(config, extra_env={**receiver.stack_env(rurl), **config.extra_env})
        targets = {"receiver": (rurl, proc, rlog)}
        for fn in infra.functions:
            log = logs / f"{fn.name}.log"
            signature = "http" if fn.trigger == "http" else "cloudevent"
            args = [*processes.functions_framework(), "--source", str(source), "--target", fn.entry_point,
                    "--signature-type", signature, "--host", config.host, "--port", str(fn_ports[fn.name])]
            proc = processes.spawn(args, log, function_env(config, home, firestore, pubsub, urls.get("api"), fn,
                                                           secret), source.parent)
            procs.append(proc)
            targets[fn.name] = (urls[fn.name], proc, log)
            comps.append(_component("function", fn.name, proc, log, port=fn_ports[fn.name], url=urls[fn.name],
                                    signature=signature, entry_point=fn.entry_point))
        _write_state(home, state)  # recorded before waiting: `ferry dev down` can stop a half-started stack

        # Both emulators and all functions come up at once; the emulators are waited for in threads.
        with ThreadPoolExecutor(max(1, len(emulator_procs))) as pool:
            waits = [pool.submit(emu.wait_http, f"http://{config.host}:{port}/", config.deadline_s, proc, log)
                     for _, proc, log, port in emulator_procs]
            for w in waits:
                w.result()
            state["notes"] += provision(infra, config.project, urls, pubsub, secret)
            _wait_all(targets, config.deadline_s)
        if restored and urls.get("api"):
            n = data.reprovision(urls["api"], secret)
            state["restored_from"] = str(restored.parent)
            state["notes"].append(f"data kept by the last `ferry dev down` restored ({restored.parent.name}); "
                                  f"topics and subscriptions of {n} event type(s) recreated")
            held = data.restore_held(pubsub, config.project, home)  # quarantined events, dead letters
            if held:
                state["held_restored"] = held
                state["notes"].append(f"{sum(held.values())} held message(s) (quarantine, dead letters) "
                                      f"published again to {len(held)} hold(s)")

        if config.scheduler:
            log = log_dir(home) / "scheduler.log"
            args = [sys.executable, "-m", "ferry.dev.scheduler", "--state", str(state_path(home))]
            proc = processes.spawn(args, log, {**os.environ, "PYTHONUNBUFFERED": "1"})
            procs.append(proc)
            comps.append(_component("scheduler", "scheduler", proc, log,
                                     jobs=[j.name for j in infra.scheduler_jobs]))
        state["status"] = "running"
        state["ready_seconds"] = round(time.monotonic() - t0, 2)
        _write_state(home, state)
    except BaseException:
        processes.stop_groups([p.pid for p in procs])
        processes.reap(p.pid for p in procs)
        state_path(home).unlink(missing_ok=True)
        ports.release(home)
        raise
    return UpResult(state, seconds=time.monotonic() - t0)


# ---------------------------------------------------------------------------------------------- down


def down(home: Path, drain: bool = False, keep_data: bool = True) -> dict[str, Any]:
    """Stop every process group recorded in ``<home>/state.json`` — and nothing else — then remove it.

    Before the emulators stop (the scheduler first): with ``drain`` each event type's backlog is
    delivered into the sink; Pub/Sub messages still undelivered are counted and named (they are lost);
    the Firestore documents are exported for the next ``up`` (``keep_data``). Returns what was stopped,
    saved and lost. Raises InfraError if a process survives SIGKILL (the state is kept then).
    """
    home = Path(home).resolve()
    state = read_state(home)
    if state is None:
        ports.release(home)
        return {"stopped": [], "message": f"no local stack recorded in {home}"}
    comps = [c for c in state.get("components", []) if c.get("pid") and not c.get("external")]
    ours = [c for c in comps if processes.ours(c)]
    # The scheduler first (it would fire at dying functions), then the functions, then the emulators.
    order = {"scheduler": 0, "function": 1, "emulator": 2}
    ours.sort(key=lambda c: order.get(c["kind"], 3))
    stop_groups = processes.stop_groups
    stop_groups([c["pid"] for c in ours if c["kind"] == "scheduler"])
    running = {c["name"] for c in ours if c["kind"] != "scheduler" and processes.alive(c)}
    saved = data.save(state, load_infra(state), running, drain, keep_data)
    left = stop_groups([c["pid"] for c in ours if c["kind"] != "scheduler"])
    if left:
        raise InfraError(f"process(es) {left} of the local stack survived SIGKILL; state kept in {state_path(home)}")
    state_path(home).unlink(missing_ok=True)
    ports.release(home)
    return {"stopped": [{"name": c["name"], "kind": c["kind"], "pid": c["pid"]} for c in ours],
            "already_gone": [c["name"] for c in comps if c not in ours], **saved}


def reset(home: Path) -> dict[str, Any]:
    """``ferry dev reset``: stop the stack if it runs (keeping nothing), then delete what it kept."""
    home = Path(home).resolve()
    stopped = down(home, keep_data=False) if read_state(home) is not None else {"stopped": []}
    return {**stopped, "removed": data.wipe(home), "home": str(home)}


def fire_job(home: Path, job_name: str) -> dict[str, Any]:
    """Fire one scheduler job of the running stack now (``ferry dev fire``), for the current minute."""
    from ferry.dev import scheduler
    from ferry.errors import NotFound

    state = read_state(home)
    if state is None:
        raise InfraError(f"no local stack recorded in {Path(home).resolve()}: run `ferry dev up` first")
    infra = load_infra(state)
    job = next((j for j in infra.scheduler_jobs if j.name == job_name), None)
    if job is None:
        raise NotFound(f"no scheduler job {job_name!r} in infra/",
                       {"jobs": [j.name for j in infra.scheduler_jobs]})
    url = function_urls(state)[job.function]
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return scheduler.fire(job, url, now, firing_record(Path(state["home"])), manual=True,
                          secret=state.get("stack_secret", ""))


def stack_pids(state: dict[str, Any]) -> list[int]:
    """Every live process of the stack's process groups (for memory accounting and leak checks)."""
    groups = [c["pid"] for c in state.get("components", []) if c.get("pid")]
    return [p for m in processes.group_members(groups).values() for p in m]
