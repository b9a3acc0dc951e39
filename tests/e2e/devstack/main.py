"""A tiny function source for the local-stack tests: the real API plus two probes that record every
request they get (headers and body) as JSON lines in ``$FERRY_HOME/probe.jsonl``."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import functions_framework

from ferry.api.app import handle


def _record(entry: dict) -> None:  # type: ignore[type-arg]
    with open(Path(os.environ["FERRY_HOME"]) / "probe.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")


@functions_framework.http
def api(request):  # type: ignore[no-untyped-def]
    return handle(request)


@functions_framework.http
def probe(request):  # type: ignore[no-untyped-def]
    if request.method == "POST":
        _record({"function": "probe", "path": request.path, "headers": dict(request.headers.items()),
                 "body": request.get_json(silent=True), "env": os.environ.get("PROBE_ENV")})
    return {"ok": True}


@functions_framework.cloud_event
def probe_event(event):  # type: ignore[no-untyped-def]
    message = event.data["message"]
    if (message.get("attributes") or {}).get("ferry_probe"):
        return  # `ferry dev status`'s health probe: acked, not handled (as ferry.api.push does)
    _record({"function": "probe-event", "type": event["type"], "source": event["source"],
             "data": base64.b64decode(message["data"]).decode(), "attributes": message.get("attributes", {})})
