"""The local stack's channel receiver: an HTTP sink recording what notification channels would receive.

``ferry dev up`` runs it (``ferry dev status`` names it) and points the functions' PagerDuty Events API
at it (``FERRY_PAGERDUTY_URL``); a Slack or webhook channel's URL secret may point at it too:

| path | answers as |
| --- | --- |
| ``POST /pagerduty/v2/enqueue`` | PagerDuty Events API v2: 202 ``{status: success, dedup_key}``, 400 ``invalid event`` |
| ``POST /slack/NAME`` | a Slack incoming webhook: 200 ``ok``, 400 ``invalid_blocks`` / ``no_text`` |
| ``POST /webhook/NAME`` (any other path) | a generic webhook: 200 ``{ok: true}`` |
| ``GET /_received?path=PREFIX`` | everything recorded (path, status answered, headers, body) |
| ``POST /_script`` ``{path, statuses: [500, ...], retry_after?}`` | answer the next requests to ``path`` with those statuses (``"always": 500`` for every one) |

Every request is appended to ``received.jsonl`` in its directory, so a test or ``make demo`` can read it
after the fact.
"""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

PAGERDUTY_PATH = "/pagerduty/v2/enqueue"
PD_ACTIONS = ("trigger", "acknowledge", "resolve")
PD_SEVERITIES = ("critical", "error", "warning", "info")


def pagerduty_errors(body: Any) -> list[str]:
    """What PagerDuty's Events API v2 would reject in ``body`` (empty when it is a valid event)."""
    if not isinstance(body, dict):
        return ["the body must be a JSON object"]
    errors = []
    if not isinstance(body.get("routing_key"), str) or len(body["routing_key"]) != 32:
        errors.append("routing_key must be a 32-character integration key")
    if body.get("event_action") not in PD_ACTIONS:
        errors.append(f"event_action must be one of {', '.join(PD_ACTIONS)}")
    key = body.get("dedup_key")
    if body.get("event_action") in ("acknowledge", "resolve") and not key:
        errors.append("dedup_key is required to acknowledge or resolve")
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 255):
        errors.append("dedup_key must be a string of at most 255 characters")
    if body.get("event_action") == "trigger":
        payload = body.get("payload")
        if not isinstance(payload, dict):
            errors.append("payload is required to trigger")
        else:
            if not isinstance(payload.get("summary"), str) or not 0 < len(payload["summary"]) <= 1024:
                errors.append("payload.summary must be 1-1024 characters")
            if not isinstance(payload.get("source"), str) or not payload["source"]:
                errors.append("payload.source is required")
            if payload.get("severity") not in PD_SEVERITIES:
                errors.append(f"payload.severity must be one of {', '.join(PD_SEVERITIES)}")
    return errors


def slack_errors(body: Any) -> list[str]:
    """What a Slack incoming webhook would reject (the Block Kit subset notifications use)."""
    if not isinstance(body, dict):
        return ["invalid_payload"]
    blocks = body.get("blocks")
    if not body.get("text") and not blocks:
        return ["no_text"]
    errors: list[str] = []
    if blocks is None:
        return errors
    if not isinstance(blocks, list) or not 0 < len(blocks) <= 50:
        return ["invalid_blocks: 1-50 blocks"]

    def text_ok(t: Any, kinds: tuple[str, ...], limit: int) -> bool:
        return (isinstance(t, dict) and t.get("type") in kinds and isinstance(t.get("text"), str)
                and 0 < len(t["text"]) <= limit)

    for i, b in enumerate(blocks):
        kind = b.get("type") if isinstance(b, dict) else None
        if kind == "header":
            ok = text_ok(b.get("text"), ("plain_text",), 150)
        elif kind == "section":
            fields = b.get("fields")
            ok = ("text" in b or fields) and ("text" not in b or text_ok(b["text"], ("plain_text", "mrkdwn"), 3000))
            ok = ok and (fields is None or (isinstance(fields, list) and 0 < len(fields) <= 10 and all(
                text_ok(f, ("plain_text", "mrkdwn"), 2000) for f in fields)))
        elif kind == "context":
            els = b.get("elements")
            ok = isinstance(els, list) and 0 < len(els) <= 10 and all(
                text_ok(e, ("plain_text", "mrkdwn"), 3000) for e in els)
        elif kind == "divider":
            ok = True
        else:
            ok = False
        if not ok:
            errors.append(f"invalid_blocks: block {i} ({kind})")
    return errors


class Receiver:
    """The recording and scripting behind the HTTP handler (usable in-process by tests)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self.received: list[dict[str, Any]] = []
        self.scripts: dict[str, list[int]] = {}
        self.always: dict[str, int] = {}
        self.retry_after: dict[str, str] = {}
        self._lock = threading.Lock()

    def script(self, path: str, statuses: list[int] | None = None, always: int | None = None,
               retry_after: str | None = None) -> None:
        with self._lock:
            self.scripts[path] = list(statuses or [])
            if always is None:
                self.always.pop(path, None)
            else:
                self.always[path] = always
            if retry_after is None:
                self.retry_after.pop(path, None)
            else:
                self.retry_after[path] = retry_after

    def receive(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            body: Any = json.loads(raw or b"null")
        except ValueError:
            body = raw.decode(errors="replace")
        extra: dict[str, str] = {}
        with self._lock:
            queued = self.scripts.get(path)
            forced = queued.pop(0) if queued else self.always.get(path)
            if forced is not None and path in self.retry_after:
                extra["Retry-After"] = self.retry_after[path]
        if forced is not None:
            status, answer = forced, json.dumps({"error": f"scripted {forced}"}).encode()
        elif path == PAGERDUTY_PATH:
            errors = pagerduty_errors(body)
            status = 400 if errors else 202
            answer = json.dumps({"status": "invalid event", "message": "Event object is invalid", "errors": errors}
                                if errors else {"status": "success", "message": "Event processed",
                                                "dedup_key": body.get("dedup_key")}).encode()
        elif path.startswith("/slack/"):
            errors = slack_errors(body)
            status, answer = (400, errors[0].encode()) if errors else (200, b"ok")
        else:
            status, answer = 200, b'{"ok": true}'
        record = {"at": datetime.now(UTC).isoformat(), "path": path, "status": status,
                  "headers": {k.lower(): v for k, v in headers.items()}, "body": body}
        with self._lock:
            self.received.append(record)
            if self.directory is not None:
                with open(self.directory / "received.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
        return status, extra, answer

    def listing(self, prefix: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.received if r["path"].startswith(prefix)]


def handler(receiver: Receiver) -> Callable[..., BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None,
                  kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            url = urlparse(self.path)
            if url.path == "/_received":
                prefix = parse_qs(url.query).get("path", [""])[0]
                self._send(200, json.dumps({"items": receiver.listing(prefix)}).encode())
            else:
                self._send(200, json.dumps({"receiver": "ferry", "received": len(receiver.listing())}).encode())

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = urlparse(self.path).path
            if path == "/_script":
                spec = json.loads(raw)
                receiver.script(spec["path"], spec.get("statuses"), spec.get("always"), spec.get("retry_after"))
                self._send(200, b'{"ok": true}')
                return
            status, extra, answer = receiver.receive(path, dict(self.headers.items()), raw)
            kind = "text/plain" if path.startswith("/slack/") and not answer.startswith(b"{") else "application/json"
            self._send(status, answer, extra, kind)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    return Handler


def serve(host: str, port: int, directory: Path | None = None) -> tuple[ThreadingHTTPServer, Receiver]:
    """A running receiver in a background thread (``server.shutdown()`` stops it)."""
    receiver = Receiver(directory)
    server = ThreadingHTTPServer((host, port), handler(receiver))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, receiver


def stack_env(url: str) -> dict[str, str]:
    """What the local stack's functions are given so that PagerDuty channels post to the receiver."""
    return {"FERRY_PAGERDUTY_URL": f"{url}{PAGERDUTY_PATH}", "FERRY_RECEIVER_URL": url}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True, help="where received.jsonl is written")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer((args.host, args.port), handler(Receiver(args.dir)))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
