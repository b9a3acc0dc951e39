"""Core commands: apply, get, delete, schema."""

from __future__ import annotations

import json
from typing import Any

import click

from ferry.cli.common import Ctx, command, console, table
from ferry.domain import loading
from ferry.domain.manifests import PLURALS, json_schema, kind_of
from ferry.errors import BadRequest

GET_COLUMNS = {
    "Endpoint": ["name", "owner", "partitioning", "timezone", "error_after"],
    "Workflow": ["name", "owner", "schedule", "image", "enabled"],
    "EventType": ["name", "owner", "partitioning", "close_after", "workers"],
    "Resource": ["name", "concurrency"],
    "Team": ["name", "members", "admins"],
}


def _row(kind: str, item: dict[str, Any]) -> dict[str, Any]:
    meta, spec = item.get("metadata", {}), item.get("spec", {})
    row = {"name": meta.get("name"), "owner": meta.get("owner"), **spec}
    if kind == "Endpoint":
        row["error_after"] = spec.get("sla", {}).get("error_after")
    if kind == "EventType":
        row["workers"] = f"{spec.get('min_workers')}..{spec.get('max_workers')}"
    return row


def register(main: click.Group) -> None:
    @command(main, "apply")
    @click.option("-f", "--filename", "paths", multiple=True, required=True, type=click.Path(),
                  help="Manifest file or directory (repeatable).")
    @click.option("--dry-run", is_flag=True, help="Report created / changed / unchanged; write nothing.")
    def apply(ctx: Ctx, paths: tuple[str, ...], dry_run: bool) -> None:
        """Validate manifests, then apply them (nothing is applied if anything is invalid)."""
        sourced = loading.load_sourced(paths)  # every error of every file, before anything is sent
        result = ctx.client.post("/v1/apply", {"manifests": [m.to_doc() for _, m in sourced],
                                               "dry_run": dry_run, "sources": [f for f, _ in sourced]})

        def human(r: dict[str, Any]) -> None:
            rows = [c for c in r["changes"] if c["action"] != "unchanged" or len(r["changes"]) <= 50]
            table(rows, ["kind", "name", "action", "generation"],
                  title="plan (dry run)" if r["dry_run"] else "applied")
            c = r["counts"]
            console.print(f"{c['created']} created, {c['changed']} changed, {c['unchanged']} unchanged"
                          + (" (dry run: nothing written)" if r["dry_run"] else ""))
        ctx.emit(result, human)

    @command(main, "get")
    @click.argument("kind")
    @click.argument("name", required=False)
    @click.option("--owner", default=None, help="Only objects owned by this team.")
    def get(ctx: Ctx, kind: str, name: str | None, owner: str | None) -> None:
        """List objects of a kind (endpoints, workflows, eventtypes, resources, teams, ...), or one."""
        extra = GET_EXTENSIONS.get(kind.lower())
        if extra is not None:
            extra(ctx, name, owner)
            return
        try:
            k = kind_of(kind)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        plural = PLURALS[k]
        if name:
            item = ctx.client.get(f"/v1/{plural}/{name}")
            ctx.emit(item, lambda i: console.print_json(json.dumps(i, default=str)))
            return
        items: list[dict[str, Any]] = []
        token = None
        while True:
            page = ctx.client.get(f"/v1/{plural}", owner=owner, limit=1000, page_token=token)
            items += page["items"]
            token = page.get("next_page_token")
            if not token:
                break
        ctx.emit({"items": items}, lambda d: table([_row(k, i) for i in d["items"]], GET_COLUMNS[k]))

    @command(main, "delete")
    @click.argument("kind")
    @click.argument("name")
    def delete(ctx: Ctx, kind: str, name: str) -> None:
        """Delete one object (its owners or admins only)."""
        try:
            plural = PLURALS[kind_of(kind)]
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        ctx.emit(ctx.client.delete(f"/v1/{plural}/{name}"), lambda d: console.print(f"deleted {kind} {name}"))

    @command(main, "schema")
    @click.argument("kind")
    def schema(ctx: Ctx, kind: str) -> None:
        """Print the JSON Schema of a manifest kind (for editors), offline."""
        try:
            click.echo(json.dumps(json_schema(kind), indent=2))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="KIND") from None


# Subsystems add `ferry get KIND` for their own state kinds (alerts, backfills, ...): word -> fn(ctx, name, owner)
GET_EXTENSIONS: dict[str, Any] = {}
