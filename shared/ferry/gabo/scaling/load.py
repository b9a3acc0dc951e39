"""``ferry load TYPE --rate R --duration D``: a bounded, self-stopping load run against a local stack.

Sends events through ingest at a steady rate (one request per tick, as many events as the rate asks for
by then), and — unless the stack's scheduler does it — asks the scaler every ``scale_every`` seconds,
as the scheduler would. Then waits for delivery to drain and for the periods it touched to close.
Reports: accepted events, the peak backlog (accepted − delivered), the worker counts the scaler chose,
the time to drain after the last request, and each closed period's counts. Loopback only: it refuses
an API that is not on this machine.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

from ferry.errors import BadRequest
from ferry.gabo.envelopes import iso

MAX_DURATION_S = 3600.0
MAX_RATE = 100_000.0
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

Request = Callable[..., Any]


def check_target(api_url: str, rate: float, duration: float) -> None:
    host = urlparse(api_url).hostname or ""
    if host not in LOOPBACK:
        raise BadRequest(f"ferry load drives a local stack only; the API is at {api_url}")
    if not 0 < rate <= MAX_RATE or not 0 < duration <= MAX_DURATION_S:
        raise BadRequest(f"--rate must be in (0, {MAX_RATE:.0f}] events/s and --duration in (0, {MAX_DURATION_S:.0f}] s")


def run(request: Request, event_type: str, rate: float, duration: float, payload: Any, *, drive: bool = True,
        scale_every: float = 10.0, tick: float = 0.1, drain_timeout: float = 300.0, close_timeout: float = 300.0,
        close_after_s: float = 0.0, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> dict[str, Any]:
    """``request(method, path, body=None, params=None, content=None, content_type=None)`` is the API client."""
    import json

    run_id = uuid.uuid4().hex[:8]
    since = clock() - timedelta(seconds=1)
    started = time.monotonic()
    sent = accepted = rejected = 0
    peak_backlog, workers, last_scale, last_poll = 0, [], -1e9, 0.0
    model: list[int | None] = []  # the capacity model's workers for the rate of the last minute, at each decision
    # Work orders end before the next decision (as the scheduler's 50 s orders every minute do): the
    # scaler's worker count is then the number of workers running, not one generation among several.
    budget = min(50.0, max(1.0, scale_every - 1.0))

    def scale() -> None:
        nonlocal last_scale
        decisions = request("POST", "/v1/scale", {"event_type": event_type, "budget_s": budget})["decisions"]
        workers.append(int(decisions[0]["workers"]))
        last_scale = time.monotonic()
        [cap] = request("GET", "/v1/capacity", params={"event_type": event_type})["capacity"]
        model.append(cap["workers_now"])

    def progress() -> dict[str, Any]:
        return dict(request("GET", "/v1/gabo/progress", params={"event_type": event_type, "since": iso(since)}))

    while (elapsed := time.monotonic() - started) < duration:
        want = int(rate * elapsed) - sent
        if want > 0:
            lines = [json.dumps({"type": event_type, "id": f"load-{run_id}-{sent + i}", "payload": payload})
                     for i in range(min(want, 5000))]
            r = request("POST", "/v1/events", content="\n".join(lines).encode(), content_type="application/x-ndjson")
            sent += len(lines)
            accepted += int(r["accepted"])
            rejected += int(r["rejected_count"])
        if drive and time.monotonic() - last_scale >= scale_every:
            scale()
        if time.monotonic() - last_poll >= 2.0:
            peak_backlog = max(peak_backlog, accepted - int(progress()["delivered"]))
            last_poll = time.monotonic()
        time.sleep(max(0.0, tick - (time.monotonic() - started - elapsed)))
    sent_s = time.monotonic() - started

    # drain: everything accepted delivered (at least once)
    drained_at = None
    end = time.monotonic() + drain_timeout
    while time.monotonic() < end:
        p = progress()
        peak_backlog = max(peak_backlog, accepted - int(p["delivered"]))
        if int(p["delivered"]) >= accepted:
            drained_at = time.monotonic()
            break
        if drive and time.monotonic() - last_scale >= scale_every:
            scale()
        time.sleep(1.0)
    until = clock()

    # close: every period the run touched
    partitions: list[dict[str, Any]] = []
    end = time.monotonic() + close_timeout
    while drained_at is not None and time.monotonic() < end:
        if drive:
            if time.monotonic() - last_scale >= scale_every:
                scale()  # delivery runs record the drains the closing watermark needs
            request("POST", "/v1/close", {"event_type": event_type})
        partitions = [x for x in progress()["partitions"] if x["partition"] <= iso(until)[:19]]
        touched = [x for x in partitions if x["events"] or x["state"] != "closed"]
        if partitions and all(x["state"] == "closed" for x in partitions) and \
                sum(int(x["events"] or 0) for x in touched) >= accepted:
            break
        time.sleep(5.0)
    closed = [x for x in partitions if x["state"] == "closed" and x["events"]]
    return {"event_type": event_type, "run_id": run_id, "rate": rate, "duration_s": duration,
            "sent": sent, "accepted": accepted, "rejected": rejected,
            "achieved_rate": round(accepted / sent_s, 1) if sent_s else 0.0, "peak_backlog": peak_backlog,
            "workers_chosen": workers, "max_workers_chosen": max(workers, default=0),
            "model_workers": model, "scale_every_s": scale_every, "order_budget_s": budget,
            "drain_s": round(drained_at - started - sent_s, 1) if drained_at else None,
            "closed": closed, "closed_events": sum(int(x["events"] or 0) for x in closed),
            "open": [x for x in partitions if x["state"] != "closed"]}
