"""``ferry deploy``: print the deployment plan of ``infra/`` (``--dry-run``) or apply it."""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path
from typing import Any

import click

from ferry.cli.common import Ctx, command, console, table
from ferry.infra import model

DEFAULT_BUNDLE = "build/ferry-bundle"


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    return str(value)


def register(main: click.Group) -> None:
    @command(main, "deploy", example="ferry deploy --project my-project --region europe-west1 --dry-run")
    @click.option("--project", required=True, help="Google Cloud project id.")
    @click.option("--region", required=True, help="Region of the functions and scheduler jobs.")
    @click.option("--dry-run", is_flag=True, help="Print the ordered plan; change nothing.")
    @click.option("--infra", "infra_dir", default=None, type=click.Path(file_okay=False),
                  help="The infra directory (default: the repository's infra/).")
    @click.option("--bundle", "bundle_dir", default=DEFAULT_BUNDLE, show_default=True, type=click.Path(),
                  help="Where to build the functions' source bundle.")
    @click.option("--project-number", default=None, help="Skip looking the project number up (dry runs "
                  "show a placeholder without it).")
    @click.option("--admin", "admins", multiple=True, metavar="EMAIL",
                  help="Ferry's first admins (repeatable; default: infra/'s admins). Only admins may create "
                  "Teams; a deployment needs one at least.")
    def deploy(ctx: Ctx, project: str, region: str, dry_run: bool, infra_dir: str | None, bundle_dir: str,
               project_number: str | None, admins: tuple[str, ...]) -> None:
        """Deploy infra/ to Google Cloud: APIs, service accounts and IAM, buckets, indexes, topics,
        subscriptions, functions, push subscriptions and scheduler jobs (idempotent)."""
        from ferry.deploy import apply, bundle
        from ferry.deploy.planning import cloud_env, plan
        from ferry.errors import ValidationError

        try:
            infra = model.load(infra_dir)
            if admins:
                infra = model.Infra.model_validate({**infra.model_dump(), "admins": list(admins)})
        except ValueError as exc:
            raise ValidationError(f"infra is invalid: {exc}") from exc
        source = bundle.build(Path(bundle_dir))
        if dry_run:
            steps = plan(infra, project, region, source.resolve(), project_number=project_number)
            env = cloud_env(infra, project, region)
            if ctx.json:
                click.echo(json.dumps({"dry_run": True, "cloud_env": env, "steps": [s.to_dict() for s in steps]},
                                      indent=2, default=_json_default))
                return
            rows = [{"#": i, "kind": s.kind, "name": s.name, "description": s.description}
                    for i, s in enumerate(steps, 1)]
            table(rows, ["#", "kind", "name", "description"], title=f"deploy plan for {project} ({region})")
            console.print("every function's environment starts with: "
                          + (", ".join(f"{k}={v}" for k, v in env.items()) or "(no cloud_env)")
                          + f", GOOGLE_CLOUD_PROJECT={project}, FERRY_REGION={region}", highlight=False)
            console.print(f"{len(steps)} steps (dry run: nothing changed; --json shows every request)")
            return

        counts: Counter[str] = Counter()

        def report(o: apply.Outcome) -> None:
            counts[o.action] += 1
            if not ctx.json:
                style = {"created": "green", "updated": "yellow"}.get(o.action, "dim")
                console.print(f"[{style}]{o.action:9}[/] {o.step.kind:17} {o.step.name}"
                              + (f"  ({o.detail})" if o.detail else ""))

        outcomes = apply.deploy(infra, project, region, source.resolve(), apply.Applier(), on_outcome=report,
                                number=project_number)
        if ctx.json:
            click.echo(json.dumps({"dry_run": False, "outcomes": [o.to_dict() for o in outcomes],
                                   "counts": dict(counts)}, indent=2))
        else:
            console.print(", ".join(f"{counts[a]} {a}" for a in ("created", "updated", "unchanged")))
