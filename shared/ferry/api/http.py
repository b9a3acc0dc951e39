"""The one HTTP serving path: a functions-framework (flask) request in, a JSON response out.

Every HTTP function — the whole API, and the functions that serve one subsystem's routes (ingest,
close, scale, evaluate, dashboard, styx-tick) — reads its body here, so the body cap holds for a
declared ``Content-Length`` and for a chunked body alike, then routes through ``Router.dispatch``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ferry.api.router import Router

if TYPE_CHECKING:
    from ferry.bootstrap import Services


def serve(request: Any, router: Router, services: Services, path: str | None = None) -> Any:
    """Serve one flask/werkzeug request with ``router``'s routes on ``services``.

    ``path`` pins the route, always POSTed (a scheduler job posts to the function's root URL).
    The body is read up to the largest limit of the routes served (the pinned one, or all of
    ``router``'s) and the settings' general one: over it nothing more is read and dispatch answers 413.
    """
    from flask import Response

    from ferry import log

    svc = services
    log.set_trace(request.headers.get("X-Cloud-Trace-Context"), svc.settings.project)
    served = [r for r in router.routes if r.path == path] if path else router.routes
    limit = max([svc.settings.max_body_bytes, *(r.max_body_bytes or 0 for r in served)])
    status, result = router.dispatch(svc, "POST" if path else request.method, path or request.path,
                                     dict(request.args.items()), dict(request.headers.items()),
                                     read_body(request, limit), request.content_length)
    return Response(json.dumps(result, default=str), status=status, mimetype="application/json")


def read_body(request: Any, limit: int) -> bytes:
    """The body, never buffering more than ``limit + 1`` bytes (enough for dispatch to see it is over)."""
    if request.content_length is not None:
        # Over the limit: nothing is read; dispatch answers 413 from the declared length.
        return b"" if request.content_length > limit else request.get_data(cache=False)  # type: ignore[no-any-return]
    return read_at_most(request.stream, limit + 1)  # chunked: never buffer past the limit


def read_at_most(stream: Any, n: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < n:
        chunk = stream.read(min(65536, n - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
