"""Hour closing: merge a period's staging objects into deduplicated finals, mark and land it.

Crash-safe and idempotent by construction (see docs/gabo.md): finals are written before the
``_SUCCESS`` marker (which lists the staging objects it merged), the ``gabo_closed`` record after the
marker, the Datamon landing after that, and staging objects are removed last. A re-run after a crash
at any step either re-merges the very same inputs (deterministic output, same names) or finds the
partition closed and only finishes the clean-up; staging objects of a closed period that the marker
does not list are late and move to the next open period — never dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ferry import log
from ferry.domain import periods
from ferry.domain.manifests import EventType, events_endpoint
from ferry.errors import InfraError
from ferry.gabo import core
from ferry.gabo.backlog import BacklogSource, PullStatsBacklog
from ferry.gabo.sink import Sink
from ferry.gabo.state import GaboState

if TYPE_CHECKING:
    from ferry.datamon.port import Datamon

logger = log.get("gabo.closing")

MAX_PERIODS_PER_RUN = 500



@dataclass
class ClosedPartition:
    partition: str
    events: int
    duplicates: int
    late: int
    bytes: int
    parts: int
    location: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class CloseReport:
    event_type: str
    closed: list[ClosedPartition] = field(default_factory=list)
    late_moved: int = 0
    cleaned: int = 0
    waiting: list[str] = field(default_factory=list)
    watermark: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"event_type": self.event_type, "closed": [c.to_dict() for c in self.closed],
                "late_moved": self.late_moved, "cleaned": self.cleaned, "waiting": self.waiting[:20],
                "watermark": self.watermark}


class Closer:
    def __init__(self, sink: Sink, state: GaboState, datamon: Datamon, backlog: BacklogSource | None = None) -> None:
        self.sink = sink
        self.state = state
        self.datamon = datamon  # where a closed partition lands
        self.backlog = backlog or PullStatsBacklog(state)

    def watermark(self, event_type: str, now: datetime) -> datetime | None:
        """Every event received before it is written (see the backlog source); None (wait) if unknown."""
        try:
            return self.backlog.watermark(event_type, now)
        except InfraError as exc:  # no evidence → the period waits; the next run tries again
            log.event(logger, 30, f"no watermark for {event_type}: {exc}", labels={"event_type": event_type},
                      source=self.backlog.kind)
            return None

    def close(self, et: EventType, now: datetime, created_at: datetime | None = None) -> CloseReport:
        """Close every period of ``et`` that may close at ``now``; move late staging objects on."""
        name = et.name
        cadence = periods.partitioning(et.spec.partitioning)
        close_after = periods.parse_duration(et.spec.close_after)
        report = CloseReport(name)
        mark = self.watermark(name, now)
        report.watermark = core.iso(mark) if mark else None

        staging: dict[datetime, list[str]] = {}
        for key in self.sink.list(core.staging_prefix(name)):
            part = key[len(core.staging_prefix(name)):].split("/", 1)[0]
            try:
                staging.setdefault(core.parse_partition_key(part), []).append(key)
            except ValueError:
                continue
        cursor = self.state.cursor(name) or cadence.floor(created_at or now)
        candidates = set(staging)
        t = cursor
        while t < cadence.floor(now) and len(candidates) < MAX_PERIODS_PER_RUN:
            candidates.add(t)
            t = cadence.next(t)
        closed_docs = self.state.closed(name, sorted(candidates))
        closed = {s for s in candidates if s < cursor} | set(closed_docs)

        for start in sorted(candidates):
            keys = sorted(staging.get(start, []))
            if start in closed:
                merged = set((closed_docs.get(start) or {}).get("staging", []))
                for key in keys:
                    if key in merged:  # merged by a close that crashed before removing it
                        self.sink.delete(key)
                        report.cleaned += 1
                    else:  # late: received in a closed period → the next open one
                        target = core.next_open(start, cadence, closed | {p for p in candidates if p < cursor})
                        while target < cursor:
                            target = core.next_open(target, cadence, closed)
                        moved = f"{core.staging_prefix(name, target)}late-{key.rsplit('/', 1)[1]}"
                        self.sink.write(moved, self.sink.read(key))
                        self.sink.delete(key)
                        staging.setdefault(target, []).append(moved)
                        candidates.add(target)
                        report.late_moved += 1
                continue
            if core.closable(start, cadence, close_after, now, mark) is None:
                report.waiting.append(cadence.format(start))
                continue
            report.closed.append(self._close_one(et, cadence, start, keys, now))
            closed.add(start)
        # The cursor: first period not closed, so that empty periods are not revisited.
        nxt = cursor
        while nxt in closed:
            nxt = cadence.next(nxt)
        if nxt != cursor:
            self.state.set_cursor(name, nxt, now)
        return report

    def _close_one(self, et: EventType, cadence: periods.Cadence, start: datetime, keys: list[str],
                   now: datetime) -> ClosedPartition:
        name = et.name
        objects = [(k, core.gunzip_lines(self.sink.read(k))) for k in keys]
        late = {k for k in keys if k.rsplit("/", 1)[1].startswith("late-")}
        merged = core.merge(objects, late)
        prefix = core.final_prefix(name, start, cadence)
        parts = core.split_parts(merged.lines) if merged.lines else []
        wanted = {core.part_name(prefix, i) for i in range(len(parts))}
        for i, lines in enumerate(parts):
            self.sink.write(core.part_name(prefix, i), core.gzip_lines(lines, level=6))
        for stale in self.sink.list(prefix):  # parts of an earlier, crashed attempt over other inputs
            if stale.rsplit("/", 1)[1].startswith("part-") and stale not in wanted:
                self.sink.delete(stale)
        param = cadence.format(start)
        marker = {"event_type": name, "partition": param, "events": merged.events,
                  "duplicates_dropped": merged.duplicates, "late_events": merged.late, "bytes": merged.bytes,
                  "parts": len(parts), "staging": keys, "closed_at": core.iso(now)}
        self.sink.write(prefix + core.SUCCESS, json.dumps(marker, indent=1).encode())
        location = self.sink.uri(prefix)
        self.state.mark_closed(name, start, {**{k: v for k, v in marker.items() if k != "closed_at"},
                                             "closed_at": now, "location": location})
        self.datamon.land(events_endpoint(name), param, now=now, records=merged.events, bytes=merged.bytes,
                  location=location, source="gabo")
        for k in keys:
            self.sink.delete(k)
        log.event(logger, 20, f"closed {events_endpoint(name)} {param}: {merged.events} events",
                  labels={"event_type": name, "endpoint": events_endpoint(name), "parameter": param}, marker=marker)
        return ClosedPartition(param, merged.events, merged.duplicates, merged.late, merged.bytes, len(parts),
                               location)
