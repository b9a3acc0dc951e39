"""Staging objects of one period written directly (no ingest, no delivery): the input of closing at volume.

Lines are what ingest publishes (``event_line``'s compact shape, ~300 bytes), grouped as delivery
batches of ``batch`` events, each split per shard into ``staging/<type>/<period>/s<bits>/<hash>.jsonl.gz``.
Every 100th line repeats an earlier id received later (a client's retry: the copy loses); ``late`` events
are in ``late-`` objects (moved there by an earlier close). Ids are ``e<i>``: the expected ids of a shard
are computed, not stored.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime

from ferry.gabo.closing.formats.ndjson import gzip_lines
from ferry.gabo.delivery.sink import Sink
from ferry.gabo.envelopes import iso
from ferry.gabo.names import shard_labels, staging_name

PAD = "x" * 170


@dataclass
class Staged:
    unique: int
    duplicates: int
    late: int
    objects: int
    bytes: int


def _line(name: str, i: int, received: str) -> bytes:
    return (f'{{"id":"e{i}","type":"{name}","time":null,"received_at":"{received}",'
            f'"payload":{{"track_id":"t{i % 9973}","ms_played":{i},"pad":"{PAD}"}}}}').encode()


def write_period(sink: Sink, name: str, start: datetime, events: int, bits: int, batch: int = 20_000,
                 late: int = 0, dup_every: int = 100) -> Staged:
    """``events`` lines (duplicates included) of period ``start`` in ``2**bits`` shards; ``late`` of the
    unique ids in late objects. Returns what closing must find."""
    labels, shift = shard_labels(bits), 32 - bits
    stamp = iso(start)[:17]  # YYYY-mm-ddTHH:MM:
    unique = dups = nbytes = objects = 0
    i = 0
    n_late_first = events - late  # the last ``late`` unique ids are late
    while i < events:
        groups: dict[tuple[str, bool], list[bytes]] = {}
        for j in range(i, min(events, i + batch)):
            if j % dup_every == dup_every - 1 and j < n_late_first:
                eid = j - dup_every // 2  # an earlier id, received later: the copy loses
                ln = _line(name, eid, f"{stamp}59.999999Z")
                dups += 1
            else:
                eid = j
                ln = _line(name, eid, f"{stamp}{(j // 1000) % 59:02d}.{j % 1000000:06d}Z")
                unique += 1
            shard = labels[zlib.crc32(f"e{eid}".encode()) >> shift] if bits else ""
            groups.setdefault((shard, j >= n_late_first), []).append(ln)
        for (shard, is_late), lines in groups.items():
            key = staging_name(name, start, [f"{i}-{shard}"], shard)
            if is_late:
                head, _, base = key.rpartition("/")
                key = f"{head}/late-{base}"
            data = gzip_lines(lines, level=1)
            sink.write(key, data)
            objects += 1
            nbytes += sum(len(x) + 1 for x in lines)
        i += batch
    return Staged(unique, dups, late, objects, nbytes)


def expected_ids(events: int, bits: int, shard: str, late: int = 0, dup_every: int = 100) -> set[str]:
    """The distinct ids of ``shard`` that :func:`write_period` wrote (duplicates repeat earlier ids)."""
    shift = 32 - bits
    want = int(shard, 2) if bits else 0
    out = set()
    for j in range(events):
        if j % dup_every == dup_every - 1 and j < events - late:
            continue
        eid = f"e{j}"
        if not bits or zlib.crc32(eid.encode()) >> shift == want:
            out.add(eid)
    return out
