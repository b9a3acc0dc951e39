"""The job launcher port: start an execution, poll it, cancel it, read its logs.

Adapters: ``local`` (a subprocess, for the local stack) and ``cloudrun`` (Cloud Run jobs). The composition
root (``ferry.bootstrap``) builds the one ``settings.launcher`` names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal, Protocol


@dataclass(frozen=True)
class LaunchSpec:
    """One execution of a workflow instance: the container and its per-execution overrides."""

    workflow: str
    parameter: str
    execution_id: str
    image: str
    command: list[str]
    args: list[str]                   # "{}" already replaced by the parameter
    env: dict[str, str]               # workflow env, trigger env, then FERRY_* (these win)
    timeout: timedelta
    cpu: str = "1"
    memory: str = "512Mi"
    service_account: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Launched:
    handle: str                       # the launcher's name for the execution (to poll / cancel)
    log_uri: str | None = None        # where a person reads its logs


@dataclass(frozen=True)
class Status:
    phase: Literal["pending", "running", "ended"]
    exit_code: int | None = None      # when ended; None = ended without one (killed, failed to start)
    message: str = ""


class Launcher(Protocol):
    def launch(self, spec: LaunchSpec) -> Launched:
        """Start one execution. Raises InfraError if it could not be started."""
        ...

    def poll(self, handle: str) -> Status:
        """Where the execution is now. Raises InfraError if the launcher cannot tell."""
        ...

    def cancel(self, handle: str) -> None:
        """Stop the execution (best effort, idempotent)."""
        ...

    def logs(self, handle: str, limit: int = 200) -> list[str]:
        """The last ``limit`` lines the execution wrote."""
        ...

