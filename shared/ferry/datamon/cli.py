"""Datamon's commands: land, evaluate, status, alerts, ack (and ``ferry get alerts``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from ferry.cli.common import Ctx, command, console, table

STATE_STYLES = {"late": "bold red", "at_risk": "dark_orange", "warn": "yellow", "pending": "grey50",
                "landed_late": "magenta", "ok": "green"}


def _lag(seconds: int | None) -> str:
    if seconds is None:
        return ""
    minutes = seconds // 60
    return f"{minutes}m" if minutes < 120 else (f"{minutes // 60}h" if minutes < 2880 else f"{minutes // 1440}d")


def _show_alerts(ctx: Ctx, owner: str | None, include_all: bool) -> None:
    data = ctx.client.get("/v1/alerts", owner=owner, all="1" if include_all else None)

    def human(d: dict[str, Any]) -> None:
        rows = [{**a, "status": ("open" if a.get("open") else "resolved") + (" (acked)" if a.get("acked") else ""),
                 "overdue": _lag(a.get("overdue_seconds"))} for a in d["items"]]
        table(rows, ["id", "owner", "level", "severity", "status", "overdue", "summary"],
              styles={"level": lambda v: STATE_STYLES.get(v, "")})
    ctx.emit(data, human)


def register(main: click.Group) -> None:
    @command(main, "land")
    @click.argument("endpoint")
    @click.argument("partition")
    @click.option("--records", type=click.IntRange(min=0), default=None, help="Number of records.")
    @click.option("--bytes", "size", type=click.IntRange(min=0), default=None, help="Size in bytes.")
    @click.option("--location", default=None, help="Where the partition is (URI).")
    @click.option("--allow-future", is_flag=True, help="Land a partition whose period has not ended yet.")
    def land(ctx: Ctx, endpoint: str, partition: str, records: int | None, size: int | None,
             location: str | None, allow_future: bool) -> None:
        """Report a partition of ENDPOINT landed (idempotent: landing again records a re-landing)."""
        body = {"partition": partition, "records": records, "bytes": size, "location": location, "source": "cli",
                "allow_future": allow_future or None}
        result = ctx.client.post(f"/v1/endpoints/{quote(endpoint, safe='')}/partitions",
                                 {k: v for k, v in body.items() if v is not None})

        def human(r: dict[str, Any]) -> None:
            what = "re-landed" if r["relanded"] else "landed"
            late = f", {r['late_seconds'] // 60} minutes after its deadline" if r.get("late") else ""
            console.print(f"{r['endpoint']} {r['partition']} {what} (first at {r['landed_at']}{late})")
        ctx.emit(result, human)

    @command(main, "evaluate")
    def evaluate(ctx: Ctx) -> None:
        """Run the SLA evaluation now (what the scheduler does every few minutes)."""
        result = ctx.client.post("/v1/evaluate")

        def human(r: dict[str, Any]) -> None:
            n = r["notifications"]
            console.print(f"evaluated {r['endpoints']} endpoints, {r['partitions']} partitions "
                          f"({', '.join(f'{k} {v}' for k, v in sorted(r['states'].items())) or 'nothing due'})")
            console.print(f"notifications: {n['trigger']} triggered, {n['escalate']} escalated, "
                          f"{n['resolve']} resolved, {n['renotify']} re-notified; "
                          f"{r['reads']} reads, {r['writes']} writes in {r['duration_ms']} ms")
        ctx.emit(result, human)

    @command(main, "status")
    @click.option("--owner", default=None, help="Only endpoints of this team.")
    def status(ctx: Ctx, owner: str | None) -> None:
        """The unified view: every endpoint's state, worst first."""
        data = ctx.client.get("/v1/status", owner=owner)

        def human(d: dict[str, Any]) -> None:
            rows = [{**r, "lag": _lag(r.get("lag_seconds")),
                     "recent": "".join({"ok": "▪", "landed_late": "▫"}.get(p["state"], "●") for p in r["recent"][-12:])}
                    for r in d["endpoints"]]
            table(rows, ["endpoint", "owner", "partitioning", "state", "last_landed", "lag", "open_alerts", "recent"],
                  styles={"state": lambda v: STATE_STYLES.get(v, "")})
            if d.get("channels"):
                table(d["channels"], ["team", "channel", "type", "last_error", "last_failure_at", "last_dead_lettered_at"],
                      title="failing notification channels", styles={"channel": lambda v: "bold red"})
        ctx.emit(data, human)

    @command(main, "alerts")
    @click.option("--owner", default=None, help="Only alerts of this team.")
    @click.option("--all", "include_all", is_flag=True, help="Include resolved alerts.")
    def alerts(ctx: Ctx, owner: str | None, include_all: bool) -> None:
        """Open alerts (one per endpoint and partition)."""
        _show_alerts(ctx, owner, include_all)

    @command(main, "ack")
    @click.argument("alert_id")
    def ack(ctx: Ctx, alert_id: str) -> None:
        """Acknowledge an alert: no more re-notifications (its owners or admins only)."""
        result = ctx.client.post(f"/v1/alerts/{quote(alert_id.replace('/', '@', 1), safe='@:')}/ack")
        ctx.emit(result, lambda r: console.print(f"acknowledged {r['id']} (by {r.get('acked_by') or 'anonymous'})"))

    from ferry.cli.core import GET_EXTENSIONS

    GET_EXTENSIONS["alerts"] = lambda ctx, name, owner: _show_alerts(ctx, owner, False)
