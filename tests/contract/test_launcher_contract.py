"""The Launcher contract (``ferry.styx.launchers.Launcher``), run on every launcher: the local one (real
subprocesses), Cloud Run (the real run_v2 clients against a local fake of the Run v2 gRPC API) and the
hand-written fake the Styx unit tests use. A new launcher (Kubernetes, Batch) adds a ``Platform``
below and passes this file.

A ``Platform`` is the launcher plus what the test needs to play the part of the jobs: a spec whose
execution, once told to ``finish``, writes what it received (its args and env, one line each: the
``_JOB`` script) and exits with the code it was told. Tests read those lines back through ``logs``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

from ferry.styx.launchers import Launcher, LaunchSpec, Status


class Platform(Protocol):
    launcher: Launcher

    def spec(self, execution_id: str, **kw: Any) -> LaunchSpec: ...
    def finish(self, handle: str, code: int) -> None: ...
    def fresh(self) -> Launcher: ...  # a second launcher over the same platform (another process)


def _spec(execution_id: str, command: list[str], **kw: Any) -> LaunchSpec:
    base = LaunchSpec(workflow="Contract_Job", parameter="2026-11-26T14", execution_id=execution_id, image="img:1",
                      command=command, args=["--hour", "2026-11-26T14"],
                      env={"MODE": "full", "FERRY_EXECUTION_ID": execution_id}, timeout=timedelta(minutes=5))
    return replace(base, **kw)


# A job that waits for its go file, prints what it received, then exits with the code written in it.
_JOB = ('while [ ! -f "$CONTRACT_GO" ]; do sleep 0.05; done; '
        'for a in "$@"; do echo "arg=$a"; done; echo "env MODE=$MODE"; '
        'echo "env FERRY_EXECUTION_ID=$FERRY_EXECUTION_ID"; exit "$(cat "$CONTRACT_GO")"')


def _job_lines(args: list[str], env: dict[str, str]) -> list[str]:
    """What ``_JOB`` writes, for the platforms whose jobs the test plays itself."""
    return ([f"arg={a}" for a in args] + [f"env MODE={env.get('MODE', '')}",
                                          f"env FERRY_EXECUTION_ID={env.get('FERRY_EXECUTION_ID', '')}"])


def received(launcher: Launcher, handle: str) -> tuple[list[str], dict[str, str]]:
    """The args and env an ended execution wrote, read back through ``logs`` (a line may carry a
    timestamp before the text, as Cloud Logging's do)."""
    lines = [m.group(1) for ln in launcher.logs(handle) if (m := re.search(r"((?:arg=|env ).*)$", ln))]
    args = [ln[4:] for ln in lines if ln.startswith("arg=")]
    env = dict(ln[4:].split("=", 1) for ln in lines if ln.startswith("env "))
    return args, env


class LocalPlatform:
    def __init__(self, tmp_path: Path) -> None:
        from ferry.styx.launchers.local import LocalLauncher

        self.tmp = tmp_path
        self.launcher = LocalLauncher(tmp_path / "logs", workdir=str(tmp_path))
        self.go: dict[str, Path] = {}

    def fresh(self) -> Launcher:
        from ferry.styx.launchers.local import LocalLauncher

        return LocalLauncher(self.tmp / "logs", workdir=str(self.tmp))

    def spec(self, execution_id: str, **kw: Any) -> LaunchSpec:
        go = self.tmp / f"go-{execution_id}"
        s = _spec(execution_id, ["sh", "-c", _JOB, "job"], **kw)
        return replace(s, env={**s.env, "CONTRACT_GO": str(go)})

    def finish(self, handle: str, code: int) -> None:
        go = self.tmp / f"go-{Path(handle).name}"
        go.with_suffix(".tmp").write_text(str(code))
        go.with_suffix(".tmp").rename(go)


class CloudRunPlatform:
    def __init__(self) -> None:
        from fakes.cloud_logging import FakeLogging
        from fakes.run_v2 import FakeRunV2

        self.fake, self.logging = FakeRunV2(), FakeLogging()
        self.fake.start()
        self.logging.start()
        self.launcher = self.fresh()

    def fresh(self) -> Launcher:
        from ferry.styx.launchers.cloudrun import CloudRunLauncher

        return CloudRunLauncher("proj", "europe-west1", *self.fake.clients(), logging_client=self.logging.client())

    def stop(self) -> None:
        self.fake.stop()
        self.logging.stop()

    def spec(self, execution_id: str, **kw: Any) -> LaunchSpec:
        return _spec(execution_id, ["python", "-m", "job"], **kw)

    def finish(self, handle: str, code: int) -> None:
        """The task runs: it writes what its container got (args and env, as Cloud Run passes them on)
        to Cloud Logging, then exits with ``code``."""
        container = self.fake.executions[handle].template.containers[0]
        env = {e.name: e.value for e in container.env}
        _, _, job, _, execution = handle.split("/")[-5:]
        for line in _job_lines(list(container.args), env):
            self.logging.add(execution, line, job=job)
        self.fake.finish(handle, code)


class FakePlatform:
    def __init__(self) -> None:
        from fakes.styx_launcher import FakeLauncher

        self.launcher = FakeLauncher()

    def fresh(self) -> Launcher:
        return self.launcher  # one process: the fake's memory is the platform

    def spec(self, execution_id: str, **kw: Any) -> LaunchSpec:
        return _spec(execution_id, ["job"], **kw)

    def finish(self, handle: str, code: int) -> None:
        s = self.launcher.launched[int(handle.rsplit("-", 1)[1]) - 1]
        env = {**s.env, "FERRY_EXECUTION_ID": s.execution_id}  # what a platform sets
        self.launcher.lines[handle] = _job_lines(list(s.args), env)
        self.launcher.status[handle] = Status("ended", code)


@pytest.fixture(params=["local", "cloudrun", "fake"])
def platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Platform]:
    if request.param == "local":
        p: Any = LocalPlatform(tmp_path)
    elif request.param == "cloudrun":
        p = CloudRunPlatform()
    else:
        p = FakePlatform()
    try:
        yield p
    finally:
        if request.param == "cloudrun":
            p.stop()


def _wait(probe: Any, seconds: float = 15.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"nothing after {seconds}s")


def _ended(launcher: Launcher, handle: str) -> Status:
    def probe() -> Status | None:
        status = launcher.poll(handle)
        return status if status.phase == "ended" else None
    return _wait(probe)


def test_launch_then_poll_until_the_exit_code(platform: Platform) -> None:
    launched = platform.launcher.launch(platform.spec("contract-1"))
    assert launched.handle
    assert platform.launcher.poll(launched.handle).phase in ("pending", "running")
    platform.finish(launched.handle, 7)
    status = _ended(platform.launcher, launched.handle)
    assert status.exit_code == 7


@pytest.mark.parametrize("code", [0, 20, 50])
def test_the_exit_codes_styx_reads_come_back_as_they_are(platform: Platform, code: int) -> None:
    handle = platform.launcher.launch(platform.spec(f"contract-code-{code}")).handle
    platform.finish(handle, code)
    assert _ended(platform.launcher, handle).exit_code == code


def test_the_execution_gets_the_args_and_env_of_its_spec_and_its_logs_say_so(platform: Platform) -> None:
    handle = platform.launcher.launch(platform.spec("contract-2")).handle
    platform.finish(handle, 0)
    _ended(platform.launcher, handle)
    args, env = received(platform.fresh(), handle)  # logs: from any launcher instance, by handle alone
    assert args == ["--hour", "2026-11-26T14"]  # in order, oldest line first
    assert env["MODE"] == "full"


def test_another_launcher_instance_polls_it_from_its_handle_alone(platform: Platform) -> None:
    handle = platform.launcher.launch(platform.spec("contract-3")).handle
    platform.finish(handle, 3)
    assert _ended(platform.fresh(), handle).exit_code == 3


def test_cancel_ends_it_without_an_exit_code_and_is_idempotent(platform: Platform) -> None:
    handle = platform.launcher.launch(platform.spec("contract-4")).handle
    platform.launcher.cancel(handle)
    status = _ended(platform.launcher, handle)
    assert status.exit_code is None and status.message == "cancelled"
    platform.launcher.cancel(handle)
    assert _ended(platform.launcher, handle).message == "cancelled"


def test_executions_are_independent(platform: Platform) -> None:
    a = platform.launcher.launch(platform.spec("contract-5a")).handle
    b = platform.launcher.launch(platform.spec("contract-5b")).handle
    assert a != b
    platform.finish(b, 1)
    assert _ended(platform.launcher, b).exit_code == 1
    assert platform.launcher.poll(a).phase in ("pending", "running")
    platform.launcher.cancel(a)


def test_find_returns_the_execution_started_with_an_execution_id(platform: Platform) -> None:
    launched = platform.launcher.launch(platform.spec("contract-6"))
    other = platform.launcher.launch(platform.spec("contract-6b"))
    found = platform.fresh().find("Contract_Job", "contract-6")  # a launcher that did not launch it
    assert found is not None and found.handle == launched.handle and found.handle != other.handle
    platform.finish(launched.handle, 0)
    _ended(platform.launcher, launched.handle)
    ended = platform.fresh().find("Contract_Job", "contract-6")
    assert ended is not None and ended.handle == launched.handle  # ended executions are found too
    platform.launcher.cancel(other.handle)


def test_find_of_an_execution_never_started_is_none(platform: Platform) -> None:
    assert platform.launcher.find("Never_Launched", "contract-7") is None  # no job at all
    other = platform.launcher.launch(platform.spec("contract-7a"))
    try:
        assert platform.launcher.find("Contract_Job", "contract-7") is None
    finally:
        platform.launcher.cancel(other.handle)  # its job would wait for its go file forever


def test_the_execution_knows_its_execution_id(platform: Platform) -> None:
    handle = platform.launcher.launch(platform.spec("contract-8", env={"MODE": "x"})).handle
    platform.finish(handle, 0)
    _ended(platform.launcher, handle)
    _, env = received(platform.launcher, handle)
    assert env["FERRY_EXECUTION_ID"] == "contract-8" and env["MODE"] == "x"


def test_a_second_launch_of_one_execution_id_is_the_same_execution(platform: Platform) -> None:
    """A tick that stalled past the lost-submission window and woke launches what another tick already
    launched again under the same id: one execution, not two (the lines of its job appear once).

    Cloud Run names executions itself (RunJob takes no id), so its launcher cannot make this atomic;
    there the submitting tick's lease (it stops launching at half the lost-submission window, and
    recovery waits for the whole window) is what keeps a late launch from doubling (docs/styx.md)."""
    first = platform.launcher.launch(platform.spec("contract-9"))
    again = platform.fresh().launch(platform.spec("contract-9"))
    if isinstance(platform, CloudRunPlatform):
        # RunJob takes no id, so a second launch is a second execution (docs/styx.md, 'Slow is not dead'):
        # the lease, not the launcher, keeps it from happening there.
        assert again.handle != first.handle
        return
    assert again.handle == first.handle
    platform.finish(first.handle, 0)
    assert _ended(platform.launcher, first.handle).exit_code == 0
    args, _ = received(platform.launcher, first.handle)
    assert args == ["--hour", "2026-11-26T14"]  # written once: one execution ran
