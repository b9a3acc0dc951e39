"""Core commands: apply, validate, get, delete, schema, whoami."""

from __future__ import annotations

import json
import os
from typing import Any

import click
import yaml

from ferry import humane
from ferry.cli.common import Ctx, command, console, table
from ferry.domain import loading
from ferry.domain.manifests import KINDS, PLURALS, Manifest, json_schema, kind_of
from ferry.errors import BadRequest, FerryError, NotFound, ValidationError

FILES_HELP = "Manifest file or directory of *.yaml (repeatable). Example: -f examples/manifests/"
KINDS_HELP = "KIND: endpoints, workflows, eventtypes, resources, teams (singular or plural), alerts, backfills."

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


def manifest_order(item: dict[str, Any]) -> dict[str, Any]:
    """An object as the API returns it, keys in the manifest language's order (apiVersion, kind, metadata,
    spec, field by field), then ``status``; unchanged if it is no valid manifest."""
    rest = {k: v for k, v in item.items() if k not in ("status", "usage")}
    model = KINDS.get(str(item.get("kind")))
    if model is None:
        return item
    try:
        ordered = model.model_validate(rest).to_doc()  # type: ignore[attr-defined]
    except ValueError:
        return item
    top = ("apiVersion", "kind", "metadata", "spec")
    return {**{k: ordered[k] for k in top if k in ordered}, **{k: v for k, v in ordered.items() if k not in top},
            **{k: v for k, v in item.items() if k not in ordered}}


def flat(doc: Any, prefix: str = "") -> dict[str, Any]:
    """``{"spec": {"sla": {"error_after": "PT2H"}}}`` → ``{"spec.sla.error_after": "PT2H"}``."""
    if isinstance(doc, dict) and doc:
        out: dict[str, Any] = {}
        for k, v in doc.items():
            out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: doc}


def field_diff(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """Field-level differences of two manifests: path, old value, new value (None when absent)."""
    a, b = flat(before), flat(after)
    return [{"field": k, "from": a.get(k), "to": b.get(k)} for k in list(dict.fromkeys([*a, *b]))
            if a.get(k) != b.get(k)]


def _value(v: Any) -> str:
    return "(unset)" if v is None else json.dumps(v) if isinstance(v, dict | list) else str(v)


def offline_problems(sourced: list[tuple[str, Manifest]]) -> list[dict[str, Any]]:
    """The cross-object rules of apply (references between the given manifests only), with no stack:
    every subsystem's apply hook checked against an empty in-memory store."""
    from ferry.bootstrap import in_memory

    manifests = [m for _, m in sourced]
    in_file: list[int] = []  # each manifest's document index in its file (all are valid by now)
    seen: dict[str, int] = {}
    for f, _ in sourced:
        in_file.append(seen.get(f, 0))
        seen[f] = in_file[-1] + 1
    services = in_memory()
    hooks = services.apply.hooks
    out = []
    for problem in (p for h in hooks for p in h.check(manifests, services.manifests)):
        d = problem.to_dict()
        if d.get("file") == "(input)" and 0 <= problem.document < len(sourced):
            d["file"], d["document"] = sourced[problem.document][0], in_file[problem.document]
        out.append(d)
    return out


def register(main: click.Group) -> None:
    @command(main, "apply", example=("ferry apply -f examples/manifests/ --dry-run",
                                     "ferry apply -f examples/manifests/ -f examples/datamon/"))
    @click.option("-f", "--filename", "paths", multiple=True, required=True, type=click.Path(), help=FILES_HELP)
    @click.option("--dry-run", is_flag=True,
                  help="Print what would be created or changed, field by field; write nothing.")
    def apply(ctx: Ctx, paths: tuple[str, ...], dry_run: bool) -> None:
        """Validate manifests, then apply them (nothing is applied if anything is invalid)."""
        sourced = loading.load_sourced(paths)  # every error of every file, before anything is sent
        result = ctx.client.post("/v1/apply", {"manifests": [m.to_doc() for _, m in sourced],
                                               "dry_run": dry_run, "sources": [f for f, _ in sourced]})
        if dry_run:
            wanted = {(m.kind, m.name): m.to_doc() for _, m in sourced}
            for c in result["changes"]:
                if c["action"] == "changed" and (c["kind"], c["name"]) in wanted:
                    current = ctx.client.get(f"/v1/{PLURALS[c['kind']]}/{c['name']}")
                    current.pop("status", None)
                    c["diff"] = field_diff(current, wanted[(c["kind"], c["name"])])

        def human(r: dict[str, Any]) -> None:
            if r["dry_run"]:
                for c in r["changes"]:
                    if c["action"] == "unchanged":
                        continue
                    console.print(f"would {'create' if c['action'] == 'created' else 'change'} {c['kind']} {c['name']}")
                    for d in c.get("diff", []):
                        console.print(f"  {d['field']}: {_value(d['from'])} → {_value(d['to'])}", markup=False)
            else:
                rows = [c for c in r["changes"] if c["action"] != "unchanged" or len(r["changes"]) <= 50]
                table(rows, ["kind", "name", "action", "generation"], title="applied")
            c = r["counts"]
            if r["dry_run"]:
                console.print(f"would create {c['created']}, would change {c['changed']}, {c['unchanged']} "
                              "unchanged (dry run: nothing written)")
            else:
                console.print(f"{c['created']} created, {c['changed']} changed, {c['unchanged']} unchanged")
        ctx.emit(result, human)

    @command(main, "validate", example=("ferry validate -f examples/",
                                        "ferry validate -f workflows.yaml -f resources.yaml",
                                        "ferry validate -f workflows.yaml --against-stack"))
    @click.option("-f", "--filename", "paths", multiple=True, required=True, type=click.Path(), help=FILES_HELP)
    @click.option("--strict", is_flag=True, help="Offline: a reference to an object not in the given files is an "
                                                 "error (exit 3), not a warning.")
    @click.option("--against-stack", is_flag=True,
                  help="Also check references against what is applied (a dry-run apply on the API: local stack or "
                       "--api); writes nothing.")
    def validate(ctx: Ctx, paths: tuple[str, ...], strict: bool, against_stack: bool) -> None:
        """Check manifests offline — no stack, no network: the schema of every field (cron schedules,
        ISO 8601 durations such as PT2H, time zones), and the references between the given files.
        A reference to an object that is not in the files (another team's endpoint, applied already)
        is a warning, exit 0 — unless --strict; --against-stack resolves them against what is applied.
        Exit 3 naming file and field when anything is wrong (for CI and pre-commit hooks)."""
        try:
            sourced = loading.load_sourced(paths)
        except ValidationError as exc:
            raise ValidationError(exc.message.replace("; nothing was applied", ""), exc.details) from None
        found = offline_problems(sourced)
        warnings = [] if strict or against_stack else [p for p in found if p.get("reference")]
        problems = [p for p in found if p not in warnings]
        if against_stack:
            try:
                ctx.client.post("/v1/apply", {"manifests": [m.to_doc() for _, m in sourced], "dry_run": True,
                                              "sources": [f for f, _ in sourced]})
                problems = []  # the stack resolved every reference; anything else it would have refused
            except ValidationError as exc:
                problems = exc.details if isinstance(exc.details, list) else [{"reason": exc.message}]
        if problems:
            raise ValidationError(f"{len(problems)} problem(s) in manifests", problems)
        counts: dict[str, int] = {}
        for _, m in sourced:
            counts[m.kind] = counts.get(m.kind, 0) + 1
        files = len({f for f, _ in sourced})

        def human(d: dict[str, Any]) -> None:
            for w in d["warnings"]:
                click.secho(f"warning: {w['file']}[{w['document']}] {w.get('kind')}/{w.get('name')} {w['field']}: "
                            f"{w['reference']} is not in these files — fine if it is applied already "
                            "(--against-stack checks, --strict refuses)", fg="yellow", err=True)
            console.print(f"valid: {sum(counts.values())} manifest(s) in {humane.plural(files, 'file')} "
                          f"({', '.join(f'{n} {k}' for k, n in counts.items()) or 'none'})"
                          + (f", {humane.plural(len(d['warnings']), 'unresolved reference')}" if d["warnings"] else "")
                          + (" — references checked against the stack" if against_stack else ""))
        ctx.emit({"valid": True, "files": files, "manifests": counts, "warnings": warnings}, human)

    @command(main, "get", example=("ferry get endpoints", "ferry get workflow aggregate-plays -o yaml"))
    @click.argument("kind")
    @click.argument("name", required=False)
    @click.option("--owner", default=None, metavar="TEAM", help="Only objects owned by this team. Example: --owner team-playback")
    @click.option("--from", "from_", default=None, metavar="PARTITION",
                  help="partitions: the first partition (inclusive). Example: --from 2026-11-26T00")
    @click.option("--to", default=None, metavar="PARTITION",
                  help="partitions: the partition after the last (exclusive). Example: --to 2026-11-27T00")
    def get(ctx: Ctx, kind: str, name: str | None, owner: str | None, from_: str | None, to: str | None) -> None:
        """List objects of a KIND, or show one by NAME (-o yaml prints it as a manifest).

        KIND: endpoints, workflows, eventtypes, resources, teams (singular or plural), alerts, backfills,
        partitions (``ferry get partitions ENDPOINT [--from P] [--to P]``), quarantine, dead-letter.
        """
        ranged = RANGE_EXTENSIONS.get(kind.lower())
        if ranged is not None:
            ranged(ctx, name, from_, to)
            return
        if from_ or to:
            raise BadRequest(f"--from/--to apply to {', '.join(sorted(RANGE_EXTENSIONS))} only")
        extra = GET_EXTENSIONS.get(kind.lower())
        if extra is not None:
            extra(ctx, name, owner)
            return
        try:
            k = kind_of(kind)
        except ValueError as exc:
            raise BadRequest(f"{exc} — {KINDS_HELP}") from None
        plural = PLURALS[k]
        if name:
            item = manifest_order(ctx.client.get(f"/v1/{plural}/{name}"))
            ctx.emit(item, lambda i: click.echo(yaml.safe_dump(i, sort_keys=False, allow_unicode=True), nl=False))
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

    @command(main, "delete", example="ferry delete workflow aggregate-plays")
    @click.argument("kind")
    @click.argument("name")
    @click.option("--drain", is_flag=True, help="EventType: deliver and close its data first, then delete.")
    @click.option("--force", is_flag=True, help="EventType: delete with data not closed (recorded; its "
                                                "subscription is kept until its retention ends).")
    def delete(ctx: Ctx, kind: str, name: str, drain: bool, force: bool) -> None:
        """Delete one object (its owners or admins only). KIND as for `ferry get`.

        An EventType whose accepted events are not all delivered and closed is refused (exit 3, with
        the counts) unless --drain or --force.
        """
        if drain and force:
            raise BadRequest("--drain and --force exclude each other")
        try:
            plural = PLURALS[kind_of(kind)]
        except ValueError as exc:
            raise BadRequest(f"{exc} — {KINDS_HELP}") from None
        mode = "drain" if drain else "force" if force else None
        ctx.emit(ctx.client.delete(f"/v1/{plural}/{name}", mode=mode), lambda d: console.print(f"deleted {kind} {name}"))

    @command(main, "schema", example="ferry schema Workflow > workflow.schema.json")
    @click.argument("kind")
    def schema(ctx: Ctx, kind: str) -> None:
        """Print the JSON Schema of a manifest KIND (Endpoint, Workflow, EventType, Resource, Team), offline."""
        try:
            data = json_schema(kind)
        except ValueError as exc:
            raise click.BadParameter(f"{exc} (one of: {', '.join(KINDS)})", param_hint="KIND") from None
        ctx.emit(data)

    @command(main, "whoami", example=("ferry whoami", "ferry whoami --as alice@example.com"))
    def whoami(ctx: Ctx) -> None:
        """Who you are to Ferry: the identity this CLI sends, and the caller, teams and admin rights the
        API resolved from it."""
        from ferry.cli.common import locate_stack

        data: dict[str, Any] = {"you": ctx.user, "from": ctx.user_source, "api": ctx.api}
        found = locate_stack() if not ctx.api_option and not os.environ.get("FERRY_API") else None
        data["stack"] = {"home": str(found.home), "found": found.found} if found else None
        try:
            data["api_sees"] = ctx.client.get("/v1/whoami")
        except NotFound:
            data["api_sees"] = None
        except FerryError as exc:
            data["api_sees"] = {"error": exc.message}

        def human(d: dict[str, Any]) -> None:
            seen = d["api_sees"] or {}
            stack = f" (local stack {d['stack']['home']}, found in {d['stack']['found']})" if d.get("stack") else ""
            console.print(f"you are {d['you'] or 'anonymous'} (from {d['from']}), API {d['api']}{stack}")
            if "error" in seen:
                console.print(f"the API did not answer: {seen['error']}")
                return
            teams = ", ".join(f"{t['team']} ({t['role']})" for t in seen.get("teams", [])) or "no team"
            console.print(f"the API sees: {seen.get('user') or 'anonymous'} ({seen.get('identity')} identity); "
                          f"teams: {teams}; admin: {'yes' if seen.get('admin') else 'no'}"
                          + ("; the stack's operator (its secret)" if seen.get("operator") else ""))
            console.print("act as someone else with --as USER or FERRY_USER=USER")
        ctx.emit(data, human)


# Subsystems add `ferry get KIND` for their own state kinds (alerts, backfills, ...): word -> fn(ctx, name, owner)
GET_EXTENSIONS: dict[str, Any] = {}
# ... and kinds listed over a range of partitions: word -> fn(ctx, name, from, to)
RANGE_EXTENSIONS: dict[str, Any] = {}
