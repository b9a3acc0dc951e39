"""Datamon's HTTP routes (served by the ``api`` function, the ``evaluate`` function, and read by the dashboard)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from ferry.api.router import Call, Router
from ferry.datamon import evaluation, landing, partitions, silences, views
from ferry.domain.names import ID_PATTERN, NAME_PATTERN
from ferry.errors import ValidationError

if TYPE_CHECKING:
    from ferry.bootstrap import Services

router = Router()
TAG = "datamon"


class LandRequest(BaseModel):
    """A landed partition, as any producer reports it (also the partitions topic's message)."""

    model_config = ConfigDict(extra="forbid")
    partition: str = Field(min_length=1, max_length=64, description="the partition parameter, e.g. 2026-11-26T14")
    records: int | None = Field(default=None, ge=0)
    bytes: int | None = Field(default=None, ge=0)
    location: str | None = Field(default=None, max_length=2048, description="where it is, e.g. gs://bucket/path")
    source: str = Field(default="api", max_length=64, description="who reports it (api, cli, styx, gabo, ...)")
    allow_future: bool = Field(default=False, description="land a partition whose period has not ended yet")


class PartitionMessage(LandRequest):
    """The message on the ``ferry-partitions`` topic: a landing plus the endpoint's name."""

    endpoint: str = Field(min_length=1, max_length=200)
    source: str = Field(default="pubsub", max_length=64)


@router.route("/v1/endpoints/<name>/partitions", ("POST",), body=LandRequest, tag=TAG,
              summary="Report a partition of an endpoint landed (idempotent)")
def land(call: Call, name: str) -> dict[str, Any]:
    req: LandRequest = call.body(LandRequest)
    owner = landing.policy_for(call.services.manifests, name).owner
    call.services.authorizer.check(call.actor, [owner], "land partitions of")
    return landing.land(call.services.store, name, req.partition, now=call.now(), records=req.records,
                        bytes=req.bytes, location=req.location, source=req.source, actor=call.actor,
                        allow_future=req.allow_future)


class InvalidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000, description="why the partition is bad")


@router.route("/v1/endpoints/<name>/partitions", tag=TAG,
              summary="Landed partitions of an endpoint (?from=&to= partitions, [from, to)), newest first")
def list_partitions(call: Call, name: str) -> dict[str, Any]:
    return {"items": partitions.listing(call.services.store, name, now=call.now(), start=call.arg("from"),
                                        end=call.arg("to"), limit=call.int_arg("limit", 200, 1, 1000))}


@router.route("/v1/endpoints/<name>/partitions/<partition>/invalidate", ("POST",), body=InvalidateRequest, tag=TAG,
              summary="Mark a landed partition bad (owners only): late again until it re-lands")
def invalidate(call: Call, name: str, partition: str) -> dict[str, Any]:
    req: InvalidateRequest = call.body(InvalidateRequest)
    return partitions.invalidate(call.services.store, call.services.authorizer, name, partition, reason=req.reason, actor=call.actor,
                                 now=call.now())


@router.route("/v1/evaluate", ("POST",), tag=TAG, operational="evaluate",
              summary="Run one SLA evaluation now (what the scheduler does)")
def evaluate(call: Call) -> dict[str, Any]:
    from ferry.notify.port import sweep_stuck

    result = evaluation.evaluate(call.services.store, call.services.publisher, now=call.now())
    # deliveries that stopped without a trace (no redelivery came): retried or dead-lettered, every run
    result["deliveries_swept"] = sweep_stuck(call.services.store, call.services.publisher, call.now(),
                                             call.services.settings.notify_max_attempts)
    return result


class AckRequest(BaseModel):
    """Incidents to acknowledge: by id, and/or every open one of an endpoint or owner."""

    model_config = ConfigDict(extra="forbid")
    ids: list[Annotated[str, Field(pattern=ID_PATTERN)]] = Field(default_factory=list, max_length=500)
    endpoint: str | None = Field(default=None, pattern=NAME_PATTERN)
    owner: str | None = Field(default=None, pattern=NAME_PATTERN)


class SilenceRequest(BaseModel):
    """Hold back the notifications of an endpoint, or of every endpoint of an owner, for a while."""

    model_config = ConfigDict(extra="forbid")
    endpoint: str | None = Field(default=None, pattern=NAME_PATTERN)
    owner: str | None = Field(default=None, pattern=NAME_PATTERN)
    duration: str = Field(alias="for", description="ISO 8601 duration, e.g. PT2H (at most P30D)")
    reason: str = Field(min_length=1, max_length=500)


@router.route("/v1/alerts", tag=TAG,
              summary="Incidents: open ones (all with ?all=1); ?owner= ?endpoint= ?severity= ?limit= (default 50)")
def alerts(call: Call) -> dict[str, Any]:
    include = (call.arg("all") or "").lower() in ("1", "true", "yes")
    raw_limit = call.arg("limit") or str(views.DEFAULT_LIMIT)
    if not raw_limit.isdigit() or not 0 < int(raw_limit) <= 1000:
        raise ValidationError("limit must be 1-1000", [{"field": "limit", "reason": raw_limit}])
    severity = call.arg("severity") or None
    if severity is not None and severity not in views.SEVERITY_RANK:
        raise ValidationError(f"severity must be one of {', '.join(views.SEVERITY_RANK)}",
                              [{"field": "severity", "reason": severity}])
    return views.alerts(call.services.store, owner=call.arg("owner") or None, endpoint=call.arg("endpoint") or None,
                          severity=severity, limit=int(raw_limit), include_closed=include)


@router.route("/v1/alerts/ack", ("POST",), body=AckRequest, tag=TAG,
              summary="Acknowledge incidents by id, or every open one of an endpoint or owner")
def ack_many(call: Call) -> dict[str, Any]:
    req: AckRequest = call.body(AckRequest)
    return views.ack(call.services.store, call.services.authorizer, req.ids, endpoint=req.endpoint, owner=req.owner, actor=call.actor,
                       now=call.now())


@router.route("/v1/alerts/<alert>/ack", ("POST",), tag=TAG,
              summary="Acknowledge an incident (owning team or admins): no more re-notifications")
def ack(call: Call, alert: str) -> dict[str, Any]:
    return views.ack(call.services.store, call.services.authorizer, [alert], actor=call.actor, now=call.now())["items"][0]  # type: ignore[no-any-return]


@router.route("/v1/silences", ("POST",), body=SilenceRequest, tag=TAG,
              summary="Silence an endpoint or an owner for a while (owning team or admins)")
def silence(call: Call) -> dict[str, Any]:
    req: SilenceRequest = call.body(SilenceRequest)
    team = req.owner if req.endpoint is None else landing.policy_for(call.services.manifests, req.endpoint).owner
    call.services.authorizer.check(call.actor, [team], "silence alerts of")
    return silences.create(call.services.store, endpoint=req.endpoint, owner=req.owner, team=team or "",
                           duration=req.duration, reason=req.reason, actor=call.actor, now=call.now())


@router.route("/v1/silences", tag=TAG, summary="Silences in force (?owner=)")
def silences_list(call: Call) -> dict[str, Any]:
    return {"items": silences.listing(call.services.store, call.now(), call.arg("owner") or None)}


@router.route("/v1/silences/<sid>/end", ("POST",), tag=TAG, summary="End a silence now")
def silence_end(call: Call, sid: str) -> dict[str, Any]:
    call.services.authorizer.check(call.actor, [silences.team_of(call.services.store, sid)], "end silences of")
    return silences.end(call.services.store, sid, call.now())


@router.route("/v1/status", tag=TAG, summary="The unified view: every endpoint's state, worst first")
def status(call: Call) -> dict[str, Any]:
    from ferry.notify.port import failing_channels, stuck_deliveries

    owner = call.arg("owner") or None
    result = views.status(call.services.store, now=call.now(), owner=owner)
    result["channels"] = [c for c in failing_channels(call.services.store) if owner in (None, c.get("team"))]
    result["stuck_deliveries"] = [d for d in stuck_deliveries(call.services.store, call.now())
                                  if owner in (None, d.get("team"))]
    return result


def handle_partition_message(services: Services, data: bytes,
                             attributes: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The ``land`` function's body: one message of ``ferry-partitions``.

    Returns the landing, or None for a message that can never succeed (malformed, unknown endpoint,
    invalid partition): it is logged at ERROR and acknowledged rather than redelivered forever.
    Infrastructure errors propagate, so Pub/Sub redelivers. Idempotent: landing twice is a re-landing.
    """
    import json

    import pydantic

    from ferry import log
    from ferry.clock import requested_now
    from ferry.errors import FerryError, InfraError

    logger = log.get("datamon")
    svc = services
    try:
        msg = PartitionMessage.model_validate(json.loads(data))
    except (ValueError, pydantic.ValidationError) as exc:
        log.event(logger, log.ERROR, f"dropped malformed partition message: {exc}"[:500], labels={"component": "datamon-land"})
        return None
    try:
        now = requested_now((attributes or {}).get("ferry_now"), svc.clock, svc.settings.allow_clock_override,
                            "ferry_now")
        return landing.land(svc.store, msg.endpoint, msg.partition, now=now, records=msg.records, bytes=msg.bytes,
                            location=msg.location, source=msg.source, allow_future=msg.allow_future)
    except InfraError:
        raise
    except FerryError as exc:  # a bad ferry_now too: rejected, not silently replaced by the clock
        log.event(logger, log.ERROR, f"rejected landing {msg.endpoint} {msg.partition}: {exc.message}",
                  labels={"endpoint": msg.endpoint, "component": "datamon-land"}, details=exc.details)
        return None
