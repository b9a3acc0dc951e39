"""The web view's pages, served by the ``dashboard`` function: server-side Jinja templates, one
stylesheet, htmx for live parts. Every page is a GET; actions are forms posted to ``/actions/NAME``,
each run as the API call the CLI makes (``ferry.web.actions``); the JSON reads it also answers
(``/v1/status``, ``/v1/alerts``) are Datamon's own routes.

The pages go through a ``Router`` like the API's, so a page gets the same caller identity, clock
override, error model and request log as an API call; a page handler returns the HTML string.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlencode

import jinja2

from ferry.api.router import Call, Router
from ferry.domain.periods import partitioning
from ferry.errors import BadRequest, FerryError, MethodNotAllowed
from ferry.web import actions, lineage, views

if TYPE_CHECKING:
    from ferry.bootstrap import Services

HERE = Path(__file__).parent
STATIC = HERE / "assets"
pages = Router()
USER_COOKIE = "ferry_user"        # locally only: whom the browser acts as (header identity)
CSRF_HEADER = "X-Ferry-Web-Csrf"  # handed from handle() to the templates, never read from a client
FLASH_HEADER = "X-Ferry-Web-Flash"
MAX_FORM_BYTES = 64 * 1024

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


STATE_FILTER = ("late", "at_risk", "warn", "landed_late", "pending", "ok")


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


def _utc(t: Any) -> str:
    at = _dt(t)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at else ""


ENV.filters.update(iso=_iso, utc=_utc, ago=_ago, dt=_dt,
                   urlpart=lambda s: quote(str(s), safe=""), seconds=_human_seconds, size=_size,
                   duration=lambda d: str(d))
ENV.globals.update(colour=colour, ink=lambda s: lineage.ink(colour(s)), LEGEND=LEGEND)


def render(call: Call, template: str, section: str, **data: Any) -> str:
    def query(**overrides: Any) -> str:
        args = {**call.query, **overrides}
        return urlencode({k: v for k, v in args.items() if v is not None})

    root = call.headers.get("X-Ferry-Root") or "/"
    flash = None
    if call.headers.get(FLASH_HEADER):
        try:
            flash = json.loads(call.headers[FLASH_HEADER])
        except ValueError:
            flash = None
    here = call.path + (f"?{urlencode(call.query)}" if call.query else "")
    return ENV.get_template(template).render(now=call.now(), root=root, section=section, query=query,
                                             refresh=call.arg("refresh"), viewer=call.actor,
                                             local=call.services.settings.identity == "header",
                                             csrf=call.headers.get(CSRF_HEADER, ""), flash=flash, here=here,
                                             can=_permissions(call), q=call.arg("q") or "", **data)


def _permissions(call: Call) -> Any:
    """``can(owner)`` in a template: (allowed, why not) for the viewer acting on what ``owner`` owns —
    the Authorizer's own decision, so a disabled button and a refused call always agree."""
    from ferry.errors import Forbidden, Unauthenticated

    seen: dict[str | None, tuple[bool, str]] = {}

    def can(owner: str | None) -> tuple[bool, str]:
        if owner not in seen:
            try:
                call.services.authorizer.check(call.actor, [owner])
                seen[owner] = (True, "")
            except (Forbidden, Unauthenticated) as exc:
                seen[owner] = (False, f"owned by {owner}: {exc.message}")
        return seen[owner]

    return can


def _limit(call: Call) -> int:
    return call.int_arg("limit", views.PAGE, 1, 200)


@pages.route("/", summary="Endpoints, worst first within a page")
def endpoints_page(call: Call) -> str:
    state = call.arg("state") or None
    if state and state not in STATE_FILTER:
        raise BadRequest(f"state must be one of {', '.join(STATE_FILTER)}")
    page = views.endpoints(call.services, call.now(), call.arg("owner") or None, call.arg("after"), _limit(call), state)
    return render(call, "endpoints.html", "endpoints", page=page, owner=call.arg("owner"), after=call.arg("after"),
                  limit=_limit(call), state_filter=state, states=STATE_FILTER)


@pages.route("/endpoints/<name>", summary="One endpoint")
def endpoint_page(call: Call, name: str) -> str:
    return render(call, "endpoint.html", "endpoint",
                  e=views.endpoint(call.services, name, call.now(), call.arg("before") or None))


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
    t = views.event_type(call.services, name, call.now())
    history = views.event_type_history(call.services, name, partitioning(t["spec"].partitioning), call.now())
    charts = [views.bar_chart(history, key, title, colour, unit) for key, title, colour, unit in (
        ("events", "events delivered per closed period", "#1565c0", ""),
        ("late", "late events per closed period", "#7b1fa2", ""),
        ("duplicates", "duplicates dropped per closed period", "#5d4037", ""),
        ("delay_seconds", "closing delay (closed at − end of period)", "#ef6c00", " s"))]
    return render(call, "eventtype.html", "eventtypes", t=t, history=history, charts=charts)


@pages.route("/search", summary="Search names of endpoints, workflows, event types, teams; instance ids")
def search_page(call: Call) -> str:
    q = (call.arg("q") or "").strip()
    teams: list[str] | None = None
    if call.arg("mine"):
        teams = sorted(_teams_of(call)) if call.actor else []
    found = views.search(call.services, q, teams)
    return render(call, "search.html", "search", found=found, mine=bool(call.arg("mine")), teams=teams or [])


def _teams_of(call: Call) -> set[str]:
    """The viewer's teams: the Team manifests naming them (one bounded query each way)."""
    from ferry.store.base import Where
    from ferry.store.manifests import collection

    store = call.services.store
    names = {i for i, _ in store.query(collection("Team"), [Where("manifest.spec.members", "array_contains", call.actor)],
                                       limit=50)}
    names |= {i for i, _ in store.query(collection("Team"), [Where("manifest.spec.admins", "array_contains", call.actor)],
                                        limit=50)}
    return names


@pages.route("/backfills/<backfill_id>", summary="One backfill: per-partition states, halt and retry")
def backfill_page(call: Call, backfill_id: str) -> str:
    return render(call, "backfill.html", "workflows", b=views.backfill(call.services, backfill_id))


@pages.route("/workflows/<name>/backfill", summary="Launch a backfill: a form and a preview of what it runs")
def backfill_form(call: Call, name: str) -> str:
    reverse = (call.arg("reverse") or "") in ("1", "on", "true")
    pv = views.backfill_preview(call.services, name, call.arg("start") or "", call.arg("end") or "", reverse,
                                call.arg("downstream_of") or None)
    return render(call, "backfill_form.html", "workflows", pv=pv, concurrency=call.arg("concurrency") or "1",
                  description=call.arg("description") or "")


@dataclass
class Reply:
    """One answer of the web view: status, content type, body, and headers (cookies, redirects)."""

    status: int
    content_type: str
    body: str
    headers: list[tuple[str, str]] = field(default_factory=list)


def _cookie(name: str, value: str, secure: bool, max_age: int | None = None, http_only: bool = True) -> str:
    parts = [f"{name}={quote(value, safe='')}", "Path=/", "SameSite=Strict"]
    if http_only:
        parts.append("HttpOnly")
    if secure:
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts)


def _local_identity(services: Services, headers: dict[str, str], cookies: dict[str, str]) -> dict[str, str]:
    """Locally (header identity) a browser sends no X-Ferry-User: it acts as the ``ferry_user`` cookie
    (``act as`` on the page) or else the stack's default identity, as the CLI does. In the cloud the
    identity is the verified one only (ID token or the proxy's signed header)."""
    if services.settings.identity != "header" or any(k.lower() == "x-ferry-user" for k in headers):
        return headers
    user = cookies.get(USER_COOKIE) or os.environ.get("FERRY_DEFAULT_USER", "")
    return {**headers, "X-Ferry-User": user} if user else headers


def handle(services: Services, method: str, path: str, query: dict[str, str], headers: dict[str, str],
           form: dict[str, str] | None = None, cookies: dict[str, str] | None = None) -> Reply:
    """One request to the web view. Never raises."""
    cookies = {k: unquote(v) for k, v in (cookies or {}).items()}  # set percent-encoded (_cookie)
    secure = headers.get("X-Forwarded-Proto", headers.get("x-forwarded-proto", "")) == "https"
    if path.startswith("/assets/"):
        name = path[len("/assets/"):]
        file = STATIC / name
        if "/" in name or not file.is_file():
            return Reply(404, "text/plain", "not found")
        ctype = {".css": "text/css", ".js": "text/javascript"}.get(file.suffix, "application/octet-stream")
        return Reply(200, ctype, file.read_text(), [("Cache-Control", "max-age=300")])
    headers = _local_identity(services, headers, cookies)
    if path.startswith("/v1/"):
        from ferry.datamon.api import router as datamon

        if method != "GET":
            status, result = MethodNotAllowed("the dashboard is read-only").http_status, \
                MethodNotAllowed("the dashboard is read-only").to_dict()
        else:
            status, result = datamon.dispatch(services, method, path, query, headers, b"")
        return Reply(status, "application/json", json.dumps(result, default=str))
    if method == "POST" and (path.startswith("/actions/") or path == "/session"):
        return _post(services, path, query, headers, form or {}, cookies, secure)
    extra: list[tuple[str, str]] = []
    token = cookies.get(actions.CSRF_COOKIE) or ""
    if not token:
        token = actions.new_token()
        extra.append(("Set-Cookie", _cookie(actions.CSRF_COOKIE, token, secure)))
    flash = cookies.get(actions.FLASH_COOKIE)
    if flash:
        extra.append(("Set-Cookie", _cookie(actions.FLASH_COOKIE, "", secure, max_age=0)))
    inner = {**headers, CSRF_HEADER: token, FLASH_HEADER: flash or ""}
    if method != "GET":
        status, result = 405, MethodNotAllowed("pages answer GET; actions are posted to /actions/NAME").to_dict()
    else:
        status, result = pages.dispatch(services, method, path, query, inner, b"")
    if isinstance(result, str):
        return Reply(status, "text/html", result, extra)
    error = (result or {}).get("error") or {}
    call = Call(services, method, path, {}, inner, b"", None)
    try:
        html = render(call, "error.html", "error", status=status, message=error.get("message", ""))
    except BadRequest:
        html = f"<h1>{status}</h1><p>{error.get('message', '')}</p>"
    return Reply(status, "text/html", html, extra)


def _post(services: Services, path: str, query: dict[str, str], headers: dict[str, str], form: dict[str, str],
          cookies: dict[str, str], secure: bool) -> Reply:
    """An action (or, locally, ``act as``): checked against forgery, run as the API, answered with a
    redirect back to the page with the outcome as a flash message."""
    back = actions.safe_next(form.get("next"), "/")
    root = headers.get("X-Ferry-Root") or "/"
    try:
        actions.check_csrf(form, cookies, headers)
    except FerryError as exc:
        return Reply(exc.http_status, "text/plain", exc.message)
    if path == "/session":
        if services.settings.identity != "header":
            return Reply(404, "text/plain", "signing in is done by the proxy in front of Ferry")
        user = form.get("user", "").strip()
        cookie = _cookie(USER_COOKIE, user, secure, max_age=None if user else 0)
        return Reply(303, "text/plain", "", [("Location", root.rstrip("/") + back), ("Set-Cookie", cookie)])
    from ferry.api.app import router as api

    outcome = actions.perform(services, path[len("/actions/"):], form, headers, api.dispatch)
    flash = json.dumps({"ok": outcome.ok, "message": outcome.message})
    if "application/json" in headers.get("Accept", headers.get("accept", "")):
        return Reply(outcome.status, "application/json", json.dumps({"ok": outcome.ok, "message": outcome.message,
                                                                     "result": outcome.result}, default=str))
    return Reply(303, "text/plain", "", [("Location", root.rstrip("/") + back),
                                         ("Set-Cookie", _cookie(actions.FLASH_COOKIE, flash, secure))])


def respond(services: Services, method: str, path: str, query: dict[str, str],
            headers: dict[str, str]) -> tuple[int, str, str]:
    """One request to the web view: (status, content type, body). Never raises."""
    reply = handle(services, method, path, query, headers)
    return reply.status, reply.content_type, reply.body


def dashboard(request: Any, services: Services) -> Any:
    """The ``dashboard`` function's body: a flask request in, a flask response out."""
    from flask import Response

    from ferry import log

    if request.path.startswith("/v1/"):  # Datamon's JSON routes: the one HTTP serving path (capped body)
        from ferry.api.http import serve
        from ferry.datamon.api import router as datamon

        if request.method not in ("GET", "HEAD"):
            error = {"error": {"code": "method_not_allowed", "message": "the dashboard serves read routes only",
                               "details": None}}
            return Response(json.dumps(error), status=405, mimetype="application/json")
        return serve(request, datamon, services)
    if request.method not in ("GET", "HEAD", "POST"):
        return Response("method not allowed", status=405, mimetype="text/plain")
    if request.method == "POST" and (request.content_length or 0) > MAX_FORM_BYTES:
        return Response("form too large", status=413, mimetype="text/plain")
    log.set_trace(request.headers.get("X-Cloud-Trace-Context"), services.settings.project)
    started = time.monotonic()
    headers = dict(request.headers.items())
    headers.setdefault("X-Ferry-Root", (request.script_root or "") + "/")
    form = dict(request.form.items()) if request.method == "POST" else None
    reply = handle(services, request.method, request.path, dict(request.args.items()), headers, form,
                   dict(request.cookies.items()))
    resp = Response(reply.body, status=reply.status, mimetype=reply.content_type)
    for name, value in reply.headers:
        resp.headers.add(name, value)
    resp.headers["Server-Timing"] = f"app;dur={(time.monotonic() - started) * 1000:.1f}"
    resp.headers["X-Frame-Options"] = "DENY"
    return resp
