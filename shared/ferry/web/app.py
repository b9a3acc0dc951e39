"""The web view's pages, served by the ``dashboard`` function: server-side Jinja templates, one
stylesheet, no JavaScript. Read-only: every page is a GET; the JSON reads it also answers
(``/v1/status``, ``/v1/alerts``) are Datamon's own routes.

The pages go through a ``Router`` like the API's, so a page gets the same caller identity, clock
override, error model and request log as an API call; a page handler returns the HTML string.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import jinja2

from ferry.api.router import Call, Router
from ferry.errors import BadRequest, MethodNotAllowed
from ferry.web import lineage, views

if TYPE_CHECKING:
    from ferry.bootstrap import Services

HERE = Path(__file__).parent
STATIC = HERE / "assets"
pages = Router()

# One colour per state; the pages, the lineage graph and the tests share it.
COLOURS = {
    "late": "#d32f2f", "at_risk": "#f57c00", "warn": "#fbc02d", "pending": "#9e9e9e", "landed_late": "#7b1fa2",
    "ok": "#388e3c",
    # Styx instance states
    "ERROR": "#d32f2f", "FAILED": "#d32f2f", "DONE": "#388e3c", "RUNNING": "#1976d2", "SUBMITTED": "#1976d2",
    "SUBMITTING": "#1976d2", "PREPARE": "#1976d2", "TERMINATED": "#5c6bc0", "QUEUED": "#fbc02d",
    "NEW": "#9e9e9e",
}
LEGEND = [("ok", "landed on time"), ("landed_late", "landed after its deadline"), ("pending", "not due yet"),
          ("warn", "past its warning time"), ("at_risk", "an upstream partition is late"),
          ("late", "past its deadline, not landed")]


def colour(state: Any) -> str:
    return COLOURS.get(str(state), COLOURS.get(str(state).lower(), "#9e9e9e"))


def _dt(v: Any) -> datetime | None:
    if isinstance(v, datetime) or v is None:
        return v
    try:
        return datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    except ValueError:
        return None


def _human_seconds(seconds: float) -> str:
    s = int(abs(seconds))
    if s < 90:
        return f"{s} s"
    if s < 90 * 60:
        return f"{round(s / 60)} min"
    if s < 48 * 3600:
        return f"{s / 3600:.1f} h".replace(".0 h", " h")
    return f"{round(s / 86400)} d"


@jinja2.pass_context
def _ago(ctx: Any, t: Any) -> str:
    at = _dt(t)
    if at is None:
        return ""
    delta = (ctx["now"] - at).total_seconds()
    return f"{_human_seconds(delta)} ago" if delta >= 0 else f"in {_human_seconds(delta)}"


def _size(n: Any) -> str:
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True,
                         undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
def _iso(t: Any) -> str:
    at = _dt(t)
    return at.isoformat() if at else ""


ENV.filters.update(iso=_iso, ago=_ago, dt=_dt,
                   urlpart=lambda s: quote(str(s), safe=""), seconds=_human_seconds, size=_size,
                   duration=lambda d: str(d))
ENV.globals.update(colour=colour, LEGEND=LEGEND)


def render(call: Call, template: str, section: str, **data: Any) -> str:
    def query(**overrides: Any) -> str:
        args = {**call.query, **overrides}
        return urlencode({k: v for k, v in args.items() if v is not None})

    root = call.headers.get("X-Ferry-Root") or "/"
    return ENV.get_template(template).render(now=call.now(), root=root, section=section, query=query,
                                             refresh=call.arg("refresh"), **data)


def _limit(call: Call) -> int:
    return call.int_arg("limit", views.PAGE, 1, 200)


@pages.route("/", summary="Endpoints, worst first within a page")
def endpoints_page(call: Call) -> str:
    page = views.endpoints(call.services, call.now(), call.arg("owner") or None, call.arg("after"), _limit(call))
    return render(call, "endpoints.html", "endpoints", page=page, owner=call.arg("owner"), after=call.arg("after"),
                  limit=_limit(call))


@pages.route("/endpoints/<name>", summary="One endpoint")
def endpoint_page(call: Call, name: str) -> str:
    return render(call, "endpoint.html", "endpoint", e=views.endpoint(call.services, name, call.now()))


@pages.route("/lineage", summary="The lineage graph around an endpoint (or the first page of endpoints)")
def lineage_page(call: Call) -> str:
    focus = call.arg("endpoint") or None
    depth = call.int_arg("depth", 2, 1, 6)
    if focus:
        roots = [focus]
    else:
        roots = [r["endpoint"] for r in views.endpoints(call.services, call.now(), call.arg("owner") or None,
                                                          call.arg("after"), 20).items]
        depth = min(depth, 1)
    graph = lineage.neighbourhood(call.services, roots, call.now(), depth)
    drawing = lineage.svg(graph, COLOURS, f"endpoint:{focus}" if focus else None)
    return render(call, "lineage.html", "lineage", graph=graph, drawing=drawing, focus=focus, depth=depth,
                  truncated=graph.truncated)


@pages.route("/workflows", summary="Workflows")
def workflows_page(call: Call) -> str:
    page = views.workflows(call.services, call.arg("owner") or None, call.arg("after"), _limit(call))
    return render(call, "workflows.html", "workflows", page=page, owner=call.arg("owner"), limit=_limit(call))


@pages.route("/workflows/<name>", summary="One workflow: instances and backfills")
def workflow_page(call: Call, name: str) -> str:
    return render(call, "workflow.html", "workflow", w=views.workflow(call.services, name, _limit(call)))


@pages.route("/workflows/<name>/instances/<parameter>", summary="One instance: timeline and logs")
def instance_page(call: Call, name: str, parameter: str) -> str:
    return render(call, "instance.html", "instance",
                  i=views.instance(call.services, name, parameter, call.arg("execution")))


@pages.route("/eventtypes", summary="Event types: rate, backlog, workers, closing, dead letters")
def eventtypes_page(call: Call) -> str:
    page = views.event_types(call.services, call.now(), call.arg("after"), _limit(call))
    return render(call, "eventtypes.html", "eventtypes", page=page, limit=_limit(call))


@pages.route("/eventtypes/<name>", summary="One event type with samples of what was set aside")
def eventtype_page(call: Call, name: str) -> str:
    return render(call, "eventtype.html", "eventtypes", t=views.event_type(call.services, name, call.now()))


def respond(services: Services, method: str, path: str, query: dict[str, str],
            headers: dict[str, str]) -> tuple[int, str, str]:
    """One request to the web view: (status, content type, body). Never raises."""
    if path.startswith("/assets/"):
        name = path[len("/assets/"):]
        file = STATIC / name
        if "/" in name or not file.is_file():
            return 404, "text/plain", "not found"
        return 200, "text/css" if name.endswith(".css") else "application/octet-stream", file.read_text()
    if path.startswith("/v1/"):
        from ferry.datamon.api import router as datamon

        if method != "GET":
            status, result = MethodNotAllowed("the dashboard is read-only").http_status, \
                MethodNotAllowed("the dashboard is read-only").to_dict()
        else:
            status, result = datamon.dispatch(services, method, path, query, headers, b"")
        import json

        return status, "application/json", json.dumps(result, default=str)
    if method != "GET":
        status, result = 405, MethodNotAllowed("the dashboard is read-only").to_dict()
    else:
        status, result = pages.dispatch(services, method, path, query, headers, b"")
    if isinstance(result, str):
        return status, "text/html", result
    error = (result or {}).get("error") or {}
    call = Call(services, method, path, {}, headers, b"", None)
    try:
        html = render(call, "error.html", "error", status=status, message=error.get("message", ""))
    except BadRequest:
        html = f"<h1>{status}</h1><p>{error.get('message', '')}</p>"
    return status, "text/html", html


def dashboard(request: Any, services: Services) -> Any:
    """The ``dashboard`` function's body: a flask request in, a flask response out."""
    from flask import Response

    from ferry import log

    if request.method not in ("GET", "HEAD"):  # the dashboard serves read routes only
        import json

        error = {"error": {"code": "method_not_allowed", "message": "the dashboard serves read routes only",
                           "details": None}}
        return Response(json.dumps(error), status=405, mimetype="application/json")
    if request.path.startswith("/v1/"):  # Datamon's JSON routes: the one HTTP serving path (capped body)
        from ferry.api.http import serve
        from ferry.datamon.api import router as datamon

        return serve(request, datamon, services)
    log.set_trace(request.headers.get("X-Cloud-Trace-Context"), services.settings.project)
    started = time.monotonic()
    headers = dict(request.headers.items())
    headers.setdefault("X-Ferry-Root", (request.script_root or "") + "/")
    status, ctype, body = respond(services, request.method, request.path, dict(request.args.items()), headers)
    resp = Response(body, status=status, mimetype=ctype)
    resp.headers["Server-Timing"] = f"app;dur={(time.monotonic() - started) * 1000:.1f}"
    return resp
