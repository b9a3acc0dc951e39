"""Core routes: health, OpenAPI, apply, and generic manifest reads and deletes."""

from __future__ import annotations

from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field

from ferry.api.router import Call, Router
from ferry.domain.manifests import KIND_BY_PLURAL, json_schema, kind_of
from ferry.errors import BadRequest, NotFound
from ferry.services.apply import DeleteMode, parse_documents

router = Router()
KIND_PATH = "<any(" + ",".join(KIND_BY_PLURAL) + "):plural>"


class ApplyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    manifests: list[dict[str, Any]] = Field(max_length=50_000)
    dry_run: bool = False
    sources: list[str] | None = Field(default=None, description="file name of each manifest, for errors")


@router.route("/v1/health", summary="Liveness")
def health(call: Call) -> dict[str, Any]:
    return {"ok": True}


@router.route("/v1/whoami", summary="The caller as this API resolved it, with its teams")
def whoami(call: Call) -> dict[str, Any]:
    """Who the API takes the caller to be (the X-Ferry-User header locally, the verified identity in the
    cloud), whether it is the stack's operator, the teams it belongs to and whether it is a Ferry admin."""
    actor, settings = call.actor, call.services.settings
    teams = []
    if actor:
        for rec in call.services.manifests.all("Team"):
            spec = rec.manifest.get("spec", {})
            if actor in spec.get("admins", []):
                teams.append({"team": rec.name, "role": "admin"})
            elif actor in spec.get("members", []):
                teams.append({"team": rec.name, "role": "member"})
    admin = any(t["team"] == settings.admin_team for t in teams)
    return {"user": actor, "operator": call.operator, "identity": settings.identity, "teams": teams,
            "admin": admin, "admin_team": settings.admin_team}


@router.route("/v1/apply", ("POST",), body=ApplyRequest, summary="Validate, then apply manifests")
def apply(call: Call) -> dict[str, Any]:
    req: ApplyRequest = call.body(ApplyRequest)
    manifests = parse_documents(req.manifests, req.sources)
    return call.services.apply.apply(manifests, call.now(), call.actor, req.dry_run).to_dict()


@router.route(f"/v1/{KIND_PATH}", summary="List objects of a kind (paginated)")
def list_kind(call: Call, plural: str) -> dict[str, Any]:
    limit = call.int_arg("limit", 100, 1, 1000)
    page, token = call.services.manifests.list(KIND_BY_PLURAL[plural], call.arg("owner"), limit,
                                               call.arg("page_token"))
    return {"items": [readable(call, r.to_api()) for r in page], "next_page_token": token}


@router.route(f"/v1/{KIND_PATH}/<name>", summary="One object")
def get_one(call: Call, plural: str, name: str) -> dict[str, Any]:
    rec = call.services.manifests.get(KIND_BY_PLURAL[plural], name)
    if rec is None:
        kind = KIND_BY_PLURAL[plural]
        raise NotFound(f"{kind} {name!r} not found{call.services.manifests.did_you_mean(kind, name)}")
    return readable(call, rec.to_api())


def readable(call: Call, doc: dict[str, Any]) -> dict[str, Any]:
    """What the caller may see of an object: a workflow's env only for its team and admins; secret
    references (Secret Manager) never."""
    from ferry.services.redaction import redact_env

    spec = doc.get("spec")
    if doc.get("kind") != "Workflow" or not isinstance(spec, dict) or not spec.get("env"):
        return doc
    owner = (doc.get("metadata") or {}).get("owner")
    spec["env"] = redact_env(spec["env"], call.services.authorizer.may_read(call.actor, owner))
    return doc


@router.route(f"/v1/{KIND_PATH}/<name>", ("DELETE",), summary="Delete an object (owners only)")
def delete_one(call: Call, plural: str, name: str) -> dict[str, Any]:
    mode = call.arg("mode") or "refuse"
    if mode not in ("refuse", "drain", "force"):
        raise BadRequest(f"mode must be refuse, drain or force, not {mode!r}")
    rec = call.services.apply.delete(KIND_BY_PLURAL[plural], name, call.now(), call.actor,
                                     cast(DeleteMode, mode))
    out: dict[str, Any] = {"deleted": {"kind": rec.kind, "name": rec.name}}
    if mode != "refuse":
        out["mode"] = mode
    return out


@router.route("/v1/schema/<kind>", summary="JSON Schema of a manifest kind")
def schema(call: Call, kind: str) -> dict[str, Any]:
    try:
        return json_schema(kind_of(kind))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
