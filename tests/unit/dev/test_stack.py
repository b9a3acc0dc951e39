"""The local stack's process bookkeeping, on plain processes (no emulators): groups are stopped whole,
only recorded groups that are still ours are touched, ports in use are named."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.dev import processes, stack
from ferry.errors import InfraError
from ferry.infra.model import Infra


@pytest.fixture(autouse=True)
def own_port_claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_PORTS_DIR", str(tmp_path / "port-claims"))


@pytest.fixture
def group() -> Iterator[subprocess.Popen[bytes]]:
    """A process group of a shell with a grandchild (like gcloud -> java)."""
    proc = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300"], start_new_session=True)
    yield proc
    processes.stop_groups([proc.pid], grace_s=1)


def _component(name: str, proc: subprocess.Popen[bytes] | None, **kw) -> dict:  # type: ignore[no-untyped-def, type-arg]
    pid = proc.pid if proc else kw.pop("pid")
    return {"kind": kw.pop("kind", "function"), "name": name, "pid": pid,
            "start_time": kw.pop("start_time", processes.start_time(pid)), **kw}


def _wait_members(pgid: int, n: int) -> list[int]:
    import time

    end = time.monotonic() + 5
    while time.monotonic() < end:
        members = processes.group_members([pgid])[pgid]
        if len(members) >= n:
            return members
        time.sleep(0.02)
    raise AssertionError("group did not start")


def test_stop_groups_stops_the_grandchildren_too(group: subprocess.Popen[bytes]) -> None:
    members = _wait_members(group.pid, 3)
    assert processes.stop_groups([group.pid], grace_s=2) == []
    assert processes.group_members([group.pid]) == {group.pid: []}
    assert all((processes.proc_stat(p) or ("Z",))[0] == "Z" for p in members)


def test_down_stops_recorded_groups_and_nothing_else(group: subprocess.Popen[bytes], tmp_path: Path) -> None:
    _wait_members(group.pid, 3)
    me = os.getpid()
    state = {"home": str(tmp_path), "components": [
        _component("api", group),
        # a pid that is not ours any more (another process now has it): must not be touched
        _component("probe", None, pid=me, start_time=-1),
    ]}
    (tmp_path / "state.json").write_text(json.dumps(state))
    result = stack.down(tmp_path)
    assert [s["name"] for s in result["stopped"]] == ["api"] and result["already_gone"] == ["probe"]
    assert processes.group_members([group.pid]) == {group.pid: []}
    assert not (tmp_path / "state.json").exists()


def test_a_partly_running_stack_restarts_only_what_died(group: subprocess.Popen[bytes], tmp_path: Path) -> None:
    from ferry.dev import repair

    dead = subprocess.Popen(["true"], start_new_session=True)
    dead.wait()
    state = {"home": str(tmp_path), "components": [_component("api", group), _component("probe", dead)]}
    assert stack.is_running(state) == (False, ["probe"])
    assert [c["name"] for c in repair.dead_components(state)] == ["probe"]  # the living api is kept


def test_a_stale_state_is_not_ours(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"], start_new_session=True)
    dead.wait()
    assert not processes.ours(_component("api", dead, start_time=12345))
    assert not processes.alive(_component("api", dead, start_time=12345))


def test_a_requested_port_in_use_is_named(tmp_path: Path) -> None:
    infra = Infra.model_validate({"service_accounts": [{"name": "ferry-api"}],
                                  "functions": [{"name": "api", "entry_point": "api", "service_account": "ferry-api"}]})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(InfraError, match=f"function api: port {port}"):
            stack._ports(stack.StackConfig(home=tmp_path, base_port=port, strict_ports=True), infra, tmp_path)
        with pytest.raises(InfraError, match=f"pubsub emulator: port {port}"):
            stack._ports(stack.StackConfig(home=tmp_path, base_port=port - stack.PUBSUB_OFFSET, strict_ports=True),
                         infra, tmp_path)
        # without strict ports (what `ferry dev up` does by default) the taken one moves, with a note
        fns, ps, fs, rp, notes = stack._ports(stack.StackConfig(home=tmp_path, base_port=port), infra, tmp_path)
        assert fns["api"] != port and notes[0] == (f"function api: port {port} is in use by another program; "
                                                   f"using {fns['api']} instead")
        # the channel receiver's port is claimed too: a second stack of the same base port moves it
        with pytest.raises(InfraError, match=f"receiver: port {port}"):
            stack._ports(stack.StackConfig(home=tmp_path, base_port=port - stack.RECEIVER_OFFSET, strict_ports=True),
                         infra, tmp_path)
        _, _, _, moved, _ = stack._ports(stack.StackConfig(home=tmp_path / "b", base_port=port - stack.RECEIVER_OFFSET),
                                         infra, tmp_path / "b")
        assert moved != port


def test_base_port_layout(tmp_path: Path) -> None:
    infra = Infra.model_validate({"service_accounts": [{"name": "ferry-api"}], "functions": [
        {"name": n, "entry_point": "api", "service_account": "ferry-api"} for n in ("zeta", "api", "alpha")]})
    # below Linux's ephemeral range (32768-60999): a busy machine's outgoing connections took 41000 twice
    fns, ps, fs, rp, notes = stack._ports(stack.StackConfig(home=tmp_path, base_port=21000), infra, tmp_path)
    assert not notes, notes
    assert fns == {"api": 21000, "zeta": 21001, "alpha": 21002} and (ps, fs, rp) == (21090, 21091, 21092)


def test_missing_emulators_are_one_line_with_the_install_command(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither gcloud nor java on the PATH
    with pytest.raises(InfraError) as err:
        stack.up(stack.StackConfig(home=tmp_path / "home"))
    assert "gcloud not found" in err.value.message and "apt-get install" in err.value.message
    assert "\n" not in err.value.message
