"""Styx commands (docs/styx.md): instances, trigger, retry, halt, timeline, logs, tick, backfill, and
``ferry get resources|backfills``."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import click

from ferry import humane
from ferry.cli.common import Ctx, command, console, examples_epilog, parameter_formats, table
from ferry.errors import BadRequest, NotFound

STATE_STYLE = {"DONE": "green", "ERROR": "red", "FAILED": "red", "RUNNING": "cyan", "SUBMITTED": "cyan",
               "QUEUED": "yellow", "PENDING": "dim"}


def _style(v: Any) -> str:
    return STATE_STYLE.get(str(v), "")


def _state(v: Any, width: int = 0) -> str:
    text = f"{v!s:<{width}}"
    style = _style(v)
    return f"[{style}]{text}[/]" if style else text


def _path(workflow: str, parameter: str, action: str = "") -> str:
    return f"/v1/workflows/{quote(workflow, safe='')}/instances/{quote(parameter, safe='')}" + \
        (f"/{action}" if action else "")


def _env(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise BadRequest(f"-e takes K=V, got {p!r}")
        k, v = p.split("=", 1)
        out[k] = v
    return out


def _instance_line(i: dict[str, Any]) -> None:
    console.print(f"{i['workflow']} {i['parameter']}: {_state(i['state'])} "
                  f"(tries {i['tries']}) {i.get('message') or ''}")


def _timeline(data: dict[str, Any]) -> None:
    inst = data["instance"]
    _instance_line(inst)
    for t in data["triggers"]:
        console.print(f"[bold]trigger[/] {t['trigger_type']} {t['trigger_id']} at {t['at']}"
                      + (f" env {humane.text(t['env'])}" if t["env"] else "")
                      + (" ignoring dependencies" if t.get("ignore_deps") else ""))
        for e in t["events"]:
            console.print(f"  {e['at']}  {e['event']:<17} -> {e['state']:<10} {e['message']}")
        for x in t["executions"]:
            console.print(f"  [bold]execution[/] {x['execution_id']} image {x['image']} "
                          f"exit {x['exit_code'] if x['exit_code'] is not None else '-'}  log {x['log_uri'] or '-'}")
            for s in x["statuses"]:
                delay = f" (retry in {s['delay_seconds']}s)" if "delay_seconds" in s else ""
                console.print(f"    {s['at']}  {s['event']:<15} -> {_state(s['state'], 10)} "
                              f"{s['message']}{delay}")


TICK_WORDS = {"triggered": "instance(s) triggered by their schedule or dependencies",
              "backfill_triggered": "backfill instance(s) queued", "dequeued": "taken from the queue",
              "submitted": "execution(s) submitted", "launch_failed": "launch(es) failed",
              "started": "execution(s) started", "ended": "execution(s) ended", "timed_out": "timed out",
              "gated": "waiting for their dependencies", "waiting_for_slots": "waiting for a resource slot",
              "conflicts": "skipped (another tick had them)"}


def _tick_lines(d: dict[str, Any]) -> None:
    """What one tick did, and what waits for what."""
    did = [f"{d[k]} {w}" for k, w in TICK_WORDS.items() if d.get(k)]
    console.print(f"tick in {humane.duration(d.get('seconds'))}: " + ("; ".join(did) if did else "nothing to do"),
                  markup=False)
    if d.get("rate_limited"):
        console.print("this minute's submissions are used up: the rest go out next minute")
    if d.get("budget_exhausted"):
        console.print("the tick's time budget ran out: the next tick continues")


def _backfill(bf: dict[str, Any]) -> None:
    console.print(f"[bold]{bf['id']}[/] {bf['workflow']} [{bf['start']}, {bf['end']}) concurrency "
                  f"{bf['concurrency']} {'reverse ' if bf.get('reverse') else ''}state {bf['state']} "
                  f"— {bf['finished']}/{bf['total']} finished {bf.get('description') or ''}")
    table(bf["partitions"], ["parameter", "state", "tries", "exit_code", "message"], styles={"state": _style})


def register(main: click.Group) -> None:
    @command(main, "instances", example=("ferry instances aggregate-plays --limit 20",
                                         "ferry instances --state ERROR --today --owner team-playback"))
    @click.argument("workflow", required=False)
    @click.option("--state", default=None, help="Only instances in this state, across workflows. Example: --state ERROR")
    @click.option("--owner", default=None, metavar="TEAM",
                  help="With --state: only workflows of this team. Example: --owner team-playback")
    @click.option("--today", is_flag=True, help="With --state: only instances changed since midnight UTC.")
    @click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000),
                  help="At most this many instances, newest first. Example: --limit 20")
    def instances(ctx: Ctx, workflow: str | None, state: str | None, owner: str | None, today: bool,
                  limit: int) -> None:
        """Instances of a workflow with their states; or, with --state, across workflows
        (``ferry instances --state ERROR --today --owner TEAM``: what failed today)."""
        columns = ["parameter", "state", "tries", "exit_code", "trigger_type", "message"]
        if workflow is None or state is not None:
            since = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) if today else None
            data = ctx.client.get("/v1/instances", state=state or "ERROR", owner=owner, limit=limit,
                                  since=since.isoformat() if since else None)
            if workflow is not None:
                data["items"] = [i for i in data["items"] if i["workflow"] == workflow]
            columns = ["workflow", *columns[:-2], "updated_at", "message"]
        else:
            data = ctx.client.get(f"/v1/workflows/{quote(workflow, safe='')}/instances", limit=limit)
        for i in data["items"]:
            i["trigger_type"] = (i.get("trigger") or {}).get("type")
        ctx.emit(data, lambda d: table(d["items"], columns, styles={"state": _style}))

    @command(main, "trigger", formats=parameter_formats(), example="ferry trigger aggregate-plays 2026-11-26T14 -e MODE=full")
    @click.argument("workflow")
    @click.argument("parameter")
    @click.option("-e", "--env", "env", multiple=True, metavar="K=V",
                  help="An environment variable for this trigger (repeatable). Example: -e MODE=full")
    @click.option("--ignore-deps", is_flag=True, help="Run without waiting for upstream partitions (recorded).")
    def trigger(ctx: Ctx, workflow: str, parameter: str, env: tuple[str, ...], ignore_deps: bool) -> None:
        """Trigger an instance now (refused if it is active)."""
        body: dict[str, Any] = {"env": _env(env)}
        if ignore_deps:
            body["ignore_deps"] = True
        data = ctx.client.post(_path(workflow, parameter, "trigger"), body)
        ctx.emit(data, _instance_line)

    @command(main, "mark-done", formats=parameter_formats(), example="ferry mark-done aggregate-plays 2026-11-26T14 --reason 'computed by hand'")
    @click.argument("workflow")
    @click.argument("parameter")
    @click.option("--reason", default=None, help="Why (shown in the timeline).")
    def mark_done(ctx: Ctx, workflow: str, parameter: str, reason: str | None) -> None:
        """Mark an instance DONE without running it (its owning team; its output partition lands)."""
        ctx.emit(ctx.client.post(_path(workflow, parameter, "mark-done"), {"reason": reason} if reason else {}),
                 _instance_line)

    @command(main, "retry", formats=parameter_formats(), example="ferry retry aggregate-plays 2026-11-26T14")
    @click.argument("workflow")
    @click.argument("parameter")
    @click.option("-e", "--env", "env", multiple=True,
                  help="K=V env change for the re-run (repeatable; a DONE or ERROR instance: a new trigger).")
    def retry(ctx: Ctx, workflow: str, parameter: str, env: tuple[str, ...]) -> None:
        """Re-queue an instance now (from QUEUED, DONE or ERROR)."""
        ctx.emit(ctx.client.post(_path(workflow, parameter, "retry"), {"env": _env(env)} if env else {}),
                 _instance_line)

    @command(main, "halt", formats=parameter_formats(), example="ferry halt aggregate-plays 2026-11-26T14 --reason 'bad input'")
    @click.argument("workflow")
    @click.argument("parameter")
    @click.option("--reason", default=None, help="Why, recorded in the timeline. Example: --reason 'bad input'")
    def halt(ctx: Ctx, workflow: str, parameter: str, reason: str | None) -> None:
        """Halt an active instance, cancelling its execution."""
        ctx.emit(ctx.client.post(_path(workflow, parameter, "halt"), {"reason": reason} if reason else {}),
                 _instance_line)

    @command(main, "timeline", formats=parameter_formats(), example="ferry timeline aggregate-plays 2026-11-26T14")
    @click.argument("workflow")
    @click.argument("parameter")
    def timeline(ctx: Ctx, workflow: str, parameter: str) -> None:
        """Triggers -> executions -> statuses with times, messages, exit codes and log links."""
        ctx.emit(ctx.client.get(_path(workflow, parameter, "timeline")), _timeline)

    @command(main, "logs", formats=parameter_formats(), example="ferry logs aggregate-plays 2026-11-26T14 --limit 50")
    @click.argument("workflow")
    @click.argument("parameter")
    @click.option("--limit", default=200, show_default=True, type=click.IntRange(1, 10000),
                  help="At most this many log lines. Example: --limit 50")
    @click.option("--execution", default=None,
                  help="An earlier execution id, as the timeline shows it (default: the latest).")
    @click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the instance ends.")
    @click.option("--interval", default=2.0, show_default=True, help="Seconds between polls with --follow.")
    def logs(ctx: Ctx, workflow: str, parameter: str, limit: int, execution: str | None, follow: bool,
             interval: float) -> None:
        """The log lines of the instance's execution (local log file, or Cloud Logging)."""
        if follow:
            _follow(ctx, workflow, parameter, execution, interval)
            return
        data = ctx.client.get(_path(workflow, parameter, "logs"), limit=limit, execution=execution)

        def human(d: dict[str, Any]) -> None:
            console.print(f"[dim]# {d['execution_id']} {d.get('log_uri') or ''}[/]")
            for line in d["lines"]:
                click.echo(line)
        ctx.emit(data, human)

    @command(main, "tick", example="ferry tick")
    @click.option("--budget", default=45.0, show_default=True, help="Seconds the tick may run. Example: --budget 20")
    def tick(ctx: Ctx, budget: float) -> None:
        """Run one Styx tick now (what the scheduler does every minute)."""
        data = ctx.client.post("/v1/tick", {"budget_seconds": budget})
        ctx.emit(data, _tick_lines)

    @main.group("backfill", epilog=examples_epilog("ferry backfill create aggregate-plays 2026-11-01T00 2026-11-08T00", "ferry backfill ls"))
    def backfill() -> None:
        """Run a workflow over a range of past partitions."""

    @command(backfill, "create", formats=parameter_formats("START and END each"),
             example=("ferry backfill create aggregate-plays 2026-11-01T00 2026-11-08T00 \\\n"
                      "      --concurrency 4",
                      "ferry backfill create --downstream-of plays-hourly \\\n      2026-11-26T14 2026-11-26T15"))
    @click.argument("args", nargs=-1, metavar="WORKFLOW START END | --downstream-of ENDPOINT START END")
    @click.option("--downstream-of", "endpoint", default=None,
                  help="Re-run every workflow downstream of this endpoint for [START, END), in dependency order.")
    @click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 1000),
                  help="Instances of the backfill running at once. Example: --concurrency 4")
    @click.option("--reverse", is_flag=True, help="Newest partition first.")
    @click.option("-d", "--description", default="", help="Why this backfill, shown in listings. Example: -d 'late plays'")
    @click.option("-e", "--env", "env", multiple=True, metavar="K=V",
                  help="An environment variable for every instance (repeatable). Example: -e MODE=full")
    def create(ctx: Ctx, args: tuple[str, ...], endpoint: str | None, concurrency: int, reverse: bool,
               description: str, env: tuple[str, ...]) -> None:
        """Create a backfill of [START, END) (both aligned to the schedule); with --downstream-of, one
        tracked reprocessing of every workflow that depends on the endpoint, directly or transitively."""
        if endpoint is not None:
            if len(args) != 2 or reverse or env:
                raise BadRequest("usage: ferry backfill create --downstream-of ENDPOINT START END "
                                 "[--concurrency N] [-d TEXT] (no --reverse or -e)")
            data = ctx.client.post("/v1/reprocessings", {"endpoint": endpoint, "start": args[0], "end": args[1],
                                                         "concurrency": concurrency, "description": description})
            ctx.emit(data, _reprocessing)
            return
        if len(args) != 3:
            raise BadRequest("usage: ferry backfill create WORKFLOW START END")
        workflow, start, end = args
        data = ctx.client.post("/v1/backfills", {"workflow": workflow, "start": start, "end": end,
                                                 "concurrency": concurrency, "reverse": reverse,
                                                 "description": description, "env": _env(env)})
        ctx.emit(data, _backfill)

    @command(backfill, "show", example="ferry backfill show bf-1a2b3c --watch")
    @click.argument("backfill_id")
    @click.option("--watch", is_flag=True, help="Follow progress with a bar until it finishes.")
    @click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes with --watch.")
    @click.option("--timeout", default=3600.0, show_default=True, help="Stop watching after this many seconds.")
    def show(ctx: Ctx, backfill_id: str, watch: bool, interval: float, timeout: float) -> None:
        """A backfill with the state of every partition (a reprocessing ``rp-…``: each workflow's progress)."""
        if backfill_id.startswith("rp-"):
            ctx.emit(ctx.client.get(f"/v1/reprocessings/{backfill_id}"), _reprocessing)
            return
        data = ctx.client.get(f"/v1/backfills/{backfill_id}")
        if watch and not ctx.json:
            data = _watch(ctx, backfill_id, data, interval, timeout)
        ctx.emit(data, _backfill)

    @command(backfill, "halt", example="ferry backfill halt bf-1a2b3c --graceful")
    @click.argument("backfill_id")
    @click.option("--graceful", is_flag=True, help="Let executing instances finish.")
    def halt_backfill(ctx: Ctx, backfill_id: str, graceful: bool) -> None:
        """Halt a backfill."""
        ctx.emit(ctx.client.post(f"/v1/backfills/{backfill_id}/halt", {"graceful": graceful}), _backfill)

    @command(backfill, "retry", example="ferry backfill retry bf-1a2b3c")
    @click.argument("backfill_id")
    def retry_backfill(ctx: Ctx, backfill_id: str) -> None:
        """Re-queue the backfill's failed (ERROR) instances."""
        data = ctx.client.post(f"/v1/backfills/{backfill_id}/retry")

        def human(d: dict[str, Any]) -> None:
            console.print(f"re-queued {len(d['retried'])}: {', '.join(d['retried'])}")
            _backfill(d)
        ctx.emit(data, human)

    @command(backfill, "ls", example="ferry backfill ls --workflow aggregate-plays")
    @click.option("--workflow", default=None, help="Only backfills of this workflow. Example: --workflow aggregate-plays")
    def ls(ctx: Ctx, workflow: str | None) -> None:
        """Backfills, newest first."""
        _list_backfills(ctx, workflow)

    from ferry.cli.core import GET_EXTENSIONS

    GET_EXTENSIONS["resources"] = lambda ctx, name, owner: _resources(ctx, name, owner)
    GET_EXTENSIONS["resource"] = GET_EXTENSIONS["resources"]
    GET_EXTENSIONS["backfills"] = lambda ctx, name, owner: (
        ctx.emit(ctx.client.get(f"/v1/backfills/{name}"), _backfill) if name else _list_backfills(ctx, None))
    GET_EXTENSIONS["backfill"] = GET_EXTENSIONS["backfills"]
    GET_EXTENSIONS["workflows"] = lambda ctx, name, owner: _workflows(ctx, name, owner)
    GET_EXTENSIONS["workflow"] = GET_EXTENSIONS["workflows"]


FOLLOW_LINES = 10_000  # lines asked per poll with --follow (the launcher returns the newest ones)


def _follow(ctx: Ctx, workflow: str, parameter: str, execution: str | None, interval: float) -> None:
    """Print the execution's lines as they come, across retries (a new execution starts a new
    header), until the instance has ended and its last lines are out. JSON: one object per line."""
    printed: dict[str, int] = {}
    current = None
    while True:
        instance = ctx.client.get(_path(workflow, parameter))
        try:
            data = ctx.client.get(_path(workflow, parameter, "logs"), limit=FOLLOW_LINES, execution=execution)
        except NotFound:
            data = None  # no execution yet: wait for one
        if data is not None:
            eid = data["execution_id"]
            if eid != current:
                current = eid
                if not ctx.json:
                    console.print(f"[dim]# {eid} {data.get('log_uri') or ''}[/]")
            for line in data["lines"][printed.get(eid, 0):]:
                click.echo(json.dumps({"execution_id": eid, "line": line}) if ctx.json else line)
            printed[eid] = len(data["lines"])
        # The instance was read before its logs: once it has ended, the lines just read are the last.
        if not instance["active"] or (execution and execution != instance.get("execution_id")):
            return
        time.sleep(interval)
ACTIVE = ("PENDING", "QUEUED", "SUBMITTED", "RUNNING")


def _stuck(bf: dict[str, Any], n: int = 3) -> list[str]:
    """Why the first few not-yet-running partitions wait (their instance's message)."""
    waiting = [p for p in bf.get("partitions", []) if p.get("state") in ("PENDING", "QUEUED") and p.get("message")]
    return [f"{p['parameter']} {str(p['state']).lower()}: {p['message']}" for p in waiting[:n]]


def _watch(ctx: Ctx, backfill_id: str, data: dict[str, Any], interval: float, timeout: float) -> dict[str, Any]:
    """Follow a backfill until it is no longer active: a bar with counts per state on a terminal, plain
    lines (one per change) otherwise; and why waiting partitions wait."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    deadline = time.monotonic() + timeout
    last = ""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console,
                  disable=not console.is_terminal) as bar:
        task = bar.add_task(backfill_id, total=data["total"])
        while True:
            line = f"{backfill_id} {data['state']}: {data['finished']}/{data['total']} finished — " \
                   f"{humane.counts(data.get('counts') or {})}"
            if console.is_terminal:
                bar.update(task, completed=data["finished"], description=line)
            elif line != last:
                click.echo(line)
                for why in _stuck(data):
                    click.echo(f"  waiting: {why}")
                last = line
            if data["state"] != "active" or time.monotonic() > deadline:
                break
            time.sleep(interval)
            data = ctx.client.get(f"/v1/backfills/{backfill_id}")
    if console.is_terminal:
        for why in _stuck(data):
            console.print(f"waiting: {why}", markup=False)
    return data


def _reprocessing(rp: dict[str, Any]) -> None:
    console.print(f"[bold]{rp['id']}[/] downstream of {rp['endpoint']} [{rp['start']}, {rp['end']}) state "
                  f"{rp['state']} — {rp['finished']}/{rp['total']} finished")
    table(rp["workflows"], ["workflow", "backfill", "start", "end", "state", "finished", "total", "counts"])


def _list_backfills(ctx: Ctx, workflow: str | None) -> None:
    data = ctx.client.get("/v1/backfills", workflow=workflow)
    ctx.emit(data, lambda d: table(d["items"], ["id", "workflow", "start", "end", "concurrency", "state",
                                                "next_index", "total", "description"]))


def _resource_row(item: dict[str, Any]) -> dict[str, Any]:
    meta, usage = item.get("metadata", {}), item.get("usage", {})
    holders = usage.get("holders", [])
    return {"name": meta.get("name"), "owner": meta.get("owner"), **item.get("spec", {}),
            "in_use": usage.get("in_use"),
            "holders": ", ".join(holders[:3]) + (f" and {len(holders) - 3} more" if len(holders) > 3 else "")}


def _resources(ctx: Ctx, name: str | None, owner: str | None) -> None:
    """``ferry get resources [NAME]``: the manifests, as for any kind, plus their usage."""
    if name:
        item = ctx.client.get(f"/v1/styx/resources/{quote(name, safe='')}")  # 404 -> exit 3
        ctx.emit(item, lambda i: console.print_json(json.dumps(i, default=str)))
        return
    data = ctx.client.get("/v1/styx/resources", owner=owner)
    ctx.emit(data, lambda d: table([_resource_row(i) for i in d["items"]],
                                   ["name", "owner", "concurrency", "in_use", "holders"]))


WIDTH = 80  # `ferry get workflows` fits 80 columns; names are never cut (the other columns give way)


def next_run_text(next_run: str | None, now: datetime) -> str:
    """A next run as people read it in a table: ``in 42m``, ``in 3h05m``, ``in 2d``, ``due`` or ``off``."""
    if not next_run:
        return "off"
    secs = int((datetime.fromisoformat(next_run) - now).total_seconds())
    if secs <= 0:
        return "due"
    if secs < 3600:
        return f"in {max(1, secs // 60)}m"
    if secs < 86400:
        return f"in {secs // 3600}h{secs % 3600 // 60:02d}m"
    return f"in {secs // 86400}d"


def _workflows(ctx: Ctx, name: str | None, owner: str | None) -> None:
    """``ferry get workflows [NAME]``: the manifests, as for any kind, with ``status.next_run`` (the next
    natural trigger) and, for one workflow, ``status.last_runs`` (its newest instances)."""
    from ferry.cli.core import manifest_order

    if name:
        item = ctx.client.get(f"/v1/styx/workflows/{quote(name, safe='')}")  # 404 -> exit 3
        import yaml

        ctx.emit(manifest_order(item),
                 lambda i: click.echo(yaml.safe_dump(i, sort_keys=False, allow_unicode=True), nl=False))
        return
    items: list[dict[str, Any]] = []
    token = None
    while True:
        page = ctx.client.get("/v1/styx/workflows", owner=owner, limit=1000, page_token=token)
        items += page["items"]
        token = page.get("next_page_token")
        if not token:
            break
    now = datetime.now(UTC)

    def human(d: dict[str, Any]) -> None:
        rows = [(i["metadata"]["name"], str(i["metadata"].get("owner") or ""), str(i["spec"].get("schedule")),
                 next_run_text((i.get("status") or {}).get("next_run"), now)) for i in d["items"]]
        for line in columns_within(["NAME", "OWNER", "SCHEDULE", "NEXT RUN"], rows, WIDTH):
            click.echo(line)
        if not rows:
            click.echo("(none)")
    ctx.emit({"items": items}, human)


def columns_within(header: list[str], rows: Sequence[tuple[str, ...]], width: int) -> list[str]:
    """Aligned columns in at most ``width`` characters: the first (names) and last (short) whole, the
    middle ones sharing what is left, cut with ``…`` only when they must be."""
    gap = 2
    widths = [max([len(h), *(len(r[c]) for r in rows)]) for c, h in enumerate(header)]
    room = width - widths[0] - widths[-1] - gap * (len(header) - 1)
    middle = list(range(1, len(header) - 1))
    while sum(widths[c] for c in middle) > max(room, len(middle)):
        widest = max(middle, key=lambda c: widths[c])
        widths[widest] -= 1

    def cell(text: str, c: int) -> str:
        w = widths[c]
        return (text if len(text) <= w else text[:max(0, w - 1)] + "…").ljust(w)
    out = []
    for r in [tuple(header), *rows]:
        out.append((" " * gap).join(cell(t, c) for c, t in enumerate(r)).rstrip())
    return out
