"""Pub/Sub push deliveries to a function, admitted only from the declared caller.

The ``deliver`` and ``land`` functions are HTTP functions that read the push envelope
(``{"message": {"data", "attributes", "messageId"}, "subscription"}``) themselves, so that, like every
operational route, they see who calls: in the cloud the push subscription's service account (a verified
ID token), locally the stack's secret in the push endpoint's query. 2xx acks; any other status makes
Pub/Sub redeliver (and dead-letter after the subscription's attempts).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from ferry import log
from ferry.api.http import read_body
from ferry.api.identity import admit_operational, identifier_for
from ferry.errors import FerryError, PayloadTooLarge
from ferry.infra.pubsub import PROBE_ATTRIBUTE

logger = log.get("push")
# Pub/Sub's largest message (10 MB) base64-encoded in its JSON envelope fits; a chunked body is never
# buffered past it (the one capped reader of every HTTP function, ``http.read_body``).
MAX_PUSH_BODY = 16 * 1024 * 1024


def serve_push(request: Any, owner: str, handle: Callable[[Any, bytes, dict[str, str]], Any]) -> Any:
    """Admit the push of function ``owner``, decode its message and run ``handle(services, data,
    attributes)``. An exception from ``handle`` propagates (functions-framework answers 500: redelivery)."""
    from flask import Response

    from ferry.bootstrap import process_services

    svc = process_services()
    log.set_trace(request.headers.get("X-Cloud-Trace-Context"), svc.settings.project)
    identifier = identifier_for(svc)
    try:
        caller = identifier.caller(dict(request.headers.items()), dict(request.args.items()))
        admit_operational(owner, caller, identifier.config, f"the {owner} push")
        raw = read_body(request, MAX_PUSH_BODY)
        if (request.content_length or len(raw)) > MAX_PUSH_BODY:
            raise PayloadTooLarge(f"push body over {MAX_PUSH_BODY} bytes")
        envelope = json.loads(raw) if raw else None
        message = envelope.get("message") if isinstance(envelope, dict) else None
        if not isinstance(message, dict):
            raise FerryError("not a Pub/Sub push envelope")
        data = base64.b64decode(message.get("data") or "", validate=True)
        attributes = {str(k): str(v) for k, v in (message.get("attributes") or {}).items()}
    except (FerryError, binascii.Error, ValueError, AttributeError) as exc:
        status = exc.http_status if isinstance(exc, FerryError) and exc.http_status != 500 else 400
        body = exc.to_dict() if isinstance(exc, FerryError) else {"error": {"code": "bad_request",
                                                                            "message": "undecodable message data"}}
        log.event(logger, log.ERROR, f"refused push to {owner}: {status}", labels={"component": owner})
        return Response(json.dumps(body), status=status, mimetype="application/json")
    if attributes.get(PROBE_ATTRIBUTE):  # a health probe: admitted and decoded, not handled
        return Response(status=204)
    handle(svc, data, attributes)
    return Response(status=204)
