"""The local launcher, for real: subprocesses, exit codes, log files, cancel, detachment."""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path

from ferry.styx.launchers import LaunchSpec
from ferry.styx.launchers.local import LocalLauncher

JOB = str(Path(__file__).resolve().parents[3] / "examples" / "styx" / "job.py")


def spec(execution_id: str, *args: str, env: dict[str, str] | None = None) -> LaunchSpec:
    return LaunchSpec(workflow="w", parameter="2026-11-26", execution_id=execution_id, image="img",
                      command=["python", JOB], args=list(args), env=env or {}, timeout=timedelta(minutes=1))


def wait_ended(launcher: LocalLauncher, handle: str, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = launcher.poll(handle)
        if status.phase == "ended":
            return status
        time.sleep(0.05)
    raise AssertionError(f"{handle} did not end in {seconds}s")


def test_exit_code_env_and_log(tmp_path) -> None:
    launcher = LocalLauncher(tmp_path)
    launched = launcher.launch(spec("e1", "--exit", "7", env={"FERRY_PARAMETER": "2026-11-26", "MODE": "x"}))
    status = wait_ended(launcher, launched.handle)
    assert status.exit_code == 7
    lines = launcher.logs(launched.handle)
    assert any("parameter=2026-11-26" in line for line in lines)
    assert any("MODE=x" in line for line in lines)
    assert launched.log_uri and launched.log_uri.startswith("file://")


def test_running_then_cancel(tmp_path) -> None:
    launcher = LocalLauncher(tmp_path)
    launched = launcher.launch(spec("e2", "--sleep", "30"))
    assert launcher.poll(launched.handle).phase in ("pending", "running")  # pending until its wrapper starts
    deadline = time.monotonic() + 30
    while launcher.poll(launched.handle).phase != "running":
        assert time.monotonic() < deadline, "the execution never started"
        time.sleep(0.05)
    launcher.cancel(launched.handle)
    status = wait_ended(launcher, launched.handle)
    assert status.exit_code is None and status.message == "cancelled"
    pid = int((Path(launched.handle) / "pid").read_text())
    deadline = time.monotonic() + 5
    from ferry.dev.processes import pid_alive as _alive

    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_the_wrapper_records_its_own_pid_so_find_does_not_depend_on_the_launcher(tmp_path) -> None:
    """A launching process killed right after starting the wrapper never writes ``pid``: the wrapper does."""
    import subprocess

    from ferry.styx.launchers.local import _WRAPPER

    d = tmp_path / "styx" / "e9"
    d.mkdir(parents=True)
    assert LocalLauncher(tmp_path).find("w", "e9") is None  # a directory alone is no execution
    proc = subprocess.Popen(["sh", "-c", _WRAPPER, "sh", str(d / "log"), str(d / "exit"), str(d / "pid"), "true"])
    assert proc.wait() == 0
    assert int((d / "pid").read_text()) == proc.pid and (d / "exit").read_text().strip() == "0"
    found = LocalLauncher(tmp_path).find("w", "e9")
    assert found is not None and found.handle == str(d)
    assert LocalLauncher(tmp_path).poll(found.handle).exit_code == 0


def test_missing_command_is_an_infra_error(tmp_path) -> None:
    import pytest

    from ferry.errors import InfraError

    s = LaunchSpec(workflow="w", parameter="p", execution_id="e4", image="i", command=[], args=[], env={},
                   timeout=timedelta(minutes=1))
    with pytest.raises(InfraError):
        LocalLauncher(tmp_path).launch(s)


def test_python_means_this_interpreter(tmp_path) -> None:
    from ferry.styx.launchers.local import _resolve

    assert _resolve(["python", "x.py"]) == [sys.executable, "x.py"]
    assert _resolve(["bash", "-c", "true"]) == ["bash", "-c", "true"]


def test_of_two_wrappers_of_one_execution_id_exactly_one_runs_the_command(tmp_path) -> None:
    """Two launches of one id racing (a stalled tick woke while another relaunched it): the pid file is
    created exclusively, so the loser's wrapper exits without running anything."""
    import subprocess

    from ferry.styx.launchers.local import _WRAPPER

    d = tmp_path / "styx" / "e10"
    d.mkdir(parents=True)
    ran = tmp_path / "ran"
    argv = ["sh", "-c", f"echo x >> {ran}"]
    procs = [subprocess.Popen(["sh", "-c", _WRAPPER, "sh", str(d / "log"), str(d / "exit"), str(d / "pid"), *argv])
             for _ in range(4)]
    assert [p.wait() for p in procs] == [0, 0, 0, 0]
    assert ran.read_text() == "x\n"
    assert int((d / "pid").read_text()) in {p.pid for p in procs}


def test_a_launch_cancelled_before_its_wrapper_started_never_runs(tmp_path) -> None:
    import subprocess

    from ferry.styx.launchers.local import _WRAPPER

    d = tmp_path / "styx" / "e11"
    d.mkdir(parents=True)
    LocalLauncher(tmp_path).cancel(str(d))
    ran = tmp_path / "ran"
    p = subprocess.Popen(["sh", "-c", _WRAPPER, "sh", str(d / "log"), str(d / "exit"), str(d / "pid"),
                          "sh", "-c", f"echo x >> {ran}"])
    assert p.wait() == 0 and not ran.exists() and not (d / "pid").exists()


def test_an_execution_gets_only_the_documented_environment(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Never the stack's own environment: its secret and its sink stay with the stack."""
    import json as _json
    import sys as _sys
    import time as _time
    from datetime import timedelta as _td

    from ferry.styx.launchers import LaunchSpec as _Spec
    from ferry.styx.launchers.local import PASSED_THROUGH
    from ferry.styx.launchers.local import LocalLauncher as _Local

    monkeypatch.setenv("FERRY_STACK_SECRET", "s3cret")
    monkeypatch.setenv("FERRY_SINK", "file:///stack/sink")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/stack/key.json")
    out = tmp_path / "env.json"
    code = f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    spec = _Spec(workflow="w", parameter="2026-12-07", execution_id="x-env", image="img",
                 command=[_sys.executable, "-c", code], args=[], env={"FERRY_INPUT_EVENTS_T": "file:///in/"},
                 timeout=_td(minutes=1))
    launched = _Local(tmp_path / "logs").launch(spec)
    end = _time.monotonic() + 60
    while _Local(tmp_path / "logs").poll(launched.handle).phase != "ended":
        assert _time.monotonic() < end
        _time.sleep(0.05)
    env = _json.loads(out.read_text())
    assert env["FERRY_INPUT_EVENTS_T"] == "file:///in/" and env["FERRY_EXECUTION_ID"] == "x-env"
    assert not {"FERRY_STACK_SECRET", "FERRY_SINK", "GOOGLE_APPLICATION_CREDENTIALS"} & set(env)
    assert set(env) - {"FERRY_INPUT_EVENTS_T", "FERRY_EXECUTION_ID"} <= set(PASSED_THROUGH) | {"PWD", "SHLVL", "_", "LC_CTYPE"}
