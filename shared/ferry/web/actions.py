"""Actions from the web view: each is one call of the HTTP API, the very call the CLI makes.

A form on a page posts to ``/actions/<name>``; the dashboard turns the form into the API request of
that action (:data:`ACTIONS`) and dispatches it through the API's own router with the caller's
identity headers — so the ownership rules, validation and error model are the API's, not a copy.
The answer comes back as a flash message on the page the form was on (a 303 redirect).

Cross-site request forgery: every form carries the value of the ``ferry_csrf`` cookie (double
submit). The cookie is ``SameSite=Strict`` and ``HttpOnly``: another site can neither read it nor make
the browser send it with a cross-site post; a post whose ``Origin`` (or ``Sec-Fetch-Site``) says
another site is refused as well. A token is random per browser, so nothing needs a server secret.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from ferry.errors import BadRequest, FerryError, Forbidden

CSRF_COOKIE = "ferry_csrf"
CSRF_FIELD = "csrf"
FLASH_COOKIE = "ferry_flash"
Form = Mapping[str, str]


def _flag(form: Form, name: str) -> bool:
    return form.get(name, "").lower() in ("1", "on", "true", "yes")


def _text(form: Form, name: str, default: str = "") -> str:
    return (form.get(name) or default).strip()


def _int(form: Form, name: str, default: int) -> int:
    raw = _text(form, name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, not {raw!r}") from None


@dataclass(frozen=True)
class Action:
    """One action: the API route it calls (path fields from the form) and the JSON body it sends."""

    name: str
    title: str                       # what the page's button says
    path: str                        # the API path, {field} from the form (URL-quoted)
    body: Callable[[Form], dict[str, Any]]
    done: str                        # the flash message on success, {field} from the form

    def request(self, form: Form) -> tuple[str, bytes]:
        fields = {}
        for key in _path_fields(self.path):
            value = _text(form, key)
            if not value:
                raise BadRequest(f"{self.name}: {key} is required")
            fields[key] = quote(value, safe="")
        return self.path.format(**fields), json.dumps(self.body(form)).encode()


def _path_fields(path: str) -> list[str]:
    import string

    return [f for _, f, _, _ in string.Formatter().parse(path) if f]


INSTANCE = "/v1/workflows/{workflow}/instances/{parameter}"
_REASON = "from the web view"

ACTIONS: dict[str, Action] = {a.name: a for a in (
    Action("trigger", "Trigger", f"{INSTANCE}/trigger", lambda f: {"ignore_deps": _flag(f, "ignore_deps")},
           "triggered {workflow} {parameter}"),
    Action("retry", "Retry", f"{INSTANCE}/retry", lambda f: {}, "retrying {workflow} {parameter}"),
    Action("halt", "Halt", f"{INSTANCE}/halt", lambda f: {"reason": _text(f, "reason", _REASON)},
           "halted {workflow} {parameter}"),
    Action("mark-done", "Mark done", f"{INSTANCE}/mark-done", lambda f: {"reason": _text(f, "reason", _REASON)},
           "marked {workflow} {parameter} done"),
    Action("backfill", "Start backfill", "/v1/backfills",
           lambda f: {"workflow": _text(f, "workflow"), "start": _text(f, "start"), "end": _text(f, "end"),
                      "concurrency": _int(f, "concurrency", 1), "reverse": _flag(f, "reverse"),
                      "description": _text(f, "description")},
           "backfill of {workflow} created"),
    Action("reprocess", "Re-run downstream", "/v1/reprocessings",
           lambda f: {"endpoint": _text(f, "endpoint"), "start": _text(f, "start"), "end": _text(f, "end"),
                      "concurrency": _int(f, "concurrency", 1), "description": _text(f, "description")},
           "downstream of {endpoint} re-running"),
    Action("backfill-halt", "Halt backfill", "/v1/backfills/{backfill}/halt",
           lambda f: {"graceful": _flag(f, "graceful")}, "backfill {backfill} halted"),
    Action("backfill-retry", "Retry failed", "/v1/backfills/{backfill}/retry", lambda f: {},
           "backfill {backfill}: failed instances re-queued"),
    Action("ack", "Ack", "/v1/alerts/{alert}/ack", lambda f: {}, "incident acknowledged"),
    Action("silence", "Silence", "/v1/silences",
           lambda f: {"endpoint": _text(f, "endpoint"), "for": _text(f, "for", "PT2H"),
                      "reason": _text(f, "reason", _REASON)},
           "{endpoint} silenced"),
    Action("unsilence", "End silence", "/v1/silences/{silence}/end", lambda f: {}, "silence ended"),
    Action("invalidate", "Invalidate", "/v1/endpoints/{endpoint}/partitions/{partition}/invalidate",
           lambda f: {"reason": _text(f, "reason", _REASON)}, "{endpoint} {partition} invalidated"),
    Action("replay", "Replay", "/v1/eventtypes/{eventtype}/replay",
           lambda f: {"from": _text(f, "source", "quarantine")}, "{eventtype}: replay of {source} done"),
)}


def new_token() -> str:
    return secrets.token_urlsafe(24)


def check_csrf(form: Form, cookies: Mapping[str, str], headers: Mapping[str, str]) -> None:
    """Raise Forbidden unless the post comes from one of this site's own pages (see the module doc)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    site = lowered.get("sec-fetch-site")
    if site and site not in ("same-origin", "none"):
        raise Forbidden(f"a {site} form may not act here (cross-site request refused)")
    origin, host = lowered.get("origin"), lowered.get("x-forwarded-host") or lowered.get("host")
    if origin and origin != "null" and host and urlsplit(origin).netloc != host:
        raise Forbidden(f"a form from {origin} may not act here (cross-site request refused)")
    cookie, sent = cookies.get(CSRF_COOKIE, ""), form.get(CSRF_FIELD, "")
    if not cookie or not sent or not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise Forbidden("the form's anti-forgery token is missing or stale: reload the page and try again")


def safe_next(target: str | None, default: str) -> str:
    """Where to go after an action: a path of this site only (never another host)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str
    status: int
    result: Any = None


def perform(services: Any, name: str, form: Form, headers: Mapping[str, str],
            dispatch: Callable[..., tuple[int, Any]]) -> Outcome:
    """Run action ``name`` as the API would for the caller these headers identify."""
    action = ACTIONS.get(name)
    if action is None:
        return Outcome(False, f"no action {name!r}", 404)
    try:
        path, body = action.request(form)
    except FerryError as exc:
        return Outcome(False, exc.message, exc.http_status)
    passed = {k: v for k, v in headers.items()
              if k.lower() in ("x-ferry-user", "authorization", "x-serverless-authorization",
                               "x-goog-iap-jwt-assertion", "x-ferry-now", "host")}
    passed["Content-Type"] = "application/json"
    status, result = dispatch(services, "POST", path, {}, passed, body)
    if status < 300:
        try:
            message = action.done.format_map(_Fields(form))
        except (KeyError, ValueError):
            message = f"{action.title}: done"
        return Outcome(True, message, status, result)
    error = (result or {}).get("error") or {} if isinstance(result, dict) else {}
    return Outcome(False, f"{action.title} refused: {error.get('message') or status}", status, result)


class _Fields(dict[str, str]):
    def __init__(self, form: Form) -> None:
        super().__init__({k: v for k, v in form.items() if k != CSRF_FIELD})

    def __missing__(self, key: str) -> str:
        return ""
