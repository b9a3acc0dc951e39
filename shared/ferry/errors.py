"""One error root for Ferry, with one mapping to HTTP status and CLI exit code (docs/architecture.md)."""

from __future__ import annotations

from typing import Any


class FerryError(Exception):
    """Base of every error Ferry raises on purpose."""

    http_status = 500
    exit_code = 4
    code = "internal"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(FerryError):
    http_status = 400
    exit_code = 3
    code = "bad_request"


class ValidationError(FerryError):
    """Input that is well-formed but invalid; details list every problem found."""

    http_status = 422
    exit_code = 3
    code = "invalid"


class Forbidden(FerryError):
    http_status = 403
    exit_code = 5
    code = "forbidden"


class Unauthenticated(FerryError):
    http_status = 401
    exit_code = 5
    code = "unauthenticated"


class NotFound(FerryError):
    http_status = 404
    exit_code = 3
    code = "not_found"


class MethodNotAllowed(FerryError):
    http_status = 405
    exit_code = 3
    code = "method_not_allowed"


class Conflict(FerryError):
    http_status = 409
    exit_code = 3
    code = "conflict"


class PayloadTooLarge(FerryError):
    http_status = 413
    exit_code = 3
    code = "too_large"


class InfraError(FerryError):
    """A dependency (Firestore, Pub/Sub, Cloud Run, ...) failed; safe to retry."""

    http_status = 503
    exit_code = 4
    code = "unavailable"


_BY_CODE = {cls.code: cls for cls in (BadRequest, ValidationError, Forbidden, Unauthenticated, NotFound,
                                       MethodNotAllowed,
                                       Conflict, PayloadTooLarge, InfraError, FerryError)}


def from_dict(body: dict[str, Any], status: int) -> FerryError:
    """Rebuild the domain error an API response carries (used by the CLI client)."""
    err = body.get("error", {}) if isinstance(body, dict) else {}
    cls = _BY_CODE.get(err.get("code", ""), None)
    if cls is None:
        cls = next((c for c in _BY_CODE.values() if c.http_status == status), FerryError)
    return cls(err.get("message", f"HTTP {status}"), err.get("details"))


def exit_code_for_status(status: int) -> int:
    if status in (401, 403):
        return 5
    if 400 <= status < 500:
        return 3
    return 4
