"""The HTTP API (SPEC §7): every subsystem's routes in one router, served by HTTP functions."""

from __future__ import annotations

from typing import Any

from ferry.api import core
from ferry.api.router import Call, Router
from ferry.datamon import api as datamon_api
from ferry.gabo import api as gabo_api
from ferry.styx import api as styx_api

router = Router()
# Subsystems add their routers to this list (import order = registration order).
for _module in (core, gabo_api, datamon_api, styx_api):
    router.routes.extend(_module.router.routes)


@router.route("/v1/openapi.json", summary="This API's OpenAPI document")
def openapi(call: Call) -> dict[str, Any]:
    from ferry.api.openapi import document

    return document(router.routes)


def handle(request: Any) -> Any:
    """Serve one flask/werkzeug request (what functions-framework hands an HTTP function)."""
    import json

    from flask import Response

    from ferry import log
    from ferry.wiring import services

    svc = services()
    log.set_trace(request.headers.get("X-Cloud-Trace-Context"), svc.settings.project)
    limit = svc.settings.max_body_bytes
    if (request.content_length or 0) > limit:
        body = b""
    else:
        body = request.get_data(cache=False)  # read at most what content_length says
    status, result = router.dispatch(svc, request.method, request.path, dict(request.args.items()),
                                     dict(request.headers.items()), body, request.content_length)
    return Response(json.dumps(result, default=str), status=status, mimetype="application/json")
