"""Gabo's REST routes: ingest, and what the scheduler / work orders run (deliver, close, scale)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ferry.api.identity import cap_budget
from ferry.api.router import Call, Router
from ferry.errors import FerryError
from ferry.gabo.delivery.service import WorkOrder
from ferry.gabo.service import decode_close_order, decode_work_order

if TYPE_CHECKING:
    from ferry.bootstrap import Services

router = Router()

# An ingest request body is at most this large (413 above it); below the API's general read limit.
MAX_INGEST_BODY = 8 * 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CloseRequest(_Strict):
    event_type: str | None = Field(default=None, description="one type, or every type when absent")
    inline: bool = Field(default=False, description="merge the shards here, in turn (no close orders)")


class ScaleRequest(_Strict):
    event_type: str | None = None
    budget_s: float = Field(default=50.0, gt=0, le=3600)
    publish: bool = Field(default=True, description="publish the work orders (false: decide and record only)")


class QueryRequest(_Strict):
    sql: str = Field(min_length=1, max_length=100_000, description="SQL over events.<table>; closed periods only")
    max_rows: int = Field(default=1000, ge=1, le=10_000)


@router.route("/v1/query", ("GET",), summary="Where `ferry query` runs: DuckDB here (local stack) or BigQuery",
              tag="gabo")
def query_engine(call: Call) -> dict[str, Any]:
    from ferry.gabo.tables import query

    g = call.services.gabo
    return {**query.engine_of(g.sink, call.services.settings.project),
            "tables": {query.table_name(et.name): f"{query.DATASET}.{query.table_name(et.name)}"
                       for et, _ in g.event_types()}}


@router.route("/v1/query", ("POST",), summary="SQL over the closed periods of event types (local stack: DuckDB)",
              body=QueryRequest, tag="gabo")
def run_query(call: Call) -> dict[str, Any]:
    from ferry.gabo.tables import query

    req: QueryRequest = call.body(QueryRequest)
    g = call.services.gabo
    types = {et.name: et.spec.schema_ for et, _ in g.event_types()}
    return query.query_closed(g.sink, types, req.sql, req.max_rows).to_dict()


@router.route("/v1/events", ("POST",), summary="Ingest events (JSON array or NDJSON of {type, id, time?, payload})",
              tag="gabo", max_body_bytes=MAX_INGEST_BODY)
def ingest(call: Call) -> dict[str, Any]:
    return call.services.gabo.ingest(call.raw_body, call.now(), stamp=call.now).to_dict()


@router.route("/v1/deliver", ("POST",), summary="Run one delivery work order now", body=WorkOrder, tag="gabo",
              operational="deliver")
def deliver(call: Call) -> dict[str, Any]:
    order: WorkOrder = call.body(WorkOrder)
    order = order.model_copy(update={"budget_s": cap_budget(call.services, order.budget_s)})
    now = call.now() if call.services.settings.allow_clock_override else None
    return call.services.gabo.deliver(order, now).to_dict()


@router.route("/v1/close", ("POST",), summary="Close every partition that may close now", body=CloseRequest,
              tag="gabo", operational="close")
def close(call: Call) -> dict[str, Any]:
    req: CloseRequest = call.body(CloseRequest) if call.raw_body else CloseRequest()
    g = call.services.gabo
    out: dict[str, Any] = {"reports": [r.to_dict() for r in g.close(call.now(), req.event_type, req.inline)]}
    if req.event_type is None:  # the scheduled close (every type): then the records whose retention passed
        try:
            out["cleanup"] = g.cleanup(call.now())
        except FerryError as exc:  # the next run tries again; closing was done
            out["cleanup"] = {"error": exc.message}
    return out


@router.route("/v1/scale", ("POST",), summary="Decide and publish delivery work orders per event type",
              body=ScaleRequest, tag="gabo", operational="scale")
def scale(call: Call) -> dict[str, Any]:
    req: ScaleRequest = call.body(ScaleRequest) if call.raw_body else ScaleRequest()
    budget = cap_budget(call.services, req.budget_s)
    g = call.services.gabo
    try:  # first: a lost topic would fail the work orders' publish below
        reconciled: dict[str, Any] = g.reconcile(call.now())
    except FerryError as exc:
        reconciled = {"error": exc.message}
    return {"reconciled": reconciled,
            "decisions": g.scale(call.now(), req.event_type, budget, req.publish, g.delivery_capacity())}


@router.route("/v1/capacity", ("GET",), summary="Capacity model per event type: rate, per-worker throughput, "
              "workers now and at 10x the peak, headroom, shards, close cost per shard, verdict", tag="gabo")
def capacity(call: Call) -> dict[str, Any]:
    name = call.query.get("event_type") or None
    return {"capacity": [c.to_dict() for c in call.services.gabo.capacity(call.now(), name)]}


@router.route("/v1/gabo/progress", ("GET",), summary="Delivered and closed since an instant, for one event type "
              "(?event_type=&since=ISO): what a load run reports", tag="gabo")
def progress(call: Call) -> dict[str, Any]:
    from ferry.errors import BadRequest
    from ferry.gabo.envelopes import parse_iso

    name, since = call.query.get("event_type"), call.query.get("since")
    if not name or not since:
        raise BadRequest("event_type and since (an ISO instant) are required")
    try:
        start = parse_iso(since)
    except ValueError:
        raise BadRequest(f"since is not an ISO instant with a time zone: {since!r}") from None
    return call.services.gabo.progress(name, start, call.now())


class ReplayRequest(_Strict):
    from_: Literal["quarantine", "dead-letter"] = Field(default="quarantine", alias="from")
    since: datetime | None = Field(default=None, description="only what was received since (ISO instant)")


@router.route("/v1/eventtypes/<name>/replay", ("POST",), body=ReplayRequest, tag="gabo",
              summary="Replay quarantined or dead-lettered events that are valid now (the type's owners)")
def replay(call: Call, name: str) -> dict[str, Any]:
    req: ReplayRequest = call.body(ReplayRequest) if call.raw_body else ReplayRequest()
    g = call.services.gabo
    _, rec = g.event_type(name)
    call.services.authorizer.check(call.actor, [rec.owner], "replay events of")
    return g.replay(name, req.from_, call.now(), req.since)


@router.route("/v1/dead-letters", tag="gabo",
              summary="Every hold subscription (infra/'s dead-letter topics, each event type's quarantine and "
                      "dead letters) with how many messages it keeps (at most 1,000 counted)")
def dead_letters(call: Call) -> dict[str, Any]:
    return {"holds": call.services.gabo.dead_letters()}


class DeadLetterReplay(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topic: str = Field(description="one of infra/'s dead-letter topics (or its hold subscription)")


@router.route("/v1/dead-letters/replay", ("POST",), body=DeadLetterReplay, tag="gabo",
              summary="Publish what an infra/ dead-letter topic's hold keeps back where it came from (Ferry admins)")
def dead_letters_replay(call: Call) -> dict[str, Any]:
    req: DeadLetterReplay = call.body(DeadLetterReplay)
    authz = call.services.authorizer
    authz.check(call.actor, [authz.admin_team], "replay Ferry's dead letters as")
    return call.services.gabo.replay_dead_letters(req.topic, call.now())


@router.route("/v1/eventtypes/<name>/set-aside", tag="gabo",
              summary="Samples of quarantined (?from=dead-letter: dead-lettered) messages with their reasons")
def set_aside(call: Call, name: str) -> dict[str, Any]:
    return call.services.gabo.set_aside(name, call.arg("from") or "quarantine", call.int_arg("limit", 20, 1, 100))


@router.route("/v1/gabo/types/<name>/darkload", tag="gabo",
              summary="Darkload report: per closed partition (?partition=, else the recent ones), the shadow's ids "
                      "and counts against the sampled subset of the primary's; a mismatch alerts the owner once")
def darkload(call: Call, name: str) -> dict[str, Any]:
    return call.services.gabo.darkload_report(name, call.now(), call.arg("partition") or None)


# -- pushed orders (the deliver and close-shard functions' bodies) ----------------------------------

def deliver_pushed(services: Services, data: bytes, attributes: dict[str, str]) -> None:
    """The ``deliver`` function's body: one pushed work order, its budget capped to the function's
    timeout. Raises on anything that should be redelivered (a malformed order ends in the dead letter)."""
    order = decode_work_order(data)
    services.gabo.deliver(order.model_copy(update={"budget_s": cap_budget(services, order.budget_s)}))


def close_shard_pushed(services: Services, data: bytes, attributes: dict[str, str]) -> None:
    """The ``close-shard`` function's body: one pushed close order. Raises on anything that should be
    redelivered (the period stays open; after the subscription's attempts the order is dead-lettered)."""
    order = decode_close_order(data)
    services.gabo.close_shard(order, order.clock_now(services.clock, services.settings.allow_clock_override))
