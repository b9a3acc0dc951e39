"""The per-user registry of running local stacks, so the CLI finds "the" stack from any folder.

``ferry dev up`` records its home (the ``.ferry`` directory) here; ``ferry dev down``/``reset`` remove it.
One small file per stack under ``$XDG_STATE_HOME/ferry/stacks/`` (default ``~/.local/state``), named by a
digest of the home, so two stacks never write the same file. An entry counts only while its home's
``state.json`` exists and one of its processes is alive: a stack that died without ``dev down`` is
skipped (and its entry removed).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ferry.dev import processes


def registry_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ferry" / "stacks"


def _entry(home: Path) -> Path:
    return registry_dir() / f"{hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]}.json"


def register(home: Path, api_url: str | None) -> None:
    """Record the stack in ``home`` as running (idempotent)."""
    path = _entry(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"home": str(home.resolve()), "api_url": api_url}))
    os.replace(tmp, path)


def unregister(home: Path) -> None:
    _entry(home).unlink(missing_ok=True)


def _alive(home: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((home / "state.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    comps = [c for c in state.get("components", []) if isinstance(c, dict) and c.get("pid")]
    return state if any(processes.alive(c) for c in comps) else None


def running() -> list[tuple[Path, dict[str, Any]]]:
    """Every registered stack that still runs: (home, its state), in home order."""
    out = []
    for f in sorted(registry_dir().glob("*.json")):
        try:
            home = Path(json.loads(f.read_text())["home"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        state = _alive(home)
        if state is None:
            f.unlink(missing_ok=True)  # stopped or died without `ferry dev down`
            continue
        out.append((home, state))
    return sorted(out, key=lambda hs: str(hs[0]))
