"""The README's tour runs as written: every ``console`` block between ``<!-- tour -->`` and
``<!-- /tour -->``, in order, against a fresh local stack started by the tour's own ``ferry dev up``.

Conventions of the tour's blocks (kept readable for people):
- ``$ ferry …`` runs the real CLI (in a copy of the project, so its ``.ferry/`` is the test's own);
  ``$ export K=V`` sets the environment of later commands; ``$ cd DIR`` changes directory (commands
  then find the stack by walking up to ``.ferry/``, as they would for a person);
- a trailing ``# exit N …`` comment says the exit code expected (default 0);
- the lines under a command are key lines of its output: each must appear (stdout or stderr).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ferry.dev.harness import ferry_executable, run_cli

pytestmark = pytest.mark.emulator

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


@dataclass
class Step:
    line: int
    command: str
    exit_code: int = 0
    expect: list[str] = field(default_factory=list)


def tour_steps(text: str) -> list[Step]:
    """Every command of the tour's console blocks with its expected exit code and output lines."""
    start, end = text.index("<!-- tour -->"), text.index("<!-- /tour -->")
    steps: list[Step] = []
    offset = text[:start].count("\n")
    in_block = False
    for n, raw in enumerate(text[start:end].splitlines(), offset + 1):
        if raw.startswith("```"):
            in_block = raw.strip() == "```console"
            continue
        if not in_block or not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if raw.startswith("$ "):
            command, _, comment = raw[2:].partition("  #")
            code = re.match(r"\s*exit (\d+)", comment)
            steps.append(Step(n, command.strip(), int(code.group(1)) if code else 0))
        elif steps:
            steps[-1].expect.append(raw.strip())
    return steps


def test_the_tour_is_parsed() -> None:
    steps = tour_steps(README.read_text())
    commands = [s.command for s in steps]
    assert commands[0] == "ferry dev up" and "ferry whoami" in commands
    assert any(s.exit_code == 5 for s in steps) and any(s.exit_code == 3 for s in steps)
    assert all(s.expect for s in steps if s.command.startswith("ferry")), "every command shows a key line"


# A whole stack and 32 commands: ~320 s measured at load average 28 on 2 cores (the suite's 300 s is per test)
@pytest.mark.timeout(900)
def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(REPO / "examples", project / "examples")
    drop = ("FERRY_API", "FERRY_HOME", "FERRY_USER", "FERRY_NOW", "FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = f"{Path(ferry_executable()).parent}{os.pathsep}{env.get('PATH', '')}"
    cwd = project
    started = time.monotonic()
    timings = []
    try:
        for step in tour_steps(README.read_text()):
            words = shlex.split(step.command)
            if words[0] == "export":
                key, _, value = words[1].partition("=")
                env[key] = value
                continue
            if words[0] == "cd":
                cwd = (cwd / words[1]).resolve()
                assert project in (cwd, *cwd.parents), f"README line {step.line}: cd leaves the project"
                continue
            assert words[0] == "ferry", f"README line {step.line}: the tour runs only ferry, export and cd"
            t0 = time.monotonic()
            out = run_cli(words[1:], cwd=cwd, env=env, timeout=180)
            timings.append((time.monotonic() - t0, step.command))
            both = out.stdout + out.stderr
            where = f"README line {step.line}: `{step.command}`"
            assert out.returncode == step.exit_code, \
                f"{where} exited {out.returncode}, expected {step.exit_code}\n{out.stdout}\n{out.stderr}"
            for key in step.expect:
                assert key in both, f"{where}: expected a line with {key!r}\n{out.stdout}\n{out.stderr}"
    finally:
        subprocess.run([ferry_executable(), "dev", "reset", "--yes"], cwd=project, env=env, capture_output=True, timeout=120)
        slowest = ", ".join(f"`{c}` {s:.1f}s" for s, c in sorted(timings, reverse=True)[:4])
        print(f"README tour: {len(timings)} commands in {time.monotonic() - started:.1f}s (slowest: {slowest})")
