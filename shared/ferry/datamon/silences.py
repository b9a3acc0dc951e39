"""Silences: hold back an endpoint's (or a whole team's) notifications for a while, with a reason.

A silence is a document ``datamon_silences/{id}`` with ``endpoint`` or ``owner``, ``until``, ``reason``
and who created it. The evaluator reads the active ones once per evaluation (a query on ``until``);
a matching incident still opens, escalates and is recorded, but its notifications are held (the
claim says ``held`` and which silence). When the silence ends — it expires by itself, or is
removed — an incident still open and not acknowledged is re-notified at the next evaluation.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ferry.datamon.domain import Policy, _utc
from ferry.datamon.repository import DatamonRepository
from ferry.domain import periods
from ferry.errors import NotFound, ValidationError
from ferry.store.base import DocumentStore

MAX_SILENCE = timedelta(days=30)


@dataclass(frozen=True)
class Silence:
    id: str
    until: datetime
    endpoint: str | None = None
    owner: str | None = None
    reason: str = ""

    def matches(self, policy: Policy) -> bool:
        return policy.name == self.endpoint or (self.owner is not None and policy.owner == self.owner)

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> Silence:
        until = _utc(d["until"])
        assert until is not None
        return cls(d["id"], until, d.get("endpoint"), d.get("owner"), d.get("reason", ""))


def active(store: DocumentStore, now: datetime) -> list[Silence]:
    """Silences in force at ``now`` (one query; expired ones are simply not returned)."""
    return [Silence.from_doc(d) for d in DatamonRepository(store).active_silences(now)]


def matching(silences: list[Silence], policy: Policy) -> Silence | None:
    return next((s for s in silences if s.matches(policy)), None)


def _iso(v: Any) -> Any:
    return _utc(v).isoformat() if isinstance(v, datetime) else v  # type: ignore[union-attr]


def api(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: _iso(v) for k, v in doc.items()}


def create(store: DocumentStore, *, endpoint: str | None, owner: str | None, team: str, duration: str,
           reason: str, actor: str | None, now: datetime) -> dict[str, Any]:
    """Record a silence of ``endpoint`` or of every endpoint of ``owner`` for ``duration`` (ISO 8601);
    ``team`` is the team it concerns (the endpoint's owner, or ``owner``).

    Raises:
        ValidationError: neither or both of endpoint/owner, a bad or too long duration, no reason.
    """
    if (endpoint is None) == (owner is None):
        raise ValidationError("silence an endpoint or an owner (one of them)", [{"field": "endpoint", "reason": "one"}])
    try:
        length = periods.parse_duration(duration)
    except ValueError as exc:
        raise ValidationError(f"bad duration {duration!r}: {exc}", [{"field": "for", "reason": str(exc)}]) from None
    if not timedelta(0) < length <= MAX_SILENCE:
        raise ValidationError("a silence lasts more than nothing and at most P30D", [{"field": "for", "reason": "range"}])
    if not reason.strip():
        raise ValidationError("say why (--reason)", [{"field": "reason", "reason": "required"}])
    sid = f"s-{uuid.uuid4().hex[:10]}"
    doc = {"id": sid, "endpoint": endpoint, "owner": owner, "team": team, "reason": reason.strip(), "created_by": actor,
           "created_at": now, "until": now + length}
    DatamonRepository(store).write([DatamonRepository.silence_create_op(sid, doc)])
    return api(doc)


def listing(store: DocumentStore, now: datetime, owner: str | None = None) -> list[dict[str, Any]]:
    rows = [api(d) for d in DatamonRepository(store).active_silences(now)]
    return sorted((r for r in rows if owner is None or r.get("team") == owner),
                  key=lambda r: str(r["until"]))


def team_of(store: DocumentStore, sid: str) -> str | None:
    """The team a silence concerns (None: no such silence)."""
    return (DatamonRepository(store).silence(sid) or {}).get("team")


def end(store: DocumentStore, sid: str, now: datetime) -> dict[str, Any]:
    """End a silence now (its record stays, expired).

    Raises:
        NotFound: no such silence.
    """
    repo = DatamonRepository(store)
    doc = repo.silence(sid)
    if doc is None:
        raise NotFound(f"silence {sid!r} not found", {"silence": sid})
    if _utc(doc["until"]) > now:  # type: ignore[operator]
        doc["until"] = now
        repo.write([repo.silence_patch_op(sid, {"until": now, "ended_early": True})])
    return api(doc)
