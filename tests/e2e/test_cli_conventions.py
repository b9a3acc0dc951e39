"""The CLI's conventions against the local stack: one JSON whatever the option's place, dry runs with a
field-level diff, whoami as the API sees it, refusals that say who, what, whose and how."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from ferry.dev.harness import LocalStack

pytestmark = pytest.mark.emulator
NOW = "2026-11-29T12:00:00+00:00"


def test_the_json_flag_anywhere_gives_the_same_json(stack: LocalStack) -> None:
    outs = []
    for args in (("--json", "status"), ("status", "--json"), ("status", "-o", "json")):
        out = stack.cli(*args, env={"FERRY_NOW": NOW}, check=True)
        outs.append(json.loads(out.stdout))
    assert outs[0] == outs[1] == outs[2]
    yaml_out = stack.cli("status", "-o", "yaml", env={"FERRY_NOW": NOW}, check=True).stdout
    assert yaml.safe_load(yaml_out) == outs[0]


def test_dry_run_shows_a_field_level_diff_and_get_yaml_is_a_manifest(stack: LocalStack, tmp_path: Path) -> None:
    team, name = f"team-{uuid.uuid4().hex[:6]}", f"conv-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "e.yaml"
    path.write_text(f"kind: Endpoint\nmetadata: {{name: {name}, owner: {team}}}\n"
                    "spec: {partitioning: hourly, sla: {error_after: PT2H}}\n")
    fresh = stack.cli("apply", "-f", str(path), "--dry-run", check=True).stdout
    assert f"would create Endpoint {name}" in fresh
    stack.cli("apply", "-f", str(path), check=True)
    path.write_text(path.read_text().replace("PT2H", "PT3H"))
    plan = stack.cli("apply", "-f", str(path), "--dry-run", check=True).stdout
    assert f"would change Endpoint {name}" in plan and "spec.sla.error_after: PT2H → PT3H" in plan
    assert "would create 0, would change 1" in plan
    data = json.loads(stack.cli("apply", "-f", str(path), "--dry-run", "-o", "json", check=True).stdout)
    [change] = data["changes"]
    assert {"field": "spec.sla.error_after", "from": "PT2H", "to": "PT3H"} in change["diff"]
    got = stack.cli("get", "endpoint", name, "-o", "yaml", check=True).stdout
    assert got.startswith(f"apiVersion: ferry/v1\nkind: Endpoint\nmetadata:\n  name: {name}\n  owner: {team}\n")
    assert "error_after: PT2H" in got  # the dry run wrote nothing


def test_whoami_and_a_refusal_that_explains_itself(stack: LocalStack, tmp_path: Path) -> None:
    team, name = f"team-{uuid.uuid4().hex[:6]}", f"owned-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "t.yaml"
    path.write_text(f"kind: Team\nmetadata: {{name: {team}}}\nspec: {{members: [mia@example.com], "
                    f"admins: [mia@example.com]}}\n---\nkind: Endpoint\nmetadata: {{name: {name}, owner: {team}}}\n"
                    "spec: {partitioning: daily}\n")
    stack.cli("apply", "-f", str(path), user="mia@example.com", check=True)
    who = json.loads(stack.cli("whoami", "-o", "json", user="mia@example.com", check=True).stdout)
    assert who["you"] == "mia@example.com" and who["api_sees"]["user"] == "mia@example.com"
    assert {"team": team, "role": "admin"} in who["api_sees"]["teams"]
    assert "the API sees: mia@example.com" in stack.cli("whoami", "--as", "mia@example.com", check=True).stdout
    refused = stack.cli("land", name, "2026-11-26", "--as", "eve@example.com")
    assert refused.returncode == 5
    err = refused.stderr
    assert f"you are eve@example.com, not a member of {team}" in err and "land partitions of" in err
    assert "mia@example.com" in err and "--as USER" in err and "of of" not in err
    assert err.count("error:") == 1
