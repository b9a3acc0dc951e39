"""The job launcher port: start an execution, poll it, cancel it, read its logs.

Adapters: ``local`` (a subprocess, for the local stack) and ``cloudrun`` (Cloud Run jobs). The composition
root (``ferry.bootstrap``) builds the one ``settings.launcher`` names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from ferry.errors import InfraError


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
    started_at: datetime | None = None  # when the platform started the job (its run time is ended - started),
    ended_at: datetime | None = None    # when known: not when a tick happened to notice

    @property
    def ran_seconds(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, round((self.ended_at - self.started_at).total_seconds(), 3))


class Throttled(InfraError):
    """The platform refused the launch for a quota (HTTP 429 / gRPC RESOURCE_EXHAUSTED: the request
    rate, running executions, the number of jobs) and **started nothing**: the instance goes back to
    the queue without spending a try. ``slow_down``: a request rate was exceeded, so the submission
    rate slows down; False when the region is only full for now (jobs, running executions).
    ``stop``: the tick's other launches would be refused too, so it launches no more (False: this one
    lost a race for room another launch may not)."""

    def __init__(self, message: str, details: Any = None, *, slow_down: bool = True, stop: bool = True) -> None:
        super().__init__(message, details)
        self.slow_down = slow_down
        self.stop = stop


class Launcher(Protocol):
    """Where executions run. The contract every launcher keeps (tests/contract/test_launcher_contract.py
    runs it on each one; a new launcher passes it):

    - ``launch`` starts one execution of ``spec`` and returns its handle; the execution gets the spec's
      args and env (``FERRY_EXECUTION_ID`` = ``spec.execution_id`` included) and exits with its own
      code, which ``poll`` reports unchanged (Styx's exit-code rules read 0, 20 and 50).
    - A handle is all a launcher needs: another launcher instance, in another process, polls, cancels
      and reads the logs of an execution from its handle alone (the tick that launched it may be gone).
    - ``poll`` says ``pending`` or ``running`` until the execution ends, then ``ended`` with its exit
      code, or with ``exit_code=None`` and a message when it ended without one (killed, cancelled:
      message ``cancelled``).
    - ``cancel`` stops it (best effort) and is idempotent.
    - ``logs`` returns the last lines the execution wrote, oldest first.
    - ``find`` answers, from the platform alone, whether an execution with this execution id was
      started, and returns its handle: a tick that died between launching and recording the launch
      is repaired by adopting the execution instead of starting a second one.
    - a second ``launch`` of an execution id already launched starts nothing and answers the same
      handle (a tick that stalled past the lost-submission window wakes and launches what another tick
      launched again: one execution). Cloud Run cannot keep this one (RunJob takes no id): there the
      submitting tick's lease does (docs/styx.md, "Slow is not dead").
    """

    def launch(self, spec: LaunchSpec) -> Launched:
        """Start one execution. Raises Throttled if a platform quota refused it (nothing started),
        InfraError if it could not be started."""
        ...

    def find(self, workflow: str, execution_id: str) -> Launched | None:
        """The execution of ``workflow`` started with ``execution_id``, or None if there is none.
        Raises InfraError if the launcher cannot tell."""
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

