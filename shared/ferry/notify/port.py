"""What other subsystems may use of notifications: the health of the teams' channels.

(The other half of the port is :mod:`ferry.notify.messages`: the message any subsystem publishes to
the alerts topic.) Datamon's status shows channels whose last delivery failed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ferry.store.base import DocumentStore, Where

# One document per (team, channel): its last delivery's outcome (written by ferry.notify.service).
CHANNELS = "notify_channels"


def failing_channels(store: DocumentStore) -> list[dict[str, Any]]:
    """Channels whose last delivery failed (``ferry status`` shows them), by team and name."""
    rows = []
    for _, d in store.query(CHANNELS, [Where("failing", "==", True)]):
        rows.append({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in d.items()})
    return sorted(rows, key=lambda r: (r.get("team", ""), r.get("channel", "")))
