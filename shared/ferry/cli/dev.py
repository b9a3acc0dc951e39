"""``ferry dev up | down | status | fire``: the local stack (docs/local-stack.md), state under FERRY_HOME or ./.ferry."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from ferry.cli.common import Ctx, command, console, examples_epilog, ferry_home, stack_home, table
from ferry.dev import health, ports, registry, stack
from ferry.errors import BadRequest

SECRETS = ("stack_secret",)


def _public(state: dict[str, Any]) -> dict[str, Any]:
    """The stack's state without its secrets (`-o json` output may land in logs and issues)."""
    return {k: v for k, v in state.items() if k not in SECRETS}


def _component_rows(state: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for c in state.get("components", []):
        where = c.get("url") or c.get("address") or ""
        if c["kind"] == "scheduler":
            where = f"{len(c.get('jobs', []))} job(s)"
        alive = c.get("alive")
        rows.append({"component": c["name"], "kind": c["kind"] + (" (shared)" if c.get("external") else ""),
                     "pid": c.get("pid"), "port": c.get("port"), "where": where,
                     "alive": "" if alive is None else ("yes" if alive else "NO"), "log": c.get("log")})
    return rows


def register(main: click.Group) -> None:
    @main.group("dev", epilog=examples_epilog("ferry dev up", "ferry dev status", "ferry dev down", "ferry dev reset"))
    def dev() -> None:
        """The local stack: emulators, one functions-framework process per function, scheduler."""

    @command(dev, "up", example=("ferry dev up", "ferry dev up --base-port 8800"))
    @click.option("--infra", "infra_dir", type=click.Path(exists=True, file_okay=False), default=None,
                  help="Directory of infra YAML (default: the repository's infra/).")
    @click.option("--source", type=click.Path(exists=True, dir_okay=False), default=None,
                  help="Functions source file (default: functions/main.py).")
    @click.option("--project", default=lambda: os.environ.get("GOOGLE_CLOUD_PROJECT") or stack.DEFAULT_PROJECT,
                  show_default="GOOGLE_CLOUD_PROJECT or ferry-local", help="Project id inside the emulators.")
    @click.option("--base-port", type=int, default=None, envvar="FERRY_DEV_BASE_PORT",
                  help=f"Functions on BASE, BASE+1, ... (api first); Pub/Sub emulator BASE+90, Firestore "
                       f"BASE+91; a taken port is an error. Default: base {ports.DEFAULT_BASE_PORT}, a taken port "
                       "moves with a note. Example: --base-port 8800")
    @click.option("--no-scheduler", is_flag=True, help="Do not start the local scheduler.")
    @click.option("--timeout", "deadline_s", type=float, default=90.0, show_default=True,
                  help="Seconds each part may take to become ready.")
    def up(ctx: Ctx, infra_dir: str | None, source: str | None, project: str, base_port: int | None,
           no_scheduler: bool, deadline_s: float) -> None:
        """Start the local stack (or report the one already running in this FERRY_HOME), with the data
        the last `ferry dev down` kept."""
        config = stack.StackConfig(home=ferry_home(), project=project,
                                   infra_dir=Path(infra_dir) if infra_dir else None,
                                   source=Path(source) if source else None,
                                   base_port=ports.DEFAULT_BASE_PORT if base_port is None else base_port,
                                   strict_ports=base_port is not None,
                                   scheduler=not no_scheduler, deadline_s=deadline_s,
                                   # safe by default: an owner must be a declared Team (a typo is refused)
                                   extra_env={"FERRY_REQUIRE_TEAMS": "1"})
        result = stack.up(config)
        registry.register(config.home, result.state.get("api_url"))  # any folder finds it now
        data = {**_public(result.state), "already_running": result.already_running}

        def human(d: dict[str, Any]) -> None:
            table(_component_rows(d), ["component", "kind", "pid", "where", "log"])
            if d["already_running"]:
                console.print(f"[yellow]the local stack in {d['home']} is already up[/] (project {d['project']}); "
                              "reusing it — `ferry dev down` stops it")
            else:
                console.print(f"[green]local stack up[/] in {d.get('ready_seconds')}s — project {d['project']}, "
                              f"API {d.get('api_url')}, state {stack.state_path(Path(d['home']))}")
            console.print(f"you are {d.get('default_user')} by default (`ferry whoami`; act as someone else "
                          "with --as USER or FERRY_USER=USER)")
            for note in d.get("notes", []):
                console.print(f"[yellow]note:[/] {note}")
        ctx.emit(data, human)

    @command(dev, "down", example=("ferry dev down", "ferry dev down --no-drain"))
    @click.option("--drain/--no-drain", default=True, show_default=True,
                  help="Deliver every event type's accepted, undelivered events into the sink before stopping "
                       "(--no-drain throws them away, and says how many).")
    def down(ctx: Ctx, drain: bool) -> None:
        """Stop everything `ferry dev up` started in this FERRY_HOME (and nothing else), keeping its data:
        documents, sink and logs come back with the next `ferry dev up`. Accepted events are delivered
        first (they cannot survive in the Pub/Sub emulator); if any are still lost, it says so and exits 4
        — unless --no-drain asked to throw them away."""
        home = stack_home()
        result = stack.down(home, drain=drain)
        registry.unregister(home)
        lost_events = {sub: u for sub, u in result.get("undelivered", {}).items()
                       if u.get("event_type") and u.get("messages")}
        result["lost_events"] = sum(int(u["messages"]) for u in lost_events.values())

        def human(d: dict[str, Any]) -> None:
            if "message" in d:
                console.print(d["message"])
                return
            for name, n in d.get("drained", {}).items():
                console.print(f"drained event type {name}: {n} event(s) delivered into the sink")
            for sub, u in d.get("undelivered", {}).items():
                if not u.get("messages"):
                    continue
                if u.get("event_type"):
                    verb = "threw away (--no-drain)" if not drain else "lost"
                    console.print(f"[yellow]{verb}:[/] {u['messages']} accepted, undelivered event(s) of event type "
                                  f"{u['event_type']} (subscription {sub})")
                else:
                    console.print(f"[yellow]lost:[/] {u['messages']} undelivered message(s) in subscription {sub} "
                                  "(infra/; the Pub/Sub emulator keeps nothing)")
            for sub, n in d.get("held", {}).items():
                console.print(f"held: {n} message(s) in {sub} (quarantined events or dead letters) — "
                              + ("kept: the next `ferry dev up` brings them back" if d.get("held_kept") else "lost"))
            names = ", ".join(s["name"] for s in d["stopped"]) or "nothing"
            console.print(f"stopped {names}")
            if d["already_gone"]:
                console.print(f"already gone: {', '.join(d['already_gone'])}")
            if d.get("exported"):
                console.print(f"data kept in {d['exported']} — `ferry dev up` brings it back, `ferry dev reset` wipes it")
        ctx.emit(result, human)
        if drain and result["lost_events"]:
            click.secho(f"error: {result['lost_events']} accepted event(s) could not be delivered before the stack "
                        "stopped (see above); `ferry dev down --no-drain` throws them away on purpose", fg="red", err=True)
            raise SystemExit(4)

    @command(dev, "reset", example=("ferry dev reset", "ferry dev reset --yes"))
    @click.option("--yes", "-y", is_flag=True, help="Do not ask (required without a terminal).")
    def reset(ctx: Ctx, yes: bool) -> None:
        """Stop the local stack if it runs and delete everything it kept (documents, sink, logs): asks
        first; without a terminal, --yes."""
        home = stack_home()
        if not yes:
            if not sys.stdin.isatty():
                raise BadRequest(f"ferry dev reset deletes everything the local stack in {home} kept (documents, "
                                 "sink, logs) and there is no terminal to ask: pass --yes")
            click.confirm(f"Delete everything the local stack in {home} kept (documents, sink, logs)?", abort=True)
        result = stack.reset(home)
        registry.unregister(home)
        ctx.emit(result, lambda d: console.print(
            f"reset {d['home']}: removed {', '.join(d['removed']) or 'nothing'}"
            + (f"; stopped {len(d['stopped'])} component(s)" if d.get("stopped") else "")))

    @command(dev, "status", example="ferry dev status")
    def status(ctx: Ctx) -> None:
        """Each component of the local stack: pid, port, alive?; each push subscription: does its function
        take its pushes (a probe push through the subscription's endpoint)?; each scheduler job's last
        firing. Exits 4 when a component is dead or a push subscription is broken."""
        home = stack_home()
        state = stack.status(home)
        if state is None:
            ctx.emit({"running": False, "home": str(home), "components": []},
                     lambda d: console.print(f"no local stack in {d['home']} (`ferry dev up` starts one)"))
            return
        running, dead = stack.is_running(state)
        pubsub_alive = any(c["kind"] == "emulator" and c["name"] == "pubsub" and c.get("alive") is not False
                           for c in state.get("components", []))
        subs = health.push_health(state) if pubsub_alive else []
        broken = [s["subscription"] for s in subs if not s["ok"]]
        state.update(running=running, dead=dead, subscriptions=subs, broken=broken, healthy=running and not broken)
        state = _public(state)

        def human(d: dict[str, Any]) -> None:
            table(_component_rows(d), ["component", "kind", "pid", "port", "alive", "where"],
                  title=f"local stack {d['home']} (project {d['project']}, {d['status']})")
            jobs = next((c.get("jobs", []) for c in d["components"] if c["kind"] == "scheduler"), None)
            if jobs is not None or d["last_fired"]:
                rows = []
                for name in sorted(set(jobs or []) | set(d["last_fired"])):
                    last = d["last_fired"].get(name, {})
                    rows.append({"job": name, "last_fired": last.get("fired_at"),
                                 "schedule_time": last.get("schedule_time"), "status": last.get("status"),
                                 "latency_ms": last.get("latency_ms")})
                table(rows, ["job", "last_fired", "schedule_time", "status", "latency_ms"], title="scheduler")
            if d["subscriptions"]:
                table([{"subscription": s["subscription"], "function": s["function"],
                        "push": "ok" if s["ok"] else "BROKEN", "status": s["status"], "problem": s["problem"] or ""}
                       for s in d["subscriptions"]], ["subscription", "function", "push", "status", "problem"],
                      title="push subscriptions")
            if d["dead"]:
                console.print(f"[red]not running: {', '.join(d['dead'])}[/] — logs under {stack.log_dir(Path(d['home']))}")
            if d["broken"]:
                console.print(f"[red]broken push subscription(s): {', '.join(d['broken'])}[/] — `ferry dev up` "
                              "repairs them")
        ctx.emit(state, human)
        if not state["healthy"]:
            raise SystemExit(4)

    @command(dev, "fire", example="ferry dev fire gabo-scale")
    @click.argument("job")
    def fire(ctx: Ctx, job: str) -> None:
        """Fire one scheduler job of infra/ now, as Cloud Scheduler would."""
        entry = stack.fire_job(stack_home(), job)
        ctx.emit(entry, lambda e: console.print(
            f"fired {e['job']} → {e['url']}: status {e.get('status')} in {e['latency_ms']} ms"
            + (f" ({e['error']})" if e.get("error") else "")))
        if entry.get("severity") == "ERROR":
            raise SystemExit(4)
