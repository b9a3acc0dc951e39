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
    from ferry.bootstrap import process_services

    svc = process_services()
    log.set_trace(request.headers.get("X-Cloud-Trace-Context"), svc.settings.project)
    limit = max([svc.settings.max_body_bytes, *(r.max_body_bytes or 0 for r in router.routes)])
    if request.content_length is not None:
        # Over the limit: nothing is read; dispatch answers 413 from the declared length.
        body = b"" if request.content_length > limit else request.get_data(cache=False)
    else:
        body = _read_at_most(request.stream, limit + 1)  # chunked: never buffer past the limit
    status, result = router.dispatch(svc, request.method, request.path, dict(request.args.items()),
                                     dict(request.headers.items()), body, request.content_length)
    return Response(json.dumps(result, default=str), status=status, mimetype="application/json")


def _read_at_most(stream: Any, n: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < n:
        chunk = stream.read(min(65536, n - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
