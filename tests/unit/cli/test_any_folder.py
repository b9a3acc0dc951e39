"""One CLI, any folder (issue 21): the CLI finds the running local stack from any folder through the
per-user registry ``ferry dev up`` writes (or --stack / FERRY_HOME), says which one, sends its secret
for operational calls; with no stack and no --api it says so and how to start one (exit 4) instead of
talking to whatever listens on a default port; ``ferry dev status -o json`` prints no secret.
(The same with a real ``ferry dev up``: tests/e2e/test_any_folder.py.)"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fakes.api_server import served
from ferry.api.identity import HEADER, Identifier, IdentityConfig
from ferry.bootstrap import in_memory
from ferry.cli import main
from ferry.dev import processes, registry

SECRET = "s3cret-of-the-stack"


@pytest.fixture(autouse=True)
def workstation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FERRY_HOME", "FERRY_API", "FERRY_USER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")


def fake_stack(home: Path, api_url: str) -> Path:
    """A stack's state as `ferry dev up` records it; its one component is this (live) process."""
    home.mkdir(parents=True)
    me = {"name": "api", "kind": "function", "pid": os.getpid(), "start_time": processes.proc_stat(os.getpid())[2],
          "url": api_url}
    (home / "state.json").write_text(json.dumps({
        "home": str(home), "project": "ferry-local", "status": "running", "api_url": api_url,
        "stack_secret": SECRET, "default_user": "dev@example.com", "components": [me]}))
    registry.register(home, api_url)
    return home


@pytest.fixture()
def api() -> Iterator[str]:
    svc = in_memory(identifier=Identifier(IdentityConfig(HEADER, stack_secret=SECRET)))
    with served(svc) as url:
        yield url


def ferry(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_no_stack_and_no_api_is_exit_4_saying_how_to_start_one() -> None:
    r = ferry("get", "endpoints")
    assert r.exit_code == 4, r.output
    assert "no local stack is running" in r.output and "ferry dev up" in r.output and "--api" in r.output


def test_the_registered_stack_is_found_from_any_folder_with_its_secret(api: str, tmp_path: Path) -> None:
    home = fake_stack(tmp_path / "repo" / ".ferry", api)
    r = ferry("evaluate")  # an operational call: only the stack's secret may make it
    assert r.exit_code == 0, r.output
    assert f"local stack {home}" in r.output  # it says which stack it talks to
    who = _json(ferry("whoami", "-o", "json"))
    assert who["stack"] == {"home": str(home), "found": "the registry of running stacks"}
    assert who["api_sees"]["operator"] is True and who["you"] == "dev@example.com"


def _json(r: Result) -> dict:  # type: ignore[type-arg]
    out = r.stdout
    return json.loads(out[out.index("{"):])  # type: ignore[no-any-return]


def test_two_running_stacks_need_a_choice(api: str, tmp_path: Path) -> None:
    a = fake_stack(tmp_path / "a" / ".ferry", api)
    b = fake_stack(tmp_path / "b" / ".ferry", api)
    r = ferry("status")
    assert r.exit_code == 4 and "--stack" in r.output and str(a) in r.output and str(b) in r.output
    assert ferry("--stack", str(a.parent), "evaluate").exit_code == 0


def test_a_stopped_stack_leaves_the_registry(api: str, tmp_path: Path) -> None:
    home = fake_stack(tmp_path / "repo" / ".ferry", api)
    (home / "state.json").unlink()  # `ferry dev down` removes it
    assert ferry("status").exit_code == 4
    assert registry.running() == [] and not list(registry.registry_dir().glob("*.json"))


def test_the_secret_is_never_sent_to_another_api(api: str, tmp_path: Path) -> None:
    fake_stack(tmp_path / "repo" / ".ferry", "http://127.0.0.1:1")  # the stack's API is elsewhere
    r = ferry("evaluate", "--api", api)
    assert r.exit_code == 5, r.output  # no secret for a stranger: not an operator there


def test_dev_status_json_prints_no_secret(api: str, tmp_path: Path) -> None:
    fake_stack(tmp_path / "repo" / ".ferry", api)
    r = ferry("dev", "status", "-o", "json")
    assert SECRET not in r.output and "stack_secret" not in r.output
    assert _json(r)["api_url"] == api
