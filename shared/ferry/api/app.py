"""The whole HTTP API (docs/architecture.md): the core routes and every subsystem's, in one router,
served by the ``api`` function.

The subsystems' route modules are listed here, by hand: a new one is added to ``ROUTERS`` (their
order is the order of the OpenAPI document).
"""

from __future__ import annotations

from typing import Any

from ferry.api import core
from ferry.api.router import Call, Router
from ferry.datamon import api as datamon_api
from ferry.gabo import api as gabo_api
from ferry.styx import api as styx_api

ROUTERS = (core.router, gabo_api.router, datamon_api.router, styx_api.router)

router = Router()
for _routes in ROUTERS:
    router.routes.extend(_routes.routes)


@router.route("/v1/openapi.json", summary="This API's OpenAPI document")
def openapi(call: Call) -> dict[str, Any]:
    from ferry.api.openapi import document

    return document(router.routes)


def handle(request: Any) -> Any:
    """Serve one flask/werkzeug request (what functions-framework hands an HTTP function)."""
    from ferry.api.http import serve
    from ferry.bootstrap import process_services

    return serve(request, router, process_services())
