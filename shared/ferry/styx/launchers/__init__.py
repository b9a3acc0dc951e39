"""The job launcher port: start an execution, poll it, cancel it, read its logs.

Adapters: ``local`` (a subprocess, for the local stack) and ``cloudrun`` (Cloud Run jobs). The one place
that picks one is ``for_services`` (``settings.launcher``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from ferry.wiring import Services


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


def for_services(services: Services) -> Launcher:
    """The process's launcher, by ``settings.launcher`` ("local" or "cloudrun")."""
    def build() -> Launcher:
        # Explicit everywhere: the deploy plan sets FERRY_LAUNCHER=cloudrun on every function
        # (cloud_env, infra/core.yaml) and the local stack always sets local.
        kind = services.settings.launcher
        if kind == "local":
            from ferry.styx.launchers.local import LocalLauncher

            return LocalLauncher(services.settings.log_dir)
        if kind == "cloudrun":
            from ferry.styx.launchers.cloudrun import CloudRunLauncher

            return CloudRunLauncher(services.settings.project, services.settings.region)
        raise ValueError(f"unknown launcher {kind!r} (FERRY_LAUNCHER): use local or cloudrun")

    return services.extra("styx.launcher", build)  # type: ignore[no-any-return]
