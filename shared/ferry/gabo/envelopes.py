"""Event envelopes: a request body parsed into envelopes, each valid or the reason it is not; the event
line an envelope is published, delivered and stored as. Pure.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ferry.domain.manifests import NAME_PATTERN
from ferry.errors import BadRequest

_TYPE_NAME = re.compile(NAME_PATTERN)


# A payload nested deeper than this is its event's rejection (parsers, validators and encoders recurse).
MAX_DEPTH = 64


@dataclass(frozen=True)
class Unparsable:
    """One element of a body that is not JSON Python can hold (too deep, or a broken NDJSON line):
    that event's rejection, not the request's."""

    reason: str


def parse_body(raw: bytes) -> list[Any]:
    """A JSON array, a single JSON object, or NDJSON (one JSON value a line); BadRequest when the
    body as a whole is not one of those. An element that alone cannot be parsed is an Unparsable."""
    text = raw.strip()
    if not text:
        raise BadRequest("the body is empty: send a JSON array or NDJSON of event envelopes")
    try:
        if text[:1] == b"[":
            try:
                items = json.loads(text)
            except RecursionError:
                return [_parse_one(part) for part in _array_elements(text)]
            if not isinstance(items, list):
                raise ValueError("not an array")
            return items
        lines = [ln for ln in text.split(b"\n") if ln.strip()]
        items = [_parse_one(ln) for ln in lines]
        if len(items) == 1 and isinstance(items[0], Unparsable):
            raise ValueError(items[0].reason)
        return items
    except ValueError as exc:
        raise BadRequest(f"the body is neither a JSON array nor NDJSON: {exc}") from None


def _parse_one(text: bytes) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        return Unparsable(f"nests deeper than {MAX_DEPTH} levels")
    except ValueError as exc:
        return Unparsable(f"not JSON: {exc}")


def _array_elements(text: bytes) -> list[bytes]:
    """The top-level elements of the JSON array ``text``, split without recursion (strings and
    escapes respected). Raises ValueError when the array is not closed."""
    out: list[bytes] = []
    depth, start, in_string, escaped = 0, 1, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == 0x5C:  # backslash
                escaped = True
            elif ch == 0x22:
                in_string = False
        elif ch == 0x22:
            in_string = True
        elif ch in (0x5B, 0x7B):  # [ {
            depth += 1
        elif ch in (0x5D, 0x7D):  # ] }
            depth -= 1
            if depth == 0:
                part = text[start:i].strip()
                if part:
                    out.append(part)
                return out
        elif ch == 0x2C and depth == 1:  # , between top-level elements
            out.append(text[start:i].strip())
            start = i + 1
    raise ValueError("the array is not closed")


def depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests containers more than ``limit`` deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        cur, d = stack.pop()
        if isinstance(cur, dict):
            cur = cur.values()
        elif not isinstance(cur, list):
            continue
        if d > limit:
            return True
        stack.extend((v, d + 1) for v in cur if isinstance(v, dict | list))
    return False


@dataclass(frozen=True)
class Envelope:
    type: str
    id: str
    payload: Any
    time: str | None = None


# ---- an event's size and validity: one rule, applied by ingest (per event) and by delivery (per line) ----
#
# An event is valid when its envelope is (``envelope``) and its payload encodes as standard JSON in UTF-8
# (``encode_payload``: no NaN/Infinity, no number beyond a double's range such as 1e999999, no lone
# surrogate) of at most ``max_event_bytes``. Its line (``event_line``) is the payload plus envelope fields
# whose size is bounded here, so every valid event's line is at most ``line_limit(max_event_bytes)``: the
# bound delivery checks. Whatever ingest accepts, delivery writes.
MAX_ID_CHARS = 256
MAX_TIME_CHARS = 64  # an ISO 8601 instant with a time zone and microseconds is 32; no fraction of 100,000 digits
_ESCAPED = 6  # the most bytes one character of a string takes in a line (a control character: \u001f)
# keys, quotes, received_at (27 ASCII characters for the years 1000-9999), the type name (63 ASCII) and
# the replayed mark, with room to spare; id and time at their worst
LINE_OVERHEAD = 256 + (MAX_ID_CHARS + MAX_TIME_CHARS) * _ESCAPED


def line_limit(max_event_bytes: int) -> int:
    """The largest line of a valid event of a type whose ``max_event_bytes`` is given."""
    return max_event_bytes + LINE_OVERHEAD


def _unicode(text: str) -> bool:
    """Whether ``text`` is Unicode text UTF-8 can carry (JSON lets a string escape a lone surrogate)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def shown(text: str) -> str:
    """``text`` as an answer or a log may carry it: a lone surrogate is shown escaped (``\\ud800``)."""
    return text.encode("utf-8", "backslashreplace").decode()


def envelope(item: Any) -> Envelope | str:
    """The envelope in ``item``, or the reason it is not one."""
    if isinstance(item, Unparsable):
        return item.reason
    if not isinstance(item, dict):
        return "an event envelope is a JSON object {type, id, time?, payload}"
    unknown = set(item) - {"type", "id", "time", "payload"}
    if unknown:
        return f"unknown envelope field(s): {', '.join(sorted(shown(u)[:100] for u in unknown))}"
    t, i = item.get("type"), item.get("id")
    if not isinstance(t, str) or not t:
        return "type is required (a string)"
    if not _TYPE_NAME.match(t):
        return f"type {t[:100]!r} is not an event type name (lowercase letters, digits, '.', '_', '-'; at most 63)"
    if not isinstance(i, str) or not i or len(i) > MAX_ID_CHARS:
        return f"id is required (a string of 1 to {MAX_ID_CHARS} characters)"
    if not _unicode(i):
        return "id is not Unicode text: it holds a lone surrogate (\\ud800-\\udfff)"
    if "payload" not in item:
        return "payload is required"
    if depth_exceeds(item["payload"], MAX_DEPTH):
        return f"payload nests deeper than {MAX_DEPTH} levels"
    tm = item.get("time")
    if tm is not None:
        if not isinstance(tm, str):
            return "time must be an ISO 8601 string"
        if len(tm) > MAX_TIME_CHARS:
            return f"time is longer than {MAX_TIME_CHARS} characters: not an ISO 8601 instant"
        if not _unicode(tm):
            return "time is not Unicode text: it holds a lone surrogate (\\ud800-\\udfff)"
        try:
            if datetime.fromisoformat(tm.replace("Z", "+00:00")).tzinfo is None:
                return "time needs a time zone"
        except ValueError:
            return f"time is not an ISO 8601 instant: {tm!r}"
    return Envelope(t, i, item["payload"], tm)


def encode_payload(payload: Any) -> bytes | str:
    """The payload as it stands in its line (compact JSON, UTF-8), or why it cannot: a number outside
    JSON's grammar (NaN, Infinity, or one beyond a double's range, which parses as infinite) or a string
    that is not Unicode text (a lone surrogate). Strict readers refuse both."""
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        return "payload holds a number outside JSON's grammar (NaN, Infinity, or beyond a double's range such as 1e999999)"
    try:
        return text.encode()
    except UnicodeEncodeError:
        return "payload is not Unicode text: a string or key holds a lone surrogate (\\ud800-\\udfff)"


def event_line(env: Envelope, received_at: datetime, replayed: bool = False, payload: bytes | None = None) -> bytes:
    """The JSON line an event is published as, and delivered and stored as (``payload``: the payload's
    bytes from ``encode_payload``, when they were computed already). A replayed event (set aside, then
    replayed by ``ferry replay``) says so before its payload (``"replayed":true``)."""
    head = {"id": env.id, "type": env.type, "time": env.time, "received_at": iso(received_at),
            **({"replayed": True} if replayed else {})}
    if payload is None:
        encoded = encode_payload(env.payload)
        if isinstance(encoded, str):
            raise ValueError(encoded)
        payload = encoded
    text = json.dumps(head, separators=(",", ":"), ensure_ascii=False)
    return text[:-1].encode() + b',"payload":' + payload + b"}"


REPLAYED_MARK, PAYLOAD_KEY = b'"replayed":true,"payload":', b'"payload":'


def is_replayed(line: bytes) -> bool:
    """Whether a stored line is a replayed event: the mark right before the first ``"payload":`` key (the
    envelope's fields before it are strings, whose quotes are escaped, so a payload cannot fake it)."""
    at = line.find(PAYLOAD_KEY)
    return at >= 0 and line.startswith(REPLAYED_MARK, at - len(REPLAYED_MARK) + len(PAYLOAD_KEY))


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@functools.lru_cache(maxsize=4096)  # a worker parses the same received_at for a whole ingest request
def parse_iso(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"naive instant {text!r}")
    return t.astimezone(UTC)


