"""Ports for local stacks, claimed race-free across every stack of this user on this machine.

A stack wants stable ports (a fixed base, so the dashboard bookmark and ``FERRY_API`` keep working)
but must never share one with another stack started at the same moment — a check "is it free?"
followed later by the emulator binding it races with a second ``ferry dev up`` doing the same. So
ports are *claimed*: under an exclusive lock on ``<claims>/lock``, a port is taken only when no live
claim of another home holds it and it can be bound right now, and the claim (a file ``<claims>/<port>``
naming the home) is written before the lock is released. A claim stays live while its stack records
the port in its ``state.json``, or while the process that claimed it runs (start-up); ``ferry dev
down`` releases the home's claims.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.dev.processes import pid_alive
from ferry.errors import InfraError

DEFAULT_BASE_PORT = 8700
START_WINDOW_S = 600.0  # a claim without a recorded stack is live this long while its claimer runs


def claims_dir() -> Path:
    root = os.environ.get("FERRY_PORTS_DIR") or str(Path(tempfile.gettempdir()) / f"ferry-ports-{os.getuid()}")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _locked() -> Iterator[Path]:
    d = claims_dir()
    with open(d / "lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield d
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens on ``port`` and a server can bind it now.

    Probed the way the servers bind (``SO_REUSEADDR``: werkzeug, gunicorn and the Java emulators set it):
    connections of a stack just stopped linger in TIME_WAIT for a minute and refuse a plain bind, but not
    the server's — without it ``ferry dev up --base-port B`` right after ``down`` failed on its own old
    ports. A listener still refuses the bind (Linux allows no second bind next to a listening socket).
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    with socket.socket() as probe:  # a listener on another address of this host answers here
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) != 0


def _recorded_ports(home: str) -> set[int]:
    try:
        state = json.loads((Path(home) / "state.json").read_text())
    except (OSError, ValueError):
        return set()
    return {int(c["port"]) for c in state.get("components", []) if isinstance(c, dict) and c.get("port")}


def _live_claim(path: Path) -> dict[str, Any] | None:
    try:
        claim = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    port = int(path.name)
    if port in _recorded_ports(claim.get("home", "")):
        return claim
    if pid_alive(int(claim.get("pid", 0))) and time.time() - float(claim.get("at", 0)) < START_WINDOW_S:
        return claim
    return None


@dataclass
class Wanted:
    """One port a component wants: ``preferred`` (None: any free port)."""

    what: str
    preferred: int | None


@dataclass
class Claimed:
    ports: dict[str, int]
    notes: list[str] = field(default_factory=list)


def claim(wanted: Sequence[Wanted], home: Path, host: str = "127.0.0.1", strict: bool = False) -> Claimed:
    """Claim one port per wanted component for ``home``.

    A preferred port that another stack claims or another program holds is replaced by a free one with
    a note (``strict``: an InfraError naming every such port instead)."""
    home_s = str(Path(home).resolve())
    out = Claimed({})
    with _locked() as d:
        taken: set[int] = set()
        for w in wanted:
            port = w.preferred
            if port is not None:
                holder = _live_claim(d / str(port))
                mine = holder is not None and holder.get("home") == home_s
                if (holder is None or mine) and bindable(port, host):
                    out.ports[w.what] = port
                    taken.add(port)
                    continue
                who = f"the local stack in {holder['home']}" if holder and not mine else "another program"
                out.notes.append(f"{w.what}: port {port} is in use by {who}")
            if strict:
                continue
            while True:
                with socket.socket() as s:
                    s.bind((host, 0))
                    port = int(s.getsockname()[1])
                if port not in taken and _live_claim(d / str(port)) is None:
                    break
            if w.preferred is not None:
                out.notes[-1] += f"; using {port} instead"
            out.ports[w.what] = port
            taken.add(port)
        if strict and out.notes:
            raise InfraError(f"port(s) in use: {'; '.join(out.notes)} — free them or choose another --base-port "
                             "(without --base-port, taken ports move with a note)", {"ports": out.notes})
        now = time.time()
        for what, port in out.ports.items():
            (d / str(port)).write_text(json.dumps({"home": home_s, "what": what, "pid": os.getpid(), "at": now}))
    Path(home).mkdir(parents=True, exist_ok=True)
    (Path(home) / LAST_USED).write_text(json.dumps(out.ports))
    return out


LAST_USED = "ports.json"


def last_used(home: Path) -> dict[str, int]:
    """The ports the home's last stack got (component -> port), so a moved port stays where it moved."""
    try:
        data = json.loads((Path(home) / LAST_USED).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}


def release(home: Path) -> int:
    """Drop every claim of ``home`` (its stack is down); returns how many."""
    home_s = str(Path(home).resolve())
    n = 0
    with _locked() as d:
        for path in d.iterdir():
            if not path.name.isdigit():
                continue
            try:
                if json.loads(path.read_text()).get("home") == home_s:
                    path.unlink()
                    n += 1
            except (OSError, ValueError):
                continue
    return n
