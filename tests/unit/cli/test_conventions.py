"""CLI conventions: global options anywhere, -o table|json|yaml, help with an example everywhere,
offline validate, completion, words instead of Python reprs, the stack found from a subdirectory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from ferry import humane
from ferry.cli import hoist_global_options, main
from ferry.cli.common import ferry_home, resolve_user
from ferry.cli.core import field_diff, manifest_order

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"


def run(*args: str, **kw):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args), catch_exceptions=False, **kw)


def test_global_options_are_hoisted_from_anywhere() -> None:
    assert hoist_global_options(["status", "--json"]) == ["--json", "status"]
    assert hoist_global_options(["get", "endpoints", "-o", "yaml", "--as", "a@x", "--api=http://h"]) == \
        ["-o", "yaml", "--as", "a@x", "--api=http://h", "get", "endpoints"]
    assert hoist_global_options(["send", "t", "--", "--json"]) == ["send", "t", "--", "--json"]


@pytest.mark.parametrize("args", [("--json", "schema", "Team"), ("schema", "Team", "--json"),
                                  ("schema", "-o", "json", "Team"), ("-ojson", "schema", "Team")])
def test_json_anywhere_gives_the_same_json(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["title"] == "Ferry Team"


def test_yaml_output() -> None:
    result = run("schema", "Team", "-o", "yaml")
    assert yaml.safe_load(result.stdout)["title"] == "Ferry Team"
    assert run("schema", "Team", "-o", "xml").exit_code == 2


def _commands(group: click.Group, prefix: str = "ferry") -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = [(prefix, group)]
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out += _commands(cmd, f"{prefix} {name}")
        else:
            out.append((f"{prefix} {name}", cmd))
    return out


def test_every_command_and_option_has_help_and_every_command_an_example() -> None:
    missing = []
    for path, cmd in _commands(main):
        if not (cmd.help or "").strip():
            missing.append(f"{path}: no help")
        if "$ ferry" not in (cmd.epilog or ""):
            missing.append(f"{path}: no example line")
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip():
                missing.append(f"{path} {p.opts[0]}: no help")
    assert not missing, "\n".join(missing)


def test_help_shows_parameter_formats_and_environment() -> None:
    assert "2026-11-26T14" in run("land", "--help").stdout and "2026-11-26" in run("trigger", "--help").stdout
    top = run("--help").stdout
    for var in ("FERRY_USER", "FERRY_API", "FERRY_NOW", "FERRY_HOME"):
        assert var in top


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str) -> None:
    result = run("completion", shell)
    assert result.exit_code == 0 and "_FERRY_COMPLETE" in result.stdout


def test_validate_offline_examples_ok() -> None:
    result = run("validate", "-f", str(EXAMPLES), "--api", "http://127.0.0.1:9")  # never called
    assert result.exit_code == 0, result.output
    assert "valid:" in result.stdout


def test_validate_broken_file_names_file_and_field(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES / "manifests", tmp_path / "m")
    wf = tmp_path / "m" / "workflows.yaml"
    wf.write_text(wf.read_text().replace("resources: [", "resources: [no-such-pool, ", 1))
    (tmp_path / "m" / "late.yaml").write_text(
        "kind: Endpoint\nmetadata: {name: e, owner: team-playback}\n"
        "spec: {partitioning: hourly, sla: {error_after: 2 hours}}\n")
    result = run("validate", "-f", str(tmp_path / "m"))
    assert result.exit_code == 3
    assert "late.yaml[0] Endpoint/e spec.sla.error_after" in result.stderr
    first = run("validate", "-f", str(wf), "--strict")  # offline, an unresolved reference is a warning
    assert first.exit_code == 3
    assert f"{wf}[" in first.stderr and "spec.resources[0]" in first.stderr and "no-such-pool" in first.stderr
    assert "nothing was applied" not in first.stderr
    assert first.stderr.count("error:") == 1  # printed once


def test_field_diff_and_manifest_order() -> None:
    before = {"kind": "Endpoint", "spec": {"sla": {"error_after": "PT2H", "warn_after": "PT1H"}}}
    after = {"kind": "Endpoint", "spec": {"sla": {"error_after": "PT3H", "warn_after": "PT1H"}, "x": [1]}}
    assert field_diff(before, after) == [{"field": "spec.sla.error_after", "from": "PT2H", "to": "PT3H"},
                                         {"field": "spec.x", "from": None, "to": [1]}]
    doc = yaml.safe_load((EXAMPLES / "manifests" / "resources.yaml").read_text().split("---")[0])
    shuffled = {"status": {"generation": 1}, "spec": doc["spec"], "metadata": doc["metadata"], "kind": doc["kind"]}
    if "apiVersion" in doc:
        shuffled["apiVersion"] = doc["apiVersion"]
    ordered = list(manifest_order(shuffled))
    assert ordered.index("kind") < ordered.index("metadata") < ordered.index("spec") < ordered.index("status")


def test_words_not_reprs() -> None:
    assert humane.duration(8100) == "2 h 15 min" and humane.duration(60) == "1 min"
    assert humane.counts({"QUEUED": 4, "PENDING": 164}) == "164 pending, 4 queued"
    assert humane.text({"MODE": "full"}) == "MODE=full" and humane.text(["a", "b"]) == "a, b"
    assert humane.plural(1, "minute") == "1 minute" and humane.plural(2, "minute") == "2 minutes"


def test_home_is_found_from_a_subdirectory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FERRY_HOME", raising=False)
    monkeypatch.delenv("FERRY_API", raising=False)
    (tmp_path / ".ferry").mkdir()
    (tmp_path / ".ferry" / "state.json").write_text(json.dumps({"api_url": "http://127.0.0.1:1",
                                                                 "default_user": "dev@example.com"}))
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert ferry_home(deep) == tmp_path / ".ferry"
    monkeypatch.chdir(deep)
    assert resolve_user(None)[0] == "dev@example.com"
    assert resolve_user("eve@example.com") == ("eve@example.com", "--as/FERRY_USER")
    result = run("get", "endpoints")
    assert result.exit_code == 4 and "http://127.0.0.1:1" in result.stderr
    monkeypatch.setenv("FERRY_HOME", str(tmp_path / "elsewhere"))
    assert ferry_home(deep) == tmp_path / "elsewhere"
