"""Gabo's commands: ferry send / deliver / close / scale."""

from __future__ import annotations

import json
import os
import sys
from typing import Any
from urllib.parse import quote

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from ferry import humane
from ferry.cli.common import Ctx, command, console, examples_epilog, table
from ferry.errors import BadRequest

err_console = Console(stderr=True)
FIRST_REJECTED = 100  # rejected events listed one by one (all are counted, per reason)


def _wrap(line: bytes, event_type: str) -> bytes:
    """One NDJSON line as the envelope ingest takes: a bare payload wrapped as an event of ``event_type``.
    A line that is not JSON goes as it is — ingest rejects that event alone, with its index."""
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):
        return line
    if isinstance(doc, dict) and "payload" not in doc:
        doc = {"type": event_type, "id": str(doc.get("id", "")), "payload": doc}
    elif isinstance(doc, dict) and "type" not in doc:
        doc = {**doc, "type": event_type}
    return json.dumps(doc, separators=(",", ":")).encode()


def send_file(ctx: Ctx, event_type: str, file: str, batch: int) -> dict[str, Any]:
    """Stream ``file`` to ingest in batches; every rejection keeps its line number in the file."""
    totals: dict[str, Any] = {"received": 0, "accepted": 0, "rejected_count": 0, "quarantined": 0}
    rejected: list[dict[str, Any]] = []  # the first FIRST_REJECTED by line; the rest only counted per reason
    groups: dict[str, dict[str, Any]] = {}

    def reject(entry: dict[str, Any]) -> None:
        g = groups.setdefault(str(entry["reason"]), {"reason": str(entry["reason"]), "count": 0, "first_lines": []})
        g["count"] += 1
        g["first_lines"] = sorted([*g["first_lines"], entry["line"]])[:5]
        rejected.append({k: v for k, v in entry.items() if k != "index"})
        if len(rejected) > 2 * FIRST_REJECTED:
            rejected.sort(key=lambda x: x["line"])
            del rejected[FIRST_REJECTED:]

    def flush(lines: list[bytes], numbers: list[int]) -> None:
        if not lines:
            return
        r = ctx.client.request("POST", "/v1/events", content=b"\n".join(lines), content_type="application/x-ndjson")
        for k in ("received", "accepted", "rejected_count", "quarantined"):
            totals[k] += r[k]
        for x in r["rejected"]:
            if 0 <= x["index"] < len(numbers):
                reject({**x, "line": numbers[x["index"]]})

    stream = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115 (closed below)
    size = None if file == "-" else os.path.getsize(file)
    show = not ctx.json and sys.stderr.isatty()
    bar = Progress(TextColumn("sending {task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                   console=err_console, disable=not show, transient=True)
    try:
        with bar:
            task = bar.add_task(event_type, total=size)
            lines: list[bytes] = []
            numbers: list[int] = []
            for number, raw in enumerate(stream, 1):
                bar.advance(task, len(raw))
                line = raw.strip()
                if not line:
                    continue
                lines.append(_wrap(line, event_type))
                numbers.append(number)
                if len(lines) >= batch:
                    flush(lines, numbers)
                    lines, numbers = [], []
            flush(lines, numbers)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    rejected.sort(key=lambda x: x["line"])
    return {**totals, "rejected_by_reason": sorted(groups.values(), key=lambda g: -g["count"]),
            "rejected": rejected[:FIRST_REJECTED]}


def _send_summary(t: dict[str, Any]) -> None:
    console.print(f"{t['accepted']} of {humane.plural(t['received'], 'event')} accepted, {t['rejected_count']} "
                  f"rejected ({t['quarantined']} quarantined)")
    if t["rejected_by_reason"]:
        table([{**g, "first_lines": ", ".join(map(str, g["first_lines"]))} for g in t["rejected_by_reason"]],
              ["count", "reason", "first_lines"], title="rejected, by reason")


def register(main: click.Group) -> None:
    @command(main, "send", example=("ferry send demo-click examples/gabo/events.ndjson",
                                    "gunzip -c events.ndjson.gz | ferry send play -"))
    @click.argument("event_type")
    @click.argument("file", required=False, default="-", type=click.Path(allow_dash=True, dir_okay=False))
    @click.option("--batch", default=500, show_default=True, type=click.IntRange(1, 10_000),
                  help="Events per request. Example: --batch 1000")
    def send(ctx: Ctx, event_type: str, file: str, batch: int) -> None:
        """Send NDJSON events through ingest (FILE, or - for stdin), with a progress bar on a terminal.

        Each line is a whole envelope {"type", "id", "time"?, "payload"} or a bare payload with an "id"
        (wrapped as an event of EVENT_TYPE). A line that is not JSON is rejected with its line number and
        the others still go through. At the end, rejected events are grouped by reason with counts and
        their first line numbers. Exit 0 when every event was accepted, 3 when any was rejected.
        """
        result = send_file(ctx, event_type, file, batch)
        ctx.emit(result, _send_summary)
        if result["rejected_count"]:
            sys.exit(3)

    @command(main, "deliver", example="ferry deliver play --budget 20")
    @click.argument("event_type")
    @click.option("--budget", "budget_s", default=50.0, show_default=True, help="Seconds to keep pulling. Example: --budget 20")
    @click.option("--until-drained/--full-budget", default=True, show_default=True,
                  help="Stop at the first empty pull.")
    @click.option("--max-messages", default=20_000, show_default=True,
                  help="Stop after this many messages in one work order.")
    @click.option("--max-bytes", default=64 * 1024 * 1024, show_default=True,
                  help="Stop after this many bytes of events in one work order.")
    @click.option("--darkload", is_flag=True,
                  help="Deliver the type's darkload shadow (its sampled events) instead of the primary.")
    def deliver(ctx: Ctx, event_type: str, budget_s: float, until_drained: bool, max_messages: int,
                max_bytes: int, darkload: bool) -> None:
        """Run one delivery work order now: subscription → staging objects."""
        r = ctx.client.post("/v1/deliver", {"event_type": event_type, "budget_s": budget_s,
                                            "until_drained": until_drained, "max_messages": max_messages,
                                            "max_bytes": max_bytes, "stream": "darkload" if darkload else "primary"})
        ctx.emit(r, lambda d: console.print(
            f"{d['written']} written in {d['objects']} staging object(s), {d['dead_lettered']} dead-lettered, "
            f"{d['pulls']} pulls in {d['seconds']}s" + (" (drained)" if d["drained"] else "")))

    @command(main, "close", example=("ferry close", "ferry close play"))
    @click.argument("event_type", required=False)
    @click.option("--inline", is_flag=True,
                  help="Merge the shards in the API process, in turn, instead of ordering the close-shard workers.")
    def close(ctx: Ctx, event_type: str | None, inline: bool) -> None:
        """Close what may close now (what the scheduler does): claim each period, order its shards' merges;
        the last shard to finish writes _SUCCESS and lands. Shows what stays open and why."""
        r = ctx.client.post("/v1/close", {"event_type": event_type, "inline": inline})

        def human(d: dict[str, Any]) -> None:
            rows = [{"event_type": rep["event_type"], **c} for rep in d["reports"] for c in rep["closed"]]
            rows += [{"event_type": f"{rep['event_type']} (darkload)", **c} for rep in d["reports"]
                     for c in (rep.get("darkload") or {}).get("closed", [])]
            if rows:
                table(rows, ["event_type", "partition", "events", "duplicates", "late", "shards", "location"],
                      title="closed")
            else:
                console.print("closed nothing")
            ordered = [{"event_type": rep["event_type"], **o} for rep in d["reports"] for o in rep["ordered"]]
            if ordered:
                table(ordered, ["event_type", "partition", "shards", "ordered", "round"], title="ordered")
            still = [{"event_type": rep["event_type"], **o} for rep in d["reports"] for o in rep["open"]]
            if still:
                table(still, ["event_type", "partition", "state", "reason"], title="open")
            for rep in d["reports"]:
                for w in rep.get("waits", [])[:5]:
                    console.print(f"{rep['event_type']} {w['partition']} waits: {w['reason']}", markup=False)
                if len(rep["waiting"]) > 5:
                    console.print(f"{rep['event_type']}: {len(rep['waiting']) - 5} more period(s) wait")
                if rep["late_moved"]:
                    console.print(f"{rep['event_type']}: {rep['late_moved']} late staging object(s) moved to the "
                                  "next open period")
        ctx.emit(r, human)

    @command(main, "query", example=(
        'ferry query "SELECT user_id, count(*) AS n FROM events.demo_click \\\n      GROUP BY 1 ORDER BY n DESC"',
        'ferry query -o csv "SELECT * FROM events.demo_click \\\n      WHERE _period >= TIMESTAMP \'2026-12-07 10:00:00+00\'"',
        'ferry query --max-bytes 1000000000 \\\n      "SELECT count(*) FROM events.demo_click WHERE _period = ..."'))
    @click.argument("sql")
    @click.option("--max-rows", default=1000, show_default=True, type=click.IntRange(1, 10_000),
                  help="Rows shown at most (the rest are counted as truncated).")
    @click.option("--max-bytes", type=click.IntRange(1), default=None,
                  help="BigQuery: refuse a query whose dry-run estimate exceeds this many bytes, and cap its "
                       "billing there. Example: --max-bytes 10000000000")
    @click.option("--dry-run", is_flag=True, help="BigQuery: show the byte estimate only.")
    def query(ctx: Ctx, sql: str, max_rows: int, max_bytes: int | None, dry_run: bool) -> None:
        """SQL over delivered events: one table events.<type> per event type ('-' and '.' as '_'), its
        closed periods only, partitioned by _period. Locally DuckDB over the stack's sink; in a deployment
        BigQuery, with your credentials, after a dry-run estimate (shown on stderr)."""
        import csv
        import sys

        where = ctx.client.get("/v1/query")
        if where["engine"] == "bigquery":
            from ferry.gabo.tables import bigquery

            r = bigquery.BigQueryTables(where["project"], where["dataset"]).query(
                sql, max_bytes=max_bytes, dry_run=dry_run, max_rows=max_rows,
                progress=lambda m: click.echo(m, err=True)).to_dict()
        else:
            r = ctx.client.post("/v1/query", {"sql": sql, "max_rows": max_rows})
        if ctx.output == "csv":
            w = csv.writer(sys.stdout)
            w.writerow(r["columns"])
            w.writerows([[json.dumps(v) if isinstance(v, dict | list) else v for v in row] for row in r["rows"]])
            return

        def human(d: dict[str, Any]) -> None:
            names = d["columns"]
            table([dict(zip(names, row, strict=True)) for row in d["rows"]], names)
            if d.get("truncated"):
                console.print(f"(more than {len(d['rows'])} rows: the first {len(d['rows'])} shown; --max-rows)")
        ctx.emit(r, human)

    @command(main, "scale", example="ferry scale play --dry-run")
    @click.argument("event_type", required=False)
    @click.option("--budget", "budget_s", default=50.0, show_default=True,
                  help="Seconds each published work order may pull. Example: --budget 50")
    @click.option("--dry-run", is_flag=True, help="Decide and record; publish no work orders.")
    def scale(ctx: Ctx, event_type: str | None, budget_s: float, dry_run: bool) -> None:
        """Decide and publish delivery work orders per event type (what the scheduler does)."""
        r = ctx.client.post("/v1/scale", {"event_type": event_type, "budget_s": budget_s, "publish": not dry_run})
        ctx.emit(r, lambda d: table(d["decisions"], ["event_type", "workers", "reason"], title="scaling"))

    @command(main, "capacity", example=("ferry capacity", "ferry capacity play -o json"))
    @click.argument("event_type", required=False)
    def capacity(ctx: Ctx, event_type: str | None) -> None:
        """Capacity per event type: observed rate, per-worker throughput, workers now and at 10× the peak,
        max_workers headroom, shards per period, close time and memory per shard, and the verdict.
        Exits 3 when a type lacks 10× headroom."""
        r = ctx.client.get("/v1/capacity", event_type=event_type)

        def human(d: dict[str, Any]) -> None:
            rows = [{"event_type": c["event_type"], "rate_5m": c["rate_eps"].get("5m"), "peak": c["peak_eps"],
                     "per_worker": c["per_worker_eps"], "now": c["workers_now"], "at_10x": c["workers_at_10x"],
                     "max": c["max_workers"], "headroom": c["headroom"], "shards": c["shards_per_period"],
                     "close_s": c["close_s_per_shard"], "mem_mb": c["memory_mb_per_shard"]}
                    for c in d["capacity"]]
            table(rows, list(rows[0]) if rows else ["event_type"], title="capacity (events/s)")
            for c in d["capacity"]:
                console.print(f"{c['event_type']}: {c['verdict']}")
        ctx.emit(r, human)
        if any(c["ok"] is False for c in r["capacity"]):
            sys.exit(3)

    @command(main, "load", example="ferry load play --rate 2000 --duration 60")
    @click.argument("event_type")
    @click.option("--rate", type=float, required=True, help="Events per second (at most 100000).")
    @click.option("--duration", type=float, required=True, help="Seconds of sending (at most 3600).")
    @click.option("--payload", default="{}", show_default=True, help="The events' payload (JSON; must pass the type's schema).")
    @click.option("--drive/--no-drive", default=True, show_default=True,
                  help="Ask the scaler and closer as the scheduler would (off when the stack's scheduler runs).")
    @click.option("--scale-every", default=10.0, show_default=True, help="Seconds between scaler calls.")
    def load(ctx: Ctx, event_type: str, rate: float, duration: float, payload: str, drive: bool,
             scale_every: float) -> None:
        """Drive a local stack at a steady rate, then wait for delivery to drain and the periods to close.

        Reports accepted events, the peak backlog, the worker counts the scaler chose, the time to drain
        and the closed partitions' counts. Bounded and self-stopping; refuses a non-local API."""
        import json

        from ferry.gabo.scaling import load as load_mod

        load_mod.check_target(str(ctx.client.base), rate, duration)
        report = load_mod.run(ctx.client.request, event_type, rate, duration, json.loads(payload), drive=drive,
                              scale_every=scale_every)

        def human(d: dict[str, Any]) -> None:
            console.print(f"{d['accepted']} accepted of {d['sent']} sent at {d['achieved_rate']}/s; peak backlog "
                          f"{d['peak_backlog']}; workers chosen {' '.join(map(str, d['workers_chosen']))} (the "
                          f"capacity model's: {' '.join('-' if m is None else str(m) for m in d['model_workers'])}); drained "
                          f"{d['drain_s']}s after the last request")
            table(d["closed"], ["partition", "events", "duplicates_dropped", "late_events", "shards"], title="closed")
            if d["open"]:
                table(d["open"], ["partition", "state"], title="still open")
        ctx.emit(report, human)
        if report["closed_events"] < report["accepted"]:
            sys.exit(3)

    @command(main, "replay", example=("ferry replay play --from quarantine",
                                       "ferry replay --dead-letters ferry-alerts-dead-letter"))
    @click.argument("event_type", required=False)
    @click.option("--from", "source", type=click.Choice(["quarantine", "dead-letter"]), default="quarantine",
                  show_default=True, help="Where the events were set aside.")
    @click.option("--since", default=None, help="Only what was received since this ISO instant.")
    @click.option("--dead-letters", "topic", default=None, metavar="TOPIC",
                  help="Instead of an event type: publish what one of infra/'s dead-letter topics keeps back "
                       "where it came from (Ferry admins). Example: --dead-letters ferry-dead-letter")
    def replay(ctx: Ctx, event_type: str | None, source: str, since: str | None, topic: str | None) -> None:
        """Replay set-aside events that are valid now (after a schema fix); the rest stay where they were.
        With --dead-letters TOPIC: the work orders, close orders, landings or notifications Ferry
        dead-lettered (`ferry dead-letters` lists them)."""
        if (event_type is None) == (topic is None):
            raise BadRequest("name an event type, or --dead-letters TOPIC (not both)")
        if topic is not None:
            r = ctx.client.post("/v1/dead-letters/replay", {"topic": topic})
            ctx.emit(r, lambda d: console.print(
                f"{d['replayed']} replayed from {d['subscription']}"
                + (f" ({', '.join(f'{n} to {t}' for t, n in sorted(d['to'].items()))})" if d["to"] else "")
                + (f"; {d['unroutable']} unroutable, left in the hold" if d["unroutable"] else "")))
            return
        assert event_type is not None
        body: dict[str, Any] = {"from": source}
        if since:
            body["since"] = since
        r = ctx.client.post(f"/v1/eventtypes/{quote(event_type, safe='')}/replay", body)

        def human(d: dict[str, Any]) -> None:
            console.print(f"{d['replayed']} replayed from {d['from']} of {d['event_type']}, {d['still_invalid']} "
                          f"still invalid, {d['skipped']} before --since")
            if d["reasons"]:
                table(d["reasons"], ["reason", "count"], title="still invalid")
        ctx.emit(r, human)

    @command(main, "dead-letters", example="ferry dead-letters")
    def dead_letters(ctx: Ctx) -> None:
        """What every hold keeps: infra/'s dead-letter topics (work orders, close orders, landings,
        notifications) and each event type's quarantine and dead letters. `ferry replay` sends them back."""
        r = ctx.client.get("/v1/dead-letters")
        ctx.emit(r, lambda d: table([{**h, "messages": ("1000+" if h["capped"] else h["messages"])}
                                     for h in d["holds"]], ["subscription", "topic", "event_type", "messages"],
                                    title="held messages"))

    from ferry.cli.core import GET_EXTENSIONS

    def set_aside(source: str) -> Any:
        def show(ctx: Ctx, name: str | None, owner: str | None) -> None:
            if not name:
                raise BadRequest(f"ferry get {source} EVENT_TYPE")
            r = ctx.client.get(f"/v1/eventtypes/{quote(name, safe='')}/set-aside", **{"from": source})
            ctx.emit(r, lambda d: table(d["items"], ["event_id", "received_at", "reason"],
                                        title=f"{source} of {d['event_type']} (samples"
                                              + (", more remain)" if d["more"] else ")")))
        return show

    GET_EXTENSIONS["quarantine"] = set_aside("quarantine")
    GET_EXTENSIONS["dead-letter"] = set_aside("dead-letter")

    @main.group("darkload", epilog=examples_epilog("ferry darkload report play", "ferry darkload report play "
                                                   "--partition 2026-11-26T14:05"))
    def darkload() -> None:
        """Darkloading: the shadow stream of a type's sampled events, compared with the primary."""

    @command(darkload, "report", example=("ferry darkload report play",
                                          "ferry darkload report play --partition 2026-11-26T14:05 -o json"))
    @click.argument("event_type")
    @click.option("--partition", default=None,
                  help="One partition (as its parameter); default: the recent ones. Example: --partition 2026-11-26T14")
    def darkload_report(ctx: Ctx, event_type: str, partition: str | None) -> None:
        """Per closed partition: the shadow's ids and counts against the sampled subset of the primary's.

        Names missing (and extra) ids, up to 20 per partition, with every one counted; a mismatch alerts
        the type's owner once per partition. Exits 3 when a partition does not match."""
        r = ctx.client.get(f"/v1/gabo/types/{quote(event_type, safe='')}/darkload", partition=partition)

        def human(d: dict[str, Any]) -> None:
            table(d["partitions"], ["partition", "state", "sampled_events", "shadow_events", "missing", "extra",
                                    "primary_events"], title=f"darkload of {d['event_type']} (fraction {d['fraction']})")
            for p in d["partitions"]:
                if p["state"] == "mismatch":
                    for side in ("missing", "extra"):
                        if p[side]:
                            console.print(f"{p['partition']}: {p[side]} {side} — {', '.join(p[side + '_ids'])}"
                                          + (" …" if p[side] > len(p[side + "_ids"]) else ""), markup=False)
                elif p["state"] == "pending":
                    console.print(f"{p['partition']}: {p['reason']}", markup=False)
        ctx.emit(r, human)
        if any(p["state"] == "mismatch" for p in r["partitions"]):
            sys.exit(3)
