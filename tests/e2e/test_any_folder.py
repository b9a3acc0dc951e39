"""One CLI, any folder (issue 21), end to end: `ferry dev up` in the repository, then from a folder
outside it — a team's own repository — `apply`, `tick`, `evaluate`, `status` and `send` work (the stack is found
in the per-user registry and its secret sent for the operational calls); `ferry dev status -o json` prints
no secret; `ferry dev down` from there too, delivering the 50 sent events first (nothing lost by default); then the stack is down and every call is exit 4 naming how to
start one, instead of talking to whatever listens on a default port."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from ferry.dev import stack as stack_mod
from ferry.dev.harness import run_cli

pytestmark = pytest.mark.emulator
REPO = Path(__file__).resolve().parents[2]


def test_the_cli_works_from_a_folder_outside_the_repository(tmp_path: Path) -> None:
    home = tmp_path / "stack-home"  # this test's own FERRY_HOME, not the repository's .ferry
    env = {**{k: v for k, v in os.environ.items()
              if not k.startswith("FERRY_") and k not in ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST")},
           "XDG_STATE_HOME": str(tmp_path / "xdg-state")}  # a registry of this test's own

    def ferry(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return run_cli(list(args), cwd=cwd, env=env, timeout=300)

    up = ferry("--stack", str(home), "dev", "up", "--no-scheduler", "-o", "json", cwd=REPO)
    assert up.returncode == 0, up.stderr
    secret = json.loads(stack_mod.state_path(home).read_text())["stack_secret"]
    assert secret not in up.stdout, "dev up -o json prints no secret"
    try:
        elsewhere = tmp_path / "elsewhere"  # a team's own repository
        elsewhere.mkdir()
        team, name = f"team-{uuid.uuid4().hex[:6]}", f"plays-{uuid.uuid4().hex[:6]}"
        (elsewhere / "ferry.yaml").write_text(
            f"kind: Team\nmetadata: {{name: {team}}}\nspec: {{members: [ana@example.com], admins: [ana@example.com]}}\n"
            f"---\nkind: Endpoint\nmetadata: {{name: {name}, owner: {team}}}\n"
            "spec: {partitioning: daily, sla: {error_after: PT2H}}\n"
            f"---\nkind: EventType\nmetadata: {{name: {name}-click, owner: {team}}}\n"
            "spec: {schema: {type: object}, partitioning: hourly, close_after: PT10M}\n")
        (elsewhere / "events.ndjson").write_text("".join(f'{{"id": "e{i}", "n": {i}}}\n' for i in range(50)))
        for args in (("apply", "-f", "ferry.yaml", "--as", "ana@example.com"), ("tick",), ("evaluate",), ("status",),
                     ("send", f"{name}-click", "events.ndjson")):
            r = ferry(*args, cwd=elsewhere)
            assert r.returncode == 0, (args, r.stdout, r.stderr)
            assert f"local stack {home}" in r.stderr, "it says which stack it talks to"
        status = ferry("dev", "status", "-o", "json", cwd=elsewhere)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["home"] == str(home)
        assert secret not in status.stdout and "stack_secret" not in status.stdout
        down = ferry("dev", "down", "-o", "json", cwd=elsewhere)  # drains by default: nothing accepted is lost
        assert down.returncode == 0, down.stdout + down.stderr
        stopped = json.loads(down.stdout)
        assert stopped["drained"][f"{name}-click"] == 50 and stopped["lost_events"] == 0, stopped
    finally:
        if stack_mod.read_state(home) is not None:
            stack_mod.down(home)
    for args in (("status",), ("tick",), ("apply", "-f", "ferry.yaml")):
        r = ferry(*args, cwd=elsewhere)
        assert r.returncode == 4, (args, r.stdout, r.stderr)
        assert "no local stack is running" in r.stderr and "ferry dev up" in r.stderr
