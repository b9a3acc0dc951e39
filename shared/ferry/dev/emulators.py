"""The official Pub/Sub and Firestore emulators: find, start (own process group), wait, stop."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from ferry.errors import InfraError

INSTALL_HINT = (
    "install the Google Cloud SDK with its emulators and Java 17: "
    "apt-get install google-cloud-cli google-cloud-cli-pubsub-emulator "
    "google-cloud-cli-firestore-emulator openjdk-17-jre-headless"
)


@dataclass(frozen=True)
class EmulatorKind:
    name: str
    component_dir: str
    command: tuple[str, ...]
    env_var: str


FIRESTORE = EmulatorKind("firestore", "cloud-firestore-emulator", ("emulators", "firestore", "start"),
                         "FIRESTORE_EMULATOR_HOST")
PUBSUB = EmulatorKind("pubsub", "pubsub-emulator", ("beta", "emulators", "pubsub", "start"), "PUBSUB_EMULATOR_HOST")
KINDS = (PUBSUB, FIRESTORE)


def sdk_root() -> Path | None:
    gcloud = shutil.which("gcloud")
    if not gcloud:
        return None
    return Path(os.path.realpath(gcloud)).parent.parent


def missing() -> str | None:
    """None when both emulators can run here; else one line saying what is missing and how to install."""
    root = sdk_root()
    if root is None:
        return f"gcloud not found — {INSTALL_HINT}"
    absent = [k.name for k in KINDS if not (root / "platform" / k.component_dir).is_dir()]
    if absent:
        return f"the {' and '.join(absent)} emulator(s) are not installed — {INSTALL_HINT}"
    if not shutil.which("java"):
        return f"java not found (the emulators need Java 17) — {INSTALL_HINT}"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_http(url: str, deadline_s: float, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
    """Poll ``url`` until it answers 200 or the deadline passes (then InfraError with the log tail)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            break
        try:
            if httpx.get(url, timeout=0.5).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    state = f"exited with {proc.returncode}" if proc is not None and proc.poll() is not None else "did not answer"
    raise InfraError(f"{url} {state} within {deadline_s:.0f}s", {"log_tail": tail})


@dataclass
class RunningEmulator:
    kind: str
    host: str
    port: int
    pid: int
    log: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def spawn(kind: EmulatorKind, port: int, log_path: Path, project: str = "ferry-local",
          host: str = "127.0.0.1", extra_args: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """Start one emulator in its own process group without waiting for it (see ``wait_http``)."""
    problem = missing()
    if problem:
        raise InfraError(problem)
    if port_in_use(port, host):
        raise InfraError(f"port {port} is in use: cannot start the {kind.name} emulator there")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    args = ["gcloud", *kind.command, f"--host-port={host}:{port}", f"--project={project}", "--quiet"]
    if kind is FIRESTORE:
        args.append("--verbosity=error")
    args += list(extra_args)
    with open(log_path, "ab") as log:
        # Its own session/process group: killing the gcloud wrapper alone leaves the Java emulator running.
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def start(kind: EmulatorKind, port: int, log_path: Path, project: str = "ferry-local",
          host: str = "127.0.0.1", deadline_s: float = 60.0) -> RunningEmulator:
    """Start one emulator in its own process group and wait until it answers."""
    proc = spawn(kind, port, log_path, project, host)
    try:
        wait_http(f"http://{host}:{port}/", deadline_s, proc, log_path)
    except InfraError:
        stop_group(proc.pid)
        raise
    return RunningEmulator(kind.name, host, port, proc.pid, str(log_path))


def stop_group(pid: int, grace_s: float = 5.0) -> None:
    """Stop a process group started with start_new_session: TERM, then KILL after the grace period."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + grace_s
    while time.monotonic() < end:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        try:  # reap it if it is our child
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
