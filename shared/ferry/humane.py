"""Values printed for people: durations ("2 h 15 min"), instants ("in 4 min", local time with zone),
mappings and lists as words — never a Python repr (``{'a': 1}``, ``['x']``) in CLI output."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


def duration(seconds: float | None, parts: int = 2) -> str:
    """``8100`` → ``2 h 15 min``; ``59`` → ``59 s``; at most ``parts`` units, largest first."""
    if seconds is None:
        return ""
    if 0 < abs(seconds) < 1:
        return f"{round(abs(seconds) * 1000)} ms"
    left = int(round(abs(seconds)))
    if left == 0:
        return "0 s"
    values = []
    for unit, size in _UNITS:
        values.append((left // size, unit))
        left %= size
    first = next(i for i, (n, _) in enumerate(values) if n)
    chosen = [f"{n} {unit}" for n, unit in values[first:first + parts] if n]
    return " ".join(chosen)


def parse_instant(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def relative(value: Any, now: datetime | None = None) -> str:
    """An instant relative to now: ``in 4 min``, ``3 h 2 min ago``, ``now``."""
    at = parse_instant(value)
    if at is None:
        return str(value or "")
    delta = (at - (now or datetime.now(UTC))).total_seconds()
    if abs(delta) < 1:
        return "now"
    return f"in {duration(delta)}" if delta > 0 else f"{duration(delta)} ago"


def local_time(value: Any) -> str:
    """An ISO instant as local wall time with its zone: ``2026-11-26 15:04 CET``."""
    at = parse_instant(value)
    if at is None:
        return str(value or "")
    return at.astimezone().strftime("%Y-%m-%d %H:%M %Z")


def when(value: Any, now: datetime | None = None) -> str:
    """``2026-11-26 15:04 CET (in 4 min)``."""
    at = parse_instant(value)
    return f"{local_time(at)} ({relative(at, now)})" if at else str(value or "")


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def counts(mapping: Mapping[str, Any]) -> str:
    """``{'QUEUED': 4, 'PENDING': 164}`` → ``4 queued, 164 pending`` (largest first, zeros left out)."""
    items = sorted(((k, v) for k, v in mapping.items() if v), key=lambda kv: (-_num(kv[1]), kv[0]))
    return ", ".join(f"{v} {str(k).lower().replace('_', ' ')}" for k, v in items) or "none"


def _num(v: Any) -> float:
    return float(v) if isinstance(v, int | float) else 0.0


def text(value: Any) -> str:
    """Any JSON value as words: lists joined by commas, mappings as ``k=v``, None as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(text(v) for v in value)
    return str(value)
