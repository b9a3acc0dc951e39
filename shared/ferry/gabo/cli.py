"""Gabo's commands: ferry send / deliver / close / scale."""

from __future__ import annotations

import sys
from typing import Any

import click

from ferry.cli.common import Ctx, command, console, table


def register(main: click.Group) -> None:
    @command(main, "send", example="ferry send play examples/gabo/events.ndjson")
    @click.argument("event_type")
    @click.argument("file", required=False, default="-", type=click.File("rb"))
    @click.option("--batch", default=500, show_default=True, help="Events per request. Example: --batch 1000")
    def send(ctx: Ctx, event_type: str, file: Any, batch: int) -> None:
        """Send NDJSON events through ingest (FILE or - for stdin).

        Lines may be whole envelopes {type, id, time?, payload} or bare payloads with an "id"
        (then wrapped as events of EVENT_TYPE).
        """
        import json

        totals: dict[str, Any] = {"received": 0, "accepted": 0, "rejected_count": 0, "quarantined": 0, "rejected": []}

        def flush(lines: list[bytes]) -> None:
            if not lines:
                return
            r = ctx.client.request("POST", "/v1/events", content=b"\n".join(lines), content_type="application/x-ndjson")
            for k in ("received", "accepted", "rejected_count", "quarantined"):
                totals[k] += r[k]
            offset = totals["received"] - r["received"]
            totals["rejected"] += [{**x, "index": x["index"] + offset} for x in r["rejected"]]

        pending: list[bytes] = []
        for raw in file:
            line = raw.strip()
            if not line:
                continue
            try:
                doc = json.loads(line)
                if isinstance(doc, dict) and "payload" not in doc:
                    doc = {"type": event_type, "id": str(doc.get("id", "")), "payload": doc}
                elif isinstance(doc, dict) and "type" not in doc:
                    doc = {**doc, "type": event_type}
                line = json.dumps(doc, separators=(",", ":")).encode()
            except (ValueError, RecursionError):
                pass  # sent as is: ingest rejects that line (that event), the others go on
            pending.append(line)
            if len(pending) >= batch:
                flush(pending)
                pending = []
        flush(pending)

        def human(t: dict[str, Any]) -> None:
            console.print(f"{t['accepted']} accepted, {t['rejected_count']} rejected "
                          f"({t['quarantined']} quarantined) of {t['received']}")
            if t["rejected"]:
                table(t["rejected"][:20], ["index", "id", "type", "reason"], title="rejected")
        ctx.emit(totals, human)
        if totals["received"] and not totals["accepted"]:
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
    def deliver(ctx: Ctx, event_type: str, budget_s: float, until_drained: bool, max_messages: int,
                max_bytes: int) -> None:
        """Run one delivery work order now: subscription → staging objects."""
        r = ctx.client.post("/v1/deliver", {"event_type": event_type, "budget_s": budget_s,
                                            "until_drained": until_drained, "max_messages": max_messages,
                                            "max_bytes": max_bytes})
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
            table(rows, ["event_type", "partition", "events", "duplicates", "late", "shards", "location"],
                  title="closed")
            ordered = [{"event_type": rep["event_type"], **o} for rep in d["reports"] for o in rep["ordered"]]
            if ordered:
                table(ordered, ["event_type", "partition", "shards", "ordered", "round"], title="ordered")
            still = [{"event_type": rep["event_type"], **o} for rep in d["reports"] for o in rep["open"]]
            if still:
                table(still, ["event_type", "partition", "state", "reason"], title="open")
            for rep in d["reports"]:
                if rep["waiting"] or rep["late_moved"]:
                    console.print(f"{rep['event_type']}: waiting {', '.join(rep['waiting'][:5]) or '-'}; "
                                  f"{rep['late_moved']} late object(s) moved; watermark {rep['watermark']}")
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

    @command(main, "capacity")
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

    @command(main, "load")
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

        from ferry.gabo import load as load_mod

        load_mod.check_target(str(ctx.client.base), rate, duration)
        report = load_mod.run(ctx.client.request, event_type, rate, duration, json.loads(payload), drive=drive,
                              scale_every=scale_every)

        def human(d: dict[str, Any]) -> None:
            console.print(f"{d['accepted']} accepted of {d['sent']} sent at {d['achieved_rate']}/s; peak backlog "
                          f"{d['peak_backlog']}; workers chosen {d['workers_chosen']}; drained "
                          f"{d['drain_s']}s after the last request")
            table(d["closed"], ["partition", "events", "duplicates_dropped", "late_events", "shards"], title="closed")
            if d["open"]:
                table(d["open"], ["partition", "state"], title="still open")
        ctx.emit(report, human)
        if report["closed_events"] < report["accepted"]:
            sys.exit(3)
