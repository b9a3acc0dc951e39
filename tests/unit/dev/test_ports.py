"""Port claims: stable when free, moved with a note when taken, never shared by stacks started at once."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ferry.dev import ports
from ferry.errors import InfraError


@pytest.fixture(autouse=True)
def claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "claims"
    monkeypatch.setenv("FERRY_PORTS_DIR", str(d))
    return d


def _free_base(n: int = 4) -> int:
    """A base with n consecutive free ports (probed; good enough for a test)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n < 65000 and all(ports.bindable(base + i) for i in range(n)):
            return base
    raise AssertionError("no free range")


def test_the_preferred_ports_when_free_and_again_for_the_same_home(tmp_path: Path) -> None:
    base = _free_base()
    wanted = [ports.Wanted("function api", base), ports.Wanted("function x", base + 1)]
    first = ports.claim(wanted, tmp_path / "a")
    assert first.ports == {"function api": base, "function x": base + 1} and not first.notes
    assert ports.claim(wanted, tmp_path / "a").ports == first.ports  # its own claims: reused
    other = ports.claim(wanted, tmp_path / "b")  # another home: moved, with a note naming the holder
    assert not set(other.ports.values()) & {base, base + 1}
    assert other.notes[0].startswith(f"function api: port {base} is in use by the local stack in ")
    assert str((tmp_path / "a").resolve()) in other.notes[0]
    with pytest.raises(InfraError, match=f"port {base}"):
        ports.claim(wanted, tmp_path / "c", strict=True)
    assert ports.last_used(tmp_path / "b") == other.ports  # where b's moved ports went, for its next run
    assert ports.release(tmp_path / "a") == 2
    assert ports.claim(wanted, tmp_path / "c").ports == first.ports  # released: free again


def test_a_claim_of_a_stack_that_is_gone_is_stale(tmp_path: Path, claims: Path) -> None:
    base = _free_base()
    claims.mkdir(parents=True, exist_ok=True)
    # claimed by a process that has exited, for a home whose state.json does not record the port
    (claims / str(base)).write_text(json.dumps({"home": str(tmp_path / "gone"), "pid": 2 ** 22 + 12345, "at": 0}))
    assert ports.claim([ports.Wanted("function api", base)], tmp_path / "a").ports["function api"] == base


def test_stacks_started_at_once_never_share_a_port(tmp_path: Path, claims: Path) -> None:
    """Six processes claim the same layout (and free ports) at the same moment, as `ferry dev up` does."""
    base = _free_base(6)
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from ferry.dev import ports\n"
        f"w = [ports.Wanted('a', {base}), ports.Wanted('b', {base + 1}), ports.Wanted('c', None)]\n"
        "print(json.dumps(ports.claim(w, Path(sys.argv[1])).ports), flush=True)\n"
        "sys.stdin.read()\n"  # a claimer lives on, as `ferry dev up` does while its stack starts
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f"home{i}")], stdout=subprocess.PIPE,
                              stdin=subprocess.PIPE, text=True,
                              env={**__import__("os").environ, "FERRY_PORTS_DIR": str(claims)})
             for i in range(6)]
    got = [json.loads(p.stdout.readline()) for p in procs if p.stdout]
    for p in procs:
        p.communicate(timeout=60)
    every = [port for g in got for port in g.values()]
    assert len(every) == len(set(every)) == 18, got
    assert sum(1 for g in got if g["a"] == base) == 1  # exactly one stack got the stable ports


def _time_wait_port() -> int:
    """A port whose server closed first: its side of the connection lingers in TIME_WAIT."""
    import socket

    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        conn.close()  # the server's active close: TIME_WAIT on (127.0.0.1, port)
        client.recv(1)
        client.close()
    return int(port)


def test_a_port_in_time_wait_is_bindable_as_the_servers_bind_it() -> None:
    """Issue 23, finding 9: ``dev up --base-port`` right after ``down`` failed on its old ports, whose
    connections lingered in TIME_WAIT (a plain bind refuses them; the servers bind with SO_REUSEADDR)."""
    import socket

    from ferry.dev.ports import bindable

    port = _time_wait_port()
    with socket.socket() as plain:
        try:
            plain.bind(("127.0.0.1", port))
            time_wait = False
        except OSError:
            time_wait = True
    assert time_wait, "the setup left no TIME_WAIT socket"
    assert bindable(port)
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert not bindable(port)  # a listener still takes it
