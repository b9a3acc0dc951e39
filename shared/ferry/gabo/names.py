"""Gabo's names: the streams of an event type, its Pub/Sub resources, and the sink's paths
(staging objects, shards, closed partitions). Pure.
"""

from __future__ import annotations

import functools
import hashlib
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ferry.domain import periods
from ferry.domain.manifests import events_endpoint

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


# ------------------------------------------------------------------------------------------ paths


def partition_key(start: datetime) -> str:
    """A path-safe, sortable key of a period start (staging objects are grouped under it)."""
    return start.astimezone(UTC).strftime("%Y%m%dT%H%M")


def parse_partition_key(key: str) -> datetime:
    return datetime.strptime(key, "%Y%m%dT%H%M").replace(tzinfo=UTC)


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

