"""``LocalStack``: a running local stack as end-to-end tests (and scripts) use it.

Built by the same code as ``ferry dev up`` (``ferry.dev.stack.up``); the pytest fixture ``stack`` in
``tests/e2e/conftest.py`` starts one per test session on the session's emulators.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ferry.dev import stack as stack_mod

# Every CLI run through ``run_cli`` in this process: (command line, stdout, stderr). The e2e suite checks
# at its end that no output carries a Python repr (``{'`` or ``['``).
CAPTURED: list[tuple[str, str, str]] = []
PYTHON_REPRS = ("{'", "['")


def run_cli(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([ferry, *args], capture_output=True, text=True, **kwargs)``, recorded."""
    result = subprocess.run([ferry_executable(), *args], capture_output=True, text=True, **kwargs)
    CAPTURED.append((" ".join(args), result.stdout or "", result.stderr or ""))
    return result


def python_reprs() -> list[str]:
    """The captured outputs that carry a Python repr, each with the command and the offending line."""
    found = []
    for command, out, err in CAPTURED:
        for line in (out + "\n" + err).splitlines():
            if any(r in line for r in PYTHON_REPRS):
                found.append(f"ferry {command}: {line.strip()[:200]}")
    return found


def ferry_executable() -> str:
    """The ``ferry`` console script of the running interpreter's environment."""
    exe = Path(sys.executable).parent / "ferry"
    return str(exe) if exe.exists() else "ferry"


class LocalStack:
    """A running local stack: its home, project, function URLs, a CLI runner and in-process services."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self.home = Path(state["home"])
        self.project: str = state["project"]
        self.function_urls: dict[str, str] = stack_mod.function_urls(state)
        self.api_url: str = state.get("api_url") or ""
        self.receiver_url: str = state.get("receiver_url") or ""  # the channel receiver (ferry.dev.receiver)
        self.env: dict[str, str] = {
            **{k: v for k, v in os.environ.items() if k not in ("FERRY_USER",)},
            **state["env"],
            "FERRY_API": self.api_url,
            "FERRY_HOME": str(self.home),
            "FERRY_SINK": f"file://{self.home}/sink",
            "FERRY_LOG_DIR": str(self.home / "logs"),
            "FERRY_LAUNCHER": "local",
            "FERRY_ALLOW_CLOCK_OVERRIDE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self._services: Any = None
        # Headers of Ferry's own operational callers (tick, evaluate, close, scale, deliver): the secret.
        self.operator_headers: dict[str, str] = {"X-Ferry-Stack-Secret": state.get("stack_secret", "")}

    def cli(self, *args: str, input: str | None = None, user: str | None = None, check: bool = False,
            timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``ferry ARGS...`` against this stack (``user`` sets FERRY_USER; ``--as`` is not added;
        ``env`` adds variables, e.g. FERRY_NOW)."""
        env = {**self.env, **(env or {})}
        if user is not None:
            env["FERRY_USER"] = user
        result = run_cli(list(args), input=input, env=env, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"ferry {' '.join(args)} exited {result.returncode}\n"
                                 f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    def services(self) -> Any:
        """In-process ``ferry.bootstrap.Services`` on the same emulators and project (for assertions)."""
        if self._services is None:
            from ferry.bootstrap import bootstrap
            from ferry.config import Settings

            for k in ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST"):
                os.environ[k] = self.state["env"][k]  # the Google clients read these when built
            wanted: dict[str, Any] = {"project": self.project, "store": "firestore", "broker": "pubsub",
                      "sink": self.env["FERRY_SINK"], "launcher": "local", "log_dir": self.env["FERRY_LOG_DIR"],
                      "allow_clock_override": True}
            known = {f.name for f in dataclasses.fields(Settings)}
            self._services = bootstrap(Settings(**{k: v for k, v in wanted.items() if k in known}))
        return self._services

    def log_text(self, function: str) -> str:
        """Everything that function's process wrote (its structured log lines)."""
        path = stack_mod.log_dir(self.home) / f"{function}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def down(self) -> dict[str, Any]:
        return stack_mod.down(self.home)

    @classmethod
    @contextmanager
    def running(cls, config: stack_mod.StackConfig) -> Iterator[LocalStack]:
        """A stack brought up with ``config`` for the ``with`` block, brought down after it (failed or not)."""
        stack = cls(stack_mod.up(config).state)
        try:
            yield stack
        finally:
            stack.down()
