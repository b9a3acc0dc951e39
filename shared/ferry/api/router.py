"""Routing inside an HTTP function: werkzeug's URL map, one error model, an OpenAPI document.

Handlers take a ``Call`` (services, body, query, caller) and path parameters, and return a body
(status 200) or ``(status, body)``. Domain errors become ``{"error": {code, message, details}}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pydantic
from werkzeug.exceptions import MethodNotAllowed as RouteMethodNotAllowed
from werkzeug.exceptions import NotFound as RouteNotFound
from werkzeug.routing import Map, Rule

from ferry import log
from ferry.api.identity import admit_operational, identifier_for
from ferry.clock import requested_now
from ferry.domain.names import check_path_parameters
from ferry.errors import BadRequest, FerryError, MethodNotAllowed, NotFound, PayloadTooLarge, ValidationError

if TYPE_CHECKING:
    from ferry.bootstrap import Services

logger = log.get("api")
Handler = Callable[..., Any]


@dataclass
class Call:
    services: Services
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw_body: bytes
    actor: str | None
    operator: bool = False  # a declared operational caller (scheduler, push, the local stack's secret)
    _json: Any = field(default=None, repr=False)

    def json(self) -> Any:
        if self._json is None:
            if not self.raw_body:
                raise BadRequest("a JSON body is required")
            try:
                self._json = json.loads(self.raw_body)
            except ValueError as exc:
                raise BadRequest(f"the body is not valid JSON: {exc}") from None
            except RecursionError:
                raise BadRequest("the body nests objects and arrays deeper than the parser allows") from None
        return self._json

    def body(self, model: type[pydantic.BaseModel]) -> Any:
        """The body validated against ``model`` (unknown fields rejected by the model's config)."""
        try:
            return model.model_validate(self.json())
        except pydantic.ValidationError as exc:
            details = [{"field": ".".join(str(p) for p in e["loc"]) or "(body)",
                        "reason": "unknown field" if e["type"] == "extra_forbidden" else e["msg"]}
                       for e in exc.errors(include_url=False)]
            unknown = [d["field"] for d in details if d["reason"] == "unknown field"]
            message = "invalid request body"
            if unknown:
                allowed = ", ".join(f.alias or name for name, f in model.model_fields.items())
                message += f": unknown field(s) {', '.join(unknown)} (this body takes: {allowed})"
            raise ValidationError(message, details) from None

    def now(self) -> datetime:
        """The service clock; in a local stack started with FERRY_ALLOW_CLOCK_OVERRIDE=1 a request may
        say ``X-Ferry-Now: <ISO instant>`` (tests and demos that travel in time)."""
        raw = {k.lower(): v for k, v in self.headers.items()}.get("x-ferry-now")
        return requested_now(raw, self.services.clock, self.services.settings.allow_clock_override)

    def arg(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name, default)

    def int_arg(self, name: str, default: int, lo: int = 1, hi: int = 1000) -> int:
        raw = self.query.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise BadRequest(f"query parameter {name} must be an integer") from None
        if not lo <= value <= hi:
            raise BadRequest(f"query parameter {name} must be between {lo} and {hi}")
        return value


@dataclass(frozen=True)
class Route:
    path: str
    methods: tuple[str, ...]
    handler: Handler
    summary: str
    body: type[pydantic.BaseModel] | None = None
    tag: str = "core"
    max_body_bytes: int | None = None
    # An operational route (tick, evaluate, ...): the infra/ function that owns it; only declared
    # callers (scheduler, push, the local stack's secret) may call it (ferry.api.identity).
    operational: str | None = None


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []
        self._map: Map | None = None

    def route(self, path: str, methods: tuple[str, ...] = ("GET",), summary: str = "",
              body: type[pydantic.BaseModel] | None = None, tag: str = "core",
              max_body_bytes: int | None = None, operational: str | None = None) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.routes.append(Route(path, methods, fn, summary or (fn.__doc__ or "").strip().split("\n")[0],
                                     body, tag, max_body_bytes, operational))
            self._map = None
            return fn
        return register

    @property
    def url_map(self) -> Map:
        if self._map is None:
            self._map = Map([Rule(r.path, methods=list(r.methods), endpoint=i) for i, r in enumerate(self.routes)],
                            strict_slashes=False)
        return self._map

    def dispatch(self, services: Services, method: str, path: str, query: dict[str, str],
                 headers: dict[str, str], body: bytes, content_length: int | None = None) -> tuple[int, Any]:
        """Route one request; returns (status, JSON-able body). Never raises."""
        started = time.monotonic()
        status, result = 500, None
        try:
            adapter = self.url_map.bind("ferry", "/")
            try:
                index, params = adapter.match(path, method=method)
            except RouteNotFound:
                raise NotFound(f"no route {method} {path}") from None
            except RouteMethodNotAllowed:
                raise MethodNotAllowed(f"method {method} not allowed on {path}") from None
            route = self.routes[index]
            check_path_parameters(params)
            limit = route.max_body_bytes or services.settings.max_body_bytes
            if (content_length or len(body)) > limit:
                raise PayloadTooLarge(f"request body over {limit} bytes")
            identifier = identifier_for(services)
            caller = identifier.caller(headers, query)
            if route.operational:
                admit_operational(route.operational, caller, identifier.config, path)
            call = Call(services, method, path, query, headers, body, caller.email, caller.operator)
            out = route.handler(call, **params)
            status, result = (out if isinstance(out, tuple) else (200, out))
        except FerryError as exc:
            status, result = exc.http_status, exc.to_dict()
        except Exception as exc:  # the error model holds for bugs too; the log has the stack
            logger.exception("unhandled error in %s %s", method, path)
            status, result = 500, {"error": {"code": "internal", "message": f"internal error: {answered(exc)}",
                                             "details": None}}
        log.event(logger, log.INFO if status < 500 else 40, f"{method} {path} {status}",
                  httpRequest={"requestMethod": method, "requestUrl": path, "status": status,
                               "latency": f"{time.monotonic() - started:.3f}s"})
        return status, result


# Which component an unexpected error came from, by the module that raised it (and where it is).
_COMPONENTS = (("google/cloud/firestore", "Firestore", "FIRESTORE_EMULATOR_HOST"),
               ("google/cloud/pubsub", "Pub/Sub", "PUBSUB_EMULATOR_HOST"),
               ("google/cloud/storage", "Cloud Storage", "STORAGE_EMULATOR_HOST"),
               ("google/cloud/run", "Cloud Run", None))


def answered(exc: BaseException) -> str:
    """``Firestore at 127.0.0.1:8791 answered MethodNotImplemented: …`` — which component answered
    what, for an unexpected error (a client that reached the wrong server shows at once)."""
    import os
    import traceback

    what = f"{type(exc).__name__}: {str(exc)[:300]}" if str(exc) else type(exc).__name__
    files = [f.filename.replace("\\", "/") for f in traceback.extract_tb(exc.__traceback__)]
    for marker, name, env in _COMPONENTS:
        if any(marker in f for f in files):
            where = os.environ.get(env, "") if env else ""
            return f"{name} at {where or 'Google Cloud'} answered {what}"
    return what


def actor_from(headers: dict[str, str], services: Services) -> str | None:
    """The caller: X-Ferry-User locally; in the cloud the identity the platform verified.

    Cloud Functions with IAM verify the ID token before the function runs; behind it, the caller's
    email is taken from the token's payload, which the platform forwards unmodified in Authorization.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    if services.settings.identity == "header":
        user = lowered.get("x-ferry-user")
        return user.strip() or None if user else None
    auth = lowered.get("authorization", "")
    if auth.lower().startswith("bearer "):
        import base64

        try:
            payload = auth.split()[1].split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            return claims.get("email")
        except (IndexError, ValueError):
            return None
    return None
