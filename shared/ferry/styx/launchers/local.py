"""The local launcher: runs ``command + args`` as a detached subprocess (the local stack's Cloud Run).

Each execution gets a directory ``<log_dir>/styx/<execution_id>/`` with ``log`` (stdout+stderr),
``pid`` (created by the wrapper itself, exclusively: an execution started iff its ``pid`` exists, which
is what ``find`` looks at) and, once the job ends, ``exit`` (its exit code). A tiny ``sh`` wrapper writes
``exit``, so the execution outlives the process that launched it (an HTTP function request) and any
later tick, in any process, can poll it from the files alone. The wrapper leads its own session: cancel
kills the group.

A launch is idempotent per execution id: the wrapper creates ``pid`` with ``set -C`` (O_EXCL), so of two
launches of one id — a tick that stalled past the lost-submission window and woke, and the tick that
found the submission lost and launched it again — exactly one runs the command; the other's wrapper
exits without running it, and both launches answer the same handle.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from ferry.dev.processes import pid_alive
from ferry.errors import InfraError, NotFound
from ferry.styx.launchers import Launched, LaunchSpec, Status

# $1 log file, $2 exit file, $3 pid file, then the command. The wrapper claims the execution by creating
# its pid file exclusively (``set -C``): a second wrapper of the same id (a late duplicate launch) finds it
# and exits without running anything; so does a wrapper whose execution was cancelled before it started.
# ``cancelled`` is looked at again after the pid is written: cancel writes ``cancelled`` before it reads
# ``pid``, so either the canceller finds the pid (and kills it) or the wrapper finds ``cancelled`` (and
# runs nothing) — never neither (a job cancelled as its wrapper started used to run on, orphaned).
# The exit code lands atomically (write then rename).
_WRAPPER = ('log=$1; ex=$2; pf=$3; shift 3; [ -e "${pf%/*}/cancelled" ] && exit 0; '
            'set -C; { echo $$ >"$pf"; } 2>/dev/null || exit 0; set +C; '
            '[ -e "${pf%/*}/cancelled" ] && exit 0; '
            '"$@" >>"$log" 2>&1; c=$?; echo $c >"$ex.tmp"; mv "$ex.tmp" "$ex"')
# What a local execution gets of the launching process's environment (as a Cloud Run job gets its
# container's): finding programs and a home, locale and time zone — nothing of the stack.
PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH")
# A launched execution whose wrapper has not claimed it yet is pending; after this long it never will.
_START_WITHIN = 60.0


def _resolve(argv: list[str]) -> list[str]:
    # `python` in a manifest means "a Python": locally, the interpreter Ferry itself runs under.
    if argv and argv[0] in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    return argv


class LocalLauncher:
    def __init__(self, log_dir: str | os.PathLike[str], workdir: str | None = None) -> None:
        self.base = Path(log_dir).resolve() / "styx"
        self.workdir = workdir or os.environ.get("FERRY_STYX_WORKDIR") or os.getcwd()

    def launch(self, spec: LaunchSpec) -> Launched:
        argv = _resolve([*spec.command, *spec.args])
        if not argv:
            raise InfraError(f"workflow {spec.workflow} has neither command nor args to run locally")
        d = self.base / spec.execution_id
        d.mkdir(parents=True, exist_ok=True)
        log = d / "log"
        if (d / "pid").exists():  # this execution id started already: the same execution, not a second one
            return Launched(handle=str(d), log_uri=f"file://{log}")
        log.touch()
        (d / "launched").write_text(str(time.time()))
        # Only what is documented (docs/styx.md, "Inputs"): the machine's basics, the spec's env (the
        # workflow's, the trigger's, FERRY_*), never the stack's own environment (its secret, its sink).
        env = {**{k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}, **spec.env,
               "FERRY_EXECUTION_ID": spec.execution_id}
        shell = shutil.which("sh") or "/bin/sh"
        try:
            proc = subprocess.Popen([shell, "-c", _WRAPPER, "sh", str(log), str(d / "exit"), str(d / "pid"), *argv],
                                    env=env, cwd=self.workdir, start_new_session=True,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError as exc:
            raise InfraError(f"could not start {argv[0]!r}: {exc}") from exc
        # Reap it when it ends so a long-lived launching process keeps no zombies.
        threading.Thread(target=proc.wait, daemon=True).start()
        return Launched(handle=str(d), log_uri=f"file://{log}")

    def find(self, workflow: str, execution_id: str) -> Launched | None:
        d = self.base / execution_id
        if not (d / "pid").exists():
            return None
        return Launched(handle=str(d), log_uri=f"file://{d / 'log'}")

    def poll(self, handle: str) -> Status:
        d = Path(handle)
        exit_file = d / "exit"
        if exit_file.exists():
            try:
                code = int(exit_file.read_text().strip())
            except ValueError:
                pass
            else:  # the wrapper wrote pid as the job started and exit as it ended: the job's own run time
                return Status("ended", code, started_at=_mtime(d / "pid"), ended_at=_mtime(exit_file))
        if (d / "cancelled").exists():
            return Status("ended", None, "cancelled")
        try:
            pid = int((d / "pid").read_text())
        except (OSError, ValueError):
            try:
                launched = float((d / "launched").read_text())
            except (OSError, ValueError):
                return Status("ended", None, f"no such local execution: {handle}")
            if time.time() - launched < _START_WITHIN:
                return Status("pending")  # launched; its wrapper has not claimed it yet
            return Status("ended", None, "the execution never started")
        if pid_alive(pid):
            return Status("running")
        if exit_file.exists():  # it ended between the two looks
            return self.poll(handle)
        return Status("ended", None, "the process ended without an exit code (killed?)")

    def cancel(self, handle: str) -> None:
        d = Path(handle)
        if not d.is_dir():
            return
        (d / "cancelled").write_text(str(time.time()))  # also keeps a wrapper not started yet from running
        try:
            pid = int((d / "pid").read_text())
        except (OSError, ValueError):
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return

        def finish() -> None:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and pid_alive(pid):
                time.sleep(0.1)
            if pid_alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        threading.Thread(target=finish, daemon=True).start()

    def logs(self, handle: str, limit: int = 200) -> list[str]:
        log = Path(handle) / "log"
        if not log.exists():
            raise NotFound(f"no log file for execution {handle}")
        return log.read_text(errors="replace").splitlines()[-limit:]


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return None
