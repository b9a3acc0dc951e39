"""Process groups of the local stack, from /proc: start one in its own session, tell whether a
recorded one is still the process we started, stop groups whole (TERM, then KILL), memory accounting.

Knows nothing about the stack itself: ``ferry.dev.stack`` records what it starts and calls these.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time) of a process from /proc, None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may contain spaces and parentheses
    return fields[0], int(fields[2]), int(fields[19])


def start_time(pid: int) -> int | None:
    stat = proc_stat(pid)
    return stat[2] if stat else None


def group_members(pgids: Iterable[int]) -> dict[int, list[int]]:
    """Live (non-zombie) processes of each process group, from /proc."""
    wanted = set(pgids)
    members: dict[int, list[int]] = {g: [] for g in wanted}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = proc_stat(int(entry.name))
        if stat and stat[1] in wanted and stat[0] != "Z":
            members[stat[1]].append(int(entry.name))
    return members


def reap(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def stop_groups(pgids: Sequence[int], grace_s: float = 8.0) -> list[int]:
    """TERM every group at once, wait for all together, KILL what is left; return pids still alive."""
    pgids = [g for g in pgids if g]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for g in pgids:
            try:
                os.killpg(g, sig)
            except (ProcessLookupError, PermissionError):
                pass
        end = time.monotonic() + (grace_s if sig == signal.SIGTERM else 3.0)
        while True:
            reap(pgids)
            alive = {g: m for g, m in group_members(pgids).items() if m}
            if not alive or time.monotonic() > end:
                break
            time.sleep(0.05)
        if not alive:
            return []
        pgids = list(alive)
    return [p for m in group_members(pgids).values() for p in m]


def ours(component: dict[str, Any]) -> bool:
    """A recorded process group is ours while its leader is the process we started (same start time)
    or, with the leader gone, while the group still has members (a group id is not reused meanwhile)."""
    pid = component.get("pid")
    if not pid:
        return False
    st = start_time(pid)
    if st is not None:
        return st == component.get("start_time")
    return bool(group_members([pid])[pid])


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, ended but not yet reaped, has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def alive(component: dict[str, Any]) -> bool:
    pid = component.get("pid")
    if not pid:
        return False
    stat = proc_stat(pid)
    return bool(stat and stat[0] != "Z" and stat[2] == component.get("start_time"))


def spawn(args: list[str], log_path: Path, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=cwd, start_new_session=True)


def functions_framework() -> list[str]:
    exe = Path(sys.executable).parent / "functions-framework"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("functions-framework")
    return [found] if found else [sys.executable, "-m", "functions_framework"]


def rss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def pss_bytes(pids: Iterable[int]) -> int:
    """Proportional set size: shared pages (a forked gunicorn worker shares its master's) counted once."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total
