"""Gabo's pure core: names, envelopes, batching, grouping, hour-closing and scaling decisions.

Plain functions over data and ``now``; the services in this package carry out the side effects.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import math
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ferry import humane
from ferry.domain import periods
from ferry.domain.manifests import NAME_PATTERN, events_endpoint
from ferry.errors import BadRequest

# ---------------------------------------------------------------------------------------------- names

_TYPE_NAME = re.compile(NAME_PATTERN)


# One event type has one or two *streams*: the primary (every accepted event, delivered and closed into
# ``events/<type>/…`` and landed in Datamon) and, with ``spec.darkload > 0``, its darkload shadow (the
# sampled events mirrored by ingest, delivered and closed the same way into the sink's ``darkload/`` prefix,
# with records of their own, never landed): see docs/gabo.md, "Darkloading".
PRIMARY, DARKLOAD = "primary", "darkload"
STREAMS = (PRIMARY, DARKLOAD)
STREAM_PATTERN = f"^({PRIMARY}|{DARKLOAD})$"


@dataclass(frozen=True)
class Names:
    """The Pub/Sub resources of one event type's stream (short names; the adapters add the project)."""

    event_type: str
    stream: str = PRIMARY

    @property
    def base(self) -> str:
        return f"gabo-{self.event_type}" + ("-shadow" if self.stream == DARKLOAD else "")

    @property
    def topic(self) -> str:
        return self.base

    @property
    def subscription(self) -> str:
        return f"{self.base}-delivery"

    @property
    def dead_letter(self) -> str:
        return f"{self.base}-dead-letter"

    @property
    def quarantine(self) -> str:
        return f"gabo-{self.event_type}-quarantine"

    @property
    def shadow(self) -> str:
        """The darkload topic ingest mirrors the sampled events to (the shadow stream's topic)."""
        return Names(self.event_type, DARKLOAD).topic

    def hold(self, topic: str) -> str:
        """A subscription that keeps what reaches ``topic`` (a topic without one drops messages)."""
        return f"{topic}-hold"

    @property
    def endpoint(self) -> str:
        return events_endpoint(self.event_type)


def sampled(event_id: str, fraction: float) -> bool:
    """Is ``event_id`` among the ``fraction`` of events ingest mirrors to the darkload shadow? A stable hash
    of the id (the first 8 bytes of its BLAKE2b, as a fraction of 2**64): a retried request mirrors the
    same events, and the sampled subset of a closed partition can be computed from its ids alone."""
    if fraction <= 0:
        return False
    h = int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < fraction


def sink_root(stream: str) -> str:
    """Where a stream's objects live in the sink: the primary at its root, the shadow under ``darkload/``
    (``darkload/staging/<type>/…``, ``darkload/events/<type>/dt=…``)."""
    return "darkload/" if stream == DARKLOAD else ""


def streams_of(darkload: float) -> tuple[str, ...]:
    """The streams of a type whose darkload fraction is ``darkload``."""
    return STREAMS if darkload > 0 else (PRIMARY,)


WORK_ORDERS_TOPIC = "gabo-work-orders"

# ------------------------------------------------------------------------------------------ envelopes


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


# ------------------------------------------------------------------------------------------- delivery


@dataclass(frozen=True)
class BatchLimits:
    """A batch is flushed when any bound is reached; memory stays within ``max_bytes`` (plus one pull)."""

    max_messages: int = 20_000
    max_bytes: int = 64 * 1024 * 1024
    max_age_s: float = 10.0

    def full(self, count: int, size: int, age_s: float) -> bool:
        return count >= self.max_messages or size >= self.max_bytes or age_s >= self.max_age_s


# Pub/Sub answers a synchronous pull with at most 1000 messages, the emulator with at most 100: a pull
# that returns this many (or all it asked for) found more waiting than one answer carries.
FULL_PULL = 100


def pull_full(got: int, want: int) -> bool:
    """Did a pull of ``want`` messages that returned ``got`` leave a backlog behind (as far as it can tell)?"""
    return got >= min(want, FULL_PULL)


# A full pull is no backlog by itself: at the head of the subscription a pull brings what arrived while
# the previous one was under way, so at 1,500 events/s a 70 ms pull comes back with the emulator's 100.
# Behind is a full pull whose oldest event was received longer than this before the pull began.
BEHIND_LAG_S = 1.0


def pull_behind(got: int, want: int, lag_s: float | None) -> bool:
    """A full pull of events received more than ``BEHIND_LAG_S`` before it: the worker is behind the
    arrivals (a backlog waits), not merely keeping pace with them."""
    return pull_full(got, want) and lag_s is not None and lag_s > BEHIND_LAG_S


@dataclass(slots=True)
class Pulled:
    """One message as pulled: what the worker needs of it (read-only by convention: not frozen, because
    a frozen dataclass's constructor costs four times as much, and workers build one per message)."""

    ack_id: str
    message_id: str
    data: bytes
    attributes: Mapping[str, str]  # from Pub/Sub: the protobuf's own map (a dict copy costs ~1 µs each)
    publish_time: datetime
    delivery_attempt: int = 0


@dataclass(frozen=True)
class Accepted:
    message: Pulled
    event_id: str
    received_at: datetime


@dataclass(frozen=True)
class Poison:
    message: Pulled
    reason: str


def classify(m: Pulled, event_type: str, max_event_bytes: int) -> Accepted | Poison:
    """Is a pulled message a deliverable event of ``event_type``? Poison goes to the dead-letter topic."""
    v = verdict(m, event_type, max_event_bytes)
    if isinstance(v, str):
        return Poison(m, v)
    return Accepted(m, v[1], v[0])


def _refuse_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


_STRICT = json.JSONDecoder(parse_constant=_refuse_constant)  # NaN, Infinity, -Infinity: not JSON


def verdict(m: Pulled, event_type: str, max_event_bytes: int) -> tuple[datetime, str] | str:
    """:func:`classify` without the wrapping (a worker calls it per message): the receive time and id of
    a deliverable event, or the reason the message is poison."""
    if len(m.data) > line_limit(max_event_bytes):  # the bound every line of a valid event is within
        return f"oversized: {len(m.data)} bytes > {line_limit(max_event_bytes)} (max_event_bytes {max_event_bytes})"
    try:
        doc = _STRICT.decode(m.data.decode())  # decoded here: json's encoding sniffing of bytes costs more
    except ValueError:  # UnicodeDecodeError and NaN/Infinity included
        return "unparseable: not JSON"
    if type(doc) is not dict or type(doc.get("id")) is not str or "payload" not in doc:
        return "unparseable: not an event line {id, payload, ...}"
    if doc.get("type", event_type) != event_type:
        return f"wrong type {doc.get('type')!r} on the topic of {event_type!r}"
    raw = m.attributes.get("received_at") or doc.get("received_at")
    try:
        return (parse_iso(raw) if type(raw) is str else m.publish_time), doc["id"]
    except ValueError:
        return f"unparseable: received_at {raw!r}"


def partition_key(start: datetime) -> str:
    """A path-safe, sortable key of a period start (staging objects are grouped under it)."""
    return start.astimezone(UTC).strftime("%Y%m%dT%H%M")


def parse_partition_key(key: str) -> datetime:
    return datetime.strptime(key, "%Y%m%dT%H%M").replace(tzinfo=UTC)


def group_by_partition(events: Iterable[Accepted], cadence: periods.Cadence) -> dict[datetime, list[Accepted]]:
    groups: dict[datetime, list[Accepted]] = {}
    for e in events:
        groups.setdefault(cadence.floor(e.received_at), []).append(e)
    return groups


def staging_prefix(event_type: str, start: datetime | None = None) -> str:
    base = f"staging/{event_type}/"
    return base if start is None else f"{base}{partition_key(start)}/"


def staging_name(event_type: str, start: datetime, message_ids: Sequence[str], shard: str = "") -> str:
    """``staging/<type>/<period>/s<shard bits>/<hash>.jsonl.gz`` — deterministic in the batch's message ids:
    a retried write of the same batch overwrites itself."""
    digest = hashlib.sha256("\n".join(sorted(message_ids)).encode()).hexdigest()[:24]
    return f"{staging_prefix(event_type, start)}s{shard}/{digest}.jsonl.gz"


# ------------------------------------------------------------------------------------------- sharding
#
# An event's shard is a prefix of the bits of a stable hash of its id (CRC-32, the same on every platform
# and process): with ``k`` bits a period has 2**k shards, and shard ``b`` (a string of k bits) holds the
# ids whose hash starts with ``b``. Every copy of an id therefore lands in one shard, and a shard of fewer
# bits is exactly the union of the longer shards it prefixes: staging objects written with different
# ``k`` (the type's shard count changed within a period) are closed together at the smallest ``k`` present,
# so no id is ever split across two shards of one close.

MAX_SHARD_BITS = 10
# A shard's merge holds about 250 bytes per id: this many events keep one merge near 40 MB.
SHARD_EVENTS = 150_000


def shard_hash(event_id: str) -> int:
    return zlib.crc32(event_id.encode())


@functools.lru_cache(maxsize=MAX_SHARD_BITS + 1)
def shard_labels(bits: int) -> tuple[str, ...]:
    """The shard labels of ``bits`` bits, indexed by ``hash >> (32 - bits)``."""
    return tuple(format(i, f"0{bits}b") if bits else "" for i in range(1 << bits))


def shard_of(event_id: str, bits: int) -> str:
    return shard_labels(bits)[shard_hash(event_id) >> (32 - bits)] if bits else ""


def shard_bits_for(events_per_period: float, per_shard: int = SHARD_EVENTS) -> int:
    """Bits (shards = 2**bits) so that each shard of a period holds about ``per_shard`` events or fewer."""
    need = max(1.0, events_per_period / per_shard)
    return min(MAX_SHARD_BITS, math.ceil(math.log2(need)))


def staging_shard(key: str, event_type: str) -> tuple[datetime, str] | None:
    """(period start, shard bits) of a staging object key; objects of the unsharded layout (directly
    under the period) are of shard ``""`` (every id). None for what is not a staging object."""
    rest = key[len(staging_prefix(event_type)):].split("/")
    try:
        start = parse_partition_key(rest[0])
    except ValueError:
        return None
    if len(rest) == 3 and rest[1].startswith("s") and set(rest[1][1:]) <= {"0", "1"}:
        return start, rest[1][1:]
    return (start, "") if len(rest) == 2 else None


def shard_prefix(event_type: str, start: datetime, shard: str) -> str:
    """Where the staging objects of ``shard`` are listed (every longer shard it prefixes included)."""
    return f"{staging_prefix(event_type, start)}s{shard}"


class GzipLines:
    """A gzip NDJSON object built line by line: memory holds the compressed bytes, and at most
    ``PENDING`` bytes of lines not yet handed to the compressor (a compressor call per few lines — a
    sharded batch spreads each pull over many objects — costs more than the copy)."""

    PENDING = 64 * 1024

    def __init__(self, level: int = 1) -> None:
        self._buf = io.BytesIO()
        self._gz = gzip.GzipFile(fileobj=self._buf, mode="wb", compresslevel=level, mtime=0)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.raw_bytes = 0

    def add(self, line: bytes) -> None:
        self.add_many([line])

    def add_many(self, lines: list[bytes]) -> None:
        """Several lines, compressed in one call once enough are pending."""
        if lines:
            self._pending += lines
            n = sum(map(len, lines)) + len(lines)
            self._pending_bytes += n
            self.raw_bytes += n
            if self._pending_bytes >= self.PENDING:
                self._compress()

    def _compress(self) -> None:
        if self._pending:
            self._gz.write(b"\n".join(self._pending) + b"\n")
            self._pending, self._pending_bytes = [], 0

    def finish(self) -> bytes:
        self._compress()
        self._gz.close()
        out = self._buf.getvalue()
        self._buf = io.BytesIO()
        return out


def gzip_lines(lines: Iterable[bytes], level: int = 1) -> bytes:
    """Compress line by line: memory holds the compressed output, never a second copy of the lines."""
    out = GzipLines(level)
    for ln in lines:
        out.add(ln)
    return out.finish()


def gunzip_lines(blob: bytes) -> list[bytes]:
    return [ln for ln in gzip.decompress(blob).split(b"\n") if ln]


# -------------------------------------------------------------------------------------------- closing


def final_prefix(event_type: str, start: datetime, cadence: periods.Cadence) -> str:
    """``events/<type>/dt=YYYY-MM-DD/hour=HH/`` (+ ``minute=MM/`` when sub-hourly; dt only for daily+)."""
    t = start.astimezone(UTC)
    width = cadence.next(start) - start
    if width >= timedelta(days=1):
        local = cadence.format(start)
        return f"events/{event_type}/dt={local}/"
    out = f"events/{event_type}/dt={t:%Y-%m-%d}/hour={t:%H}/"
    if width < timedelta(hours=1):
        out += f"minute={t:%M}/"
    return out


def part_name(prefix: str, index: int) -> str:
    return f"{prefix}part-{index:05d}.jsonl.gz"


SUCCESS = "_SUCCESS"


@dataclass(frozen=True)
class Closable:
    start: datetime
    reason: str


def watermark(drains: Sequence[datetime], holders: Sequence[tuple[datetime, datetime | None]]) -> datetime | None:
    """The instant before which every received event is known to be written (acked) — from workers' reports.

    Args:
        drains: times at which a worker pulled and found the subscription empty (nothing available).
        holders: per unfinished worker run, (lease_until, oldest received_at it holds unacked or None).
    Returns:
        None when no drain was ever seen. Otherwise the latest drain ``D``, lowered to the oldest event
        still held by a worker whose lease outlives ``D`` (a lease that expired before ``D`` was
        redelivered and is covered by the drain: the subscription was empty then).
    """
    if not drains:
        return None
    d = max(drains)
    held = [oldest for lease_until, oldest in holders if oldest is not None and lease_until >= d]
    return min([d, *held])


# The longest an event can take from its ``received_at`` stamp to its publish (ingest stamps, then
# publishes and waits for the confirmation, within its function's 60 s timeout). Pub/Sub ages a message
# from its publish time, so the metric watermark steps back by this much.
PUBLISH_SLACK = timedelta(seconds=60)


def metric_watermark(oldest_age_s: float, sampled_at: datetime,
                     publish_slack: timedelta = PUBLISH_SLACK) -> datetime:
    """The watermark from Cloud Monitoring's ``oldest_unacked_message_age`` of the delivery subscription.

    At ``sampled_at`` the oldest unacked (available or leased) message was published ``oldest_age_s``
    before (0 when nothing is unacked), so everything published before ``sampled_at - age`` was acked,
    i.e. written. An event is published at most ``publish_slack`` after its ``received_at``: every event
    received before ``sampled_at - age - publish_slack`` is written. The sample time, not ``now``, counts:
    a point is up to minutes old when it becomes readable.
    """
    return sampled_at - timedelta(seconds=max(0.0, oldest_age_s)) - publish_slack


def closable(start: datetime, cadence: periods.Cadence, close_after: timedelta, now: datetime,
             mark: datetime | None) -> Closable | None:
    """A period may close once its end plus ``close_after`` has passed and every event received before
    its end is written (``mark`` — see :func:`watermark` — is at or after its end)."""
    end = cadence.next(start)
    if now < end + close_after:
        return None
    if mark is None or mark < end:
        return None
    return Closable(start, f"ended {iso(end)}, grace {periods.format_duration(close_after)} passed, "
                           f"all events received before the end are written (watermark {iso(mark)})")


def why_waiting(start: datetime, cadence: periods.Cadence, close_after: timedelta, now: datetime,
                mark: datetime | None) -> dict[str, Any]:
    """Why a period that may not close yet waits, and until when (None: until the evidence arrives)."""
    end = cadence.next(start)
    grace = periods.format_duration(close_after)
    if now < end + close_after:
        until = end + close_after
        return {"partition": cadence.format(start), "until": iso(until),
                "reason": f"its grace period ({grace} after it ends) runs until {iso(until)}, "
                          f"in {humane.duration((until - now).total_seconds())}"}
    if mark is None:
        return {"partition": cadence.format(start), "until": None,
                "reason": "no watermark yet: the delivery backlog is unknown (a delivery run reports it)"}
    return {"partition": cadence.format(start), "until": None,
            "reason": f"events received before its end ({iso(end)}) may still be undelivered: the watermark "
                      f"is {iso(mark)} ({humane.duration((end - mark).total_seconds())} behind)"}


def next_open(start: datetime, cadence: periods.Cadence, closed: set[datetime]) -> datetime:
    """The first period after ``start`` that is not closed (where a late staging object goes)."""
    t = cadence.next(start)
    while t in closed:
        t = cadence.next(t)
    return t


# -------------------------------------------------------------------------------------------- scaling


@dataclass(frozen=True)
class ScaleInputs:
    """What the scaler knows of one event type's backlog (None = not known from this source)."""

    current: int
    min_workers: int
    max_workers: int
    undelivered: int | None = None          # messages waiting (Cloud Monitoring num_undelivered_messages)
    oldest_age_s: float | None = None       # oldest unacked message age (metric, or the workers' lag)
    drained: bool = False                   # the latest worker runs found the subscription empty
    saturated: bool = False                 # the latest runs ended their budget still pulling full batches
    rate_per_worker: float | None = None    # events/s one worker moved (from pull statistics)
    budget_s: float = 60.0                  # one work order's time budget
    target_age_s: float = 120.0             # the lag the scaler aims to stay under
    source: str = "pull"                    # where the backlog was read: pull statistics or Cloud Monitoring
    sampled_at: str | None = None           # when that reading was true

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class ScaleDecision:
    workers: int
    reason: str
    inputs: ScaleInputs = field(repr=False)


def decide_workers(i: ScaleInputs) -> ScaleDecision:
    """How many delivery work orders to run in parallel for one type, within [min, max].

    Known backlog and per-worker rate: enough workers to clear it within one budget. Otherwise by lag:
    double while the oldest event is older than the target, step down when it is well under it, and
    fall to the minimum when the workers report the subscription drained.
    """
    lo, hi = i.min_workers, max(i.min_workers, i.max_workers)
    current = max(i.current, lo)

    def clamp(n: int) -> int:
        return max(lo, min(hi, n))

    if i.drained and not i.undelivered:
        return ScaleDecision(clamp(lo), "drained: the subscription was empty", i)
    if i.undelivered is not None and i.rate_per_worker:
        need = math.ceil(i.undelivered / max(1.0, i.rate_per_worker * i.budget_s))
        return ScaleDecision(clamp(need), f"backlog {i.undelivered} at {i.rate_per_worker:.0f}/s per worker", i)
    if i.saturated:
        return ScaleDecision(clamp(max(current * 2, current + 1)),
                             "backlog remains: workers ended their budget still pulling full batches", i)
    if i.oldest_age_s is not None and i.oldest_age_s > i.target_age_s:
        return ScaleDecision(clamp(max(current * 2, current + 1)),
                             f"lag {i.oldest_age_s:.0f}s over target {i.target_age_s:.0f}s", i)
    if i.oldest_age_s is not None and i.oldest_age_s < i.target_age_s / 4:
        return ScaleDecision(clamp(current - 1), f"lag {i.oldest_age_s:.0f}s well under target", i)
    if i.undelivered == 0:
        return ScaleDecision(clamp(lo), "no backlog", i)
    return ScaleDecision(clamp(current), "steady", i)


# ------------------------------------------------------------------------------------- fair delivery

def fair_shares(wanted: Mapping[str, int], capacity: int | None, start: int = 0) -> dict[str, int]:
    """Split ``capacity`` parallel delivery workers among types by max-min fairness: every type that
    wants workers gets one before any type gets a second, and so on; no type gets more than it wants.

    ``capacity`` None: no limit (each type gets what it wants). With more hungry types than capacity,
    who goes first rotates with ``start`` (the scaler passes the minute), so none waits more than a few
    ticks.
    """
    if capacity is None:
        return dict(wanted)
    names = sorted(wanted)
    k = start % len(names) if names else 0
    names = names[k:] + names[:k]
    out = {t: 0 for t in wanted}
    left = max(0, capacity)
    while left > 0:
        hungry = [t for t in names if out[t] < wanted[t]]
        if not hungry:
            break
        for t in hungry[:left]:
            out[t] += 1
        left -= min(left, len(hungry))
    return out


def interleave(orders: Mapping[str, Sequence[Any]], start: int = 0) -> list[Any]:
    """Round-robin across types (from the ``start``-th, rotating each tick), so that a queue of work
    orders never holds one type's whole batch ahead of another type's first order."""
    names = sorted(orders)
    if not names:
        return []
    k = start % len(names)
    names = names[k:] + names[:k]
    out: list[Any] = []
    for i in range(max(len(v) for v in orders.values())):
        out.extend(orders[n][i] for n in names if i < len(orders[n]))
    return out
