"""Datamon's port (``ferry.datamon.port.Datamon``) in this process: what Styx and Gabo land and read
partitions through, on Datamon's own functions (``landing``, ``partitions``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ferry.datamon.landing import land, landed
from ferry.datamon.partitions import consumers, invalidate
from ferry.datamon.repository import DatamonRepository
from ferry.store.base import DocumentStore

if TYPE_CHECKING:
    from ferry.services.authz import Authorizer


class Landings:
    """Datamon's port (``ferry.datamon.port.Datamon``) in this process, on ``store``; ``authorizer``
    (asked when an invalidation is checked) says who may invalidate."""

    def __init__(self, store: DocumentStore, authorizer: Callable[[], Authorizer]) -> None:
        self.store = store
        self.authorizer = authorizer

    def land(self, endpoint: str, partition: str, *, now: datetime, records: int | None = None,
             bytes: int | None = None, location: str | None = None,  # noqa: A002
             source: str = "api", actor: str | None = None, allow_future: bool = False) -> dict[str, Any]:
        return land(self.store, endpoint, partition, now=now, records=records, bytes=bytes,
                    location=location, source=source, actor=actor, allow_future=allow_future)

    def landed(self, endpoint: str, partitions: Sequence[str]) -> set[str]:
        return landed(self.store, endpoint, partitions)

    def locations(self, endpoint: str, partitions: Sequence[str]) -> dict[str, str | None]:
        if not partitions:
            return {}
        found = DatamonRepository(self.store).partitions(endpoint, partitions)
        return {p: d.get("location") for p, d in found.items()}

    def invalidate(self, endpoint: str, partition: str, *, reason: str, actor: str | None, now: datetime,
                   check: bool = True) -> dict[str, Any]:
        return invalidate(self.store, self.authorizer(), endpoint, partition, reason=reason, actor=actor, now=now,
                          check=check)

    def consumers(self, endpoint: str) -> list[tuple[str, str | None]]:
        return consumers(self.store, endpoint)
