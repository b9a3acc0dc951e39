"""Styx routes (docs/styx.md): instances, execution control, timeline, logs, tick, backfills, resource usage."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ferry.api.router import Call, Router
from ferry.domain.manifests import Env
from ferry.domain.names import NAME_PATTERN
from ferry.errors import BadRequest
from ferry.styx import backfills, overview, resources
from ferry.styx.service import StyxService, instance_view

router = Router()
TAG = "styx"
INSTANCE = "/v1/workflows/<workflow>/instances/<parameter>"


class TriggerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    env: Env = Field(default_factory=dict, description="extra env vars for this trigger")
    ignore_deps: bool = Field(default=False, description="run without waiting for upstream partitions")


class HaltRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = None


class TickRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    budget_seconds: float = Field(default=45.0, gt=0, le=3000)


class BackfillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workflow: str = Field(pattern=NAME_PATTERN)
    start: str = Field(description="first partition (inclusive), aligned to the schedule")
    end: str = Field(description="partition after the last (exclusive), aligned to the schedule")
    concurrency: int = Field(default=1, ge=1, le=1000)
    reverse: bool = False
    description: str = ""
    env: Env = Field(default_factory=dict)


class BackfillHaltRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    graceful: bool = False


def _styx(call: Call) -> StyxService:
    return call.services.styx


def _optional(call: Call, model: type[BaseModel]) -> Any:
    return call.body(model) if call.raw_body and call.raw_body.strip() else model()


@router.route("/v1/workflows/<workflow>/instances", summary="Instances of a workflow", tag=TAG)
def list_instances(call: Call, workflow: str) -> dict[str, Any]:
    items = _styx(call).instances(workflow, call.int_arg("limit", 100, 1, 1000), call.arg("after"))
    return {"items": items}


@router.route("/v1/instances", tag=TAG,
              summary="Instances in one state across workflows (?state=ERROR&owner=&since=ISO), newest first")
def instances_in_state(call: Call) -> dict[str, Any]:
    since = call.arg("since")
    try:
        when = datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None
    except ValueError:
        raise BadRequest(f"since {since!r} is not an ISO timestamp") from None
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    items = _styx(call).instances_in_state(call.arg("state") or "ERROR", call.arg("owner") or None, when,
                                           call.int_arg("limit", 100, 1, 1000))
    return {"items": items}


@router.route(INSTANCE, summary="One instance", tag=TAG)
def get_instance(call: Call, workflow: str, parameter: str) -> dict[str, Any]:
    return instance_view(_styx(call).instance(workflow, parameter))


@router.route(f"{INSTANCE}/trigger", ("POST",), body=TriggerRequest, tag=TAG,
              summary="Trigger an instance now (409 if it is active)")
def trigger(call: Call, workflow: str, parameter: str) -> tuple[int, dict[str, Any]]:
    req: TriggerRequest = _optional(call, TriggerRequest)
    run = _styx(call).trigger(workflow, parameter, call.now(), req.env, call.actor, ignore_deps=req.ignore_deps)
    return 201, instance_view(run)


class RetryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    env: Env = Field(default_factory=dict, description="env changes for the re-run (a new trigger)")


class ReprocessingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    endpoint: str = Field(pattern=NAME_PATTERN, description="the endpoint whose downstream workflows re-run")
    start: str = Field(description="first partition of the endpoint (inclusive)")
    end: str = Field(description="partition after the last (exclusive)")
    concurrency: int = Field(default=1, ge=1, le=1000)
    description: str = ""


@router.route(f"{INSTANCE}/retry", ("POST",), body=RetryRequest, tag=TAG,
              summary="Re-queue an instance now (with env changes: a new trigger)")
def retry(call: Call, workflow: str, parameter: str) -> dict[str, Any]:
    req: RetryRequest = _optional(call, RetryRequest)
    return instance_view(_styx(call).retry(workflow, parameter, call.now(), call.actor, req.env or None))


@router.route("/v1/reprocessings", ("POST",), body=ReprocessingRequest, tag=TAG,
              summary="Re-run every workflow downstream of an endpoint for a range, in dependency order")
def create_reprocessing(call: Call) -> tuple[int, dict[str, Any]]:
    from ferry.styx import reprocessing

    req: ReprocessingRequest = call.body(ReprocessingRequest)
    return 201, reprocessing.create(_styx(call), req.endpoint, req.start, req.end, call.now(), req.concurrency,
                                    req.description, call.actor)


@router.route("/v1/reprocessings/<rp_id>", tag=TAG, summary="A reprocessing with each workflow's progress")
def show_reprocessing(call: Call, rp_id: str) -> dict[str, Any]:
    from ferry.styx import reprocessing

    return reprocessing.show(_styx(call), rp_id)


@router.route("/v1/backfills/<backfill_id>/retry", ("POST",), tag=TAG,
              summary="Re-queue the backfill's failed (ERROR) instances")
def retry_backfill(call: Call, backfill_id: str) -> dict[str, Any]:
    return backfills.retry(_styx(call), backfill_id, call.now(), call.actor)


@router.route(f"{INSTANCE}/mark-done", ("POST",), body=HaltRequest, tag=TAG,
              summary="Mark an instance DONE without running it (owners only; recorded; its output lands)")
def mark_done(call: Call, workflow: str, parameter: str) -> dict[str, Any]:
    req: HaltRequest = _optional(call, HaltRequest)
    return instance_view(_styx(call).mark_done(workflow, parameter, call.now(), call.actor, req.reason))


@router.route(f"{INSTANCE}/halt", ("POST",), body=HaltRequest, tag=TAG,
              summary="Halt an active instance, cancelling its execution")
def halt(call: Call, workflow: str, parameter: str) -> dict[str, Any]:
    req: HaltRequest = _optional(call, HaltRequest)
    return instance_view(_styx(call).halt(workflow, parameter, call.now(), call.actor, req.reason))


@router.route(f"{INSTANCE}/timeline", summary="Triggers, executions and their statuses", tag=TAG)
def timeline(call: Call, workflow: str, parameter: str) -> dict[str, Any]:
    return _styx(call).timeline(workflow, parameter)


@router.route(f"{INSTANCE}/logs", summary="The logs of the instance's (latest) execution", tag=TAG)
def logs(call: Call, workflow: str, parameter: str) -> dict[str, Any]:
    _, owner = _styx(call).workflow(workflow)
    call.services.authorizer.check(call.actor, [owner], "read the logs of")  # its team and admins only
    return _styx(call).logs(workflow, parameter, call.int_arg("limit", 200, 1, 10_000), call.arg("execution"))


@router.route("/v1/tick", ("POST",), body=TickRequest, tag=TAG, summary="Run one Styx tick now",
              operational="styx-tick")
def run_tick(call: Call) -> dict[str, Any]:
    from ferry.api.identity import cap_budget
    from ferry.styx.tick import Tick, TickLimits

    req: TickRequest = _optional(call, TickRequest)
    return Tick(call.services.styx, TickLimits.from_settings(call.services.settings)).run(call.now(), cap_budget(call.services, req.budget_seconds)).to_dict()


@router.route("/v1/backfills", ("POST",), body=BackfillRequest, tag=TAG, summary="Create a backfill")
def create_backfill(call: Call) -> tuple[int, dict[str, Any]]:
    req: BackfillRequest = call.body(BackfillRequest)
    out = backfills.create(_styx(call), req.workflow, req.start, req.end, call.now(), req.concurrency,
                           req.reverse, req.description, req.env, call.actor)
    return 201, out


@router.route("/v1/backfills", summary="Backfills (optionally of one workflow)", tag=TAG)
def list_backfills(call: Call) -> dict[str, Any]:
    return {"items": backfills.listing(_styx(call), call.arg("workflow"))}


@router.route("/v1/backfills/<backfill_id>", summary="A backfill with per-partition states", tag=TAG)
def show_backfill(call: Call, backfill_id: str) -> dict[str, Any]:
    return backfills.show(_styx(call), backfill_id)


@router.route("/v1/backfills/<backfill_id>/halt", ("POST",), body=BackfillHaltRequest, tag=TAG,
              summary="Halt a backfill (graceful: let executing instances finish)")
def halt_backfill(call: Call, backfill_id: str) -> dict[str, Any]:
    req: BackfillHaltRequest = _optional(call, BackfillHaltRequest)
    return backfills.halt(_styx(call), backfill_id, call.now(), req.graceful, call.actor)


@router.route("/v1/styx/resources", summary="Resources with their usage (slots in use, holders)", tag=TAG)
def resource_usage(call: Call) -> dict[str, Any]:
    return {"items": resources.listing(call.services.store, call.arg("owner"))}


@router.route("/v1/styx/resources/<name>", summary="One resource with its usage", tag=TAG)
def one_resource_usage(call: Call, name: str) -> dict[str, Any]:
    return resources.one(call.services.store, name)



def _readable(call: Call, item: dict[str, Any]) -> dict[str, Any]:
    """A workflow's env only for its team and admins (as ``GET /v1/workflows`` shows it)."""
    from ferry.services.redaction import redact_env

    spec = item.get("spec") or {}
    if spec.get("env"):
        owner = (item.get("metadata") or {}).get("owner")
        spec["env"] = redact_env(spec["env"], call.services.authorizer.may_read(call.actor, owner))
    return item


@router.route("/v1/styx/workflows", summary="Workflows (as /v1/workflows) with their next run in status", tag=TAG)
def workflows_next(call: Call) -> dict[str, Any]:
    out = overview.listing(call.services.store, call.arg("owner"), call.int_arg("limit", 100, 1, 1000),
                           call.arg("page_token"))
    out["items"] = [_readable(call, i) for i in out["items"]]
    return out


@router.route("/v1/styx/workflows/<name>", summary="One workflow with its next run and last runs in status",
              tag=TAG)
def workflow_next(call: Call, name: str) -> dict[str, Any]:
    return _readable(call, overview.one(call.services.store, name))
