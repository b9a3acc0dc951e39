"""Cloud Functions entry points. Each decodes its trigger, calls one service, maps the result.

Deployed from a bundle of this folder plus the ``ferry`` library (see ``ferry deploy``); locally each
runs in its own functions-framework process (``ferry dev up``). Every HTTP function is served by
``ferry.api.http.serve`` (one body cap, one error model); every Pub/Sub push by
``ferry.api.push.serve_push`` (one decoder of the push envelope).
"""

from __future__ import annotations

import functions_framework

from ferry import log
from ferry.api.app import handle
from ferry.api.http import serve
from ferry.api.identity import check_startup
from ferry.bootstrap import process_services

log.configure()
# Fail-closed: a deployed function without FERRY_IDENTITY=oidc refuses to start (no header identity).
check_startup()


@functions_framework.http
def api(request):  # type: ignore[no-untyped-def]
    """The REST API under /v1 (docs/architecture.md)."""
    return handle(request)


# --- Gabo (docs/gabo.md) --------------------------------------------------------------------------
@functions_framework.http
def ingest(request):  # type: ignore[no-untyped-def]
    """POST /v1/events: validate and publish event envelopes (its own function: it scales apart)."""
    from ferry.gabo.api import router

    return serve(request, router, process_services(), "/v1/events")


@functions_framework.http
def deliver(request):  # type: ignore[no-untyped-def]
    """One delivery work order pushed from gabo-work-orders; an exception means nack (redelivery)."""
    from ferry.api.push import serve_push
    from ferry.gabo.api import deliver_pushed

    return serve_push(request, "deliver", deliver_pushed)


@functions_framework.http
def close(request):  # type: ignore[no-untyped-def]
    """Scheduled: close every partition that may close now."""
    from ferry.gabo.api import router

    return serve(request, router, process_services(), "/v1/close")


@functions_framework.http
def close_shard(request):  # type: ignore[no-untyped-def]
    """One close order pushed from gabo-close-orders: merge one shard, complete the period if it was the
    last. An exception means nack: Pub/Sub redelivers, then dead-letters (the period stays open, visible)."""
    from ferry.api.push import serve_push
    from ferry.gabo.api import close_shard_pushed

    return serve_push(request, "close-shard", close_shard_pushed)


@functions_framework.http
def scale(request):  # type: ignore[no-untyped-def]
    """Scheduled: decide and publish delivery work orders per event type."""
    from ferry.gabo.api import router

    return serve(request, router, process_services(), "/v1/scale")


# --- Datamon (docs/datamon.md) --------------------------------------------------------------------
@functions_framework.http
def evaluate(request):  # type: ignore[no-untyped-def]
    """Scheduled: one SLA evaluation (safe to overlap: notifications are claimed exactly once)."""
    from ferry.datamon.api import router

    return serve(request, router, process_services(), "/v1/evaluate")


@functions_framework.http
def dashboard(request):  # type: ignore[no-untyped-def]
    """The unified web view: pages, and actions posted as the API calls the CLI makes (docs/web.md)."""
    from ferry.web.app import dashboard

    return dashboard(request, process_services())


@functions_framework.http
def land(request):  # type: ignore[no-untyped-def]
    """One landing pushed from ferry-partitions; redelivery is harmless (landing twice is a re-landing)."""
    from ferry.api.push import serve_push
    from ferry.datamon.api import handle_partition_message

    return serve_push(request, "land", handle_partition_message)


@functions_framework.http
def notify(request):  # type: ignore[no-untyped-def]
    """One notification pushed from ferry-alerts to its owning team's channels; an exception means nack."""
    from ferry.api.push import serve_push
    from ferry.notify.service import handle_message

    return serve_push(request, "notify", handle_message)


# --- Styx (docs/styx.md) --------------------------------------------------------------------------
@functions_framework.http
def styx_tick(request):  # type: ignore[no-untyped-def]
    """Scheduled every minute: one Styx tick (safe to overlap: every change is a guarded commit)."""
    from ferry.styx.api import router

    return serve(request, router, process_services(), "/v1/tick")
