"""What Datamon offers the other subsystems: the one way Styx and Gabo report and read landings.

Styx (a workflow's ``produces`` partition, its upstream gate) and Gabo (a closed hour of events) use
this Protocol, handed out by the composition root as ``Services.datamon``; they never import
Datamon's modules. The in-process implementation is ``ferry.datamon.inprocess.Landings``; tests give a fake.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ferry.store.base import Op


class Datamon(Protocol):
    def land(self, endpoint: str, partition: str, *, now: datetime, records: int | None = None,
             bytes: int | None = None, location: str | None = None,  # noqa: A002
             source: str = "api", actor: str | None = None, allow_future: bool = False) -> dict[str, Any]:
        """Record that ``partition`` of ``endpoint`` landed (idempotent: again is a re-landing);
        a partition whose period has not ended at ``now`` only with ``allow_future``.

        Returns the partition record. Raises NotFound (unknown endpoint) or ValidationError.
        """
        ...

    def landed(self, endpoint: str, partitions: Sequence[str]) -> set[str]:
        """Which of ``partitions`` of ``endpoint`` have landed (one batched read)."""
        ...

    def locations(self, endpoint: str, partitions: Sequence[str]) -> dict[str, str | None]:
        """Where each landed one of ``partitions`` is (the ``location`` it landed with; None if not
        given), by partition; partitions not landed are absent (one batched read)."""
        ...

    def invalidate(self, endpoint: str, partition: str, *, reason: str, actor: str | None, now: datetime,
                   check: bool = True) -> dict[str, Any]:
        """Mark a landed partition bad (it is not landed any more, and late until it re-lands);
        ``check``: the endpoint's owners only. Returns the record (``invalidated``: was it landed)."""
        ...

    def consumers(self, endpoint: str) -> list[tuple[str, str | None]]:
        """The workflows that depend on ``endpoint``, each with the endpoint it produces (or None)."""
        ...


def retire_op(endpoint: str) -> Op:
    """The write that retires ``endpoint`` from evaluation, for an apply's batch (a deleted event type's
    ``events.<type>``): its summary goes, so no partition is expected and no incident opens; its manifest
    and landed partitions stay readable. Writing the endpoint's manifest again brings it back (the
    evaluator's manifest sync)."""
    from ferry.datamon.repository import DatamonRepository

    return DatamonRepository.delete_summary_op(endpoint)
