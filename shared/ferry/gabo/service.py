"""Gabo's operations, the ones entry points call, on the adapters the composition root built.

``gabo(services)`` is the facade; ``ingest``, ``deliver``, ``close``
and ``scale`` are what the API routes, the CLI (through the API) and the Cloud Functions call.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ferry import log
from ferry.broker.base import Message
from ferry.domain.manifests import EventType
from ferry.errors import InfraError, NotFound
from ferry.gabo import core
from ferry.gabo.backlog import Backlog, BacklogSource
from ferry.gabo.broker import DeliveryBroker
from ferry.gabo.closing import Closer, CloseReport
from ferry.gabo.delivery import DeliveryReport, DeliveryWorker, OffsetClock, WorkOrder
from ferry.gabo.sink import Sink
from ferry.gabo.state import GaboState
from ferry.store.manifests import ManifestRecord

if TYPE_CHECKING:
    from ferry.bootstrap import Services
    from ferry.gabo.ingest import IngestResult

logger = log.get("gabo")


class Gabo:
    """Gabo's operations on the adapters ``services`` holds (broker, sink, backlog source, Datamon's port)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    @property
    def broker(self) -> DeliveryBroker:
        return self.services.broker

    @property
    def sink(self) -> Sink:
        return self.services.sink

    @property
    def state(self) -> GaboState:
        return GaboState(self.services.store)

    @property
    def backlog_source(self) -> BacklogSource:
        """Workers' pull statistics or Cloud Monitoring (``settings.backlog``, chosen by the composition root)."""
        return self.services.backlog_source

    def event_type(self, name: str) -> tuple[EventType, ManifestRecord]:
        rec = self.services.manifests.get("EventType", name)
        if rec is None:
            raise NotFound(f"event type {name!r} not found (apply an EventType named {name})")
        return rec.model_as(EventType), rec

    def event_types(self, name: str | None = None) -> list[tuple[EventType, ManifestRecord]]:
        if name:
            return [self.event_type(name)]
        return [(r.model_as(EventType), r) for r in self.services.manifests.all("EventType")]

    # ------------------------------------------------------------------------------------ operations
    def ingest(self, raw: bytes, now: datetime) -> IngestResult:
        """Parse a body (JSON array or NDJSON) and ingest it. Raises BadRequest on a malformed body."""
        from ferry.gabo.ingest import IngestService  # jsonschema: not for delivery workers

        items = core.parse_body(raw)
        return IngestService(self.services.manifests, self.services.publisher).ingest(items, now)

    def warm(self) -> None:
        """Build the clients a delivery run uses and open the store's connection: process start-up (paid
        once per process or function instance), so that a run's timing is its work."""
        from ferry.gabo.broker import PubSubBroker
        from ferry.gabo.state import RUNS

        if isinstance(self.broker, PubSubBroker):
            _ = self.broker.subscriber
        self.services.store.get(RUNS, "-warm-up-")

    def deliver(self, order: WorkOrder, now: datetime | None = None) -> DeliveryReport:
        """Run one delivery work order (``now`` shifts this run's clock: local time travel only)."""
        et, _ = self.event_type(order.event_type)
        clock = OffsetClock(now, self.services.clock) if now is not None else self.services.clock
        worker = DeliveryWorker(self.broker, self.sink, lambda: self.services.publisher, self.state, clock)
        return worker.run(order, et)

    def close(self, now: datetime, name: str | None = None) -> list[CloseReport]:
        """Close what may close, for one type or all. Safe to run twice or concurrently with delivery."""
        closer = Closer(self.sink, self.state, self.services.datamon, self.backlog_source)
        return [closer.close(et, now, rec.created_at) for et, rec in self.event_types(name)]

    def scale(self, now: datetime, name: str | None = None, budget_s: float = 50.0,
              publish: bool = True) -> list[dict[str, Any]]:
        """Decide, per type, how many delivery work orders run in parallel; publish them; record why."""
        out = []
        for et, _ in self.event_types(name):
            inputs = self.backlog(et, now, budget_s)
            decision = core.decide_workers(inputs)
            orders = [WorkOrder(event_type=et.name, budget_s=budget_s, worker=i) for i in range(decision.workers)]
            if publish and orders:
                self.services.publisher.publish(core.WORK_ORDERS_TOPIC, [
                    Message(o.model_dump_json().encode(), {"event_type": et.name}) for o in orders])
            record = {"workers": decision.workers, "reason": decision.reason, "inputs": inputs.to_dict(),
                      "published": publish}
            self.state.record_decision(et.name, now, record)
            log.event(logger, 20, f"scale {et.name}: {decision.workers} worker(s) — {decision.reason}",
                      labels={"event_type": et.name}, inputs=inputs.to_dict())
            out.append({"event_type": et.name, **record})
        return out

    def backlog(self, et: EventType, now: datetime, budget_s: float) -> core.ScaleInputs:
        """Scaler inputs: the backlog from the backlog source (Cloud Monitoring's ``num_undelivered_messages``
        and ``oldest_unacked_message_age`` in the cloud; the workers' pull statistics locally), and the
        per-worker rate from the workers' own reports in both cases."""
        last = self.state.last_decision(et.name, now)
        current = int(last["workers"]) if last else et.spec.min_workers
        source = self.backlog_source
        try:
            b = source.backlog(et.name, now, current)
        except InfraError as exc:  # no metric: the rate and lag rules still work on what runs report
            log.event(logger, 30, f"backlog of {et.name} unknown: {exc}", labels={"event_type": et.name})
            b = Backlog(f"{source.kind}-unavailable")
        runs = [r for r in self.state.recent_runs(et.name, now - timedelta(minutes=15)) if r.get("finished_at")]
        latest = sorted(runs, key=lambda r: r["finished_at"])[-max(1, current):] if runs else []
        rates = [float(r.get("rate") or 0) for r in latest if r.get("rate")]
        return core.ScaleInputs(current=current, min_workers=et.spec.min_workers, max_workers=et.spec.max_workers,
                                undelivered=b.messages, oldest_age_s=b.oldest_age_s,
                                drained=b.drained, saturated=b.saturated,
                                rate_per_worker=(sum(rates) / len(rates)) if rates else None,
                                budget_s=budget_s, target_age_s=max(60.0, 2 * budget_s),
                                source=b.source, sampled_at=core.iso(b.sampled_at) if b.sampled_at else None)


def gabo(services: Services) -> Gabo:
    """Gabo's facade on ``services`` (cheap: the adapters are the services')."""
    return Gabo(services)


def decode_work_order(data: bytes) -> WorkOrder:
    return WorkOrder.model_validate(json.loads(data))


def deliver_pushed(services: Services, data: bytes, attributes: dict[str, str]) -> None:
    """The ``deliver`` function's body: one pushed work order, its budget capped to the function's
    timeout. Raises on anything that should be redelivered (a malformed order ends in the dead letter)."""
    from ferry.api.identity import cap_budget

    order = decode_work_order(data)
    gabo(services).deliver(order.model_copy(update={"budget_s": cap_budget(services, order.budget_s)}))


__all__ = ["Gabo", "gabo", "decode_work_order", "deliver_pushed"]
