"""Datamon's commands: land, evaluate, status, alerts, ack (and ``ferry get alerts``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from ferry import humane
from ferry.cli.common import Ctx, command, console, parameter_formats, table
from ferry.errors import BadRequest, FerryError

STATE_STYLES = {"late": "bold red", "at_risk": "dark_orange", "warn": "yellow", "pending": "grey50",
                "landed_late": "magenta", "ok": "green"}


def _lag(seconds: int | None) -> str:
    return humane.duration(seconds)


def _show_alerts(ctx: Ctx, owner: str | None, include_all: bool, endpoint: str | None = None,
                 severity: str | None = None, limit: int | None = None) -> None:
    data = ctx.client.get("/v1/alerts", owner=owner, all="1" if include_all else None, endpoint=endpoint,
                          severity=severity, limit=str(limit) if limit else None)

    def human(d: dict[str, Any]) -> None:
        rows = [{**a, "status": ("open" if a.get("open") else "resolved") + (" (acked)" if a.get("acked") else "")
                 + (" (held)" if a.get("held") else ""),
                 "partitions": a.get("count") if a.get("count") is not None else a.get("partition"),
                 "span": f"{a.get('oldest')} … {a.get('newest')}" if a.get("count", 1) > 1 else a.get("oldest")}
                for a in d["items"]]
        table(rows, ["id", "owner", "level", "severity", "status", "partitions", "span", "summary"],
              styles={"level": lambda v: STATE_STYLES.get(v, "")})
        if d.get("total", 0) > len(d["items"]):
            console.print(f"{len(d['items'])} of {d['total']} incidents (--limit to see more)")
    ctx.emit(data, human)


def register(main: click.Group) -> None:
    @command(main, "land", formats=parameter_formats("PARTITION"), example="ferry land plays-hourly 2026-11-26T14 --records 1200")
    @click.argument("endpoint")
    @click.argument("partition")
    @click.option("--records", type=click.IntRange(min=0), default=None, help="Number of records. Example: --records 1200")
    @click.option("--bytes", "size", type=click.IntRange(min=0), default=None, help="Size in bytes. Example: --bytes 52428800")
    @click.option("--location", default=None, help="Where the partition is (URI). Example: --location gs://b/plays/2026-11-26T14")
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
            late = f", {humane.duration(r['late_seconds'])} after its deadline" if r.get("late") else ""
            console.print(f"{r['endpoint']} {r['partition']} {what} (first at {r['landed_at']}{late})")
        ctx.emit(result, human)

    @command(main, "evaluate", example="ferry evaluate")
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

    @command(main, "status", example=("ferry status", "ferry status --owner team-playback -o json"))
    @click.option("--owner", default=None, metavar="TEAM", help="Only endpoints of this team. Example: --owner team-playback")
    def status(ctx: Ctx, owner: str | None) -> None:
        """The unified view: every endpoint's state, worst first."""
        data = ctx.client.get("/v1/status", owner=owner)
        # what the holds keep (dead letters, quarantine): a dead letter nobody counts is a silent drop
        try:
            held = ctx.client.get("/v1/dead-letters")["holds"]
        except FerryError as exc:  # the endpoints' view stands without it
            held, data["dead_letters_error"] = [], exc.message
        types = {r["endpoint"][len("events."):] for r in data.get("endpoints", []) if r["endpoint"].startswith("events.")}
        data["dead_letters"] = [h for h in held if h["messages"] and (owner is None or h["event_type"] in types)]

        def human(d: dict[str, Any]) -> None:
            rows = [{**r, "lag": _lag(r.get("lag_seconds")),
                     "recent": "".join({"ok": "▪", "landed_late": "▫"}.get(p["state"], "●") for p in r["recent"][-12:])}
                    for r in d["endpoints"]]
            for r in rows:
                r["incident"] = "; ".join(
                    # the incident's own level (warn/error), the word `ferry alerts` shows: not "late"
                    ([f"{r['incident']['level']}: {humane.plural(r['incident']['count'], 'partition')}"]
                     if r.get("incident") else [])
                    + [f"{m['missing'] or 0:,} events missing in {m['partition']}" for m in r.get("missing_events") or []]
                ) + (" (silenced)" if r.get("silenced") else "")
            table(rows, ["endpoint", "owner", "partitioning", "state", "last_landed", "lag", "incident", "recent"],
                  styles={"state": lambda v: STATE_STYLES.get(v, "")})
            if d.get("silences"):
                table(d["silences"], ["id", "endpoint", "owner", "until", "reason"], title="silences")
            if d.get("channels"):
                table(d["channels"], ["team", "channel", "type", "last_error", "last_failure_at", "last_dead_lettered_at"],
                      title="failing notification channels", styles={"channel": lambda v: "bold red"})
            if d.get("dead_letters"):
                table([{**h, "messages": "1000+" if h["capped"] else h["messages"]} for h in d["dead_letters"]],
                      ["subscription", "topic", "event_type", "messages"],
                      title="held (dead letters, quarantine) — `ferry replay` sends them back")
            if d.get("stuck_deliveries"):
                table(d["stuck_deliveries"], ["team", "channel", "status", "attempts", "since", "error"],
                      title="notifications stuck (the next evaluation retries or dead-letters them)")
        ctx.emit(data, human)

    @command(main, "alerts", example=("ferry alerts --owner team-playback", "ferry alerts --severity error --all"))
    @click.option("--owner", default=None, help="Only incidents of this team.")
    @click.option("--endpoint", default=None, help="Only incidents of this endpoint.")
    @click.option("--severity", type=click.Choice(["critical", "error", "warning", "info"]), default=None,
                  help="Only incidents at least this severe.")
    @click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="At most this many.")
    @click.option("--all", "include_all", is_flag=True, help="Include resolved incidents.")
    def alerts(ctx: Ctx, owner: str | None, endpoint: str | None, severity: str | None, limit: int,
               include_all: bool) -> None:
        """Incidents: one per endpoint with its late partitions (count, oldest, newest), most severe first."""
        _show_alerts(ctx, owner, include_all, endpoint, severity, limit)

    @command(main, "ack", example=("ferry ack INCIDENT_ID", "ferry ack --endpoint plays-hourly"))
    @click.argument("alert_ids", nargs=-1)
    @click.option("--endpoint", default=None, help="Every open incident of this endpoint.")
    @click.option("--owner", default=None, help="Every open incident of this team.")
    def ack(ctx: Ctx, alert_ids: tuple[str, ...], endpoint: str | None, owner: str | None) -> None:
        """Acknowledge incidents: no more re-notifications (their owners or admins only)."""
        result = ctx.client.post("/v1/alerts/ack", {"ids": list(alert_ids), "endpoint": endpoint, "owner": owner})
        ctx.emit(result, lambda r: console.print(
            f"acknowledged {r['acknowledged']} incident(s): {', '.join(a['id'] for a in r['items']) or 'none open'}"))

    @command(main, "silence", example='ferry silence plays-hourly --for PT2H --reason "backfill running"')
    @click.argument("endpoint", required=False)
    @click.option("--owner", default=None, help="Silence every endpoint of this team instead.")
    @click.option("--for", "duration", required=True, help="How long, ISO 8601 (e.g. PT2H; at most P30D).")
    @click.option("--reason", required=True, help="Why (shown in status and recorded with held notifications).")
    def silence(ctx: Ctx, endpoint: str | None, owner: str | None, duration: str, reason: str) -> None:
        """Hold back notifications of ENDPOINT (or --owner TEAM) for a while; it expires by itself."""
        result = ctx.client.post("/v1/silences", {"endpoint": endpoint, "owner": owner, "for": duration,
                                                  "reason": reason})
        ctx.emit(result, lambda r: console.print(
            f"silenced {r.get('endpoint') or 'owner ' + str(r.get('owner'))} until {r['until']} ({r['id']})"))

    @command(main, "silences", example=("ferry silences", "ferry silences --end SILENCE_ID"))
    @click.option("--owner", default=None, help="Only silences concerning this team.")
    @click.option("--end", "end_id", default=None, help="End this silence now.")
    def silences_cmd(ctx: Ctx, owner: str | None, end_id: str | None) -> None:
        """Silences in force (or end one with --end ID)."""
        if end_id:
            result = ctx.client.post(f"/v1/silences/{quote(end_id, safe='')}/end")
            ctx.emit(result, lambda r: console.print(f"ended {r['id']}"))
            return
        data = ctx.client.get("/v1/silences", owner=owner)
        ctx.emit(data, lambda d: table(d["items"], ["id", "endpoint", "owner", "until", "reason", "created_by"]))

    @command(main, "invalidate", example="ferry invalidate plays-hourly 2026-11-26T14 --reason 'duplicated rows'")
    @click.argument("endpoint")
    @click.argument("partition")
    @click.option("--reason", required=True, help="Why the partition is bad (recorded with who said so).")
    def invalidate(ctx: Ctx, endpoint: str, partition: str, reason: str) -> None:
        """Mark a landed partition bad: it is late again (its owners are alerted) until it re-lands."""
        result = ctx.client.post(f"/v1/endpoints/{quote(endpoint, safe='')}/partitions/"
                                 f"{quote(partition, safe='')}/invalidate", {"reason": reason})

        def human(r: dict[str, Any]) -> None:
            if r["invalidated"]:
                console.print(f"invalidated {r['endpoint']} {r['partition']} (landed {r['previous']['landed_at']}) "
                              f"by {r.get('by') or 'anonymous'}: {r['reason']}")
            else:
                console.print(r["message"])
        ctx.emit(result, human)

    from ferry.cli.core import GET_EXTENSIONS, RANGE_EXTENSIONS

    GET_EXTENSIONS["alerts"] = lambda ctx, name, owner: _show_alerts(ctx, owner, False, name)
    RANGE_EXTENSIONS["partitions"] = _partitions
    RANGE_EXTENSIONS["partition"] = _partitions


def _partitions(ctx: Ctx, endpoint: str | None, start: str | None, end: str | None) -> None:
    if not endpoint:
        raise BadRequest("ferry get partitions ENDPOINT [--from P] [--to P]")
    data = ctx.client.get(f"/v1/endpoints/{quote(endpoint, safe='')}/partitions", **{"from": start, "to": end},
                          limit=1000)
    rows = [{**r, "late": _lag(r["late_seconds"]) if r["late_seconds"] else ""} for r in data["items"]]
    ctx.emit(data, lambda d: table(rows, ["partition", "state", "landed_at", "records", "bytes", "location", "landings", "late",
                                          "source"], styles={"state": lambda v: STATE_STYLES.get(v, "")}))

