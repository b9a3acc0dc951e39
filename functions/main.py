"""Cloud Functions entry points. Each decodes its trigger, calls one service, maps the result.

Deployed from a bundle of this folder plus the ``ferry`` library (see ``ferry deploy``); locally each
runs in its own functions-framework process (``ferry dev up``).
"""

from __future__ import annotations

import functions_framework

from ferry import log
from ferry.api import handle

log.configure()


@functions_framework.http
def api(request):  # type: ignore[no-untyped-def]
    """The REST API under /v1 (SPEC §7)."""
    return handle(request)
